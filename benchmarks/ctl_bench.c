/* ctl-bench: control-plane round trip through the agile worker (PING, and HELLO = a whole
 * connect) beside a raw nng req/rep round trip of the same size measured in the same run.
 *
 *   ctl-bench --runtime-dir DIR [-n N] [--json]
 * The worker must be running on DIR (benchmarks/run.py starts one). */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "agile/agile.h"
#include "bench_stats.h"

static void *echo_server(void *arg)
{
    nng_socket s = *(nng_socket *)arg;
    for (;;) {
        nng_msg *m;
        if (nng_recvmsg(s, &m, 0) != 0)
            return NULL;
        if (nng_sendmsg(s, m, 0) != 0)
            nng_msg_free(m);
    }
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    long n = 20000;
    int json = 0, ch;
    static const struct option o[] = {{"runtime-dir", 1, 0, 'd'}, {"json", 0, 0, 'j'}, {0, 0, 0, 0}};
    while ((ch = getopt_long(argc, argv, "d:n:j", o, NULL)) != -1) {
        if (ch == 'd')
            dir = optarg;
        else if (ch == 'n')
            n = atol(optarg);
        else if (ch == 'j')
            json = 1;
        else
            return 2;
    }
    if (!dir || n < 100) {
        fprintf(stderr, "usage: ctl-bench --runtime-dir DIR [-n N>=100] [--json]\n");
        return 2;
    }
    uint64_t *lat = malloc((size_t)n * sizeof *lat);
    agile_connect_opts co = {.runtime_dir = dir, .no_autostart = 1};
    agile_client *c;
    int rv = agile_connect(&co, &c);
    if (rv) {
        fprintf(stderr, "ctl-bench: %s: %s\n", agile_strerror(rv), agile_last_error());
        return 1;
    }
    for (long i = 0; i < 1000; i++)
        agile_ping(c);
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        if (agile_ping(c) != AGILE_OK)
            return 1;
        lat[i] = now_ns() - t0;
    }
    summ ping = summarize(lat, n);
    long nh = n / 20;
    for (long i = 0; i < nh; i++) {
        agile_client *c2;
        uint64_t t0 = now_ns();
        if (agile_connect(&co, &c2) != AGILE_OK)
            return 1;
        lat[i] = now_ns() - t0;
        agile_disconnect(c2);
    }
    summ hello = summarize(lat, nh);
    agile_disconnect(c);

    /* raw nng req/rep over ipc://, a 64-byte message (the size of a PING with its header) */
    char url[512];
    nng_socket rep, req;
    pthread_t th;
    snprintf(url, sizeof url, "ipc://%s/bench-raw.sock", dir);
    if (nng_rep0_open(&rep) || nng_listen(rep, url, NULL, 0) || nng_req0_open(&req) ||
        nng_dial(req, url, NULL, 0)) {
        fprintf(stderr, "ctl-bench: raw nng setup failed\n");
        return 1;
    }
    pthread_create(&th, NULL, echo_server, &rep);
    char msg[64] = {0}, buf[64];
    for (long i = 0; i < n + 1000; i++) {
        size_t sz = sizeof buf;
        uint64_t t0 = now_ns();
        nng_send(req, msg, sizeof msg, 0);
        nng_recv(req, buf, &sz, 0);
        if (i >= 1000)
            lat[i - 1000] = now_ns() - t0;
    }
    summ raw = summarize(lat, n);
    nng_close(req);
    nng_close(rep);
    pthread_join(th, NULL);
    unlink(url + 6);

    if (!json) {
        printf("%-36s %10s %10s %10s %8s\n", "control plane (ipc)", "p50 us", "p99 us", "mean us", "runs");
        printf("%-36s %10.1f %10.1f %10.1f %8ld\n", "raw nng req/rep, 64 B (baseline)", raw.p50, raw.p99, raw.mean, raw.n);
        printf("%-36s %10.1f %10.1f %10.1f %8ld\n", "agile PING through the worker", ping.p50, ping.p99, ping.mean, ping.n);
        printf("%-36s %10.1f %10.1f %10.1f %8ld\n", "agile connect+HELLO+BYE", hello.p50, hello.p99, hello.mean, hello.n);
        printf("ratio PING/raw p50: %.2fx\n", ping.p50 / raw.p50);
    }
    printf("{\"bench\":\"ctl\",\"unit\":\"us\",\"raw_nng\":{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,\"runs\":%ld},"
           "\"ping\":{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,\"runs\":%ld},"
           "\"connect_hello\":{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,\"runs\":%ld},"
           "\"ratio_ping_vs_raw_p50\":%.3f}\n",
           raw.p50, raw.p99, raw.mean, raw.n, ping.p50, ping.p99, ping.mean, ping.n, hello.p50,
           hello.p99, hello.mean, hello.n, ping.p50 / raw.p50);
    free(lat);
    return 0;
}
