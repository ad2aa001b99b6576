/* libagile: connection, HELLO, worker autostart, control-plane calls, the default client. */
#include "client_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nng/protocol/reqrep0/req.h>

extern char **environ;

static _Thread_local char last_error[512];

void agile__set_last_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

AGILE_API const char *agile_last_error(void)
{
    return last_error;
}

AGILE_API void agile_free_string(char *s)
{
    free(s);
}

/* ---- fd socket ------------------------------------------------------------------------- */

static int connect_fd_socket(const char *dir, int *out)
{
    struct sockaddr_un sa;
    int fd, n;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/agile.fd.sock", dir);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path)
        return AGILE_ETOOBIG;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return agile_err_sys(errno);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        return (e == ENOENT || e == ECONNREFUSED) ? AGILE_ENOWORKER : agile_err_sys(e);
    }
    *out = fd;
    return AGILE_OK;
}

/* The worker we reach is whoever controls the dir: trust it only when that is us or root
 * and nobody else can put a socket there. A shared worker's dir (0755, owned by root or by
 * us) passes; a group- or world-writable one never does. */
static int check_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        int e = errno;
        agile__set_last_error("runtime dir %s: %s", dir, strerror(e));
        return agile_err_sys(e);
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        agile__set_last_error("runtime dir %s is writable by group or others (mode %03o): not "
                              "trusting the worker there",
                              dir, (unsigned)(st.st_mode & 0777));
        return AGILE_EPERM;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        agile__set_last_error("runtime dir %s belongs to uid %u, neither us nor root: not "
                              "trusting the worker there",
                              dir, (unsigned)st.st_uid);
        return AGILE_EPERM;
    }
    return AGILE_OK;
}

/* Read one fd record (blocking up to timeout_ms). */
static int read_record(int sock, int timeout_ms, agile__fdstash *r)
{
    uint8_t rec[AGILE_FDREC_SIZE];
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u;
    struct iovec iov = {rec, sizeof rec};
    struct msghdr mh;
    struct pollfd pf = {sock, POLLIN, 0};
    ssize_t n;
    int pr;

    do {
        pr = poll(&pf, 1, timeout_ms);
    } while (pr < 0 && errno == EINTR);
    if (pr == 0)
        return AGILE_ETIMEDOUT;
    if (pr < 0)
        return agile_err_sys(errno);
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof u.buf;
    do {
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    } while (n < 0 && errno == EINTR);
    r->fd = -1;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < nfd; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
                if (r->fd < 0)
                    r->fd = fd;
                else
                    close(fd); /* we expect one; never leak extra ones */
            }
        }
    }
    if (n == 0) {
        if (r->fd >= 0)
            close(r->fd);
        return AGILE_ECLOSED;
    }
    if (n != (ssize_t)sizeof rec || (mh.msg_flags & MSG_CTRUNC)) {
        if (r->fd >= 0)
            close(r->fd);
        return n < 0 ? agile_err_sys(errno) : AGILE_EPROTO;
    }
    agile__rbuf rb = {rec, sizeof rec, 0, 0};
    uint32_t magic = agile__get_u32(&rb);
    uint16_t ver = agile__get_u16(&rb);
    r->kind = agile__get_u16(&rb);
    r->seq = agile__get_u64(&rb);
    r->handle = agile__get_u64(&rb);
    r->a = agile__get_u64(&rb);
    r->b = agile__get_u64(&rb);
    if (magic != AGILE_FDREC_MAGIC || ver != 1) {
        if (r->fd >= 0)
            close(r->fd);
        return AGILE_EPROTO;
    }
    return AGILE_OK;
}

int agile__recv_fd(agile_client *c, uint64_t seq, uint64_t *handle, uint64_t *a, uint64_t *b,
                   int *fd)
{
    int rv = AGILE_OK;
    uint64_t deadline = agile__now_ns() + (uint64_t)c->timeout_ms * 1000000ull;
    pthread_mutex_lock(&c->fd_mu);
    for (;;) {
        for (agile__fdstash **pp = &c->stash, *s; (s = *pp); pp = &s->next) {
            if (s->seq == seq) {
                *pp = s->next;
                *handle = s->handle;
                *a = s->a;
                *b = s->b;
                *fd = s->fd;
                free(s);
                goto out;
            }
        }
        uint64_t now = agile__now_ns();
        if (now >= deadline) {
            rv = AGILE_ETIMEDOUT;
            goto out;
        }
        agile__fdstash *r = calloc(1, sizeof *r);
        if (!r) {
            rv = AGILE_ENOMEM;
            goto out;
        }
        rv = read_record(c->fd, (int)((deadline - now) / 1000000ull) + 1, r);
        if (rv != AGILE_OK) {
            free(r);
            goto out;
        }
        r->next = c->stash;
        c->stash = r;
    }
out:
    pthread_mutex_unlock(&c->fd_mu);
    return rv;
}

/* ---- control plane ----------------------------------------------------------------------- */

/* nng 1.5 has no synchronous context send/recv: an aio, waited for. */
static int ctx_sendmsg(nng_ctx ctx, nng_msg *m, int timeout_ms)
{
    nng_aio *aio;
    int rv;
    if (nng_aio_alloc(&aio, NULL, NULL) != 0)
        return NNG_ENOMEM;
    nng_aio_set_timeout(aio, timeout_ms);
    nng_aio_set_msg(aio, m);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    rv = nng_aio_result(aio);
    nng_aio_free(aio);
    return rv; /* on failure the caller still owns m */
}

static int ctx_recvmsg(nng_ctx ctx, nng_msg **m, int timeout_ms)
{
    nng_aio *aio;
    int rv;
    if (nng_aio_alloc(&aio, NULL, NULL) != 0)
        return NNG_ENOMEM;
    nng_aio_set_timeout(aio, timeout_ms);
    nng_ctx_recv(ctx, aio);
    nng_aio_wait(aio);
    rv = nng_aio_result(aio);
    if (rv == 0)
        *m = nng_aio_get_msg(aio);
    nng_aio_free(aio);
    return rv;
}

int agile__call(agile_client *c, agile__msg *m, agile__msg *rep, uint8_t **buf)
{
    nng_ctx ctx;
    nng_msg *nm = NULL;
    size_t cap, len;
    int rv = AGILE_OK, nrv;
    *buf = NULL;
    m->h.flags = 0;
    m->h.status = 0;
    m->h.req_id = __atomic_add_fetch(&c->next_req, 1, __ATOMIC_RELAXED);
    cap = agile__msg_size(m);
    if (!cap)
        return AGILE_EINVAL;
    if (nng_ctx_open(&ctx, c->sock) != 0)
        return AGILE_ENOMEM;
    if (nng_msg_alloc(&nm, cap) != 0) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    AGILE_TRY(agile__msg_encode(m, nng_msg_body(nm), cap, &len));
    if ((nrv = ctx_sendmsg(ctx, nm, c->timeout_ms)) != 0) {
        rv = nrv == NNG_ETIMEDOUT ? AGILE_ETIMEDOUT : AGILE_ECLOSED;
        goto out;
    }
    nm = NULL;
    if ((nrv = ctx_recvmsg(ctx, &nm, c->timeout_ms)) != 0) {
        rv = nrv == NNG_ETIMEDOUT ? AGILE_ETIMEDOUT : AGILE_ECLOSED;
        agile__set_last_error("no reply from the worker: %s", nng_strerror(nrv));
        goto out;
    }
    len = nng_msg_len(nm);
    *buf = malloc(len ? len : 1);
    if (!*buf) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    memcpy(*buf, nng_msg_body(nm), len);
    if ((rv = agile__msg_decode(*buf, len, rep)) != AGILE_OK ||
        !(rep->h.flags & AGILE_MSGF_REPLY) || rep->h.type != m->h.type ||
        rep->h.req_id != m->h.req_id) {
        agile__set_last_error("malformed reply from the worker");
        rv = AGILE_EPROTO;
        goto out;
    }
    if (rep->h.status != AGILE_OK) {
        rv = rep->h.status;
        agile__set_last_error("%.*s", (int)rep->u.error.message.n,
                              (const char *)rep->u.error.message.p);
    }
out:
    if (nm)
        nng_msg_free(nm);
    nng_ctx_close(ctx);
    if (rv != AGILE_OK) {
        free(*buf);
        *buf = NULL;
    }
    return rv;
}

/* ---- autostart ----------------------------------------------------------------------------- */

static int find_worker(const agile_connect_opts *o, char *path, size_t cap)
{
    const char *e = o->worker_path ? o->worker_path : getenv("AGILE_WORKER");
    Dl_info di;
    if (e && *e) {
        snprintf(path, cap, "%s", e);
        return access(path, X_OK) == 0 ? AGILE_OK : AGILE_ENOENT;
    }
    /* beside libagile: build/lib -> build/bin; the wheel: agile_torch/_lib -> _bin */
    if (dladdr((void *)agile_connect, &di) && di.dli_fname) {
        static const char *rel[] = {"/../bin/agile-worker", "/../_bin/agile-worker",
                                    "/agile-worker"};
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", di.dli_fname);
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = 0;
            for (size_t i = 0; i < AGILE_ARRAY_LEN(rel); i++) {
                snprintf(path, cap, "%s%s", dir, rel[i]);
                if (access(path, X_OK) == 0)
                    return AGILE_OK;
            }
        }
    }
    const char *p = getenv("PATH");
    while (p && *p) {
        size_t n = strcspn(p, ":");
        snprintf(path, cap, "%.*s/agile-worker", (int)n, p);
        if (n && access(path, X_OK) == 0)
            return AGILE_OK;
        p += n + (p[n] == ':');
    }
    return AGILE_ENOENT;
}

static int start_worker(const agile_connect_opts *o, const char *dir)
{
    char path[PATH_MAX];
    const char *argv[8];
    int argc = 0, st;
    pid_t pid;
    if (find_worker(o, path, sizeof path) != AGILE_OK) {
        agile__set_last_error("no worker runs on %s and agile-worker was not found (set "
                              "AGILE_WORKER)", dir);
        return AGILE_ENOWORKER;
    }
    argv[argc++] = path;
    argv[argc++] = "--runtime-dir";
    argv[argc++] = dir;
    argv[argc++] = "--backend";
    argv[argc++] = o->backend ? o->backend : "auto";
    argv[argc] = NULL;
    /* Its stderr comes to us: the reason when it cannot start (a refused runtime dir). */
    int ep[2], rv = AGILE_OK;
    posix_spawn_file_actions_t fa;
    if (pipe2(ep, O_CLOEXEC | O_NONBLOCK) != 0)
        return agile_err_sys(errno);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, ep[1], 2);
    if ((rv = posix_spawn(&pid, path, &fa, NULL, (char *const *)argv, environ)) != 0)
        rv = agile_err_sys(rv);
    posix_spawn_file_actions_destroy(&fa);
    close(ep[1]);
    /* The worker detaches once it listens (or says why it cannot). Another client may have
     * started one at the same moment: then ours exits 3 and we connect to theirs. */
    while (rv == AGILE_OK && waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (rv == AGILE_OK && !(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 3))) {
        char msg[1024], *last;
        ssize_t n = read(ep[0], msg, sizeof msg - 1); /* written before it exited */
        msg[n > 0 ? n : 0] = 0;
        while (n > 0 && msg[n - 1] == '\n')
            msg[--n] = 0;
        last = strrchr(msg, '\n'); /* its last line says why (log lines may come first) */
        last = last ? last + 1 : msg;
        agile__set_last_error("the worker could not start on %s: %s", dir,
                              last[0] ? last : "it exited without saying why");
        rv = AGILE_ENOWORKER;
    }
    close(ep[0]);
    return rv;
}

static atomic_uint g_fork_gen;
static pthread_once_t g_fork_once = PTHREAD_ONCE_INIT;

static void fork_child(void)
{
    atomic_fetch_add_explicit(&g_fork_gen, 1, memory_order_relaxed);
}

static void fork_hook(void)
{
    pthread_atfork(NULL, NULL, fork_child);
}

unsigned agile__fork_gen(void)
{
    pthread_once(&g_fork_once, fork_hook);
    return atomic_load_explicit(&g_fork_gen, memory_order_relaxed);
}

AGILE_API int agile_connect(const agile_connect_opts *opts, agile_client **out)
{
    agile_connect_opts o = {0};
    agile_client *c;
    agile__fdstash tok = {0};
    agile__msg m, rep;
    uint8_t *buf = NULL;
    char url[PATH_MAX];
    int rv = AGILE_OK, started = 0;
    uint64_t deadline;

    if (opts)
        o = *opts;
    if (!out)
        return AGILE_EINVAL;
    *out = NULL;
    c = calloc(1, sizeof *c);
    if (!c)
        return AGILE_ENOMEM;
    c->fd = -1;
    c->fork_gen = agile__fork_gen();
    c->timeout_ms = o.timeout_ms > 0 ? o.timeout_ms : 10000;
    pthread_mutex_init(&c->fd_mu, NULL);
    pthread_mutex_init(&c->ring_mu, NULL);
    for (int i = 0; i < AGILE_MAX_DEV; i++) {
        pthread_mutex_init(&c->dev[i].mu, NULL);
        c->dev[i].dev = i;
        c->dev[i].c = c;
        agile__evpool_init(&c->dev[i].evpool);
    }
    agile__objtab_init(&c->objs);
    if (o.runtime_dir)
        snprintf(c->dir, sizeof c->dir, "%s", o.runtime_dir);
    else if ((rv = agile__runtime_dir(c->dir, sizeof c->dir)) != AGILE_OK)
        goto fail;
    deadline = agile__now_ns() + (uint64_t)c->timeout_ms * 1000000ull;

    for (;;) {
        rv = connect_fd_socket(c->dir, &c->fd);
        if (rv == AGILE_OK) {
            /* Checked once a worker answers: before, the dir may not exist yet. */
            if ((rv = check_dir(c->dir)) != AGILE_OK)
                goto fail;
            break;
        }
        if (rv != AGILE_ENOWORKER || o.no_autostart) {
            agile__set_last_error("no agile worker is listening on %s", c->dir);
            goto fail;
        }
        if (!started) {
            mkdir(c->dir, 0700);
            if ((rv = start_worker(&o, c->dir)) != AGILE_OK)
                goto fail;
            started = 1;
            continue;
        }
        if (agile__now_ns() > deadline) {
            agile__set_last_error("the worker started on %s did not come up in time", c->dir);
            rv = AGILE_ETIMEDOUT;
            goto fail;
        }
        usleep(20000);
    }
    /* The worker greets every fd-socket connection with our one-time token. */
    if ((rv = read_record(c->fd, c->timeout_ms, &tok)) != AGILE_OK)
        goto fail;
    if (tok.kind == AGILE_FDREC_REFUSED && tok.a && tok.a < AGILE_ESYSERR) {
        /* the worker says why it will not take this connection */
        rv = (int)tok.a;
        agile__set_last_error(
            "the worker refused this connection (%s: %llu)",
            tok.handle == AGILE_FDREFUSE_SESSIONS  ? "sessions per uid, max_sessions"
            : tok.handle == AGILE_FDREFUSE_PENDING ? "connections per uid not past HELLO, "
                                                     "max_pending"
                                                   : "sessions of the worker",
            (unsigned long long)tok.b);
        goto fail;
    }
    if (tok.kind != AGILE_FDREC_TOKEN) {
        rv = AGILE_EPROTO;
        goto fail;
    }
    if (nng_req0_open(&c->sock) != 0) {
        rv = AGILE_ENOMEM;
        goto fail;
    }
    /* Control messages must not be resent behind our back (a LEASE_GROW twice). */
    nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, AGILE_WIRE_HDR_SIZE + AGILE_WIRE_MAX_BODY);
    snprintf(url, sizeof url, "ipc://%s/agile.sock", c->dir);
    if (nng_dial(c->sock, url, NULL, 0) != 0) {
        rv = AGILE_ENOWORKER;
        goto fail;
    }
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_HELLO;
    m.u.hello_req.major = AGILE_WIRE_MAJOR;
    m.u.hello_req.minor = AGILE_WIRE_MINOR;
    m.u.hello_req.token_lo = tok.a;
    m.u.hello_req.token_hi = tok.b;
    m.u.hello_req.pid = (uint32_t)getpid();
    if ((rv = agile__call(c, &m, &rep, &buf)) != AGILE_OK)
        goto fail;
    c->info.session = rep.u.hello_rep.session;
    c->info.tenant = rep.u.hello_rep.tenant;
    c->info.backend = rep.u.hello_rep.backend;
    c->info.ndev = rep.u.hello_rep.ndev;
    c->info.priority = rep.u.hello_rep.priority;
    c->info.quota = rep.u.hello_rep.quota;
    c->info.worker_major = rep.u.hello_rep.major;
    c->info.worker_minor = rep.u.hello_rep.minor;
    free(buf);
    *out = c;
    return AGILE_OK;
fail:
    free(buf);
    if (c->sock.id)
        nng_close(c->sock);
    if (c->fd >= 0)
        close(c->fd);
    pthread_mutex_destroy(&c->fd_mu);
    pthread_mutex_destroy(&c->ring_mu);
    for (int i = 0; i < AGILE_MAX_DEV; i++) {
        pthread_mutex_destroy(&c->dev[i].mu);
        agile__evpool_fini(&c->dev[i].evpool);
    }
    agile__objtab_fini(&c->objs);
    free(c);
    return rv;
}

void agile__conn_close(agile_client *c)
{
    agile__msg m, rep;
    uint8_t *buf = NULL;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_BYE;
    /* In a forked child the session is the parent's: drop this copy without a BYE, and
     * leave nng's socket alone (nng is not fork-safe). */
    if (c->fork_gen == agile__fork_gen()) {
        agile__call(c, &m, &rep, &buf);
        free(buf);
        nng_close(c->sock);
    }
    close(c->fd);
    while (c->stash) {
        agile__fdstash *s = c->stash;
        c->stash = s->next;
        if (s->fd >= 0)
            close(s->fd);
        free(s);
    }
    pthread_mutex_destroy(&c->fd_mu);
}

/* ---- the default client ------------------------------------------------------------------ */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static agile_client *g_client;

agile_client *agile__default_peek(void)
{
    return __atomic_load_n(&g_client, __ATOMIC_ACQUIRE);
}

void agile__default_forget(agile_client *c)
{
    pthread_mutex_lock(&g_mu);
    if (g_client == c)
        __atomic_store_n(&g_client, NULL, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_mu);
}

/* The options agile_init last connected the default client with, under g_mu: a default
 * client connected again after agile_disconnect (by the next implicit call) uses them. */
static agile_connect_opts g_opts;
static bool g_have_opts;

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void opts_keep(const agile_connect_opts *o)
{
    free((char *)g_opts.runtime_dir);
    free((char *)g_opts.worker_path);
    free((char *)g_opts.backend);
    g_opts = *o;
    g_opts.runtime_dir = dup_or_null(o->runtime_dir);
    g_opts.worker_path = dup_or_null(o->worker_path);
    g_opts.backend = dup_or_null(o->backend);
    g_have_opts = true;
}

AGILE_API int agile_init(const agile_connect_opts *opts)
{
    int rv = AGILE_OK;
    agile_client *c;
    pthread_mutex_lock(&g_mu);
    if (!opts && g_have_opts)
        opts = &g_opts;
    if (!g_client && (rv = agile_connect(opts, &c)) == AGILE_OK) {
        __atomic_store_n(&g_client, c, __ATOMIC_RELEASE);
        if (opts && opts != &g_opts)
            opts_keep(opts);
    }
    pthread_mutex_unlock(&g_mu);
    return rv;
}

AGILE_API int agile_default_client(agile_client **out)
{
    int rv = agile_init(NULL);
    if (rv == AGILE_OK)
        *out = agile__default_peek();
    return rv;
}

AGILE_API int agile_session_info_get(agile_client *c, agile_session_info *out)
{
    if (!c || !out)
        return AGILE_EINVAL;
    *out = c->info;
    return AGILE_OK;
}

AGILE_API int agile_ping(agile_client *c)
{
    agile__msg m, rep;
    uint8_t *buf = NULL;
    int rv;
    if (!c)
        return AGILE_EINVAL;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_PING;
    m.u.ping.nonce = agile__now_ns();
    rv = agile__call(c, &m, &rep, &buf);
    if (rv == AGILE_OK && rep.u.ping.nonce != m.u.ping.nonce)
        rv = AGILE_EPROTO;
    free(buf);
    return rv;
}

AGILE_API int agile_status(agile_client *c, int json, char **text)
{
    agile__msg m, rep;
    uint8_t *buf = NULL;
    int rv;
    if (!c || !text)
        return AGILE_EINVAL;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_STATUS;
    m.u.status_req.format = json ? 1 : 0;
    if ((rv = agile__call(c, &m, &rep, &buf)) == AGILE_OK) {
        *text = malloc(rep.u.status_rep.text.n + 1);
        if (!*text)
            rv = AGILE_ENOMEM;
        else {
            memcpy(*text, rep.u.status_rep.text.p, rep.u.status_rep.text.n);
            (*text)[rep.u.status_rep.text.n] = 0;
        }
    }
    free(buf);
    return rv;
}

AGILE_API int agile_object_create(agile_client *c, unsigned type, int device, agile_handle_t *h)
{
    agile__msg m, rep;
    uint8_t *buf = NULL;
    int rv;
    if (!c || !h || device < 0)
        return AGILE_EINVAL;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_OBJ_CREATE;
    m.u.obj_create_req.type = type;
    m.u.obj_create_req.device = (uint32_t)device;
    if ((rv = agile__call(c, &m, &rep, &buf)) == AGILE_OK)
        *h = rep.u.handle.handle;
    free(buf);
    return rv;
}

AGILE_API int agile_object_destroy(agile_client *c, agile_handle_t h)
{
    agile__msg m, rep;
    uint8_t *buf = NULL;
    int rv;
    if (!c)
        return AGILE_EINVAL;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_OBJ_DESTROY;
    m.u.handle.handle = h;
    rv = agile__call(c, &m, &rep, &buf);
    free(buf);
    return rv;
}

AGILE_API int agile_raw_request(agile_client *c, const void *req, size_t len, void **rep,
                                size_t *replen)
{
    nng_ctx ctx;
    nng_msg *nm;
    int rv = AGILE_OK, nrv;
    if (!c || !req || !rep || !replen)
        return AGILE_EINVAL;
    if (nng_ctx_open(&ctx, c->sock) != 0)
        return AGILE_ENOMEM;
    if (nng_msg_alloc(&nm, len) != 0) {
        nng_ctx_close(ctx);
        return AGILE_ENOMEM;
    }
    memcpy(nng_msg_body(nm), req, len);
    if (ctx_sendmsg(ctx, nm, c->timeout_ms) != 0) {
        nng_msg_free(nm);
        rv = AGILE_ECLOSED;
    } else if ((nrv = ctx_recvmsg(ctx, &nm, c->timeout_ms)) != 0) {
        rv = nrv == NNG_ETIMEDOUT ? AGILE_ETIMEDOUT : AGILE_ECLOSED;
    } else {
        *replen = nng_msg_len(nm);
        *rep = malloc(*replen ? *replen : 1);
        if (*rep)
            memcpy(*rep, nng_msg_body(nm), *replen);
        else
            rv = AGILE_ENOMEM;
        nng_msg_free(nm);
    }
    nng_ctx_close(ctx);
    return rv;
}
