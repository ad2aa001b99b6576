/* cudadrv.h — the CUDA driver API, loaded at run time with dlopen("libcuda.so.1") so that
 * agile's binaries start on machines without a GPU and never link the driver. Internal:
 * includes cuda.h (for types only; no libcuda symbol is referenced at link time).
 *
 * Call through the table with the names the header gives: agile__cu.cuMemAlloc(...) uses
 * cuda.h's own #define to land on the field cuMemAlloc_v2, whose type is the PFN of
 * cudaTypedefs.h for the ABI version named in the list; cudadrv.c checks at compile time
 * that it matches what cuda.h declares (a version bump that changed only semantics, such
 * as cuDeviceGetUuid_v2, keeps its signature: read the version off cudaTypedefs.h).
 */
#ifndef AGILE_CUDADRV_H
#define AGILE_CUDADRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda.h>
#include <cudaTypedefs.h>

/* X(name, version): the one list of driver entry points. `name` is the API name as
 * written in code (cuda.h maps it to the versioned symbol); `version` is the CUDA
 * version that introduced that ABI, the cudaVersion given to cuGetProcAddress and the
 * suffix of its PFN_ typedef. */
#define AGILE_CU_LIST(X)                                                                           \
    X(cuInit, 2000)                                                                                \
    X(cuDriverGetVersion, 2020)                                                                    \
    X(cuGetErrorName, 6000)                                                                        \
    X(cuGetErrorString, 6000)                                                                      \
    X(cuDeviceGet, 2000)                                                                           \
    X(cuDeviceGetCount, 2000)                                                                      \
    X(cuDeviceGetName, 2000)                                                                       \
    X(cuDeviceTotalMem, 3020)                                                                      \
    X(cuDeviceGetAttribute, 2000)                                                                  \
    X(cuDeviceGetUuid, 11040)                                                                      \
    X(cuDevicePrimaryCtxRetain, 7000)                                                              \
    X(cuDevicePrimaryCtxRelease, 11000)                                                            \
    X(cuDevicePrimaryCtxReset, 11000)                                                              \
    X(cuCtxCreate, 12050)                                                                          \
    X(cuCtxDestroy, 4000)                                                                          \
    X(cuCtxSetCurrent, 4000)                                                                       \
    X(cuCtxGetCurrent, 4000)                                                                       \
    X(cuCtxPushCurrent, 4000)                                                                      \
    X(cuCtxPopCurrent, 4000)                                                                       \
    X(cuMemGetInfo, 3020)                                                                          \
    X(cuMemAlloc, 3020)                                                                            \
    X(cuMemFree, 3020)                                                                             \
    X(cuMemHostRegister, 6050)                                                                     \
    X(cuMemHostUnregister, 4000)                                                                   \
    X(cuPointerGetAttribute, 4000)                                                                 \
    X(cuMemAddressReserve, 10020)                                                                  \
    X(cuMemAddressFree, 10020)                                                                     \
    X(cuMemCreate, 10020)                                                                          \
    X(cuMemRelease, 10020)                                                                         \
    X(cuMemMap, 10020)                                                                             \
    X(cuMemUnmap, 10020)                                                                           \
    X(cuMemSetAccess, 10020)                                                                       \
    X(cuMemGetAllocationGranularity, 10020)                                                        \
    X(cuMemExportToShareableHandle, 10020)                                                         \
    X(cuMemImportFromShareableHandle, 10020)                                                       \
    X(cuMemsetD8, 3020)                                                                            \
    X(cuMemsetD8Async, 3020)                                                                       \
    X(cuMemcpy, 4000)                                                                              \
    X(cuMemcpyAsync, 4000)                                                                         \
    X(cuMemcpyHtoD, 3020)                                                                          \
    X(cuMemcpyDtoH, 3020)                                                                          \
    X(cuStreamCreate, 2000)                                                                        \
    X(cuStreamDestroy, 4000)                                                                       \
    X(cuStreamSynchronize, 2000)                                                                   \
    X(cuStreamQuery, 2000)                                                                         \
    X(cuStreamWaitEvent, 3020)                                                                     \
    X(cuStreamWriteValue32, 11070)                                                                 \
    X(cuStreamWaitValue32, 11070)                                                                  \
    X(cuEventCreate, 2000)                                                                         \
    X(cuEventRecord, 2000)                                                                         \
    X(cuEventQuery, 2000)                                                                          \
    X(cuEventSynchronize, 2000)                                                                    \
    X(cuEventDestroy, 4000)                                                                        \
    X(cuEventElapsedTime, 12080)                                                                   \
    X(cuModuleLoadData, 2000)                                                                      \
    X(cuModuleUnload, 2000)                                                                        \
    X(cuModuleGetFunction, 2000)                                                                   \
    X(cuFuncSetAttribute, 9000)                                                                    \
    X(cuLaunchKernel, 4000)                                                                        \
    X(cuLaunchKernelEx, 11060)

/* Fields are named after the expanded (versioned) symbol, the same expansion a call
 * through agile__cu.name gets. */
typedef struct agile__cu_table {
#define AGILE__CU_FIELD(name, ver) PFN_##name##_v##ver name;
    AGILE_CU_LIST(AGILE__CU_FIELD)
#undef AGILE__CU_FIELD
} agile__cu_table;

/* Valid (non-NULL entries for everything the driver has) once agile__cuda_load returned
 * AGILE_OK. Entry points the driver lacks are NULL; the ones every backend call needs
 * are checked at load. */
extern agile__cu_table agile__cu;

/* agile__cuda_load: dlopen the driver, resolve the table, cuInit(0), check that there is a
 * device. Thread-safe; runs once per process, later calls return the first result.
 * AGILE_ENODEV with a reason in why ("libcuda.so.1 not found: ...", "cuInit failed:
 * CUDA_ERROR_NO_DEVICE", "no CUDA device") when the machine cannot run CUDA. */
int agile__cuda_load(char *why, size_t cap);

/* agile__cu_err: wrap r (agile_err_cuda) and log its name at debug level with `what`. */
int agile__cu_err(CUresult r, const char *what);

/* agile__cu_set_access: make [va, va + len) readable and writable from device dev (a
 * cuMemSetAccess of mapped VMM memory, in the calling thread's current context). */
int agile__cu_set_access(CUdevice dev, uint64_t va, uint64_t len);

/* agile__cu_name: "CUDA_ERROR_..." for r, also when the driver is a stub or absent. */
const char *agile__cu_name(CUresult r);

/* agile__cu_sticky: whether r poisons the context it happened in, so that every later call
 * there fails (cuda.h: "This leaves the process in an inconsistent state and any further
 * CUDA work will return the same error": 226, 700, 702, 714-719, 911; and 710, a device
 * assert: "the context cannot be used anymore, and must be destroyed"). Only a context
 * reset brings the device back. agile__cu_sticky_err: the same for a wrapped agile error. */
bool agile__cu_sticky(CUresult r);
bool agile__cu_sticky_err(int err);
/* The last sticky error agile__cu_err wrapped (0: none since it was cleared): a context
 * died somewhere in the process; the worker's dispatcher looks at it after every pass. */
extern _Atomic int agile__cu_sticky_seen;

#endif
