/* bench_stats.h — what the C benchmarks share: a monotonic clock, latency summaries (p50,
 * p99 and mean in microseconds of samples in nanoseconds) and stopping a worker they started
 * in a temporary directory. Header-only. */
#ifndef AGILE_BENCH_STATS_H
#define AGILE_BENCH_STATS_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

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

/* SIGTERM to the worker of runtime dir `dir` (its agile.pid), then remove dir (the worker
 * removes its files as it exits; up to 5 s) and its parent `tmp`. */
static inline void stop_own_worker(const char *dir, const char *tmp)
{
    char path[4096], buf[32] = "";
    snprintf(path, sizeof path, "%s/agile.pid", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fgets(buf, sizeof buf, f) && atoi(buf) > 0) kill(atoi(buf), SIGTERM);
        fclose(f);
    }
    for (int i = 0; i < 250 && rmdir(dir) != 0; i++) {
        snprintf(path, sizeof path, "%s/worker.log", dir);
        unlink(path);
        usleep(20000);
    }
    rmdir(tmp);
}

#endif
