/* module.c — the fft module: control ops (plan create/destroy, stats) and the data-plane
 * EXEC (and PLAN_DESTROY, ordered after the execs of the ring), with every client address
 * translated into and checked against the tenant's window.
 *
 * A tenant's plan is a handle (type PLAN, owner = tenant) on a cache entry: the handle holds
 * one cache reference, an exec holds the handle for its duration, so a plan can be neither
 * destroyed nor evicted under a running exec, and a stale or foreign handle is EHANDLE.
 * Served by the worker, the handles live in the worker's object table (env->objs), so its
 * per-session teardown releases a killed client's plans; standalone, in a table of our own. */
#include "fft.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_PLANS 256u
#define DEFAULT_MAX_WORK (4ull << 30)
#define MAX_HANDLES 65536u

typedef struct fft_mod {
    agile__fft_backend *be;
    agile__fft_cache cache;
    agile__htab own;
    agile__htab *plans; /* &own, or the worker's table */
} fft_mod;

typedef struct plan_obj {
    fft_mod *m;
    agile__fft_centry *e;
} plan_obj;

static void plan_obj_fini(void *obj)
{
    plan_obj *p = obj;
    agile__fft_cache_rele(&p->m->cache, p->e);
    free(p);
}

int agile__fft_module_open(agile__fft_backend *be, uint64_t max_entries, uint64_t max_work_bytes,
                           void **state)
{
    int rv = AGILE_OK, cache_ok = 0;
    fft_mod *m = calloc(1, sizeof *m);
    if (!m) return AGILE_ENOMEM;
    AGILE_TRY(agile__fft_cache_init(&m->cache, be, max_entries ? max_entries : DEFAULT_MAX_PLANS,
                                    max_work_bytes ? max_work_bytes : DEFAULT_MAX_WORK));
    cache_ok = 1;
    AGILE_TRY(agile__htab_init(&m->own, MAX_HANDLES));
    m->plans = &m->own;
    m->be = be;
    *state = m;
    m = NULL;
out:
    if (m) {
        if (cache_ok) agile__fft_cache_fini(&m->cache);
        free(m);
    }
    return rv;
}

agile__fft_cache *agile__fft_module_cache(void *state)
{
    return &((fft_mod *)state)->cache;
}

static int fft_init(const agile__module_env *env, void **state)
{
    agile__fft_backend *be = NULL;
    int rv = AGILE_OK;
    if (!env || env->abi != AGILE_MODULE_ABI) return AGILE_EVERSION;
    if (env->backend == AGILE_BACKEND_KIND_CUDA) {
        /* AGILE_CUFFT_LIBRARY: the worker's operator picks the cuFFT build (the worker's own
         * environment, never a client's message). */
        agile__fft_cufft_cfg cfg = {getenv("AGILE_CUFFT_LIBRARY"), env->alloc_protected,
                                    env->free_protected, env->ctx};
        AGILE_TRY(agile__fft_cufft_open(&cfg, &be));
    } else {
        AGILE_TRY(agile__fft_fftw_open(&be));
    }
    AGILE_TRY(agile__fft_module_open(be, 0, 0, state));
    be = NULL;
    if (env->objs) ((fft_mod *)*state)->plans = env->objs;
out:
    if (be) be->close(be);
    return rv;
}

static void fft_fini(void *state)
{
    fft_mod *m = state;
    if (!m) return;
    agile__htab_fini(&m->own); /* releases every tenant's plans (the worker's table: empty) */
    agile__fft_cache_fini(&m->cache);
    m->be->close(m->be);
    free(m);
}

static int ctl_plan_create(fft_mod *m, const agile__module_caller *who, const uint8_t *payload,
                           size_t len, agile__module_reply *rep)
{
    agile__fft_desc d;
    agile__fft_centry *e = NULL;
    plan_obj *po = NULL;
    uint64_t ib, ob, work, h;
    agile__wbuf w;
    int rv = AGILE_OK;

    if (!rep || rep->cap < 24) return AGILE_EINVAL;
    AGILE_TRY(agile__fft_desc_decode(payload, len, &d));
    AGILE_TRY(agile__fft_extent(&d, &ib, &ob));
    AGILE_TRY(agile__fft_cache_hold(&m->cache, &d, who->device, &e));
    po = malloc(sizeof *po);
    if (!po) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    po->m = m;
    po->e = e;
    work = m->be->work_size(agile__fft_centry_plan(e));
    AGILE_TRY(agile__htab_add(m->plans, AGILE_OBJ_PLAN, who->tenant, po, plan_obj_fini, &h));
    po = NULL; /* the table owns it and its cache reference now */
    e = NULL;
    w = (agile__wbuf){rep->payload, rep->cap, 0, 0};
    agile__put_u64(&w, ib);
    agile__put_u64(&w, ob);
    agile__put_u64(&w, work);
    rep->handle = h;
    rep->len = w.len;
out:
    free(po);
    if (e) agile__fft_cache_rele(&m->cache, e);
    return rv;
}

static int ctl_plan_destroy(fft_mod *m, const agile__module_caller *who, const uint8_t *payload,
                            size_t len)
{
    agile__rbuf r = {payload, len, 0, 0};
    uint64_t h = agile__get_u64(&r);
    if (r.bad || r.off != len) return AGILE_EINVAL;
    return agile__htab_remove(m->plans, h, AGILE_OBJ_PLAN, who->tenant);
}

static int ctl_stats(fft_mod *m, agile__module_reply *rep)
{
    agile__fft_cache_stats st;
    agile__wbuf w;
    if (!rep) return AGILE_EINVAL;
    agile__fft_cache_get_stats(&m->cache, &st);
    w = (agile__wbuf){rep->payload, rep->cap, 0, 0};
    agile__put_u64(&w, st.hits);
    agile__put_u64(&w, st.misses);
    agile__put_u64(&w, st.evictions);
    agile__put_u64(&w, st.create_failures);
    agile__put_u64(&w, st.entries);
    agile__put_u64(&w, st.in_use);
    agile__put_u64(&w, st.work_bytes);
    agile__put_u64(&w, st.max_entries);
    agile__put_u64(&w, st.max_work_bytes);
    if (w.overflow) return AGILE_ETOOBIG;
    rep->handle = 0;
    rep->len = w.len;
    return AGILE_OK;
}

static int fft_ctl(void *state, const agile__module_caller *who, uint32_t op,
                   const uint8_t *payload, size_t len, agile__module_reply *rep)
{
    fft_mod *m = state;
    if (!m || !who || (!payload && len)) return AGILE_EINVAL;
    switch (op) {
    case AGILE_FFT_OP_PLAN_CREATE:
        return ctl_plan_create(m, who, payload, len, rep);
    case AGILE_FFT_OP_PLAN_DESTROY:
        return ctl_plan_destroy(m, who, payload, len);
    case AGILE_FFT_OP_STATS:
        return ctl_stats(m, rep);
    default:
        return AGILE_ENOTSUP;
    }
}

static int fft_exec(void *state, const agile__module_caller *who, uint32_t op, const uint8_t *args,
                    size_t len)
{
    fft_mod *m = state;
    agile__fft_exec_args a;
    plan_obj *po = NULL;
    const agile__fft_desc *d;
    agile__fft_side in_side, out_side;
    agile__fft_env env;
    uint64_t W, base, in, out;
    int rv = AGILE_OK;

    if (!m || !who) return AGILE_ENOTSUP;
    /* On the ring, a destroy runs after every exec the client posted before it. */
    if (op == AGILE_FFT_DOP_PLAN_DESTROY) return ctl_plan_destroy(m, who, args, len);
    if (op != AGILE_FFT_OP_EXEC) return AGILE_ENOTSUP;
    W = who->win.size;
    base = who->win.worker_base;
    /* The window comes from the worker, not the client; a malformed one is a worker bug. */
    if (W < 16 || (W & (W - 1)) || (base & (W - 1))) return AGILE_EINTERNAL;
    AGILE_TRY(agile__fft_exec_args_decode(args, len, &a));
    AGILE_TRY(agile__htab_hold(m->plans, a.plan, AGILE_OBJ_PLAN, who->tenant, (void **)&po));
    if (agile__fft_centry_device(po->e) != who->device) {
        rv = AGILE_EINVAL;
        goto out;
    }
    d = agile__fft_centry_desc(po->e);
    /* Translation is containment: the start lands in the window whatever the client sent;
     * the extent check below keeps the end there too. */
    in = (a.in & (W - 1)) | base;
    out = (a.out & (W - 1)) | base;
    agile__fft_sides(d, &in_side, &out_side);
    if ((in % in_side.elem) || (out % out_side.elem)) {
        rv = AGILE_EINVAL; /* cuFFT needs element alignment; keep both backends alike */
        goto out;
    }
    if (agile__fft_type_is_c2c(d->type) && a.direction != AGILE_FFT_FORWARD &&
        a.direction != AGILE_FFT_INVERSE) {
        rv = AGILE_EINVAL;
        goto out;
    }
    AGILE_TRY(agile__fft_check_bounds(d, in, out, base, W));
    env.tenant = who->tenant;
    env.device = who->device;
    env.stream = who->stream;
    rv = m->be->exec(m->be, agile__fft_centry_plan(po->e), &env, (void *)(uintptr_t)in,
                     (void *)(uintptr_t)out, a.direction);
out:
    if (po) agile__htab_rele(m->plans, a.plan);
    return rv;
}

static void fft_tenant_gone(void *state, uint32_t tenant)
{
    fft_mod *m = state;
    /* In the worker's table the worker has already freed the session's objects, and
     * remove_owner there would take its non-plan objects too. */
    if (m->plans == &m->own) agile__htab_remove_owner(m->plans, tenant);
    m->be->release_tenant(m->be, tenant);
}

const agile__module_ops agile__fft_module = {
    .name = "fft",
    .abi = AGILE_MODULE_ABI,
    .abi_size = sizeof(agile__module_ops),
    .version = 1,
    .init = fft_init,
    .fini = fft_fini,
    .ctl = fft_ctl,
    .exec = fft_exec,
    .tenant_gone = fft_tenant_gone,
};
