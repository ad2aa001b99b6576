/* cudadrv.c — dlopen the CUDA driver and resolve AGILE_CU_LIST once per process. */
#include "cudadrv.h"

#include "core.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

agile__cu_table agile__cu;
_Atomic int agile__cu_sticky_seen;

#define CU_STR_(x) #x
#define CU_STR(x) CU_STR_(x)

/* Each field's type must be the ABI cuda.h declares for the name, so the version in the
 * list is the one the header was written against. */
#define AGILE__CU_CHECK(name, ver)                                                                 \
    _Static_assert(__builtin_types_compatible_p(PFN_##name##_v##ver, __typeof__(&name)),           \
                   #name ": version " #ver " is not the ABI cuda.h declares");
AGILE_CU_LIST(AGILE__CU_CHECK)
#undef AGILE__CU_CHECK

typedef struct cu_sym {
    const char *api; /* what cuGetProcAddress wants: "cuMemAlloc" */
    const char *sym; /* the exported versioned symbol, for dlsym: "cuMemAlloc_v2" */
    int version;     /* cudaVersion for cuGetProcAddress */
    size_t field;    /* offset in agile__cu */
} cu_sym;

static const cu_sym cu_syms[] = {
#define AGILE__CU_SYM(name, ver) {#name, CU_STR(name), ver, offsetof(agile__cu_table, name)},
    AGILE_CU_LIST(AGILE__CU_SYM)
#undef AGILE__CU_SYM
};

/* cuGetProcAddress_v2 (CUDA 12.0+): resolves the ABI of a given version, and is what
 * tools (Nsight, compute-sanitizer) intercept; plain dlsym is the fallback. */
typedef CUresult (*get_proc_fn)(const char *, void **, int, cuuint64_t,
                                CUdriverProcAddressQueryResult *);

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_rv;
static char load_why[256];
static void *libcuda;

static const char *const cu_names[] = {
    /* Enough names for the errors a load can meet even when cuGetErrorName is missing or
     * the library is the toolkit's stub (which answers every call with an error). */
    [CUDA_ERROR_INVALID_VALUE] = "CUDA_ERROR_INVALID_VALUE",
    [CUDA_ERROR_OUT_OF_MEMORY] = "CUDA_ERROR_OUT_OF_MEMORY",
    [CUDA_ERROR_NOT_INITIALIZED] = "CUDA_ERROR_NOT_INITIALIZED",
    [CUDA_ERROR_DEINITIALIZED] = "CUDA_ERROR_DEINITIALIZED",
    [CUDA_ERROR_STUB_LIBRARY] = "CUDA_ERROR_STUB_LIBRARY",
    [CUDA_ERROR_DEVICE_UNAVAILABLE] = "CUDA_ERROR_DEVICE_UNAVAILABLE",
    [CUDA_ERROR_NO_DEVICE] = "CUDA_ERROR_NO_DEVICE",
    [CUDA_ERROR_INVALID_DEVICE] = "CUDA_ERROR_INVALID_DEVICE",
    [CUDA_ERROR_SYSTEM_DRIVER_MISMATCH] = "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
    [CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE] = "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
    [CUDA_ERROR_OPERATING_SYSTEM] = "CUDA_ERROR_OPERATING_SYSTEM",
};

const char *agile__cu_name(CUresult r)
{
    static _Thread_local char buf[48];
    const char *s = NULL;
    if (agile__cu.cuGetErrorName && agile__cu.cuGetErrorName(r, &s) == CUDA_SUCCESS && s) return s;
    if ((size_t)r < AGILE_ARRAY_LEN(cu_names) && cu_names[r]) return cu_names[r];
    snprintf(buf, sizeof buf, "CUresult %d", (int)r);
    return buf;
}

int agile__cu_err(CUresult r, const char *what)
{
    if (r != CUDA_SUCCESS) agile__debug("cuda: %s: %s", what ? what : "call", agile__cu_name(r));
    if (agile__cu_sticky(r)) atomic_store(&agile__cu_sticky_seen, (int)r);
    return agile_err_cuda((int)r);
}

int agile__cu_set_access(CUdevice dev, uint64_t va, uint64_t len)
{
    CUmemAccessDesc d;
    memset(&d, 0, sizeof d);
    d.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    d.location.id = dev;
    d.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    return agile__cu_err(agile__cu.cuMemSetAccess(va, len, &d, 1),
                        "agile__cu.cuMemSetAccess(va, len, &d, 1)");
}

bool agile__cu_sticky(CUresult r)
{
    switch (r) {
    case CUDA_ERROR_CONTAINED:
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_LAUNCH_TIMEOUT:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_EXTERNAL_DEVICE:
        return true;
    default:
        return false;
    }
}

bool agile__cu_sticky_err(int err)
{
    return agile_err_class(err) == AGILE_ECUDA &&
           agile__cu_sticky((CUresult)(err & AGILE_ERR_CODE_MASK));
}

static const char *lib_path(void *h)
{
    struct link_map *lm = NULL;
    if (h && dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && *lm->l_name)
        return lm->l_name;
    return "libcuda.so.1";
}

static void do_load(void)
{
    get_proc_fn get_proc = NULL;
    int drv = 0, n = 0;
    CUresult r;
    /* The fields must be set all or none: a failed load leaves the table empty. */
    agile__cu_table t;

    memset(&t, 0, sizeof t);
    load_rv = AGILE_ENODEV;
    /* Only the soname: the driver belongs to the system (ld.so.cache, LD_LIBRARY_PATH).
     * The toolkit's stubs directory ships libcuda.so only, never libcuda.so.1. */
    libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!libcuda) {
        snprintf(load_why, sizeof load_why, "libcuda.so.1 not found: %s", dlerror());
        return;
    }
    get_proc = (get_proc_fn)dlsym(libcuda, "cuGetProcAddress_v2");
    for (size_t i = 0; i < AGILE_ARRAY_LEN(cu_syms); i++) {
        const cu_sym *s = &cu_syms[i];
        void *fn = NULL;
        CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        if (get_proc && (get_proc(s->api, &fn, s->version, CU_GET_PROC_ADDRESS_LEGACY_STREAM,
                                  &st) != CUDA_SUCCESS ||
                         st != CU_GET_PROC_ADDRESS_SUCCESS))
            fn = NULL;
        if (!fn) fn = dlsym(libcuda, s->sym);
        memcpy((char *)&t + s->field, &fn, sizeof fn);
    }
    /* What the backends cannot work without. */
    if (!t.cuInit || !t.cuDeviceGetCount || !t.cuMemCreate || !t.cuMemMap ||
        !t.cuMemAddressReserve || !t.cuMemSetAccess || !t.cuMemExportToShareableHandle ||
        !t.cuDevicePrimaryCtxRetain || !t.cuCtxPushCurrent || !t.cuCtxPopCurrent) {
        snprintf(load_why, sizeof load_why,
                 "%s lacks the virtual memory management API (driver too old)", lib_path(libcuda));
        return;
    }
    agile__cu = t;
    r = t.cuInit(0);
    if (r != CUDA_SUCCESS) {
        const char *name = agile__cu_name(r);
        if (r == CUDA_ERROR_STUB_LIBRARY)
            snprintf(load_why, sizeof load_why,
                     "cuInit failed: %s (%s is the CUDA toolkit's stub, not a driver: "
                     "take the stubs directory out of LD_LIBRARY_PATH)",
                     name, lib_path(libcuda));
        else
            snprintf(load_why, sizeof load_why, "cuInit failed: %s", name);
        goto fail;
    }
    if (t.cuDriverGetVersion) t.cuDriverGetVersion(&drv);
    r = t.cuDeviceGetCount(&n);
    if (r != CUDA_SUCCESS || n <= 0) {
        snprintf(load_why, sizeof load_why, "no CUDA device");
        goto fail;
    }
    agile__debug("cuda: %s, driver %d.%d, %d device(s)", lib_path(libcuda), drv / 1000,
                 (drv % 1000) / 10, n);
    load_rv = AGILE_OK;
    return;
fail:
    /* Keep cuGetErrorName for agile__cu_name; nothing else may be called. */
    memset(&agile__cu, 0, sizeof agile__cu);
    agile__cu.cuGetErrorName = t.cuGetErrorName;
}

int agile__cuda_load(char *why, size_t cap)
{
    pthread_once(&load_once, do_load);
    if (why && cap) snprintf(why, cap, "%s", load_rv == AGILE_OK ? "" : load_why);
    return load_rv;
}
