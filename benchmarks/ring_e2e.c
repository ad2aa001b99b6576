/* ring-e2e-bench: a data-plane round trip through the real worker (a NOP posted on the
 * client's command ring, dispatched by the worker's dispatcher thread, its completion waited
 * for) beside the control-plane PING of the same client, measured in the same run; and the
 * throughput of back-to-back NOPs (posted without waiting, completions reaped as they come).
 *
 *   ring-e2e-bench [--runtime-dir DIR] [-n N] [--json] [--backend host|cuda|auto]
 * Without --runtime-dir it starts a private worker (agile-worker beside libagile) in a new
 * temporary directory and stops it at the end. */
#include <dirent.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agile/agile.h"
#include "bench_stats.h"
#include "agile/ring.h"

/* The worker is pinned (all its threads) to the last CPU and we to the first, so the spin
 * phases of the two ends never share a core (on a 2-core machine they otherwise do, and the
 * figure is the scheduler's, not the ring's). Only for the worker we started ourselves. */
static int pin(const char *dir)
{
    char path[160], buf[32] = "";
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t me, them;
    if (ncpu < 2) return 0;
    snprintf(path, sizeof path, "%s/agile.pid", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int pid = fgets(buf, sizeof buf, f) ? atoi(buf) : 0;
    fclose(f);
    if (pid <= 0) return 0;
    CPU_ZERO(&me);
    CPU_SET(0, &me);
    CPU_ZERO(&them);
    CPU_SET((int)ncpu - 1, &them);
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));)
        if (atoi(e->d_name) > 0) sched_setaffinity(atoi(e->d_name), sizeof them, &them);
    closedir(d);
    return sched_setaffinity(0, sizeof me, &me) == 0;
}

static int fail(const char *what, int rv)
{
    fprintf(stderr, "ring-e2e-bench: %s: %s: %s\n", what, agile_strerror(rv), agile_last_error());
    return 1;
}

/* Warm-up, then n ring NOPs and n PINGs one at a time (latencies into lat, plat), then the
 * back-to-back NOP rate (*mops). Returns 0 or fail()'s 1. */
static int measure(const agile_connect_opts *co, int own, const char *dir, long n, uint64_t *lat,
                   uint64_t *plat, double *mops, int *pinned)
{
    agile_client *c;
    int rv;
    if ((rv = agile_connect(co, &c))) return fail("connect", rv);
    if ((rv = agile_ring_open(c, 0))) return fail("ring open", rv);
    *pinned = own && pin(dir); /* after ring open: the dispatcher thread exists now */
    for (long i = 0; i < 2000; i++) {
        if ((rv = agile_ring_nop(c, 0, (uint64_t)i)) || (rv = agile_ping(c)))
            return fail("warm-up", rv);
    }
    /* One after the other: interleaving would let the dispatcher fall asleep during every
     * PING and measure its futex wake-up instead of the ring (both figures are reported by
     * the worker's own design: spin briefly, then sleep). */
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        if ((rv = agile_ring_nop(c, 0, (uint64_t)i))) return fail("ring NOP", rv);
        lat[i] = now_ns() - t0;
    }
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        if ((rv = agile_ping(c))) return fail("PING", rv);
        plat[i] = now_ns() - t0;
    }
    /* Throughput: n * 10 NOPs back to back, then a barrier. */
    long nt = n * 10;
    uint64_t c0 = agile_ring_completed(c, 0), t0 = now_ns();
    for (long i = 0; i < nt; i++)
        if ((rv = agile_ring_nop_async(c, 0))) return fail("async NOP", rv);
    if ((rv = agile_ring_barrier(c, 0, NULL, NULL))) return fail("barrier", rv);
    double secs = (double)(now_ns() - t0) / 1e9;
    *mops = (double)(agile_ring_completed(c, 0) - c0) / secs / 1e6;
    agile_disconnect(c);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *backend = "host";
    char tmp[] = "/tmp/agile-e2e-XXXXXX", rt[64];
    long n = 20000;
    int json = 0, ch, rv;
    static const struct option o[] = {
        {"runtime-dir", 1, 0, 'd'}, {"json", 0, 0, 'j'}, {"backend", 1, 0, 'b'}, {0, 0, 0, 0}};
    while ((ch = getopt_long(argc, argv, "d:n:jb:", o, NULL)) != -1) {
        if (ch == 'd')
            dir = optarg;
        else if (ch == 'b')
            backend = optarg;
        else if (ch == 'n')
            n = atol(optarg);
        else if (ch == 'j')
            json = 1;
        else
            return 2;
    }
    if (n < 100) {
        fprintf(stderr, "usage: ring-e2e-bench [--runtime-dir DIR] [-n N>=100] [--json] "
                        "[--backend B]\n");
        return 2;
    }
    int own = !dir;
    if (own) {
        if (!mkdtemp(tmp)) return 1;
        snprintf(rt, sizeof rt, "%s/rt", tmp);
        dir = rt;
    }
    agile_connect_opts co = {.runtime_dir = dir, .no_autostart = !own, .backend = backend};
    uint64_t *lat = malloc((size_t)n * sizeof *lat), *plat = malloc((size_t)n * sizeof *plat);
    double mops = 0;
    int pinned = 0;
    rv = lat && plat ? measure(&co, own, dir, n, lat, plat, &mops, &pinned) : 1;
    summ ring = {0}, ping = {0};
    if (!rv) {
        ring = summarize(lat, n);
        ping = summarize(plat, n);
    }
    free(lat);
    free(plat);
    if (own) stop_own_worker(dir, tmp);
    if (rv) return rv;

    if (!json) {
        printf("%-40s %10s %10s %10s %8s\n", "client -> worker round trip", "p50 us", "p99 us",
               "mean us", "runs");
        printf("%-40s %10.2f %10.2f %10.2f %8ld\n", "control-plane PING (baseline)", ping.p50,
               ping.p99, ping.mean, ping.n);
        printf("%-40s %10.2f %10.2f %10.2f %8ld\n", "data-plane NOP through the ring", ring.p50,
               ring.p99, ring.mean, ring.n);
        printf("speed-up p50: %.1fx;  back-to-back NOPs: %.2f M/s%s\n", ping.p50 / ring.p50, mops,
               pinned ? "  (client and worker pinned to different CPUs)" : "");
    }
    printf(
        "{\"bench\":\"ring_e2e\",\"unit\":\"us\",\"ping\":{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,"
        "\"runs\":%ld},\"ring_nop\":{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,\"runs\":%ld},"
        "\"speedup_p50\":%.2f,\"nop_throughput_mops\":%.3f,\"pinned\":%s}\n",
        ping.p50, ping.p99, ping.mean, ping.n, ring.p50, ring.p99, ring.mean, ring.n,
        ping.p50 / ring.p50, mops, pinned ? "true" : "false");
    return 0;
}
