/* Guard jobs in a child process (guardproc.h says why). The parent writes one request on a
 * socket pair and reads one reply; both are a fixed header (little-endian, as every agile
 * format) and the bytes it announces:
 *   request: magic, flags, guard gap, arch length, cache dir length, PTX length; arch, dir, PTX
 *   reply:   magic, rv, stage, flags, sites, message length, image length; message, image */
#include "guardproc.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agile/err.h"
#include "guard.h"

extern char **environ;

#define GJ_REQ_MAGIC 0x31714a47u /* "GJq1" */
#define GJ_REP_MAGIC 0x31724a47u /* "GJr1" */
#define GJ_STRICT 1u
#define GJ_COMPILE 2u
#define GJ_NICE 4u
#define GJ_RAW 8u
#define GJ_RECORD 1u
#define GJ_HIT 2u
#define GJ_ENV "AGILE_GUARD_CHILD"
/* Bounds: the child's CPU time (guarding a 4 MiB module takes seconds; compiling it with
 * nvJitLink tens of seconds), the parent's wait, and what either side believes of a length. */
#define GJ_CPU_S 120
#define GJ_WALL_MS 300000LL
#define GJ_MAX_PTX (1ull << 30)
#define GJ_MAX_IMAGE (1ull << 30)
#define GJ_MAX_STR 4096u

typedef struct {
    uint32_t magic, flags;
    uint64_t gap;
    uint32_t arch_len, dir_len;
    uint64_t ptx_len;
} gj_req;

typedef struct {
    uint32_t magic;
    int32_t rv;
    uint32_t stage, flags, nsites, msg_len;
    uint64_t image_len;
} gj_rep;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Set while the worker shuts down: jobs in progress end at once (their child killed). */
static atomic_int g_cancel;

void agile__guard_jobs_cancel(bool on)
{
    atomic_store(&g_cancel, on);
}

/* All of buf to/from fd before the deadline (-1: none). 0, or -1 (EOF, error, past it, or
 * cancelled). */
static int xfer(int fd, void *buf, size_t n, bool out, int64_t deadline)
{
    char *p = buf;
    while (n) {
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (atomic_load(&g_cancel)) return -1;
            struct pollfd pf = {.fd = fd, .events = out ? POLLOUT : POLLIN};
            if (left <= 0) return -1;
            int r = poll(&pf, 1, (int)(left > 100 ? 100 : left));
            if (r < 0 && errno != EINTR) return -1;
            if (r <= 0) continue;
        }
        ssize_t k = out ? send(fd, p, n, MSG_NOSIGNAL) : read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* ---- the child ---------------------------------------------------------------------------- */

static void child_job(const gj_req *q, const char *arch, const char *dir, const char *ptx,
                      gj_rep *r, char *msg, void **image, size_t *image_len)
{
    agile_guard_opts go;
    agile_guard_vopts vo;
    agile_guard_result gr;
    const char *out = ptx;
    size_t out_len = q->ptx_len;
    bool hit = false;

    memset(&gr, 0, sizeof gr);
    if (!(q->flags & GJ_RAW)) {
        agile_guard_opts_init(&go);
        go.strict = (q->flags & GJ_STRICT) != 0;
        go.guard_gap = q->gap;
        go.skip_verify = true; /* verified below, independently */
        r->rv = agile_guard_ptx(ptx, q->ptx_len, &go, &gr);
        if (r->rv != AGILE_OK) {
            r->stage = AGILE_GJ_GUARD;
            snprintf(msg, GJ_MAX_STR, "%s", gr.err);
            goto out;
        }
        /* The verifier re-reads the output: a rewriter bug must not reach a GPU. */
        memset(&vo, 0, sizeof vo);
        vo.guard_gap = q->gap;
        r->rv = agile_guard_verify(gr.ptx, gr.ptx_len, &vo, msg, GJ_MAX_STR);
        if (r->rv != AGILE_OK) {
            r->stage = AGILE_GJ_VERIFY;
            goto out;
        }
        out = gr.ptx;
        out_len = gr.ptx_len;
        r->nsites = gr.nsites;
        if (gr.record) r->flags |= GJ_RECORD;
    }
    if (q->flags & GJ_COMPILE) {
        char a[40], want[56];
        agile_guard_compile_opts co;
        memset(&co, 0, sizeof co);
        /* Triton targets the architecture-specific variant (".target sm_90a"): PTX for it
         * only compiles for exactly that arch. */
        snprintf(a, sizeof a, "%s", arch);
        snprintf(want, sizeof want, ".target %sa", arch);
        if (strstr(out, want)) strcat(a, "a");
        co.arch = a;
        co.cache_dir = *dir ? dir : NULL;
        r->rv = agile_guard_compile(out, out_len, &co, image, image_len, &hit, msg, GJ_MAX_STR);
        if (r->rv != AGILE_OK) {
            r->stage = AGILE_GJ_COMPILE;
            goto out;
        }
        if (hit) r->flags |= GJ_HIT;
    }
out:
    agile_guard_result_fini(&gr);
}

/* Everything but stdin, stdout and stderr: the worker's sockets, its tenants' memory and
 * ring fds must be out of reach of the code that reads hostile PTX. */
static void close_inherited(void)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max > 0 ? max : 1024); fd++)
        close((int)fd);
}

/* Serves the one job on fds 0 (request) and 1 (reply), then exits: the process is a guard
 * child (GJ_ENV set, stdin a socket), started by agile__guard_job_run. */
static void child_main(void)
{
    gj_req q;
    gj_rep r = {.magic = GJ_REP_MAGIC};
    char *arch = NULL, *dir = NULL, *ptx = NULL, *msg = calloc(1, GJ_MAX_STR);
    void *image = NULL;
    size_t image_len = 0;
    struct rlimit cpu = {GJ_CPU_S, GJ_CPU_S + 10};
    close_inherited();
    setrlimit(RLIMIT_CPU, &cpu);
    if (!msg || xfer(0, &q, sizeof q, false, -1) || q.magic != GJ_REQ_MAGIC ||
        q.arch_len >= 32 || q.dir_len >= GJ_MAX_STR || q.ptx_len > GJ_MAX_PTX)
        _exit(2);
    if (q.flags & GJ_NICE) (void)setpriority(PRIO_PROCESS, 0, 19);
    arch = calloc(1, q.arch_len + 1);
    dir = calloc(1, q.dir_len + 1);
    ptx = malloc(q.ptx_len + 1);
    if (!arch || !dir || !ptx || xfer(0, arch, q.arch_len, false, -1) ||
        xfer(0, dir, q.dir_len, false, -1) || xfer(0, ptx, q.ptx_len, false, -1))
        _exit(2);
    ptx[q.ptx_len] = 0;
    child_job(&q, arch, dir, ptx, &r, msg, &image, &image_len);
    r.msg_len = (uint32_t)strnlen(msg, sizeof(((agile__guard_job *)0)->msg) - 1);
    r.image_len = image ? image_len : 0;
    int bad = xfer(1, &r, sizeof r, true, -1) || xfer(1, msg, r.msg_len, true, -1) ||
              (r.image_len && xfer(1, image, r.image_len, true, -1));
    free(image);
    free(ptx);
    free(dir);
    free(arch);
    free(msg);
    exit(bad ? 2 : 0);
}

__attribute__((constructor)) static void guard_child_entry(void)
{
    struct stat st;
    const char *e = getenv(GJ_ENV);
    if (e && !strcmp(e, "1") && fstat(0, &st) == 0 && S_ISSOCK(st.st_mode)) child_main();
}

/* ---- the parent --------------------------------------------------------------------------- */

static int child_failed(agile__guard_job *j, const char *what, const char *why)
{
    j->stage = AGILE_GJ_CHILD;
    snprintf(j->msg, sizeof j->msg, "the guard process %s%s", what, why);
    return AGILE_EGUARD;
}

/* The environment of the child: ours (it finds nvJitLink as we would) with GJ_ENV. */
static char **child_env(void)
{
    size_t n = 0, k = 0;
    while (environ && environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    if (!env) return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], GJ_ENV "=", sizeof GJ_ENV) != 0) env[k++] = environ[i];
    env[k++] = (char *)GJ_ENV "=1";
    env[k] = NULL;
    return env;
}

static pid_t spawn_child(int fd, char *err, size_t errcap)
{
    static char *const argv[] = {(char *)"agile-guard-job", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dflt;
    pid_t pid = -1;
    char **env = child_env();
    int rv = ENOMEM;

    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGINT);
    sigaddset(&dflt, SIGHUP);
    if (env && !posix_spawn_file_actions_init(&fa)) {
        if (!posix_spawnattr_init(&at)) {
            /* the worker blocks and ignores signals that the child must take by default */
            posix_spawnattr_setsigmask(&at, &none);
            posix_spawnattr_setsigdefault(&at, &dflt);
            posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
            posix_spawn_file_actions_adddup2(&fa, fd, 0);
            posix_spawn_file_actions_adddup2(&fa, fd, 1);
            rv = posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, env);
            posix_spawnattr_destroy(&at);
        }
        posix_spawn_file_actions_destroy(&fa);
    }
    free(env);
    if (rv) {
        snprintf(err, errcap, "%s", strerror(rv));
        return -1;
    }
    return pid;
}

int agile__guard_job_run(agile__guard_job *j)
{
    int sv[2], status = 0;
    char why[96] = "";
    gj_rep r;
    size_t alen = j->arch ? strlen(j->arch) : 0, dlen = j->cache_dir ? strlen(j->cache_dir) : 0;
    gj_req q = {.magic = GJ_REQ_MAGIC,
                .flags = (j->strict ? GJ_STRICT : 0) | (j->arch ? GJ_COMPILE : 0) |
                         (j->nice ? GJ_NICE : 0) | (j->raw ? GJ_RAW : 0),
                .gap = j->guard_gap,
                .arch_len = (uint32_t)alen,
                .dir_len = (uint32_t)dlen,
                .ptx_len = j->len};

    j->stage = 0;
    j->record = j->hit = false;
    j->nsites = 0;
    j->image = NULL;
    j->image_len = 0;
    j->msg[0] = 0;
    if (alen >= 32 || dlen >= GJ_MAX_STR || j->len > GJ_MAX_PTX) return AGILE_EINVAL;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return child_failed(j, "did not start: ", strerror(errno));
    pid_t pid = spawn_child(sv[1], why, sizeof why);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return child_failed(j, "did not start: ", why);
    }
    int64_t deadline = now_ms() + GJ_WALL_MS;
    /* A child that dies early makes the sends fail; its reply (none) says the rest. */
    if (!xfer(sv[0], &q, sizeof q, true, deadline) && !xfer(sv[0], (void *)j->arch, alen, true, deadline) &&
        !xfer(sv[0], (void *)j->cache_dir, dlen, true, deadline))
        (void)xfer(sv[0], (void *)j->ptx, j->len, true, deadline);
    shutdown(sv[0], SHUT_WR);
    bool ok = !xfer(sv[0], &r, sizeof r, false, deadline) && r.magic == GJ_REP_MAGIC &&
              r.msg_len < sizeof j->msg && r.image_len <= GJ_MAX_IMAGE &&
              !xfer(sv[0], j->msg, r.msg_len, false, deadline);
    if (ok) {
        j->msg[r.msg_len] = 0;
        if (r.image_len) {
            ok = (j->image = malloc(r.image_len)) &&
                 !xfer(sv[0], j->image, r.image_len, false, deadline);
            j->image_len = r.image_len;
        }
    }
    bool late = now_ms() >= deadline;
    close(sv[0]);
    if (!ok) kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!ok) {
        agile__guard_job_fini(j);
        if (late) return child_failed(j, "ran past its time limit", " (300 s)");
        if (WIFSIGNALED(status))
            snprintf(why, sizeof why, "signal %d%s", WTERMSIG(status),
                     WTERMSIG(status) == SIGXCPU ? ", past its CPU time limit" : "");
        else
            snprintf(why, sizeof why, "exit status %d", WEXITSTATUS(status));
        return child_failed(j, "failed: ", why);
    }
    j->stage = (int)r.stage;
    j->nsites = r.nsites;
    j->record = (r.flags & GJ_RECORD) != 0;
    j->hit = (r.flags & GJ_HIT) != 0;
    return r.rv;
}

void agile__guard_job_fini(agile__guard_job *j)
{
    free(j->image);
    j->image = NULL;
    j->image_len = 0;
}
