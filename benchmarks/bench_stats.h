/* bench_stats.h — what the C benchmarks share: a monotonic clock and latency summaries
 * (p50, p99 and mean in microseconds of samples in nanoseconds). Header-only. */
#ifndef AGILE_BENCH_STATS_H
#define AGILE_BENCH_STATS_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double p50, p99, mean;
    long n;
} summ;

/* Sorts v. */
static inline summ summarize(uint64_t *v, long n)
{
    summ s = {0};
    double sum = 0;
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    for (long i = 0; i < n; i++)
        sum += (double)v[i];
    s.p50 = (double)v[n / 2] / 1e3;
    s.p99 = (double)v[(n * 99) / 100] / 1e3;
    s.mean = sum / (double)n / 1e3;
    s.n = n;
    return s;
}

#endif
