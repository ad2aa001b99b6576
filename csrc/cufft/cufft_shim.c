/* libagile_cufft.so — a subset of the cuFFT API over the agile worker's fft module, so C
 * programs written for cuFFT run their FFTs in the worker (beside protected state, in the
 * tenant's window) without source changes beyond their allocator.
 *
 * cufft.h is included for the types and prototypes only; cuFFT is never linked or loaded.
 *
 * Differences from cuFFT, by design:
 *   - Buffers must come from agile_malloc (the worker reaches only this tenant's window): an
 *     exec on any other pointer returns CUFFT_INVALID_VALUE and writes nothing; so does a
 *     transform whose layout runs out of the window.
 *   - Work areas belong to the worker: cufftGetSize* and cufftMake* report 0 bytes,
 *     cufftSetWorkArea and cufftSetAutoAllocation are accepted and have no effect.
 *   - A plan is made on the worker when it is described (parameter errors surface there, as
 *     in cuFFT) for device 0, and, lazily, once per (device of the buffers, placement): the
 *     worker's plans are placement-specific (see modules/fft/fft.h), cuFFT's are not. The
 *     worker caches plans, so the extra plans are cheap.
 *   - cufftExec* synchronise the plan's stream before the transform and return when it is
 *     complete (agile_fft_exec, the control plane). The stream-ordered agile_fft_exec_async
 *     is not used: a refusal by the worker would come at an agile_barrier, and a cuFFT
 *     program has no call at which to collect it, so it would be lost.
 *   - agile_last_error() holds the worker's reason for a failure.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cufft.h>

#include "agile/fft.h"

#define SHIM_API __attribute__((visibility("default")))
#define MAX_PLANS 4096

typedef struct shim_plan {
    int made;
    int type, rank, advanced;
    long long n[3], inembed[3], onembed[3];
    long long istride, idist, ostride, odist, batch;
    void *stream;
    agile_handle_t h[AGILE_MAX_DEV][2]; /* [device][in place] */
} shim_plan;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static shim_plan *g_plans[MAX_PLANS];
static unsigned g_gen[MAX_PLANS];

/* Handles carry a generation so a destroyed plan's handle does not name its successor. */
static int handle_of(unsigned idx)
{
    return (int)(((g_gen[idx] & 0x7fffu) << 16) | (idx + 1));
}

/* Look up a live plan (under g_mu). */
static shim_plan *find_locked(cufftHandle h)
{
    unsigned idx;
    if (h <= 0) return NULL;
    idx = ((unsigned)h & 0xffffu) - 1;
    if (idx >= MAX_PLANS || !g_plans[idx] || handle_of(idx) != h) return NULL;
    return g_plans[idx];
}

static cufftResult map_err(int rv, int planning)
{
    switch (rv) {
    case AGILE_OK:
        return CUFFT_SUCCESS;
    case AGILE_EINVAL:
        return planning ? CUFFT_INVALID_SIZE : CUFFT_INVALID_VALUE;
    case AGILE_EBOUNDS:
        return CUFFT_INVALID_VALUE;
    case AGILE_EHANDLE:
        return CUFFT_INVALID_PLAN;
    case AGILE_ENOMEM:
    case AGILE_EQUOTA:
        return CUFFT_ALLOC_FAILED;
    case AGILE_EPERM:
    case AGILE_ENOTSUP:
        return CUFFT_NOT_SUPPORTED;
    case AGILE_ENODEV:
    case AGILE_ENOWORKER:
    case AGILE_ECLOSED:
        return CUFFT_SETUP_FAILED;
    default:
        return planning ? CUFFT_INTERNAL_ERROR : CUFFT_EXEC_FAILED;
    }
}

static int type_ok(int t)
{
    return t == CUFFT_R2C || t == CUFFT_C2R || t == CUFFT_C2C || t == CUFFT_D2Z || t == CUFFT_Z2D ||
           t == CUFFT_Z2Z;
}

SHIM_API cufftResult cufftCreate(cufftHandle *handle)
{
    shim_plan *p;
    if (!handle) return CUFFT_INVALID_VALUE;
    if (!(p = calloc(1, sizeof *p))) return CUFFT_ALLOC_FAILED;
    pthread_mutex_lock(&g_mu);
    for (unsigned i = 0; i < MAX_PLANS; i++) {
        if (!g_plans[i]) {
            g_plans[i] = p;
            g_gen[i]++;
            if (!(g_gen[i] & 0x7fffu)) g_gen[i]++;
            *handle = handle_of(i);
            pthread_mutex_unlock(&g_mu);
            return CUFFT_SUCCESS;
        }
    }
    pthread_mutex_unlock(&g_mu);
    free(p);
    return CUFFT_ALLOC_FAILED;
}

SHIM_API cufftResult cufftDestroy(cufftHandle plan)
{
    shim_plan *p;
    pthread_mutex_lock(&g_mu);
    p = find_locked(plan);
    if (p) g_plans[((unsigned)plan & 0xffffu) - 1] = NULL;
    pthread_mutex_unlock(&g_mu);
    if (!p) return plan == CUFFT_PLAN_NULL ? CUFFT_SUCCESS : CUFFT_INVALID_PLAN;
    for (int d = 0; d < AGILE_MAX_DEV; d++)
        for (int ip = 0; ip < 2; ip++)
            if (p->h[d][ip]) agile_fft_destroy(p->h[d][ip]);
    free(p);
    return CUFFT_SUCCESS;
}

static int worker_plan(const shim_plan *p, int dev, int inplace, agile_handle_t *out)
{
    return agile_fft_plan_many(dev, p->rank, p->n, p->advanced ? p->inembed : NULL, p->istride,
                               p->idist, p->advanced ? p->onembed : NULL, p->ostride, p->odist,
                               p->type, p->batch, inplace, out);
}

/* Describe the plan and make it on the worker (device 0, out of place). */
static cufftResult make(cufftHandle plan, int rank, const long long *n, const long long *inembed,
                        long long istride, long long idist, const long long *onembed,
                        long long ostride, long long odist, int type, long long batch, size_t *work)
{
    shim_plan desc, *p;
    agile_handle_t h = 0;
    int rv;

    if (rank < 1 || rank > 3 || !n || batch < 1) return CUFFT_INVALID_SIZE;
    if (!type_ok(type)) return CUFFT_INVALID_TYPE;
    memset(&desc, 0, sizeof desc);
    desc.type = type;
    desc.rank = rank;
    desc.batch = batch;
    desc.advanced = inembed && onembed;
    for (int i = 0; i < rank; i++) {
        desc.n[i] = n[i];
        if (desc.advanced) {
            desc.inembed[i] = inembed[i];
            desc.onembed[i] = onembed[i];
        }
    }
    if (desc.advanced) {
        desc.istride = istride;
        desc.idist = idist;
        desc.ostride = ostride;
        desc.odist = odist;
    }
    rv = worker_plan(&desc, 0, 0, &h);
    if (rv != AGILE_OK) return map_err(rv, 1);
    pthread_mutex_lock(&g_mu);
    p = find_locked(plan);
    if (p && !p->made) {
        void *stream = p->stream;
        *p = desc;
        p->stream = stream;
        p->h[0][0] = h;
        p->made = 1;
        h = 0;
    }
    pthread_mutex_unlock(&g_mu);
    if (h) {
        agile_fft_destroy(h);
        return p ? CUFFT_INVALID_VALUE : CUFFT_INVALID_PLAN; /* already made: cuFFT refuses */
    }
    if (work) *work = 0; /* the worker owns work areas */
    return CUFFT_SUCCESS;
}

static cufftResult make_int(cufftHandle plan, int rank, const int *n, const int *inembed,
                            int istride, int idist, const int *onembed, int ostride, int odist,
                            cufftType type, int batch, size_t *work)
{
    long long nn[3], ie[3], oe[3];
    if (rank < 1 || rank > 3 || !n) return CUFFT_INVALID_SIZE;
    for (int i = 0; i < rank; i++) {
        nn[i] = n[i];
        ie[i] = inembed ? inembed[i] : 0;
        oe[i] = onembed ? onembed[i] : 0;
    }
    return make(plan, rank, nn, inembed ? ie : NULL, istride, idist, onembed ? oe : NULL, ostride,
                odist, (int)type, batch, work);
}

/* cufftPlan*: create + make; on failure the handle is released (as cuFFT does). */
static cufftResult create_and_make(cufftHandle *plan, int rank, const int *n, cufftType type,
                                   int batch)
{
    cufftHandle h;
    cufftResult r;
    if (!plan) return CUFFT_INVALID_VALUE;
    if ((r = cufftCreate(&h)) != CUFFT_SUCCESS) return r;
    r = make_int(h, rank, n, NULL, 0, 0, NULL, 0, 0, type, batch, NULL);
    if (r != CUFFT_SUCCESS) {
        cufftDestroy(h);
        return r;
    }
    *plan = h;
    return CUFFT_SUCCESS;
}

SHIM_API cufftResult cufftPlan1d(cufftHandle *plan, int nx, cufftType type, int batch)
{
    int n[1] = {nx};
    return create_and_make(plan, 1, n, type, batch);
}

SHIM_API cufftResult cufftPlan2d(cufftHandle *plan, int nx, int ny, cufftType type)
{
    int n[2] = {nx, ny};
    return create_and_make(plan, 2, n, type, 1);
}

SHIM_API cufftResult cufftPlan3d(cufftHandle *plan, int nx, int ny, int nz, cufftType type)
{
    int n[3] = {nx, ny, nz};
    return create_and_make(plan, 3, n, type, 1);
}

SHIM_API cufftResult cufftPlanMany(cufftHandle *plan, int rank, int *n, int *inembed, int istride,
                                   int idist, int *onembed, int ostride, int odist, cufftType type,
                                   int batch)
{
    cufftHandle h;
    cufftResult r;
    if (!plan) return CUFFT_INVALID_VALUE;
    if ((r = cufftCreate(&h)) != CUFFT_SUCCESS) return r;
    r = make_int(h, rank, n, inembed, istride, idist, onembed, ostride, odist, type, batch, NULL);
    if (r != CUFFT_SUCCESS) {
        cufftDestroy(h);
        return r;
    }
    *plan = h;
    return CUFFT_SUCCESS;
}

SHIM_API cufftResult cufftMakePlan1d(cufftHandle plan, int nx, cufftType type, int batch,
                                     size_t *workSize)
{
    int n[1] = {nx};
    return make_int(plan, 1, n, NULL, 0, 0, NULL, 0, 0, type, batch, workSize);
}

SHIM_API cufftResult cufftMakePlan2d(cufftHandle plan, int nx, int ny, cufftType type,
                                     size_t *workSize)
{
    int n[2] = {nx, ny};
    return make_int(plan, 2, n, NULL, 0, 0, NULL, 0, 0, type, 1, workSize);
}

SHIM_API cufftResult cufftMakePlan3d(cufftHandle plan, int nx, int ny, int nz, cufftType type,
                                     size_t *workSize)
{
    int n[3] = {nx, ny, nz};
    return make_int(plan, 3, n, NULL, 0, 0, NULL, 0, 0, type, 1, workSize);
}

SHIM_API cufftResult cufftMakePlanMany(cufftHandle plan, int rank, int *n, int *inembed,
                                       int istride, int idist, int *onembed, int ostride, int odist,
                                       cufftType type, int batch, size_t *workSize)
{
    return make_int(plan, rank, n, inembed, istride, idist, onembed, ostride, odist, type, batch,
                    workSize);
}

SHIM_API cufftResult cufftMakePlanMany64(cufftHandle plan, int rank, long long int *n,
                                         long long int *inembed, long long int istride,
                                         long long int idist, long long int *onembed,
                                         long long int ostride, long long int odist, cufftType type,
                                         long long int batch, size_t *workSize)
{
    return make(plan, rank, n, inembed, istride, idist, onembed, ostride, odist, (int)type, batch,
                workSize);
}

/* Work sizes: the worker's work areas are not the caller's business; 0 bytes. */
static cufftResult size_zero(cufftHandle plan, size_t *workSize)
{
    int ok;
    pthread_mutex_lock(&g_mu);
    ok = find_locked(plan) != NULL;
    pthread_mutex_unlock(&g_mu);
    if (!ok) return CUFFT_INVALID_PLAN;
    if (!workSize) return CUFFT_INVALID_VALUE;
    *workSize = 0;
    return CUFFT_SUCCESS;
}

SHIM_API cufftResult cufftGetSize1d(cufftHandle handle, int nx, cufftType type, int batch,
                                    size_t *workSize)
{
    return size_zero(handle, workSize);
}

SHIM_API cufftResult cufftGetSize2d(cufftHandle handle, int nx, int ny, cufftType type,
                                    size_t *workSize)
{
    return size_zero(handle, workSize);
}

SHIM_API cufftResult cufftGetSize3d(cufftHandle handle, int nx, int ny, int nz, cufftType type,
                                    size_t *workSize)
{
    return size_zero(handle, workSize);
}

SHIM_API cufftResult cufftGetSizeMany(cufftHandle handle, int rank, int *n, int *inembed,
                                      int istride, int idist, int *onembed, int ostride, int odist,
                                      cufftType type, int batch, size_t *workArea)
{
    return size_zero(handle, workArea);
}

SHIM_API cufftResult cufftGetSizeMany64(cufftHandle plan, int rank, long long int *n,
                                        long long int *inembed, long long int istride,
                                        long long int idist, long long int *onembed,
                                        long long int ostride, long long int odist, cufftType type,
                                        long long int batch, size_t *workSize)
{
    return size_zero(plan, workSize);
}

SHIM_API cufftResult cufftGetSize(cufftHandle handle, size_t *workSize)
{
    return size_zero(handle, workSize);
}

SHIM_API cufftResult cufftSetWorkArea(cufftHandle plan, void *workArea)
{
    size_t dummy;
    return size_zero(plan, &dummy);
}

SHIM_API cufftResult cufftSetAutoAllocation(cufftHandle plan, int autoAllocate)
{
    size_t dummy;
    return size_zero(plan, &dummy);
}

SHIM_API cufftResult cufftSetStream(cufftHandle plan, cudaStream_t stream)
{
    shim_plan *p;
    pthread_mutex_lock(&g_mu);
    if ((p = find_locked(plan))) p->stream = (void *)stream;
    pthread_mutex_unlock(&g_mu);
    return p ? CUFFT_SUCCESS : CUFFT_INVALID_PLAN;
}

SHIM_API cufftResult cufftGetVersion(int *version)
{
    if (!version) return CUFFT_INVALID_VALUE;
    *version =
        CUFFT_VERSION; /* the API level this shim implements (the headers it was built with) */
    return CUFFT_SUCCESS;
}

static int device_of(const void *ptr)
{
    uint64_t base, size, a = (uint64_t)(uintptr_t)ptr;
    for (int d = 0; d < AGILE_MAX_DEV; d++)
        if (agile_pool_window(d, &base, &size) == AGILE_OK && a >= base && a - base < size)
            return d;
    return -1;
}

static cufftResult exec(cufftHandle plan, int type, const void *in, void *out, int direction)
{
    shim_plan *p, snap;
    agile_handle_t h, mine = 0;
    int dev, ip = in == out, rv;

    pthread_mutex_lock(&g_mu);
    p = find_locked(plan);
    if (p) snap = *p;
    pthread_mutex_unlock(&g_mu);
    if (!p || !snap.made) return CUFFT_INVALID_PLAN;
    if (snap.type != type) return CUFFT_INVALID_VALUE; /* e.g. cufftExecR2C on a C2C plan */
    if (!in || !out || (dev = device_of(in)) < 0)
        return CUFFT_INVALID_VALUE; /* not agile_malloc memory: see the header comment */
    h = snap.h[dev][ip];
    if (!h) {
        if ((rv = worker_plan(&snap, dev, ip, &mine)) != AGILE_OK) return map_err(rv, 0);
        pthread_mutex_lock(&g_mu);
        p = find_locked(plan);
        if (p && !p->h[dev][ip]) {
            p->h[dev][ip] = mine;
            mine = 0;
        }
        h = p ? p->h[dev][ip] : 0;
        pthread_mutex_unlock(&g_mu);
        if (mine) agile_fft_destroy(mine); /* a racing exec made it first, or the plan is gone */
        if (!h) return CUFFT_INVALID_PLAN;
    }
    return map_err(agile_fft_exec(h, in, out, direction, snap.stream), 0);
}

SHIM_API cufftResult cufftExecC2C(cufftHandle plan, cufftComplex *idata, cufftComplex *odata,
                                  int direction)
{
    if (direction != CUFFT_FORWARD && direction != CUFFT_INVERSE) return CUFFT_INVALID_VALUE;
    return exec(plan, CUFFT_C2C, idata, odata, direction);
}

SHIM_API cufftResult cufftExecR2C(cufftHandle plan, cufftReal *idata, cufftComplex *odata)
{
    return exec(plan, CUFFT_R2C, idata, odata, CUFFT_FORWARD);
}

SHIM_API cufftResult cufftExecC2R(cufftHandle plan, cufftComplex *idata, cufftReal *odata)
{
    return exec(plan, CUFFT_C2R, idata, odata, CUFFT_INVERSE);
}

SHIM_API cufftResult cufftExecZ2Z(cufftHandle plan, cufftDoubleComplex *idata,
                                  cufftDoubleComplex *odata, int direction)
{
    if (direction != CUFFT_FORWARD && direction != CUFFT_INVERSE) return CUFFT_INVALID_VALUE;
    return exec(plan, CUFFT_Z2Z, idata, odata, direction);
}

SHIM_API cufftResult cufftExecD2Z(cufftHandle plan, cufftDoubleReal *idata,
                                  cufftDoubleComplex *odata)
{
    return exec(plan, CUFFT_D2Z, idata, odata, CUFFT_FORWARD);
}

SHIM_API cufftResult cufftExecZ2D(cufftHandle plan, cufftDoubleComplex *idata,
                                  cufftDoubleReal *odata)
{
    return exec(plan, CUFFT_Z2D, idata, odata, CUFFT_INVERSE);
}
