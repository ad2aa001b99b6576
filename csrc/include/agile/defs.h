/* agile/defs.h — the constants and lists that the worker, libagile, the modules and the
 * Python package all use: the device limit, the backend kinds, the module ids and the
 * memory counters. Each list is written once, here; the enums, the name tables
 * (agile_backend_name, agile_mem_stat_name; agile_err_entry in agile/err.h for the
 * error codes) and the structs are generated
 * from it, and Python reads the names through those functions instead of copying them.
 * Usable from C and C++; no functions except the name tables.
 */
#ifndef AGILE_DEFS_H
#define AGILE_DEFS_H

#include <stdint.h>

#include "agile/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* AGILE_MAX_DEV: the most GPUs one worker serves (and one client uses); device indexes are
 * 0..AGILE_MAX_DEV-1. */
#define AGILE_MAX_DEV 16

/* X(NAME, value, "name"): the backends a worker runs on ("name": what --backend and
 * `agilectl status` say). Values travel in agile_session_info.backend. */
#define AGILE_BACKEND_LIST(X)                                                                  \
    X(HOST, 1, "host") /* memfd-backed memory, no GPU; FFTs by FFTW */                       \
    X(CUDA, 2, "cuda") /* the CUDA driver API; FFTs by cuFFT */

enum {
#define AGILE__BACKEND_ENUM(NAME, value, name) AGILE_BACKEND_KIND_##NAME = value,
    AGILE_BACKEND_LIST(AGILE__BACKEND_ENUM)
#undef AGILE__BACKEND_ENUM
};

/* agile_backend_name: "host", "cuda" for an AGILE_BACKEND_KIND_*, NULL for anything else.
 * Static storage. */
AGILE_API const char *agile_backend_name(int kind);

/* X(NAME, id, "name"): the worker's trusted modules. The id addresses the module in
 * agile_ring_mod_op and MOD_CTL; bit `id` of a tenant's policy (`modules = fft,guard` in
 * the worker's configuration) allows its use. "guard" is the guarded-module service of the
 * data plane (agile_module_load), which has no MOD_CTL ops. */
#define AGILE_MODULE_ID_LIST(X)                                                                \
    X(FFT, 0, "fft")                                                                           \
    X(GUARD, 1, "guard")

enum {
#define AGILE__MODULE_ENUM(NAME, id, name) AGILE_MODULE_ID_##NAME = id,
    AGILE_MODULE_ID_LIST(AGILE__MODULE_ENUM)
#undef AGILE__MODULE_ENUM
};
/* AGILE_MODULE_ID_COUNT: how many there are (ids are 0..AGILE_MODULE_ID_COUNT-1). */
enum {
#define AGILE__MODULE_ONE(NAME, id, name) +1
    AGILE_MODULE_ID_COUNT = 0 AGILE_MODULE_ID_LIST(AGILE__MODULE_ONE)
#undef AGILE__MODULE_ONE
};
/* AGILE_MODULE_BIT: the policy bit of module id. */
#define AGILE_MODULE_BIT(id) (1u << (id))

/* X(field, "torch key"): the per-device counters of a process's agile pool, in the order of
 * agile_mem_stats's fields (all uint64_t). "torch key" is the torch.cuda.memory_stats() key
 * agile_torch.memory_stats() gives the field under (agile's own name where torch has none). */
#define AGILE_MEM_STAT_LIST(X)                                                                 \
    X(allocated_bytes, "allocated_bytes.all.current")                                          \
    X(allocated_bytes_peak, "allocated_bytes.all.peak")                                        \
    X(allocated_bytes_total, "allocated_bytes.all.allocated")                                  \
    X(freed_bytes_total, "allocated_bytes.all.freed")                                          \
    X(requested_bytes, "requested_bytes.all.current")                                          \
    X(requested_bytes_peak, "requested_bytes.all.peak")                                        \
    X(reserved_bytes, "reserved_bytes.all.current")                                            \
    X(reserved_bytes_peak, "reserved_bytes.all.peak")                                          \
    X(cached_bytes, "cached_bytes")                                                            \
    X(free_bytes, "inactive_split_bytes.all.current")                                          \
    X(allocations, "allocation.all.current")                                                   \
    X(num_allocs, "allocation.all.allocated")                                                  \
    X(num_frees, "allocation.all.freed")                                                       \
    X(segments, "segment.all.current")                                                         \
    X(num_grows, "segment.all.allocated")                                                      \
    X(num_shrinks, "segment.all.freed")                                                        \
    X(num_grow_failures, "num_grow_failures")                                                  \
    X(num_alloc_retries, "num_alloc_retries")                                                  \
    X(num_ooms, "num_ooms")                                                                    \
    X(num_free_errors, "num_free_errors")                                                      \
    X(quota_bytes, "quota_bytes")   /* the tenant's quota on this device */                  \
    X(window_bytes, "window_bytes") /* W, the size of the tenant's window */

/* agile_mem_stat_name: the field name of counter i of AGILE_MEM_STAT_LIST
 * ("allocated_bytes"); *torch_key (may be NULL) gets its torch.cuda.memory_stats() key.
 * NULL (and *torch_key untouched) for i past the end. Static storage. */
AGILE_API const char *agile_mem_stat_name(unsigned i, const char **torch_key);

#ifdef __cplusplus
}
#endif
#endif
