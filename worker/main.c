/* agile-worker: the trusted process that owns the GPU. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <fcntl.h>

#include "worker.h"

static const char usage[] =
    "usage: agile-worker [--backend auto|cuda|host] [--runtime-dir DIR] [--config FILE]\n"
    "                    [--shared] [--foreground] [--log-level debug|info|warn|error]\n"
    "\n"
    "The trusted agile worker: owns the GPU's CUDA contexts, the memory it leases to each\n"
    "tenant, the protected modules (fft) and the PTX guard, and serves clients (agile_torch,\n"
    "libagile, agilectl) on DIR/agile.sock (nng, control plane) and DIR/agile.fd.sock (peer\n"
    "credentials and fd passing).\n"
    "\n"
    "  --backend B       auto (default): cuda when a GPU and driver are usable, else host;\n"
    "                    cuda: fail if no GPU; host: memfd memory, no GPU\n"
    "  --runtime-dir DIR default $AGILE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/agile,\n"
    "                    else /tmp/agile-$UID (created 0700)\n"
    "  --shared          serve every local user: DIR is made 0755 and both sockets 0666, and\n"
    "                    each connecting uid is its own tenant with the config's policy; DIR\n"
    "                    must belong to the worker's uid and not be writable by group or\n"
    "                    others (refused otherwise), and `agilectl status` shows a uid its\n"
    "                    own tenant only. Without it: 0700, the worker's uid only. DIR is\n"
    "                    never a symbolic link (refused)\n"
    "  --config FILE     tenant policy (quota, modules, priority, time_limit_ms, lease_step)\n"
    "                    and per-uid limits (max_sessions, max_pending, max_objects,\n"
    "                    max_requests, max_module_loads, max_module_bytes); defaults apply\n"
    "                    without one (see README, Configuration)\n"
    "  --foreground      stay attached to the terminal and log to stderr (under systemd: the\n"
    "                    journal; readiness is told through $NOTIFY_SOCKET, Type=notify);\n"
    "                    otherwise the worker detaches once it is ready and logs to\n"
    "                    DIR/worker.log\n"
    "  --log-level L     overrides $AGILE_LOG\n"
    "  --version, --help\n"
    "\n"
    "Signals: SIGTERM/SIGINT shut down cleanly (agilectl stop); SIGHUP reloads --config (new\n"
    "policies apply to the next lease, session and request; a file that does not parse is\n"
    "refused, logged, and the running config kept) and reopens DIR/worker.log (logrotate).\n"
    "\n"
    "Exit status: 0 after a clean shutdown (SIGTERM/SIGINT) or, detached, once the worker is\n"
    "ready; 1 when it cannot start (DIR refused, no GPU with --backend cuda, ...), the reason\n"
    "on stderr; 2 on a usage error; 3 when another worker already serves DIR.\n";

static int parse_level(const char *s)
{
    if (!strcmp(s, "debug"))
        return AGILE_LOG_DEBUG;
    if (!strcmp(s, "info"))
        return AGILE_LOG_INFO;
    if (!strcmp(s, "warn"))
        return AGILE_LOG_WARN;
    if (!strcmp(s, "error"))
        return AGILE_LOG_ERROR;
    return -1;
}

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or an abstract
 * socket when it starts with '@'). The variable is taken out of the environment so that the
 * worker's children (guard processes) never speak for it. */
static char notify_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

static void notify_init(void)
{
    const char *e = getenv("NOTIFY_SOCKET");
    if (e && (e[0] == '/' || e[0] == '@') && strlen(e) < sizeof notify_path)
        snprintf(notify_path, sizeof notify_path, "%s", e);
    unsetenv("NOTIFY_SOCKET");
}

static void notify(const char *state)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(notify_path);
    int fd;
    if (!n || (fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return;
    memcpy(sa.sun_path, notify_path, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = 0;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
        agile__warn("sd_notify %s: %s", notify_path, strerror(errno));
    close(fd);
}

/* SIGHUP on a detached worker: DIR/worker.log again (logrotate moved it away), with the same
 * checks as at the start; the old file stays open (stderr) when the new one cannot be. */
static void reopen_log(const char *logp)
{
    int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        agile__error("cannot reopen %s: %s (logging on to the old file)", logp, strerror(errno));
        return;
    }
    dup2(fd, 2);
    close(fd);
    agile__info("log reopened");
}

static void reload(agile__worker *w)
{
    char err[512] = "";
    if (!w->config_path[0]) {
        agile__info("SIGHUP: no --config file, nothing to reload");
        return;
    }
    notify("RELOADING=1");
    if (agile__worker_reload(w, err, sizeof err) == AGILE_OK)
        agile__info("config reloaded from %s: new policies apply from the next lease, session "
                    "and request", w->config_path);
    else
        agile__error("config reload refused, keeping the running config: %s", err);
    notify("READY=1");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"backend", required_argument, 0, 'b'},    {"runtime-dir", required_argument, 0, 'd'},
        {"config", required_argument, 0, 'c'},     {"foreground", no_argument, 0, 'f'},
        {"log-level", required_argument, 0, 'l'},  {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},          {"shared", no_argument, 0, 's'},
        {0, 0, 0, 0}};
    agile__worker_opts o = {0};
    int foreground = 0, ch, ready[2] = {-1, -1};
    static agile__worker w;
    char err[512] = "", logp[PATH_MAX] = "";
    sigset_t set;

    while ((ch = getopt_long(argc, argv, "b:d:c:fl:hVs", opts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            o.backend = strcmp(optarg, "auto") ? -1 : 0;
#define X(NAME, value, name)                                                                       \
    if (!strcmp(optarg, name)) o.backend = AGILE_BACKEND_KIND_##NAME;
            AGILE_BACKEND_LIST(X)
#undef X
            if (o.backend < 0) {
                fprintf(stderr, "agile-worker: unknown backend '%s'\n%s", optarg, usage);
                return 2;
            }
            break;
        case 'd': o.runtime_dir = optarg; break;
        case 'c': o.config = optarg; break;
        case 'f': foreground = 1; break;
        case 's': o.shared = 1; break;
        case 'l': {
            int l = parse_level(optarg);
            if (l < 0) {
                fprintf(stderr, "agile-worker: unknown log level '%s'\n", optarg);
                return 2;
            }
            agile__log_set_level((agile__log_level)l);
            break;
        }
        case 'h': fputs(usage, stdout); return 0;
        case 'V': printf("agile-worker %s (protocol %u.%u)\n", AGILE_VERSION, AGILE_WIRE_MAJOR,
                         AGILE_WIRE_MINOR); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "agile-worker: unexpected argument '%s'\n%s", argv[optind], usage);
        return 2;
    }

    if (!foreground) {
        /* Detach, but exit only when the child says it is ready (or why it is not). */
        char dir[PATH_MAX / 2];
        pid_t pid;
        if (o.runtime_dir)
            snprintf(dir, sizeof dir, "%s", o.runtime_dir);
        else if (agile__runtime_dir(dir, sizeof dir) != AGILE_OK) {
            fprintf(stderr, "agile-worker: runtime dir path too long\n");
            return 1;
        }
        if (pipe(ready) != 0 || (pid = fork()) < 0) {
            perror("agile-worker");
            return 1;
        }
        if (pid > 0) {
            char msg[600];
            ssize_t n;
            close(ready[1]);
            n = read(ready[0], msg, sizeof msg - 1);
            if (n <= 0) {
                fprintf(stderr, "agile-worker: the worker died while starting (see %s/worker.log)\n",
                        dir);
                return 1;
            }
            msg[n] = 0;
            fputs(msg + 1, msg[0] == '0' ? stdout : stderr);
            return msg[0] == '0' ? 0 : msg[0] == '3' ? 3 : 1;
        }
        close(ready[0]);
        setsid();
        mkdir(dir, 0700);
        snprintf(logp, sizeof logp, "%s/worker.log", dir);
        /* Only in a dir that is ours and no symlink (the start refuses any other, saying
         * why through the ready pipe): never create or follow a file in someone else's. */
        struct stat dst;
        int fd = lstat(dir, &dst) == 0 && S_ISDIR(dst.st_mode) && dst.st_uid == geteuid()
                     ? open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600)
                     : -1;
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            close(nul);
        }
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
    }

    /* Large buffers (a module's PTX, the guard's tables) come from the heap and stay there:
     * mmap/munmap per request takes the process's mmap lock (which lease mapping needs too)
     * and shoots down TLBs on every CPU, so one tenant's module loads would slow everyone. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    notify_init();

    /* Signals are taken synchronously by this thread; every other thread blocks them. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rv = agile__worker_start(&w, &o, err, sizeof err);
    if (rv != AGILE_OK) {
        agile__error("cannot start: %s", err);
        agile__worker_fini(&w);
        /* 3: another worker serves the dir (a client that started us connects to that one);
         * 1: anything else, which a client reports with our message */
        int code = rv == AGILE_EBUSY ? 3 : 1;
        if (ready[1] >= 0) {
            dprintf(ready[1], "%dagile-worker: cannot start: %s\n", code, err);
            close(ready[1]);
        } else {
            fprintf(stderr, "agile-worker: cannot start: %s\n", err);
        }
        return code;
    }
    if (ready[1] >= 0) {
        dprintf(ready[1], "0agile-worker: pid %d, backend %s%s%s%s, runtime dir %s\n",
                (int)getpid(), agile__backend_name(w.be), w.backend_why[0] ? " (no usable GPU: " : "",
                w.backend_why, w.backend_why[0] ? ")" : "", w.dir);
        close(ready[1]);
    } else if (agile__backend_kind(w.be) == AGILE_BACKEND_KIND_HOST && w.backend_why[0]) {
        fprintf(stderr, "agile-worker: no usable GPU (%s): running on the host backend\n",
                w.backend_why);
    }
    char ready_msg[64];
    snprintf(ready_msg, sizeof ready_msg, "READY=1\nMAINPID=%d", (int)getpid());
    notify(ready_msg);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig != SIGHUP)
            break;
        if (logp[0])
            reopen_log(logp);
        reload(&w);
    }
    notify("STOPPING=1");
    agile__info("shutting down");
    agile__worker_fini(&w);
    agile__info("stopped");
    return 0;
}
