/* Control-plane message handlers. Every field is validated before use; malformed input
 * gets an error reply (or the connection is closed) and is counted in `agilectl status`. */
#include "worker.h"
#include "dataplane.h"
#include "modules.h"
#include "twin.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* One request in flight: what every handler of the message table (handler_fn, below)
 * gets. */
typedef struct {
    agile__worker *w;
    agile__session *s; /* NULL before HELLO */
    uint32_t pipe_id, pipe_uid;
    const agile__msg *req;
    agile__msg rep;
    char errbuf[512];
    char *text;      /* freed after the reply is encoded (STATUS) */
    int close_after; /* end the session once the reply is encoded (BYE) */
} hctx;

static int fail(hctx *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(hctx *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errbuf, sizeof c->errbuf, fmt, ap);
    va_end(ap);
    return err;
}

static void count_proto_error(hctx *c)
{
    atomic_fetch_add(&c->w->proto_errors, 1);
    if (c->s) {
        pthread_mutex_lock(&c->w->mu);
        c->s->tenant->proto_errors++;
        pthread_mutex_unlock(&c->w->mu);
    }
}

/* ---- leases ------------------------------------------------------------------------------- */

typedef struct lease_obj {
    agile__session *s;
    int dev;
    agile__lease *l;
    uint64_t off, size;
} lease_obj;

static void lease_fini(void *obj)
{
    lease_obj *lo = obj;
    agile__session *s = lo->s;
    agile__worker *w = s->w;
    agile__twin_unlease(s, lo->dev, lo->l, lo->off, lo->size);
    pthread_mutex_lock(&w->mu);
    s->tenant->leased[lo->dev] -= lo->size;
    pthread_mutex_unlock(&w->mu);
    agile__session_rele(s);
    free(lo);
}

static uint64_t window_size_for(const agile__worker *w, int dev, uint64_t quota)
{
    uint64_t g = w->dev[dev].granularity ? w->dev[dev].granularity : (2ull << 20);
    uint64_t W = g;
    while (W < quota && W < (1ull << 46))
        W <<= 1;
    return W;
}

static int check_dev(hctx *c, uint32_t dev)
{
    if ((int)dev >= c->w->ndev || dev >= AGILE_MAX_DEV)
        return fail(c, AGILE_EINVAL, "device %u does not exist (worker has %d)", dev, c->w->ndev);
    return AGILE_OK;
}

static int h_window(hctx *c)
{
    const struct agile__rec_window_req *q = &c->req->u.window_req;
    struct agile__rec_window_rep *r = &c->rep.u.window_rep;
    int rv;
    if ((rv = check_dev(c, q->device)))
        return rv;
    pthread_mutex_lock(&c->w->mu);
    r->quota = c->s->tenant->pol.quota;
    r->leased = c->s->tenant->leased[q->device];
    pthread_mutex_unlock(&c->w->mu);
    r->size = window_size_for(c->w, (int)q->device, r->quota);
    r->bits = (uint32_t)__builtin_ctzll(r->size);
    r->granularity = c->w->dev[q->device].granularity;
    r->flags = 0;
    return AGILE_OK;
}

static int h_lease_grow(hctx *c)
{
    const struct agile__rec_lease_grow_req *q = &c->req->u.lease_grow_req;
    struct agile__rec_lease_grow_rep *r = &c->rep.u.lease_grow_rep;
    agile__worker *w = c->w;
    agile__session *s = c->s;
    agile__tenant *t = s->tenant;
    lease_obj *lo = NULL;
    uint64_t g, size, min, quota, off = 0, h = 0, seq = 0;
    uint64_t t0 = agile__now_ns(), tl = 0; /* AGILE_LOG=debug: where a grow's time goes */
    int fd = -1, rv = AGILE_OK, reserved = 0;

    if ((rv = check_dev(c, q->device)))
        return rv;
    if (q->bytes == 0 || q->bytes > (1ull << 46))
        return fail(c, AGILE_EINVAL, "lease size %llu out of range", (unsigned long long)q->bytes);
    g = w->dev[q->device].granularity ? w->dev[q->device].granularity : (2ull << 20);
    min = AGILE_ALIGN_UP(q->bytes, g);
    size = AGILE_MAX(min, AGILE_ALIGN_UP(t->pol.lease_step, g));

    /* Reserve the bytes against the quota first: nothing is ever over-committed. The
     * window's sink counts too (twin.h): the one it has, or the one its first lease makes. */
    uint64_t new_sink = agile__window_sink_bytes_for(
        w->be, (int)q->device, window_size_for(w, (int)q->device, t->pol.quota));
    pthread_mutex_lock(&w->mu);
    quota = t->pol.quota;
    uint64_t sink = t->sink[q->device] ? t->sink[q->device] : new_sink;
    if (t->leased[q->device] + sink + size > quota)
        size = min; /* the last step may be smaller than lease_step */
    if (t->leased[q->device] + sink + size > quota) {
        t->quota_refusals++;
        uint64_t used = t->leased[q->device];
        pthread_mutex_unlock(&w->mu);
        return fail(c, AGILE_EQUOTA,
                    "tenant %u: lease of %llu bytes on GPU %u exceeds quota (%llu of %llu bytes "
                    "leased, %llu in the window's sink)",
                    t->uid, (unsigned long long)min, q->device, (unsigned long long)used,
                    (unsigned long long)quota, (unsigned long long)sink);
    }
    t->leased[q->device] += size;
    reserved = 1;
    pthread_mutex_unlock(&w->mu);

    lo = calloc(1, sizeof *lo);
    if (!lo) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    tl = agile__now_ns();
    rv = agile__twin_lease(w, s, (int)q->device, window_size_for(w, (int)q->device, quota), size,
                           quota, &lo->l, &off, &fd);
    tl = agile__now_ns() - tl;
    if (rv == AGILE_EQUOTA) {
        fail(c, rv, "tenant %u: lease of %llu bytes on GPU %u and the window's sink exceed quota "
             "(%llu bytes)", t->uid, (unsigned long long)size, q->device,
             (unsigned long long)quota);
        goto out;
    }
    if (rv != AGILE_OK) {
        fail(c, rv, "lease of %llu bytes failed: %s", (unsigned long long)size,
             agile_strerror(rv));
        goto out;
    }
    lo->s = s;
    lo->dev = (int)q->device;
    lo->off = off;
    lo->size = size;
    pthread_mutex_lock(&w->mu);
    s->refs++; /* the lease keeps its session (and window) alive */
    pthread_mutex_unlock(&w->mu);
    reserved = 0; /* from here the lease object owns the accounting */
    rv = agile__htab_add(&w->objs, AGILE_OBJ_LEASE, s->id, lo, lease_fini, &h);
    if (rv != AGILE_OK) {
        lease_fini(lo);
        lo = NULL;
        goto out;
    }
    lo = NULL;
    rv = agile__session_send_fd(s, AGILE_FDREC_LEASE, h, off, size, fd, &seq);
    if (rv != AGILE_OK) {
        agile__htab_remove(&w->objs, h, AGILE_OBJ_LEASE, s->id);
        fail(c, rv, "could not pass the lease fd: %s", agile_strerror(rv));
        goto out;
    }
    r->handle = h;
    r->offset = off;
    r->size = size;
    r->fd_seq = seq;
    r->nfds = 1;
    agile__log(AGILE_LOG_DEBUG, (long)t->uid,
               "lease %llx: %llu MiB at offset %#llx on GPU %u: %.1f us (backend %.1f us)",
               (unsigned long long)h, (unsigned long long)(size >> 20), (unsigned long long)off,
               q->device, (double)(agile__now_ns() - t0) / 1e3, (double)tl / 1e3);
out:
    if (fd >= 0)
        close(fd);
    if (reserved) {
        pthread_mutex_lock(&w->mu);
        t->leased[q->device] -= size;
        pthread_mutex_unlock(&w->mu);
    }
    free(lo);
    return rv;
}

static int h_lease_release(hctx *c)
{
    int rv = agile__htab_remove(&c->w->objs, c->req->u.handle.handle, AGILE_OBJ_LEASE, c->s->id);
    if (rv)
        return fail(c, rv, "not a lease of this session");
    return AGILE_OK;
}

/* ---- generic objects ---------------------------------------------------------------------- */

static void plain_fini(void *obj)
{
    free(obj);
}

static int h_obj_create(hctx *c)
{
    const struct agile__rec_obj_create_req *q = &c->req->u.obj_create_req;
    void *o;
    int rv;
    if (q->type != AGILE_OBJ_STREAM && q->type != AGILE_OBJ_EVENT)
        return fail(c, AGILE_EINVAL, "OBJ_CREATE makes streams and events only");
    if ((rv = check_dev(c, q->device)))
        return rv;
    if (!(o = calloc(1, 16)))
        return AGILE_ENOMEM;
    rv = agile__htab_add(&c->w->objs, q->type, c->s->id, o, plain_fini, &c->rep.u.handle.handle);
    if (rv)
        free(o);
    return rv;
}

static int h_obj_destroy(hctx *c)
{
    uint64_t h = c->req->u.handle.handle;
    unsigned type = agile__handle_type(h);
    if (type != AGILE_OBJ_STREAM && type != AGILE_OBJ_EVENT)
        return fail(c, AGILE_EHANDLE, "not a stream or event handle");
    return agile__htab_remove(&c->w->objs, h, type, c->s->id);
}

/* ---- session ------------------------------------------------------------------------------ */

static int h_hello(hctx *c)
{
    const struct agile__rec_hello_req *q = &c->req->u.hello_req;
    struct agile__rec_hello_rep *r = &c->rep.u.hello_rep;
    agile__session *s;
    if (c->s)
        return fail(c, AGILE_EPROTO, "HELLO twice on one connection");
    if (q->major != AGILE_WIRE_MAJOR)
        return fail(c, AGILE_EVERSION, "client speaks protocol %u.%u, worker speaks %u.%u",
                    q->major, q->minor, AGILE_WIRE_MAJOR, AGILE_WIRE_MINOR);
    s = agile__session_bind(c->w, q->token_lo, q->token_hi, c->pipe_id, c->pipe_uid);
    if (!s)
        return fail(c, AGILE_EPERM, "unknown, used or expired connection token");
    c->s = s;
    r->major = AGILE_WIRE_MAJOR;
    r->minor = AGILE_WIRE_MINOR;
    r->session = s->handle;
    r->tenant = s->uid;
    r->backend = (uint32_t)agile__backend_kind(c->w->be);
    r->ndev = (uint32_t)c->w->ndev;
    pthread_mutex_lock(&c->w->mu);
    r->quota = s->tenant->pol.quota;
    r->priority = s->tenant->pol.priority;
    pthread_mutex_unlock(&c->w->mu);
    agile__log(AGILE_LOG_INFO, (long)s->uid, "session %u (pid %d) connected", s->id, (int)s->pid);
    return AGILE_OK;
}

static int h_ping(hctx *c)
{
    c->rep.u.ping.nonce = c->req->u.ping.nonce;
    return AGILE_OK;
}

static int h_bye(hctx *c)
{
    c->close_after = 1;
    return AGILE_OK;
}

static int h_status(hctx *c)
{
    uint32_t fmt = c->req->u.status_req.format;
    if (fmt > 1)
        return fail(c, AGILE_EINVAL, "status format must be 0 (text) or 1 (json)");
    c->text = agile__worker_status(c->w, (int)fmt, c->s->uid);
    if (!c->text)
        return AGILE_ENOMEM;
    c->rep.u.status_rep.text = agile__blob_of(c->text, strlen(c->text));
    return AGILE_OK;
}

/* ---- served by the data plane and the module registry (dataplane.h, modules.h) ------------- */

static int h_ring_attach(hctx *c)
{
    return agile__dp_ring_attach(c->w, c->s, c->req, &c->rep, c->errbuf, sizeof c->errbuf);
}

static int h_module_load(hctx *c)
{
    return agile__dp_module_load(c->w, c->s, c->req, &c->rep, c->errbuf, sizeof c->errbuf);
}

static int h_module_unload(hctx *c)
{
    return agile__dp_module_unload(c->w, c->s, c->req, &c->rep, c->errbuf, sizeof c->errbuf);
}

static int h_module_function(hctx *c)
{
    return agile__dp_module_function(c->w, c->s, c->req, &c->rep, c->errbuf, sizeof c->errbuf);
}

static int h_mod_ctl(hctx *c)
{
    return agile__worker_mod_ctl(c->w, c->s, c->req, &c->rep, c->errbuf, sizeof c->errbuf);
}

/* ---- the message table -------------------------------------------------------------------- */

typedef int handler_fn(hctx *c);

/* Requests that may take long (they call the backend, the guard or a module) are SLOW: a
 * uid may have max_requests of them in flight, so that one uid's burst cannot hold every
 * request context while other uids wait for a HELLO. Releases are not limited: refusing one
 * would keep what it frees. LOAD (guard work: parse, fence, verify, compile) also counts
 * against max_module_loads and runs at nice LOAD_NICE (see nice_thread). */
enum { H_SLOW = 1, H_LOAD = 2 };

static const struct {
    handler_fn *fn;
    unsigned flags;
} handlers[AGILE_MSG_MAX_] = {
    [AGILE_MSG_HELLO] = {h_hello, 0},
    [AGILE_MSG_PING] = {h_ping, 0},
    [AGILE_MSG_STATUS] = {h_status, 0},
    [AGILE_MSG_BYE] = {h_bye, 0},
    [AGILE_MSG_OBJ_CREATE] = {h_obj_create, 0},
    [AGILE_MSG_OBJ_DESTROY] = {h_obj_destroy, 0},
    [AGILE_MSG_WINDOW] = {h_window, 0},
    [AGILE_MSG_LEASE_GROW] = {h_lease_grow, H_SLOW},
    [AGILE_MSG_LEASE_RELEASE] = {h_lease_release, 0},
    [AGILE_MSG_RING_ATTACH] = {h_ring_attach, H_SLOW},
    [AGILE_MSG_MODULE_LOAD] = {h_module_load, H_SLOW | H_LOAD},
    [AGILE_MSG_MODULE_UNLOAD] = {h_module_unload, 0},
    [AGILE_MSG_MODULE_FUNCTION] = {h_module_function, H_SLOW},
    [AGILE_MSG_MOD_CTL] = {h_mod_ctl, H_SLOW},
};

static unsigned handler_flags(unsigned type)
{
    return type < AGILE_MSG_MAX_ ? handlers[type].flags : 0;
}

static int encode_reply(hctx *c, int status, uint8_t **rep, size_t *replen)
{
    size_t cap;
    if (status != AGILE_OK) {
        const char *m = c->errbuf[0] ? c->errbuf : agile_strerror(status);
        memset(&c->rep.u, 0, sizeof c->rep.u);
        c->rep.u.error.message = agile__blob_of(m, strlen(m));
    }
    c->rep.h.flags = AGILE_MSGF_REPLY;
    c->rep.h.status = status;
    cap = agile__msg_size(&c->rep);
    if (!cap || !(*rep = malloc(cap)))
        return AGILE_ENOMEM;
    return agile__msg_encode(&c->rep, *rep, cap, replen);
}

enum { ADMIT_REQ = 1, ADMIT_LOAD = 2 };

/* Take one of max in-flight slots of counter, or count a refusal and say which limit. */
static int take_slot(hctx *c, atomic_uint *counter, uint32_t max, const char *what,
                     const char *key)
{
    agile__tenant *t = c->s->tenant;
    if (atomic_fetch_add(counter, 1) < max)
        return AGILE_OK;
    atomic_fetch_sub(counter, 1);
    atomic_fetch_add(&t->request_refusals, 1);
    return fail(c, AGILE_ELIMIT, "tenant %u: %u %s in flight already (%s); retry when one is "
                "answered", t->uid, max, what, key);
}

static int admit(hctx *c, const agile__msg *m, int *admitted)
{
    agile__tenant *t = c->s->tenant;
    int rv;
    *admitted = 0;
    if (m->h.type == AGILE_MSG_MODULE_LOAD && m->u.module_load_req.ptx.n > t->pol.max_module_bytes) {
        atomic_fetch_add(&t->module_size_refusals, 1);
        return fail(c, AGILE_ETOOBIG,
                    "tenant %u: module of %u bytes exceeds max_module_bytes (%llu)", t->uid,
                    m->u.module_load_req.ptx.n, (unsigned long long)t->pol.max_module_bytes);
    }
    if (!(handler_flags(m->h.type) & H_SLOW))
        return AGILE_OK;
    if ((rv = take_slot(c, &t->requests_inflight, t->pol.max_requests, "control requests",
                        "max_requests")) != AGILE_OK)
        return rv;
    *admitted = ADMIT_REQ;
    if (!(handler_flags(m->h.type) & H_LOAD))
        return AGILE_OK;
    if ((rv = take_slot(c, &t->loads_inflight, t->pol.max_module_loads, "module loads",
                        "max_module_loads")) != AGILE_OK) {
        atomic_fetch_sub(&t->requests_inflight, 1);
        *admitted = 0;
        return rv;
    }
    *admitted |= ADMIT_LOAD;
    return AGILE_OK;
}

/* Guard work (a module load: parse, fence, verify, compile) is the one request that can
 * keep a CPU busy for seconds: it runs at the lowest priority (nice 19) below the rest of the
 * control plane and the dispatcher, so that a uid's loads cannot slow other uids' connects,
 * leases and rings. Only where the priority can be given back afterwards (root: a --shared
 * worker for several users runs as root); a private worker serves its own uid alone. */
#define LOAD_NICE 19

static int nice_thread(int *old)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (geteuid() != 0)
        return 0;
    errno = 0;
    *old = getpriority(PRIO_PROCESS, (id_t)tid);
    if (errno || *old >= LOAD_NICE)
        return 0;
    return setpriority(PRIO_PROCESS, (id_t)tid, LOAD_NICE) == 0;
}

static void unnice_thread(int old)
{
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), old) != 0)
        agile__warn("cannot restore a request thread's priority: %s", strerror(errno));
}

static void unadmit(hctx *c, int admitted)
{
    if (admitted & ADMIT_LOAD)
        atomic_fetch_sub(&c->s->tenant->loads_inflight, 1);
    if (admitted & ADMIT_REQ)
        atomic_fetch_sub(&c->s->tenant->requests_inflight, 1);
}

/* The type and request id of a reply to a request that did not decode: what its header
 * says when it has one, else a known type to carry the error. */
static void malformed_reply_hdr(const uint8_t *req, size_t reqlen, agile__hdr *h)
{
    memset(h, 0, sizeof *h);
    if (reqlen >= AGILE_WIRE_HDR_SIZE) {
        agile__rbuf rb = {req, reqlen, 8, 0};
        h->type = agile__get_u16(&rb);
        rb.off = 16;
        h->req_id = agile__get_u64(&rb);
    }
    if (h->type == 0 || h->type >= AGILE_MSG_MAX_)
        h->type = AGILE_MSG_PING;
}

int agile__worker_error_reply(const uint8_t *req, size_t reqlen, int status, uint8_t *buf,
                              size_t cap, size_t *len)
{
    agile__msg m;
    const char *msg = agile_strerror(status);
    memset(&m, 0, sizeof m);
    malformed_reply_hdr(req, reqlen, &m.h);
    m.h.flags = AGILE_MSGF_REPLY;
    m.h.status = status;
    m.u.error.message = agile__blob_of(msg, strnlen(msg, 64));
    return agile__msg_encode(&m, buf, cap, len);
}

int agile__worker_handle(agile__worker *w, uint32_t pipe_id, uint32_t pipe_uid,
                         const uint8_t *req, size_t reqlen, uint8_t **rep, size_t *replen)
{
    agile__msg m;
    hctx c;
    int rv, admitted = 0;

    memset(&c, 0, sizeof c);
    c.w = w;
    c.pipe_id = pipe_id;
    c.pipe_uid = pipe_uid;
    c.req = &m;
    *rep = NULL;
    *replen = 0;
    atomic_fetch_add(&w->requests, 1);
    c.s = agile__session_by_pipe(w, pipe_id);

    rv = agile__msg_decode(req, reqlen, &m);
    if (rv == AGILE_OK && (m.h.flags & AGILE_MSGF_REPLY))
        rv = fail(&c, AGILE_EPROTO, "a reply sent as a request");
    if (rv != AGILE_OK) {
        /* Every request is answered, however malformed: a request left unanswered would
         * hold its sender until its timeout, and closing the pipe instead makes the sender's
         * req socket resend it on the next connection. nng matches the reply to the request
         * by its own id, so the reply reaches the sender even without a readable header. */
        count_proto_error(&c);
        malformed_reply_hdr(req, reqlen, &c.rep.h);
        if (!c.errbuf[0])
            fail(&c, rv, "malformed request: %s", agile_strerror(rv));
        rv = encode_reply(&c, rv, rep, replen);
        goto done;
    }
    c.rep.h.type = m.h.type;
    c.rep.h.req_id = m.h.req_id;
    agile__log(AGILE_LOG_DEBUG, c.s ? (long)c.s->uid : AGILE_NO_TENANT, "pipe %u: %s request %llu",
               pipe_id, agile__msg_name(m.h.type), (unsigned long long)m.h.req_id);

    if (!c.s && m.h.type != AGILE_MSG_HELLO) {
        count_proto_error(&c);
        rv = fail(&c, AGILE_EPROTO, "%s before HELLO", agile__msg_name(m.h.type));
    } else if (c.s && (rv = admit(&c, &m, &admitted)) != AGILE_OK) {
        /* refused by a per-uid limit: answered at once, holding no context */
    } else {
        handler_fn *fn = m.h.type < AGILE_MSG_MAX_ ? handlers[m.h.type].fn : NULL;
        if (!fn) {
            rv = fail(&c, AGILE_ENOTSUP, "%s is not served by this worker",
                      agile__msg_name(m.h.type));
        } else if (handler_flags(m.h.type) & H_LOAD) {
            int old = 0, niced = nice_thread(&old);
            rv = fn(&c);
            if (niced)
                unnice_thread(old);
        } else {
            rv = fn(&c);
        }
        if (rv == AGILE_EPROTO)
            count_proto_error(&c);
        if (rv == AGILE_ELIMIT && !c.errbuf[0])
            fail(&c, rv, "tenant %u: object limit reached (max_objects %u)", c.s->uid,
                 c.s->tenant->pol.max_objects);
    }
    unadmit(&c, admitted);
    rv = encode_reply(&c, rv, rep, replen);
    if (c.close_after && c.s)
        agile__session_kill(c.s, "BYE");
done:
    if (c.s)
        agile__session_rele(c.s);
    free(c.text);
    if (rv != AGILE_OK) {
        free(*rep);
        *rep = NULL;
        *replen = 0;
    }
    return rv;
}
