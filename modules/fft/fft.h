/* fft.h — the fft module: the backends (cuFFT through dlopen, FFTW on the host), the shared
 * plan cache and the module itself. Plan descriptions, their codec and the module's op
 * numbers are its protocol with clients: csrc/proto/fft_plan.h.
 */
#ifndef AGILE_FFT_H
#define AGILE_FFT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "agile/defs.h"
#include "core.h"
#include "fft_plan.h"
#include "../module.h"

/* ---- backends ------------------------------------------------------------------------------ */

/* Backend kinds: AGILE_BACKEND_KIND_* (agile/defs.h): HOST runs FFTW, CUDA cuFFT. */

typedef struct agile__fft_backend agile__fft_backend;
typedef struct agile__fft_bplan agile__fft_bplan; /* a backend's plan object */

/* Who runs an exec: work areas are per (tenant, stream), never shared between tenants. */
typedef struct agile__fft_env {
    uint32_t tenant;
    int device;
    void *stream; /* CUstream on cuda (NULL: the legacy default stream); unused on host */
} agile__fft_env;

/* Protected-memory callbacks of the worker (work areas: outside every window, accounted to
 * the tenant). free_protected is called only when no queued work can still use the memory
 * from the backend's side: after the plan's exec on that stream was serialised by the
 * caller, i.e. the worker must make the free stream-ordered or synchronous (cuMemFree is). */
typedef int (*agile__fft_alloc_protected_fn)(void *ctx, uint32_t tenant, int device, uint64_t size,
                                             uint64_t *addr, void **handle);
typedef void (*agile__fft_free_protected_fn)(void *ctx, uint32_t tenant, int device, void *handle,
                                             uint64_t addr, uint64_t size);

struct agile__fft_backend {
    const char *name;
    int kind; /* AGILE_BACKEND_KIND_* */
    /* plan_create: a plan for a validated desc. Blocking (cuFFT planning can take tens of
     * ms). The caller must have the device's context current (cuda). */
    int (*plan_create)(agile__fft_backend *b, const agile__fft_desc *d, int device,
                       agile__fft_bplan **out);
    /* exec: run p on worker-side addresses in/out, already bounds-checked. Asynchronous on
     * env->stream for cuda, synchronous on host. direction only matters for C2C/Z2Z. */
    int (*exec)(agile__fft_backend *b, agile__fft_bplan *p, const agile__fft_env *env, void *in,
                void *out, int direction);
    void (*plan_destroy)(agile__fft_backend *b, agile__fft_bplan *p);
    /* work_size: bytes of work area one exec of p needs (0 on host). */
    uint64_t (*work_size)(const agile__fft_bplan *p);
    /* release_tenant: free every work area of tenant (after its streams are synchronised). */
    void (*release_tenant)(agile__fft_backend *b, uint32_t tenant);
    void (*close)(agile__fft_backend *b);
};

/* agile__fft_fftw_open: the host backend (FFTW, double and single). Planning is serialised
 * (FFTW's planner is not thread-safe); execs run concurrently (fftw_execute_* is). */
int agile__fft_fftw_open(agile__fft_backend **out);

typedef struct agile__fft_cufft_cfg {
    const char *lib_path; /* NULL: libcufft.so.12, .so.11, .so in that order */
    agile__fft_alloc_protected_fn alloc_protected;
    agile__fft_free_protected_fn free_protected;
    void *ctx;
} agile__fft_cufft_cfg;

/* agile__fft_cufft_open: the cuda backend, cuFFT loaded with dlopen (no link-time
 * dependency). AGILE_ENODEV when the library or one of its symbols is missing (the message
 * is logged), AGILE_EINVAL without the protected-memory callbacks. */
int agile__fft_cufft_open(const agile__fft_cufft_cfg *cfg, agile__fft_backend **out);
/* agile__fft_cufft_ctx_reset: the worker reset a device's context (a sticky fault): every
 * cuFFT plan made before is made again, for the same desc, at its next exec. */
void agile__fft_cufft_ctx_reset(void);
/* agile__fft_cufft_version: cufftGetVersion() of the loaded library. */
int agile__fft_cufft_version(agile__fft_backend *b, int *version);

/* ---- plan cache (cache.c) -------------------------------------------------------------- */

typedef struct agile__fft_centry agile__fft_centry;

typedef struct agile__fft_cache_stats {
    uint64_t hits, misses, evictions, create_failures;
    uint64_t entries, in_use, work_bytes;
    uint64_t max_entries, max_work_bytes;
} agile__fft_cache_stats;

typedef struct agile__fft_cache {
    pthread_mutex_t mu;
    agile__fft_backend *be;
    agile__fft_centry **buckets;
    uint32_t nbuckets;
    agile__fft_centry *lru_head, *lru_tail; /* idle entries only, most recent at head */
    uint64_t max_entries, max_work_bytes;
    agile__fft_cache_stats st;
} agile__fft_cache;

/* agile__fft_cache_init: caller storage; plans are created with be. Bounds apply to plans
 * nobody holds: a held plan is never destroyed, so while many are held the cache may sit
 * above its bounds until they are released. */
int agile__fft_cache_init(agile__fft_cache *c, agile__fft_backend *be, uint64_t max_entries,
                          uint64_t max_work_bytes);
/* agile__fft_cache_fini: destroys every plan; none may be held. */
void agile__fft_cache_fini(agile__fft_cache *c);
/* agile__fft_cache_hold: the plan for (validated desc, device), created on a miss (outside
 * the lock; a racing creator's duplicate is destroyed). The caller owns one reference. */
int agile__fft_cache_hold(agile__fft_cache *c, const agile__fft_desc *d, int device,
                          agile__fft_centry **out);
/* agile__fft_cache_rele: drop a reference; an idle plan over the bounds is destroyed. */
void agile__fft_cache_rele(agile__fft_cache *c, agile__fft_centry *e);
void agile__fft_cache_get_stats(agile__fft_cache *c, agile__fft_cache_stats *st);
/* agile__fft_cache_trim: destroy every idle plan (memory pressure, tests). */
void agile__fft_cache_trim(agile__fft_cache *c);

const agile__fft_desc *agile__fft_centry_desc(const agile__fft_centry *e);
agile__fft_bplan *agile__fft_centry_plan(const agile__fft_centry *e);
int agile__fft_centry_device(const agile__fft_centry *e);

/* ---- the module (module.c); its ops table is in ../module.h ---------------------------- */

/* The module's operations table (module.c), registered by the worker. */
extern const agile__module_ops agile__fft_module;

/* agile__fft_module_open: a module instance over an opened backend (init does this with
 * the backend the worker runs; tests and the benchmark pick one). Takes ownership of be on
 * success. Cache bounds: 0 selects the defaults (256 plans, 4 GiB of work area). */
int agile__fft_module_open(agile__fft_backend *be, uint64_t max_entries, uint64_t max_work_bytes,
                           void **state);
/* agile__fft_module_cache: the instance's plan cache (stats, benchmark). */
agile__fft_cache *agile__fft_module_cache(void *state);

#endif
