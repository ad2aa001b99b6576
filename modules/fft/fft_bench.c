/* fft_bench.c — build/bin/fft-bench: what the plan cache saves. For a few shapes on the
 * FFTW backend: a miss (plan creation + insert, cache trimmed before every round) against a
 * hit (lookup + reference, release). Prints a table, or JSON with --json. */
#include "fft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct shape {
    const char *name;
    uint32_t type, rank;
    uint64_t n[3], batch;
} shape;

static const shape shapes[] = {
    {"c2c_1d_1024", AGILE_FFT_C2C, 1, {1024, 0, 0}, 1},
    {"z2z_1d_4096_b16", AGILE_FFT_Z2Z, 1, {4096, 0, 0}, 16},
    {"r2c_2d_256x256", AGILE_FFT_R2C, 2, {256, 256, 0}, 1},
    {"c2r_3d_64x64x64", AGILE_FFT_C2R, 3, {64, 64, 64}, 1},
    {"c2c_1d_1M_b16", AGILE_FFT_C2C, 1, {1u << 20, 0, 0}, 16},
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int json = argc > 1 && strcmp(argv[1], "--json") == 0;
    agile__fft_backend *be;
    agile__fft_cache c;
    enum { MISS_ROUNDS = 15, HIT_ROUNDS = 200000 };
    if (argc > 1 && !json) {
        fprintf(stderr, "usage: fft-bench [--json]\n");
        return 2;
    }
    if (agile__fft_fftw_open(&be) != AGILE_OK ||
        agile__fft_cache_init(&c, be, 64, UINT64_MAX) != AGILE_OK)
        return 1;
    if (json)
        printf("{\"bench\":\"fft-plan-cache\",\"backend\":\"fftw\",\"results\":[");
    else
        printf("%-20s %14s %14s %12s\n", "shape", "miss p50 (us)", "hit mean (ns)", "speedup");
    for (size_t s = 0; s < AGILE_ARRAY_LEN(shapes); s++) {
        agile__fft_desc d;
        agile__fft_centry *e;
        uint64_t miss[MISS_ROUNDS], t0, hit_ns;
        agile__fft_desc_init_basic(&d, shapes[s].type, shapes[s].rank, shapes[s].n, shapes[s].batch,
                                   0);
        if (agile__fft_desc_validate(&d) != AGILE_OK) return 1;
        for (int r = 0; r < MISS_ROUNDS; r++) {
            agile__fft_cache_trim(&c);
            t0 = agile__now_ns();
            if (agile__fft_cache_hold(&c, &d, 0, &e) != AGILE_OK) return 1;
            miss[r] = agile__now_ns() - t0;
            agile__fft_cache_rele(&c, e);
        }
        qsort(miss, MISS_ROUNDS, sizeof miss[0], cmp_u64);
        /* hits: the plan is cached now */
        t0 = agile__now_ns();
        for (int r = 0; r < HIT_ROUNDS; r++) {
            if (agile__fft_cache_hold(&c, &d, 0, &e) != AGILE_OK) return 1;
            agile__fft_cache_rele(&c, e);
        }
        hit_ns = (agile__now_ns() - t0) / HIT_ROUNDS;
        if (json)
            printf("%s{\"shape\":\"%s\",\"miss_p50_ns\":%llu,\"miss_min_ns\":%llu,"
                   "\"hit_mean_ns\":%llu}",
                   s ? "," : "", shapes[s].name, (unsigned long long)miss[MISS_ROUNDS / 2],
                   (unsigned long long)miss[0], (unsigned long long)hit_ns);
        else
            printf("%-20s %14.1f %14llu %11.0fx\n", shapes[s].name, miss[MISS_ROUNDS / 2] / 1e3,
                   (unsigned long long)hit_ns,
                   (double)miss[MISS_ROUNDS / 2] / (double)(hit_ns ? hit_ns : 1));
    }
    if (json) printf("]}\n");
    agile__fft_cache_fini(&c);
    be->close(be);
    return 0;
}
