/* backend_cuda.c — windows in GPU virtual memory through the driver's VMM API
 * (cuMemAddressReserve / cuMemCreate / cuMemMap / cuMemSetAccess), leases exported as
 * POSIX file descriptors. See docs/design.md "Memory: windows, leases, sinks". */
#include "backend_int.h"
#include "cudadrv.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Granule states of a window (window + gap), one byte each. */
enum { G_NONE = 0, G_BIG = 1, G_SMALL = 2, G_LEASE = 3 };

/* A pooled chunk: zeroed, unmapped, exported; only the worker holds h and fd. */
typedef struct pool_chunk {
    CUmemGenericAllocationHandle h;
    uint64_t size;
    int fd;       /* close-on-exec */
    unsigned gen; /* the context generation it was made in */
} pool_chunk;

/* Lease pool of one device. The lists and counters are under cuda_backend.pmu, which is
 * never held across a driver call; the scratch below is under zmu, which only refills and
 * reconfiguration take (never lease_create), so a slow refill delays no lease. */
typedef struct cuda_pool {
    pool_chunk ready[AGILE_LEASE_POOL_MAX]; /* a stack: [0, nready) */
    unsigned nready, inflight, target;
    uint64_t chunk;
    bool manual, armed; /* armed: the device has had a window, or was configured */
    unsigned streak;    /* failed refills in a row: the background backoff */
    uint64_t retry_at;  /* agile__now_ns() before which the thread does not retry */
    agile__pool_stats st;
    pthread_mutex_t zmu;
    CUdeviceptr zva; /* a worker-only reservation of zsize bytes to zero chunks through */
    uint64_t zsize;
    CUdeviceptr zstuck; /* a zva whose unmap failed: retried at close */
    uint64_t zstuck_size;
    CUstream zstream; /* its own stream: a refill never waits behind memset/memcpy work */
} cuda_pool;

typedef struct cuda_dev {
    CUdevice dev;
    CUcontext ctx; /* the primary context: the one PyTorch and the runtime use too */
    CUstream stream;
    uint64_t gran;
    bool vmm;     /* VMM + POSIX fd handles supported */
    bool own_ctx; /* ctx is the worker's own (a primary context that would not reset) */
    cuda_pool pool;
    /* Every call into the context holds rw shared (push/pop); a reset holds it exclusively,
     * so no call runs in a context while it is being replaced. glibc's default rwlock
     * prefers readers, so the nested pushes of one thread never wait for a queued reset. */
    pthread_rwlock_t rw;
    /* What a reset restores: live windows and protected allocations, under regmu. */
    pthread_mutex_t regmu;
    agile__window **wins;
    size_t nwins, capwins;
    agile__pmem **pms;
    size_t npms, cappms;
    _Atomic unsigned gen; /* context resets so far */
} cuda_dev;

typedef struct cuda_backend {
    agile__backend be; /* first: the generic code sees only this */
    int ndev;
    cuda_dev *devs;
    /* lease pool: one refill thread for all devices */
    pthread_mutex_t pmu;
    pthread_cond_t pcv; /* pool state changed: work for the thread, or a refill ended */
    pthread_t thr;
    bool thr_started, stop;
} cuda_backend;

static cuda_backend *CB(agile__backend *be)
{
    return (cuda_backend *)be;
}

#define CU(call) agile__cu_err((call), #call)

/* The devices whose rw this thread holds shared, innermost last (push/pop nest). */
enum { MAX_NEST = 32 };
static _Thread_local cuda_dev *tl_held[MAX_NEST];
static _Thread_local int tl_nheld;

static int push(agile__backend *be, int dev)
{
    cuda_dev *d = &CB(be)->devs[dev];
    int rv;
    if (tl_nheld == MAX_NEST) return AGILE_EINTERNAL;
    pthread_rwlock_rdlock(&d->rw);
    rv = CU(agile__cu.cuCtxPushCurrent(d->ctx));
    if (rv != AGILE_OK) {
        pthread_rwlock_unlock(&d->rw);
        return rv;
    }
    tl_held[tl_nheld++] = d;
    return AGILE_OK;
}

static void pop(void)
{
    CUcontext c;
    agile__cu.cuCtxPopCurrent(&c);
    if (tl_nheld > 0) pthread_rwlock_unlock(&tl_held[--tl_nheld]->rw);
}

/* Registries of what a reset restores. */
static int reg_add(pthread_mutex_t *mu, void ***arr, size_t *n, size_t *cap, void *x)
{
    int rv = AGILE_OK;
    pthread_mutex_lock(mu);
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        void **na = realloc(*arr, nc * sizeof *na);
        if (!na) {
            rv = AGILE_ENOMEM;
            goto out;
        }
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = x;
out:
    pthread_mutex_unlock(mu);
    return rv;
}

static void reg_del(pthread_mutex_t *mu, void **arr, size_t *n, const void *x)
{
    pthread_mutex_lock(mu);
    for (size_t i = 0; i < *n; i++) {
        if (arr[i] == x) {
            arr[i] = arr[--*n];
            break;
        }
    }
    pthread_mutex_unlock(mu);
}

static CUmemAllocationProp alloc_prop(CUdevice dev, bool exportable)
{
    CUmemAllocationProp p;
    memset(&p, 0, sizeof p);
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.id = dev;
    p.requestedHandleTypes =
        exportable ? CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR : CU_MEM_HANDLE_TYPE_NONE;
    return p;
}

static void pool_close(cuda_backend *cb);
static void pool_arm(cuda_backend *cb, int dev);

static void cuda_close(agile__backend *be)
{
    cuda_backend *cb = CB(be);
    pool_close(cb);
    for (int i = 0; i < cb->ndev; i++) {
        cuda_dev *d = &cb->devs[i];
        if (d->stream && push(be, i) == AGILE_OK) {
            agile__cu.cuStreamDestroy(d->stream);
            pop();
        }
        if (d->ctx && d->own_ctx && agile__cu.cuCtxDestroy)
            agile__cu.cuCtxDestroy(d->ctx);
        else if (d->ctx)
            agile__cu.cuDevicePrimaryCtxRelease(d->dev);
    }
    for (int i = 0; i < cb->ndev; i++) {
        pthread_mutex_destroy(&cb->devs[i].pool.zmu);
        pthread_rwlock_destroy(&cb->devs[i].rw);
        pthread_mutex_destroy(&cb->devs[i].regmu);
        free(cb->devs[i].wins);
        free(cb->devs[i].pms);
    }
    pthread_cond_destroy(&cb->pcv);
    pthread_mutex_destroy(&cb->pmu);
    free(cb->devs);
    free(cb);
}

static uint64_t env_u64(const char *name, uint64_t dflt, uint64_t max)
{
    const char *v = getenv(name);
    char *end;
    unsigned long long x;
    if (!v || !*v) return dflt;
    errno = 0;
    x = strtoull(v, &end, 10);
    if (errno || *end || x > max) {
        agile__warn("cuda: ignoring %s=%s (want 0..%llu)", name, v, (unsigned long long)max);
        return dflt;
    }
    return x;
}

int agile__cuda_open(agile__backend **out, char *why, size_t whycap)
{
    int rv = AGILE_OK, n = 0;
    cuda_backend *cb = NULL;

    AGILE_TRY(agile__cuda_load(why, whycap));
    AGILE_TRY(CU(agile__cu.cuDeviceGetCount(&n)));
    cb = calloc(1, sizeof *cb);
    if (!cb || !(cb->devs = calloc((size_t)n, sizeof *cb->devs))) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    cb->be.ops = &agile__cuda_ops;
    cb->be.kind = AGILE_BACKEND_KIND_CUDA;
    cb->ndev = n;
    {
        /* the refill thread's backoff waits on agile__now_ns()'s clock */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&cb->pcv, &ca);
        pthread_condattr_destroy(&ca);
    }
    pthread_mutex_init(&cb->pmu, NULL);
    for (int i = 0; i < n; i++) {
        pthread_mutex_init(&cb->devs[i].pool.zmu, NULL);
        pthread_rwlock_init(&cb->devs[i].rw, NULL);
        pthread_mutex_init(&cb->devs[i].regmu, NULL);
    }
    for (int i = 0; i < n; i++) {
        cuda_dev *d = &cb->devs[i];
        int vmm = 0, fdh = 0;
        size_t g = 0;
        CUmemAllocationProp p;
        AGILE_TRY(CU(agile__cu.cuDeviceGet(&d->dev, i)));
        agile__cu.cuDeviceGetAttribute(
            &vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, d->dev);
        agile__cu.cuDeviceGetAttribute(
            &fdh, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, d->dev);
        d->vmm = vmm && fdh;
        rv = CU(agile__cu.cuDevicePrimaryCtxRetain(&d->ctx, d->dev));
        if (rv != AGILE_OK) {
            d->ctx = NULL;
            if (why && whycap)
                snprintf(why, whycap, "cannot retain the primary context of GPU %d: %s", i,
                         agile__cu_name((CUresult)(rv & AGILE_ERR_CODE_MASK)));
            goto out;
        }
        AGILE_TRY(push(&cb->be, i));
        rv = CU(agile__cu.cuStreamCreate(&d->stream, CU_STREAM_NON_BLOCKING));
        pop();
        if (rv != AGILE_OK) goto out;
        p = alloc_prop(d->dev, true);
        if (d->vmm && agile__cu.cuMemGetAllocationGranularity(
                          &g, &p, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS)
            d->vmm = false;
        d->gran = g ? g : (2ull << 20);
        if (!d->vmm)
            agile__warn("cuda: GPU %d lacks VMM with POSIX fd handles: no windows on it", i);
        /* Not filled yet: a worker pays for the pool only on GPUs that get a window. */
        d->pool.target =
            d->vmm ? (unsigned)env_u64("AGILE_LEASE_POOL", 2, AGILE_LEASE_POOL_MAX) : 0;
        d->pool.chunk = AGILE_ALIGN_UP(env_u64("AGILE_LEASE_POOL_MIB", 64, 1 << 20) << 20, d->gran);
        if (d->pool.chunk == 0) d->pool.target = 0;
    }
    *out = &cb->be;
    cb = NULL;
out:
    if (cb) cuda_close(&cb->be);
    return rv;
}

static int cuda_device_count(agile__backend *be)
{
    return CB(be)->ndev;
}

static int cuda_device_info(agile__backend *be, int dev, agile__devinfo *out)
{
    int rv = AGILE_OK, maj = 0, min = 0;
    cuda_dev *d = &CB(be)->devs[dev];
    size_t total = 0, fr = 0;
    CUuuid u;
    const unsigned char *b;

    AGILE_TRY(CU(agile__cu.cuDeviceGetName(out->name, (int)sizeof out->name, d->dev)));
    AGILE_TRY(CU(agile__cu.cuDeviceTotalMem(&total, d->dev)));
    agile__cu.cuDeviceGetAttribute(&maj, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d->dev);
    agile__cu.cuDeviceGetAttribute(&min, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d->dev);
    AGILE_TRY(CU(agile__cu.cuDeviceGetUuid(&u, d->dev)));
    b = (const unsigned char *)u.bytes;
    snprintf(out->uuid, sizeof out->uuid,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    AGILE_TRY(push(be, dev));
    rv = CU(agile__cu.cuMemGetInfo(&fr, &total));
    pop();
    out->total_mem = total;
    out->free_mem = fr;
    out->cc_major = maj;
    out->cc_minor = min;
    out->granularity = d->gran;
out:
    return rv;
}

static uint64_t cuda_granularity(agile__backend *be, int dev)
{
    return CB(be)->devs[dev].gran;
}

/* ---- sink bookkeeping --------------------------------------------------------------------
 * cuMemMap maps whole allocations (offset must be 0) and cuMemUnmap removes whole
 * mappings, so the window is tiled with whole sink chunks at chunk-aligned offsets (G_BIG)
 * and single-granule sink mappings (G_SMALL) elsewhere; gmap says which is where. */

static uint64_t gva(const agile__window *w, uint64_t g)
{
    return w->base + g * w->gran;
}

static uint64_t per_chunk(const agile__window *w)
{
    return w->chunk / w->gran;
}

/* Map the sink over the unmapped granules [g0, g1) (no access set yet). */
static int sink_map(agile__window *w, uint64_t g0, uint64_t g1)
{
    uint64_t cg = per_chunk(w);
    for (uint64_t g = g0; g < g1;) {
        if (cg > 1 && g % cg == 0 && g + cg <= g1) {
            int rv = CU(agile__cu.cuMemMap(gva(w, g), w->chunk, 0, w->sink_big, 0));
            if (rv != AGILE_OK) return rv;
            memset(w->gmap + g, G_BIG, cg);
            g += cg;
        } else {
            int rv = CU(agile__cu.cuMemMap(gva(w, g), w->gran, 0, w->sink_small, 0));
            if (rv != AGILE_OK) return rv;
            w->gmap[g] = G_SMALL;
            g++;
        }
    }
    return AGILE_OK;
}

/* Unmap whatever is mapped in [g0, g1) (sink and lease granules alike; leases by the
 * caller). Used by destroy and rollback. */
static void unmap_all(agile__window *w, uint64_t g0, uint64_t g1)
{
    uint64_t cg = per_chunk(w);
    for (uint64_t g = g0; g < g1;) {
        if (w->gmap[g] == G_BIG) {
            agile__cu.cuMemUnmap(gva(w, g), w->chunk);
            memset(w->gmap + g, G_NONE, cg);
            g += cg;
        } else if (w->gmap[g] == G_SMALL) {
            agile__cu.cuMemUnmap(gva(w, g), w->gran);
            w->gmap[g] = G_NONE;
            g++;
        } else {
            g++;
        }
    }
}

/* Take the sink off [g0, g1): whole chunks that stick out are replaced by small sink
 * pieces outside the range. [*a0, *a1) receives the span whose access must be set again
 * once the range is mapped. */
static int sink_unmap(agile__window *w, uint64_t g0, uint64_t g1, uint64_t *a0, uint64_t *a1)
{
    uint64_t cg = per_chunk(w);
    *a0 = g0;
    *a1 = g1;
    for (uint64_t g = g0; g < g1;) {
        if (w->gmap[g] == G_BIG) {
            uint64_t p = g - g % cg;
            int rv = CU(agile__cu.cuMemUnmap(gva(w, p), w->chunk));
            if (rv != AGILE_OK) return rv;
            memset(w->gmap + p, G_NONE, cg);
            /* widen first, so that a repair after a failure below covers the chunk */
            *a0 = AGILE_MIN(*a0, p);
            *a1 = AGILE_MAX(*a1, p + cg);
            for (uint64_t i = p; i < p + cg; i++) {
                if (i >= g0 && i < g1) continue;
                rv = sink_map(w, i, i + 1);
                if (rv != AGILE_OK) return rv;
            }
            g = p + cg;
        } else if (w->gmap[g] == G_SMALL) {
            int rv = CU(agile__cu.cuMemUnmap(gva(w, g), w->gran));
            if (rv != AGILE_OK) return rv;
            w->gmap[g] = G_NONE;
            g++;
        } else {
            return AGILE_EINTERNAL; /* a lease there: the caller checked, so a bug */
        }
    }
    return AGILE_OK;
}

/* Chunks touching [g0, g1) that are all small sink pieces again become one big mapping,
 * so fragments exist only around live leases and a window keeps ~1024 mappings. */
static int sink_coalesce(agile__window *w, uint64_t g0, uint64_t g1, uint64_t *a0, uint64_t *a1)
{
    uint64_t cg = per_chunk(w), ng = (w->size + w->gap) / w->gran;
    if (cg == 1) return AGILE_OK;
    for (uint64_t p = g0 - g0 % cg; p < g1 && p + cg <= ng; p += cg) {
        bool all = true;
        for (uint64_t i = p; i < p + cg && all; i++)
            all = w->gmap[i] == G_SMALL;
        if (!all) continue;
        *a0 = AGILE_MIN(*a0, p);
        *a1 = AGILE_MAX(*a1, p + cg);
        for (uint64_t i = p; i < p + cg; i++) {
            int rv = CU(agile__cu.cuMemUnmap(gva(w, i), w->gran));
            if (rv != AGILE_OK) return rv;
            w->gmap[i] = G_NONE;
        }
        int rv = sink_map(w, p, p + cg);
        if (rv != AGILE_OK) return rv;
    }
    return AGILE_OK;
}

/* After a failure: sink over every unmapped granule of [a0, a1), access set again. If
 * even that fails the window's state is unknown: it refuses further leases. */
static void repair(agile__window *w, uint64_t a0, uint64_t a1)
{
    for (uint64_t g = a0; g < a1; g++)
        if (w->gmap[g] == G_NONE && sink_map(w, g, g + 1) != AGILE_OK) goto broken;
    /* back to whole chunks where no lease is left, so failures do not pile up mappings */
    if (sink_coalesce(w, a0, a1, &a0, &a1) != AGILE_OK) {
        for (uint64_t g = a0; g < a1; g++)
            if (w->gmap[g] == G_NONE && sink_map(w, g, g + 1) != AGILE_OK) goto broken;
    }
    if (agile__cu_set_access(CB(w->be)->devs[w->dev].dev, gva(w, a0), (a1 - a0) * w->gran) == AGILE_OK)
        return;
broken:
    agile__error("cuda: window %#llx: cannot restore the sink; the window is unusable",
                 (unsigned long long)w->base);
    w->broken = true;
}

static void window_free(agile__window *w)
{
    uint64_t ng = (w->size + w->gap) / w->gran;
    for (size_t i = 0; i < w->norphans; i++) {
        agile__cu.cuMemUnmap(w->base + w->orphans[i].offset, w->orphans[i].size);
        agile__cu.cuMemRelease(w->orphans[i].handle);
    }
    free(w->orphans);
    w->orphans = NULL;
    w->norphans = 0;
    if (w->gmap) unmap_all(w, 0, ng);
    if (w->sink_small && w->sink_small != w->sink_big) agile__cu.cuMemRelease(w->sink_small);
    if (w->sink_big) agile__cu.cuMemRelease(w->sink_big);
    if (w->base) agile__cu.cuMemAddressFree(w->base, w->size + w->gap);
    free(w->gmap);
    w->gmap = NULL;
}

static int cuda_window_create(agile__window *w)
{
    int rv = AGILE_OK;
    cuda_dev *d = &CB(w->be)->devs[w->dev];
    uint64_t ng = (w->size + w->gap) / w->gran;
    CUdeviceptr va = 0;
    CUmemAllocationProp p = alloc_prop(d->dev, false);
    CUmemGenericAllocationHandle h = 0;

    if (!d->vmm) return AGILE_ENOTSUP;
    /* first: the pool fills while this window is set up */
    pool_arm(CB(w->be), w->dev);
    AGILE_TRY(push(w->be, w->dev));
    if (!(w->gmap = calloc(ng, 1))) {
        rv = AGILE_ENOMEM;
        goto popout;
    }
    /* alignment = size: offsets translate with one and/or (docs/design.md). */
    rv = CU(agile__cu.cuMemAddressReserve(&va, w->size + w->gap, w->size, 0, 0));
    if (rv != AGILE_OK) goto popout;
    w->base = va;
    rv = CU(agile__cu.cuMemCreate(&h, w->chunk, &p, 0));
    if (rv != AGILE_OK) goto popout;
    w->sink_big = h;
    if (w->chunk == w->gran) {
        w->sink_small = h;
    } else {
        rv = CU(agile__cu.cuMemCreate(&h, w->gran, &p, 0));
        if (rv != AGILE_OK) goto popout;
        w->sink_small = h;
    }
    /* Fresh physical memory is not guaranteed zero, and what a tenant reads in its sink
     * must be its own writes only: zero the small sink through a moment's mapping at the
     * base, then the big one through the window. */
    if (w->sink_small != w->sink_big) {
        rv = CU(agile__cu.cuMemMap(w->base, w->gran, 0, w->sink_small, 0));
        if (rv != AGILE_OK) goto popout;
        w->gmap[0] = G_SMALL; /* so a failure below unmaps it */
        rv = agile__cu_set_access(d->dev, w->base, w->gran);
        if (rv == AGILE_OK) rv = CU(agile__cu.cuMemsetD8Async(w->base, 0, w->gran, d->stream));
        if (rv == AGILE_OK) rv = CU(agile__cu.cuStreamSynchronize(d->stream));
        if (rv != AGILE_OK) goto popout;
        rv = CU(agile__cu.cuMemUnmap(w->base, w->gran));
        if (rv != AGILE_OK) goto popout;
        w->gmap[0] = G_NONE;
    }
    rv = sink_map(w, 0, ng);
    if (rv == AGILE_OK) rv = agile__cu_set_access(d->dev, w->base, w->size + w->gap);
    if (rv == AGILE_OK) rv = CU(agile__cu.cuMemsetD8Async(w->base, 0, w->chunk, d->stream));
    if (rv == AGILE_OK) rv = CU(agile__cu.cuStreamSynchronize(d->stream));
    if (rv == AGILE_OK) rv = reg_add(&d->regmu, (void ***)&d->wins, &d->nwins, &d->capwins, w);
popout:
    if (rv != AGILE_OK) window_free(w);
    pop();
out:
    return rv;
}

static void cuda_window_destroy(agile__window *w)
{
    cuda_dev *d = &CB(w->be)->devs[w->dev];
    reg_del(&d->regmu, (void **)d->wins, &d->nwins, w);
    for (agile__lease *l = w->leases; l; l = l->next) {
        if (l->keep_fd) close(l->keep_fd - 1);
        l->keep_fd = 0;
    }
    if (push(w->be, w->dev) != AGILE_OK) {
        agile__error("cuda: cannot enter the context to destroy window %#llx",
                     (unsigned long long)w->base);
        return;
    }
    for (agile__lease *l = w->leases; l; l = l->next) {
        agile__cu.cuMemUnmap(w->base + l->offset, l->size);
        agile__cu.cuMemRelease(l->handle);
        memset(w->gmap + l->offset / w->gran, G_NONE, l->size / w->gran);
    }
    window_free(w);
    pop();
}

/* ---- timings (AGILE_LOG=debug) -------------------------------------------------------------
 * Each driver call of a lease or a refill, in µs, on one debug line: the figures
 * backend-gpu-test's breakdown gives, but for the calls the worker really makes. */

/* The CUDA error's own name where there is one: AGILE_ECUDA alone says little. */
static const char *err_name(int rv)
{
    if (agile_err_class(rv) == AGILE_ECUDA)
        return agile__cu_name((CUresult)(rv & AGILE_ERR_CODE_MASK));
    return agile_err_name(rv);
}

enum { MAX_STEPS = 10 };
typedef struct steps {
    bool on;
    int n;
    uint64_t t0, t;
    const char *name[MAX_STEPS];
    uint64_t ns[MAX_STEPS];
} steps;

static void steps_begin(steps *s)
{
    s->on = agile__log_enabled(AGILE_LOG_DEBUG);
    s->n = 0;
    s->t0 = s->t = s->on ? agile__now_ns() : 0;
}

static void step(steps *s, const char *name)
{
    uint64_t now;
    if (!s->on || s->n == MAX_STEPS) return;
    now = agile__now_ns();
    s->name[s->n] = name;
    s->ns[s->n++] = now - s->t;
    s->t = now;
}

static void steps_log(const steps *s, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void steps_log(const steps *s, int rv, const char *fmt, ...)
{
    char buf[640];
    size_t k;
    int m;
    va_list ap;
    if (!s->on) return;
    va_start(ap, fmt);
    m = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    k = m < 0 ? 0 : AGILE_MIN((size_t)m, sizeof buf - 1);
    for (int i = 0; i < s->n && k < sizeof buf - 1; i++) {
        m = snprintf(buf + k, sizeof buf - k, "%s %s %.1f us", i ? "," : ":", s->name[i],
                     (double)s->ns[i] / 1e3);
        k = m < 0 ? k : AGILE_MIN(k + (size_t)m, sizeof buf - 1);
    }
    agile__debug("%s; total %.1f us%s%s", buf, (double)(agile__now_ns() - s->t0) / 1e3,
                 rv == AGILE_OK ? "" : ", failed: ", rv == AGILE_OK ? "" : err_name(rv));
}

/* ---- lease pool ------------------------------------------------------------------------------
 * Of a 64 MiB lease, cuMemCreate, the zeroing (+ its synchronize) and the export do not depend
 * on where the lease goes, and were most of its ~2 ms on the H200; they are done here, ahead
 * of time. What depends on the window (sink unmap, map, access) stays on the hot path.
 * Scrubbing: a chunk is zeroed (and synchronised) before it is pooled, only the worker holds
 * it while pooled (no mapping, the fd in the worker only), and it is pooled once: a lease's
 * chunk is released with the lease, a chunk whose lease failed halfway is released too. */

static void chunk_free(pool_chunk *c)
{
    /* the caller has the device's context current */
    agile__cu.cuMemRelease(c->h);
    close(c->fd);
}

/* Make one zeroed, exported chunk of `size`. Called with zmu held and the device's context
 * current; on failure everything it made is undone. */
static int chunk_make(cuda_dev *d, uint64_t size, pool_chunk *out, steps *sp)
{
    int rv = AGILE_OK, fd = -1;
    cuda_pool *pl = &d->pool;
    CUmemAllocationProp p = alloc_prop(d->dev, true);
    CUmemGenericAllocationHandle h = 0;
    bool mapped = false;

    if (pl->zsize != size) {
        CUdeviceptr va = 0;
        if (pl->zva) agile__cu.cuMemAddressFree(pl->zva, pl->zsize);
        pl->zva = 0;
        pl->zsize = 0;
        AGILE_TRY(CU(agile__cu.cuMemAddressReserve(&va, size, 0, 0, 0)));
        pl->zva = va;
        pl->zsize = size;
    }
    if (!pl->zstream) {
        CUstream st = NULL;
        AGILE_TRY(CU(agile__cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING)));
        pl->zstream = st;
    }
    step(sp, "setup");
    rv = CU(agile__cu.cuMemCreate(&h, size, &p, 0));
    if (rv != AGILE_OK) {
        h = 0;
        goto out;
    }
    step(sp, "cuMemCreate");
    AGILE_TRY(CU(agile__cu.cuMemMap(pl->zva, size, 0, h, 0)));
    mapped = true;
    step(sp, "cuMemMap");
    AGILE_TRY(agile__cu_set_access(d->dev, pl->zva, size));
    step(sp, "cuMemSetAccess");
    /* Fresh physical memory is not guaranteed zero; the synchronize makes the zeros land
     * before the chunk can reach a client context, which is not ordered after our stream. */
    AGILE_TRY(CU(agile__cu.cuMemsetD8Async(pl->zva, 0, size, pl->zstream)));
    AGILE_TRY(CU(agile__cu.cuStreamSynchronize(pl->zstream)));
    step(sp, "cuMemsetD8+sync");
    AGILE_TRY(CU(agile__cu.cuMemUnmap(pl->zva, size)));
    mapped = false;
    step(sp, "cuMemUnmap");
    AGILE_TRY(CU(agile__cu.cuMemExportToShareableHandle(
        &fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0)));
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    step(sp, "export");
    *out = (pool_chunk){h, size, fd, atomic_load(&d->gen)};
    h = 0;
    fd = -1;
out:
    if (mapped && agile__cu.cuMemUnmap(pl->zva, size) != CUDA_SUCCESS) {
        /* Still mapped: the reservation cannot be reused or freed now. Set it aside (close
         * retries); the handle can go, the mapping holds the memory until then. */
        if (pl->zstuck)
            agile__error("cuda: a second zeroing reservation is stuck mapped; it leaks");
        else {
            pl->zstuck = pl->zva;
            pl->zstuck_size = size;
        }
        pl->zva = 0;
        pl->zsize = 0;
    }
    if (h) agile__cu.cuMemRelease(h);
    if (fd >= 0) close(fd);
    return rv;
}

/* Free the zeroing scratch of a pool (zmu held, context current). */
static void zscratch_free(cuda_pool *pl)
{
    if (pl->zstuck && agile__cu.cuMemUnmap(pl->zstuck, pl->zstuck_size) == CUDA_SUCCESS) {
        agile__cu.cuMemAddressFree(pl->zstuck, pl->zstuck_size);
        pl->zstuck = 0;
    }
    if (pl->zva) agile__cu.cuMemAddressFree(pl->zva, pl->zsize);
    pl->zva = 0;
    pl->zsize = 0;
    if (pl->zstream) agile__cu.cuStreamDestroy(pl->zstream);
    pl->zstream = NULL;
}

/* Make one chunk for device i if its pool is short (*idle = true when it is not). The slot
 * is claimed first (inflight), so concurrent fillers never overshoot the target. */
static int pool_refill_one(cuda_backend *cb, int i, bool *idle)
{
    cuda_dev *d = &cb->devs[i];
    cuda_pool *pl = &d->pool;
    pool_chunk c = {0, 0, -1, 0};
    uint64_t size, t0 = agile__now_ns();
    bool kept = false;
    int rv;
    steps sp;

    pthread_mutex_lock(&cb->pmu);
    *idle = cb->stop || pl->nready + pl->inflight >= pl->target;
    if (!*idle) pl->inflight++;
    size = pl->chunk;
    pthread_mutex_unlock(&cb->pmu);
    if (*idle) return AGILE_OK;

    steps_begin(&sp);
    pthread_mutex_lock(&pl->zmu);
    step(&sp, "wait for another refill");
    rv = push(&cb->be, i);
    if (rv == AGILE_OK) {
        rv = chunk_make(d, size, &c, &sp);
        pop();
    }
    pthread_mutex_unlock(&pl->zmu);

    pthread_mutex_lock(&cb->pmu);
    /* reconfigured meanwhile: another size, or fewer chunks wanted */
    kept = rv == AGILE_OK && !cb->stop && size == pl->chunk && pl->nready < pl->target;
    if (kept) pl->ready[pl->nready++] = c;
    pthread_mutex_unlock(&cb->pmu);
    /* before inflight drops: a reconfiguration waits for it, and expects no driver call after */
    if (rv == AGILE_OK && !kept && push(&cb->be, i) == AGILE_OK) {
        chunk_free(&c);
        pop();
    }
    pthread_mutex_lock(&cb->pmu);
    pl->inflight--;
    if (rv == AGILE_OK) {
        pl->st.refills++;
        pl->st.last_refill_ns = agile__now_ns() - t0;
        pl->streak = 0;
    } else {
        pl->st.refill_failures++;
        pl->st.last_error = rv;
        pl->streak++;
    }
    pthread_cond_broadcast(&cb->pcv);
    pthread_mutex_unlock(&cb->pmu);
    steps_log(&sp, rv, "cuda: GPU %d: pool refill %llu MiB", i, (unsigned long long)(size >> 20));
    return rv;
}

/* The refill thread: keeps every armed, non-manual pool at its target; after a failure it
 * waits 10 ms, doubling up to 2.5 s, so a full GPU is not hammered. */
static void *pool_thread(void *arg)
{
    cuda_backend *cb = arg;
    pthread_mutex_lock(&cb->pmu);
    while (!cb->stop) {
        uint64_t now = agile__now_ns(), wake = 0;
        int pick = -1;
        for (int i = 0; i < cb->ndev && pick < 0; i++) {
            cuda_pool *pl = &cb->devs[i].pool;
            if (!pl->armed || pl->manual || pl->nready + pl->inflight >= pl->target) continue;
            if (pl->retry_at <= now)
                pick = i;
            else if (!wake || pl->retry_at < wake)
                wake = pl->retry_at;
        }
        if (pick >= 0) {
            cuda_pool *pl = &cb->devs[pick].pool;
            bool idle;
            int rv;
            pthread_mutex_unlock(&cb->pmu);
            rv = pool_refill_one(cb, pick, &idle);
            pthread_mutex_lock(&cb->pmu);
            if (rv != AGILE_OK) {
                unsigned sh = AGILE_MIN(pl->streak, 8u);
                pl->retry_at = agile__now_ns() + (10000000ull << sh);
                if (pl->streak == 1)
                    agile__warn("cuda: GPU %d: lease pool refill failed (%s); retrying in the "
                                "background, leases are made on demand meanwhile",
                                pick, err_name(rv));
            }
        } else if (wake) {
            struct timespec ts = {(time_t)(wake / 1000000000ull), (long)(wake % 1000000000ull)};
            pthread_cond_timedwait(&cb->pcv, &cb->pmu, &ts);
        } else {
            pthread_cond_wait(&cb->pcv, &cb->pmu);
        }
    }
    pthread_mutex_unlock(&cb->pmu);
    return NULL;
}

/* With pmu held. A thread that cannot start leaves the pools empty: leases still work, at
 * the on-demand cost. */
static int thread_start_locked(cuda_backend *cb)
{
    sigset_t all, old;
    int e;
    if (cb->thr_started || cb->stop) return AGILE_OK;
    /* the worker's signals belong to its own threads */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    e = pthread_create(&cb->thr, NULL, pool_thread, cb);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        agile__warn("cuda: cannot start the lease pool thread: %s", strerror(e));
        return agile_err_sys(e);
    }
    cb->thr_started = true;
    return AGILE_OK;
}

/* A device's first window: from now on its pool is kept full. */
static void pool_arm(cuda_backend *cb, int dev)
{
    cuda_pool *pl = &cb->devs[dev].pool;
    pthread_mutex_lock(&cb->pmu);
    if (!pl->armed) {
        pl->armed = true;
        if (pl->target && !pl->manual) thread_start_locked(cb);
        pthread_cond_broadcast(&cb->pcv);
    }
    pthread_mutex_unlock(&cb->pmu);
}

/* Take a pooled chunk for a lease of `size`; counts the outcome, wakes the refill thread. */
static bool pool_take(cuda_backend *cb, cuda_dev *d, uint64_t size, pool_chunk *c)
{
    cuda_pool *pl = &d->pool;
    bool hit = false;
    pthread_mutex_lock(&cb->pmu);
    if (pl->target == 0 || size != pl->chunk) {
        pl->st.other_sizes++;
    } else if (pl->nready && pl->ready[pl->nready - 1].gen != atomic_load(&d->gen)) {
        /* made in a context that has since been reset (a refill that ended beside it) */
        close(pl->ready[--pl->nready].fd);
        pl->st.misses++;
    } else if (pl->nready) {
        *c = pl->ready[--pl->nready];
        pl->st.hits++;
        hit = true;
    } else {
        pl->st.misses++;
    }
    pthread_mutex_unlock(&cb->pmu);
    return hit;
}

/* The GPU is full and a lease is made on demand: the pooled chunks are worth more as that
 * lease. Frees them (context current) and holds the thread off for a second. True if any. */
static bool pool_drain(cuda_backend *cb, cuda_dev *d)
{
    cuda_pool *pl = &d->pool;
    pool_chunk drop[AGILE_LEASE_POOL_MAX];
    unsigned nd = 0;
    pthread_mutex_lock(&cb->pmu);
    while (pl->nready)
        drop[nd++] = pl->ready[--pl->nready];
    if (nd) {
        pl->st.drains++;
        pl->retry_at = agile__now_ns() + 1000000000ull;
    }
    pthread_mutex_unlock(&cb->pmu);
    for (unsigned i = 0; i < nd; i++)
        chunk_free(&drop[i]);
    return nd > 0;
}

/* After a lease: wake the refill thread if the pool is short. Not from pool_take: the
 * refill's driver calls would run beside the lease's own and could slow the hot path. */
static void pool_kick(cuda_backend *cb, cuda_dev *d)
{
    cuda_pool *pl = &d->pool;
    pthread_mutex_lock(&cb->pmu);
    if (pl->armed && !pl->manual && pl->nready + pl->inflight < pl->target)
        pthread_cond_broadcast(&cb->pcv);
    pthread_mutex_unlock(&cb->pmu);
}

static int cuda_pool_config(agile__backend *be, int dev, unsigned chunks, uint64_t chunk, int flags)
{
    cuda_backend *cb = CB(be);
    cuda_dev *d = &cb->devs[dev];
    cuda_pool *pl = &d->pool;
    pool_chunk drop[AGILE_LEASE_POOL_MAX];
    unsigned nd = 0;
    int rv = AGILE_OK;
    bool off;

    if (chunks && !d->vmm) return AGILE_ENOTSUP;
    pthread_mutex_lock(&cb->pmu);
    pl->target = chunks;
    pl->chunk = chunk;
    pl->manual = (flags & AGILE_LEASE_POOL_MANUAL) != 0;
    pl->armed = true;
    pl->streak = 0;
    pl->retry_at = 0;
    /* A refill in flight may still push a chunk: wait, then trim. */
    while (pl->inflight)
        pthread_cond_wait(&cb->pcv, &cb->pmu);
    for (unsigned i = 0; i < pl->nready;) {
        if (pl->ready[i].size != chunk || pl->nready > pl->target) {
            drop[nd++] = pl->ready[i];
            pl->ready[i] = pl->ready[--pl->nready];
        } else {
            i++;
        }
    }
    if (chunks && !pl->manual) rv = thread_start_locked(cb);
    pthread_cond_broadcast(&cb->pcv);
    pthread_mutex_unlock(&cb->pmu);

    pthread_mutex_lock(&pl->zmu);
    pthread_mutex_lock(&cb->pmu);
    off = pl->target == 0; /* still off: nothing can refill, the scratch can go */
    pthread_mutex_unlock(&cb->pmu);
    if ((nd || (off && (pl->zva || pl->zstream || pl->zstuck))) && push(be, dev) == AGILE_OK) {
        for (unsigned i = 0; i < nd; i++)
            chunk_free(&drop[i]);
        if (off) zscratch_free(pl);
        pop();
    }
    pthread_mutex_unlock(&pl->zmu);
    return rv;
}

static int cuda_pool_fill(agile__backend *be, int dev)
{
    bool idle = false;
    int rv = AGILE_OK;
    while (rv == AGILE_OK && !idle)
        rv = pool_refill_one(CB(be), dev, &idle);
    return rv;
}

static void cuda_pool_stats(agile__backend *be, int dev, agile__pool_stats *out)
{
    cuda_backend *cb = CB(be);
    cuda_pool *pl = &cb->devs[dev].pool;
    pthread_mutex_lock(&cb->pmu);
    *out = pl->st;
    out->chunk_size = pl->target ? pl->chunk : 0;
    out->target = pl->target;
    out->ready = pl->nready;
    pthread_mutex_unlock(&cb->pmu);
}

/* Stop the thread, free every pooled chunk and the scratch (before contexts go). */
static void pool_close(cuda_backend *cb)
{
    if (!cb->devs) return;
    pthread_mutex_lock(&cb->pmu);
    cb->stop = true;
    pthread_cond_broadcast(&cb->pcv);
    pthread_mutex_unlock(&cb->pmu);
    if (cb->thr_started) pthread_join(cb->thr, NULL);
    cb->thr_started = false;
    for (int i = 0; i < cb->ndev; i++) {
        cuda_pool *pl = &cb->devs[i].pool;
        if (!pl->nready && !pl->zva && !pl->zstream && !pl->zstuck) continue;
        if (!cb->devs[i].ctx || push(&cb->be, i) != AGILE_OK) continue;
        while (pl->nready)
            chunk_free(&pl->ready[--pl->nready]);
        zscratch_free(pl);
        pop();
    }
}

/* ---- leases ------------------------------------------------------------------------------- */

static int cuda_lease_create(agile__lease *l, int *fdp)
{
    int rv = AGILE_OK, fd = -1;
    agile__window *w = l->w;
    cuda_backend *cb = CB(w->be);
    cuda_dev *d = &cb->devs[w->dev];
    uint64_t g0 = l->offset / w->gran, g1 = g0 + l->size / w->gran, a0 = g0, a1 = g1;
    CUmemAllocationProp p = alloc_prop(d->dev, true);
    CUmemGenericAllocationHandle h = 0;
    pool_chunk pc;
    bool touched = false, mapped = false, pooled = false;
    steps sp;

    for (uint64_t g = g0; g < g1; g++)
        if (w->gmap[g] != G_BIG && w->gmap[g] != G_SMALL) return AGILE_EBUSY;
    steps_begin(&sp);
    AGILE_TRY(push(w->be, w->dev));
    /* after the push: from here every exit path can release what it took */
    pooled = pool_take(cb, d, l->size, &pc);
    if (pooled) {
        h = pc.h;
        fd = pc.fd;
        step(&sp, "pool take");
    } else {
        CUresult r = agile__cu.cuMemCreate(&h, l->size, &p, 0);
        if (r == CUDA_ERROR_OUT_OF_MEMORY && pool_drain(cb, d))
            r = agile__cu.cuMemCreate(&h, l->size, &p, 0);
        rv = CU(r);
        if (rv != AGILE_OK) {
            h = 0;
            goto popout;
        }
        step(&sp, "cuMemCreate");
    }
    touched = true;
    rv = sink_unmap(w, g0, g1, &a0, &a1);
    if (rv != AGILE_OK) goto popout;
    step(&sp, "sink unmap");
    rv = CU(agile__cu.cuMemMap(w->base + l->offset, l->size, 0, h, 0));
    if (rv != AGILE_OK) goto popout;
    mapped = true;
    memset(w->gmap + g0, G_LEASE, g1 - g0);
    step(&sp, "cuMemMap");
    /* Only the lease and any sink pieces sink_unmap re-made: with chunk-aligned leases that
     * is exactly the lease, never the window. */
    rv = agile__cu_set_access(d->dev, gva(w, a0), (a1 - a0) * w->gran);
    if (rv != AGILE_OK) goto popout;
    step(&sp, "cuMemSetAccess");
    if (!pooled) {
        int efd = -1;
        /* Fresh physical memory is not guaranteed zero: scrub it before anyone else can
         * see it, and wait, because the client's context is not ordered after our stream. */
        rv = CU(agile__cu.cuMemsetD8Async(w->base + l->offset, 0, l->size, d->stream));
        if (rv == AGILE_OK) rv = CU(agile__cu.cuStreamSynchronize(d->stream));
        if (rv != AGILE_OK) goto popout;
        step(&sp, "cuMemsetD8+sync");
        rv = CU(agile__cu.cuMemExportToShareableHandle(
            &efd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
        if (rv != AGILE_OK) goto popout;
        fd = efd;
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
            rv = agile_err_sys(errno);
            goto popout;
        }
        step(&sp, "export");
    }
popout:
    if (rv != AGILE_OK) {
        if (mapped) {
            agile__cu.cuMemUnmap(w->base + l->offset, l->size);
            memset(w->gmap + g0, G_NONE, g1 - g0);
        }
        /* a pooled chunk that went this far is not pooled again: it was in a tenant's
         * window, and a chunk is pooled once */
        if (h) agile__cu.cuMemRelease(h);
        if (fd >= 0) close(fd);
        if (touched) repair(w, a0, a1);
    } else {
        l->handle = h;
        *fdp = fd;
    }
    pop();
    if (rv == AGILE_OK) {
        /* A copy of the export, so a context reset can map the same memory again. Without
         * it the lease still works; it is only lost on a reset. */
        int kfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (kfd >= 0)
            l->keep_fd = kfd + 1;
        else
            agile__warn("cuda: cannot keep a copy of a lease fd (%s): it will not survive a "
                        "context reset",
                        strerror(errno));
    }
    pool_kick(cb, d);
    steps_log(&sp, rv, "cuda: GPU %d: lease %llu MiB at offset %#llx (%s)", w->dev,
              (unsigned long long)(l->size >> 20), (unsigned long long)l->offset,
              pooled ? "pooled" : "made on demand");
out:
    return rv;
}

static void cuda_lease_destroy(agile__lease *l)
{
    agile__window *w = l->w;
    cuda_dev *d = &CB(w->be)->devs[w->dev];
    uint64_t g0 = l->offset / w->gran, g1 = g0 + l->size / w->gran;
    int rv;

    if (l->keep_fd) close(l->keep_fd - 1);
    l->keep_fd = 0;
    if (push(w->be, w->dev) != AGILE_OK) {
        w->broken = true;
        return;
    }
    rv = CU(agile__cu.cuMemUnmap(w->base + l->offset, l->size));
    if (rv == AGILE_OK) {
        memset(w->gmap + g0, G_NONE, g1 - g0);
        agile__cu.cuMemRelease(l->handle);
        uint64_t a0 = g0, a1 = g1;
        rv = sink_map(w, g0, g1);
        if (rv == AGILE_OK) rv = sink_coalesce(w, g0, g1, &a0, &a1);
        if (rv == AGILE_OK) rv = agile__cu_set_access(d->dev, gva(w, a0), (a1 - a0) * w->gran);
        if (rv != AGILE_OK) repair(w, a0, a1);
    } else {
        /* Still mapped: keep the memory rather than free it under a live mapping; the
         * window's destruction retries. */
        struct agile__orphan *o = realloc(w->orphans, (w->norphans + 1) * sizeof *w->orphans);
        agile__error("cuda: cannot unmap lease at %#llx: the window is unusable",
                     (unsigned long long)(w->base + l->offset));
        if (o) {
            w->orphans = o;
            w->orphans[w->norphans++] = (struct agile__orphan){l->offset, l->size, l->handle};
        }
        w->broken = true;
    }
    pop();
}

/* Protected memory through the VMM API where there is one: reserve, create, map, so that a
 * context reset can map it again at the same address (cuMemAlloc cannot promise that).
 * `want` is that address, 0 for anywhere. Context current. */
static int pmem_map(cuda_dev *d, agile__pmem *p, uint64_t want)
{
    int rv = AGILE_OK;
    uint64_t len = AGILE_ALIGN_UP(p->size, d->gran);
    CUdeviceptr va = 0;
    CUmemGenericAllocationHandle h = 0;
    CUmemAllocationProp pr = alloc_prop(d->dev, false);
    bool mapped = false;

    AGILE_TRY(CU(agile__cu.cuMemAddressReserve(&va, len, 0, want, 0)));
    if (want && va != want) /* the old range is still held (a context that was not reset) */
        agile__warn("cuda: protected memory %#llx moved to %#llx", (unsigned long long)want,
                    (unsigned long long)va);
    AGILE_TRY(CU(agile__cu.cuMemCreate(&h, len, &pr, 0)));
    AGILE_TRY(CU(agile__cu.cuMemMap(va, len, 0, h, 0)));
    mapped = true;
    AGILE_TRY(agile__cu_set_access(d->dev, va, len));
    p->addr = va;
    p->rsv = len;
    p->handle = h;
out:
    if (rv != AGILE_OK) {
        if (mapped) agile__cu.cuMemUnmap(va, len);
        if (h) agile__cu.cuMemRelease(h);
        if (va) agile__cu.cuMemAddressFree(va, len);
    }
    return rv;
}

static int cuda_pmem_alloc(agile__pmem *p)
{
    int rv = AGILE_OK;
    cuda_dev *d = &CB(p->be)->devs[p->dev];
    CUdeviceptr a = 0;
    AGILE_TRY(push(p->be, p->dev));
    if (d->vmm) {
        rv = pmem_map(d, p, 0);
    } else {
        rv = CU(agile__cu.cuMemAlloc(&a, p->size));
        p->addr = a;
    }
    pop();
    if (rv == AGILE_OK && d->vmm)
        rv = reg_add(&d->regmu, (void ***)&d->pms, &d->npms, &d->cappms, p);
    if (rv != AGILE_OK && p->rsv && push(p->be, p->dev) == AGILE_OK) {
        agile__cu.cuMemUnmap(p->addr, p->rsv);
        agile__cu.cuMemRelease(p->handle);
        agile__cu.cuMemAddressFree(p->addr, p->rsv);
        pop();
    }
out:
    return rv;
}

static void cuda_pmem_free(agile__pmem *p)
{
    cuda_dev *d = &CB(p->be)->devs[p->dev];
    if (p->rsv) reg_del(&d->regmu, (void **)d->pms, &d->npms, p);
    if (push(p->be, p->dev) != AGILE_OK) return;
    if (p->rsv) {
        if (p->addr) {
            agile__cu.cuMemUnmap(p->addr, p->rsv);
            agile__cu.cuMemRelease(p->handle);
            agile__cu.cuMemAddressFree(p->addr, p->rsv);
        }
    } else {
        agile__cu.cuMemFree(p->addr);
    }
    pop();
}

static int cuda_memset(agile__backend *be, int dev, uint64_t addr, int value, uint64_t n)
{
    int rv = AGILE_OK;
    CUstream s = CB(be)->devs[dev].stream;
    AGILE_TRY(push(be, dev));
    rv = CU(agile__cu.cuMemsetD8Async(addr, (unsigned char)value, n, s));
    if (rv == AGILE_OK) rv = CU(agile__cu.cuStreamSynchronize(s));
    pop();
out:
    return rv;
}

static int cuda_memcpy(agile__backend *be, int dev, uint64_t dst, uint64_t src, uint64_t n)
{
    int rv = AGILE_OK;
    CUstream s = CB(be)->devs[dev].stream;
    AGILE_TRY(push(be, dev));
    rv = CU(agile__cu.cuMemcpyAsync(dst, src, n, s));
    if (rv == AGILE_OK) rv = CU(agile__cu.cuStreamSynchronize(s));
    pop();
out:
    return rv;
}

/* ---- context reset ---------------------------------------------------------------------
 * A sticky error (a trap, an illegal or misaligned address in any kernel run in the worker's
 * context) fails every later call in that context, for every tenant. The physical memory of
 * leases is not lost with it: clients hold it through their imports, the worker through the
 * fd kept at lease time. So the context is reset and what the backend made in it is made
 * again at the same addresses; the callers remake their own objects (generation). */

/* Zero a fresh sink chunk through a moment's mapping of its own (context current). */
static int zero_handle(cuda_dev *d, CUmemGenericAllocationHandle h, uint64_t size)
{
    int rv = AGILE_OK;
    CUdeviceptr va = 0;
    bool mapped = false;
    AGILE_TRY(CU(agile__cu.cuMemAddressReserve(&va, size, 0, 0, 0)));
    AGILE_TRY(CU(agile__cu.cuMemMap(va, size, 0, h, 0)));
    mapped = true;
    AGILE_TRY(agile__cu_set_access(d->dev, va, size));
    AGILE_TRY(CU(agile__cu.cuMemsetD8Async(va, 0, size, d->stream)));
    AGILE_TRY(CU(agile__cu.cuStreamSynchronize(d->stream)));
out:
    if (mapped) agile__cu.cuMemUnmap(va, size);
    if (va) agile__cu.cuMemAddressFree(va, size);
    return rv;
}

/* Window w again in a fresh context: same base, new zeroed sinks, every lease imported from
 * its kept fd and mapped at its offset, the sink everywhere else. Context current. */
static int window_restore(cuda_dev *d, agile__window *w)
{
    int rv = AGILE_OK;
    uint64_t ng = (w->size + w->gap) / w->gran;
    CUdeviceptr va = 0;
    CUmemAllocationProp p = alloc_prop(d->dev, false);
    CUmemGenericAllocationHandle h = 0;

    /* everything below was the old context's: nothing to unmap or release */
    free(w->orphans);
    w->orphans = NULL;
    w->norphans = 0;
    w->sink_big = w->sink_small = 0;
    memset(w->gmap, G_NONE, ng);
    for (agile__lease *l = w->leases; l; l = l->next)
        l->handle = 0;
    AGILE_TRY(CU(agile__cu.cuMemAddressReserve(&va, w->size + w->gap, w->size, w->base, 0)));
    if (va != w->base) { /* the old range is still held (a context that was not reset) */
        agile__warn("cuda: window %#llx moved to %#llx", (unsigned long long)w->base,
                    (unsigned long long)va);
        w->base = va;
    }
    AGILE_TRY(CU(agile__cu.cuMemCreate(&h, w->chunk, &p, 0)));
    w->sink_big = h;
    AGILE_TRY(zero_handle(d, h, w->chunk));
    if (w->chunk == w->gran) {
        w->sink_small = h;
    } else {
        h = 0;
        AGILE_TRY(CU(agile__cu.cuMemCreate(&h, w->gran, &p, 0)));
        w->sink_small = h;
        AGILE_TRY(zero_handle(d, h, w->gran));
    }
    for (agile__lease *l = w->leases; l; l = l->next) {
        CUmemGenericAllocationHandle lh = 0;
        if (!l->keep_fd) {
            agile__error("cuda: lease at %#llx has no kept fd: lost with the context",
                         (unsigned long long)(w->base + l->offset));
            rv = AGILE_EINTERNAL;
            goto out;
        }
        AGILE_TRY(CU(agile__cu.cuMemImportFromShareableHandle(
            &lh, (void *)(uintptr_t)(l->keep_fd - 1), CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)));
        l->handle = lh;
        AGILE_TRY(CU(agile__cu.cuMemMap(w->base + l->offset, l->size, 0, lh, 0)));
        memset(w->gmap + l->offset / w->gran, G_LEASE, l->size / w->gran);
    }
    for (uint64_t g = 0; g < ng;) {
        uint64_t e = g;
        while (e < ng && w->gmap[e] == G_NONE)
            e++;
        if (e > g) AGILE_TRY(sink_map(w, g, e));
        while (e < ng && w->gmap[e] != G_NONE)
            e++;
        g = e;
    }
    AGILE_TRY(agile__cu_set_access(d->dev, w->base, w->size + w->gap));
out:
    if (rv != AGILE_OK) w->broken = true;
    return rv;
}

/* One step of a reset, logged: on a GPU which step fails, and with what, is the whole story. */
static int reset_step(int dev, CUresult r, const char *what)
{
    if (r != CUDA_SUCCESS) agile__warn("cuda: GPU %d: reset: %s: %s", dev, what, agile__cu_name(r));
    return agile__cu_err(r, what);
}

/* A usable context for d after a sticky fault, pushed, with a new device stream: the primary
 * context reset (tried three times), else a context of the worker's own (the primary one is
 * left as it is; what it held is not reachable any more). */
static int context_renew(cuda_dev *d, int dev)
{
    int rv = AGILE_ENOTSUP;
    CUcontext ctx = NULL, old;
    for (int attempt = 0; attempt < 3 && rv != AGILE_OK; attempt++) {
        if (!agile__cu.cuDevicePrimaryCtxReset) break;
        reset_step(dev, agile__cu.cuDevicePrimaryCtxReset(d->dev), "cuDevicePrimaryCtxReset");
        /* Reset keeps our retain; take the (possibly new) handle, give the extra one back. */
        rv = reset_step(dev, agile__cu.cuDevicePrimaryCtxRetain(&ctx, d->dev),
                        "cuDevicePrimaryCtxRetain");
        if (rv != AGILE_OK) continue;
        agile__cu.cuDevicePrimaryCtxRelease(d->dev);
        rv = reset_step(dev, agile__cu.cuCtxPushCurrent(ctx), "cuCtxPushCurrent");
        if (rv != AGILE_OK) continue;
        rv = reset_step(dev, agile__cu.cuStreamCreate(&d->stream, CU_STREAM_NON_BLOCKING),
                        "cuStreamCreate");
        if (rv != AGILE_OK) agile__cu.cuCtxPopCurrent(&old);
    }
    if (rv == AGILE_OK) {
        d->ctx = ctx;
        return rv;
    }
    d->stream = NULL;
    if (!agile__cu.cuCtxCreate) return rv;
    rv = reset_step(dev, agile__cu.cuCtxCreate(&ctx, NULL, 0, d->dev), "cuCtxCreate");
    if (rv != AGILE_OK) return rv;
    agile__warn("cuda: GPU %d: the primary context could not be reset: the worker goes on in a "
                "context of its own",
                dev);
    if (d->own_ctx && agile__cu.cuCtxDestroy) agile__cu.cuCtxDestroy(d->ctx); /* poisoned too */
    d->own_ctx = true;
    d->ctx = ctx; /* cuCtxCreate made it current: the push the caller pops */
    rv = reset_step(dev, agile__cu.cuStreamCreate(&d->stream, CU_STREAM_NON_BLOCKING),
                    "cuStreamCreate");
    if (rv != AGILE_OK) agile__cu.cuCtxPopCurrent(&old);
    return rv;
}

static int cuda_reset(agile__backend *be, int dev, uint64_t *ns)
{
    cuda_backend *cb = CB(be);
    cuda_dev *d = &cb->devs[dev];
    cuda_pool *pl = &d->pool;
    uint64_t t0 = agile__now_ns();
    pool_chunk drop[AGILE_LEASE_POOL_MAX];
    unsigned nd = 0, nwin = 0, nlease = 0;
    int rv = AGILE_OK, r2;

    /* zmu before rw: the order of a refill (zmu, then push) */
    pthread_mutex_lock(&pl->zmu);
    pthread_rwlock_wrlock(&d->rw);
    pthread_mutex_lock(&cb->pmu);
    while (pl->nready)
        drop[nd++] = pl->ready[--pl->nready];
    pthread_mutex_unlock(&cb->pmu);
    for (unsigned i = 0; i < nd; i++)
        close(drop[i].fd); /* their handles went with the context */
    pl->zva = pl->zstuck = 0;
    pl->zsize = pl->zstuck_size = 0;
    pl->zstream = NULL;
    d->stream = NULL;
    rv = context_renew(d, dev);
    if (rv != AGILE_OK) goto unlock;
    pthread_mutex_lock(&d->regmu);
    for (size_t i = 0; rv == AGILE_OK && i < d->npms; i++) {
        agile__pmem *p = d->pms[i];
        uint64_t want = p->addr;
        p->addr = 0;
        r2 = pmem_map(d, p, want);
        if (r2 != AGILE_OK) {
            agile__error("cuda: GPU %d: protected memory %#llx lost in the reset: %s", dev,
                         (unsigned long long)want, err_name(r2));
            rv = r2;
        }
    }
    for (size_t i = 0; i < d->nwins; i++) {
        agile__window *w = d->wins[i];
        r2 = window_restore(d, w);
        if (r2 != AGILE_OK) {
            agile__error("cuda: GPU %d: window %#llx not restored after the reset: %s", dev,
                         (unsigned long long)w->base, err_name(r2));
            if (rv == AGILE_OK) rv = r2;
            continue;
        }
        nwin++;
        for (agile__lease *l = w->leases; l; l = l->next)
            nlease++;
    }
    pthread_mutex_unlock(&d->regmu);
    {
        CUcontext c;
        agile__cu.cuCtxPopCurrent(&c);
    }
unlock:
    atomic_fetch_add(&d->gen, 1);
    pthread_rwlock_unlock(&d->rw);
    pthread_mutex_unlock(&pl->zmu);
    *ns = agile__now_ns() - t0;
    agile__info("cuda: GPU %d: context reset in %.1f ms: %u windows, %u leases restored%s%s", dev,
                (double)*ns / 1e6, nwin, nlease, rv == AGILE_OK ? "" : "; failed: ",
                rv == AGILE_OK ? "" : err_name(rv));
    pool_kick(cb, d);
    return rv;
}

static unsigned cuda_generation(agile__backend *be, int dev)
{
    return atomic_load(&CB(be)->devs[dev].gen);
}

static int cuda_enter(agile__backend *be, int dev)
{
    return push(be, dev);
}

static void cuda_leave(agile__backend *be)
{
    pop();
}

static void *cuda_context(agile__backend *be, int dev)
{
    return CB(be)->devs[dev].ctx;
}

/* n bytes between device address addr and the host: into to_host, else from from_host. */
static int host_xfer(agile__backend *be, int dev, uint64_t addr, void *to_host,
                     const void *from_host, uint64_t n)
{
    int rv = AGILE_OK;
    AGILE_TRY(push(be, dev));
    rv = agile_err_cuda(to_host ? agile__cu.cuMemcpyDtoH(to_host, addr, n)
                                : agile__cu.cuMemcpyHtoD(addr, from_host, n));
    pop();
out:
    return rv;
}

static int cuda_read(agile__backend *be, int dev, void *dst, uint64_t src, uint64_t n)
{
    return host_xfer(be, dev, src, dst, NULL, n);
}

static int cuda_write(agile__backend *be, int dev, uint64_t dst, const void *src, uint64_t n)
{
    return host_xfer(be, dev, dst, NULL, src, n);
}

/* ---- queues: the driver's streams, events, modules and functions, in the current context.
 * agile__stream and the others are the driver's handles themselves (no allocation). */

static void cuda_caps(agile__queue_caps *out)
{
    out->queued = true;
    out->kernels = true;
    out->values = agile__cu.cuStreamWaitValue32 && agile__cu.cuStreamWriteValue32;
}

/* A query's CUresult: AGILE_EBUSY while the work is not done, else as it is. */
static int query_rv(CUresult r)
{
    return r == CUDA_ERROR_NOT_READY ? AGILE_EBUSY : agile_err_cuda((int)r);
}

static int q_stream_create(agile__stream **out)
{
    CUstream s = NULL;
    int rv = CU(agile__cu.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    *out = (agile__stream *)s;
    return rv;
}

static void q_stream_destroy(agile__stream *s)
{
    agile__cu.cuStreamDestroy((CUstream)s);
}

static int q_stream_query(agile__stream *s)
{
    /* mockcuda has no cuStreamQuery */
    if (!agile__cu.cuStreamQuery) return AGILE_ENOTSUP;
    return query_rv(agile__cu.cuStreamQuery((CUstream)s));
}

static int q_stream_sync(agile__stream *s)
{
    return agile_err_cuda(agile__cu.cuStreamSynchronize((CUstream)s));
}

static int q_memcpy(agile__stream *s, uint64_t dst, uint64_t src, uint64_t n)
{
    return CU(agile__cu.cuMemcpyAsync(dst, src, n, (CUstream)s));
}

static int q_memset8(agile__stream *s, uint64_t dst, uint8_t value, uint64_t n)
{
    return CU(agile__cu.cuMemsetD8Async(dst, value, n, (CUstream)s));
}

static int q_wait32(agile__stream *s, uint64_t addr, uint32_t value, int cond)
{
    if (!agile__cu.cuStreamWaitValue32) return AGILE_ENOTSUP;
    return CU(agile__cu.cuStreamWaitValue32(
        (CUstream)s, addr, value,
        cond == AGILE_STREAM_WAIT_EQ ? CU_STREAM_WAIT_VALUE_EQ : CU_STREAM_WAIT_VALUE_GEQ));
}

static int q_write32(agile__stream *s, uint64_t addr, uint32_t value)
{
    if (!agile__cu.cuStreamWriteValue32) return AGILE_ENOTSUP;
    return CU(agile__cu.cuStreamWriteValue32((CUstream)s, addr, value, 0));
}

static int q_event_create(agile__event **out)
{
    CUevent e = NULL;
    int rv = CU(agile__cu.cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
    *out = (agile__event *)e;
    return rv;
}

static int q_event_record(agile__event *e, agile__stream *s)
{
    return CU(agile__cu.cuEventRecord((CUevent)e, (CUstream)s));
}

static int q_event_query(agile__event *e)
{
    return query_rv(agile__cu.cuEventQuery((CUevent)e));
}

static void q_event_destroy(agile__event *e)
{
    agile__cu.cuEventDestroy((CUevent)e);
}

static int q_kmodule_load(const void *image, agile__kmodule **out)
{
    CUmodule m = NULL;
    int rv = CU(agile__cu.cuModuleLoadData ? agile__cu.cuModuleLoadData(&m, image)
                                           : CUDA_ERROR_NOT_SUPPORTED);
    *out = rv == AGILE_OK ? (agile__kmodule *)m : NULL;
    return rv;
}

static void q_kmodule_unload(agile__kmodule *m)
{
    agile__cu.cuModuleUnload((CUmodule)m);
}

static int q_kmodule_function(agile__kmodule *m, const char *name, agile__kfunc **out)
{
    CUfunction f = NULL;
    int rv = CU(agile__cu.cuModuleGetFunction(&f, (CUmodule)m, name));
    if (rv == AGILE_OK) *out = (agile__kfunc *)f;
    return rv;
}

static int q_kfunc_set_dyn_smem(agile__kfunc *f, uint32_t bytes)
{
    return CU(agile__cu.cuFuncSetAttribute(
        (CUfunction)f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)bytes));
}

static int q_launch(agile__stream *s, agile__kfunc *f, const agile__launch_dims *d, void **params)
{
    if (!agile__cu.cuLaunchKernel) return AGILE_ENOTSUP;
    return CU(agile__cu.cuLaunchKernel((CUfunction)f, d->grid[0], d->grid[1], d->grid[2],
                                       d->block[0], d->block[1], d->block[2], d->shmem,
                                       (CUstream)s, params, NULL));
}

static int q_probe(void)
{
    CUevent ev = NULL;
    CUresult cr = agile__cu.cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING);
    if (cr == CUDA_SUCCESS) agile__cu.cuEventDestroy(ev);
    return agile_err_cuda((int)cr);
}

static bool q_fault_take(void)
{
    return atomic_exchange(&agile__cu_sticky_seen, 0) != 0;
}

static const agile__queue_ops cuda_queue_ops = {
    .caps = cuda_caps,
    .stream_create = q_stream_create,
    .stream_destroy = q_stream_destroy,
    .stream_query = q_stream_query,
    .stream_sync = q_stream_sync,
    .memcpy = q_memcpy,
    .memset8 = q_memset8,
    .wait32 = q_wait32,
    .write32 = q_write32,
    .event_create = q_event_create,
    .event_record = q_event_record,
    .event_query = q_event_query,
    .event_destroy = q_event_destroy,
    .kmodule_load = q_kmodule_load,
    .kmodule_unload = q_kmodule_unload,
    .kmodule_function = q_kmodule_function,
    .kfunc_set_dyn_smem = q_kfunc_set_dyn_smem,
    .launch = q_launch,
    .probe = q_probe,
    .fault_take = q_fault_take,
};

const agile__backend_ops agile__cuda_ops = {
    .close = cuda_close,
    .device_count = cuda_device_count,
    .device_info = cuda_device_info,
    .granularity = cuda_granularity,
    .window_create = cuda_window_create,
    .window_destroy = cuda_window_destroy,
    .lease_create = cuda_lease_create,
    .lease_destroy = cuda_lease_destroy,
    .pmem_alloc = cuda_pmem_alloc,
    .pmem_free = cuda_pmem_free,
    .memset = cuda_memset,
    .memcpy = cuda_memcpy,
    .enter = cuda_enter,
    .leave = cuda_leave,
    .cuda_context = cuda_context,
    .pool_config = cuda_pool_config,
    .pool_fill = cuda_pool_fill,
    .pool_stats = cuda_pool_stats,
    .reset = cuda_reset,
    .generation = cuda_generation,
    .read = cuda_read,
    .write = cuda_write,
    .queue = &cuda_queue_ops,
};
