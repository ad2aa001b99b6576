/* sha256.c — SHA-256 of several buffers for the compile cache key, by nettle (Debian's
 * nettle-dev; SHA-NI where the CPU has it). The key only has to be collision-resistant. */
#include <nettle/sha2.h>

#include "guard.h"

void agile_guard_sha256(const void *const *bufs, const size_t *lens, size_t n, uint8_t out[32])
{
    struct sha256_ctx c;
    sha256_init(&c);
    for (size_t i = 0; i < n; i++)
        sha256_update(&c, lens[i], bufs[i]);
    sha256_digest(&c, SHA256_DIGEST_SIZE, out);
}
