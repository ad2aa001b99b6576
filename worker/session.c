/* Sessions: one per client connection (fd socket + nng pipe), owned by a tenant (uid). */
#include "worker.h"

#include "fdpass.h"
#include "modules.h"
#include "twin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

agile__tenant *agile__tenant_get_locked(agile__worker *w, uint32_t uid)
{
    agile__tenant *t;
    for (t = w->tenants; t; t = t->next)
        if (t->uid == uid)
            return t;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->uid = uid;
    t->pol = *agile__config_policy(&w->cfg, uid);
    t->objs.limit = t->pol.max_objects;
    t->next = w->tenants;
    w->tenants = t;
    return t;
}

static void session_obj_fini(void *obj)
{
    (void)obj; /* the SESSION handle only names the session; the list owns it */
}

int agile__session_new(agile__worker *w, int fd, uint32_t uid, pid_t pid, agile__session **out)
{
    uint32_t what, limit;
    return agile__session_new_limited(w, fd, uid, pid, out, &what, &limit);
}

int agile__session_new_limited(agile__worker *w, int fd, uint32_t uid, pid_t pid,
                               agile__session **out, uint32_t *what, uint32_t *limit)
{
    agile__session *s;
    agile__tenant *t;
    unsigned n = 0;
    int rv = AGILE_OK;

    *what = *limit = 0;
    s = calloc(1, sizeof *s);
    if (!s)
        return AGILE_ENOMEM;
    AGILE_TRY(agile__random(s->token, sizeof s->token));
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->fd_mu, NULL);
    s->w = w;
    s->fd = fd;
    s->uid = uid;
    s->pid = pid;
    s->state = SESS_PENDING;
    s->refs = 1; /* the list's */
    s->created_ns = agile__now_ns();
    s->token_expiry_ns = s->created_ns + AGILE_TOKEN_TTL_NS;

    pthread_mutex_lock(&w->mu);
    for (agile__session *p = w->sessions; p; p = p->next)
        n++;
    t = agile__tenant_get_locked(w, uid);
    if (!t)
        rv = AGILE_ENOMEM;
    else if (n >= AGILE_MAX_SESSIONS)
        rv = AGILE_EBUSY;
    /* Per uid, so that one uid cannot take every session of the worker, nor hold
     * connections that never say HELLO (each waits out its token's lifetime). */
    else if (t->sessions >= t->pol.max_sessions) {
        t->session_refusals++;
        *what = 1;
        *limit = t->pol.max_sessions;
        rv = AGILE_ELIMIT;
    } else if (t->pending >= t->pol.max_pending) {
        t->pending_refusals++;
        *what = 2;
        *limit = t->pol.max_pending;
        rv = AGILE_ELIMIT;
    }
    if (rv != AGILE_OK) {
        pthread_mutex_unlock(&w->mu);
        goto out;
    }
    s->tenant = t;
    t->sessions++;
    t->pending++;
    s->pending = 1;
    s->id = ++w->next_session_id;
    s->next = w->sessions;
    w->sessions = s;
    pthread_mutex_unlock(&w->mu);
    rv = agile__htab_set_account(&w->objs, s->id, &t->objs);
    if (rv == AGILE_OK)
        rv = agile__htab_add(&w->objs, AGILE_OBJ_SESSION, s->id, s, session_obj_fini, &s->handle);
    if (rv != AGILE_OK) {
        agile__session_kill(s, "object table full");
        return rv;
    }
    *out = s;
    return AGILE_OK;
out:
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->fd_mu);
    free(s);
    return rv;
}

agile__session *agile__session_by_pipe(agile__worker *w, uint32_t pipe_id)
{
    agile__session *s;
    pthread_mutex_lock(&w->mu);
    for (s = w->sessions; s; s = s->next)
        if (s->pipe_id == pipe_id && s->state == SESS_ACTIVE)
            break;
    if (s)
        s->refs++;
    pthread_mutex_unlock(&w->mu);
    return s;
}

static int token_eq(const uint64_t a[2], uint64_t lo, uint64_t hi)
{
    /* constant time: the token is a capability */
    return ((a[0] ^ lo) | (a[1] ^ hi)) == 0;
}

agile__session *agile__session_bind(agile__worker *w, uint64_t tok_lo, uint64_t tok_hi,
                                    uint32_t pipe_id, uint32_t pipe_uid)
{
    agile__session *s, *found = NULL;
    uint64_t now = agile__now_ns();
    pthread_mutex_lock(&w->mu);
    for (s = w->sessions; s; s = s->next) {
        int eq = token_eq(s->token, tok_lo, tok_hi);
        if (eq && !found)
            found = s;
    }
    s = found;
    /* One use, not expired, and the nng peer is the same user as the fd-socket peer. */
    if (s && (s->state != SESS_PENDING || now > s->token_expiry_ns || s->uid != pipe_uid))
        s = NULL;
    if (s) {
        s->state = SESS_ACTIVE;
        s->pipe_id = pipe_id;
        s->token[0] = s->token[1] = 0;
        s->refs++;
        s->tenant->pending--;
        s->pending = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return s;
}

static void session_free(agile__session *s)
{
    agile__twin_session_end(s);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->fd_mu);
    free(s);
}

void agile__session_rele(agile__session *s)
{
    agile__worker *w = s->w;
    int last;
    pthread_mutex_lock(&w->mu);
    last = --s->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last)
        session_free(s);
}

void agile__session_kill(agile__session *s, const char *why)
{
    agile__worker *w = s->w;
    pthread_mutex_lock(&w->mu);
    if (s->state != SESS_DEAD) {
        s->state = SESS_DEAD;
        agile__log(AGILE_LOG_DEBUG, (long)s->uid, "session %u (pid %d) closing: %s", s->id,
                   (int)s->pid, why);
    }
    pthread_cond_signal(&w->reap_cv);
    pthread_mutex_unlock(&w->mu);
}

void agile__session_kill_pipe(agile__worker *w, uint32_t pipe_id)
{
    agile__session *s = agile__session_by_pipe(w, pipe_id);
    if (s) {
        agile__session_kill(s, "control connection closed");
        agile__session_rele(s);
    }
}

/* A dead session's teardown, done by the reaper in pieces. */
typedef struct dying {
    agile__session *s;
    uint64_t t0;
    uint32_t n;
    struct dying *next;
} dying;

/* Objects released per turn of one dying session: a turn is a millisecond or so, and every
 * other dying session gets its turn before the next one, so a tenant's million objects
 * cannot hold back another tenant's cleanup (a killed client's lease). */
#define REAP_CHUNK 4096u

static void reap_finish(agile__worker *w, dying *d)
{
    agile__session *s = d->s;
    /* after the objects: the module call lock waits for calls still in flight */
    d->n += agile__htab_remove_owner(&w->objs, s->id);
    agile__worker_modules_session_gone(w, s);
    /* The nng pipe is left to its peer: once the session is off the list, requests on
     * it find no session and get "before HELLO". (Closing pipes from here made nng 1.5
     * drop other clients' pending requests under load.) */
    pthread_mutex_lock(&s->fd_mu);
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    pthread_mutex_unlock(&s->fd_mu);
    agile__log(AGILE_LOG_INFO, (long)s->uid, "session %u (pid %d) released: %u objects in %.2f ms",
               s->id, (int)s->pid, d->n, (double)(agile__now_ns() - d->t0) / 1e6);
    agile__session_rele(s);
    free(d);
}

void agile__sessions_reap(agile__worker *w)
{
    dying *list = NULL, **tail = &list;
    for (;;) {
        agile__session *s, **pp;
        /* Take every newly dead session off the list: no new lookups find them. */
        pthread_mutex_lock(&w->mu);
        for (pp = &w->sessions; (s = *pp);) {
            dying *d;
            if (s->state != SESS_DEAD || !(d = calloc(1, sizeof *d))) {
                pp = &s->next;
                continue;
            }
            *pp = s->next;
            s->tenant->sessions--;
            if (s->pending) {
                s->tenant->pending--;
                s->pending = 0;
            }
            d->s = s;
            d->t0 = agile__now_ns();
            *tail = d;
            tail = &d->next;
        }
        pthread_mutex_unlock(&w->mu);
        if (!list)
            return;
        /* One turn each, round robin. */
        for (dying **dp = &list, *d; (d = *dp);) {
            uint32_t left = 0;
            d->n += agile__htab_remove_owner_n(&w->objs, d->s->id, REAP_CHUNK, &left);
            if (left) {
                dp = &d->next;
                continue;
            }
            *dp = d->next;
            if (tail == &d->next)
                tail = dp;
            reap_finish(w, d);
        }
    }
}

int agile__session_send_fd(agile__session *s, uint16_t kind, uint64_t handle, uint64_t a,
                           uint64_t b, int fd, uint64_t *seq)
{
    uint8_t rec[AGILE_FDREC_SIZE];
    agile__wbuf wb = {rec, sizeof rec, 0, 0};
    int rv;

    pthread_mutex_lock(&s->fd_mu);
    *seq = ++s->fd_seq;
    agile__put_u32(&wb, AGILE_FDREC_MAGIC);
    agile__put_u16(&wb, 1);
    agile__put_u16(&wb, kind);
    agile__put_u64(&wb, *seq);
    agile__put_u64(&wb, handle);
    agile__put_u64(&wb, a);
    agile__put_u64(&wb, b);
    agile__put_u64(&wb, 0);
    /* The socket is non-blocking: a client that does not read its fd socket gets an error
     * here (EAGAIN), never a stuck worker thread. */
    rv = s->fd < 0 ? AGILE_ECLOSED : agile__fd_send(s->fd, fd, rec, sizeof rec);
    if (rv == agile_err_sys(EAGAIN))
        rv = AGILE_EBUSY;
    pthread_mutex_unlock(&s->fd_mu);
    return rv;
}
