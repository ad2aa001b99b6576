/* Worker lifecycle: runtime dir and lock, backend choice, listeners, threads, shutdown. */
#include "worker.h"
#include "dataplane.h"
#include "modules.h"
#include "twin.h"
#include "guardproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <nng/protocol/reqrep0/rep.h>

/* Private (0700): only our uid reaches the sockets. Shared (0755, sockets 0666): every local
 * uid may connect and becomes its own tenant by SO_PEERCRED. */
static int make_dir(const char *dir, int shared, char *err, size_t errcap)
{
    const mode_t mode = shared ? 0755 : 0700;
    struct stat st;
    if (mkdir(dir, mode) != 0 && errno != EEXIST) {
        snprintf(err, errcap, "cannot create runtime dir %s: %s", dir, strerror(errno));
        return agile_err_sys(errno);
    }
    /* A symlink in its place (another uid squatting /tmp/agile-UID) is refused, not
     * followed: we would chmod and fill whatever it points to. */
    if (lstat(dir, &st) == 0 && S_ISLNK(st.st_mode)) {
        snprintf(err, errcap,
                 "runtime dir %s is a symbolic link (made by uid %u): refusing it; remove it "
                 "or give the real dir (--runtime-dir, AGILE_RUNTIME_DIR)",
                 dir, (unsigned)st.st_uid);
        return AGILE_EPERM;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errcap, "runtime dir %s is not a directory", dir);
        return AGILE_EINVAL;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errcap, "runtime dir %s belongs to uid %u, not to us", dir,
                 (unsigned)st.st_uid);
        return AGILE_EPERM;
    }
    /* Other users trust a shared dir: one that others could write may already hold their
     * files (a socket, a guard-cache entry, a worker.log symlink), so it is refused rather
     * than repaired. mkdir never creates one (umask only removes bits). */
    if (shared && (st.st_mode & (S_IWGRP | S_IWOTH))) {
        snprintf(err, errcap,
                 "runtime dir %s is writable by group or others (mode %03o): refusing to share "
                 "it; remove it or chmod it 0755",
                 dir, (unsigned)(st.st_mode & 0777));
        return AGILE_EPERM;
    }
    /* Peers are authenticated by the kernel, but the dir still must not be writable by
     * others: a foreign socket file there would capture our clients. */
    if ((st.st_mode & 0777) != mode && chmod(dir, mode) != 0) {
        snprintf(err, errcap, "cannot chmod %03o %s: %s", (unsigned)mode, dir, strerror(errno));
        return agile_err_sys(errno);
    }
    return AGILE_OK;
}

/* Shared: any local user may connect; the socket mode is what lets them. */
static int share_socket(const char *path, char *err, size_t errcap)
{
    if (chmod(path, 0666) != 0) {
        snprintf(err, errcap, "cannot chmod 0666 %s: %s", path, strerror(errno));
        return agile_err_sys(errno);
    }
    return AGILE_OK;
}

static int take_lock(agile__worker *w, char *err, size_t errcap)
{
    char buf[32];
    int fd = open(w->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errcap, "%s: %s", w->lock_path, strerror(errno));
        return agile_err_sys(errno);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        buf[strcspn(buf, "\n")] = 0;
        snprintf(err, errcap, "another agile worker (pid %s) is running on %s", buf[0] ? buf : "?",
                 w->dir);
        close(fd);
        return AGILE_EBUSY;
    }
    /* We hold the lock: anything left in the dir is from a dead worker. */
    unlink(w->fd_path);
    snprintf(w->url, sizeof w->url, "ipc://%s/agile.sock", w->dir);
    unlink(w->url + 6);
    if (ftruncate(fd, 0) == 0) {
        int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
        if (write(fd, buf, (size_t)n) != n) {
            /* the lock is what matters; the pid is informational */
        }
    }
    w->lock_fd = fd;
    return AGILE_OK;
}

static int listen_fd_socket(agile__worker *w, char *err, size_t errcap)
{
    struct sockaddr_un sa;
    int fd;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(w->fd_path) >= sizeof sa.sun_path) {
        snprintf(err, errcap, "socket path too long: %s", w->fd_path);
        return AGILE_ETOOBIG;
    }
    strcpy(sa.sun_path, w->fd_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        snprintf(err, errcap, "%s: %s", w->fd_path, strerror(e));
        if (fd >= 0)
            close(fd);
        return agile_err_sys(e);
    }
    w->fd_listen = fd;
    return AGILE_OK;
}

/* nng connections per uid: one per session and one per connection about to say HELLO is
 * all a uid needs; more (connections that never send anything hold a socket and nng state
 * each) are closed as they arrive. A pipe closed at ADD_PRE gets no further events. */
/* w->admitted: add (false when out of memory) and take out (whether it was there). */
static bool admitted_add(agile__worker *w, uint32_t id)
{
    if (w->nadmitted == w->capadmitted) {
        size_t cap = w->capadmitted ? 2 * w->capadmitted : 64;
        uint32_t *a = realloc(w->admitted, cap * sizeof *a);
        if (!a) return false;
        w->admitted = a;
        w->capadmitted = cap;
    }
    w->admitted[w->nadmitted++] = id;
    return true;
}

static bool admitted_take(agile__worker *w, uint32_t id)
{
    for (size_t i = 0; i < w->nadmitted; i++)
        if (w->admitted[i] == id) {
            w->admitted[i] = w->admitted[--w->nadmitted];
            return true;
        }
    return false;
}

static void pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    agile__worker *w = arg;
    uint64_t uid = UINT32_MAX;
    if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid) != 0)
        uid = UINT32_MAX;
    if (ev == NNG_PIPE_EV_ADD_PRE) {
        int refuse = 0;
        uint32_t max = 0;
        pthread_mutex_lock(&w->mu);
        agile__tenant *t = agile__tenant_get_locked(w, (uint32_t)uid);
        if (t) {
            max = t->pol.max_sessions + t->pol.max_pending;
            refuse = t->pipes >= max || !admitted_add(w, (uint32_t)nng_pipe_id(p));
            if (refuse)
                t->pipe_refusals++;
            else
                t->pipes++;
        }
        pthread_mutex_unlock(&w->mu);
        if (refuse) {
            agile__log_limited(AGILE_LOG_WARN, (long)uid,
                               "closing a control connection: %u open already (max_sessions + "
                               "max_pending)",
                               max);
            nng_pipe_close(p);
        }
        return;
    }
    if (ev == NNG_PIPE_EV_REM_POST) {
        pthread_mutex_lock(&w->mu);
        agile__tenant *t = agile__tenant_get_locked(w, (uint32_t)uid);
        if (admitted_take(w, (uint32_t)nng_pipe_id(p)) && t && t->pipes)
            t->pipes--;
        pthread_mutex_unlock(&w->mu);
        agile__session_kill_pipe(w, nng_pipe_id(p));
    }
}

/* One thread per nng context: receive, handle, reply. A slow request (a GPU call) holds
 * only this context; the others keep serving. */
static void *ctx_main(void *arg)
{
    struct agile__ctxslot *slot = arg;
    agile__worker *w = slot->w;
    nng_ctx ctx = slot->ctx;
    nng_aio *aio = slot->aio;
    while (!atomic_load(&w->stop)) {
        nng_msg *msg, *out;
        uint8_t *rep;
        size_t replen;
        uint64_t uid = UINT32_MAX;
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) {
            if (nng_aio_result(aio) == NNG_ECLOSED)
                break;
            continue;
        }
        msg = nng_aio_get_msg(aio);
        nng_pipe p = nng_msg_get_pipe(msg);
        /* The kernel's view of the nng peer; HELLO checks it against SO_PEERCRED. */
        if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid) != 0)
            uid = UINT32_MAX;
        int rv = agile__worker_handle(w, (uint32_t)nng_pipe_id(p), (uint32_t)uid,
                                      nng_msg_body(msg), nng_msg_len(msg), &rep, &replen);
        uint8_t small[128];
        size_t slen = 0;
        /* Out of memory for the reply: a short error reply from the stack, so that this
         * context still answers (an unanswered request holds its sender until its timeout). */
        if (rv != AGILE_OK &&
            agile__worker_error_reply(nng_msg_body(msg), nng_msg_len(msg), rv, small,
                                      sizeof small, &slen) != AGILE_OK)
            slen = 0;
        nng_msg_clear(msg);
        out = msg;
        if (rv == AGILE_OK ? nng_msg_append(out, rep, replen) != 0
                           : (slen == 0 || nng_msg_append(out, small, slen) != 0)) {
            free(rep);
            nng_msg_free(out);
            nng_pipe_close(p); /* cannot answer: the sender hears the close at once */
            continue;
        }
        free(rep);
        if (atomic_load(&w->stop)) { /* shutting down: the socket closes after this thread */
            nng_msg_free(out);
            break;
        }
        nng_aio_set_msg(aio, out);
        /* A client that never reads its replies must not hold this context forever. */
        nng_aio_set_timeout(aio, 2000);
        nng_ctx_send(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) {
            nng_msg_free(nng_aio_get_msg(aio));
            nng_pipe_close(p);
        }
        nng_aio_set_timeout(aio, NNG_DURATION_DEFAULT);
    }
    atomic_fetch_add(&w->ctx_done, 1);
    return NULL;
}

/* Tell a refused client why (instead of a bare hang-up): a REFUSED record. The socket is
 * new and non-blocking, so this never waits. */
static void refuse(int fd, int err, uint32_t what, uint32_t limit)
{
    uint8_t rec[AGILE_FDREC_SIZE];
    agile__wbuf wb = {rec, sizeof rec, 0, 0};
    agile__put_u32(&wb, AGILE_FDREC_MAGIC);
    agile__put_u16(&wb, 1);
    agile__put_u16(&wb, AGILE_FDREC_REFUSED);
    agile__put_u64(&wb, 0);
    agile__put_u64(&wb, what);
    agile__put_u64(&wb, (uint64_t)err);
    agile__put_u64(&wb, limit);
    agile__put_u64(&wb, 0);
    if (send(fd, rec, sizeof rec, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* the client went away first: nobody to tell */
    }
}

/* 0: nothing (more) to accept. */
static int accept_one(agile__worker *w)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    agile__session *s;
    uint64_t seq;
    uint32_t what = 0, limit = 0;
    int rv, fd = accept4(w->fd_listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return 0;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        close(fd);
        return 1;
    }
    rv = agile__session_new_limited(w, fd, (uint32_t)cred.uid, cred.pid, &s, &what, &limit);
    if (rv != AGILE_OK) {
        if (rv != AGILE_ELIMIT)
            limit = AGILE_MAX_SESSIONS;
        /* A client can provoke these at will: the log is rate-limited. */
        agile__log_limited(AGILE_LOG_WARN, (long)cred.uid,
                           "refusing connection from pid %d: %s (%s %u)", (int)cred.pid,
                           agile_strerror(rv),
                           what == AGILE_FDREFUSE_SESSIONS  ? "max_sessions"
                           : what == AGILE_FDREFUSE_PENDING ? "max_pending"
                                                            : "worker-wide sessions",
                           limit);
        refuse(fd, rv, what, limit);
        close(fd);
        return 1;
    }
    /* The one-time token ties the nng connection (HELLO) to these kernel credentials. */
    if (agile__session_send_fd(s, AGILE_FDREC_TOKEN, s->id, s->token[0], s->token[1], -1, &seq))
        agile__session_kill(s, "could not send its token");
    return 1;
}

/* fd-socket thread: accepts, detects hang-ups (a client killed with SIGKILL closes both of
 * its sockets; the first one seen starts the teardown) and expires unused tokens. */
static void *fd_main(void *arg)
{
    agile__worker *w = arg;
    struct pollfd *pf = NULL;
    agile__session **who = NULL;
    size_t cap = 0;
    while (!atomic_load(&w->stop)) {
        size_t n = 2;
        uint64_t now = agile__now_ns();
        pthread_mutex_lock(&w->mu);
        for (agile__session *s = w->sessions; s; s = s->next)
            n++;
        if (n > cap) {
            size_t ncap = n * 2;
            struct pollfd *npf = realloc(pf, ncap * sizeof *pf);
            agile__session **nwho = realloc(who, ncap * sizeof(agile__session *));
            if (npf)
                pf = npf;
            if (nwho)
                who = nwho;
            if (!npf || !nwho) {
                pthread_mutex_unlock(&w->mu);
                usleep(10000);
                continue;
            }
            cap = ncap;
        }
        pf[0] = (struct pollfd){w->fd_listen, POLLIN, 0};
        pf[1] = (struct pollfd){w->wake[0], POLLIN, 0};
        n = 2;
        for (agile__session *s = w->sessions; s; s = s->next) {
            if (s->state == SESS_DEAD || s->fd < 0)
                continue;
            if (s->state == SESS_PENDING && now > s->token_expiry_ns) {
                s->state = SESS_DEAD;
                pthread_cond_signal(&w->reap_cv);
                continue;
            }
            s->refs++;
            who[n] = s;
            pf[n++] = (struct pollfd){s->fd, POLLRDHUP | POLLIN, 0};
        }
        pthread_mutex_unlock(&w->mu);
        int r = poll(pf, n, 200);
        if (r > 0) {
            if (pf[0].revents & POLLIN)
                /* the whole backlog: a flood of one uid's connections ahead of another's
                 * costs that one a poll round each otherwise */
                for (int k = 0; k < 256 && accept_one(w); k++)
                    ;
            if (pf[1].revents & POLLIN) {
                char b[64];
                while (read(w->wake[0], b, sizeof b) > 0)
                    ;
            }
        }
        for (size_t i = 2; i < n; i++) {
            /* Clients never write to the fd socket: data or hang-up both end the session. */
            if (r > 0 && pf[i].revents)
                agile__session_kill(who[i], (pf[i].revents & (POLLRDHUP | POLLHUP | POLLERR))
                                                ? "process exited or closed its sockets"
                                                : "unexpected data on the fd socket");
            agile__session_rele(who[i]);
        }
    }
    free(pf);
    free(who);
    return NULL;
}

static void *reap_main(void *arg)
{
    agile__worker *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop)) {
        int dead = 0;
        for (agile__session *s = w->sessions; s; s = s->next)
            dead |= s->state == SESS_DEAD;
        if (!dead) {
            pthread_cond_wait(&w->reap_cv, &w->mu);
            continue;
        }
        pthread_mutex_unlock(&w->mu);
        agile__sessions_reap(w);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static int open_backend(agile__worker *w, int kind, char *err, size_t errcap)
{
    int rv;
    if (kind == 0 || kind == AGILE_BACKEND_KIND_CUDA) {
        rv = agile__backend_open(AGILE_BACKEND_KIND_CUDA, &w->be, w->backend_why,
                                 sizeof w->backend_why);
        if (rv == AGILE_OK)
            return AGILE_OK;
        if (kind == AGILE_BACKEND_KIND_CUDA) {
            snprintf(err, errcap, "cuda backend unavailable: %s", w->backend_why);
            return rv;
        }
        agile__info("no usable GPU (%s): running on the host backend", w->backend_why);
    }
    char why[256] = "";
    rv = agile__backend_open(AGILE_BACKEND_KIND_HOST, &w->be, why, sizeof why);
    if (rv != AGILE_OK)
        snprintf(err, errcap, "host backend unavailable: %s", why);
    return rv;
}

void agile__worker_zero(agile__worker *w)
{
    memset(w, 0, sizeof *w);
    agile__guard_jobs_cancel(false);
    w->lock_fd = w->fd_listen = w->wake[0] = w->wake[1] = -1;
    w->started_ns = agile__now_ns();
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->reap_cv, NULL);
    agile__config_defaults(&w->cfg);
}

int agile__worker_init_core(agile__worker *w, int backend, const char *config, char *err,
                            size_t errcap)
{
    int rv = AGILE_OK;
    if (config && (rv = agile__config_load(&w->cfg, config, err, errcap)) != AGILE_OK)
        return rv;
    AGILE_TRY(open_backend(w, backend, err, errcap));
    w->ndev = agile__backend_device_count(w->be);
    if (w->ndev > AGILE_MAX_DEV)
        w->ndev = AGILE_MAX_DEV;
    for (int d = 0; d < w->ndev; d++)
        AGILE_TRY(agile__backend_device_info(w->be, d, &w->dev[d]));
    AGILE_TRY(agile__htab_init(&w->objs, 1u << 20));
    AGILE_TRY(agile__worker_modules_init(w));
out:
    return rv;
}

int agile__worker_start(agile__worker *w, const agile__worker_opts *o, char *err, size_t errcap)
{
    int rv = AGILE_OK;
    agile__worker_zero(w);
    if (o->runtime_dir)
        snprintf(w->dir, sizeof w->dir, "%s", o->runtime_dir);
    else if ((rv = agile__runtime_dir(w->dir, sizeof w->dir)) != AGILE_OK)
        return rv;
    snprintf(w->fd_path, sizeof w->fd_path, "%s/agile.fd.sock", w->dir);
    snprintf(w->lock_path, sizeof w->lock_path, "%s/agile.pid", w->dir);
    w->shared = o->shared;
    /* Absolute: a reload (SIGHUP) reads it again whatever the cwd is then. */
    if (o->config && !realpath(o->config, w->config_path)) {
        snprintf(err, errcap, "%s: %s", o->config, strerror(errno));
        return agile_err_sys(errno);
    }
    AGILE_TRY(make_dir(w->dir, o->shared, err, errcap));
    /* The lock first: a second worker must not even open the GPU. */
    AGILE_TRY(take_lock(w, err, errcap));
    AGILE_TRY(agile__worker_init_core(w, o->backend, o->config ? w->config_path : NULL, err,
                                      errcap));
    if (w->cfg.metrics_listen[0])
        AGILE_TRY(agile__metrics_listen(w, w->cfg.metrics_listen, err, errcap));
    if (pipe2(w->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    AGILE_TRY(listen_fd_socket(w, err, errcap));
    if (o->shared)
        AGILE_TRY(share_socket(w->fd_path, err, errcap));
    if (nng_rep0_open(&w->sock) != 0) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    w->sock_open = 1;
    nng_socket_set_size(w->sock, NNG_OPT_RECVMAXSZ, AGILE_WIRE_HDR_SIZE + AGILE_WIRE_MAX_BODY);
    nng_pipe_notify(w->sock, NNG_PIPE_EV_ADD_PRE, pipe_cb, w);
    nng_pipe_notify(w->sock, NNG_PIPE_EV_REM_POST, pipe_cb, w);
    if ((rv = nng_listen(w->sock, w->url, NULL, 0)) != 0) {
        snprintf(err, errcap, "cannot listen on %s: %s", w->url, nng_strerror(rv));
        rv = AGILE_EBUSY;
        goto out;
    }
    if (o->shared)
        AGILE_TRY(share_socket(w->url + 6, err, errcap));
    else
        chmod(w->url + 6, 0700);
    for (w->nthreads = 0; w->nthreads < AGILE_NCTX; w->nthreads++) {
        struct agile__ctxslot *slot = &w->ctx_slots[w->nthreads];
        slot->w = w;
        if (nng_ctx_open(&slot->ctx, w->sock) != 0) break;
        if (nng_aio_alloc(&slot->aio, NULL, NULL) != 0) {
            nng_ctx_close(slot->ctx);
            break;
        }
        if (pthread_create(&w->ctx_threads[w->nthreads], NULL, ctx_main, slot) != 0) {
            nng_aio_free(slot->aio);
            nng_ctx_close(slot->ctx);
            break;
        }
    }
    if (pthread_create(&w->fd_thread, NULL, fd_main, w) != 0 ||
        pthread_create(&w->reap_thread, NULL, reap_main, w) != 0) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    agile__info("worker ready: backend %s, %d device(s), listening on %s%s",
                agile__backend_name(w->be), w->ndev, w->url,
                o->shared ? " (shared: every local user may connect)" : "");
    return AGILE_OK;
out:
    if (!err[0])
        snprintf(err, errcap, "%s", agile_strerror(rv));
    return rv;
}

int agile__worker_reload(agile__worker *w, char *err, size_t errcap)
{
    agile__config *nc = malloc(sizeof *nc);
    int rv;
    if (!nc)
        return AGILE_ENOMEM;
    rv = agile__config_load(nc, w->config_path, err, errcap);
    /* cfg is written on this (the main) thread only: reading it here needs no lock */
    if (rv == AGILE_OK && strcmp(nc->metrics_listen, w->cfg.metrics_listen) != 0)
        rv = agile__metrics_listen(w, nc->metrics_listen, err, errcap);
    if (rv != AGILE_OK) {
        atomic_fetch_add(&w->reload_failures, 1);
        free(nc);
        return rv;
    }
    pthread_mutex_lock(&w->mu);
    w->cfg = *nc;
    for (agile__tenant *t = w->tenants; t; t = t->next) {
        t->pol = *agile__config_policy(&w->cfg, t->uid);
        pthread_mutex_lock(&w->objs.mu); /* the account is the table's */
        t->objs.limit = t->pol.max_objects;
        pthread_mutex_unlock(&w->objs.mu);
    }
    pthread_mutex_unlock(&w->mu);
    atomic_fetch_add(&w->reloads, 1);
    free(nc);
    return AGILE_OK;
}

void agile__worker_request_stop(agile__worker *w)
{
    atomic_store(&w->stop, 1);
    if (w->wake[1] >= 0 && write(w->wake[1], "x", 1) < 0) {
        /* the poll timeout catches it */
    }
}

void agile__worker_run_until_stopped(agile__worker *w)
{
    while (!atomic_load(&w->stop))
        pause();
}

void agile__worker_fini(agile__worker *w)
{
    atomic_store(&w->stop, 1);
    agile__metrics_stop(w); /* its handler reads the tenants */
    agile__guard_jobs_cancel(true); /* a module load in progress ends now, failed */
    /* The control threads first: each one's wait is cancelled (again, until it has seen
     * `stop`: it may be between two waits), a request in hand is finished; then the socket. */
    while (atomic_load(&w->ctx_done) < w->nthreads) {
        for (int i = 0; i < w->nthreads; i++)
            nng_aio_cancel(w->ctx_slots[i].aio);
        usleep(2000);
    }
    for (int i = 0; i < w->nthreads; i++) {
        pthread_join(w->ctx_threads[i], NULL);
        nng_aio_free(w->ctx_slots[i].aio);
        nng_ctx_close(w->ctx_slots[i].ctx);
    }
    w->nthreads = 0;
    if (w->sock_open)
        nng_close(w->sock);
    if (w->fd_thread)
        pthread_join(w->fd_thread, NULL);
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->reap_cv);
    for (agile__session *s = w->sessions; s; s = s->next)
        s->state = SESS_DEAD;
    pthread_mutex_unlock(&w->mu);
    if (w->reap_thread)
        pthread_join(w->reap_thread, NULL);
    agile__sessions_reap(w);
    agile__dataplane_fini(w); /* every ring went with its session */
#ifdef AGILE_DEBUG
    if (w->objs.live)
        agile__warn("leak: %u objects still live at shutdown", w->objs.live);
#endif
    if (w->objs.slots)
        agile__htab_fini(&w->objs);
    agile__worker_modules_fini(w); /* after every plan object is gone, before the tenants */
    while (w->tenants) {
        agile__tenant *t = w->tenants;
        w->tenants = t->next;
        agile__twin_tenant_fini(t);
        free(t);
    }
    if (w->be)
        agile__backend_close(w->be);
    if (w->fd_listen >= 0) {
        close(w->fd_listen);
        unlink(w->fd_path);
    }
    if (w->url[0])
        unlink(w->url + 6);
    if (w->lock_fd >= 0) {
        unlink(w->lock_path);
        close(w->lock_fd);
    }
    for (int i = 0; i < 2; i++)
        if (w->wake[i] >= 0)
            close(w->wake[i]);
    free(w->admitted);
    w->admitted = NULL;
    w->nadmitted = w->capadmitted = 0;
    pthread_cond_destroy(&w->reap_cv);
    pthread_mutex_destroy(&w->mu);
}
