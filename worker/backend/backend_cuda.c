/* backend_cuda.c — windows in GPU virtual memory through the driver's VMM API
 * (cuMemAddressReserve / cuMemCreate / cuMemMap / cuMemSetAccess), leases exported as
 * POSIX file descriptors. See DESIGN.md "Memory model: windows" for the measured costs. */
#include "backend_int.h"
#include "cudadrv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Granule states of a window (window + gap), one byte each. */
enum { G_NONE = 0, G_BIG = 1, G_SMALL = 2, G_LEASE = 3 };

typedef struct cuda_dev {
    CUdevice dev;
    CUcontext ctx; /* the primary context: the one PyTorch and the runtime use too */
    CUstream stream;
    uint64_t gran;
    bool vmm; /* VMM + POSIX fd handles supported */
} cuda_dev;

typedef struct cuda_backend {
    agile__backend be; /* first: the generic code sees only this */
    int ndev;
    cuda_dev *devs;
} cuda_backend;

static cuda_backend *CB(agile__backend *be)
{
    return (cuda_backend *)be;
}

#define CU(call) agile__cu_err((call), #call)

static int push(agile__backend *be, int dev)
{
    return CU(agile__cu.cuCtxPushCurrent(CB(be)->devs[dev].ctx));
}

static void pop(void)
{
    CUcontext c;
    agile__cu.cuCtxPopCurrent(&c);
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

static int set_access(CUdevice dev, uint64_t va, uint64_t len)
{
    CUmemAccessDesc d;
    memset(&d, 0, sizeof d);
    d.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    d.location.id = dev;
    d.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    return CU(agile__cu.cuMemSetAccess(va, len, &d, 1));
}

static void cuda_close(agile__backend *be)
{
    cuda_backend *cb = CB(be);
    for (int i = 0; i < cb->ndev; i++) {
        cuda_dev *d = &cb->devs[i];
        if (d->stream && push(be, i) == AGILE_OK) {
            agile__cu.cuStreamDestroy(d->stream);
            pop();
        }
        if (d->ctx) agile__cu.cuDevicePrimaryCtxRelease(d->dev);
    }
    free(cb->devs);
    free(cb);
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
    cb->be.kind = AGILE_BACKEND_CUDA;
    cb->ndev = n;
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
    if (set_access(CB(w->be)->devs[w->dev].dev, gva(w, a0), (a1 - a0) * w->gran) == AGILE_OK)
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
    AGILE_TRY(push(w->be, w->dev));
    if (!(w->gmap = calloc(ng, 1))) {
        rv = AGILE_ENOMEM;
        goto popout;
    }
    /* alignment = size: offsets translate with one and/or (DESIGN.md). */
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
        rv = set_access(d->dev, w->base, w->gran);
        if (rv == AGILE_OK) rv = CU(agile__cu.cuMemsetD8Async(w->base, 0, w->gran, d->stream));
        if (rv == AGILE_OK) rv = CU(agile__cu.cuStreamSynchronize(d->stream));
        if (rv != AGILE_OK) goto popout;
        rv = CU(agile__cu.cuMemUnmap(w->base, w->gran));
        if (rv != AGILE_OK) goto popout;
        w->gmap[0] = G_NONE;
    }
    rv = sink_map(w, 0, ng);
    if (rv == AGILE_OK) rv = set_access(d->dev, w->base, w->size + w->gap);
    if (rv == AGILE_OK) rv = CU(agile__cu.cuMemsetD8Async(w->base, 0, w->chunk, d->stream));
    if (rv == AGILE_OK) rv = CU(agile__cu.cuStreamSynchronize(d->stream));
popout:
    if (rv != AGILE_OK) window_free(w);
    pop();
out:
    return rv;
}

static void cuda_window_destroy(agile__window *w)
{
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

static int cuda_lease_create(agile__lease *l, int *fdp)
{
    int rv = AGILE_OK, fd = -1;
    agile__window *w = l->w;
    cuda_dev *d = &CB(w->be)->devs[w->dev];
    uint64_t g0 = l->offset / w->gran, g1 = g0 + l->size / w->gran, a0 = g0, a1 = g1;
    CUmemAllocationProp p = alloc_prop(d->dev, true);
    CUmemGenericAllocationHandle h = 0;
    bool touched = false, mapped = false;

    for (uint64_t g = g0; g < g1; g++)
        if (w->gmap[g] != G_BIG && w->gmap[g] != G_SMALL) return AGILE_EBUSY;
    AGILE_TRY(push(w->be, w->dev));
    rv = CU(agile__cu.cuMemCreate(&h, l->size, &p, 0));
    if (rv != AGILE_OK) {
        h = 0;
        goto popout;
    }
    touched = true;
    rv = sink_unmap(w, g0, g1, &a0, &a1);
    if (rv != AGILE_OK) goto popout;
    rv = CU(agile__cu.cuMemMap(w->base + l->offset, l->size, 0, h, 0));
    if (rv != AGILE_OK) goto popout;
    mapped = true;
    memset(w->gmap + g0, G_LEASE, g1 - g0);
    rv = set_access(d->dev, gva(w, a0), (a1 - a0) * w->gran);
    /* Fresh physical memory is not guaranteed zero: scrub it before anyone else can see
     * it, and wait, because the client's context is not ordered after our stream. */
    if (rv == AGILE_OK)
        rv = CU(agile__cu.cuMemsetD8Async(w->base + l->offset, 0, l->size, d->stream));
    if (rv == AGILE_OK) rv = CU(agile__cu.cuStreamSynchronize(d->stream));
    if (rv == AGILE_OK)
        rv = CU(agile__cu.cuMemExportToShareableHandle(
            &fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    if (rv == AGILE_OK && fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        rv = agile_err_sys(errno);
        close(fd);
    }
popout:
    if (rv != AGILE_OK) {
        if (mapped) {
            agile__cu.cuMemUnmap(w->base + l->offset, l->size);
            memset(w->gmap + g0, G_NONE, g1 - g0);
        }
        if (h) agile__cu.cuMemRelease(h);
        if (touched) repair(w, a0, a1);
    } else {
        l->handle = h;
        *fdp = fd;
    }
    pop();
out:
    return rv;
}

static void cuda_lease_destroy(agile__lease *l)
{
    agile__window *w = l->w;
    cuda_dev *d = &CB(w->be)->devs[w->dev];
    uint64_t g0 = l->offset / w->gran, g1 = g0 + l->size / w->gran;
    int rv;

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
        if (rv == AGILE_OK) rv = set_access(d->dev, gva(w, a0), (a1 - a0) * w->gran);
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

static int cuda_pmem_alloc(agile__pmem *p)
{
    int rv = AGILE_OK;
    CUdeviceptr a = 0;
    AGILE_TRY(push(p->be, p->dev));
    rv = CU(agile__cu.cuMemAlloc(&a, p->size));
    pop();
    p->addr = a;
out:
    return rv;
}

static void cuda_pmem_free(agile__pmem *p)
{
    if (push(p->be, p->dev) != AGILE_OK) return;
    agile__cu.cuMemFree(p->addr);
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

const agile__backend_ops agile__cuda_ops = {
    .name = "cuda",
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
};

/* ---- client side ------------------------------------------------------------------------ */

static int cpush(agile__cwin *w)
{
    return CU(agile__cu.cuCtxPushCurrent((CUcontext)w->ctx));
}

int agile__cuda_cmem_reserve(agile__cwin *w)
{
    int rv = AGILE_OK;
    CUdevice dev;
    CUcontext ctx = NULL;
    CUdeviceptr va = 0;

    AGILE_TRY(agile__cuda_load(NULL, 0));
    AGILE_TRY(CU(agile__cu.cuDeviceGet(&dev, w->dev)));
    /* The primary context is the one PyTorch runs in, so its kernels see the window. */
    AGILE_TRY(CU(agile__cu.cuDevicePrimaryCtxRetain(&ctx, dev)));
    w->ctx = ctx;
    AGILE_TRY(cpush(w));
    rv = CU(agile__cu.cuMemAddressReserve(&va, w->size, w->size, 0, 0));
    pop();
    w->base = va;
out:
    if (rv != AGILE_OK && ctx) {
        agile__cu.cuDevicePrimaryCtxRelease(dev);
        w->ctx = NULL;
    }
    return rv;
}

int agile__cuda_cmem_map(agile__cwin *w, int fd, uint64_t offset, uint64_t size)
{
    int rv = AGILE_OK;
    CUmemGenericAllocationHandle h = 0;
    CUdevice dev;
    bool pushed = false, mapped = false;

    if (w->nmaps == w->capmaps) {
        size_t cap = w->capmaps ? w->capmaps * 2 : 16;
        agile__cmap *m = realloc(w->maps, cap * sizeof *m);
        if (!m) {
            rv = AGILE_ENOMEM;
            goto out;
        }
        w->maps = m;
        w->capmaps = cap;
    }
    AGILE_TRY(CU(agile__cu.cuDeviceGet(&dev, w->dev)));
    AGILE_TRY(cpush(w));
    pushed = true;
    AGILE_TRY(CU(agile__cu.cuMemImportFromShareableHandle(
        &h, (void *)(uintptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)));
    close(fd); /* the import holds the memory */
    fd = -1;
    AGILE_TRY(CU(agile__cu.cuMemMap(w->base + offset, size, 0, h, 0)));
    mapped = true;
    AGILE_TRY(set_access(dev, w->base + offset, size));
    w->maps[w->nmaps++] = (agile__cmap){offset, size};
out:
    if (rv != AGILE_OK && mapped) agile__cu.cuMemUnmap(w->base + offset, size);
    /* The mapping keeps the memory alive; unmapping then frees our side of it. */
    if (h) agile__cu.cuMemRelease(h);
    if (pushed) pop();
    if (fd >= 0) close(fd);
    return rv;
}

int agile__cuda_cmem_unmap(agile__cwin *w, uint64_t offset, uint64_t size)
{
    int rv = AGILE_OK;
    size_t i;

    for (i = 0; i < w->nmaps; i++)
        if (w->maps[i].offset == offset && w->maps[i].size == size) break;
    if (i == w->nmaps) return AGILE_EINVAL;
    AGILE_TRY(cpush(w));
    rv = CU(agile__cu.cuMemUnmap(w->base + offset, size));
    pop();
    if (rv == AGILE_OK) w->maps[i] = w->maps[--w->nmaps];
out:
    return rv;
}

void agile__cuda_cmem_release(agile__cwin *w)
{
    CUdevice dev;
    if (cpush(w) == AGILE_OK) {
        for (size_t i = 0; i < w->nmaps; i++)
            agile__cu.cuMemUnmap(w->base + w->maps[i].offset, w->maps[i].size);
        w->nmaps = 0;
        agile__cu.cuMemAddressFree(w->base, w->size);
        pop();
    }
    if (agile__cu.cuDeviceGet(&dev, w->dev) == CUDA_SUCCESS)
        agile__cu.cuDevicePrimaryCtxRelease(dev);
}
