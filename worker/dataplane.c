/* The worker's data plane (see dataplane.h): ring objects, the dispatcher thread, command
 * execution on the host and cuda backends, and guarded modules (MODULE_LOAD/FUNCTION).
 *
 * Request to the guard (guard/guard.h): the launcher needs each .entry's parameter sizes
 * and alignments. guard.h has no call for that yet, so this file reads them with the
 * guard's own PTX front end (guard/ptx.h, agile_guard_ptx_parse). A public
 * `agile_guard_entry_params(ptx, len, name, sizes, aligns, max, &n, &kernel_id)` in guard.h
 * would let this file drop its include of ptx.h: please add it, then entry_params() below
 * becomes a single call.
 */
#include "dataplane.h"
#include "guardproc.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../modules/fft/fft.h"
#include "guard.h"
#include "modules.h"
#include "ptx.h"
#include "ring/ring.h"
#include "ring/sched.h"
#include "twin.h"
#include "worker.h"

#define DP_SLOT_SIZE 512u /* launch params up to ~420 bytes fit one slot */
#define DP_MAX_RINGS_PER_SESSION 8u
#define DP_MAX_PARAMS 256u
#define DP_MAX_STREAMS 1024u /* worker streams per ring */
#define DP_BUDGET 1024u      /* cost units per scheduling pass */
/* Cost units (what the scheduler shares by weight): one unit is about what the dispatcher
 * spends on a NOP. Host: bytes set or copied, measured by benchmarks/fairness_host.py; cuda:
 * an estimate of GPU time (~1 TB/s copies; a launch or module op as 16 units). */
#define DP_HOST_UNIT_BYTES 4096u
#define DP_GPU_UNIT_BYTES (256u << 10)
#define DP_GPU_OP_COST 16u
/* A host memcpy/memset above DP_HOST_PIECE_MIN runs in pieces of at most DP_HOST_PIECE_MAX
 * bytes (one turn's worth), each in steps of DP_HOST_STEP bytes or more; after each step
 * the other tenants' rings are looked at, and a tenant that just got work is served first. */
#define DP_HOST_PIECE_MIN (16u << 10)
#define DP_HOST_PIECE_MAX (1u << 20)
#define DP_HOST_STEP 4096u
#define DP_IDLE_WAIT_NS 10000000 /* re-read the ring list at least this often */
#define DP_GPU_SPIN_NS 1000000u  /* spin this long after progress while GPU work is out */
#define DP_GPU_NAP_NS 100000     /* then poll GPU completions this often */
#define DP_HOST_WAIT_NS (10ull * 1000000000ull) /* a host WAIT gives up (no time limit set) */
#define DP_QUEUED (-1)                          /* exec_*: the completion was queued, not due now */
#define DP_GPU_OP_NS (60ull * 1000000000ull)    /* non-launch GPU ops: then AGILE_ETIMEDOUT */
#define DP_DRAIN_NS (5ull * 1000000000ull)      /* ring teardown waits this long for the GPU */

static int efail(char *err, size_t cap, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int efail(char *err, size_t cap, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return rv;
}

/* What the backend's queues can do (backend.h): queued (commands run on streams, complete by
 * events), or the dispatcher does in-window work itself. */
static agile__queue_caps caps(const agile__worker *w)
{
    agile__queue_caps c;
    agile__backend_queue_caps(w->be, &c);
    return c;
}

/* ---- modules and functions ------------------------------------------------------------- */

typedef struct dp_module {
    _Atomic int refs; /* the handle's + one per function */
    agile__worker *w;
    int dev;
    bool strict;
    agile__kmodule *kmod; /* NULL where the backend runs no kernels */
    char *ptx;      /* the tenant's PTX, for the entries' parameters */
    size_t ptx_len;
    /* the compiled image, loaded again after a context reset (mu: kmod, gen) */
    void *image;
    pthread_mutex_t mu;
    unsigned gen; /* the backend generation kmod was loaded in */
    /* bit (kernel_id - 1) % 64: a launch of that kernel completed without error */
    _Atomic uint64_t ok_kernels;
} dp_module;

typedef struct dp_function {
    dp_module *mod;
    agile__kfunc *kfn; /* NULL: cannot launch (no kernels on this backend) */
    uint32_t nparams, argsize, kernel_id;
    uint32_t size[DP_MAX_PARAMS], off[DP_MAX_PARAMS];
    _Atomic uint32_t dyn_smem; /* the largest dynamic shared memory allowed so far */
    unsigned gen;              /* dispatcher: the generation of kfn */
    char name[128];
} dp_function;

static void module_rele(dp_module *m)
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
    module_rele(obj);
}

static void function_fini(void *obj)
{
    dp_function *f = obj;
    module_rele(f->mod);
    free(f);
}

static int function_current(agile__worker *w, dp_function *f);
struct dp_ring;
static void fault_note(struct dp_ring *r, int32_t err, const char *what);

/* Element size of a PTX parameter type token, 0 if not one. */
static uint32_t ptx_type_size(const char *s, size_t n)
{
    static const struct {
        const char *t;
        uint32_t size;
    } types[] = {{".u8", 1},  {".s8", 1},  {".b8", 1},    {".u16", 2},    {".s16", 2},
                 {".b16", 2}, {".f16", 2}, {".bf16", 2},  {".u32", 4},    {".s32", 4},
                 {".b32", 4}, {".f32", 4}, {".f16x2", 4}, {".bf16x2", 4}, {".u64", 8},
                 {".s64", 8}, {".b64", 8}, {".f64", 8},   {".b128", 16}};
    for (size_t i = 0; i < AGILE_ARRAY_LEN(types); i++)
        if (strlen(types[i].t) == n && memcmp(types[i].t, s, n) == 0) return types[i].size;
    return 0;
}

/* Sizes and offsets (CUDA's kernel parameter buffer layout) of .entry `name`'s parameters,
 * from the tenant's PTX (the guard appends its hidden ones after these). */
static int entry_params(const dp_module *m, const char *name, dp_function *f, char *err, size_t cap)
{
    ptx_module pm;
    int rv = AGILE_OK;
    uint32_t kidx = 0;
    const ptx_func *e = NULL;

    rv = agile_guard_ptx_parse(&pm, m->ptx, m->ptx_len);
    if (rv != AGILE_OK) {
        efail(err, cap, rv, "module PTX does not parse: %s", pm.err);
        goto out;
    }
    for (uint32_t i = 0; i < pm.nfuncs && !e; i++) {
        const ptx_func *fn = &pm.funcs[i];
        if (!fn->entry || !fn->has_body) continue;
        const ptx_tok *t = &pm.toks[fn->name];
        if (t->len == strlen(name) && memcmp(pm.src + t->off, name, t->len) == 0)
            e = fn;
        else
            kidx++;
    }
    if (!e) {
        rv = efail(err, cap, AGILE_ENOENT, "no kernel (.entry) named '%s' in the module", name);
        goto out;
    }
    f->kernel_id = kidx + 1;
    f->nparams = 0;
    uint32_t off = 0;
    if (e->params_open != PTX_NONE && e->params_close > e->params_open + 1) {
        uint32_t t = e->params_open + 1;
        while (t < e->params_close) {
            uint32_t elem = 0, align = 0, count = 1;
            bool named = false;
            for (; t < e->params_close && !agile_guard_tok_punct(&pm, t, ','); t++) {
                const char *s = ptx_tok_str(&pm, t);
                uint32_t n = pm.toks[t].len;
                if (!elem && n == 6 && memcmp(s, ".align", 6) == 0 && t + 1 < e->params_close) {
                    uint64_t a;
                    if (agile_guard_parse_int(ptx_tok_str(&pm, t + 1), pm.toks[t + 1].len, &a) &&
                        a && a <= 256)
                        align = (uint32_t)a;
                    t++;
                } else if (!elem && (elem = ptx_type_size(s, n)) != 0) {
                    /* the type; a later .align belongs to .ptr (the pointee) */
                } else if (elem && !named && pm.toks[t].kind == PTK_IDENT && s[0] != '.') {
                    named = true;
                } else if (named && agile_guard_tok_punct(&pm, t, '[') && t + 1 < e->params_close) {
                    uint64_t c;
                    if (agile_guard_parse_int(ptx_tok_str(&pm, t + 1), pm.toks[t + 1].len, &c) &&
                        c && c <= 4096)
                        count = (uint32_t)c;
                }
            }
            if (t < e->params_close) t++; /* the comma */
            if (!elem || !named) {
                rv = efail(err, cap, AGILE_EINVAL, "kernel '%s': parameter %u not understood", name,
                           f->nparams);
                goto out;
            }
            if (f->nparams == DP_MAX_PARAMS) {
                rv = efail(err, cap, AGILE_ETOOBIG, "kernel '%s' has more than %u parameters", name,
                           DP_MAX_PARAMS);
                goto out;
            }
            if (!align) align = elem;
            off = AGILE_ALIGN_UP(off, align);
            f->off[f->nparams] = off;
            f->size[f->nparams] = elem * count;
            off += elem * count;
            f->nparams++;
        }
    }
    f->argsize = off;
out:
    agile_guard_ptx_fini(&pm);
    return rv;
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
static _Thread_local uint8_t tl_sizes[DP_MAX_PARAMS * 8];

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
        return efail(err, errcap, AGILE_EINVAL, "device %u does not exist", q->device);
    if (q->flags & ~(AGILE_MODULE_LOAD_STRICT | AGILE_MODULE_LOAD_TEST_UNGUARDED))
        return efail(err, errcap, AGILE_EINVAL, "unknown MODULE_LOAD flags %#x", q->flags);
    bool raw = (q->flags & AGILE_MODULE_LOAD_TEST_UNGUARDED) != 0;
    if (raw && !test_unguarded(s->uid))
        return efail(err, errcap, AGILE_EPERM,
                     "unguarded PTX is a test-only route: the worker's environment does not "
                     "have AGILE_TEST_UNGUARDED_UID=%u",
                     s->uid);
    pthread_mutex_lock(&w->mu);
    allowed = s->tenant->pol.modules;
    pthread_mutex_unlock(&w->mu);
    if (!(allowed & (1u << 1))) /* AGILE_MODULE_LIST: guard = 1 */
        return efail(err, errcap, AGILE_EPERM,
                     "tenant %u may not load PTX (module 'guard' "
                     "not allowed by policy)",
                     s->uid);
    if (q->ptx.n == 0) return efail(err, errcap, AGILE_EINVAL, "empty PTX");

    /* Guard, verify and (cuda) compile in a child process: guardproc.h says why. */
    char dir[PATH_MAX], arch[24];
    gj.ptx = (const char *)q->ptx.p;
    gj.len = q->ptx.n;
    gj.strict = !raw && (q->flags & AGILE_MODULE_LOAD_STRICT) != 0;
    gj.raw = raw;
    gj.guard_gap = AGILE_GUARD_GAP;
    gj.nice = geteuid() == 0; /* a --shared worker: one uid's loads below everyone's requests */
    if (caps(w).kernels) {
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
                efail(err, errcap, rv, "%s", gj.msg);
            else
                efail(err, errcap, rv, "guard failed: %s", agile_strerror(rv));
            break;
        case AGILE_GJ_VERIFY:
            agile__log(AGILE_LOG_ERROR, (long)s->uid, "guard output failed verification: %s",
                       gj.msg);
            rv = efail(err, errcap, AGILE_EREJECT, "guarded PTX failed verification: %s", gj.msg);
            break;
        case AGILE_GJ_COMPILE:
            efail(err, errcap, rv, "compiling the guarded PTX failed: %s", gj.msg);
            break;
        default:
            agile__log(AGILE_LOG_ERROR, (long)s->uid, "module load: %s", gj.msg);
            efail(err, errcap, rv, "%s", gj.msg);
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
        agile__log(AGILE_LOG_WARN, (long)s->uid, "loading UNGUARDED PTX (AGILE_TEST_UNGUARDED_UID)");
    m->w = w;
    m->dev = (int)q->device;
    m->strict = gj.strict || gj.record; /* the entries take the violation record */
    atomic_init(&m->refs, 1);
    pthread_mutex_init(&m->mu, NULL);
    if (caps(w).kernels) {
        snprintf(tl_log, sizeof tl_log, "%s", gj.msg);
        AGILE_TRY(agile__backend_enter(w->be, m->dev));
        m->gen = agile__backend_generation(w->be, m->dev);
        rv = agile__kmodule_load(w->be, gj.image, &m->kmod);
        agile__backend_leave(w->be);
        m->image = gj.image; /* kept: a context reset loads it again */
        gj.image = NULL;
        if (rv != AGILE_OK) {
            m->kmod = NULL;
            efail(err, errcap, rv, "cuModuleLoadData: %s", agile__backend_err_name(rv));
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
    agile__log(AGILE_LOG_DEBUG, (long)s->uid, "module loaded: %u sites, %s%s", gj.nsites,
               gj.strict ? "strict" : "mask", gj.hit ? ", image from the cache" : "");
out:
    if (m) module_rele(m);
    agile__guard_job_fini(&gj);
    return rv;
}

int agile__dp_module_unload(agile__worker *w, agile__session *s, const agile__msg *req,
                            agile__msg *rep, char *err, size_t errcap)
{
    (void)rep;
    int rv = agile__htab_remove(&w->objs, req->u.handle.handle, AGILE_OBJ_MODULE, s->id);
    if (rv) return efail(err, errcap, rv, "not a module of this session");
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
        return efail(err, errcap, AGILE_EINVAL, "bad kernel name");
    if ((rv = agile__htab_hold(&w->objs, q->module, AGILE_OBJ_MODULE, s->id, (void **)&m)))
        return efail(err, errcap, rv, "not a module of this session");
    held = 1;
    if (!(f = calloc(1, sizeof *f))) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    AGILE_TRY(entry_params(m, name, f, err, errcap));
    snprintf(f->name, sizeof f->name, "%s", name);
    if (m->kmod) {
        AGILE_TRY(agile__backend_enter(w->be, m->dev));
        f->mod = m;
        f->gen = agile__backend_generation(w->be, m->dev) - 1; /* not looked up yet */
        rv = function_current(w, f);
        f->mod = NULL;
        agile__backend_leave(w->be);
        if (rv != AGILE_OK) {
            efail(err, errcap, rv, "cuModuleGetFunction(%s): %s", name, agile_strerror(rv));
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
    for (uint32_t i = 0; i < f->nparams; i++) {
        agile__put_u32(&wb, f->size[i]);
        agile__put_u32(&wb, f->off[i]);
    }
    rep->u.module_function_rep.nparams = f->nparams;
    rep->u.module_function_rep.param_sizes = agile__blob_of(tl_sizes, wb.len);
    f = NULL;
out:
    free(f);
    if (held) agile__htab_rele(&w->objs, q->module);
    return rv;
}

/* ---- rings ------------------------------------------------------------------------------ */

enum { P_DONE, P_EVENT, P_HOSTWAIT, P_BARRIER };

typedef struct dp_pend {
    uint64_t seq, tag, result;
    uint64_t addr;    /* host WAIT, cuda SIGNAL: worker address of the counter */
    uint64_t head_ns; /* when it reached the head of the queue (0: not yet) */
    agile__event *ev;
    int32_t status;
    uint32_t val, cond;
    uint16_t opcode;
    uint8_t kind, launch;
    /* launches: the module (a reference), the kernel, whether it had never completed before
     * (the first suspect of a fault); launches and module ops: what ran, for a fault report */
    bool fresh;
    uint32_t kernel_id;
    dp_module *mod;
    char what[64];
} dp_pend;

/* A large host memcpy/memset in progress on a ring: it runs in pieces, other tenants are
 * served between them, the ring's later commands wait (they are ordered after it) and it
 * completes as one command. Its arguments were validated when it started. */
typedef struct dp_hostop {
    uint64_t seq, tag;
    uint64_t dst, src, n, done; /* worker addresses, bytes, bytes done */
    uint32_t value, es;
    uint16_t opcode;
    bool active;
    bool backward; /* memmove onto an overlapping source below it: from the end */
} dp_hostop;

typedef struct dp_stream {
    uint64_t tag;
    agile__stream *st;
} dp_stream;

typedef struct dp_ring {
    agile__worker *w;
    agile__session *s;
    uint32_t uid;
    int dev;
    agile__ring_worker rw;
    /* dispatcher bookkeeping, under dp->mu */
    bool busy, gone;
    struct dp_ring *next;
    /* dispatcher-only from here */
    bool dead, closed;
    dp_pend *pend; /* completions not yet posted, in order (at most slots) */
    uint32_t pcap, phead, pcount;
    dp_stream *streams;
    uint32_t nstreams;
    agile__event **evpool;
    uint32_t nev;
    agile__pmem *viol;
    uint64_t viol_addr;
    bool viol_armed; /* a strict kernel ran since the last barrier */
    uint64_t limit_ns;
    agile__window *win; /* its tenant's window on dev, once the session joined it */
    dp_hostop op;
    uint32_t busy_pull; /* dispatcher: its tenant was already waiting during this pull */
    unsigned gen;       /* the backend generation its streams and events were made in */
} dp_ring;

typedef struct agile__dp {
    agile__worker *w;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a ring was added; a pass over the rings finished */
    dp_ring *rings;
    uint32_t nrings;
    agile__sched sched;
    pthread_t thread;
    atomic_int stop;
    /* dispatcher only */
    dp_ring **snap;
    agile__ring_worker **rws;
    int32_t *st;
    uint32_t nsnap, capsnap, rr, npull;
    uint32_t nops; /* snapshotted rings with a host op in progress */
    uint64_t last_progress_ns;
    /* a sticky error seen in this pass (dispatcher only): recovered after it */
    bool fault;
    int fault_dev;
    int32_t fault_err;
    uint32_t fault_uid;
    char fault_what[64];
    agile__dp_faults rec[AGILE_MAX_DEV]; /* under mu */
} agile__dp;

static pthread_mutex_t dp_init_mu = PTHREAD_MUTEX_INITIALIZER;
static void *dp_main(void *arg);

static agile__dp *dp_get(agile__worker *w)
{
    agile__dp *dp;
    pthread_mutex_lock(&dp_init_mu);
    if (!(dp = w->dp) && (dp = calloc(1, sizeof *dp))) {
        dp->w = w;
        pthread_mutex_init(&dp->mu, NULL);
        pthread_cond_init(&dp->cv, NULL);
        if (agile__sched_init(&dp->sched, 4096, 0) != AGILE_OK ||
            pthread_create(&dp->thread, NULL, dp_main, dp) != 0) {
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
static void pend_retire(dp_pend *p)
{
    if (p->mod) module_rele(p->mod);
    p->mod = NULL;
}

static void ring_fini(void *obj)
{
    dp_ring *r = obj;
    agile__worker *w = r->w;
    bool leak = false;
    if (w->dp) dp_remove(w->dp, r);
    if (caps(w).queued && agile__backend_enter(w->be, r->dev) == AGILE_OK) {
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
            pend_retire(p);
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
        return efail(err, errcap, AGILE_EINVAL, "unknown RING_ATTACH flags %#x", q->flags);
    if ((int)dev >= w->ndev)
        return efail(err, errcap, AGILE_EINVAL, "device %u does not exist", dev);
    agile__htab_count_owner(&w->objs, s->id, counts);
    if (counts[AGILE_OBJ_RING] >= DP_MAX_RINGS_PER_SESSION)
        return efail(err, errcap, AGILE_EBUSY, "session has %u rings already",
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
        return efail(err, errcap, rv, "ring of %u slots: %s", slots, agile_strerror(rv));
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
    if (caps(w).queued) {
        rv = agile__pmem_alloc(w->be, r->dev, AGILE_GUARD_VIOL_SIZE, &r->viol, &r->viol_addr);
        if (rv == AGILE_OK)
            rv = agile__backend_memset(w->be, r->dev, r->viol_addr, 0, AGILE_GUARD_VIOL_SIZE);
        if (rv != AGILE_OK) {
            ring_fini(r);
            return efail(err, errcap, rv, "violation record: %s", agile_strerror(rv));
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
        return efail(err, errcap, rv, "could not pass the ring fd: %s", agile_strerror(rv));
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

/* ---- execution ------------------------------------------------------------------------- */

static void post(dp_ring *r, const dp_pend *p)
{
    agile__ring_cmd c;
    c.seq = p->seq;
    c.opcode = p->opcode;
    c.tag = p->tag;
    agile__ring_complete(&r->rw, &c, p->status, p->result);
}

/* Complete now if nothing is queued before it, else queue behind. */
static void finish_ids(dp_ring *r, uint64_t seq, uint64_t tag, uint16_t opcode, int32_t status,
                       uint64_t result)
{
    dp_pend p;
    memset(&p, 0, sizeof p);
    p.seq = seq;
    p.tag = tag;
    p.opcode = opcode;
    p.status = status;
    p.result = result;
    p.kind = P_DONE;
    if (!r->pcount) {
        post(r, &p);
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

/* The tenant's window the session joined (twin.h), cached once it exists: the session keeps
 * it until it is freed, after its rings. Read without waiting (creating a large window
 * takes up to a second). */
static agile__window *ring_window(dp_ring *r)
{
    if (!r->win) r->win = agile__twin_window(r->s, r->dev);
    return r->win;
}

/* The tenant's window on the ring's device, translated: worker address of [client, +n),
 * or AGILE_EBOUNDS when it leaves the window (the formula of DESIGN.md: offsets only). */
static int xlate(dp_ring *r, uint64_t client, uint64_t n, uint64_t *out)
{
    agile__window *win = ring_window(r);
    if (!win) return AGILE_EBOUNDS; /* nothing leased yet: no window */
    uint64_t W = agile__window_size(win), off = client & (W - 1);
    if (n > W || off > W - n) return AGILE_EBOUNDS;
    *out = agile__window_base(win) | off;
    return AGILE_OK;
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
    dp_pend p;
    int rv;
    memset(&p, 0, sizeof p);
    if (r->nev)
        p.ev = r->evpool[--r->nev];
    else if ((rv = agile__event_create(be, &p.ev)) != AGILE_OK)
        return rv;
    if ((rv = agile__event_record(be, p.ev, st)) != AGILE_OK) {
        agile__event_destroy(be, p.ev);
        return rv;
    }
    p.seq = cmd->seq;
    p.tag = cmd->tag;
    p.opcode = cmd->opcode;
    p.kind = P_EVENT;
    p.launch = launch;
    queue(r, &p);
    return DP_QUEUED;
}

static void ev_put(dp_ring *r, agile__event *ev)
{
    agile__event **n;
    if (r->nev < 64 && (n = realloc(r->evpool, (r->nev + 1) * sizeof *n))) {
        r->evpool = n;
        r->evpool[r->nev++] = ev;
    } else {
        agile__event_destroy(r->w->be, ev);
    }
}

/* After a context reset: the function's module loaded again from its image (once, by
 * whoever needs it first) and the function looked up in it. Context current. */
static int function_current(agile__worker *w, dp_function *f)
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

static int exec_launch(dp_ring *r, const agile__ring_cmd *cmd)
{
    const struct agile__ring_rec_launch *l = &cmd->u.launch;
    agile__worker *w = r->w;
    dp_function *f = NULL;
    void *pp[DP_MAX_PARAMS + 3];
    uint64_t args[(AGILE_RING_MAX_PAYLOAD + 7) / 8];
    uint64_t mask, base, viol;
    agile__stream *st = NULL;
    int rv = AGILE_OK;

    if (!caps(w).kernels) return AGILE_ENOTSUP;
    if ((rv = agile__htab_hold(&w->objs, l->function, AGILE_OBJ_FUNCTION, r->s->id, (void **)&f)))
        return rv;
    if (!f->kfn || f->mod->dev != r->dev) {
        rv = f->kfn ? AGILE_EINVAL : AGILE_ENOTSUP;
        goto out;
    }
    AGILE_TRY(function_current(w, f));
    if (l->params.n != f->argsize || !l->grid_x || !l->grid_y || !l->grid_z || !l->block_x ||
        !l->block_y || !l->block_z) {
        rv = AGILE_EINVAL;
        goto out;
    }
    agile__window *win = ring_window(r);
    if (!win) {
        rv = AGILE_EBOUNDS;
        goto out;
    }
    /* The params blob lives in the command's private copy; copy it aligned. */
    memcpy(args, l->params.p, l->params.n);
    for (uint32_t i = 0; i < f->nparams; i++)
        pp[i] = (uint8_t *)args + f->off[i];
    mask = agile__window_size(win) - 1;
    base = agile__window_base(win);
    viol = r->viol_addr;
    pp[f->nparams] = &mask;
    pp[f->nparams + 1] = &base;
    pp[f->nparams + 2] = &viol;
    AGILE_TRY(worker_stream(r, cmd->tag, &st));
    if (l->shmem > 48u * 1024u && l->shmem > atomic_load(&f->dyn_smem)) {
        AGILE_TRY(agile__kfunc_set_dyn_smem(w->be, f->kfn, l->shmem));
        atomic_store(&f->dyn_smem, l->shmem);
    }
    const agile__launch_dims dims = {{l->grid_x, l->grid_y, l->grid_z},
                                     {l->block_x, l->block_y, l->block_z},
                                     l->shmem};
    AGILE_TRY(agile__launch(w->be, st, f->kfn, &dims, pp));
    if (f->mod->strict) r->viol_armed = true;
    rv = gpu_queue(r, cmd, st, true);
    if (rv == DP_QUEUED) {
        dp_pend *p = last_pend(r);
        uint64_t bit = 1ull << ((f->kernel_id - 1) % 64);
        atomic_fetch_add(&f->mod->refs, 1);
        p->mod = f->mod;
        p->kernel_id = f->kernel_id;
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
    AGILE_TRY(xlate(r, m->dst, m->bytes, &d));
    AGILE_TRY(xlate(r, m->src, m->bytes, &s));
    if (!m->bytes) return AGILE_OK;
    if (!caps(r->w).queued) {
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
    AGILE_TRY(xlate(r, m->dst, n, &d));
    if (!n) return AGILE_OK;
    if (d % es) return AGILE_EINVAL;
    if (!caps(r->w).queued) {
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
    AGILE_TRY(xlate(r, counter, 4, &a));
    agile__queue_caps qc = caps(r->w);
    if (!qc.queued) {
        if (!wait) {
            __atomic_store_n((uint32_t *)(uintptr_t)a, (uint32_t)value, __ATOMIC_RELEASE);
            return AGILE_OK;
        }
        dp_pend p;
        memset(&p, 0, sizeof p);
        p.seq = cmd->seq;
        p.tag = cmd->tag;
        p.opcode = cmd->opcode;
        p.kind = P_HOSTWAIT;
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
    if (caps(r->w).queued) AGILE_TRY(worker_stream(r, cmd->tag, &st));
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
    if (rv == DP_QUEUED) snprintf(last_pend(r)->what, sizeof last_pend(r)->what, "module op %u", m->op);
out:
    return rv;
}

/* A command's cost in scheduling units (see DP_HOST_UNIT_BYTES). A large host op is
 * charged by its pieces as they run, so starting it costs one unit. */
static uint32_t cmd_cost(const dp_ring *r, const agile__ring_cmd *cmd)
{
    bool cuda = caps(r->w).queued;
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
static uint32_t exec(dp_ring *r, const agile__ring_cmd *cmd)
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
        dp_pend p;
        memset(&p, 0, sizeof p);
        p.seq = cmd->seq;
        p.tag = cmd->tag;
        p.opcode = cmd->opcode;
        p.kind = P_BARRIER;
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
        fault_note(r, rv, cmd->opcode == AGILE_RING_OP_LAUNCH ? "launch" : "command");
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
static bool drain(dp_ring *r, uint64_t now)
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
                fault_note(r, agile__backend_err_note(q, "asynchronous error"), p->what);
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
                fault_note(r, agile__backend_err_kernel_fault(), "barrier");
                break;
            }
        }
        post(r, p);
        pend_retire(p);
        r->phead = (r->phead + 1) % r->pcap;
        r->pcount--;
        progress = true;
    }
    return progress;
}

enum { DP_GO_ON, DP_NEXT_RING, DP_YIELD };

/* Whether a host op in progress on ring `self` should pause for other work: DP_YIELD when
 * another tenant just got work (a ring with commands, its tenant idle in the scheduler: the
 * dispatch loop reads doorbells only between passes, so it is marked ready here; a tenant
 * already waiting for its turn gets it in DRR order), DP_NEXT_RING when another ring of the
 * same tenant has commands (the tenant's rings take turns), else DP_GO_ON. */
static int interrupt(agile__dp *dp, const dp_ring *self)
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

/* Up to `piece` bytes of the ring's host op, in steps (multiples of 4, so of every element
 * size) of DP_HOST_STEP, more with many rings so that looking at them stays a small part
 * of a step, the whole piece when no other ring could want a turn; stops early when
 * interrupt() says so (*why). Completes the op after its last byte. Returns the bytes done. */
static uint64_t hostop_step(agile__dp *dp, dp_ring *r, uint64_t piece, int *why)
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
        *why = interrupt(dp, r);
    }
    if (o->done == o->n) {
        o->active = false;
        fill_fence(); /* the stores are visible before the completion is */
        finish_ids(r, o->seq, o->tag, o->opcode, AGILE_OK, 0);
    }
    return did;
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
                uint64_t b = hostop_step(dp, r, piece_bytes(dp, allowance - *used), &why);
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
                *used += exec(r, cmd);
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
        dp_ring **s = realloc(dp->snap, cap * sizeof *s);
        if (s) dp->snap = s;
        agile__ring_worker **rw = realloc(dp->rws, cap * sizeof *rw);
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
        progress |= drain(r, now);
        agile__backend_leave(r->w->be);
        if (r->pcount)
            *gpu_out = true; /* GPU work or a host WAIT outstanding: poll, do not sleep long */
    }
    return progress;
}

/* ---- faults ------------------------------------------------------------------------------
 * A sticky error poisons the device's context for every tenant (dataplane.h). Recovery runs
 * on the dispatcher between passes: no ring is being served, so every queued completion can
 * be posted and every ring's streams replaced. */

/* A sticky error seen on ring r while running `what`: recovered after this pass. */
static void fault_note(dp_ring *r, int32_t err, const char *what)
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
                bool hit = p->kind == P_EVENT && p->what[0] &&
                           (pass ? true : p->launch && p->fresh);
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
        post(r, p);
        pend_retire(p);
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

static void recover(agile__dp *dp)
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
static void fault_probe(agile__dp *dp)
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

static void *dp_main(void *arg)
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
        fault_probe(dp);
        if (dp->fault) recover(dp);
    }
    release(dp);
    return NULL;
}
