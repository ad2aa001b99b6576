/* fairness-host-bench: one tenant's ring NOP round trip while another floods the worker with
 * large host memsets (issue 12 item 7), against the same round trip with nobody flooding,
 * measured in the same run.
 *
 *   fairness-host-bench [--runtime-dir DIR] [-n N] [--bytes B] [--json]
 *       the benchmark: unloaded NOPs, NOPs while a flooder process (this program's `flood`
 *       mode) memsets B bytes (default 1 GiB) again and again, unloaded NOPs again; prints
 *       the medians, their ratio and the flooder's rate. Without --runtime-dir it starts a
 *       host worker in a new temporary directory and stops it at the end; run as root, that
 *       worker is --shared and the flooder runs as uid 65534 (nobody), so the two are
 *       different tenants (otherwise they are two clients of one tenant).
 *   fairness-host-bench flood --runtime-dir DIR [--bytes B] [--paced]
 *       memsets B bytes of its pool in a loop (a barrier after each), prints "flooding" once
 *       the first one has completed, and on SIGTERM or SIGINT one JSON line with its rate.
 *       --paced: after "flooding" it reads lines from stdin: "stop" (it says "stopped" once
 *       its last memset has completed, and waits), "go" (it says "going" once the next
 *       memset is posted), end of input (it ends).
 *   fairness-host-bench nop --runtime-dir DIR [-n N] [--rounds R]
 *       N ring NOP round trips after a warm-up; one JSON line with p50/p99/mean in us.
 *       --rounds R: R rounds of N, each started by a line on stdin; after each, one line
 *       with the N latencies in ns.
 * The modes let a test run the two sides as different uids. */
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agile/agile.h"
#include "agile/ring.h"
#include "bench_stats.h"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int fail(const char *what, int rv)
{
    fprintf(stderr, "fairness-host-bench: %s: %s: %s\n", what, agile_strerror(rv),
            agile_last_error());
    return 1;
}

/* --paced: the line on stdin, if one is there (wait: block for it); "" at end of input. */
static int read_cmd(char *line, size_t cap, int wait)
{
    struct pollfd pf = {.fd = 0, .events = POLLIN};
    if (!wait && poll(&pf, 1, 0) <= 0) return 0;
    if (!fgets(line, (int)cap, stdin)) line[0] = '\0';
    return 1;
}

static int flood(const char *dir, uint64_t bytes, int paced)
{
    char line[64];
    agile_connect_opts co = {.runtime_dir = dir, .no_autostart = 1};
    uint64_t rounds = 0, t0;
    int rv;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    if ((rv = agile_init(&co))) return fail("connect", rv);
    void *p = agile_malloc(bytes, 0, NULL);
    if (!p) return fail("agile_malloc", AGILE_ENOMEM);
    t0 = now_ns();
    while (!stop_flag) {
        if ((rv = agile_memset_async(p, (int)(rounds & 0xff), bytes, NULL)))
            return fail("memset", rv);
        if ((rv = agile_barrier(NULL, NULL))) return fail("barrier", rv);
        if (rounds++ == 0) {
            printf("flooding\n");
            fflush(stdout);
        }
        if (paced && read_cmd(line, sizeof line, 0)) {
            while (strncmp(line, "stop", 4) == 0) {
                printf("stopped\n");
                fflush(stdout);
                read_cmd(line, sizeof line, 1);
            }
            if (!line[0]) break;
            if ((rv = agile_memset_async(p, 0x5a, bytes, NULL))) return fail("memset", rv);
            printf("going\n");
            fflush(stdout);
            if ((rv = agile_barrier(NULL, NULL))) return fail("barrier", rv);
            rounds++;
        }
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    printf("{\"memsets\":%llu,\"bytes\":%llu,\"gib_per_s\":%.3f,\"seconds\":%.3f}\n",
           (unsigned long long)rounds, (unsigned long long)bytes,
           (double)rounds * (double)bytes / secs / (double)(1ull << 30), secs);
    agile_free(p, bytes, 0, NULL);
    return 0;
}

/* n NOP round trips on c's ring (after a warm-up), summarised. */
static int nops(agile_client *c, long n, summ *out)
{
    uint64_t *lat = malloc((size_t)n * sizeof *lat);
    int rv = 0;
    if (!lat) return fail("malloc", AGILE_ENOMEM);
    for (long i = 0; i < 1000 && !rv; i++)
        rv = agile_ring_nop(c, 0, (uint64_t)i);
    for (long i = 0; i < n && !rv; i++) {
        uint64_t t0 = now_ns();
        rv = agile_ring_nop(c, 0, (uint64_t)i);
        lat[i] = now_ns() - t0;
    }
    if (rv)
        rv = fail("ring NOP", rv);
    else
        *out = summarize(lat, n);
    free(lat);
    return rv;
}

static int nop_mode(const char *dir, long n, long rounds)
{
    agile_connect_opts co = {.runtime_dir = dir, .no_autostart = 1};
    agile_client *c;
    summ s;
    char line[64];
    int rv;
    if ((rv = agile_connect(&co, &c))) return fail("connect", rv);
    if ((rv = agile_ring_open(c, 0))) return fail("ring open", rv);
    if (rounds) {
        uint64_t *lat = malloc((size_t)n * sizeof *lat);
        if (!lat) return fail("malloc", AGILE_ENOMEM);
        for (long r = 0; r < rounds && !rv && fgets(line, sizeof line, stdin); r++) {
            for (long i = 0; i < n && !rv; i++) {
                uint64_t t0 = now_ns();
                rv = agile_ring_nop(c, 0, (uint64_t)i);
                lat[i] = now_ns() - t0;
            }
            for (long i = 0; i < n && !rv; i++)
                printf("%llu%c", (unsigned long long)lat[i], i + 1 < n ? ' ' : '\n');
            fflush(stdout);
        }
        free(lat);
        agile_disconnect(c);
        return rv ? fail("ring NOP", rv) : 0;
    }
    if (nops(c, n, &s)) return 1;
    agile_disconnect(c);
    printf("{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,\"runs\":%ld}\n", s.p50, s.p99, s.mean, n);
    return 0;
}

/* Start `self flood` (as uid, unless it is negative) and wait until it floods; its stdout
 * is *rd. */
static pid_t start_flooder(const char *self, const char *dir, uint64_t bytes, int uid, FILE **rd)
{
    int fds[2];
    char b[32], line[64] = "";
    if (pipe(fds) != 0) return -1;
    snprintf(b, sizeof b, "%llu", (unsigned long long)bytes);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (uid >= 0 &&
            (setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 || setuid((uid_t)uid) != 0))
            _exit(126);
        execl(self, self, "flood", "--runtime-dir", dir, "--bytes", b, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    *rd = fdopen(fds[0], "r");
    if (pid < 0 || !*rd || !fgets(line, sizeof line, *rd) || strncmp(line, "flooding", 8) != 0) {
        if (pid > 0) kill(pid, SIGKILL);
        return -1;
    }
    return pid;
}

/* As root: a --shared host worker (agile-worker beside this program) in rt, so that another
 * uid can be the flooder. Returns whether it is up (it detaches once it listens). */
static int start_shared_worker(const char *self, const char *tmp, const char *rt)
{
    char worker[4096];
    const char *slash = strrchr(self, '/');
    int st = -1;
    if (!slash || chmod(tmp, 0755) != 0) return 0;
    snprintf(worker, sizeof worker, "%.*s/agile-worker", (int)(slash - self), self);
    pid_t pid = fork();
    if (pid == 0) {
        execl(worker, worker, "--runtime-dir", rt, "--backend", "host", "--shared", (char *)NULL);
        _exit(127);
    }
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *mode = NULL;
    char tmp[] = "/tmp/agile-fair-XXXXXX", rt[64], self[4096];
    long n = 20000, rounds = 0;
    int paced = 0;
    uint64_t bytes = 1ull << 30;
    int json = 0, ch, rv;
    static const struct option o[] = {{"runtime-dir", 1, 0, 'd'}, {"json", 0, 0, 'j'},
                                      {"bytes", 1, 0, 'b'},       {"paced", 0, 0, 'p'},
                                      {"rounds", 1, 0, 'r'},      {0, 0, 0, 0}};
    if (argc > 1 && argv[1][0] != '-') {
        mode = argv[1];
        argc--;
        argv++;
    }
    while ((ch = getopt_long(argc, argv, "d:n:jb:", o, NULL)) != -1) {
        if (ch == 'd')
            dir = optarg;
        else if (ch == 'b')
            bytes = strtoull(optarg, NULL, 0);
        else if (ch == 'n')
            n = atol(optarg);
        else if (ch == 'j')
            json = 1;
        else if (ch == 'p')
            paced = 1;
        else if (ch == 'r')
            rounds = atol(optarg);
        else
            return 2;
    }
    if (n < 100 || bytes == 0 ||
        (mode && (!dir || (strcmp(mode, "flood") != 0 && strcmp(mode, "nop") != 0)))) {
        fprintf(stderr, "usage: fairness-host-bench [flood [--paced]|nop [--rounds R]] "
                        "[--runtime-dir DIR] [-n N>=100] [--bytes B] [--json]\n");
        return 2;
    }
    if (mode && strcmp(mode, "flood") == 0) return flood(dir, bytes, paced);
    if (mode) return nop_mode(dir, n, rounds);

    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return fail("readlink /proc/self/exe", AGILE_EINVAL);
    self[len] = '\0';
    int own = !dir, uid = -1;
    if (own) {
        if (!mkdtemp(tmp)) return 1;
        snprintf(rt, sizeof rt, "%s/rt", tmp);
        dir = rt;
        if (geteuid() == 0 && start_shared_worker(self, tmp, rt)) uid = 65534;
    }
    agile_connect_opts co = {.runtime_dir = dir, .no_autostart = !own, .backend = "host"};
    agile_client *c;
    summ idle1, loaded, idle2;
    FILE *frd = NULL;
    char fl[256] = "";
    if ((rv = agile_connect(&co, &c))) return fail("connect", rv);
    if ((rv = agile_ring_open(c, 0))) return fail("ring open", rv);
    if (nops(c, n, &idle1)) return 1;
    pid_t fp = start_flooder(self, dir, bytes, uid, &frd);
    if (fp < 0) return fail("starting the flooder", AGILE_EINTERNAL);
    rv = nops(c, n, &loaded);
    kill(fp, SIGTERM);
    if (!fgets(fl, sizeof fl, frd)) snprintf(fl, sizeof fl, "{}");
    fl[strcspn(fl, "\n")] = '\0';
    fclose(frd);
    waitpid(fp, NULL, 0);
    if (rv || nops(c, n, &idle2)) return 1;
    agile_disconnect(c);
    if (own) stop_own_worker(dir, tmp);

    double base = (idle1.p50 + idle2.p50) / 2, ratio = loaded.p50 / base;
    if (!json) {
        printf("%-46s %10s %10s %10s\n", "ring NOP round trip of tenant B", "p50 us", "p99 us",
               "mean us");
        printf("%-46s %10.2f %10.2f %10.2f\n", "nobody else working (before)", idle1.p50, idle1.p99,
               idle1.mean);
        printf("%-46s %10.2f %10.2f %10.2f\n", "tenant A flooding memsets", loaded.p50, loaded.p99,
               loaded.mean);
        printf("%-46s %10.2f %10.2f %10.2f\n", "nobody else working (after)", idle2.p50, idle2.p99,
               idle2.mean);
        printf("loaded / unloaded p50: %.2fx; flooder (%s): %s\n", ratio,
               uid >= 0 ? "another tenant, uid 65534" : "another client of this tenant", fl);
    }
    printf("{\"bench\":\"fairness_host\",\"unit\":\"us\",\"bytes\":%llu,\"runs\":%ld,"
           "\"idle_before\":{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f},"
           "\"loaded\":{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f},"
           "\"idle_after\":{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f},"
           "\"ratio_p50\":%.3f,\"two_tenants\":%s,\"flooder\":%s}\n",
           (unsigned long long)bytes, n, idle1.p50, idle1.p99, idle1.mean, loaded.p50, loaded.p99,
           loaded.mean, idle2.p50, idle2.p99, idle2.mean, ratio, uid >= 0 ? "true" : "false",
           fl[0] == '{' ? fl : "{}");
    return 0;
}
