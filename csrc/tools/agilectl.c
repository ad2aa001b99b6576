/* agilectl: look at and poke the agile worker, through the same control plane as clients. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agile/agile.h"

static const char usage[] =
    "usage: agilectl [--runtime-dir DIR] [--no-start] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  status [--json]    backend, GPUs (name, memory), tenants with leased bytes, quota,\n"
    "                     object counts and protocol errors, and their limits (sessions,\n"
    "                     pending connections, objects, requests and module loads in\n"
    "                     flight: in use / maximum, refusals); on a --shared worker a uid\n"
    "                     other than root and the worker's sees its own tenant only\n"
    "  ping [-n N]        N control-plane round trips; prints p50/p99 latency\n"
    "\n"
    "Options:\n"
    "  --runtime-dir DIR  the worker's runtime dir (default: as agile-worker)\n"
    "  --no-start         do not start a worker when none is running (exit 1 instead)\n"
    "\n"
    "Exit status: 0 on success, 1 when the worker cannot be reached or refuses (with the\n"
    "reason: a limit of this uid, a runtime dir the worker would not start on, ...), 2 on\n"
    "usage.\n";

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"runtime-dir", required_argument, 0, 'd'},
                                         {"no-start", no_argument, 0, 'n'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    agile_connect_opts co = {0};
    agile_client *c;
    int ch, rv;
    while ((ch = getopt_long(argc, argv, "+d:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': co.runtime_dir = optarg; break;
        case 'n': co.no_autostart = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind >= argc) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[optind];
    int json = 0;
    long n = 1000;
    if (!strcmp(cmd, "status")) {
        for (int i = optind + 1; i < argc; i++) {
            if (!strcmp(argv[i], "--json"))
                json = 1;
            else {
                fprintf(stderr, "agilectl status: unknown argument '%s'\n", argv[i]);
                return 2;
            }
        }
    } else if (!strcmp(cmd, "ping")) {
        for (int i = optind + 1; i < argc; i++) {
            if (!strcmp(argv[i], "-n") && i + 1 < argc)
                n = strtol(argv[++i], NULL, 10);
            else {
                fprintf(stderr, "agilectl ping: unknown argument '%s'\n", argv[i]);
                return 2;
            }
        }
        if (n < 1 || n > 10000000) {
            fprintf(stderr, "agilectl ping: -n must be 1..10000000\n");
            return 2;
        }
    } else {
        fprintf(stderr, "agilectl: unknown command '%s'\n%s", cmd, usage);
        return 2;
    }
    if ((rv = agile_connect(&co, &c)) != AGILE_OK) {
        fprintf(stderr, "agilectl: cannot reach the worker: %s%s%s\n", agile_strerror(rv),
                agile_last_error()[0] ? ": " : "", agile_last_error());
        return 1;
    }
    if (!strcmp(cmd, "status")) {
        char *text = NULL;
        rv = agile_status(c, json, &text);
        if (rv == AGILE_OK)
            fputs(text, stdout);
        agile_free_string(text);
    } else {
        uint64_t *lat = malloc((size_t)n * sizeof *lat);
        if (!lat)
            rv = AGILE_ENOMEM;
        for (long i = 0; rv == AGILE_OK && i < n; i++) {
            uint64_t t0 = now_ns();
            rv = agile_ping(c);
            lat[i] = now_ns() - t0;
        }
        if (rv == AGILE_OK) {
            qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
            long i50 = n / 2, i99 = (n * 99) / 100;
            printf("%ld pings: p50 %.1f us, p99 %.1f us, max %.1f us\n", n,
                   (double)lat[i50] / 1e3, (double)lat[i99] / 1e3, (double)lat[n - 1] / 1e3);
        }
        free(lat);
    }
    if (rv != AGILE_OK)
        fprintf(stderr, "agilectl %s: %s%s%s\n", cmd, agile_strerror(rv),
                agile_last_error()[0] ? ": " : "", agile_last_error());
    agile_disconnect(c);
    return rv == AGILE_OK ? 0 : 1;
}
