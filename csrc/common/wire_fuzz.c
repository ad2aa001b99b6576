/* libFuzzer target: the wire decoder. Any input must decode or be rejected without
 * reading out of bounds; whatever decodes must re-encode to the same bytes. */
#include <stdlib.h>
#include <string.h>

#include "core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    agile__msg m;
    agile__hdr h;
    /* Copy so ASan sees the exact extent (libFuzzer's buffer is exact too). */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    (void)agile__hdr_decode(copy, size, &h);
    if (agile__msg_decode(copy, size, &m) == AGILE_OK && m.h.minor <= AGILE_WIRE_MINOR) {
        size_t cap = agile__msg_size(&m), len = 0;
        uint8_t *out = malloc(cap);
        memset(copy + 28, 0, 4); /* spare: ignored on receipt, 0 on send */
        if (!out || agile__msg_encode(&m, out, cap, &len) != AGILE_OK || len != size ||
            memcmp(out, copy, size) != 0)
            abort();
        free(out);
    }
    free(copy);
    return 0;
}
