/* agilectl: look at, poke and stop the agile worker. status and ping go through the same
 * control plane as clients; stop signals the worker that holds the runtime dir's lock. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agile/agile.h"
#include "core.h"

static const char usage[] =
    "usage: agilectl [--runtime-dir DIR] [--start] COMMAND [ARGS]\n"
    "       agilectl --version | --help\n"
    "\n"
    "Commands:\n"
    "  status [--json]    backend, GPUs (name, memory), tenants with leased bytes, quota,\n"
    "                     object counts and protocol errors, and their limits (sessions,\n"
    "                     pending connections, objects, requests and module loads in\n"
    "                     flight: in use / maximum, refusals); on a --shared worker a uid\n"
    "                     other than root and the worker's sees its own tenant only\n"
    "  ping [-n N]        N control-plane round trips; prints p50/p99 latency\n"
    "  stop [--timeout S] ask the worker of DIR to shut down (SIGTERM: clients are released\n"
    "                     and told) and wait up to S seconds (default 30) until it has\n"
    "\n"
    "Options:\n"
    "  --runtime-dir DIR  the worker's runtime dir (default: as agile-worker)\n"
    "  --start            status, ping: start a worker when none is running (as a client\n"
    "                     would); without it they exit 1 and say that none runs\n"
    "  --no-start         accepted for compatibility: not starting one is the default\n"
    "  --version          print agilectl's version and protocol, and exit\n"
    "\n"
    "Exit status: 0 on success, 1 when the worker cannot be reached or refuses (with the\n"
    "reason: no worker runs, a limit of this uid, a runtime dir the worker would not start\n"
    "on, ...) or, for stop, when no worker runs on DIR or it could not be stopped (another\n"
    "user's worker, or still running after S seconds), 2 on usage.\n";

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

/* 1: some process holds the lock of the pid file (a worker serves the dir). */
static int locked(int fd)
{
    if (flock(fd, LOCK_SH | LOCK_NB) != 0)
        return errno == EWOULDBLOCK;
    flock(fd, LOCK_UN);
    return 0;
}

/* The uid of a live process (-1: gone). */
static long proc_uid(pid_t pid)
{
    char p[64];
    struct stat st;
    snprintf(p, sizeof p, "/proc/%d", (int)pid);
    return stat(p, &st) == 0 ? (long)st.st_uid : -1;
}

/* stop: the worker of dir holds an exclusive flock on dir/agile.pid (holding the pid) for as
 * long as it runs, and releases it at the very end of its shutdown (after the GPU). A file
 * nobody holds is a dead worker's; one in a dir or of an owner we do not trust is refused,
 * so that a planted pid file cannot make us signal another of our processes. */
static int stop_worker(const char *dir, long timeout_s)
{
    char path[PATH_MAX], buf[32];
    struct stat dst, fst;
    snprintf(path, sizeof path, "%s/agile.pid", dir);
    if (lstat(dir, &dst) != 0 || !S_ISDIR(dst.st_mode)) {
        fprintf(stderr, "agilectl stop: no worker runs on %s\n", dir);
        return 1;
    }
    if ((dst.st_uid != geteuid() && dst.st_uid != 0) || (dst.st_mode & (S_IWGRP | S_IWOTH))) {
        fprintf(stderr, "agilectl stop: %s belongs to uid %u or is writable by others: not "
                        "trusting its agile.pid\n", dir, (unsigned)dst.st_uid);
        return 1;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || !locked(fd)) {
        fprintf(stderr, "agilectl stop: no worker runs on %s\n", dir);
        if (fd >= 0)
            close(fd);
        return 1;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    long pid = strtol(buf, NULL, 10);
    if (fstat(fd, &fst) != 0 || pid <= 1 ||
        (fst.st_uid != geteuid() && geteuid() != 0) || proc_uid((pid_t)pid) != (long)fst.st_uid) {
        fprintf(stderr, "agilectl stop: the worker on %s (pid %s) runs as uid %u: only that "
                        "user or root can stop it\n", dir, buf[0] ? buf : "?",
                (unsigned)fst.st_uid);
        close(fd);
        return 1;
    }
    if (kill((pid_t)pid, SIGTERM) != 0 && errno != ESRCH) {
        fprintf(stderr, "agilectl stop: cannot signal pid %ld: %s\n", pid, strerror(errno));
        close(fd);
        return 1;
    }
    uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000ull;
    while (locked(fd) && now_ns() < deadline)
        usleep(20000);
    int still = locked(fd);
    close(fd);
    if (still) {
        fprintf(stderr, "agilectl stop: the worker (pid %ld) on %s is still running after %ld s\n",
                pid, dir, timeout_s);
        return 1;
    }
    printf("agilectl: stopped the worker (pid %ld) on %s\n", pid, dir);
    return 0;
}

/* A command's one optional argument, FLAG N with N in 1..max (*v keeps its default without
 * it). 0: a usage error, said. */
static int count_arg(int argc, char **argv, int cmd, const char *flag, long max, long *v)
{
    for (int i = cmd + 1; i < argc; i++) {
        if (strcmp(argv[i], flag) != 0 || i + 1 == argc) {
            fprintf(stderr, "agilectl %s: unknown argument '%s'\n", argv[cmd], argv[i]);
            return 0;
        }
        *v = strtol(argv[++i], NULL, 10);
    }
    if (*v < 1 || *v > max) {
        fprintf(stderr, "agilectl %s: %s must be 1..%ld\n", argv[cmd], flag, max);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"runtime-dir", required_argument, 0, 'd'},
                                         {"no-start", no_argument, 0, 'n'},
                                         {"start", no_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {"version", no_argument, 0, 'V'},
                                         {0, 0, 0, 0}};
    agile_connect_opts co = {.no_autostart = 1};
    agile_client *c;
    int ch, rv;
    while ((ch = getopt_long(argc, argv, "+d:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': co.runtime_dir = optarg; break;
        case 'n': co.no_autostart = 1; break;
        case 's': co.no_autostart = 0; break;
        case 'h': fputs(usage, stdout); return 0;
        case 'V':
            printf("agilectl %s (protocol %u.%u)\n", AGILE_VERSION, AGILE_WIRE_MAJOR,
                   AGILE_WIRE_MINOR);
            return 0;
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
        if (!count_arg(argc, argv, optind, "-n", 10000000, &n))
            return 2;
    } else if (!strcmp(cmd, "stop")) {
        long timeout_s = 30;
        char dir[PATH_MAX / 2];
        if (!count_arg(argc, argv, optind, "--timeout", 3600, &timeout_s))
            return 2;
        if (co.runtime_dir)
            snprintf(dir, sizeof dir, "%s", co.runtime_dir);
        else if (agile__runtime_dir(dir, sizeof dir) != AGILE_OK) {
            fprintf(stderr, "agilectl stop: runtime dir path too long\n");
            return 1;
        }
        return stop_worker(dir, timeout_s);
    } else {
        fprintf(stderr, "agilectl: unknown command '%s'\n%s", cmd, usage);
        return 2;
    }
    if ((rv = agile_connect(&co, &c)) != AGILE_OK) {
        fprintf(stderr, "agilectl: cannot reach the worker: %s%s%s%s\n", agile_strerror(rv),
                agile_last_error()[0] ? ": " : "", agile_last_error(),
                rv == AGILE_ENOWORKER && co.no_autostart
                    ? " (start one with agile-worker, or agilectl --start)"
                    : "");
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
