/* libFuzzer target: the policy file parser. Parses or names the bad line; never crashes. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static agile__config c;
    char err[256];
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    int rv = agile__config_parse(&c, copy, size, err, sizeof err);
    if (rv != AGILE_OK && (rv != AGILE_ECONFIG || strncmp(err, "line ", 5) != 0 || !strchr(err, ':')))
        abort();
    if (rv == AGILE_OK && (c.dflt.priority < 1 || c.dflt.priority > 16 || c.nrules > AGILE_MAX_TENANT_RULES))
        abort();
    /* a listen address that parsed is one the checker takes, NUL-terminated in its buffer */
    if (rv == AGILE_OK && c.metrics_listen[0] && agile__config_check_listen(c.metrics_listen))
        abort();
    free(copy);
    return 0;
}
