/* modules.c — the worker's module registry and the MOD_CTL handler (see modules.h). */
#include "modules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../modules/fft/fft.h"
#include "../modules/module.h"
#include "twin.h"
#include "worker.h"

typedef struct agile__modules agile__modules;

/* Modules with an ops table, by id (AGILE_MODULE_ID_LIST, agile/defs.h); "guard" is
 * served by the data plane's MODULE_LOAD, not through this table. */
#define MODOPS_FFT (&agile__fft_module)
#define MODOPS_GUARD NULL
#define NMOD 32
#define REPLY_CAP 4096

typedef struct mod_slot {
    const char *name;
    const agile__module_ops *ops;
    void *state;   /* NULL: unavailable */
    char why[160]; /* why it is unavailable */
} mod_slot;

struct agile__modules {
    mod_slot m[NMOD];
    agile__module_env env;
    /* Module calls hold it shared; a session's teardown takes it exclusively, so no call of
     * that session is in flight when the modules drop its state (see session_gone). */
    pthread_rwlock_t calls;
    pthread_mutex_t stream_mu;
    agile__stream *ctl_stream[AGILE_MAX_DEV]; /* MOD_CTL execs, made on first use */
    unsigned ctl_gen[AGILE_MAX_DEV];          /* the backend generation it was made in */
};

/* Protected memory handed to a module: the tenant it is counted in travels with it (the
 * session may be gone by the time the module frees it; tenants live until worker fini). */
typedef struct prot_rec {
    agile__pmem *p;
    agile__tenant *t;
    uint64_t size;
} prot_rec;

static int prot_alloc(void *ctx, uint32_t tenant, int device, uint64_t size, uint64_t *addr,
                      void **handle)
{
    agile__worker *w = ctx;
    agile__tenant *t = NULL;
    prot_rec *r;
    int rv;

    if (device < 0 || device >= w->ndev || !size || !addr || !handle) return AGILE_EINVAL;
    pthread_mutex_lock(&w->mu);
    for (agile__session *s = w->sessions; s; s = s->next)
        if (s->id == tenant && s->state != SESS_DEAD) t = s->tenant;
    pthread_mutex_unlock(&w->mu);
    if (!t) return AGILE_ECLOSED; /* nobody to account it to: the session is going away */
    if (!(r = calloc(1, sizeof *r))) return AGILE_ENOMEM;
    if ((rv = agile__pmem_alloc(w->be, device, size, &r->p, addr)) != AGILE_OK) {
        free(r);
        return rv;
    }
    r->t = t;
    r->size = size;
    pthread_mutex_lock(&w->mu);
    t->protected_bytes += size;
    pthread_mutex_unlock(&w->mu);
    *handle = r;
    return AGILE_OK;
}

static void prot_free(void *ctx, uint32_t tenant, int device, void *handle, uint64_t addr,
                      uint64_t size)
{
    agile__worker *w = ctx;
    prot_rec *r = handle;
    if (!r) return;
    agile__pmem_free(r->p);
    pthread_mutex_lock(&w->mu);
    r->t->protected_bytes -= r->size;
    pthread_mutex_unlock(&w->mu);
    free(r);
}

/* Whether module ops run queued on streams (backend.h), so a MOD_CTL exec waits for its own. */
static bool queued(agile__worker *w)
{
    agile__queue_caps c;
    agile__backend_queue_caps(w->be, &c);
    return c.queued;
}

int agile__worker_modules_init(agile__worker *w)
{
    agile__modules *ms = calloc(1, sizeof *ms);
    if (!ms) return AGILE_ENOMEM;
    pthread_rwlock_init(&ms->calls, NULL);
    pthread_mutex_init(&ms->stream_mu, NULL);
    ms->env.abi = AGILE_MODULE_ABI;
    ms->env.backend = agile__backend_kind(w->be);
    ms->env.alloc_protected = prot_alloc;
    ms->env.free_protected = prot_free;
    ms->env.ctx = w;
    ms->env.config = NULL;
    ms->env.objs = &w->objs;
#define X(NAME, id, str) ms->m[id].name = str, ms->m[id].ops = MODOPS_##NAME;
    AGILE_MODULE_ID_LIST(X)
#undef X
    for (int i = 0; i < NMOD; i++) {
        mod_slot *m = &ms->m[i];
        int rv, entered = 0;
        if (!m->ops) continue;
        if (m->ops->abi != AGILE_MODULE_ABI || m->ops->abi_size < sizeof(agile__module_ops)) {
            snprintf(m->why, sizeof m->why, "built for module ABI %u (size %u), worker has %u",
                     m->ops->abi, m->ops->abi_size, AGILE_MODULE_ABI);
            agile__warn("module %s unavailable: %s", m->name, m->why);
            continue;
        }
        /* Modules set up their library in device 0's context (cuFFT loads there). */
        if (w->ndev > 0 && agile__backend_enter(w->be, 0) == AGILE_OK) entered = 1;
        rv = m->ops->init(&ms->env, &m->state);
        if (entered) agile__backend_leave(w->be);
        if (rv != AGILE_OK) {
            m->state = NULL;
            snprintf(m->why, sizeof m->why, "init failed: %s", agile_strerror(rv));
            agile__warn("module %s unavailable: %s", m->name, m->why);
            continue;
        }
        agile__info("module %s %u ready", m->name, m->ops->version);
    }
    w->mods = ms;
    return AGILE_OK;
}

void agile__worker_modules_fini(agile__worker *w)
{
    agile__modules *ms = w->mods;
    int entered = 0;
    if (!ms) return;
    if (w->ndev > 0 && agile__backend_enter(w->be, 0) == AGILE_OK) entered = 1;
    for (int i = 0; i < NMOD; i++)
        if (ms->m[i].state) ms->m[i].ops->fini(ms->m[i].state);
    if (entered) agile__backend_leave(w->be);
    for (int d = 0; d < AGILE_MAX_DEV; d++) {
        if (ms->ctl_stream[d] && ms->ctl_gen[d] == agile__backend_generation(w->be, d) &&
            agile__backend_enter(w->be, d) == AGILE_OK) {
            agile__stream_destroy(w->be, ms->ctl_stream[d]);
            agile__backend_leave(w->be);
        }
    }
    pthread_rwlock_destroy(&ms->calls);
    pthread_mutex_destroy(&ms->stream_mu);
    free(ms);
    w->mods = NULL;
}

void agile__worker_modules_session_gone(agile__worker *w, agile__session *s)
{
    agile__modules *ms = w->mods;
    int entered = 0;
    if (!ms) return;
    pthread_rwlock_wrlock(&ms->calls);
    /* A call that found the session alive just before it died may have added objects
     * after the reaper's sweep; every such call has finished now, and later ones see the
     * session dead. */
    agile__htab_remove_owner(&w->objs, s->id);
    if (w->ndev > 0 && agile__backend_enter(w->be, 0) == AGILE_OK) entered = 1;
    for (int i = 0; i < NMOD; i++)
        if (ms->m[i].state) ms->m[i].ops->tenant_gone(ms->m[i].state, s->id);
    if (entered) agile__backend_leave(w->be);
    pthread_rwlock_unlock(&ms->calls);
}

/* Resolve and authorise a module for s. */
static int lookup(agile__worker *w, agile__session *s, uint32_t module, mod_slot **out, char *err,
                  size_t errcap)
{
    agile__modules *ms = w->mods;
    uint32_t allowed;
    mod_slot *m;
    if (!ms || module >= NMOD || !ms->m[module].ops) {
        snprintf(err, errcap, "no module %u in this worker", module);
        return AGILE_ENOTSUP;
    }
    m = &ms->m[module];
    pthread_mutex_lock(&w->mu);
    allowed = s->tenant->pol.modules;
    pthread_mutex_unlock(&w->mu);
    if (!(allowed & AGILE_MODULE_BIT(module))) {
        snprintf(err, errcap,
                 "tenant %u may not use module %s: not in its policy's \"modules\" list", s->uid,
                 m->name);
        return AGILE_EPERM;
    }
    if (!m->state) {
        snprintf(err, errcap, "module %s is unavailable in this worker: %s", m->name, m->why);
        return AGILE_ENODEV;
    }
    *out = m;
    return AGILE_OK;
}

/* Enter a module call for s: shared hold on the teardown lock, session still alive. */
static int call_begin(agile__worker *w, agile__session *s)
{
    int dead;
    pthread_rwlock_rdlock(&w->mods->calls);
    pthread_mutex_lock(&w->mu);
    dead = s->state == SESS_DEAD;
    pthread_mutex_unlock(&w->mu);
    if (dead) {
        pthread_rwlock_unlock(&w->mods->calls);
        return AGILE_ECLOSED;
    }
    return AGILE_OK;
}

static void call_end(agile__worker *w)
{
    pthread_rwlock_unlock(&w->mods->calls);
}

static void caller_of(agile__session *s, int dev, void *stream, agile__module_caller *who)
{
    memset(who, 0, sizeof *who);
    who->tenant = s->id;
    who->device = dev;
    who->stream = stream;
    agile__window *win = agile__twin_window(s, dev);
    if (win) {
        who->win.worker_base = agile__window_base(win);
        who->win.size = agile__window_size(win);
    }
}

static int exec_locked(agile__worker *w, agile__session *s, mod_slot *m, uint32_t op, int dev,
                       const void *args, size_t len, void *stream)
{
    agile__module_caller who;
    int rv;
    caller_of(s, dev, stream, &who);
    if (!who.win.size) return AGILE_EBOUNDS; /* no memory on this device: no address can be valid */
    AGILE_TRY(agile__backend_enter(w->be, dev));
    rv = m->ops->exec(m->state, &who, op, args, len);
    agile__backend_leave(w->be);
    if (rv == AGILE_OK && m - w->mods->m < AGILE_MODULE_COUNTED) /* metrics */
        atomic_fetch_add(&s->tenant->module_ops[m - w->mods->m], 1);
out:
    return rv;
}

int agile__worker_mod_exec(agile__worker *w, agile__session *s, uint32_t module, uint32_t op,
                           const void *args, size_t len, void *stream)
{
    char err[256];
    mod_slot *m = NULL;
    int dev = (int)((op >> 16) & 0xffu), rv = AGILE_OK;
    if (!w || !s || (!args && len)) return AGILE_EINVAL;
    if (dev >= w->ndev) return AGILE_EINVAL;
    AGILE_TRY(lookup(w, s, module, &m, err, sizeof err));
    AGILE_TRY(call_begin(w, s));
    rv = exec_locked(w, s, m, op & 0xffffu, dev, args, len, stream);
    call_end(w);
out:
    return rv;
}

static int ctl_stream(agile__worker *w, int dev, agile__stream **out)
{
    agile__modules *ms = w->mods;
    int rv = AGILE_OK;
    pthread_mutex_lock(&ms->stream_mu);
    if (ms->ctl_gen[dev] != agile__backend_generation(w->be, dev))
        ms->ctl_stream[dev] = NULL; /* went with a context that was reset */
    if (!ms->ctl_stream[dev]) {
        AGILE_TRY(agile__backend_enter(w->be, dev));
        ms->ctl_gen[dev] = agile__backend_generation(w->be, dev);
        rv = agile__stream_create(w->be, &ms->ctl_stream[dev]);
        agile__backend_leave(w->be);
        if (rv != AGILE_OK) {
            ms->ctl_stream[dev] = NULL;
            goto out;
        }
    }
    *out = ms->ctl_stream[dev];
out:
    pthread_mutex_unlock(&ms->stream_mu);
    return rv;
}

/* A data-plane op over the control plane: run it on the device's module stream and wait. */
static int ctl_exec(agile__worker *w, agile__session *s, mod_slot *m, uint32_t op, int dev,
                    const void *args, size_t len)
{
    agile__stream *st = NULL;
    int rv = AGILE_OK;
    if (queued(w)) AGILE_TRY(ctl_stream(w, dev, &st));
    AGILE_TRY(exec_locked(w, s, m, op, dev, args, len, st ? agile__stream_handle(st) : NULL));
    if (st) {
        AGILE_TRY(agile__backend_enter(w->be, dev));
        rv = agile__stream_sync(w->be, st);
        agile__backend_leave(w->be);
        if (rv != AGILE_OK) rv = agile__backend_err_note(rv, "cuStreamSynchronize (module exec)");
    }
out:
    return rv;
}

static const char *why_of(int rv)
{
    switch (rv) {
    case AGILE_EBOUNDS:
        return "an address range lies outside the tenant's window on this GPU (pointers must come "
               "from agile_malloc, and the plan's extents must fit the buffers)";
    case AGILE_EHANDLE:
        return "not a live plan of this session";
    default:
        return agile_strerror(rv);
    }
}

int agile__worker_mod_ctl(agile__worker *w, agile__session *s, const agile__msg *req,
                          agile__msg *rep, char *err, size_t errcap)
{
    static _Thread_local uint8_t payload[REPLY_CAP];
    const struct agile__rec_mod_ctl_req *q = &req->u.mod_ctl_req;
    struct agile__rec_mod_ctl_rep *r = &rep->u.mod_ctl_rep;
    agile__module_reply mr = {0, payload, sizeof payload, 0};
    agile__module_caller who;
    mod_slot *m = NULL;
    int rv = AGILE_OK, began = 0, dev = (int)q->device;

    AGILE_TRY(lookup(w, s, q->module, &m, err, errcap));
    if (q->device >= (uint32_t)w->ndev) {
        snprintf(err, errcap, "device %u does not exist (worker has %d)", q->device, w->ndev);
        rv = AGILE_EINVAL;
        goto out;
    }
    AGILE_TRY(call_begin(w, s));
    began = 1;
    if (q->op & AGILE_MODULE_CTL_EXEC) {
        uint32_t op = q->op & ~AGILE_MODULE_CTL_EXEC;
        if (op > 0xffffu) {
            rv = AGILE_ENOTSUP;
        } else {
            rv = ctl_exec(w, s, m, op, dev, q->payload.p, q->payload.n);
        }
        if (rv != AGILE_OK) {
            snprintf(err, errcap, "%s op %u on GPU %d: %s", m->name, op, dev, why_of(rv));
            goto out;
        }
        r->handle = 0;
        r->payload = agile__blob_of(payload, 0);
        goto out;
    }
    caller_of(s, dev, NULL, &who);
    AGILE_TRY(agile__backend_enter(w->be, dev));
    rv = m->ops->ctl(m->state, &who, q->op, q->payload.p, q->payload.n, &mr);
    agile__backend_leave(w->be);
    if (rv != AGILE_OK) {
        snprintf(err, errcap, "%s ctl op %u: %s", m->name, q->op, why_of(rv));
        goto out;
    }
    if (mr.len > mr.cap) {
        rv = AGILE_EINTERNAL;
        goto out;
    }
    r->handle = mr.handle;
    r->payload = agile__blob_of(payload, mr.len);
out:
    if (began) call_end(w);
    return rv;
}
