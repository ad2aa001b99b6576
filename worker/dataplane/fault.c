/* fault.c — fault containment of the data plane (dataplane.h, "Fault containment"). */
#include "dp.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../modules/fft/fft.h"
#include "twin.h"

/* ---- faults ------------------------------------------------------------------------------
 * A sticky error poisons the device's context for every tenant (dataplane.h). Recovery runs
 * on the dispatcher between passes: no ring is being served, so every queued completion can
 * be posted and every ring's streams replaced. */

/* A sticky error seen on ring r while running `what`: recovered after this pass. */
void agile__dp_fault_note(dp_ring *r, int32_t err, const char *what)
{
    agile__dp *dp = r->w->dp;
    if (!dp || dp->fault) return;
    dp->fault = true;
    dp->fault_dev = r->dev;
    dp->fault_err = err;
    dp->fault_uid = r->uid;
    snprintf(dp->fault_what, sizeof dp->fault_what, "%s", what && *what ? what : "unknown");
}

void agile__dp_faults_get(agile__worker *w, int dev, agile__dp_faults *out)
{
    agile__dp *dp = w->dp;
    memset(out, 0, sizeof *out);
    if (!dp || dev < 0 || dev >= AGILE_MAX_DEV) return;
    pthread_mutex_lock(&dp->mu);
    *out = dp->rec[dev];
    pthread_mutex_unlock(&dp->mu);
}

enum { DP_MAX_SUSPECTS = 16 };

static bool uid_in(const uint32_t *u, uint32_t n, uint32_t uid)
{
    for (uint32_t i = 0; i < n; i++)
        if (u[i] == uid) return true;
    return false;
}

/* Who faulted: the tenants with a launch in flight of a kernel that never completed (a
 * kernel that ran before faults only on other data: less likely), else every tenant with a
 * launch or module op in flight. The GPU does not say which stream faulted. */
static uint32_t suspects(dp_ring **rs, uint32_t n, uint32_t *out, char *what, size_t cap)
{
    uint32_t ns = 0;
    for (int pass = 0; pass < 2 && !ns; pass++) {
        for (uint32_t i = 0; i < n; i++) {
            dp_ring *r = rs[i];
            for (uint32_t k = 0; k < r->pcount; k++) {
                const dp_pend *p = &r->pend[(r->phead + k) % r->pcap];
                bool hit =
                    p->kind == P_EVENT && p->what[0] && (pass ? true : p->launch && p->fresh);
                if (!hit) continue;
                if (!ns) snprintf(what, cap, "%s", p->what);
                if (!uid_in(out, ns, r->uid) && ns < DP_MAX_SUSPECTS) out[ns++] = r->uid;
            }
        }
    }
    return ns;
}

/* End every session of the suspects (their rings are done already). */
static void kill_tenants(agile__worker *w, const uint32_t *uids, uint32_t n, const char *why)
{
    agile__session *victims[64];
    uint32_t nv = 0;
    pthread_mutex_lock(&w->mu);
    for (agile__session *s = w->sessions; s && nv < AGILE_ARRAY_LEN(victims); s = s->next) {
        if (s->state == SESS_DEAD || !uid_in(uids, n, s->uid)) continue;
        s->refs++;
        victims[nv++] = s;
    }
    pthread_mutex_unlock(&w->mu);
    for (uint32_t i = 0; i < nv; i++) {
        agile__session_kill(victims[i], why);
        agile__session_rele(victims[i]);
    }
}

/* The counter's worker address after a reset: the same offset in the window, whose base may
 * have moved (agile__backend_reset). */
static uint64_t xlate_again(dp_ring *r, uint64_t addr)
{
    agile__window *win = agile__twin_window(r->s, r->dev);
    if (!win) return addr;
    uint64_t W = agile__window_size(win);
    return agile__window_base(win) | (addr & (W - 1));
}

/* Post ring r's queued completions with `status` (earlier errors of their own stay), write
 * its SIGNAL counters in the fresh context and give it new streams. */
static void ring_recover(agile__dp *dp, dp_ring *r, int32_t status, uint32_t kernel_id)
{
    agile__worker *w = dp->w;
    bool entered = agile__backend_enter(w->be, r->dev) == AGILE_OK;
    while (r->pcount) {
        dp_pend *p = &r->pend[r->phead];
        if (p->kind == P_EVENT && p->addr && entered) {
            uint32_t v = p->val; /* worker address of the counter: its window came back */
            int wr = agile__backend_write(w->be, r->dev, xlate_again(r, p->addr), &v, 4);
            if (wr != AGILE_OK)
                agile__log(AGILE_LOG_ERROR, (long)r->uid,
                           "cannot write a stream-order counter after the reset (%s): the "
                           "client releases it itself",
                           agile__backend_err_name(wr));
        }
        if (p->status == AGILE_OK) p->status = p->kind == P_BARRIER ? AGILE_OK : status;
        if (status == AGILE_EFAULT && p->launch && p->fresh) p->tag = (uint64_t)kernel_id << 32;
        p->ev = NULL; /* went with the context */
        agile__dp_post(r, p);
        agile__dp_pend_retire(p);
        r->phead = (r->phead + 1) % r->pcap;
        r->pcount--;
    }
    r->nstreams = 0;
    r->nev = 0;
    r->viol_armed = false;
    r->viol_addr = agile__pmem_addr(r->viol); /* mapped again (contents lost) */
    if (r->viol && entered)
        agile__backend_memset(w->be, r->dev, r->viol_addr, 0, AGILE_GUARD_VIOL_SIZE);
    r->gen = agile__backend_generation(w->be, r->dev);
    if (entered) agile__backend_leave(w->be);
}

void agile__dp_recover(agile__dp *dp)
{
    agile__worker *w = dp->w;
    int dev = dp->fault_dev;
    uint64_t t0 = agile__now_ns(), reset_ns = 0;
    dp_ring **rs = NULL;
    uint32_t n = 0, cap = 0, sus[DP_MAX_SUSPECTS], nsus, victims = 0, kid = 0;
    char what[64] = "unknown", why[160];
    int rv;

    dp->fault = false;
    agile__backend_fault_take(w->be); /* this fault's, seen already */
    pthread_mutex_lock(&dp->mu);
    for (dp_ring *r = dp->rings; r; r = r->next)
        cap++;
    rs = calloc(cap ? cap : 1, sizeof(dp_ring *));
    for (dp_ring *r = dp->rings; rs && r; r = r->next) {
        if (r->dev != dev || r->gone) continue;
        r->busy = true; /* kept until recovered: a teardown waits */
        rs[n++] = r;
    }
    pthread_mutex_unlock(&dp->mu);
    nsus = suspects(rs, n, sus, what, sizeof what);
    if (!nsus) { /* nothing of a tenant's was running: whoever saw it is named, not ended */
        snprintf(what, sizeof what, "%s", dp->fault_what);
    }
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < rs[i]->pcount && !kid; k++) {
            const dp_pend *p = &rs[i]->pend[(rs[i]->phead + k) % rs[i]->pcap];
            if (p->launch && uid_in(sus, nsus, rs[i]->uid) && strcmp(p->what, what) == 0)
                kid = p->kernel_id;
        }
    agile__log(AGILE_LOG_ERROR, nsus ? (long)sus[0] : AGILE_NO_TENANT,
               "GPU %d: kernel %s faulted the context (%s)%s; %s", dev, what,
               agile__backend_err_name(dp->fault_err),
               nsus > 1 ? " with other tenants' kernels in flight" : "",
               nsus ? "ending the tenant's sessions and resetting the context"
                    : "no tenant kernel was in flight; resetting the context");
    snprintf(why, sizeof why, "its kernel %s faulted GPU %d", what, dev);
    for (uint32_t i = 0; i < n; i++) /* no more commands from the suspects */
        if (uid_in(sus, nsus, rs[i]->uid)) rs[i]->dead = true;
    rv = agile__backend_reset(w->be, dev, &reset_ns);
    agile__fft_cufft_ctx_reset();
    for (uint32_t i = 0; i < n; i++) {
        bool sus_i = uid_in(sus, nsus, rs[i]->uid);
        if (!sus_i && rs[i]->pcount) victims++;
        ring_recover(dp, rs[i], sus_i ? AGILE_EFAULT : AGILE_ERESET, kid);
    }
    kill_tenants(w, sus, nsus, why);
    uint64_t ns = agile__now_ns() - t0;
    pthread_mutex_lock(&dp->mu);
    for (uint32_t i = 0; i < n; i++)
        rs[i]->busy = false;
    pthread_cond_broadcast(&dp->cv);
    if (dev >= 0 && dev < AGILE_MAX_DEV) {
        agile__dp_faults *f = &dp->rec[dev];
        f->faults++;
        f->resets += rv == AGILE_OK;
        f->recovery_ns = ns;
        f->at_unix_ms = (uint64_t)time(NULL) * 1000u;
        f->uid = nsus ? sus[0] : UINT32_MAX;
        f->victims = victims;
        f->err = dp->fault_err;
        snprintf(f->kernel, sizeof f->kernel, "%s", what);
    }
    pthread_mutex_unlock(&dp->mu);
    free(rs);
    if (rv == AGILE_OK)
        agile__info("GPU %d: recovered in %.1f ms (context reset %.1f ms): %u rings on the "
                    "device, %u tenants' work in flight lost",
                    dev, (double)ns / 1e6, (double)reset_ns / 1e6, n, victims);
    else if (agile__backend_err_lost(rv)) {
        /* Measured on an H200 (driver 580.159.04): after a sticky error even a successful
         * cuDevicePrimaryCtxReset leaves cuDevicePrimaryCtxRetain and cuCtxCreate failing with
         * it: the process's CUDA state is lost ("the process must be terminated and
         * relaunched", cuda.h). Staying up would fail every lease for everyone: the worker
         * ends itself the way SIGTERM ends it; clients are released (AGILE_EWORKER) and the
         * next one to connect starts a fresh worker (a --shared worker's supervisor does). */
        agile__error("GPU %d: the driver keeps this process's CUDA state lost after the fault "
                     "(%s): the worker exits so that a fresh one can serve",
                     dev, agile__backend_err_name(rv));
        kill(getpid(), SIGTERM);
    } else {
        agile__error("GPU %d: the context reset failed (%s): the device is unusable", dev,
                     agile_strerror(rv));
    }
}

/* The driver wrapper saw a sticky error off the data plane (a lease, a blocking module
 * call): find the device whose context is dead. */
void agile__dp_fault_probe(agile__dp *dp)
{
    agile__worker *w = dp->w;
    if (!agile__backend_fault_take(w->be)) return;
    for (int d = 0; d < w->ndev && !dp->fault; d++) {
        int pr;
        if (agile__backend_enter(w->be, d) != AGILE_OK) continue;
        pr = agile__backend_probe(w->be);
        agile__backend_leave(w->be);
        if (agile__backend_err_lost(pr)) {
            dp->fault = true;
            dp->fault_dev = d;
            dp->fault_err = pr;
            dp->fault_uid = UINT32_MAX;
            snprintf(dp->fault_what, sizeof dp->fault_what, "work outside the data plane");
        }
    }
}
