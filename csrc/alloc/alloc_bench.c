/* alloc-bench — the hot path of the window sub-allocator against glibc malloc/free.
 *
 * Each sample is one malloc+free pair, averaged over a batch of BATCH pairs timed with the
 * monotonic clock (a clock read costs about as much as the pair: timing pairs one by one would
 * measure the clock). p50/p99 are over the batches. Cases:
 *   same/<size>   alloc and free on one stream: the per-stream cache (CUDA-like arena, events)
 *   cross/64KiB   alloc on stream 1, free on stream 2: every alloc misses its stream's cache,
 *                 takes from the settled extents, and the frees settle through events
 *   host/<size>   the host-backend arena (no events)
 *   2thr/4KiB     two threads on one arena, each on its own stream: the cost of the shared lock
 *   glibc/<size>  malloc/free in the same run, the baseline
 * Usage: alloc-bench [--json] [--batches N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "alloc_fake.h"
#include "core.h"

#define BATCH 64
#define MiB (1ull << 20)
#define BASE (1ull << 40)

typedef struct {
    char name[32];
    double p50, p99;
} result;

static void *volatile sink;

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static void summarize(result *r, double *samples, int n)
{
    qsort(samples, (size_t)n, sizeof(*samples), cmp_double);
    r->p50 = samples[n / 2];
    r->p99 = samples[(int)((double)n * 0.99)];
}

static int bench_arena(result *r, const char *name, const agile__arena_ops *ops, uint64_t size,
                       uintptr_t s_alloc, uintptr_t s_free, double *samples, int nb)
{
    agile__arena a;
    fake f;
    uint64_t p;
    int rv = AGILE_OK;
    fake_init(&f, 1ull << 36, 1ull << 36);
    f.all_done = true;
    AGILE_TRY(agile__arena_init(&a, ops, &f, BASE, 1ull << 36, 256, 64 * MiB));
    snprintf(r->name, sizeof(r->name), "%s", name);
    for (int i = 0; i < nb / 10 + 1000; i++) { /* warm: lease, caches, events */
        AGILE_TRY(agile__arena_alloc(&a, size, s_alloc, &p));
        AGILE_TRY(agile__arena_free(&a, p, size, s_free));
    }
    for (int b = 0; b < nb; b++) {
        uint64_t t0 = agile__now_ns();
        for (int i = 0; i < BATCH; i++) {
            rv |= agile__arena_alloc(&a, size, s_alloc, &p);
            rv |= agile__arena_free(&a, p, size, s_free);
        }
        samples[b] = (double)(agile__now_ns() - t0) / BATCH;
    }
    summarize(r, samples, nb);
    agile__arena_fini(&a);
out:
    return rv;
}

typedef struct {
    agile__arena *a;
    uintptr_t stream;
    double *samples;
    int nb, rv;
} thr_arg;

static void *thr_loop(void *p)
{
    thr_arg *t = p;
    uint64_t q;
    for (int b = 0; b < t->nb; b++) {
        uint64_t t0 = agile__now_ns();
        for (int i = 0; i < BATCH; i++) {
            t->rv |= agile__arena_alloc(t->a, 4096, t->stream, &q);
            t->rv |= agile__arena_free(t->a, q, 4096, t->stream);
        }
        t->samples[b] = (double)(agile__now_ns() - t0) / BATCH;
    }
    return NULL;
}

static int bench_threads(result *r, double *samples, int nb)
{
    agile__arena a;
    fake f;
    pthread_t th[2];
    thr_arg t[2];
    int rv = AGILE_OK;
    fake_init(&f, 1ull << 36, 1ull << 36);
    f.all_done = true;
    AGILE_TRY(agile__arena_init(&a, &fake_stream_ops, &f, BASE, 1ull << 36, 256, 64 * MiB));
    snprintf(r->name, sizeof(r->name), "2thr/4KiB");
    for (int i = 0; i < 2; i++) {
        t[i] = (thr_arg){&a, (uintptr_t)i + 1, samples + i * (nb / 2), nb / 2, 0};
        if (pthread_create(&th[i], NULL, thr_loop, &t[i]) != 0)
            rv = AGILE_ENOMEM;
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    if (rv == AGILE_OK)
        rv = t[0].rv | t[1].rv;
    summarize(r, samples, nb / 2 * 2);
    agile__arena_fini(&a);
out:
    return rv;
}

static void bench_glibc(result *r, const char *name, size_t size, double *samples, int nb)
{
    snprintf(r->name, sizeof(r->name), "%s", name);
    for (int i = 0; i < 10000; i++) {
        sink = malloc(size);
        free(sink);
    }
    for (int b = 0; b < nb; b++) {
        uint64_t t0 = agile__now_ns();
        for (int i = 0; i < BATCH; i++) {
            sink = malloc(size);
            free(sink);
        }
        samples[b] = (double)(agile__now_ns() - t0) / BATCH;
    }
    summarize(r, samples, nb);
}

int main(int argc, char **argv)
{
    int json = 0, nb = 20000;
    result res[16];
    int n = 0, rv = AGILE_OK;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--batches") && i + 1 < argc)
            nb = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--json] [--batches N]\n", argv[0]);
            return 2;
        }
    }
    if (nb < 100)
        nb = 100;
    double *samples = malloc(sizeof(double) * (size_t)nb);
    if (!samples)
        return 1;
    struct {
        const char *name;
        const agile__arena_ops *ops;
        uint64_t size;
        uintptr_t sa, sf;
    } cases[] = {
        {"same/256B", &fake_stream_ops, 256, 1, 1},
        {"same/64KiB", &fake_stream_ops, 64 << 10, 1, 1},
        {"same/4MiB", &fake_stream_ops, 4 * MiB, 1, 1},
        {"cross/64KiB", &fake_stream_ops, 64 << 10, 1, 2},
        {"cross/4MiB", &fake_stream_ops, 4 * MiB, 1, 2},
        {"host/256B", &fake_host_ops, 256, 1, 1},
        {"host/4MiB", &fake_host_ops, 4 * MiB, 1, 1},
    };
    for (size_t i = 0; i < AGILE_ARRAY_LEN(cases); i++) {
        rv = bench_arena(&res[n++], cases[i].name, cases[i].ops, cases[i].size, cases[i].sa,
                         cases[i].sf, samples, nb);
        if (rv != AGILE_OK) {
            fprintf(stderr, "%s: %s\n", cases[i].name, agile_strerror(rv));
            free(samples);
            return 1;
        }
    }
    rv = bench_threads(&res[n++], samples, nb);
    if (rv != AGILE_OK) {
        fprintf(stderr, "2thr/4KiB: %s\n", agile_strerror(rv));
        free(samples);
        return 1;
    }
    bench_glibc(&res[n++], "glibc/256B", 256, samples, nb);
    bench_glibc(&res[n++], "glibc/64KiB", 64 << 10, samples, nb);
    bench_glibc(&res[n++], "glibc/4MiB", 4 * MiB, samples, nb);
    free(samples);
    if (json) {
        printf("{\"bench\":\"alloc\",\"unit\":\"ns per malloc+free\",\"goal_p50\":150");
        for (int i = 0; i < n; i++)
            printf(",\"%s\":{\"p50\":%.1f,\"p99\":%.1f}", res[i].name, res[i].p50, res[i].p99);
        printf("}\n");
    } else {
        printf("%-14s %10s %10s   (ns per malloc+free pair, batches of %d, goal p50 <= 150)\n",
               "case", "p50", "p99", BATCH);
        for (int i = 0; i < n; i++)
            printf("%-14s %10.1f %10.1f\n", res[i].name, res[i].p50, res[i].p99);
    }
    return 0;
}
