/* exec.c — command execution of the data plane. On a backend with queues (cuda) commands are
 * enqueued on a worker stream per (ring, client stream) and complete when the event recorded
 * after them fires; otherwise the dispatcher's thread runs them, large memcpy/memset in
 * pieces between which other tenants are served. Completions are posted in command order. */
#include "dp.h"

#include <stdlib.h>
#include <string.h>

#include "modules.h"

void agile__dp_post(dp_ring *r, const dp_pend *p)
{
    agile__ring_cmd c;
    c.seq = p->seq;
    c.opcode = p->opcode;
    c.tag = p->tag;
    agile__ring_complete(&r->rw, &c, p->status, p->result);
}

/* A completion of the given kind for the command (seq, tag, opcode), everything else zero. */
static dp_pend pend_of(uint64_t seq, uint64_t tag, uint16_t opcode, uint8_t kind)
{
    dp_pend p;
    memset(&p, 0, sizeof p);
    p.seq = seq;
    p.tag = tag;
    p.opcode = opcode;
    p.kind = kind;
    return p;
}

/* Complete now if nothing is queued before it, else queue behind. */
static void finish_ids(dp_ring *r, uint64_t seq, uint64_t tag, uint16_t opcode, int32_t status,
                       uint64_t result)
{
    dp_pend p = pend_of(seq, tag, opcode, P_DONE);
    p.status = status;
    p.result = result;
    if (!r->pcount) {
        agile__dp_post(r, &p);
        return;
    }
    r->pend[(r->phead + r->pcount++) % r->pcap] = p;
}

static void finish(dp_ring *r, const agile__ring_cmd *cmd, int32_t status, uint64_t result)
{
    finish_ids(r, cmd->seq, cmd->tag, cmd->opcode, status, result);
}

/* The completion queued last (after gpu_queue returned DP_QUEUED). */
static dp_pend *last_pend(dp_ring *r)
{
    return &r->pend[(r->phead + r->pcount - 1) % r->pcap];
}

static void queue(dp_ring *r, const dp_pend *p)
{
    /* Room is guaranteed: agile__ring_next hands out a command only while its completion
     * slot is free, and every command taken has at most one entry here. */
    r->pend[(r->phead + r->pcount++) % r->pcap] = *p;
}

static int worker_stream(dp_ring *r, uint64_t tag, agile__stream **out)
{
    int rv;
    for (uint32_t i = 0; i < r->nstreams; i++) {
        if (r->streams[i].tag == tag) {
            *out = r->streams[i].st;
            return AGILE_OK;
        }
    }
    if (r->nstreams == DP_MAX_STREAMS) return AGILE_EBUSY;
    dp_stream *n = realloc(r->streams, (r->nstreams + 1) * sizeof *n);
    if (!n) return AGILE_ENOMEM;
    r->streams = n;
    if ((rv = agile__stream_create(r->w->be, &n[r->nstreams].st)) != AGILE_OK) return rv;
    n[r->nstreams].tag = tag;
    *out = n[r->nstreams++].st;
    return AGILE_OK;
}

/* After a GPU op on stream: its completion waits for an event. DP_QUEUED on success. */
static int gpu_queue(dp_ring *r, const agile__ring_cmd *cmd, agile__stream *st, bool launch)
{
    agile__backend *be = r->w->be;
    dp_pend p = pend_of(cmd->seq, cmd->tag, cmd->opcode, P_EVENT);
    int rv;
    if (r->nev)
        p.ev = r->evpool[--r->nev];
    else if ((rv = agile__event_create(be, &p.ev)) != AGILE_OK)
        return rv;
    if ((rv = agile__event_record(be, p.ev, st)) != AGILE_OK) {
        agile__event_destroy(be, p.ev);
        return rv;
    }
    p.launch = launch;
    queue(r, &p);
    return DP_QUEUED;
}

static void ev_put(dp_ring *r, agile__event *ev)
{
    agile__event **n;
    if (r->nev < 64 && (n = realloc(r->evpool, (r->nev + 1) * sizeof(agile__event *)))) {
        r->evpool = n;
        r->evpool[r->nev++] = ev;
    } else {
        agile__event_destroy(r->w->be, ev);
    }
}

static int exec_launch(dp_ring *r, const agile__ring_cmd *cmd)
{
    const struct agile__ring_rec_launch *l = &cmd->u.launch;
    agile__worker *w = r->w;
    dp_function *f = NULL;
    void *pp[AGILE_GUARD_MAX_PARAMS + 3];
    uint64_t args[(AGILE_RING_MAX_PAYLOAD + 7) / 8];
    uint64_t mask, base, viol;
    agile__stream *st = NULL;
    int rv = AGILE_OK;

    if (!agile__dp_caps(w).kernels) return AGILE_ENOTSUP;
    if ((rv = agile__htab_hold(&w->objs, l->function, AGILE_OBJ_FUNCTION, r->s->id, (void **)&f)))
        return rv;
    if (!f->kfn || f->mod->dev != r->dev) {
        rv = f->kfn ? AGILE_EINVAL : AGILE_ENOTSUP;
        goto out;
    }
    AGILE_TRY(agile__dp_function_current(w, f));
    if (l->params.n != f->p.argsize || !l->grid_x || !l->grid_y || !l->grid_z || !l->block_x ||
        !l->block_y || !l->block_z) {
        rv = AGILE_EINVAL;
        goto out;
    }
    agile__window *win = agile__dp_ring_window(r);
    if (!win) {
        rv = AGILE_EBOUNDS;
        goto out;
    }
    /* The params blob lives in the command's private copy; copy it aligned. */
    memcpy(args, l->params.p, l->params.n);
    for (uint32_t i = 0; i < f->p.nparams; i++)
        pp[i] = (uint8_t *)args + f->p.offset[i];
    mask = agile__window_size(win) - 1;
    base = agile__window_base(win);
    viol = r->viol_addr;
    pp[f->p.nparams] = &mask;
    pp[f->p.nparams + 1] = &base;
    pp[f->p.nparams + 2] = &viol;
    AGILE_TRY(worker_stream(r, cmd->tag, &st));
    if (l->shmem > 48u * 1024u && l->shmem > atomic_load(&f->dyn_smem)) {
        AGILE_TRY(agile__kfunc_set_dyn_smem(w->be, f->kfn, l->shmem));
        atomic_store(&f->dyn_smem, l->shmem);
    }
    const agile__launch_dims dims = {
        {l->grid_x, l->grid_y, l->grid_z}, {l->block_x, l->block_y, l->block_z}, l->shmem};
    AGILE_TRY(agile__launch(w->be, st, f->kfn, &dims, pp));
    if (f->mod->strict) r->viol_armed = true;
    rv = gpu_queue(r, cmd, st, true);
    if (rv == DP_QUEUED) {
        dp_pend *p = last_pend(r);
        uint64_t bit = 1ull << ((f->p.kernel_id - 1) % 64);
        atomic_fetch_add(&f->mod->refs, 1);
        p->mod = f->mod;
        p->kernel_id = f->p.kernel_id;
        p->fresh = !(atomic_load(&f->mod->ok_kernels) & bit);
        snprintf(p->what, sizeof p->what, "%.63s", f->name);
    }
out:
    agile__htab_rele(&w->objs, l->function);
    return rv;
}

static void host_fill(uint64_t d, uint32_t value, uint32_t es, uint64_t n)
{
    if (es == 1) {
        memset((void *)(uintptr_t)d, (int)value, n);
    } else if (es == 2) {
        uint16_t *p = (uint16_t *)(uintptr_t)d;
        for (uint64_t i = 0; i < n / 2; i++)
            p[i] = (uint16_t)value;
    } else {
        uint32_t *p = (uint32_t *)(uintptr_t)d;
        for (uint64_t i = 0; i < n / 4; i++)
            p[i] = value;
    }
}

/* host_fill with non-temporal stores where the CPU has them (x86-64: SSE2): a large memset
 * in steps keeps the bandwidth of one large memset (whose stores glibc makes non-temporal)
 * instead of reading every line it overwrites. fill_fence() before the op's completion. */
#if defined(__x86_64__)
#include <emmintrin.h>
static void host_fill_nt(uint64_t d, uint32_t value, uint32_t es, uint64_t n)
{
    uint32_t v = es == 1 ? value * 0x01010101u : es == 2 ? value * 0x00010001u : value;
    uint64_t head = AGILE_MIN((16 - (d & 15)) & 15, n); /* a multiple of es: d is es-aligned */
    uint64_t p = d + head, body = (n - head) & ~15ull;
    __m128i x = _mm_set1_epi32((int)v); /* every es-aligned address has the same phase */
    host_fill(d, value, es, head);
    for (uint64_t i = 0; i < body; i += 16)
        _mm_stream_si128((__m128i *)(uintptr_t)(p + i), x);
    host_fill(p + body, value, es, n - head - body);
}
static void fill_fence(void)
{
    _mm_sfence();
}
#else
#define host_fill_nt host_fill
static void fill_fence(void) {}
#endif

/* A host op too large to run at once: the dispatcher runs it in pieces (hostop_step). */
static void hostop_start(dp_ring *r, const agile__ring_cmd *cmd, uint64_t d, uint64_t s, uint64_t n,
                         uint32_t value, uint32_t es)
{
    dp_hostop *o = &r->op;
    memset(o, 0, sizeof *o);
    o->seq = cmd->seq;
    o->tag = cmd->tag;
    o->opcode = cmd->opcode;
    o->dst = d;
    o->src = s;
    o->n = n;
    o->value = value;
    o->es = es;
    o->backward = cmd->opcode == AGILE_RING_OP_MEMCPY && d > s && d < s + n;
    o->active = true;
}

static int exec_memcpy(dp_ring *r, const agile__ring_cmd *cmd)
{
    const struct agile__ring_rec_memcpy *m = &cmd->u.memcpy;
    uint64_t d = 0, s = 0;
    int rv = AGILE_OK;
    if (m->flags) return AGILE_EINVAL;
    AGILE_TRY(agile__dp_xlate(r, m->dst, m->bytes, &d));
    AGILE_TRY(agile__dp_xlate(r, m->src, m->bytes, &s));
    if (!m->bytes) return AGILE_OK;
    if (!agile__dp_caps(r->w).queued) {
        if (m->bytes <= DP_HOST_PIECE_MIN) {
            memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)s, m->bytes);
            return AGILE_OK;
        }
        hostop_start(r, cmd, d, s, m->bytes, 0, 1);
        return DP_QUEUED;
    }
    agile__stream *st = NULL;
    AGILE_TRY(worker_stream(r, cmd->tag, &st));
    AGILE_TRY(agile__stream_memcpy(r->w->be, st, d, s, m->bytes));
    rv = gpu_queue(r, cmd, st, false);
out:
    return rv;
}

static int exec_memset(dp_ring *r, const agile__ring_cmd *cmd)
{
    const struct agile__ring_rec_memset *m = &cmd->u.memset;
    uint32_t es = m->elem_size;
    uint64_t d = 0;
    int rv = AGILE_OK;
    if ((es != 1 && es != 2 && es != 4) || m->count > UINT64_MAX / es ||
        (es < 4 && m->value >> (8 * es)))
        return AGILE_EINVAL;
    uint64_t n = m->count * es;
    AGILE_TRY(agile__dp_xlate(r, m->dst, n, &d));
    if (!n) return AGILE_OK;
    if (d % es) return AGILE_EINVAL;
    if (!agile__dp_caps(r->w).queued) {
        if (n <= DP_HOST_PIECE_MIN) {
            host_fill(d, m->value, es, n);
            return AGILE_OK;
        }
        hostop_start(r, cmd, d, 0, n, m->value, es);
        return DP_QUEUED;
    }
    /* Streams fill bytes only: wider patterns must repeat one byte. */
    uint8_t b = (uint8_t)m->value;
    for (uint32_t i = 1; i < es; i++)
        if ((uint8_t)(m->value >> (8 * i)) != b) return AGILE_ENOTSUP;
    agile__stream *st = NULL;
    AGILE_TRY(worker_stream(r, cmd->tag, &st));
    AGILE_TRY(agile__stream_memset8(r->w->be, st, d, b, n));
    rv = gpu_queue(r, cmd, st, false);
out:
    return rv;
}

static bool host_wait_done(const dp_pend *p)
{
    uint32_t v = __atomic_load_n((const uint32_t *)(uintptr_t)p->addr, __ATOMIC_ACQUIRE);
    /* The GPU's cyclic comparison (CU_STREAM_WAIT_VALUE_GEQ): counters may wrap. */
    return p->cond == AGILE_WAIT_EQ ? v == p->val : (int32_t)(v - p->val) >= 0;
}

static int exec_sigwait(dp_ring *r, const agile__ring_cmd *cmd)
{
    bool wait = cmd->opcode == AGILE_RING_OP_WAIT;
    uint64_t counter = wait ? cmd->u.wait.counter : cmd->u.signal.counter;
    uint64_t value = wait ? cmd->u.wait.value : cmd->u.signal.value;
    uint64_t a = 0;
    int rv = AGILE_OK;
    if (value > UINT32_MAX || (counter & 3) ||
        (wait ? cmd->u.wait.cond > AGILE_WAIT_EQ : cmd->u.signal.flags != 0))
        return AGILE_EINVAL;
    AGILE_TRY(agile__dp_xlate(r, counter, 4, &a));
    agile__queue_caps qc = agile__dp_caps(r->w);
    if (!qc.queued) {
        if (!wait) {
            __atomic_store_n((uint32_t *)(uintptr_t)a, (uint32_t)value, __ATOMIC_RELEASE);
            return AGILE_OK;
        }
        dp_pend p = pend_of(cmd->seq, cmd->tag, cmd->opcode, P_HOSTWAIT);
        p.addr = a;
        p.val = (uint32_t)value;
        p.cond = cmd->u.wait.cond;
        if (!r->pcount && host_wait_done(&p)) return AGILE_OK;
        queue(r, &p);
        return DP_QUEUED;
    }
    agile__stream *st = NULL;
    if (!qc.values) return AGILE_ENOTSUP;
    AGILE_TRY(worker_stream(r, cmd->tag, &st));
    if (wait)
        AGILE_TRY(agile__stream_wait32(r->w->be, st, a, (uint32_t)value,
                                       cmd->u.wait.cond == AGILE_WAIT_EQ ? AGILE_STREAM_WAIT_EQ
                                                                         : AGILE_STREAM_WAIT_GEQ));
    else
        AGILE_TRY(agile__stream_write32(r->w->be, st, a, (uint32_t)value));
    rv = gpu_queue(r, cmd, st, false);
    if (rv == DP_QUEUED && !wait) { /* a reset writes it, so the client's stream goes on */
        last_pend(r)->addr = a;
        last_pend(r)->val = (uint32_t)value;
    }
out:
    return rv;
}

static int exec_mod_op(dp_ring *r, const agile__ring_cmd *cmd)
{
    const struct agile__ring_rec_mod_op *m = &cmd->u.mod_op;
    agile__stream *st = NULL;
    int rv = AGILE_OK;
    if (m->op > 0xffffu) return AGILE_EINVAL;
    if (agile__dp_caps(r->w).queued) AGILE_TRY(worker_stream(r, cmd->tag, &st));
    uint32_t op = AGILE_MOD_EXEC_OP(m->op, r->dev); /* the device of the op's addresses */
    rv = agile__worker_mod_exec(r->w, r->s, m->module, op, m->args.p, m->args.n,
                                st ? agile__stream_handle(st) : NULL);
    if (rv != AGILE_OK && st) {
        /* cuFFT says CUFFT_EXEC_FAILED or the like; the stream says whether the context died */
        int q = agile__stream_query(r->w->be, st);
        if (agile__backend_err_lost(q)) rv = agile__backend_err_note(q, "module op");
    }
    if (rv == AGILE_OK && st) /* ordered on the worker stream: complete with its event */
        rv = gpu_queue(r, cmd, st, false);
    if (rv == DP_QUEUED)
        snprintf(last_pend(r)->what, sizeof last_pend(r)->what, "module op %u", m->op);
out:
    return rv;
}

/* A command's cost in scheduling units (see DP_HOST_UNIT_BYTES). A large host op is
 * charged by its pieces as they run, so starting it costs one unit. */
static uint32_t cmd_cost(const dp_ring *r, const agile__ring_cmd *cmd)
{
    bool cuda = agile__dp_caps(r->w).queued;
    uint64_t bytes = 0;
    if (cmd->opcode == AGILE_RING_OP_MEMCPY)
        bytes = cmd->u.memcpy.bytes;
    else if (cmd->opcode == AGILE_RING_OP_MEMSET && cmd->u.memset.elem_size <= 4 &&
             cmd->u.memset.count <= UINT64_MAX / 4)
        bytes = cmd->u.memset.count * cmd->u.memset.elem_size;
    else if (cmd->opcode == AGILE_RING_OP_LAUNCH || cmd->opcode == AGILE_RING_OP_MOD_OP)
        return cuda ? DP_GPU_OP_COST : 1;
    if (!cuda) return bytes > DP_HOST_PIECE_MIN ? 1 : 1 + (uint32_t)(bytes / DP_HOST_UNIT_BYTES);
    return 1 + (uint32_t)AGILE_MIN(bytes / DP_GPU_UNIT_BYTES, (uint64_t)UINT32_MAX / 2);
}

/* Execute one command; returns its cost in scheduling units. */
uint32_t agile__dp_exec(dp_ring *r, const agile__ring_cmd *cmd)
{
    int rv;
    uint32_t cost = cmd_cost(r, cmd);
    switch (cmd->opcode) {
    case AGILE_RING_OP_NOP:
        finish(r, cmd, AGILE_OK, cmd->u.nop.cookie);
        return 1;
    case AGILE_RING_OP_BARRIER: {
        if (cmd->u.barrier.flags) {
            finish(r, cmd, AGILE_EINVAL, 0);
            return 1;
        }
        dp_pend p = pend_of(cmd->seq, cmd->tag, cmd->opcode, P_BARRIER);
        queue(r, &p); /* completes when everything before it has (drain) */
        return 1;
    }
    case AGILE_RING_OP_LAUNCH:
        rv = exec_launch(r, cmd);
        break;
    case AGILE_RING_OP_MEMCPY:
        rv = exec_memcpy(r, cmd);
        break;
    case AGILE_RING_OP_MEMSET:
        rv = exec_memset(r, cmd);
        break;
    case AGILE_RING_OP_SIGNAL:
    case AGILE_RING_OP_WAIT:
        rv = exec_sigwait(r, cmd);
        break;
    case AGILE_RING_OP_MOD_OP:
        rv = exec_mod_op(r, cmd);
        break;
    default:
        rv = AGILE_EINVAL;
        break;
    }
    /* GPU ops and host WAITs queued their completion, a large host op completes after its
     * last piece; everything else completes now. */
    if (rv != DP_QUEUED && agile__backend_err_lost(rv)) { /* the context died before it ran */
        agile__dp_fault_note(r, rv, cmd->opcode == AGILE_RING_OP_LAUNCH ? "launch" : "command");
        rv = AGILE_ERESET;
    }
    if (rv != DP_QUEUED) finish(r, cmd, rv, 0);
    return cost;
}

/* A strict kernel's first out-of-window access, read at a BARRIER (everything before the
 * barrier has completed). AGILE_EGUARD: tag = kernel << 32 | site, result = address. */
static int32_t check_violation(dp_ring *r, dp_pend *p)
{
    uint8_t rec[AGILE_GUARD_VIOL_SIZE];
    if (!r->viol_armed || !r->viol) return AGILE_OK;
    if (r->rw.err_status != AGILE_OK)
        return AGILE_OK; /* an earlier error goes first; the record waits for the next one */
    int rv = agile__backend_read(r->w->be, r->dev, rec, r->viol_addr, sizeof rec);
    if (rv != AGILE_OK) return agile__backend_err_note(rv, "reading the violation record");
    r->viol_armed = false;
    uint32_t kernel, site;
    uint64_t addr;
    memcpy(&kernel, rec, 4);
    memcpy(&site, rec + 4, 4);
    memcpy(&addr, rec + 8, 8);
    if (!kernel) return AGILE_OK;
    agile__backend_memset(r->w->be, r->dev, r->viol_addr, 0, sizeof rec);
    if (site == AGILE_GUARD_SITE_ASSERT || site == AGILE_GUARD_SITE_TRAP)
        agile__log(AGILE_LOG_WARN, (long)r->uid, "kernel %u: %s at PTX line %llu (thread ended)",
                   kernel, site == AGILE_GUARD_SITE_ASSERT ? "device assert failed" : "trap",
                   (unsigned long long)addr);
    else
        agile__log(AGILE_LOG_WARN, (long)r->uid,
                   "guard violation: kernel %u, site %u, address %#llx (skipped)", kernel, site,
                   (unsigned long long)addr);
    p->tag = (uint64_t)kernel << 32 | site;
    p->result = addr;
    return AGILE_EGUARD;
}

static void count_timelimit(dp_ring *r)
{
    pthread_mutex_lock(&r->w->mu);
    r->s->tenant->timelimit_exceeded++;
    pthread_mutex_unlock(&r->w->mu);
}

/* Post every completion whose work is done, in order. Returns whether any was posted. */
bool agile__dp_drain(dp_ring *r, uint64_t now)
{
    bool progress = false;
    while (r->pcount) {
        dp_pend *p = &r->pend[r->phead];
        if (!p->head_ns) p->head_ns = now;
        if (p->kind == P_EVENT) {
            int q = agile__event_query(r->w->be, p->ev);
            if (q == AGILE_EBUSY) {
                /* Timed from when the op reached the head of the queue, i.e. roughly when
                 * the GPU could start it. The policy's limit is for launches; copies, the
                 * stream-order WAIT/SIGNAL (which wait for the client's own stream) and
                 * module ops get at least DP_GPU_OP_NS and end as AGILE_ETIMEDOUT. */
                uint64_t lim = p->launch ? r->limit_ns : AGILE_MAX(r->limit_ns, DP_GPU_OP_NS);
                if (!lim || now - p->head_ns <= lim) break;
                if (p->launch) {
                    p->status = AGILE_ETIMELIMIT;
                    count_timelimit(r);
                } else {
                    p->status = AGILE_ETIMEDOUT;
                }
                agile__log(AGILE_LOG_WARN, (long)r->uid, "%s seq %llu exceeded %llu ms",
                           agile__ring_op_name(p->opcode), (unsigned long long)p->seq,
                           (unsigned long long)(lim / 1000000));
                agile__event_destroy(r->w->be, p->ev); /* released once it fires */
            } else if (agile__backend_err_lost(q)) {
                /* the context is lost: this and everything after it is recovery's to post */
                agile__dp_fault_note(r, agile__backend_err_note(q, "asynchronous error"), p->what);
                break;
            } else {
                if (q != AGILE_OK) p->status = agile__backend_err_note(q, "asynchronous error");
                if (q == AGILE_OK && p->mod) /* the kernel has run: not a first suspect */
                    atomic_fetch_or(&p->mod->ok_kernels, 1ull << ((p->kernel_id - 1) % 64));
                ev_put(r, p->ev);
            }
            p->ev = NULL;
        } else if (p->kind == P_HOSTWAIT) {
            if (!host_wait_done(p)) {
                uint64_t lim = r->limit_ns ? r->limit_ns : DP_HOST_WAIT_NS;
                if (now - p->head_ns <= lim) break;
                p->status = AGILE_ETIMEDOUT;
            }
        } else if (p->kind == P_BARRIER) {
            p->status = check_violation(r, p);
            if (agile__backend_err_lost(p->status)) {
                p->status = AGILE_OK;
                agile__dp_fault_note(r, agile__backend_err_kernel_fault(), "barrier");
                break;
            }
        }
        agile__dp_post(r, p);
        agile__dp_pend_retire(p);
        r->phead = (r->phead + 1) % r->pcap;
        r->pcount--;
        progress = true;
    }
    return progress;
}

/* Up to `piece` bytes of the ring's host op, in steps (multiples of 4, so of every element
 * size) of DP_HOST_STEP, more with many rings so that looking at them stays a small part
 * of a step, the whole piece when no other ring could want a turn; stops early when
 * agile__dp_interrupt() says so (*why). Completes the op after its last byte. Returns the bytes
 * done. */
uint64_t agile__dp_hostop_step(agile__dp *dp, dp_ring *r, uint64_t piece, int *why)
{
    dp_hostop *o = &r->op;
    uint64_t step = AGILE_MAX((uint64_t)DP_HOST_STEP, (uint64_t)dp->nsnap << 6), did = 0;
    piece = AGILE_MIN(piece, o->n - o->done);
    step = dp->nsnap > 1 ? AGILE_ALIGN_UP(step, 4) : piece;
    *why = DP_GO_ON;
    while (did < piece && *why == DP_GO_ON) {
        uint64_t k = AGILE_MIN(step, piece - did);
        uint64_t at = o->backward ? o->n - o->done - k : o->done;
        if (o->opcode == AGILE_RING_OP_MEMSET)
            host_fill_nt(o->dst + at, o->value, o->es, k);
        else /* steps in copy order never overwrite a source byte not yet copied */
            memmove((void *)(uintptr_t)(o->dst + at), (const void *)(uintptr_t)(o->src + at), k);
        o->done += k;
        did += k;
        *why = agile__dp_interrupt(dp, r);
    }
    if (o->done == o->n) {
        o->active = false;
        fill_fence(); /* the stores are visible before the completion is */
        finish_ids(r, o->seq, o->tag, o->opcode, AGILE_OK, 0);
    }
    return did;
}
