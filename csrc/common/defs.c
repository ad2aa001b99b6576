/* defs.c — the name tables of agile/defs.h, generated from its lists. Part of the ABI
 * (libagile exports them; agile_torch reads the names through them). */
#include "agile/defs.h"

#include <stddef.h>

AGILE_API const char *agile_backend_name(int kind)
{
    switch (kind) {
#define X(NAME, value, name)                                                                       \
    case value: return name;
        AGILE_BACKEND_LIST(X)
#undef X
    default: return NULL;
    }
}

AGILE_API const char *agile_mem_stat_name(unsigned i, const char **torch_key)
{
    static const struct {
        const char *field, *key;
    } tab[] = {
#define X(field, key) {#field, key},
        AGILE_MEM_STAT_LIST(X)
#undef X
    };
    if (i >= sizeof tab / sizeof tab[0]) return NULL;
    if (torch_key) *torch_key = tab[i].key;
    return tab[i].field;
}
