/* fuzz.c — libFuzzer target for the guard: parser, rewriter and verifier on untrusted
 * PTX. No crash or hang; a parse that succeeds prints back byte for byte; and whatever the
 * rewriter accepts, the independent verifier must accept too (abort otherwise: that would
 * be a hole in the guard or a gap between the two). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "guard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const gates[] = {"agile_gate"};
    char *rt = NULL;
    size_t rlen = 0;
    char err[320];

    if (size > (1u << 20)) return 0;
    if (agile_guard_roundtrip((const char *)data, size, &rt, &rlen, err, sizeof(err)) == AGILE_OK) {
        if (rlen != size || memcmp(rt, data, size) != 0) abort();
        free(rt);
    }
    for (int mode = 0; mode < 3; mode++) { /* mask, strict, immediate mask */
        agile_guard_opts o;
        agile_guard_result res;
        agile_guard_vopts vo = {0, 0, gates, 1};
        int rv;
        agile_guard_opts_init(&o);
        o.strict = mode == 1;
        o.window_bits = mode == 2 ? 32 : 0;
        o.skip_verify = true; /* verified below, so that a refusal aborts */
        o.gates = gates;
        o.ngates = 1;
        if (size > 0 && (data[0] & 1))
            o.guard_gap = 4096; /* exercise offset folding at another gap */
        vo.guard_gap = o.guard_gap;
        vo.window_bits = o.window_bits;
        rv = agile_guard_ptx((const char *)data, size, &o, &res);
        if (rv == AGILE_OK &&
            agile_guard_verify(res.ptx, res.ptx_len, &vo, err, sizeof(err)) != AGILE_OK) {
            fprintf(stderr, "verifier refuses guarded output: %s\n", err);
            abort();
        }
        agile_guard_result_fini(&res);
    }
    /* the verifier alone, on raw input */
    {
        agile_guard_vopts vo = {0, 0, gates, 1};
        (void)agile_guard_verify((const char *)data, size, &vo, err, sizeof(err));
    }
    return 0;
}
