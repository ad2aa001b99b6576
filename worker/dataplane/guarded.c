/* guarded.c — the guarded-module service of the data plane: MODULE_LOAD (guard, verify and
 * compile in a child process, guardproc.h; load the image on the device), MODULE_UNLOAD,
 * MODULE_FUNCTION (the kernel's parameter layout from the guard, agile_guard_entry_params),
 * and kernels made again after a context reset. Module objects live in w->objs; a launch in
 * flight holds a reference to its module. */
#include "dp.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guardproc.h"

void agile__dp_module_rele(dp_module *m)
{
    if (atomic_fetch_sub(&m->refs, 1) != 1) return;
    /* a module of a context that was reset went with it */
    if (m->kmod && agile__backend_enter(m->w->be, m->dev) == AGILE_OK) {
        if (m->gen == agile__backend_generation(m->w->be, m->dev))
            agile__kmodule_unload(m->w->be, m->kmod);
        agile__backend_leave(m->w->be);
    }
    pthread_mutex_destroy(&m->mu);
    free(m->image);
    free(m->ptx);
    free(m);
}

static void module_fini(void *obj)
{
    agile__dp_module_rele(obj);
}

static void function_fini(void *obj)
{
    dp_function *f = obj;
    agile__dp_module_rele(f->mod);
    free(f);
}

/* The test-only route of AGILE_MODULE_LOAD_TEST_UNGUARDED: the worker's environment names
 * the one uid that may load PTX without the guard (fault-containment tests need a kernel
 * that faults). Nothing in a configuration file can turn it on. */
static bool test_unguarded(uint32_t uid)
{
    const char *e = getenv("AGILE_TEST_UNGUARDED_UID");
    char *end;
    unsigned long v;
    if (!e || !*e) return false;
    v = strtoul(e, &end, 10);
    return !*end && v == uid;
}

static _Thread_local char tl_log[1024];
static _Thread_local uint8_t tl_sizes[AGILE_GUARD_MAX_PARAMS * 8];

static int cache_dir(agile__worker *w, char *out, size_t cap)
{
    const char *e = getenv("AGILE_GUARD_CACHE");
    if (e && *e)
        snprintf(out, cap, "%s", e);
    else
        snprintf(out, cap, "%s/guard-cache", w->dir[0] ? w->dir : "/tmp");
    if (mkdir(out, 0700) != 0 && access(out, W_OK) != 0) return AGILE_ENOENT;
    return AGILE_OK;
}

int agile__dp_module_load(agile__worker *w, agile__session *s, const agile__msg *req,
                          agile__msg *rep, char *err, size_t errcap)
{
    const struct agile__rec_module_load_req *q = &req->u.module_load_req;
    agile__guard_job gj;
    dp_module *m = NULL;
    uint32_t allowed;
    int rv = AGILE_OK;

    memset(&gj, 0, sizeof gj);
    if ((int)q->device >= w->ndev || q->device >= AGILE_MAX_DEV)
        return agile__dp_efail(err, errcap, AGILE_EINVAL, "device %u does not exist", q->device);
    if (q->flags & ~(AGILE_MODULE_LOAD_STRICT | AGILE_MODULE_LOAD_TEST_UNGUARDED))
        return agile__dp_efail(err, errcap, AGILE_EINVAL, "unknown MODULE_LOAD flags %#x",
                               q->flags);
    bool raw = (q->flags & AGILE_MODULE_LOAD_TEST_UNGUARDED) != 0;
    if (raw && !test_unguarded(s->uid))
        return agile__dp_efail(
            err, errcap, AGILE_EPERM,
            "unguarded PTX is a test-only route: the worker's environment does not "
            "have AGILE_TEST_UNGUARDED_UID=%u",
            s->uid);
    pthread_mutex_lock(&w->mu);
    allowed = s->tenant->pol.modules;
    pthread_mutex_unlock(&w->mu);
    if (!(allowed & AGILE_MODULE_BIT(AGILE_MODULE_ID_GUARD)))
        return agile__dp_efail(err, errcap, AGILE_EPERM,
                               "tenant %u may not load PTX (module 'guard' "
                               "not allowed by policy)",
                               s->uid);
    if (q->ptx.n == 0) return agile__dp_efail(err, errcap, AGILE_EINVAL, "empty PTX");

    /* Guard, verify and (cuda) compile in a child process: guardproc.h says why. */
    char dir[PATH_MAX], arch[24];
    gj.ptx = (const char *)q->ptx.p;
    gj.len = q->ptx.n;
    gj.strict = !raw && (q->flags & AGILE_MODULE_LOAD_STRICT) != 0;
    gj.raw = raw;
    gj.guard_gap = AGILE_GUARD_GAP;
    gj.nice = geteuid() == 0; /* a --shared worker: one uid's loads below everyone's requests */
    if (agile__dp_caps(w).kernels) {
        snprintf(arch, sizeof arch, "sm_%d%d", w->dev[q->device].cc_major,
                 w->dev[q->device].cc_minor);
        gj.arch = arch;
        gj.cache_dir = cache_dir(w, dir, sizeof dir) == AGILE_OK ? dir : NULL;
    }
    rv = agile__guard_job_run(&gj);
    if (rv != AGILE_OK) {
        switch (gj.stage) {
        case AGILE_GJ_GUARD:
            if (rv == AGILE_EREJECT)
                agile__dp_efail(err, errcap, rv, "%s", gj.msg);
            else
                agile__dp_efail(err, errcap, rv, "guard failed: %s", agile_strerror(rv));
            break;
        case AGILE_GJ_VERIFY:
            agile__log(AGILE_LOG_ERROR, (long)s->uid, "guard output failed verification: %s",
                       gj.msg);
            rv = agile__dp_efail(err, errcap, AGILE_EREJECT, "guarded PTX failed verification: %s",
                                 gj.msg);
            break;
        case AGILE_GJ_COMPILE:
            agile__dp_efail(err, errcap, rv, "compiling the guarded PTX failed: %s", gj.msg);
            break;
        default:
            agile__log(AGILE_LOG_ERROR, (long)s->uid, "module load: %s", gj.msg);
            agile__dp_efail(err, errcap, rv, "%s", gj.msg);
        }
        goto out;
    }
    if (!(m = calloc(1, sizeof *m)) || !(m->ptx = malloc(q->ptx.n + 1))) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    memcpy(m->ptx, q->ptx.p, q->ptx.n);
    m->ptx[q->ptx.n] = 0;
    m->ptx_len = q->ptx.n;
    if (raw) /* the test-only route: what runs is the tenant's PTX itself */
        agile__log(AGILE_LOG_WARN, (long)s->uid,
                   "loading UNGUARDED PTX (AGILE_TEST_UNGUARDED_UID)");
    m->w = w;
    m->dev = (int)q->device;
    m->strict = gj.strict || gj.record; /* the entries take the violation record */
    atomic_init(&m->refs, 1);
    pthread_mutex_init(&m->mu, NULL);
    if (agile__dp_caps(w).kernels) {
        snprintf(tl_log, sizeof tl_log, "%s", gj.msg);
        AGILE_TRY(agile__backend_enter(w->be, m->dev));
        m->gen = agile__backend_generation(w->be, m->dev);
        rv = agile__kmodule_load(w->be, gj.image, &m->kmod);
        agile__backend_leave(w->be);
        m->image = gj.image; /* kept: a context reset loads it again */
        gj.image = NULL;
        if (rv != AGILE_OK) {
            m->kmod = NULL;
            agile__dp_efail(err, errcap, rv, "cuModuleLoadData: %s", agile__backend_err_name(rv));
            goto out;
        }
    } else {
        snprintf(tl_log, sizeof tl_log,
                 "host backend: guarded and verified, not compiled "
                 "(launches give AGILE_ENOTSUP)");
    }
    AGILE_TRY(agile__htab_add(&w->objs, AGILE_OBJ_MODULE, s->id, m, module_fini,
                              &rep->u.module_load_rep.handle));
    m = NULL;
    rep->u.module_load_rep.log = agile__blob_of(tl_log, strlen(tl_log));
    atomic_fetch_add(&s->tenant->module_loads, 1); /* metrics */
    atomic_fetch_add(&s->tenant->guard_sites, gj.nsites);
    agile__log(AGILE_LOG_DEBUG, (long)s->uid, "module loaded: %u sites, %s%s", gj.nsites,
               gj.strict ? "strict" : "mask", gj.hit ? ", image from the cache" : "");
out:
    if (m) agile__dp_module_rele(m);
    agile__guard_job_fini(&gj);
    return rv;
}

int agile__dp_module_unload(agile__worker *w, agile__session *s, const agile__msg *req,
                            agile__msg *rep, char *err, size_t errcap)
{
    (void)rep;
    int rv = agile__htab_remove(&w->objs, req->u.handle.handle, AGILE_OBJ_MODULE, s->id);
    if (rv) return agile__dp_efail(err, errcap, rv, "not a module of this session");
    return AGILE_OK;
}

int agile__dp_module_function(agile__worker *w, agile__session *s, const agile__msg *req,
                              agile__msg *rep, char *err, size_t errcap)
{
    const struct agile__rec_module_function_req *q = &req->u.module_function_req;
    dp_module *m = NULL;
    dp_function *f = NULL;
    char name[256];
    int rv = AGILE_OK, held = 0;

    if (agile__blob_str(q->name, name, sizeof name) != AGILE_OK || !name[0])
        return agile__dp_efail(err, errcap, AGILE_EINVAL, "bad kernel name");
    if ((rv = agile__htab_hold(&w->objs, q->module, AGILE_OBJ_MODULE, s->id, (void **)&m)))
        return agile__dp_efail(err, errcap, rv, "not a module of this session");
    held = 1;
    if (!(f = calloc(1, sizeof *f))) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    AGILE_TRY(agile_guard_entry_params(m->ptx, m->ptx_len, name, &f->p, err, errcap));
    snprintf(f->name, sizeof f->name, "%.127s", name);
    if (m->kmod) {
        AGILE_TRY(agile__backend_enter(w->be, m->dev));
        f->mod = m;
        f->gen = agile__backend_generation(w->be, m->dev) - 1; /* not looked up yet */
        rv = agile__dp_function_current(w, f);
        f->mod = NULL;
        agile__backend_leave(w->be);
        if (rv != AGILE_OK) {
            agile__dp_efail(err, errcap, rv, "cuModuleGetFunction(%s): %s", name,
                            agile_strerror(rv));
            goto out;
        }
    }
    atomic_fetch_add(&m->refs, 1);
    f->mod = m;
    rv = agile__htab_add(&w->objs, AGILE_OBJ_FUNCTION, s->id, f, function_fini,
                         &rep->u.module_function_rep.handle);
    if (rv != AGILE_OK) {
        function_fini(f);
        f = NULL;
        goto out;
    }
    agile__wbuf wb = {tl_sizes, sizeof tl_sizes, 0, 0};
    for (uint32_t i = 0; i < f->p.nparams; i++) {
        agile__put_u32(&wb, f->p.size[i]);
        agile__put_u32(&wb, f->p.offset[i]);
    }
    rep->u.module_function_rep.nparams = f->p.nparams;
    rep->u.module_function_rep.param_sizes = agile__blob_of(tl_sizes, wb.len);
    f = NULL;
out:
    free(f);
    if (held) agile__htab_rele(&w->objs, q->module);
    return rv;
}

/* After a context reset: the function's module loaded again from its image (once, by
 * whoever needs it first) and the function looked up in it. Context current. */
int agile__dp_function_current(agile__worker *w, dp_function *f)
{
    dp_module *m = f->mod;
    unsigned gen = agile__backend_generation(w->be, m->dev);
    int rv = AGILE_OK;
    if (f->gen == gen) return AGILE_OK;
    pthread_mutex_lock(&m->mu);
    if (m->gen != gen) {
        agile__kmodule *nm = NULL;
        rv = agile__kmodule_load(w->be, m->image, &nm);
        if (rv == AGILE_OK) {
            m->kmod = nm;
            m->gen = gen;
        }
    }
    if (rv == AGILE_OK) rv = agile__kmodule_function(w->be, m->kmod, f->name, &f->kfn);
    pthread_mutex_unlock(&m->mu);
    if (rv != AGILE_OK) return rv;
    atomic_store(&f->dyn_smem, 0);
    f->gen = gen;
    return AGILE_OK;
}
