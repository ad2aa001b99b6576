/* fuzz.c — libFuzzer target for the guard: parser, rewriter and verifier on untrusted
 * PTX. No crash or hang; a parse that succeeds prints back byte for byte; whatever the
 * rewriter accepts is plain PTX text (no backslash, no byte ptxas could read otherwise) and
 * the independent verifier accepts its output (abort otherwise: that would be a hole in the
 * guard or a gap between the two). Seeded with the corpus, reject/lex_*.ptx included. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "guard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The lexical rules (guard/README.md, "Lexing") a third time, at their simplest: whatever
 * the rewriter accepts has only printable ASCII, tab and newline (carriage return before a
 * newline) and no backslash, so that ptxas cannot read an escape or a continuation in it. */
static bool lexically_plain(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '\\' || (d[i] == '\r' && (i + 1 == n || d[i + 1] != '\n'))) return false;
        if (d[i] != '\t' && d[i] != '\n' && d[i] != '\r' && (d[i] < 0x20 || d[i] > 0x7e))
            return false;
    }
    return true;
}

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
        if (rv == AGILE_OK && !lexically_plain(data, size)) {
            fprintf(stderr, "the rewriter accepts text outside PTX's plain lexis\n");
            abort();
        }
        if (rv == AGILE_OK &&
            agile_guard_verify(res.ptx, res.ptx_len, &vo, err, sizeof(err)) != AGILE_OK) {
            fprintf(stderr, "verifier refuses guarded output: %s\n", err);
            abort();
        }
        agile_guard_result_fini(&res);
    }
    /* the launcher's parameter layout of the first kernel named in the input */
    {
        static const char entry[] = ".entry";
        const uint8_t *at = memmem(data, size, entry, sizeof entry - 1);
        char name[128];
        size_t n = 0;
        agile_guard_entry e;
        if (at) {
            const uint8_t *p = at + sizeof entry - 1, *end = data + size;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            while (p < end && n + 1 < sizeof name && *p > ' ' && *p != '(' && *p != '{')
                name[n++] = (char)*p++;
        }
        name[n] = 0;
        if (agile_guard_entry_params((const char *)data, size, name, &e, err, sizeof(err)) ==
                AGILE_OK &&
            (e.kernel_id == 0 || e.nparams > AGILE_GUARD_MAX_PARAMS))
            abort();
    }
    /* the verifier alone, on raw input */
    {
        agile_guard_vopts vo = {0, 0, gates, 1};
        (void)agile_guard_verify((const char *)data, size, &vo, err, sizeof(err));
    }
    return 0;
}
