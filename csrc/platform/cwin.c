/* cwin.c — client windows (cwin.h): host (memfd leases mapped into a PROT_NONE reservation)
 * and cuda (VMM: the lease's POSIX fd imported, mapped and made accessible in the client's
 * primary context). */
#include "cwin.h"

#include "agile/agile.h"
#include "core.h"
#include "cudadrv.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct cmap {
    uint64_t offset, size;
} cmap;

struct agile__cwin {
    int kind, dev;
    uint64_t base, size;
    void *ctx;   /* cuda: the retained primary context */
    cmap *maps;  /* cuda: live mappings, so release can unmap them */
    size_t nmaps, capmaps;
};

#define CU(call) agile__cu_err((call), #call)

static bool is_pow2(uint64_t x)
{
    return x && !(x & (x - 1));
}

int agile__va_reserve(uint64_t len, uint64_t align, uint64_t *base)
{
    uint64_t span = len + align, start, b;
    void *p = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return agile_err_sys(errno);
    start = (uint64_t)(uintptr_t)p;
    b = AGILE_ALIGN_UP(start, align);
    /* Trim the head and tail: only [b, b + len) stays reserved. */
    if (b > start) munmap(p, b - start);
    if (start + span > b + len) munmap((void *)(uintptr_t)(b + len), start + span - (b + len));
    *base = b;
    return AGILE_OK;
}

/* ---- host ------------------------------------------------------------------------------- */

static int host_reserve(agile__cwin *w)
{
    return agile__va_reserve(w->size, w->size, &w->base);
}

static int host_map(agile__cwin *w, int fd, uint64_t offset, uint64_t size)
{
    int rv = AGILE_OK;
    struct stat st;
    void *p;

    if ((offset | size) & (AGILE_HOST_GRAN - 1)) {
        rv = AGILE_EINVAL;
        goto out;
    }
    /* Touching a page past the end of a file is SIGBUS: never map more than it holds. */
    if (fstat(fd, &st) != 0) {
        rv = agile_err_sys(errno);
        goto out;
    }
    if ((uint64_t)st.st_size < size) {
        rv = AGILE_EINVAL;
        goto out;
    }
    p = mmap((void *)(uintptr_t)(w->base + offset), size, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED) {
        rv = agile_err_sys(errno);
        /* Keep the range reserved whatever the failed MAP_FIXED left behind. */
        (void)mmap((void *)(uintptr_t)(w->base + offset), size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    }
out:
    close(fd); /* the mapping holds the memory */
    return rv;
}

static int host_unmap(agile__cwin *w, uint64_t offset, uint64_t size)
{
    /* Replace rather than munmap: the VA stays reserved, so nothing else lands there. */
    void *p = mmap((void *)(uintptr_t)(w->base + offset), size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? agile_err_sys(errno) : AGILE_OK;
}

static void host_release(agile__cwin *w)
{
    munmap((void *)(uintptr_t)w->base, w->size);
}

/* ---- cuda ------------------------------------------------------------------------------- */

static int cpush(agile__cwin *w)
{
    return CU(agile__cu.cuCtxPushCurrent((CUcontext)w->ctx));
}

static void cpop(void)
{
    CUcontext c;
    agile__cu.cuCtxPopCurrent(&c);
}

static int cuda_reserve(agile__cwin *w)
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
    cpop();
    w->base = va;
out:
    if (rv != AGILE_OK && ctx) {
        agile__cu.cuDevicePrimaryCtxRelease(dev);
        w->ctx = NULL;
    }
    return rv;
}

static int cuda_map(agile__cwin *w, int fd, uint64_t offset, uint64_t size)
{
    int rv = AGILE_OK;
    CUmemGenericAllocationHandle h = 0;
    CUdevice dev;
    bool pushed = false, mapped = false;
    /* Per-call timings for the debug log: import, map, access. */
    bool timed = agile__log_enabled(AGILE_LOG_DEBUG);
    uint64_t t[4] = {timed ? agile__now_ns() : 0, 0, 0, 0};

    if (w->nmaps == w->capmaps) {
        size_t cap = w->capmaps ? w->capmaps * 2 : 16;
        cmap *m = realloc(w->maps, cap * sizeof *m);
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
    t[1] = timed ? agile__now_ns() : 0;
    AGILE_TRY(CU(agile__cu.cuMemMap(w->base + offset, size, 0, h, 0)));
    mapped = true;
    t[2] = timed ? agile__now_ns() : 0;
    AGILE_TRY(agile__cu_set_access(dev, w->base + offset, size));
    t[3] = timed ? agile__now_ns() : 0;
    w->maps[w->nmaps++] = (cmap){offset, size};
out:
    if (rv != AGILE_OK && mapped) agile__cu.cuMemUnmap(w->base + offset, size);
    /* The mapping keeps the memory alive; unmapping then frees our side of it. */
    if (h) agile__cu.cuMemRelease(h);
    if (pushed) cpop();
    if (fd >= 0) close(fd);
    if (timed)
        agile__debug("cuda: client: map lease %llu MiB at offset %#llx: "
                     "cuMemImportFromShareableHandle %.1f us, cuMemMap %.1f us, "
                     "cuMemSetAccess %.1f us%s%s",
                     (unsigned long long)(size >> 20), (unsigned long long)offset,
                     t[1] ? (double)(t[1] - t[0]) / 1e3 : 0.0,
                     t[2] ? (double)(t[2] - t[1]) / 1e3 : 0.0,
                     t[3] ? (double)(t[3] - t[2]) / 1e3 : 0.0,
                     rv == AGILE_OK ? "" : ", failed: ", rv == AGILE_OK ? "" : agile_err_name(rv));
    return rv;
}

static int cuda_unmap(agile__cwin *w, uint64_t offset, uint64_t size)
{
    int rv = AGILE_OK;
    size_t i;

    for (i = 0; i < w->nmaps; i++)
        if (w->maps[i].offset == offset && w->maps[i].size == size) break;
    if (i == w->nmaps) return AGILE_EINVAL;
    AGILE_TRY(cpush(w));
    rv = CU(agile__cu.cuMemUnmap(w->base + offset, size));
    cpop();
    if (rv == AGILE_OK) w->maps[i] = w->maps[--w->nmaps];
out:
    return rv;
}

static void cuda_release(agile__cwin *w)
{
    CUdevice dev;
    if (cpush(w) == AGILE_OK) {
        for (size_t i = 0; i < w->nmaps; i++)
            agile__cu.cuMemUnmap(w->base + w->maps[i].offset, w->maps[i].size);
        w->nmaps = 0;
        agile__cu.cuMemAddressFree(w->base, w->size);
        cpop();
    }
    if (agile__cu.cuDeviceGet(&dev, w->dev) == CUDA_SUCCESS)
        agile__cu.cuDevicePrimaryCtxRelease(dev);
}

/* ---- dispatch ----------------------------------------------------------------------------- */

int agile__cmem_reserve(int kind, int dev, uint64_t size, agile__cwin **out)
{
    int rv = AGILE_OK;
    agile__cwin *w = NULL;

    if (!out || dev < 0 || !is_pow2(size) || size > (1ull << 46) ||
        (kind != AGILE_BACKEND_KIND_HOST && kind != AGILE_BACKEND_KIND_CUDA))
        return AGILE_EINVAL;
    w = calloc(1, sizeof *w);
    if (!w) return AGILE_ENOMEM;
    w->kind = kind;
    w->dev = dev;
    w->size = size;
    if (kind == AGILE_BACKEND_KIND_HOST)
        AGILE_TRY(host_reserve(w));
    else
        AGILE_TRY(cuda_reserve(w));
    *out = w;
    w = NULL;
out:
    free(w);
    return rv;
}

int agile__cmem_map(agile__cwin *w, int fd, uint64_t offset, uint64_t size)
{
    if (!w || fd < 0 || size == 0 || offset >= w->size || size > w->size - offset) {
        if (fd >= 0) close(fd);
        return fd < 0 ? AGILE_EINVAL : AGILE_EBOUNDS;
    }
    if (w->kind == AGILE_BACKEND_KIND_HOST) return host_map(w, fd, offset, size);
    return cuda_map(w, fd, offset, size);
}

int agile__cmem_unmap(agile__cwin *w, uint64_t offset, uint64_t size)
{
    if (!w || size == 0 || offset >= w->size || size > w->size - offset) return AGILE_EBOUNDS;
    if (w->kind == AGILE_BACKEND_KIND_HOST) return host_unmap(w, offset, size);
    return cuda_unmap(w, offset, size);
}

uint64_t agile__cmem_base(const agile__cwin *w)
{
    return w->base;
}

void agile__cmem_release(agile__cwin *w)
{
    if (!w) return;
    if (w->kind == AGILE_BACKEND_KIND_HOST)
        host_release(w);
    else
        cuda_release(w);
    free(w->maps);
    free(w);
}
