/* libagile data plane (agile/ring.h): the client end of the command ring, guarded modules,
 * launches and the cross-process stream order counters. */
#include "client_int.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agile/ring.h"
#include "cudadrv.h"
#include "ring/ring.h"

#define SYNC_BYTES (64u << 10) /* 8192 client streams, 8 bytes (c2w, w2c) each */

typedef struct cl_stream {
    uint64_t stream;
    uint32_t n; /* last counter value posted */
} cl_stream;

/* A SIGNAL posted for a client stream that waits on it: released by the client itself if
 * the worker cannot write it (its completion failed, or the worker is gone). */
typedef struct cl_sig {
    uint64_t seq, w2c;
    uint32_t n;
} cl_sig;

struct agile__cring {
    pthread_mutex_t mu;
    agile__ring_client rc;
    uint64_t handle;
    int dev;
    int cuda;
    uint64_t completed;
    /* stream order (cuda): counters in this tenant's pool */
    uint64_t sync;
    cl_stream *streams;
    uint32_t nstreams;
    cl_sig *sigs; /* outstanding SIGNALs, in seq order: [shead, nsig) */
    uint32_t nsig, capsig, shead;
    CUstream rel;    /* a stream of our own for releases: never behind the waiting one */
    CUcontext relctx; /* its context (the primary one, where the pool is mapped), retained */
    bool gone;    /* the worker's side is gone: streams released, AGILE_EWORKER reported */
    /* The reaper: stream-ordered work completes on the GPU (or a host counter) with no call
     * from the client, so nothing else may be reading completions while the worker waits
     * for free completion slots to take the commands the client's stream is waiting on. */
    pthread_t reaper;
    unsigned reaper_gen; /* agile__fork_gen() when it started */
    bool reaper_on;
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    bool rstop;        /* under rmu */
    atomic_bool ridle; /* the reaper sleeps until kicked (set and cleared under rmu) */
    atomic_bool rkick; /* posted since the reaper last looked */
};

/* Functions (c->objs, AGILE_OBJ_FUNCTION): their device and parameter layout, for
 * agile_launch. Kept until the client is disconnected: agile_function_params answers for a
 * function whose module was unloaded, as the worker's refusal of its launch does. */
typedef struct cl_fn {
    int dev;
    uint32_t nparams, args_size;
    uint32_t *size, *off;
} cl_fn;

/* Modules (c->objs, AGILE_OBJ_MODULE): their device. */
typedef struct cl_mod {
    int dev;
} cl_mod;
static _Thread_local agile_async_error tl_async;

static int64_t timeout_ns(const agile_client *c)
{
    return (int64_t)c->timeout_ms * 1000000;
}

static int client_of(agile_client *c, agile_client **out)
{
    if (c) {
        *out = c;
        return AGILE_OK;
    }
    return agile_default_client(out);
}

static void reap(struct agile__cring *r);
static bool peer_gone(struct agile__cring *r);

static bool has_reaper(const struct agile__cring *r)
{
    return r->reaper_on &&
           r->reaper_gen == agile__fork_gen(); /* a forked child has no reaper thread */
}

#define REAPER_PERIOD_NS 500000 /* while commands are out: half a ring per 0.5 ms at least */

/* Completions the client has not read; under r->mu. */
static uint64_t unreaped(struct agile__cring *r)
{
    return atomic_load_explicit(&r->rc.reg.cpl_ctl->tail, memory_order_acquire) - r->rc.cpl_head;
}

/* The reaper: while commands are outstanding, reads completions once a quarter of the
 * completion ring is waiting (the worker takes a command only when its completion slot is
 * free); sleeps until kicked once every command posted has completed. Errors stay sticky in
 * the ring and are reported at the next barrier as usual. */
static void *reaper_main(void *arg)
{
    struct agile__cring *r = arg;
    pthread_mutex_lock(&r->rmu);
    while (!r->rstop) {
        pthread_mutex_unlock(&r->rmu);
        bool idle = false;
        atomic_store(&r->rkick, false);
        if (pthread_mutex_trylock(&r->mu) == 0) { /* busy: its holder reaps or will */
            /* streams waiting on the worker are released if it is gone (in reap) */
            if (unreaped(r) >= r->rc.reg.g.slots / 4 || (r->nsig && peer_gone(r))) reap(r);
            /* Every command posted has its completion written: the worker needs nothing. */
            idle = atomic_load_explicit(&r->rc.reg.cpl_ctl->tail, memory_order_acquire) ==
                   r->rc.cmd_tail;
            pthread_mutex_unlock(&r->mu);
        }
        pthread_mutex_lock(&r->rmu);
        if (r->rstop) break;
        if (idle) {
            /* Dekker with reaper_kick (both seq_cst): it sets rkick then reads ridle, we set
             * ridle then read rkick, so a post after our look always wakes us. */
            atomic_store(&r->ridle, true);
            if (atomic_load(&r->rkick)) atomic_store(&r->ridle, false);
            while (atomic_load(&r->ridle) && !r->rstop)
                pthread_cond_wait(&r->rcv, &r->rmu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += REAPER_PERIOD_NS;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&r->rcv, &r->rmu, &ts);
        }
    }
    pthread_mutex_unlock(&r->rmu);
    return NULL;
}

/* After a post: wake an idle reaper. No lock on the way unless it sleeps. */
static void reaper_kick(struct agile__cring *r)
{
    if (!has_reaper(r)) return;
    atomic_store(&r->rkick, true);
    if (!atomic_load(&r->ridle)) return;
    pthread_mutex_lock(&r->rmu);
    atomic_store(&r->ridle, false);
    pthread_cond_signal(&r->rcv);
    pthread_mutex_unlock(&r->rmu);
}

static int ring_get(agile_client *c, int dev, struct agile__cring **out)
{
    struct agile__cring *r;
    agile__msg m, rep;
    agile__ring_peer peer = {-1, 0, NULL, NULL};
    uint8_t *buf = NULL;
    uint64_t h, a, b;
    int fd = -1, rv = AGILE_OK;
    struct ucred cred;
    socklen_t clen = sizeof cred;

    if (dev < 0 || dev >= AGILE_MAX_DEV) return AGILE_EINVAL;
    if ((r = __atomic_load_n(&c->ring[dev], __ATOMIC_ACQUIRE))) {
        *out = r;
        return AGILE_OK;
    }
    pthread_mutex_lock(&c->ring_mu);
    if ((r = c->ring[dev])) goto out;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_RING_ATTACH;
    m.u.ring_attach_req.slots = 0;
    m.u.ring_attach_req.flags = (uint32_t)dev;
    AGILE_TRY(agile__call(c, &m, &rep, &buf));
    struct agile__rec_ring_attach_rep ar = rep.u.ring_attach_rep;
    AGILE_TRY(agile__recv_fd(c, ar.fd_seq, &h, &a, &b, &fd));
    if (h != ar.handle || fd < 0) {
        agile__set_last_error("worker sent an inconsistent ring");
        rv = AGILE_EPROTO;
        goto out;
    }
    if (!(r = calloc(1, sizeof *r))) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    /* The worker's liveness, from the kernel: its pid on the fd socket. */
    if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
        agile__ring_peer_pid(cred.pid, &peer);
    rv = agile__ring_client_init(&r->rc, fd, &peer);
    if (rv != AGILE_OK) {
        agile__ring_peer_fini(&peer);
        free(r);
        r = NULL;
        goto out;
    }
    fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->rmu, NULL);
    pthread_cond_init(&r->rcv, NULL);
    r->handle = ar.handle;
    r->dev = dev;
    r->cuda = c->info.backend == AGILE_BACKEND_KIND_CUDA;
    /* Without a reaper the stream order still works while the client keeps reaping (any
     * ring call does); its absence is only a risk for stream-only waiters, so go on. */
    r->reaper_gen = agile__fork_gen();
    r->reaper_on = pthread_create(&r->reaper, NULL, reaper_main, r) == 0;
    __atomic_store_n(&c->ring[dev], r, __ATOMIC_RELEASE);
out:
    pthread_mutex_unlock(&c->ring_mu);
    if (fd >= 0) close(fd);
    free(buf);
    if (rv == AGILE_OK) *out = r;
    return rv;
}

void agile__rings_close(agile_client *c)
{
    for (int d = 0; d < AGILE_MAX_DEV; d++) {
        struct agile__cring *r = c->ring[d];
        if (!r) continue;
        if (has_reaper(r)) {
            pthread_mutex_lock(&r->rmu);
            r->rstop = true;
            atomic_store(&r->ridle, false);
            pthread_cond_signal(&r->rcv);
            pthread_mutex_unlock(&r->rmu);
            pthread_join(r->reaper, NULL);
            pthread_cond_destroy(&r->rcv);
            pthread_mutex_destroy(&r->rmu);
        } else if (!r->reaper_on) {
            pthread_cond_destroy(&r->rcv);
            pthread_mutex_destroy(&r->rmu);
        } /* else a forked child: the copies still count the parent's reaper as a waiter
           * (pthread_cond_destroy would wait for it forever); they are freed with r. */
        if (r->reaper_gen == agile__fork_gen())
            agile__ring_client_fini(&r->rc);
        else /* a forked child: the ring is the parent's, leave it open */
            agile__ring_client_detach(&r->rc);
        free(r->streams);
        free(r->sigs);
        if (r->relctx && r->reaper_gen == agile__fork_gen()) {
            CUdevice dev;
            if (r->rel) agile__cu.cuStreamDestroy(r->rel);
            if (agile__cu.cuDeviceGet(&dev, r->dev) == CUDA_SUCCESS)
                agile__cu.cuDevicePrimaryCtxRelease(dev);
        }
        pthread_mutex_destroy(&r->mu);
        free(r);
        c->ring[d] = NULL;
    }
}

/* Write w2c = n from the client: the worker's write will not come. On a stream of our own
 * (non-blocking, so never behind the legacy stream the waiter may be), without waiting. */
static void sig_release(struct agile__cring *r, const cl_sig *g)
{
    CUresult cr = CUDA_SUCCESS;
    CUdevice dev;
    CUcontext old;
    if (!r->relctx) { /* any thread may get here (the reaper has no context of its own) */
        cr = agile__cu.cuDeviceGet(&dev, r->dev);
        if (cr == CUDA_SUCCESS) cr = agile__cu.cuDevicePrimaryCtxRetain(&r->relctx, dev);
        if (cr != CUDA_SUCCESS) r->relctx = NULL;
    }
    if (cr == CUDA_SUCCESS) cr = agile__cu.cuCtxPushCurrent(r->relctx);
    if (cr == CUDA_SUCCESS) {
        if (!r->rel) cr = agile__cu.cuStreamCreate(&r->rel, CU_STREAM_NON_BLOCKING);
        if (cr == CUDA_SUCCESS)
            cr = agile__cu.cuStreamWriteValue32(r->rel, (CUdeviceptr)g->w2c, g->n, 0);
        agile__cu.cuCtxPopCurrent(&old);
    }
    if (cr != CUDA_SUCCESS)
        agile__log(AGILE_LOG_ERROR, AGILE_NO_TENANT,
                   "cannot release a stream waiting on the worker (%s): it stays blocked",
                   agile__cu_name(cr));
}

/* Completions seen: SIGNALs done leave the list; a failed one is released by us. */
static void sigs_seen(struct agile__cring *r, const agile__ring_cpl *c, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        while (r->shead < r->nsig && r->sigs[r->shead].seq < c[i].seq)
            r->shead++; /* completions are in order: an older one was seen already */
        if (r->shead < r->nsig && r->sigs[r->shead].seq == c[i].seq) {
            if (c[i].status != AGILE_OK) sig_release(r, &r->sigs[r->shead]);
            r->shead++;
        }
    }
    if (r->shead == r->nsig) {
        r->shead = r->nsig = 0;
    } else if (r->shead >= 64 && r->shead * 2 >= r->nsig) {
        /* A stream that never drains would otherwise grow the array for ever: drop the seen
         * half (amortised O(1) per signal). */
        memmove(r->sigs, r->sigs + r->shead, (size_t)(r->nsig - r->shead) * sizeof *r->sigs);
        r->nsig -= r->shead;
        r->shead = 0;
    }
}

/* The worker's side is gone (it died, or ended this session: its ring is closed): release
 * every stream still waiting on it and, if there was one, record AGILE_EWORKER for the next
 * barrier (the first error stays: AGILE_EFAULT when the worker ended us for a fault). */
static void worker_gone(struct agile__cring *r)
{
    bool waiting = r->shead < r->nsig;
    if (r->gone) return;
    r->gone = true;
    for (uint32_t i = r->shead; i < r->nsig; i++)
        sig_release(r, &r->sigs[i]);
    r->shead = r->nsig = 0;
    if (waiting && r->rc.err_status == AGILE_OK) {
        r->rc.err_status = AGILE_EWORKER;
        r->rc.err_seq = r->rc.cpl_head;
    }
}

static bool peer_gone(struct agile__cring *r)
{
    return (atomic_load(r->rc.reg.closed) & AGILE_RING_CLOSED_WORKER) ||
           agile__ring_peer_alive(&r->rc.peer) != AGILE_OK;
}

/* agile_last_error() for the fault codes (issue 13); false for any other status. */
static bool fault_message(int32_t status, uint64_t seq)
{
    if (status == AGILE_EFAULT)
        agile__set_last_error("a kernel of this tenant (command %llu) faulted the GPU; the "
                              "worker ended this session (agilectl status names the kernel)",
                              (unsigned long long)seq);
    else if (status == AGILE_ERESET)
        agile__set_last_error("another tenant's kernel faulted the GPU: this tenant's commands "
                              "in flight (from %llu on) were lost, their outputs unwritten; its "
                              "memory is intact",
                              (unsigned long long)seq);
    else
        return false;
    return true;
}

/* Reap completions without blocking (the sticky error is kept by the ring). */
static void reap(struct agile__cring *r)
{
    agile__ring_cpl cpl[64];
    uint32_t n;
    while (agile__ring_poll(&r->rc, cpl, 64, &n) == AGILE_OK && n) {
        r->completed += n;
        if (r->nsig) sigs_seen(r, cpl, n);
        if (n < 64) break;
    }
    /* what the worker had not answered when it went will never be answered */
    if (r->nsig && peer_gone(r) && agile__ring_poll(&r->rc, cpl, 1, &n) == AGILE_OK && !n)
        worker_gone(r);
}

/* Submit under r->mu; a full ring is reaped and retried until the client's timeout. */
static int submit(agile_client *c, struct agile__cring *r, agile__ring_cmd *cmd, unsigned flags,
                  uint64_t *seq)
{
    uint64_t deadline = agile__now_ns() + (uint64_t)timeout_ns(c);
    for (;;) {
        int rv = agile__ring_submit(&r->rc, cmd, flags | AGILE_RING_NONBLOCK, 0, seq);
        if (rv != AGILE_EFULL) return rv;
        reap(r);
        if (agile__now_ns() > deadline) {
            agile__set_last_error("the worker did not take commands for %d ms", c->timeout_ms);
            return AGILE_ETIMEDOUT;
        }
        /* Let the worker catch up: wait for one completion (bounded, checks its pid). */
        agile__ring_cpl cpl;
        rv = agile__ring_wait(&r->rc, &cpl, 1000000);
        if (rv == AGILE_OK) {
            r->completed++;
            if (r->nsig) sigs_seen(r, &cpl, 1);
        } else if (rv != AGILE_ETIMEDOUT) {
            if (rv == AGILE_ECLOSED) worker_gone(r);
            return rv;
        }
    }
}

static void cmd_init(agile__ring_cmd *cmd, uint16_t op, void *stream)
{
    memset(cmd, 0, offsetof(agile__ring_cmd, raw));
    cmd->opcode = op;
    cmd->tag = (uint64_t)(uintptr_t)stream;
}

/* Counters of the (client stream, worker stream) pair; SYNC_BYTES of pool memory per ring. */
static int stream_counters(agile_client *c, struct agile__cring *r, void *stream, uint64_t *c2w,
                           uint32_t **n)
{
    uint32_t i;
    if (!r->sync) {
        void *p = agile__malloc(c, SYNC_BYTES, r->dev, NULL);
        if (!p) return AGILE_ENOMEM;
        /* Zeroed before any stream can write a counter: cuMemsetD8 runs on the legacy stream,
         * which does not order with non-blocking (e.g. PyTorch's) streams, and lazy loading
         * can delay it by milliseconds; a late zero would erase a posted counter and leave
         * both streams waiting for each other. */
        CUresult cr = agile__cu.cuMemsetD8((CUdeviceptr)(uintptr_t)p, 0, SYNC_BYTES);
        if (cr == CUDA_SUCCESS) cr = agile__cu.cuStreamSynchronize(NULL);
        if (cr != CUDA_SUCCESS) {
            agile__free(c, p, SYNC_BYTES, r->dev, NULL);
            return agile_err_cuda((int)cr);
        }
        r->sync = (uint64_t)(uintptr_t)p;
    }
    for (i = 0; i < r->nstreams; i++)
        if (r->streams[i].stream == (uint64_t)(uintptr_t)stream) break;
    if (i == r->nstreams) {
        if (r->nstreams == SYNC_BYTES / 8) return AGILE_EBUSY;
        cl_stream *ns = realloc(r->streams, (r->nstreams + 1) * sizeof *ns);
        if (!ns) return AGILE_ENOMEM;
        r->streams = ns;
        ns[i].stream = (uint64_t)(uintptr_t)stream;
        ns[i].n = 0;
        r->nstreams++;
    }
    *c2w = r->sync + 8ull * i;
    *n = &r->streams[i].n;
    return AGILE_OK;
}

/* Post cmd; on cuda ordered with the client's stream:
 *   client stream: write c2w = n | worker stream: wait c2w >= n, cmd, write w2c = n |
 *   client stream: wait w2c >= n. One publish (and at most one wake-up) for the three. */
static int post_ordered(agile_client *c, struct agile__cring *r, agile__ring_cmd *cmd, void *stream,
                        uint64_t *seq)
{
    agile__ring_cmd wc, sc;
    uint64_t c2w;
    uint32_t *np;
    CUresult cr;
    int rv = AGILE_OK;
    if (!r->cuda) {
        rv = submit(c, r, cmd, 0, seq);
        goto out;
    }
    AGILE_TRY(stream_counters(c, r, stream, &c2w, &np));
    uint32_t n = *np + 1;
    cr = agile__cu.cuStreamWriteValue32((CUstream)stream, (CUdeviceptr)c2w, n, 0);
    if (cr != CUDA_SUCCESS) {
        rv = agile_err_cuda((int)cr);
        goto out;
    }
    *np = n;
    cmd_init(&wc, AGILE_RING_OP_WAIT, stream);
    wc.u.wait.counter = c2w;
    wc.u.wait.value = n;
    wc.u.wait.stream = cmd->tag;
    cmd_init(&sc, AGILE_RING_OP_SIGNAL, stream);
    sc.u.signal.counter = c2w + 4;
    sc.u.signal.value = n;
    sc.u.signal.stream = cmd->tag;
    if (r->gone) {
        rv = AGILE_EWORKER;
        goto out;
    }
    if (r->nsig == r->capsig) {
        uint32_t cap = r->capsig ? 2 * r->capsig : 64;
        cl_sig *ns = realloc(r->sigs, cap * sizeof *ns);
        if (!ns) {
            rv = AGILE_ENOMEM;
            goto out;
        }
        r->sigs = ns;
        r->capsig = cap;
    }
    AGILE_TRY(submit(c, r, &wc, AGILE_RING_MORE, NULL));
    AGILE_TRY(submit(c, r, cmd, AGILE_RING_MORE, seq));
    uint64_t sseq = 0;
    AGILE_TRY(submit(c, r, &sc, 0, &sseq));
    r->sigs[r->nsig++] = (cl_sig){sseq, c2w + 4, n};
    cr = agile__cu.cuStreamWaitValue32((CUstream)stream, (CUdeviceptr)c2w + 4, n,
                                       CU_STREAM_WAIT_VALUE_GEQ);
    if (cr != CUDA_SUCCESS) rv = agile_err_cuda((int)cr);
out:
    reaper_kick(r); /* the stream now depends on the worker taking these commands */
    return rv;
}

/* ---- rings ------------------------------------------------------------------------------- */

AGILE_API int agile_ring_open(agile_client *c, int device)
{
    struct agile__cring *r;
    int rv = client_of(c, &c);
    return rv ? rv : ring_get(c, device, &r);
}

AGILE_API int agile_ring_nop(agile_client *c, int device, uint64_t cookie)
{
    struct agile__cring *r;
    agile__ring_cmd cmd;
    uint64_t seq;
    int32_t st = AGILE_OK;
    int rv = AGILE_OK;
    AGILE_TRY(client_of(c, &c));
    AGILE_TRY(ring_get(c, device, &r));
    cmd_init(&cmd, AGILE_RING_OP_NOP, NULL);
    cmd.u.nop.cookie = cookie;
    pthread_mutex_lock(&r->mu);
    rv = submit(c, r, &cmd, 0, &seq);
    if (rv == AGILE_OK) {
        uint64_t before = r->rc.cpl_head;
        rv = agile__ring_wait_seq(&r->rc, seq, timeout_ns(c), &st);
        r->completed += r->rc.cpl_head - before;
    }
    pthread_mutex_unlock(&r->mu);
    if (rv == AGILE_OK) rv = st;
out:
    return rv;
}

AGILE_API int agile_ring_nop_async(agile_client *c, int device)
{
    struct agile__cring *r;
    agile__ring_cmd cmd;
    int rv = AGILE_OK;
    AGILE_TRY(client_of(c, &c));
    AGILE_TRY(ring_get(c, device, &r));
    cmd_init(&cmd, AGILE_RING_OP_NOP, NULL);
    pthread_mutex_lock(&r->mu);
    rv = submit(c, r, &cmd, 0, NULL);
    reap(r);
    pthread_mutex_unlock(&r->mu);
out:
    return rv;
}

AGILE_API uint64_t agile_ring_completed(agile_client *c, int device)
{
    struct agile__cring *r;
    uint64_t n;
    if (client_of(c, &c) != AGILE_OK || device < 0 || device >= AGILE_MAX_DEV ||
        !(r = __atomic_load_n(&c->ring[device], __ATOMIC_ACQUIRE)))
        return 0;
    pthread_mutex_lock(&r->mu);
    reap(r);
    n = r->completed;
    pthread_mutex_unlock(&r->mu);
    return n;
}

AGILE_API int agile_ring_barrier(agile_client *c, int device, void *stream, agile_async_error *err)
{
    struct agile__cring *r;
    agile__ring_cmd cmd;
    agile__ring_cpl cpl;
    agile_async_error e;
    uint64_t seq, deadline;
    int rv = AGILE_OK;

    memset(&e, 0, sizeof e);
    AGILE_TRY(client_of(c, &c));
    AGILE_TRY(ring_get(c, device, &r));
    cmd_init(&cmd, AGILE_RING_OP_BARRIER, stream);
    cmd.u.barrier.stream = cmd.tag;
    deadline = agile__now_ns() + (uint64_t)timeout_ns(c);
    pthread_mutex_lock(&r->mu);
    rv = submit(c, r, &cmd, 0, &seq);
    /* Our own wait loop (not agile__ring_barrier): the barrier's completion carries the
     * guard's kernel/site (tag) and address (result), which only the raw completion has. */
    while (rv == AGILE_OK) {
        uint64_t now = agile__now_ns();
        rv = agile__ring_wait(&r->rc, &cpl, now >= deadline ? 0 : (int64_t)(deadline - now));
        if (rv != AGILE_OK) break;
        r->completed++;
        if (r->nsig) sigs_seen(r, &cpl, 1);
        if (cpl.seq == seq) break;
    }
    if (rv == AGILE_ECLOSED) {
        /* The worker's side is gone: the first error it left (AGILE_EFAULT when this
         * tenant's kernel faulted the GPU and the worker ended the session), AGILE_EWORKER
         * when streams were waiting on it, else the transport's AGILE_ECLOSED. */
        uint64_t sseq = 0;
        reap(r);
        worker_gone(r);
        e.status = agile__ring_client_error(&r->rc, &sseq);
        e.seq = sseq;
        if (e.status == AGILE_OK) {
            e.status = rv;
            goto unlock;
        }
        if (!fault_message(e.status, sseq))
            agile__set_last_error("the worker's side of the ring is gone (worker exited or "
                                  "ended this session); streams waiting on it were released");
        r->rc.err_status = AGILE_OK; /* reported; later calls see AGILE_ECLOSED */
        r->rc.err_seq = 0;
        rv = e.status;
        goto unlock;
    }
    if (rv == AGILE_OK) {
        uint64_t sseq;
        int32_t sticky = agile__ring_client_error(&r->rc, &sseq);
        if (sticky != AGILE_OK) {
            e.status = sticky; /* the client saw the failing completion itself */
            e.seq = sseq;
        } else if (cpl.status != AGILE_OK) {
            e.status = cpl.status;
            e.seq = cpl.status == AGILE_EGUARD ? seq : cpl.result;
            if (cpl.status == AGILE_EGUARD) {
                e.kernel = (uint32_t)(cpl.tag >> 32);
                e.site = (uint32_t)cpl.tag;
                e.addr = cpl.result;
            }
        }
        r->rc.err_status = AGILE_OK; /* reported now: the next barrier starts clean */
        r->rc.err_seq = 0;
        fault_message(e.status, e.seq);
        rv = e.status;
    } else {
        e.status = rv;
    }
unlock:
    pthread_mutex_unlock(&r->mu);
out:
    if (err) *err = e;
    return rv;
}

/* ---- memory ops ------------------------------------------------------------------------- */

static int dev_of(const void *p, size_t n, int *dev)
{
    uint64_t a = (uint64_t)(uintptr_t)p;
    for (int d = 0; d < AGILE_MAX_DEV; d++) {
        uint64_t base, size;
        if (agile_pool_window(d, &base, &size) == AGILE_OK && a >= base && a - base < size) {
            *dev = d;
            return AGILE_OK;
        }
    }
    (void)n;
    /* Not in any of our windows: the worker decides (it translates by offset and bounds by
     * the window size, so the command fails with AGILE_EBOUNDS or lands in our window). */
    *dev = 0;
    return AGILE_OK;
}

static int post_simple(agile__ring_cmd *cmd, int dev, void *stream)
{
    agile_client *c;
    struct agile__cring *r;
    int rv = AGILE_OK;
    AGILE_TRY(agile_default_client(&c));
    AGILE_TRY(ring_get(c, dev, &r));
    pthread_mutex_lock(&r->mu);
    rv = post_ordered(c, r, cmd, stream, NULL);
    pthread_mutex_unlock(&r->mu);
out:
    return rv;
}

AGILE_API int agile_memcpy_async(void *dst, const void *src, size_t n, void *stream)
{
    agile__ring_cmd cmd;
    int dev;
    dev_of(dst, n, &dev);
    cmd_init(&cmd, AGILE_RING_OP_MEMCPY, stream);
    cmd.u.memcpy.dst = (uint64_t)(uintptr_t)dst;
    cmd.u.memcpy.src = (uint64_t)(uintptr_t)src;
    cmd.u.memcpy.bytes = n;
    cmd.u.memcpy.stream = cmd.tag;
    return post_simple(&cmd, dev, stream);
}

AGILE_API int agile_memset_async(void *dst, int value, size_t n, void *stream)
{
    agile__ring_cmd cmd;
    int dev;
    if (value < 0 || value > 255) return AGILE_EINVAL;
    dev_of(dst, n, &dev);
    cmd_init(&cmd, AGILE_RING_OP_MEMSET, stream);
    cmd.u.memset.dst = (uint64_t)(uintptr_t)dst;
    cmd.u.memset.count = n;
    cmd.u.memset.value = (uint32_t)value;
    cmd.u.memset.elem_size = 1;
    cmd.u.memset.stream = cmd.tag;
    return post_simple(&cmd, dev, stream);
}

static int post_counter(uint16_t op, const uint32_t *counter, uint32_t value, void *stream)
{
    agile__ring_cmd cmd;
    int dev;
    dev_of(counter, 4, &dev);
    cmd_init(&cmd, op, stream);
    if (op == AGILE_RING_OP_SIGNAL) {
        cmd.u.signal.counter = (uint64_t)(uintptr_t)counter;
        cmd.u.signal.value = value;
        cmd.u.signal.stream = cmd.tag;
    } else {
        cmd.u.wait.counter = (uint64_t)(uintptr_t)counter;
        cmd.u.wait.value = value;
        cmd.u.wait.stream = cmd.tag;
    }
    return post_simple(&cmd, dev, stream);
}

AGILE_API int agile_signal_async(uint32_t *counter, uint32_t value, void *stream)
{
    return post_counter(AGILE_RING_OP_SIGNAL, counter, value, stream);
}

AGILE_API int agile_wait_async(const uint32_t *counter, uint32_t value, void *stream)
{
    return post_counter(AGILE_RING_OP_WAIT, counter, value, stream);
}

AGILE_API int agile_ring_mod_op(agile_client *c, int device, uint32_t module, uint32_t op,
                                const void *args, size_t len, void *stream)
{
    struct agile__cring *r;
    agile__ring_cmd cmd;
    int rv = AGILE_OK;
    if ((len && !args) || len > AGILE_RING_MAX_PAYLOAD || op > 0xffffu) return AGILE_EINVAL;
    AGILE_TRY(client_of(c, &c));
    AGILE_TRY(ring_get(c, device, &r));
    cmd_init(&cmd, AGILE_RING_OP_MOD_OP, stream);
    cmd.u.mod_op.module = module;
    cmd.u.mod_op.op = op;
    cmd.u.mod_op.stream = cmd.tag;
    cmd.u.mod_op.args = agile__blob_of(args, len);
    pthread_mutex_lock(&r->mu);
    rv = post_ordered(c, r, &cmd, stream, NULL);
    pthread_mutex_unlock(&r->mu);
out:
    return rv;
}

AGILE_API int agile_barrier(void *stream, uint64_t *err_seq)
{
    agile_client *c;
    int rv = AGILE_OK, first = AGILE_OK;
    agile_async_error e, fe;
    memset(&fe, 0, sizeof fe);
    AGILE_TRY(agile_default_client(&c));
    for (int d = 0; d < AGILE_MAX_DEV; d++) {
        if (!__atomic_load_n(&c->ring[d], __ATOMIC_ACQUIRE)) continue;
        int r = agile_ring_barrier(c, d, stream, &e);
        if (r != AGILE_OK && first == AGILE_OK) {
            first = r;
            fe = e;
        }
    }
    rv = first;
    tl_async = fe;
    if (err_seq) *err_seq = fe.seq;
out:
    return rv;
}

AGILE_API int agile_last_async_error(agile_async_error *out)
{
    if (!out) return AGILE_EINVAL;
    *out = tl_async;
    return AGILE_OK;
}

/* ---- modules and launches ---------------------------------------------------------------- */

AGILE_API int agile_module_load(const char *ptx, size_t len, unsigned flags, agile_module_t *module)
{
    agile_client *c;
    agile__msg m, rep;
    uint8_t *buf = NULL;
    cl_mod *cm = NULL;
    int rv = AGILE_OK, dev = (int)((flags >> 8) & 0xff);
    if (!ptx || !len || !module ||
        (flags & ~(AGILE_MODULE_STRICT | AGILE_MODULE_TEST_UNGUARDED | 0xff00u)))
        return AGILE_EINVAL;
    AGILE_TRY(agile_default_client(&c));
    if (!(cm = calloc(1, sizeof *cm))) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_LOAD;
    m.u.module_load_req.device = (uint32_t)dev;
    m.u.module_load_req.flags = flags & (AGILE_MODULE_STRICT | AGILE_MODULE_TEST_UNGUARDED);
    m.u.module_load_req.ptx = agile__blob_of(ptx, len);
    AGILE_TRY(agile__call(c, &m, &rep, &buf));
    cm->dev = dev;
    AGILE_TRY(agile__objtab_add(&c->objs, rep.u.module_load_rep.handle, AGILE_OBJ_MODULE, cm,
                                NULL));
    cm = NULL;
    *module = rep.u.module_load_rep.handle;
out:
    free(cm);
    free(buf);
    return rv;
}

AGILE_API int agile_module_unload(agile_module_t module)
{
    agile_client *c;
    agile__msg m, rep;
    uint8_t *buf = NULL;
    int rv = AGILE_OK;
    AGILE_TRY(agile_default_client(&c));
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_UNLOAD;
    m.u.handle.handle = module;
    rv = agile__call(c, &m, &rep, &buf);
    free(agile__objtab_take(&c->objs, module, AGILE_OBJ_MODULE));
out:
    free(buf);
    return rv;
}

static void fn_fini(void *rec)
{
    cl_fn *f = rec;
    free(f->size);
    free(f->off);
}

AGILE_API int agile_module_function(agile_module_t module, const char *name, agile_function_t *fn,
                                    unsigned *nparams)
{
    agile_client *c;
    agile__msg m, rep;
    uint8_t *buf = NULL;
    cl_fn *f = NULL;
    cl_mod mod;
    int rv = AGILE_OK, dev = -1;
    if (!name || !fn) return AGILE_EINVAL;
    AGILE_TRY(agile_default_client(&c));
    if (agile__objtab_get(&c->objs, module, AGILE_OBJ_MODULE, &mod, sizeof mod)) dev = mod.dev;
    if (dev < 0) {
        rv = AGILE_EHANDLE;
        goto out;
    }
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_FUNCTION;
    m.u.module_function_req.module = module;
    m.u.module_function_req.name = agile__blob_of(name, strlen(name));
    AGILE_TRY(agile__call(c, &m, &rep, &buf));
    uint32_t np = rep.u.module_function_rep.nparams;
    agile__blob ps = rep.u.module_function_rep.param_sizes;
    if (np > 4096 || ps.n != 8ull * np) {
        agile__set_last_error("worker sent inconsistent parameter sizes");
        rv = AGILE_EPROTO;
        goto out;
    }
    if (!(f = calloc(1, sizeof *f)) || !(f->size = calloc(np + 1, 4)) ||
        !(f->off = calloc(np + 1, 4))) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    agile__rbuf rb = {ps.p, ps.n, 0, 0};
    uint32_t end = 0;
    for (uint32_t i = 0; i < np; i++) {
        f->size[i] = agile__get_u32(&rb);
        f->off[i] = agile__get_u32(&rb);
        if (f->size[i] > 4096 || f->off[i] < end || f->off[i] > 65536) {
            agile__set_last_error("worker sent an inconsistent parameter layout");
            rv = AGILE_EPROTO;
            goto out;
        }
        end = f->off[i] + f->size[i];
    }
    f->dev = dev;
    f->nparams = np;
    f->args_size = end;
    AGILE_TRY(agile__objtab_add(&c->objs, rep.u.module_function_rep.handle, AGILE_OBJ_FUNCTION,
                                f, fn_fini));
    f = NULL;
    *fn = rep.u.module_function_rep.handle;
    if (nparams) *nparams = np;
out:
    if (f) {
        fn_fini(f);
        free(f);
    }
    free(buf);
    return rv;
}

/* The default client's record of fn (copied: the arrays stay until it is disconnected). */
static int fn_get(agile_function_t fn, cl_fn *out)
{
    agile_client *c = agile__default_peek();
    return c && agile__objtab_get(&c->objs, fn, AGILE_OBJ_FUNCTION, out, sizeof *out);
}

AGILE_API int agile_function_params(agile_function_t fn, unsigned max, uint32_t *sizes,
                                    uint32_t *offsets, uint32_t *args_size)
{
    cl_fn f;
    if (!fn_get(fn, &f)) return AGILE_EHANDLE;
    for (unsigned i = 0; i < f.nparams && i < max; i++) {
        if (sizes) sizes[i] = f.size[i];
        if (offsets) offsets[i] = f.off[i];
    }
    if (args_size) *args_size = f.args_size;
    return AGILE_OK;
}

AGILE_API int agile_launch(agile_function_t fn, const unsigned grid[3], const unsigned block[3],
                           unsigned shared_mem, void *stream, const void *args, size_t args_size)
{
    agile_client *c;
    struct agile__cring *r;
    agile__ring_cmd cmd;
    cl_fn f;
    uint64_t seq;
    int32_t st = AGILE_OK;
    int rv = AGILE_OK;
    if (!grid || !block || (args_size && !args) || args_size > UINT32_MAX) return AGILE_EINVAL;
    if (!fn_get(fn, &f)) return AGILE_EHANDLE;
    if (args_size != f.args_size) {
        agile__set_last_error("kernel takes %u bytes of arguments, got %zu", f.args_size,
                              args_size);
        return AGILE_EINVAL;
    }
    AGILE_TRY(agile_default_client(&c));
    AGILE_TRY(ring_get(c, f.dev, &r));
    cmd_init(&cmd, AGILE_RING_OP_LAUNCH, stream);
    cmd.u.launch.function = fn;
    cmd.u.launch.stream = cmd.tag;
    cmd.u.launch.grid_x = grid[0];
    cmd.u.launch.grid_y = grid[1];
    cmd.u.launch.grid_z = grid[2];
    cmd.u.launch.block_x = block[0];
    cmd.u.launch.block_y = block[1];
    cmd.u.launch.block_z = block[2];
    cmd.u.launch.shmem = shared_mem;
    cmd.u.launch.params = agile__blob_of(args, args_size);
    pthread_mutex_lock(&r->mu);
    rv = post_ordered(c, r, &cmd, stream, &seq);
    if (rv == AGILE_OK && !r->cuda) {
        /* No GPU: the worker's answer (AGILE_ENOTSUP) is the result, so wait for it. */
        uint64_t before = r->rc.cpl_head;
        rv = agile__ring_wait_seq(&r->rc, seq, timeout_ns(c), &st);
        r->completed += r->rc.cpl_head - before;
        if (rv == AGILE_OK) rv = st;
    }
    pthread_mutex_unlock(&r->mu);
out:
    return rv;
}
