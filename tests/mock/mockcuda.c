/* mockcuda.c — a libcuda.so.1 for CPU-only machines that enforces the VMM API's rules
 * (cuMemMap: offset 0, never over a mapping; cuMemUnmap: whole mappings only;
 * cuMemSetAccess: a fully mapped range, and nothing is accessible before it; a current
 * context for every memory call; cuMemAddressFree: nothing mapped) on host memory.
 *
 * It exists to test backend_cuda.c's bookkeeping (which mapping is where, rollback,
 * destroy order, export/import across processes) where there is no GPU. It is NOT a GPU
 * test and proves nothing about the real driver: backend-gpu-test on a GPU does that. It
 * is built into its own directory and only loaded where a test puts it on LD_LIBRARY_PATH.
 *
 * Defined with cuda.h's names, so each function gets the exported (versioned) symbol the
 * header maps it to. Thread-safe: one lock around the shared tables (the cuda backend's lease
 * pool refills on a thread of its own). */
#include <cuda.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define API __attribute__((visibility("default")))
#define GRAN (2ull << 20)
#define TOTAL (80ull << 30)
#define MAXN 4096

typedef struct alloc {
    int fd; /* memfd: the "physical" memory */
    size_t size;
    int refs; /* handle + mappings */
    int live; /* handle not yet released */
} alloc;
typedef struct region {
    uint64_t va, size;
    alloc *a; /* NULL: a reservation */
} region;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int lock_mu(void)
{
    pthread_mutex_lock(&mu);
    return 0;
}
static void unlock_mu(int *x)
{
    (void)x;
    pthread_mutex_unlock(&mu);
}
/* Held to the end of the calling function; leaf functions only (it does not nest). */
#define LOCK() __attribute__((cleanup(unlock_mu), unused)) int lk_ = lock_mu()

static region rsv[MAXN], maps[MAXN];
static int nrsv, nmaps;
static alloc *handles[MAXN]; /* live handles, for a reset */
static int nhandles;
/* streams and events: a reset frees them, as the driver does */
static void *ctxobjs[MAXN];
static int nctxobjs;
static void ctxobj_add(void *o)
{
    if (nctxobjs < MAXN) ctxobjs[nctxobjs++] = o;
}
static void ctxobj_del(void *o)
{
    for (int i = 0; i < nctxobjs; i++)
        if (ctxobjs[i] == o) {
            ctxobjs[i] = ctxobjs[--nctxobjs];
            return;
        }
}
static uint64_t used;
static int inited;
static int ctx_token; /* &ctx_token is the one context */
static _Thread_local int ctx_depth;
static _Thread_local CUcontext cur;

/* Fault injection for backend_cuda_fault_test: the nth call of fail_fn from now on fails
 * with CUDA_ERROR_OUT_OF_MEMORY. */
static char fail_fn[64];
static int fail_n;

/* A sticky error (mockcuda_sticky): from the next event query on, every call in the context
 * fails with it, as after a trap on a GPU, until cuDevicePrimaryCtxReset; ctx_gen counts the
 * resets (events of an older context are refused). */
static CUresult poison, poison_armed;
static int ctx_gen, resets;
static int poison_process; /* mockcuda_sticky_process: a reset does not clear the poison */

API void mockcuda_sticky(int code)
{
    LOCK();
    poison_armed = (CUresult)code;
}

/* As the H200's driver (580) does: after a sticky error the process's CUDA state is lost; a
 * reset succeeds but every later call (retain and context creation included) fails. */
API void mockcuda_sticky_process(int on)
{
    LOCK();
    poison_process = on;
}

API int mockcuda_resets(void)
{
    LOCK();
    return resets;
}

API void mockcuda_fail(const char *fn, int nth)
{
    LOCK();
    snprintf(fail_fn, sizeof fail_fn, "%s", fn ? fn : "");
    fail_n = nth;
}

API void mockcuda_stats(int *nmap, int *nres, unsigned long long *bytes)
{
    LOCK();
    *nmap = nmaps;
    *nres = nrsv;
    *bytes = used;
}

#define MAYBE_FAIL()                                                                               \
    do {                                                                                           \
        if (fail_n > 0 && strcmp(fail_fn, __func__) == 0 && --fail_n == 0)                         \
            return CUDA_ERROR_OUT_OF_MEMORY;                                                       \
    } while (0)

static CUresult bad(const char *what)
{
    fprintf(stderr, "mockcuda: rule broken: %s\n", what);
    return CUDA_ERROR_INVALID_VALUE;
}

#define NEED_CTX()                                                                                 \
    do {                                                                                           \
        if (!inited) return CUDA_ERROR_NOT_INITIALIZED;                                            \
        if (!cur)                                                                                  \
            return (fprintf(stderr, "mockcuda: no current context in %s\n", __func__),             \
                    CUDA_ERROR_INVALID_CONTEXT);                                                   \
        if (poison) return poison;                                                                 \
    } while (0)

static void unref(alloc *a)
{
    if (--a->refs == 0) {
        used -= a->size;
        close(a->fd);
        free(a);
    }
}

API CUresult cuInit(unsigned int flags)
{
    inited = 1;
    return CUDA_SUCCESS;
}
API CUresult cuDriverGetVersion(int *v)
{
    *v = 13000;
    return CUDA_SUCCESS;
}
API CUresult cuGetErrorName(CUresult e, const char **s)
{
    static char buf[32];
    snprintf(buf, sizeof buf, "MOCK_ERROR_%d", (int)e);
    *s = e == CUDA_SUCCESS ? "CUDA_SUCCESS" : buf;
    return CUDA_SUCCESS;
}
API CUresult cuGetErrorString(CUresult e, const char **s)
{
    return cuGetErrorName(e, s);
}
API CUresult cuDeviceGetCount(int *n)
{
    *n = 1;
    return inited ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
}
API CUresult cuDeviceGet(CUdevice *d, int i)
{
    if (i != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGetName(char *name, int len, CUdevice d)
{
    snprintf(name, (size_t)len, "mockcuda (not a GPU)");
    return CUDA_SUCCESS;
}
API CUresult cuDeviceTotalMem(size_t *b, CUdevice d)
{
    *b = TOTAL;
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGetUuid(CUuuid *u, CUdevice d)
{
    memset(u->bytes, 0xab, sizeof u->bytes);
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d)
{
    switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
        *v = 9;
        break;
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED:
        *v = 1;
        break;
    default:
        *v = 0;
    }
    return CUDA_SUCCESS;
}
API CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
    LOCK();
    if (!inited) return CUDA_ERROR_NOT_INITIALIZED;
    if (poison) return poison;
    *c = (CUcontext)&ctx_token;
    return CUDA_SUCCESS;
}
API CUresult cuDevicePrimaryCtxRelease(CUdevice d)
{
    return CUDA_SUCCESS;
}
/* Everything made in the context goes: mappings, reservations, handles (memory another
 * handle, mapping or exported fd holds survives, as on the driver). */
API CUresult cuDevicePrimaryCtxReset(CUdevice d)
{
    LOCK();
    if (!inited) return CUDA_ERROR_NOT_INITIALIZED;
    for (int j = 0; j < nmaps; j++) {
        (void)mmap((void *)(uintptr_t)maps[j].va, maps[j].size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        unref(maps[j].a);
    }
    nmaps = 0;
    for (int i = 0; i < nrsv; i++)
        munmap((void *)(uintptr_t)rsv[i].va, rsv[i].size);
    nrsv = 0;
    for (int i = 0; i < nhandles; i++) {
        if (handles[i]->live) {
            handles[i]->live = 0;
            unref(handles[i]);
        }
    }
    nhandles = 0;
    for (int i = 0; i < nctxobjs; i++)
        free(ctxobjs[i]);
    nctxobjs = 0;
    if (!poison_process) poison = poison_armed = CUDA_SUCCESS;
    ctx_gen++;
    resets++;
    return CUDA_SUCCESS;
}
API CUresult cuCtxCreate(CUcontext *c, CUctxCreateParams *p, unsigned int f, CUdevice d)
{
    LOCK();
    if (!inited) return CUDA_ERROR_NOT_INITIALIZED;
    if (poison) return poison;
    return bad("cuCtxCreate: the mock has one context");
}
API CUresult cuCtxSetCurrent(CUcontext c)
{
    cur = c;
    return CUDA_SUCCESS;
}
API CUresult cuCtxGetCurrent(CUcontext *c)
{
    *c = cur;
    return CUDA_SUCCESS;
}
static _Thread_local CUcontext stack[64];
API CUresult cuCtxPushCurrent(CUcontext c)
{
    if (ctx_depth == 64) return bad("context stack overflow (unbalanced push)");
    stack[ctx_depth++] = cur;
    cur = c;
    return CUDA_SUCCESS;
}
API CUresult cuCtxPopCurrent(CUcontext *c)
{
    if (ctx_depth == 0) return bad("pop without push");
    if (c) *c = cur;
    cur = stack[--ctx_depth];
    return CUDA_SUCCESS;
}
API CUresult cuStreamCreate(CUstream *s, unsigned int f)
{
    LOCK();
    NEED_CTX();
    *s = (CUstream)malloc(1);
    ctxobj_add(*s);
    return CUDA_SUCCESS;
}
API CUresult cuStreamDestroy(CUstream s)
{
    LOCK();
    ctxobj_del(s);
    free(s);
    return CUDA_SUCCESS;
}
API CUresult cuStreamSynchronize(CUstream s)
{
    LOCK();
    NEED_CTX();
    MAYBE_FAIL();
    return CUDA_SUCCESS;
}
API CUresult cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *p,
                                           CUmemAllocationGranularity_flags o)
{
    *g = GRAN;
    return CUDA_SUCCESS;
}
API CUresult cuMemGetInfo(size_t *fr, size_t *total)
{
    LOCK();
    NEED_CTX();
    *fr = TOTAL - used;
    *total = TOTAL;
    return CUDA_SUCCESS;
}

API CUresult cuMemAddressReserve(CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr,
                                 unsigned long long f)
{
    LOCK();
    NEED_CTX();
    MAYBE_FAIL();
    if (size % GRAN || (align & (align - 1)) || nrsv == MAXN)
        return bad("cuMemAddressReserve arguments");
    if (addr && (!align || addr % align == 0)) { /* the address asked for, where it is free */
        void *want = (void *)(uintptr_t)addr;
        char *m = mmap(want, size, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
        if (m == want) {
            rsv[nrsv++] = (region){addr, size, NULL};
            *p = addr;
            return CUDA_SUCCESS;
        }
        if (m != MAP_FAILED) munmap(m, size);
    }
    size_t span = size + align;
    char *m = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t s = (uint64_t)(uintptr_t)m, b = align ? (s + align - 1) & ~(uint64_t)(align - 1) : s;
    if (b > s) munmap(m, b - s);
    if (s + span > b + size) munmap((void *)(uintptr_t)(b + size), s + span - b - size);
    rsv[nrsv++] = (region){b, size, NULL};
    *p = b;
    return CUDA_SUCCESS;
}
API CUresult cuMemAddressFree(CUdeviceptr p, size_t size)
{
    LOCK();
    NEED_CTX();
    for (int i = 0; i < nrsv; i++)
        if (rsv[i].va == p && rsv[i].size == size) {
            for (int j = 0; j < nmaps; j++)
                if (maps[j].va < p + size && p < maps[j].va + maps[j].size)
                    return bad("cuMemAddressFree with live mappings");
            munmap((void *)(uintptr_t)p, size);
            rsv[i] = rsv[--nrsv];
            return CUDA_SUCCESS;
        }
    return bad("cuMemAddressFree of no reservation");
}
API CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *p,
                         unsigned long long f)
{
    LOCK();
    NEED_CTX();
    MAYBE_FAIL();
    if (size == 0 || size % GRAN) return bad("cuMemCreate size");
    if (used + size > TOTAL) return CUDA_ERROR_OUT_OF_MEMORY;
    alloc *a = calloc(1, sizeof *a);
    a->fd = memfd_create("mockcuda", MFD_CLOEXEC);
    /* Fresh GPU memory is not zero: make that visible to the tests. */
    if (a->fd < 0 || ftruncate(a->fd, (off_t)size) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    char *m = mmap(NULL, size, PROT_WRITE, MAP_SHARED, a->fd, 0);
    /* the ends of every granule: enough to catch a missing scrub, cheap enough to fault */
    for (size_t g = 0; g < size; g += GRAN) {
        memset(m + g, 0xee, 64 << 10);
        memset(m + g + GRAN - (64 << 10), 0xee, 64 << 10);
    }
    munmap(m, size);
    a->size = size;
    a->refs = 1;
    a->live = 1;
    used += size;
    if (nhandles < MAXN) handles[nhandles++] = a;
    *h = (CUmemGenericAllocationHandle)(uintptr_t)a;
    return CUDA_SUCCESS;
}
API CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
    LOCK();
    alloc *a = (alloc *)(uintptr_t)h;
    NEED_CTX();
    if (!a || !a->live) return bad("cuMemRelease of a released handle");
    a->live = 0;
    for (int i = 0; i < nhandles; i++)
        if (handles[i] == a) {
            handles[i] = handles[--nhandles];
            break;
        }
    unref(a);
    return CUDA_SUCCESS;
}
API CUresult cuMemMap(CUdeviceptr p, size_t size, size_t off, CUmemGenericAllocationHandle h,
                      unsigned long long f)
{
    LOCK();
    alloc *a = (alloc *)(uintptr_t)h;
    int in = 0;
    NEED_CTX();
    MAYBE_FAIL();
    if (off != 0) return bad("cuMemMap offset must be 0");
    if (!a || !a->live || size > a->size || size % GRAN || p % GRAN || nmaps == MAXN)
        return bad("cuMemMap arguments");
    for (int i = 0; i < nrsv; i++)
        if (p >= rsv[i].va && p + size <= rsv[i].va + rsv[i].size) in = 1;
    if (!in) return bad("cuMemMap outside a reservation");
    for (int j = 0; j < nmaps; j++)
        if (maps[j].va < p + size && p < maps[j].va + maps[j].size)
            return bad("cuMemMap over a mapping");
    /* PROT_NONE until cuMemSetAccess, as on the GPU. */
    if (mmap((void *)(uintptr_t)p, size, PROT_NONE, MAP_SHARED | MAP_FIXED, a->fd, 0) == MAP_FAILED)
        return CUDA_ERROR_OUT_OF_MEMORY;
    a->refs++;
    maps[nmaps++] = (region){p, size, a};
    return CUDA_SUCCESS;
}
API CUresult cuMemUnmap(CUdeviceptr p, size_t size)
{
    LOCK();
    NEED_CTX();
    MAYBE_FAIL();
    /* Whole mappings only; a range may span several whole ones. */
    uint64_t covered = 0;
    for (int j = 0; j < nmaps; j++) {
        region *m = &maps[j];
        if (m->va < p + size && p < m->va + m->size) {
            if (m->va < p || m->va + m->size > p + size)
                return bad("cuMemUnmap of part of a mapping");
            covered += m->size;
        }
    }
    if (covered != size) return bad("cuMemUnmap of an unmapped range");
    for (int j = 0; j < nmaps;) {
        region *m = &maps[j];
        if (m->va >= p && m->va + m->size <= p + size) {
            mmap((void *)(uintptr_t)m->va, m->size, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
            unref(m->a);
            maps[j] = maps[--nmaps];
        } else {
            j++;
        }
    }
    return CUDA_SUCCESS;
}
API CUresult cuMemSetAccess(CUdeviceptr p, size_t size, const CUmemAccessDesc *d, size_t n)
{
    LOCK();
    uint64_t covered = 0;
    NEED_CTX();
    MAYBE_FAIL();
    for (int j = 0; j < nmaps; j++) {
        region *m = &maps[j];
        if (m->va < p + size && p < m->va + m->size) {
            uint64_t a = m->va > p ? m->va : p;
            uint64_t b = m->va + m->size < p + size ? m->va + m->size : p + size;
            covered += b - a;
        }
    }
    if (covered != size || n != 1 || d->flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
        return bad("cuMemSetAccess on a range not fully mapped");
    return mprotect((void *)(uintptr_t)p, size, PROT_READ | PROT_WRITE) ? CUDA_ERROR_UNKNOWN
                                                                        : CUDA_SUCCESS;
}
API CUresult cuMemExportToShareableHandle(void *out, CUmemGenericAllocationHandle h,
                                          CUmemAllocationHandleType t, unsigned long long f)
{
    LOCK();
    alloc *a = (alloc *)(uintptr_t)h;
    NEED_CTX();
    MAYBE_FAIL();
    if (t != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR || !a || !a->live)
        return bad("cuMemExportToShareableHandle arguments");
    *(int *)out = dup(a->fd); /* like the driver: not close-on-exec */
    return CUDA_SUCCESS;
}
API CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *h, void *os,
                                            CUmemAllocationHandleType t)
{
    LOCK();
    struct stat st;
    int fd = (int)(uintptr_t)os;
    NEED_CTX();
    MAYBE_FAIL();
    if (t != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR || fstat(fd, &st) != 0)
        return bad("cuMemImportFromShareableHandle arguments");
    alloc *a = calloc(1, sizeof *a);
    a->fd = dup(fd);
    a->size = (size_t)st.st_size;
    a->refs = 1;
    a->live = 1;
    used += a->size;
    if (nhandles < MAXN) handles[nhandles++] = a;
    *h = (CUmemGenericAllocationHandle)(uintptr_t)a;
    return CUDA_SUCCESS;
}
API CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream s)
{
    LOCK();
    NEED_CTX();
    MAYBE_FAIL();
    memset((void *)(uintptr_t)p, v, n);
    return CUDA_SUCCESS;
}
API CUresult cuMemsetD8(CUdeviceptr p, unsigned char v, size_t n)
{
    return cuMemsetD8Async(p, v, n, NULL);
}
API CUresult cuMemcpyAsync(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st)
{
    LOCK();
    NEED_CTX();
    memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)s, n);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpy(CUdeviceptr d, CUdeviceptr s, size_t n)
{
    return cuMemcpyAsync(d, s, n, NULL);
}
API CUresult cuMemcpyHtoD(CUdeviceptr d, const void *s, size_t n)
{
    return cuMemcpyAsync(d, (CUdeviceptr)(uintptr_t)s, n, NULL);
}
API CUresult cuMemcpyDtoH(void *d, CUdeviceptr s, size_t n)
{
    return cuMemcpyAsync((CUdeviceptr)(uintptr_t)d, s, n, NULL);
}
API CUresult cuMemAlloc(CUdeviceptr *p, size_t n)
{
    LOCK();
    NEED_CTX();
    MAYBE_FAIL();
    /* Size in a header page before the block, so cuMemFree can unmap it. */
    size_t tot = n + 4096;
    char *m = mmap(NULL, tot, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    *(size_t *)m = tot;
    used += n;
    *p = (CUdeviceptr)(uintptr_t)(m + 4096);
    return CUDA_SUCCESS;
}
API CUresult cuMemFree(CUdeviceptr p)
{
    LOCK();
    NEED_CTX();
    char *m = (char *)(uintptr_t)p - 4096;
    size_t tot = *(size_t *)m;
    used -= tot - 4096;
    munmap(m, tot);
    return CUDA_SUCCESS;
}

/* Events: enough for the client's event pool (csrc/client/evpool.c). mockcuda_events reports
 * how many exist and how many were ever created; mockcuda_events_busy(n) makes queries of
 * recorded events report CUDA_ERROR_NOT_READY until n is set back to 0. */
typedef struct mevent {
    unsigned magic;
    unsigned flags;
    int recorded;
    int gen; /* ctx_gen it was made in */
} mevent;
#define EV_MAGIC 0xe7e7e7e7u
static int ev_live, ev_created, ev_busy, ev_records;

API void mockcuda_events(int *live, int *created, int *records)
{
    LOCK();
    *live = ev_live;
    *created = ev_created;
    *records = ev_records;
}
API void mockcuda_events_busy(int busy)
{
    LOCK();
    ev_busy = busy;
}
API CUresult cuEventCreate(CUevent *e, unsigned int flags)
{
    LOCK();
    NEED_CTX();
    MAYBE_FAIL();
    mevent *m = calloc(1, sizeof *m);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    m->magic = EV_MAGIC;
    m->flags = flags;
    m->gen = ctx_gen;
    ctxobj_add(m);
    ev_live++;
    ev_created++;
    *e = (CUevent)m;
    return CUDA_SUCCESS;
}
API CUresult cuEventRecord(CUevent e, CUstream s)
{
    mevent *m = (mevent *)e;
    LOCK();
    NEED_CTX();
    MAYBE_FAIL();
    if (!m || m->magic != EV_MAGIC) return bad("cuEventRecord of no event");
    m->recorded = 1;
    ev_records++;
    return CUDA_SUCCESS;
}
API CUresult cuEventQuery(CUevent e)
{
    mevent *m = (mevent *)e;
    LOCK();
    NEED_CTX();
    if (!m || m->magic != EV_MAGIC) return bad("cuEventQuery of no event");
    if (m->gen != ctx_gen) return bad("cuEventQuery of an event of a reset context");
    if (poison_armed && !poison) poison = poison_armed; /* the fault shows at a completion */
    if (poison) return poison;
    return m->recorded && ev_busy ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}
API CUresult cuEventSynchronize(CUevent e)
{
    mevent *m = (mevent *)e;
    LOCK();
    NEED_CTX();
    if (!m || m->magic != EV_MAGIC) return bad("cuEventSynchronize of no event");
    return CUDA_SUCCESS;
}
API CUresult cuEventDestroy(CUevent e)
{
    mevent *m = (mevent *)e;
    LOCK();
    if (!m || m->magic != EV_MAGIC) return bad("cuEventDestroy of no event (double destroy?)");
    m->magic = 0;
    ctxobj_del(m);
    free(m);
    ev_live--;
    return CUDA_SUCCESS;
}

/* Modules and launches: a module is its image's bytes, a function its name. A launch runs
 * nothing, except that a kernel whose name starts with "fault" raises a sticky
 * CUDA_ERROR_LAUNCH_FAILED (seen at the next completion), as a trap does on a GPU, and one
 * whose name starts with "assertfail" reports a device assert as a guarded kernel does. */
typedef struct mfunc {
    unsigned magic;
    char name[128];
} mfunc;
#define FN_MAGIC 0xf00df00du
API CUresult cuModuleLoadData(CUmodule *m, const void *image)
{
    LOCK();
    NEED_CTX();
    if (!image) return bad("cuModuleLoadData of no image");
    *m = (CUmodule)malloc(8);
    ctxobj_add(*m);
    return CUDA_SUCCESS;
}
API CUresult cuModuleUnload(CUmodule m)
{
    LOCK();
    ctxobj_del(m);
    free(m);
    return CUDA_SUCCESS;
}
API CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
    LOCK();
    NEED_CTX();
    if (!m) return bad("cuModuleGetFunction of no module");
    mfunc *fn = calloc(1, sizeof *fn);
    if (!fn) return CUDA_ERROR_OUT_OF_MEMORY;
    fn->magic = FN_MAGIC;
    snprintf(fn->name, sizeof fn->name, "%s", name);
    ctxobj_add(fn); /* functions go with the context (and their module) */
    *f = (CUfunction)fn;
    return CUDA_SUCCESS;
}
API CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v)
{
    LOCK();
    NEED_CTX();
    return CUDA_SUCCESS;
}
API CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                            unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params,
                            void **extra)
{
    mfunc *fn = (mfunc *)f;
    LOCK();
    NEED_CTX();
    if (!fn || fn->magic != FN_MAGIC) return bad("cuLaunchKernel of no function");
    if (strncmp(fn->name, "fault", 5) == 0) poison_armed = CUDA_ERROR_LAUNCH_FAILED;
    /* "assertfail*" (no parameters of its own): what a guarded kernel's failed device assert
     * does, (kernel 1, AGILE_GUARD_SITE_ASSERT, PTX line 42) into its violation record, the
     * hidden parameter after __agile_mask and __agile_base */
    if (strncmp(fn->name, "assertfail", 10) == 0 && params && params[2]) {
        uint8_t *rec = (uint8_t *)(uintptr_t) * (const uint64_t *)params[2];
        uint32_t kernel = 1, site = 0xffffffffu;
        uint64_t line = 42;
        memcpy(rec, &kernel, 4);
        memcpy(rec + 4, &site, 4);
        memcpy(rec + 8, &line, 8);
    }
    return CUDA_SUCCESS;
}
API CUresult cuStreamWriteValue32(CUstream s, CUdeviceptr addr, cuuint32_t v, unsigned f)
{
    LOCK();
    NEED_CTX();
    *(volatile uint32_t *)(uintptr_t)addr = v;
    return CUDA_SUCCESS;
}
API CUresult cuStreamWaitValue32(CUstream s, CUdeviceptr addr, cuuint32_t v, unsigned f)
{
    uint32_t cur_v;
    LOCK();
    NEED_CTX();
    cur_v = *(volatile uint32_t *)(uintptr_t)addr;
    /* a mock stream cannot wait: a condition not met yet is refused, never assumed */
    if ((f & 0xf) == CU_STREAM_WAIT_VALUE_EQ ? cur_v == v : (int32_t)(cur_v - v) >= 0)
        return CUDA_SUCCESS;
    fprintf(stderr, "mockcuda: a stream wait that would block (%u, want %u)\n", cur_v, v);
    return CUDA_ERROR_NOT_SUPPORTED;
}
