/* ring-bench — the data plane against the control plane, two real processes each.
 *
 *   (a) ring round trip: the client submits a NOP, the worker process takes it and posts
 *       its completion, the client waits for it. p50/p99/mean after a warm-up.
 *   (b) nng req/rep over ipc:// with a 64-byte message: p50/p99/mean.
 *   (c) ring throughput: back-to-back submits with completions drained as they come.
 *
 * Prints a table and then one line of JSON (only the JSON with --json) for the benchmark
 * runner. Options: --iters N (ring round trips), --nng-iters N, --ops N (throughput),
 * --no-pin (do not pin the two processes to different CPUs), --json.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "ring/ring.h"

#define SEC 1000000000ll

typedef struct {
    uint64_t n;
    double p50, p99, mean, min;
} stats;

typedef struct {
    uint64_t iters, nng_iters, ops;
    bool json, pin;
    int cpu_client, cpu_worker;
} opts;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static stats summarize(uint64_t *ns, uint64_t n)
{
    stats s = {n, 0, 0, 0, 0};
    double sum = 0;
    qsort(ns, n, sizeof *ns, cmp_u64);
    for (uint64_t i = 0; i < n; i++)
        sum += (double)ns[i];
    s.p50 = (double)ns[n / 2];
    s.p99 = (double)ns[(n * 99) / 100];
    s.mean = sum / (double)n;
    s.min = (double)ns[0];
    return s;
}

/* Two CPUs we may run on, so client and worker do not share a core (which would make every
 * round trip a context switch). */
static void pick_cpus(opts *o)
{
    cpu_set_t set;
    o->cpu_client = o->cpu_worker = -1;
    if (!o->pin || sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) < 2) return;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        if (o->cpu_client < 0)
            o->cpu_client = c;
        else if (o->cpu_worker < 0)
            o->cpu_worker = c;
    }
}

static void pin(int cpu)
{
    cpu_set_t set;
    if (cpu < 0) return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)sched_setaffinity(0, sizeof set, &set);
}

/* ---- ring ------------------------------------------------------------------------------ */

static int ring_worker(agile__ring_worker *w, pid_t client, int cpu)
{
    agile__ring_peer peer;
    agile__ring_cmd *cmd = malloc(sizeof *cmd);
    int rv;
    bool got;
    pin(cpu);
    if (!cmd || agile__ring_peer_pid(client, &peer) != AGILE_OK) return 1;
    agile__ring_worker_set_peer(w, &peer);
    for (;;) {
        rv = agile__ring_wait_cmd(w, SEC);
        if (rv == AGILE_ETIMEDOUT) continue;
        if (rv != AGILE_OK) break;
        /* drain what is there: batching is what makes (c) fast */
        while ((rv = agile__ring_next(w, cmd, &got)) == AGILE_OK && got)
            if ((rv = agile__ring_complete(w, cmd, AGILE_OK, cmd->u.nop.cookie)) != AGILE_OK) break;
        if (rv != AGILE_OK) break;
    }
    free(cmd);
    return rv == AGILE_ECLOSED ? 0 : 2;
}

static int ring_bench(const opts *o, stats *rt, double ops_per_s[2])
{
    int rv = AGILE_OK;
    agile__ring_worker w;
    agile__ring_client c;
    agile__ring_peer peer = {.pidfd = -1};
    agile__ring_cmd cmd;
    agile__ring_cpl cpl[64];
    uint64_t *ns = NULL, warm = o->iters / 10 + 1000;
    bool have_client = false;
    pid_t pid = -1;
    memset(&cmd, 0, offsetof(agile__ring_cmd, raw));
    cmd.opcode = AGILE_RING_OP_NOP;
    AGILE_TRY(
        agile__ring_worker_init(&w, AGILE_RING_DEFAULT_SLOTS, AGILE_RING_DEFAULT_SLOT_SIZE, NULL));
    pid = fork();
    if (pid < 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    if (pid == 0) _exit(ring_worker(&w, getppid(), o->cpu_worker));
    pin(o->cpu_client);
    int fd = dup(w.reg.fd);
    agile__ring_region_fini(&w.reg); /* from here on we are only the client */
    AGILE_TRY(agile__ring_peer_pid(pid, &peer));
    rv = agile__ring_client_init(&c, fd, &peer);
    if (rv != AGILE_OK) {
        close(fd);
        agile__ring_peer_fini(&peer);
        goto out;
    }
    have_client = true;
    ns = malloc(o->iters * sizeof *ns);
    if (!ns) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    /* (a) round trips */
    for (uint64_t i = 0; i < warm + o->iters; i++) {
        uint64_t seq, t0 = agile__now_ns();
        int32_t st;
        cmd.u.nop.cookie = i;
        AGILE_TRY(agile__ring_submit(&c, &cmd, 0, 5 * SEC, &seq));
        AGILE_TRY(agile__ring_wait_seq(&c, seq, 5 * SEC, &st));
        uint64_t t1 = agile__now_ns();
        if (i >= warm) ns[i - warm] = t1 - t0;
    }
    *rt = summarize(ns, o->iters);
    /* (c) throughput: keep the ring full, drain completions as they arrive; once publishing
     * every command, once publishing batches (AGILE_RING_MORE) */
    for (int batched = 0; batched < 2; batched++) {
        unsigned flags = AGILE_RING_NONBLOCK | (batched ? AGILE_RING_MORE : 0);
        uint64_t sent = 0, done = 0, t0 = agile__now_ns();
        uint32_t n;
        while (done < o->ops) {
            while (sent < o->ops) {
                cmd.u.nop.cookie = sent;
                int r = agile__ring_submit(&c, &cmd, flags, 0, NULL);
                if (r == AGILE_EFULL) break;
                AGILE_TRY(r);
                sent++;
            }
            agile__ring_flush(&c);
            AGILE_TRY(agile__ring_poll(&c, cpl, 64, &n));
            if (n == 0 && sent - done > 0) {
                AGILE_TRY(agile__ring_wait(&c, cpl, 5 * SEC));
                n = 1;
            }
            done += n;
        }
        ops_per_s[batched] = (double)o->ops * 1e9 / (double)(agile__now_ns() - t0);
    }
out:
    if (have_client)
        agile__ring_client_fini(&c); /* closes our side: the worker process exits */
    else if (pid != 0)
        agile__ring_worker_fini(&w);
    if (pid > 0) {
        int st;
        if (rv != AGILE_OK) kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    free(ns);
    return rv;
}

/* ---- nng ------------------------------------------------------------------------------- */

static int nng_err(int e)
{
    fprintf(stderr, "ring-bench: nng: %s\n", nng_strerror(e));
    return AGILE_EPROTO;
}

static int nng_server(const char *url, int cpu)
{
    nng_socket s;
    char buf[256];
    pin(cpu);
    if (nng_rep0_open(&s) != 0 || nng_listen(s, url, NULL, 0) != 0) return 1;
    /* readiness: a byte on stdout would need a pipe; the client retries its dial instead */
    for (;;) {
        size_t sz = sizeof buf;
        if (nng_recv(s, buf, &sz, 0) != 0) break;
        if (sz == 1 && buf[0] == 'q') {
            nng_send(s, buf, 1, 0);
            break;
        }
        if (nng_send(s, buf, sz, 0) != 0) break;
    }
    nng_close(s);
    return 0;
}

static int nng_bench(const opts *o, stats *rt)
{
    int rv = AGILE_OK, e;
    char dir[] = "/tmp/agile-ring-bench-XXXXXX", url[128], sock[96];
    uint8_t msg[64], back[256];
    uint64_t *ns = NULL, warm = o->nng_iters / 10 + 100;
    nng_socket s = NNG_SOCKET_INITIALIZER;
    bool open = false;
    pid_t pid = -1;
    if (!mkdtemp(dir)) return agile_err_sys(errno);
    snprintf(sock, sizeof sock, "%s/rep.sock", dir);
    snprintf(url, sizeof url, "ipc://%s", sock);
    pid = fork();
    if (pid < 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    if (pid == 0) _exit(nng_server(url, o->cpu_worker));
    pin(o->cpu_client);
    if ((e = nng_req0_open(&s)) != 0) {
        rv = nng_err(e);
        goto out;
    }
    open = true;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 5000);
    for (int tries = 0;; tries++) {
        if ((e = nng_dial(s, url, NULL, 0)) == 0) break;
        if (tries > 500) {
            rv = nng_err(e);
            goto out;
        }
        usleep(10000);
    }
    ns = malloc(o->nng_iters * sizeof *ns);
    if (!ns) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    memset(msg, 0xab, sizeof msg);
    for (uint64_t i = 0; i < warm + o->nng_iters; i++) {
        size_t sz = sizeof back;
        uint64_t t0 = agile__now_ns();
        if ((e = nng_send(s, msg, sizeof msg, 0)) != 0 || (e = nng_recv(s, back, &sz, 0)) != 0) {
            rv = nng_err(e);
            goto out;
        }
        uint64_t t1 = agile__now_ns();
        if (sz != sizeof msg) {
            rv = AGILE_EPROTO;
            goto out;
        }
        if (i >= warm) ns[i - warm] = t1 - t0;
    }
    *rt = summarize(ns, o->nng_iters);
    size_t sz = sizeof back;
    nng_send(s, "q", 1, 0);
    nng_recv(s, back, &sz, 0);
out:
    if (open) nng_close(s);
    if (pid > 0) {
        int st;
        if (rv != AGILE_OK) kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    unlink(sock);
    rmdir(dir);
    free(ns);
    return rv;
}

/* ---- main ------------------------------------------------------------------------------ */

static uint64_t arg_u64(const char *v)
{
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || x == 0) {
        fprintf(stderr, "ring-bench: bad number '%s'\n", v);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    opts o = {.iters = 200000, .nng_iters = 20000, .ops = 2000000, .pin = true};
    stats ring = {0}, nng = {0};
    double ops[2] = {0, 0};
    int rv;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            o.json = true;
        else if (!strcmp(argv[i], "--no-pin"))
            o.pin = false;
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            o.iters = arg_u64(argv[++i]);
        else if (!strcmp(argv[i], "--nng-iters") && i + 1 < argc)
            o.nng_iters = arg_u64(argv[++i]);
        else if (!strcmp(argv[i], "--ops") && i + 1 < argc)
            o.ops = arg_u64(argv[++i]);
        else {
            fprintf(stderr, "usage: ring-bench [--json] [--iters N] [--nng-iters N] [--ops N] "
                            "[--no-pin]\n");
            return 2;
        }
    }
    pick_cpus(&o);
    if ((rv = ring_bench(&o, &ring, ops)) != AGILE_OK) {
        fprintf(stderr, "ring-bench: ring: %s\n", agile_strerror(rv));
        return 1;
    }
    if ((rv = nng_bench(&o, &nng)) != AGILE_OK) {
        fprintf(stderr, "ring-bench: nng: %s\n", agile_strerror(rv));
        return 1;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double ratio = nng.p50 / ring.p50;
    if (!o.json) {
        printf("ring-bench: %ld CPUs online, client on CPU %d, worker on CPU %d\n", ncpu,
               o.cpu_client, o.cpu_worker);
        printf("%-28s %10s %10s %10s %10s %10s\n", "round trip", "iters", "min us", "p50 us",
               "p99 us", "mean us");
        printf("%-28s %10llu %10.2f %10.2f %10.2f %10.2f\n", "ring NOP (shm)",
               (unsigned long long)ring.n, ring.min / 1e3, ring.p50 / 1e3, ring.p99 / 1e3,
               ring.mean / 1e3);
        printf("%-28s %10llu %10.2f %10.2f %10.2f %10.2f\n", "nng req/rep ipc:// 64 B",
               (unsigned long long)nng.n, nng.min / 1e3, nng.p50 / 1e3, nng.p99 / 1e3,
               nng.mean / 1e3);
        printf("p50 ratio nng/ring: %.1fx (goal >= 20x)\n", ratio);
        printf("ring throughput: %.2f M commands/s publishing each, %.2f M/s batched "
               "(%llu NOPs, completions drained)\n",
               ops[0] / 1e6, ops[1] / 1e6, (unsigned long long)o.ops);
    }
    printf("{\"bench\":\"ring\",\"cpus\":%ld,\"pinned\":%s,"
           "\"ring_rt\":{\"iters\":%llu,\"min_ns\":%.0f,\"p50_ns\":%.0f,\"p99_ns\":%.0f,"
           "\"mean_ns\":%.1f},"
           "\"nng_rt\":{\"iters\":%llu,\"min_ns\":%.0f,\"p50_ns\":%.0f,\"p99_ns\":%.0f,"
           "\"mean_ns\":%.1f},"
           "\"ratio_p50\":%.2f,\"throughput\":{\"ops\":%llu,\"ops_per_s\":%.0f,"
           "\"batched_ops_per_s\":%.0f}}\n",
           ncpu, o.cpu_worker >= 0 ? "true" : "false", (unsigned long long)ring.n, ring.min,
           ring.p50, ring.p99, ring.mean, (unsigned long long)nng.n, nng.min, nng.p50, nng.p99,
           nng.mean, ratio, (unsigned long long)o.ops, ops[0], ops[1]);
    return 0;
}
