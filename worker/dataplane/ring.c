/* ring.c — ring objects of the data plane: RING_ATTACH makes a command ring (csrc/ring) for a
 * session on one device and hands its fd to the client; the dispatcher's list of rings; the
 * teardown that waits for the dispatcher's pass and for the ring's GPU work. */
#include "dp.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "twin.h"

static pthread_mutex_t dp_init_mu = PTHREAD_MUTEX_INITIALIZER;

static agile__dp *dp_get(agile__worker *w)
{
    agile__dp *dp;
    pthread_mutex_lock(&dp_init_mu);
    if (!(dp = w->dp) && (dp = calloc(1, sizeof *dp))) {
        dp->w = w;
        pthread_mutex_init(&dp->mu, NULL);
        pthread_cond_init(&dp->cv, NULL);
        if (agile__sched_init(&dp->sched, 4096, 0) != AGILE_OK ||
            pthread_create(&dp->thread, NULL, agile__dp_main, dp) != 0) {
            pthread_mutex_destroy(&dp->mu);
            pthread_cond_destroy(&dp->cv);
            free(dp);
            dp = NULL;
        } else {
            w->dp = dp;
        }
    }
    pthread_mutex_unlock(&dp_init_mu);
    return dp;
}

void agile__dataplane_fini(agile__worker *w)
{
    agile__dp *dp = w->dp;
    if (!dp) return;
    atomic_store(&dp->stop, 1);
    pthread_mutex_lock(&dp->mu);
    pthread_cond_broadcast(&dp->cv);
    pthread_mutex_unlock(&dp->mu);
    pthread_join(dp->thread, NULL);
    agile__sched_fini(&dp->sched);
    free(dp->snap);
    free(dp->rws);
    free(dp->st);
    pthread_cond_destroy(&dp->cv);
    pthread_mutex_destroy(&dp->mu);
    free(dp);
    w->dp = NULL;
}

static void dp_add(agile__dp *dp, dp_ring *r)
{
    pthread_mutex_lock(&dp->w->mu);
    uint32_t weight = r->s->tenant->pol.priority;
    pthread_mutex_unlock(&dp->w->mu);
    weight = AGILE_MAX(1u, AGILE_MIN(weight, AGILE_SCHED_MAX_WEIGHT));
    /* Tenants stay known to the scheduler (idle ones cost nothing per round). */
    if (agile__sched_add_tenant(&dp->sched, r->uid, weight) == AGILE_EBUSY)
        agile__sched_set_weight(&dp->sched, r->uid, weight);
    pthread_mutex_lock(&dp->mu);
    r->next = dp->rings;
    dp->rings = r;
    dp->nrings++;
    pthread_cond_broadcast(&dp->cv);
    pthread_mutex_unlock(&dp->mu);
}

/* Off the list, then wait for the dispatcher's current pass over it (short and bounded:
 * it never waits for a client or the GPU). */
static void dp_remove(agile__dp *dp, dp_ring *r)
{
    pthread_mutex_lock(&dp->mu);
    for (dp_ring **pp = &dp->rings; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            dp->nrings--;
            break;
        }
    }
    r->gone = true;
    while (r->busy)
        pthread_cond_wait(&dp->cv, &dp->mu);
    pthread_mutex_unlock(&dp->mu);
}

static bool gpu_idle(dp_ring *r, uint64_t deadline)
{
    agile__backend *be = r->w->be;
    for (;;) {
        bool idle = true;
        for (uint32_t i = 0; i < r->nstreams; i++) {
            /* a driver that cannot query a stream (mockcuda): wait, it cannot hang on a mock */
            int q = agile__stream_query(be, r->streams[i].st);
            if (q == AGILE_ENOTSUP) q = agile__stream_sync(be, r->streams[i].st);
            if (q == AGILE_EBUSY) idle = false;
        }
        if (idle) return true;
        if (agile__now_ns() > deadline) return false;
        usleep(1000);
    }
}

/* A completion leaves the queue: drop the module reference a launch took. */
void agile__dp_pend_retire(dp_pend *p)
{
    if (p->mod) agile__dp_module_rele(p->mod);
    p->mod = NULL;
}

static void ring_fini(void *obj)
{
    dp_ring *r = obj;
    agile__worker *w = r->w;
    bool leak = false;
    if (w->dp) dp_remove(w->dp, r);
    if (agile__dp_caps(w).queued && agile__backend_enter(w->be, r->dev) == AGILE_OK) {
        /* The window must outlive every GPU operation on it. A stream that does not drain
         * (a WAIT for a value the client never wrote, a kernel past its limit) keeps the
         * session, and with it the window, alive: a leak, never a fault or a hang. */
        uint64_t lim = r->limit_ns ? 2 * r->limit_ns : DP_DRAIN_NS;
        if (!gpu_idle(r, agile__now_ns() + AGILE_MAX(lim, DP_DRAIN_NS))) {
            leak = true;
            agile__warn("ring of session %u: GPU work did not drain; keeping its window", r->s->id);
        }
        /* handles of a context that was reset went with it */
        bool live = r->gen == agile__backend_generation(w->be, r->dev);
        for (uint32_t i = 0; r->pend && i < r->pcount; i++) {
            dp_pend *p = &r->pend[(r->phead + i) % r->pcap];
            if (p->ev && live) agile__event_destroy(w->be, p->ev);
            agile__dp_pend_retire(p);
        }
        for (uint32_t i = 0; live && i < r->nev; i++)
            agile__event_destroy(w->be, r->evpool[i]);
        for (uint32_t i = 0; live && i < r->nstreams; i++)
            agile__stream_destroy(w->be, r->streams[i].st);
        agile__backend_leave(w->be);
    }
    if (r->viol && !leak) agile__pmem_free(r->viol);
    free(r->evpool);
    free(r->streams);
    free(r->pend);
    agile__ring_worker_fini(&r->rw);
    if (!leak) agile__session_rele(r->s);
    free(r);
}

int agile__dp_ring_attach(agile__worker *w, agile__session *s, const agile__msg *req,
                          agile__msg *rep, char *err, size_t errcap)
{
    const struct agile__rec_ring_attach_req *q = &req->u.ring_attach_req;
    struct agile__rec_ring_attach_rep *o = &rep->u.ring_attach_rep;
    uint32_t slots = q->slots ? q->slots : AGILE_RING_DEFAULT_SLOTS;
    uint32_t dev = q->flags & AGILE_RING_ATTACH_DEV_MASK, counts[AGILE_OBJ_MAX_] = {0};
    agile__ring_peer peer;
    agile__dp *dp;
    dp_ring *r = NULL;
    uint64_t h = 0, seq = 0;
    int rv = AGILE_OK;

    if (q->flags & ~AGILE_RING_ATTACH_DEV_MASK)
        return agile__dp_efail(err, errcap, AGILE_EINVAL, "unknown RING_ATTACH flags %#x",
                               q->flags);
    if ((int)dev >= w->ndev)
        return agile__dp_efail(err, errcap, AGILE_EINVAL, "device %u does not exist", dev);
    agile__htab_count_owner(&w->objs, s->id, counts);
    if (counts[AGILE_OBJ_RING] >= DP_MAX_RINGS_PER_SESSION)
        return agile__dp_efail(err, errcap, AGILE_EBUSY, "session has %u rings already",
                               counts[AGILE_OBJ_RING]);
    if (!(dp = dp_get(w))) return AGILE_ENOMEM;
    if (!(r = calloc(1, sizeof *r))) return AGILE_ENOMEM;
    r->w = w;
    r->s = s;
    r->uid = s->uid;
    r->dev = (int)dev;
    r->gen = agile__backend_generation(w->be, r->dev);
    rv = agile__ring_worker_init(&r->rw, slots, DP_SLOT_SIZE, NULL);
    if (rv != AGILE_OK) {
        free(r);
        return agile__dp_efail(err, errcap, rv, "ring of %u slots: %s", slots, agile_strerror(rv));
    }
    if (agile__ring_peer_pid(s->pid, &peer) == AGILE_OK) agile__ring_worker_set_peer(&r->rw, &peer);
    r->pcap = r->rw.reg.g.slots;
    pthread_mutex_lock(&w->mu);
    r->limit_ns = (uint64_t)s->tenant->pol.time_limit_ms * 1000000ull;
    s->refs++; /* the ring keeps its session (and window) alive */
    pthread_mutex_unlock(&w->mu);
    if (!(r->pend = calloc(r->pcap, sizeof *r->pend))) {
        ring_fini(r);
        return AGILE_ENOMEM;
    }
    if (agile__dp_caps(w).queued) {
        rv = agile__pmem_alloc(w->be, r->dev, AGILE_GUARD_VIOL_SIZE, &r->viol, &r->viol_addr);
        if (rv == AGILE_OK)
            rv = agile__backend_memset(w->be, r->dev, r->viol_addr, 0, AGILE_GUARD_VIOL_SIZE);
        if (rv != AGILE_OK) {
            ring_fini(r);
            return agile__dp_efail(err, errcap, rv, "violation record: %s", agile_strerror(rv));
        }
    }
    if ((rv = agile__htab_add(&w->objs, AGILE_OBJ_RING, s->id, r, ring_fini, &h)) != AGILE_OK) {
        ring_fini(r);
        return rv;
    }
    rv = agile__session_send_fd(s, AGILE_FDREC_RING, h, r->rw.reg.g.slots, r->rw.reg.g.slot_size,
                                r->rw.reg.fd, &seq);
    if (rv != AGILE_OK) {
        agile__htab_remove(&w->objs, h, AGILE_OBJ_RING, s->id);
        return agile__dp_efail(err, errcap, rv, "could not pass the ring fd: %s",
                               agile_strerror(rv));
    }
    dp_add(dp, r);
    o->handle = h;
    o->fd_seq = seq;
    o->nfds = 1;
    o->flags = dev;
    agile__log(AGILE_LOG_DEBUG, (long)s->uid, "ring %llx: %u slots of %u bytes on device %u",
               (unsigned long long)h, r->rw.reg.g.slots, r->rw.reg.g.slot_size, dev);
    return AGILE_OK;
}

/* The tenant's window the session joined (twin.h), cached once it exists: the session keeps
 * it until it is freed, after its rings. Read without waiting (creating a large window
 * takes up to a second). */
agile__window *agile__dp_ring_window(dp_ring *r)
{
    if (!r->win) r->win = agile__twin_window(r->s, r->dev);
    return r->win;
}

/* The tenant's window on the ring's device, translated: worker address of [client, +n),
 * or AGILE_EBOUNDS when it leaves the window (the window formula of docs/design.md: offsets only). */
int agile__dp_xlate(dp_ring *r, uint64_t client, uint64_t n, uint64_t *out)
{
    agile__window *win = agile__dp_ring_window(r);
    if (!win) return AGILE_EBOUNDS; /* nothing leased yet: no window */
    uint64_t W = agile__window_size(win), off = client & (W - 1);
    if (n > W || off > W - n) return AGILE_EBOUNDS;
    *out = agile__window_base(win) | off;
    return AGILE_OK;
}
