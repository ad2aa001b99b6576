/* dispatch.c — the data plane's dispatcher thread: takes a snapshot of the rings, drains
 * completions, waits on the rings' doorbells (futex_waitv), serves tenants in deficit-round-
 * robin order by weight (ring/sched.h) and recovers from a fault between passes. */
#include "dp.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whether a host op in progress on ring `self` should pause for other work: DP_YIELD when
 * another tenant just got work (a ring with commands, its tenant idle in the scheduler: the
 * dispatch loop reads doorbells only between passes, so it is marked ready here; a tenant
 * already waiting for its turn gets it in DRR order), DP_NEXT_RING when another ring of the
 * same tenant has commands (the tenant's rings take turns), else DP_GO_ON. */
int agile__dp_interrupt(agile__dp *dp, const dp_ring *self)
{
    int why = DP_GO_ON;
    for (uint32_t k = 0; k < dp->nsnap && why != DP_YIELD; k++) {
        dp_ring *r = dp->snap[k];
        if (r == self || r->dead || r->closed || r->busy_pull == dp->npull ||
            !agile__ring_pending(&r->rw))
            continue;
        if (r->uid == self->uid)
            why = DP_NEXT_RING;
        else if (agile__sched_wake(&dp->sched, r->uid))
            why = DP_YIELD;
        else
            r->busy_pull = dp->npull; /* waiting already: no need to look again this pull */
    }
    return why;
}

/* The next piece of a host op: what is left of the allowance, so that a turn not cut short
 * uses its share; at least DP_HOST_PIECE_MIN, at most DP_HOST_PIECE_MAX (that much at once
 * when the ring is the only one: nobody waits, and large pieces set memory faster). */
static uint64_t piece_bytes(const agile__dp *dp, uint32_t left)
{
    uint64_t want = AGILE_MAX((uint64_t)left * DP_HOST_UNIT_BYTES, (uint64_t)DP_HOST_PIECE_MIN);
    return dp->nsnap > 1 ? AGILE_MIN(want, (uint64_t)DP_HOST_PIECE_MAX) : DP_HOST_PIECE_MAX;
}

/* The dispatcher's pass over one tenant: up to `allowance` units, one command (or one piece
 * of a large host op) per ring in turn so that a tenant's own clients share its turn fairly
 * too. The turn ends early when another tenant has work, after the piece in hand. */
static bool pull(void *arg, uint32_t tenant, uint32_t allowance, uint32_t *used)
{
    agile__dp *dp = arg;
    agile__ring_cmd *cmd = NULL;
    uint32_t n = dp->nsnap, start = dp->rr++;
    bool more = false, progress = true, yield = false;
    static _Thread_local agile__ring_cmd tl_cmd;
    cmd = &tl_cmd;
    *used = 0;
    dp->npull++;
    while (progress && !yield && *used < allowance && !dp->fault) {
        progress = false;
        for (uint32_t k = 0; k < n && !yield && *used < allowance; k++) {
            dp_ring *r = dp->snap[(start + k) % n];
            bool got = false;
            if (r->uid != tenant || r->dead || r->closed) continue;
            if (r->op.active) {
                int why;
                uint64_t b = agile__dp_hostop_step(dp, r, piece_bytes(dp, allowance - *used), &why);
                *used += (uint32_t)((b + DP_HOST_UNIT_BYTES - 1) / DP_HOST_UNIT_BYTES);
                progress = true;
                yield = why == DP_YIELD;
                if (why != DP_GO_ON && r->op.active)
                    atomic_fetch_add(&r->s->tenant->host_op_pauses, 1);
                continue;
            }
            /* A host WAIT holds back the ring's later commands (they are ordered after it). */
            if (r->pcount && r->pend[(r->phead + r->pcount - 1) % r->pcap].kind == P_HOSTWAIT)
                continue;
            if (agile__backend_enter(r->w->be, r->dev) != AGILE_OK) continue;
            int rv = agile__ring_next(&r->rw, cmd, &got);
            if (rv != AGILE_OK) {
                r->dead = true;
                agile__session_kill(r->s, "malformed command ring");
                pthread_mutex_lock(&r->w->mu);
                r->s->tenant->proto_errors++;
                pthread_mutex_unlock(&r->w->mu);
                atomic_fetch_add(&r->w->proto_errors, 1);
            } else if (got) {
                atomic_fetch_add(&r->s->tenant->ring_cmds, 1); /* metrics */
                *used += agile__dp_exec(r, cmd);
                progress = true;
            }
            agile__backend_leave(r->w->be);
        }
    }
    for (uint32_t k = 0; k < n && !more; k++) {
        dp_ring *r = dp->snap[k];
        more = r->uid == tenant && !r->dead && !r->closed &&
               (r->op.active ||
                (agile__ring_pending(&r->rw) &&
                 !(r->pcount && r->pend[(r->phead + r->pcount - 1) % r->pcap].kind == P_HOSTWAIT)));
    }
    return more;
}

static bool snapshot(agile__dp *dp)
{
    pthread_mutex_lock(&dp->mu);
    while (!dp->nrings && !atomic_load(&dp->stop))
        pthread_cond_wait(&dp->cv, &dp->mu);
    if (dp->nrings > dp->capsnap) {
        uint32_t cap = dp->nrings * 2;
        dp_ring **s = realloc(dp->snap, cap * sizeof(dp_ring *));
        if (s) dp->snap = s;
        agile__ring_worker **rw = realloc(dp->rws, cap * sizeof(agile__ring_worker *));
        if (rw) dp->rws = rw;
        int32_t *st = realloc(dp->st, cap * sizeof *st);
        if (st) dp->st = st;
        if (s && rw && st) dp->capsnap = cap;
    }
    dp->nsnap = 0;
    dp->nops = 0;
    for (dp_ring *r = dp->rings; r && dp->nsnap < dp->capsnap; r = r->next) {
        if (r->dead || r->closed)
            continue; /* nothing more to do for it; its session's teardown frees it */
        r->busy = true;
        dp->nops += r->op.active;
        dp->snap[dp->nsnap] = r;
        dp->rws[dp->nsnap++] = &r->rw;
    }
    pthread_mutex_unlock(&dp->mu);
    return !atomic_load(&dp->stop);
}

static void release(agile__dp *dp)
{
    pthread_mutex_lock(&dp->mu);
    for (uint32_t i = 0; i < dp->nsnap; i++)
        dp->snap[i]->busy = false;
    dp->nsnap = 0;
    pthread_cond_broadcast(&dp->cv);
    pthread_mutex_unlock(&dp->mu);
}

static bool drain_all(agile__dp *dp, bool *gpu_out)
{
    bool progress = false;
    uint64_t now = agile__now_ns();
    *gpu_out = false;
    for (uint32_t i = 0; i < dp->nsnap; i++) {
        dp_ring *r = dp->snap[i];
        if (!r->pcount || r->dead) continue;
        if (agile__backend_enter(r->w->be, r->dev) != AGILE_OK) continue;
        progress |= agile__dp_drain(r, now);
        agile__backend_leave(r->w->be);
        if (r->pcount)
            *gpu_out = true; /* GPU work or a host WAIT outstanding: poll, do not sleep long */
    }
    return progress;
}

void *agile__dp_main(void *arg)
{
    agile__dp *dp = arg;
    while (snapshot(dp)) {
        bool out_work, any = false;
        if (!dp->nsnap) { /* every ring is dead or closed: their sessions are going away */
            release(dp);
            usleep(DP_IDLE_WAIT_NS / 1000);
            continue;
        }
        uint64_t now = agile__now_ns();
        if (drain_all(dp, &out_work)) dp->last_progress_ns = now;
        int64_t timeout = DP_IDLE_WAIT_NS;
        if (out_work) timeout = now - dp->last_progress_ns < DP_GPU_SPIN_NS ? 0 : DP_GPU_NAP_NS;
        if (dp->nops) timeout = 0; /* host ops in progress: their tenants stay scheduled */
        /* Wait on the rings in groups the kernel's futex_waitv can take; only the first
         * group sleeps, the others are polled. */
        for (uint32_t i = 0; i < dp->nsnap; i += AGILE_RING_WAIT_ANY_MAX) {
            uint32_t k = AGILE_MIN(dp->nsnap - i, AGILE_RING_WAIT_ANY_MAX);
            if (agile__ring_wait_any(dp->rws + i, k, i ? 0 : timeout, dp->st + i) != AGILE_OK)
                continue;
            for (uint32_t j = i; j < i + k; j++) {
                dp_ring *r = dp->snap[j];
                if (r->dead || r->closed) continue;
                if (dp->st[j] == AGILE_OK) {
                    agile__sched_mark_ready(&dp->sched, r->uid);
                    any = true;
                } else if (dp->st[j] == AGILE_EPROTO) {
                    r->dead = true;
                    agile__session_kill(r->s, "malformed command ring");
                } else if (dp->st[j] == AGILE_ECLOSED) {
                    r->closed = true; /* the client left; its session goes with its sockets */
                }
            }
        }
        if ((any || dp->nops) && !dp->fault) {
            uint64_t done = 0;
            agile__sched_run(&dp->sched, pull, dp, DP_BUDGET, &done);
            if (done) dp->last_progress_ns = agile__now_ns();
            drain_all(dp, &out_work);
        }
        release(dp);
        agile__dp_fault_probe(dp);
        if (dp->fault) agile__dp_recover(dp);
    }
    release(dp);
    return NULL;
}
