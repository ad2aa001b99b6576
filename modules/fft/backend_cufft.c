/* backend_cufft.c — the cuda backend: cuFFT loaded with dlopen (types from cufft.h only, no
 * link-time dependency on cuFFT or CUDA, so the worker starts on machines without them).
 *
 * Plans are shared between tenants through the cache, buffers never are. A cuFFT plan
 * carries mutable state that exec reads (its stream and its work area), so:
 *  - plans are made with cufftSetAutoAllocation(0): cuFFT allocates nothing itself;
 *  - work areas belong to (tenant, device, stream), come from the worker's protected memory
 *    (outside every window, accounted to the tenant) and grow on demand;
 *  - exec sets stream + work area + enqueues under the plan's lock, so two tenants running
 *    one plan concurrently each run with their own work area: a shared work area would
 *    let one tenant's transform read another's intermediate data.
 * The caller makes the device's context current (the worker's agile__backend_enter).
 */
#include "fft.h"

#include <cufft.h>
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)AGILE_FFT_C2C == (int)CUFFT_C2C && (int)AGILE_FFT_R2C == (int)CUFFT_R2C &&
                   (int)AGILE_FFT_C2R == (int)CUFFT_C2R && (int)AGILE_FFT_Z2Z == (int)CUFFT_Z2Z &&
                   (int)AGILE_FFT_D2Z == (int)CUFFT_D2Z && (int)AGILE_FFT_Z2D == (int)CUFFT_Z2D,
               "agile fft types are cufftType values");
_Static_assert(AGILE_FFT_FORWARD == CUFFT_FORWARD && AGILE_FFT_INVERSE == CUFFT_INVERSE,
               "directions are cuFFT's");

/* X(name): the entry points we use, typed from cufft.h itself. */
// clang-format off
#define CUFFT_SYMS(X)                                                                              \
    X(cufftCreate) X(cufftMakePlanMany64) X(cufftSetStream) X(cufftSetAutoAllocation)             \
    X(cufftSetWorkArea) X(cufftGetSize) X(cufftGetVersion) X(cufftDestroy)                        \
    X(cufftExecC2C) X(cufftExecR2C) X(cufftExecC2R) X(cufftExecZ2Z) X(cufftExecD2Z) X(cufftExecZ2D)
// clang-format on

typedef struct wspace {
    struct wspace *next;
    pthread_mutex_t mu; /* held while this area is (re)sized and while an exec enqueues on it */
    uint32_t tenant;
    int device;
    void *stream;
    uint64_t addr, size;
    void *handle;
} wspace;

typedef struct cbackend {
    agile__fft_backend b; /* first: the public view */
    void *lib;
    agile__fft_cufft_cfg cfg;
    pthread_mutex_t mu; /* the work-area list */
    wspace *ws;
#define X(name) __typeof__(name) *name;
    CUFFT_SYMS(X)
#undef X
} cbackend;

typedef struct cplan {
    pthread_mutex_t mu; /* stream + work area + exec are one step on a shared plan */
    cufftHandle h;
    uint32_t type;
    uint64_t work;
    agile__fft_desc d; /* to make h again after a context reset */
    unsigned epoch;    /* the ctx_epoch h was made in */
} cplan;

/* Context resets so far (agile__fft_cufft_ctx_reset): a plan of an older epoch lost its
 * kernels and device state with the context and is made again at its next exec. */
static _Atomic unsigned ctx_epoch;

void agile__fft_cufft_ctx_reset(void)
{
    atomic_fetch_add(&ctx_epoch, 1);
}

/* A cuFFT plan for d in the current context: *h and its work size. */
static int plan_make(cbackend *b, const agile__fft_desc *d, cufftHandle *hp, uint64_t *workp)
{
    long long n[3], ie[3], oe[3];
    size_t work = 0;
    int rv = AGILE_OK, advanced = (d->flags & AGILE_FFT_F_ADVANCED) == AGILE_FFT_F_ADVANCED;
    cufftHandle h = CUFFT_PLAN_NULL;
    cufftResult r;
    for (int k = 0; k < 3; k++) {
        n[k] = (long long)d->n[k]; /* validated: all far below 2^63 */
        ie[k] = (long long)d->inembed[k];
        oe[k] = (long long)d->onembed[k];
    }
    if ((r = b->cufftCreate(&h)) != CUFFT_SUCCESS) {
        h = CUFFT_PLAN_NULL;
        rv = agile_err_cufft(r);
        goto out;
    }
    if ((r = b->cufftSetAutoAllocation(h, 0)) != CUFFT_SUCCESS) {
        rv = agile_err_cufft(r);
        goto out;
    }
    /* Basic layout: NULL embeds, so cuFFT picks its basic in-place/out-of-place layout,
     * which is exactly what the validated desc spells out (placement is enforced at exec). */
    r = b->cufftMakePlanMany64(h, (int)d->rank, n, advanced ? ie : NULL, (long long)d->istride,
                               (long long)d->idist, advanced ? oe : NULL, (long long)d->ostride,
                               (long long)d->odist, (cufftType)d->type, (long long)d->batch, &work);
    if (r != CUFFT_SUCCESS) {
        rv = agile_err_cufft(r);
        goto out;
    }
    if ((r = b->cufftGetSize(h, &work)) != CUFFT_SUCCESS) {
        rv = agile_err_cufft(r);
        goto out;
    }
    *hp = h;
    *workp = work;
    h = CUFFT_PLAN_NULL;
out:
    if (h != CUFFT_PLAN_NULL) b->cufftDestroy(h);
    return rv;
}

static int cufft_plan_create(agile__fft_backend *bb, const agile__fft_desc *d, int device,
                             agile__fft_bplan **out)
{
    cbackend *b = (cbackend *)bb;
    int rv = AGILE_OK;
    cplan *p = calloc(1, sizeof *p);
    (void)device;
    if (!p) return AGILE_ENOMEM;
    p->h = CUFFT_PLAN_NULL;
    p->type = d->type;
    p->d = *d;
    p->epoch = atomic_load(&ctx_epoch);
    AGILE_TRY(plan_make(b, d, &p->h, &p->work));
    pthread_mutex_init(&p->mu, NULL);
    *out = (agile__fft_bplan *)p;
    p = NULL;
out:
    free(p);
    return rv;
}

/* The work area of (tenant, device, stream); entries live until release_tenant. */
static int ws_get(cbackend *b, const agile__fft_env *env, wspace **out)
{
    wspace *w;
    int rv = AGILE_OK;
    pthread_mutex_lock(&b->mu);
    for (w = b->ws; w; w = w->next)
        if (w->tenant == env->tenant && w->device == env->device && w->stream == env->stream) break;
    if (!w) {
        w = calloc(1, sizeof *w);
        if (!w) {
            rv = AGILE_ENOMEM;
            goto out;
        }
        pthread_mutex_init(&w->mu, NULL);
        w->tenant = env->tenant;
        w->device = env->device;
        w->stream = env->stream;
        w->next = b->ws;
        b->ws = w;
    }
    *out = w;
out:
    pthread_mutex_unlock(&b->mu);
    return rv;
}

static int cufft_exec(agile__fft_backend *bb, agile__fft_bplan *bp, const agile__fft_env *env,
                      void *in, void *out, int direction)
{
    cbackend *b = (cbackend *)bb;
    cplan *p = (cplan *)bp;
    wspace *w = NULL;
    void *area = NULL;
    cufftResult r;
    int rv = AGILE_OK, plan_locked = 0;

    if (agile__fft_type_is_c2c(p->type) && direction != CUFFT_FORWARD && direction != CUFFT_INVERSE)
        return AGILE_EINVAL;
    if (p->work) {
        AGILE_TRY(ws_get(b, env, &w));
        pthread_mutex_lock(&w->mu);
        if (w->size < p->work) {
            /* Growing: free_protected must not hand the old area out while work queued on
             * this stream may still use it (the worker's free is synchronous). */
            if (w->handle)
                b->cfg.free_protected(b->cfg.ctx, w->tenant, w->device, w->handle, w->addr,
                                      w->size);
            w->handle = NULL;
            w->addr = w->size = 0;
            AGILE_TRY(b->cfg.alloc_protected(b->cfg.ctx, env->tenant, env->device, p->work,
                                             &w->addr, &w->handle));
            w->size = p->work;
        }
        area = (void *)(uintptr_t)w->addr;
    }
    pthread_mutex_lock(&p->mu);
    plan_locked = 1;
    if (p->epoch != atomic_load(&ctx_epoch)) {
        /* The context was reset: the old handle's device state went with it, so it is left
         * alone (a small host-side leak per plan and reset). Same desc, same work size. */
        cufftHandle h = CUFFT_PLAN_NULL;
        uint64_t work = 0;
        unsigned e = atomic_load(&ctx_epoch);
        AGILE_TRY(plan_make(b, &p->d, &h, &work));
        if (work > p->work) {
            b->cufftDestroy(h);
            rv = AGILE_EINTERNAL;
            goto out;
        }
        p->h = h;
        p->epoch = e;
    }
    if ((r = b->cufftSetStream(p->h, (cudaStream_t)env->stream)) != CUFFT_SUCCESS ||
        (r = b->cufftSetWorkArea(p->h, area)) != CUFFT_SUCCESS) {
        rv = agile_err_cufft(r);
        goto out;
    }
    switch (p->type) {
    case CUFFT_C2C:
        r = b->cufftExecC2C(p->h, in, out, direction);
        break;
    case CUFFT_Z2Z:
        r = b->cufftExecZ2Z(p->h, in, out, direction);
        break;
    case CUFFT_R2C:
        r = b->cufftExecR2C(p->h, in, out);
        break;
    case CUFFT_D2Z:
        r = b->cufftExecD2Z(p->h, in, out);
        break;
    case CUFFT_C2R:
        r = b->cufftExecC2R(p->h, in, out);
        break;
    case CUFFT_Z2D:
        r = b->cufftExecZ2D(p->h, in, out);
        break;
    default:
        r = CUFFT_INVALID_TYPE;
        break;
    }
    rv = agile_err_cufft(r);
out:
    if (plan_locked) pthread_mutex_unlock(&p->mu);
    if (w) pthread_mutex_unlock(&w->mu);
    return rv;
}

static void cufft_plan_destroy(agile__fft_backend *bb, agile__fft_bplan *bp)
{
    cbackend *b = (cbackend *)bb;
    cplan *p = (cplan *)bp;
    if (!p) return;
    if (p->epoch == atomic_load(&ctx_epoch)) b->cufftDestroy(p->h);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static uint64_t cufft_work_size(const agile__fft_bplan *bp)
{
    return ((const cplan *)bp)->work;
}

static void cufft_release_tenant(agile__fft_backend *bb, uint32_t tenant)
{
    cbackend *b = (cbackend *)bb;
    wspace *mine = NULL, **pp, *w;
    pthread_mutex_lock(&b->mu);
    for (pp = &b->ws; (w = *pp);) {
        if (w->tenant == tenant) {
            *pp = w->next;
            w->next = mine;
            mine = w;
        } else {
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&b->mu);
    while ((w = mine)) {
        mine = w->next;
        pthread_mutex_lock(&w->mu); /* waits for an exec still enqueueing on it */
        if (w->handle)
            b->cfg.free_protected(b->cfg.ctx, w->tenant, w->device, w->handle, w->addr, w->size);
        pthread_mutex_unlock(&w->mu);
        pthread_mutex_destroy(&w->mu);
        free(w);
    }
}

static void cufft_close(agile__fft_backend *bb)
{
    cbackend *b = (cbackend *)bb;
    while (b->ws)
        cufft_release_tenant(bb, b->ws->tenant);
    pthread_mutex_destroy(&b->mu);
    /* cuFFT stays loaded: it carries the CUDA runtime and C++ static state whose teardown
     * on dlclose is not safe while other CUDA users live in the process (and libstdc++'s
     * pool would show up as a leak). A second open just takes another reference. */
    free(b);
}

int agile__fft_cufft_version(agile__fft_backend *bb, int *version)
{
    cbackend *b = (cbackend *)bb;
    if (bb->kind != AGILE_BACKEND_KIND_CUDA) return AGILE_EINVAL;
    return agile_err_cufft(b->cufftGetVersion(version));
}

int agile__fft_cufft_open(const agile__fft_cufft_cfg *cfg, agile__fft_backend **out)
{
    /* The toolkit's default location last: workers are often started without it on the
     * loader path (PyTorch ships its own cuFFT inside its wheel, invisible to us). */
    static const char *const names[] = {"libcufft.so.12", "libcufft.so.11", "libcufft.so",
                                        "/usr/local/cuda/lib64/libcufft.so.12"};
    cbackend *b = NULL;
    int rv = AGILE_OK;
    const char *missing = NULL;
    if (!cfg || !cfg->alloc_protected || !cfg->free_protected) return AGILE_EINVAL;
    b = calloc(1, sizeof *b);
    if (!b) return AGILE_ENOMEM;
    b->cfg = *cfg;
    if (cfg->lib_path) {
        b->lib = dlopen(cfg->lib_path, RTLD_NOW | RTLD_LOCAL);
    } else {
        for (size_t i = 0; i < AGILE_ARRAY_LEN(names) && !b->lib; i++)
            b->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    }
    if (!b->lib) {
        const char *why = dlerror();
        agile__warn("fft: cannot load cuFFT (%s): %s",
                    cfg->lib_path ? cfg->lib_path : "libcufft.so.12", why ? why : "?");
        rv = AGILE_ENODEV;
        goto out;
    }
    /* dlsym returns void *; converting to a function pointer through memcpy is the
     * strictly conforming way and what POSIX guarantees works. */
#define X(name)                                                                                    \
    do {                                                                                           \
        void *sym = dlsym(b->lib, #name);                                                          \
        if (!sym && !missing) missing = #name;                                                     \
        memcpy(&b->name, &sym, sizeof sym);                                                        \
    } while (0);
    CUFFT_SYMS(X)
#undef X
    if (missing) {
        agile__warn("fft: cuFFT library lacks %s", missing);
        rv = AGILE_ENODEV;
        goto out;
    }
    pthread_mutex_init(&b->mu, NULL);
    b->b.name = "cufft";
    b->b.kind = AGILE_BACKEND_KIND_CUDA;
    b->b.plan_create = cufft_plan_create;
    b->b.exec = cufft_exec;
    b->b.plan_destroy = cufft_plan_destroy;
    b->b.work_size = cufft_work_size;
    b->b.release_tenant = cufft_release_tenant;
    b->b.close = cufft_close;
    *out = &b->b;
    b = NULL;
out:
    if (b) {
        if (b->lib) dlclose(b->lib);
        free(b);
    }
    return rv;
}
