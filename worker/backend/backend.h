/* backend.h — the GPU backends behind one interface: `cuda` (CUDA driver API through
 * dlopen("libcuda.so.1"), one primary context per GPU, owned by the worker) and `host`
 * (memfd-backed memory, no GPU). See docs/design.md "Memory: windows, leases, sinks".
 *
 * Worker side: a backend hands out per-tenant windows of W = 2^k bytes, aligned to W,
 * reserved with a trailing guard gap; every unleased part of a window (and the gap) is
 * mapped to a per-window sink chunk so a fenced access never faults. Leases are physical
 * chunks mapped into a window at an offset and exported as file descriptors; released
 * leases are scrubbed before their memory can reach anyone else. Protected memory is
 * the worker's own and never exported.
 *
 * Client side: the same window size reserved in the client, leases imported from their fds
 * and mapped at the same offsets (csrc/platform/cwin.h, agile__cmem_*).
 *
 * Threads: a backend's functions may be called from any thread; calls on one window are
 * serialised by the caller (the worker's per-session lock). No function holds a global
 * lock across a GPU call. On cuda every function makes the device's primary context
 * current for its own duration (push/pop), so callers need not; the queue operations are
 * the exception (see there).
 *
 * Sink: one per window, a physical chunk of agile__window_sink_chunk() bytes =
 * clamp(W / 1024, granularity, 64 MiB), mapped over every chunk-aligned piece of the
 * unleased window and the gap, so a window costs at most ~1024 + gap/chunk mappings
 * (vm.max_map_count on host, map + cuMemSetAccess time on cuda) and at most 0.1 % of W
 * of real memory. On cuda, where cuMemMap cannot map part of an allocation and cuMemUnmap
 * cannot unmap part of a mapping, pieces smaller than a chunk (around leases that are not
 * chunk-aligned) use a second sink chunk of one granule; both belong to the tenant, both
 * are zeroed at window creation, and a chunk whose lease goes away is one mapping again.
 *
 * Scrubbing: memory is zeroed when it is handed out (agile__lease_create), which covers every
 * reuse of physical memory; agile__lease_destroy does not zero memory a client may still map.
 *
 * Lease pool (agile__lease_pool_*): on cuda, a lease of exactly the pool's chunk size takes a
 * chunk that a refill thread created, zeroed and exported ahead of time, so the hot path is
 * sink unmap + map + access (measured: ~2 ms for create + zero + export). Pool chunks
 * are the worker's memory until leased; a chunk is leased once and released with its lease,
 * never pooled again, so the scrub at refill time is the scrub at hand-out time.
 *
 * Queues (agile__stream_*, agile__event_*, agile__kmodule_*, agile__launch): what the data
 * plane runs on a device, so that it never asks which backend it has; they run in the
 * context the caller entered (agile__backend_enter).
 *
 * Beside this header: csrc/platform's fdpass.h (agile__fd_send/agile__fd_recv, SCM_RIGHTS)
 * and cudadrv.h (the driver table agile__cu, agile__cuda_load, agile__cu_err).
 */
#ifndef AGILE_BACKEND_H
#define AGILE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agile/defs.h"

typedef struct agile__backend agile__backend;
typedef struct agile__window agile__window;
typedef struct agile__lease agile__lease;
typedef struct agile__pmem agile__pmem;

typedef struct agile__devinfo {
    char name[128];
    uint64_t total_mem;
    uint64_t free_mem;
    int cc_major, cc_minor;
    uint64_t granularity; /* physical chunk granularity (2 MiB on H100/H200, host: 2 MiB) */
    char uuid[48];        /* "GPU-<uuid>" (40 characters, as nvidia-smi) on cuda, "host" */
} agile__devinfo;

/* agile__backend_open: open the backend of the given kind (AGILE_BACKEND_*). On failure
 * returns an error (AGILE_ENODEV when the machine has no usable GPU or driver) and writes
 * the reason for a person ("libcuda.so.1 not found", "no CUDA device") into why. */
int agile__backend_open(int kind, agile__backend **out, char *why, size_t whycap);
/* agile__backend_close: windows and protected memory of be must be destroyed first. */
void agile__backend_close(agile__backend *be);
int agile__backend_kind(const agile__backend *be);
const char *agile__backend_name(const agile__backend *be);
int agile__backend_device_count(agile__backend *be);
int agile__backend_device_info(agile__backend *be, int dev, agile__devinfo *out);

/* ---- windows (worker side) ---------------------------------------------------------------- */

/* agile__window_create: reserve `size` (a power of two >= granularity, <= 2^46) aligned to
 * `size`, plus `guard_gap` bytes (<= size, rounded up to the granularity) after it, on
 * device dev, and map the sink over all of it. Blocks: on cuda ~20 ms per GiB with 2 MiB
 * sink mappings; backend-gpu-test measures it with the chunked sink. */
int agile__window_create(agile__backend *be, int dev, uint64_t size, uint64_t guard_gap,
                         agile__window **out);
/* Unmaps and releases everything, leases included (they must not be used afterwards). */
void agile__window_destroy(agile__window *w);
/* Worker-side base address of the window (device VA on cuda, host VA on host). */
uint64_t agile__window_base(const agile__window *w);
uint64_t agile__window_size(const agile__window *w);
/* The guard gap actually reserved after the window (guard_gap rounded up). */
uint64_t agile__window_gap(const agile__window *w);
/* Size of the sink chunk: window offset o (o outside leases) aliases sink byte o % chunk. */
uint64_t agile__window_sink_chunk(const agile__window *w);
/* Physical memory the window's sinks hold: the chunk, plus on cuda the one-granule small
 * sink when it is a separate allocation. The worker counts it in the tenant's quota. */
uint64_t agile__window_sink_bytes(const agile__window *w);
/* What agile__window_sink_bytes will say for a window of `size` on dev (0 for a bad dev). */
uint64_t agile__window_sink_bytes_for(agile__backend *be, int dev, uint64_t size);
int agile__window_dev(const agile__window *w);

/* agile__lease_create: allocate `size` bytes (a multiple of granularity) of fresh, zeroed
 * physical memory, map it at `offset` (a multiple of granularity) of the window (replacing
 * the sink there) and export it: *fd is a new close-on-exec file descriptor the caller owns
 * (send it, then close it). The zeroing is complete before the call returns. On host the
 * fd is a memfd sealed against shrinking, so a client cannot truncate it under the worker.
 * Errors: AGILE_EINVAL (alignment), AGILE_EBOUNDS (outside the window), AGILE_EBUSY
 * (overlaps a live lease), AGILE_ENOMEM / wrapped OS or CUDA errors. On error the window
 * is unchanged. */
int agile__lease_create(agile__window *w, uint64_t offset, uint64_t size, agile__lease **out,
                        int *fd);
/* agile__lease_destroy: unmap, put the sink back over the range, drop the worker's
 * reference to the memory (a client mapping keeps it alive until the client unmaps). */
void agile__lease_destroy(agile__lease *l);
uint64_t agile__lease_offset(const agile__lease *l);
uint64_t agile__lease_size(const agile__lease *l);

/* ---- lease pool (cuda; the host backend has none) ----------------------------------------
 * Per device, up to `chunks` physical chunks of `chunk_size` bytes, each created, zeroed
 * (through a worker-only mapping, synchronised) and exported before it is pooled; a lease of
 * exactly chunk_size takes one. Defaults at backend open: $AGILE_LEASE_POOL chunks (2; 0 turns
 * the pool off) of $AGILE_LEASE_POOL_MIB MiB (64, the default lease step), filled in the
 * background from a device's first window on. The memory is the worker's own, counted in no
 * tenant's quota; agile__backend_close frees it. The pool never makes a lease fail: a lease
 * made on demand that finds the GPU full frees the pooled chunks and tries once more. */
/* 64 chunks of 64 MiB = 4 GiB: room for a burst of growths when a deployment wants it. */
enum { AGILE_LEASE_POOL_MAX = 64 };
/* AGILE_LEASE_POOL_MANUAL: no background refill; only agile__lease_pool_fill fills (tests
 * that need every driver call on one thread). */
enum { AGILE_LEASE_POOL_MANUAL = 1 };

typedef struct agile__pool_stats {
    uint64_t chunk_size;      /* bytes per chunk (0: no pool) */
    unsigned target, ready;   /* chunks wanted, chunks pooled now */
    uint64_t hits;            /* leases served from the pool */
    uint64_t misses;          /* leases of chunk_size that found the pool empty */
    uint64_t other_sizes;     /* leases of another size (never pooled) */
    uint64_t refills;         /* chunks made */
    uint64_t refill_failures; /* chunk makes that failed (the thread backs off and retries) */
    uint64_t drains;          /* times the pool was emptied for a lease the GPU had no room for */
    uint64_t last_refill_ns;  /* how long the last chunk took to make */
    int last_error;           /* agile_err_t of the last failed refill, AGILE_OK if none */
} agile__pool_stats;

/* agile__lease_pool_config: set the pool of device dev to `chunks` (<= AGILE_LEASE_POOL_MAX)
 * chunks of chunk_size (a multiple of the granularity; ignored when chunks is 0) with flags
 * AGILE_LEASE_POOL_*. Pooled chunks beyond the new target, or of another size, are freed.
 * Blocks until no refill of dev is in flight, so after it returns no refill runs unless the
 * new config asks for one. AGILE_ENOTSUP on host (except chunks == 0), AGILE_EINVAL. */
int agile__lease_pool_config(agile__backend *be, int dev, unsigned chunks, uint64_t chunk_size,
                             int flags);
/* agile__lease_pool_fill: make chunks on the calling thread until dev's pool is at its
 * target. Blocks (~2 ms per 64 MiB chunk on an H200). Returns the first error. */
int agile__lease_pool_fill(agile__backend *be, int dev);
/* agile__lease_pool_stats: a snapshot; all zero on host. Does not block on the GPU. */
int agile__lease_pool_stats(agile__backend *be, int dev, agile__pool_stats *out);

/* ---- protected memory (worker and modules; never inside a window, never exported) ------- */
/* agile__pmem_alloc: `size` bytes of worker-only memory (cuMemAlloc on cuda, anonymous
 * mmap on host, zeroed on host only); *addr is its worker-side address. */
int agile__pmem_alloc(agile__backend *be, int dev, uint64_t size, agile__pmem **out,
                      uint64_t *addr);
void agile__pmem_free(agile__pmem *p);
/* The worker-side address of p now (a context reset may have moved it). */
uint64_t agile__pmem_addr(const agile__pmem *p);

/* ---- memory operations on worker-side addresses (in-window memcpy/memset commands) ------ */
int agile__backend_memset(agile__backend *be, int dev, uint64_t addr, int value, uint64_t n);
int agile__backend_memcpy(agile__backend *be, int dev, uint64_t dst, uint64_t src, uint64_t n);
/* Both block until the operation is complete (a backend-owned stream per device on cuda).
 * Addresses are not checked: callers validate them against the tenant's window. */

/* agile__backend_read / agile__backend_write: n bytes from worker-side address src into the
 * caller's buffer dst / from src into worker-side address dst; block until done. Unlike the
 * calls above they return the device's error as it is: not logged, and not noted as a lost
 * context (a caller that treats it as one calls agile__backend_err_note). */
int agile__backend_read(agile__backend *be, int dev, void *dst, uint64_t src, uint64_t n);
int agile__backend_write(agile__backend *be, int dev, uint64_t dst, const void *src, uint64_t n);

/* ---- queues: streams, events, kernels (the data plane) ------------------------------------
 * What a backend's queues can do. On cuda, work is queued on streams and completes later, in
 * stream order; an event recorded after it says when. The host backend has no queues: its
 * callers do in-window work on their own thread (worker-side addresses are host addresses),
 * and every call of this section except the error helpers gives AGILE_ENOTSUP there.
 *
 * Every call below runs in the context of the device the caller entered
 * (agile__backend_enter) and makes no context current itself. Calls that make or enqueue
 * something return errors wrapped and noted (a lost context is seen by
 * agile__backend_fault_take); queries (stream and event queries, agile__backend_probe) return
 * the device's error as it is, for the caller to judge. Objects made in a context go with it
 * at a reset (agile__backend_generation): they must not be used or destroyed afterwards. */
typedef struct agile__queue_caps {
    bool queued;  /* memory operations and kernels run queued on streams (cuda) */
    bool kernels; /* compiled device code can be loaded and launched */
    bool values;  /* a stream can wait for, and write, a 32-bit value in device memory */
} agile__queue_caps;
void agile__backend_queue_caps(const agile__backend *be, agile__queue_caps *out);

typedef struct agile__stream agile__stream; /* cuda: the CUstream itself */
typedef struct agile__event agile__event;   /* cuda: the CUevent itself */
typedef struct agile__kmodule agile__kmodule;
typedef struct agile__kfunc agile__kfunc;

/* A stream that does not synchronise with the device's default stream. */
int agile__stream_create(agile__backend *be, agile__stream **out);
void agile__stream_destroy(agile__backend *be, agile__stream *s);
/* AGILE_OK: everything queued on s has completed; AGILE_EBUSY: not yet; AGILE_ENOTSUP: the
 * driver cannot say without waiting (agile__stream_sync then); else the error as it is. */
int agile__stream_query(agile__backend *be, agile__stream *s);
/* Waits until everything queued on s has completed; the error as it is. */
int agile__stream_sync(agile__backend *be, agile__stream *s);
/* The driver's handle of s (a CUstream), for modules that queue work on it themselves. */
void *agile__stream_handle(agile__stream *s);

/* Queue a copy of n bytes (worker-side addresses) / a fill of n bytes with `value`. */
int agile__stream_memcpy(agile__backend *be, agile__stream *s, uint64_t dst, uint64_t src,
                         uint64_t n);
int agile__stream_memset8(agile__backend *be, agile__stream *s, uint64_t dst, uint8_t value,
                          uint64_t n);
/* Queue a wait until the 32-bit value at addr is >= value (cyclic: (int32_t)(v - value) >= 0)
 * or, with eq, equal to it; queue a write of value to addr (agile__queue_caps.values). */
enum { AGILE_STREAM_WAIT_GEQ = 0, AGILE_STREAM_WAIT_EQ = 1 };
int agile__stream_wait32(agile__backend *be, agile__stream *s, uint64_t addr, uint32_t value,
                         int cond);
int agile__stream_write32(agile__backend *be, agile__stream *s, uint64_t addr, uint32_t value);

/* Events without timing. Query: AGILE_OK (fired), AGILE_EBUSY (not yet) or the error of
 * the work before it, as it is. */
int agile__event_create(agile__backend *be, agile__event **out);
int agile__event_record(agile__backend *be, agile__event *e, agile__stream *s);
int agile__event_query(agile__backend *be, agile__event *e);
void agile__event_destroy(agile__backend *be, agile__event *e);

/* Kernels: a module from a compiled image (the image stays the caller's), a kernel of it by
 * name, the dynamic shared memory a kernel may use (bytes), a launch on a stream. params:
 * one pointer per kernel parameter, to its value. */
int agile__kmodule_load(agile__backend *be, const void *image, agile__kmodule **out);
void agile__kmodule_unload(agile__backend *be, agile__kmodule *m);
int agile__kmodule_function(agile__backend *be, agile__kmodule *m, const char *name,
                            agile__kfunc **out);
int agile__kfunc_set_dyn_smem(agile__backend *be, agile__kfunc *f, uint32_t bytes);
typedef struct agile__launch_dims {
    uint32_t grid[3], block[3];
    uint32_t shmem; /* dynamic shared memory, bytes */
} agile__launch_dims;
int agile__launch(agile__backend *be, agile__stream *s, agile__kfunc *f,
                  const agile__launch_dims *d, void **params);

/* agile__backend_probe: a trivial call in the entered context: AGILE_OK, or the error that
 * says the context is lost (agile__backend_err_lost), as it is. */
int agile__backend_probe(agile__backend *be);
/* agile__backend_fault_take: whether an error of a lost context was noted anywhere in the
 * process (by any backend call, on any thread) since the last call; clears it. */
bool agile__backend_fault_take(agile__backend *be);

/* Errors of the calls above. agile__backend_err_lost: whether err means the context it
 * happened in is lost (every later call there fails until agile__backend_reset).
 * agile__backend_err_note: log err at debug level with `what` and, when it is such an error,
 * note it for agile__backend_fault_take; returns err. agile__backend_err_name: the device's
 * name of err ("CUDA_ERROR_..."), else agile_strerror's. agile__backend_err_kernel_fault:
 * the error a kernel fault is reported as when it was found without an error of its own
 * (cuda: CUDA_ERROR_LAUNCH_FAILED), noted. */
bool agile__backend_err_lost(int err);
int agile__backend_err_note(int err, const char *what);
const char *agile__backend_err_name(int err);
int agile__backend_err_kernel_fault(void);

/* ---- contexts ------------------------------------------------------------------------------ */

/* agile__backend_enter: make device dev's context current on the calling thread (a push on
 * cuda, nothing on host) until the matching agile__backend_leave. Nests. */
int agile__backend_enter(agile__backend *be, int dev);
void agile__backend_leave(agile__backend *be);
/* The CUcontext (primary context) of dev as void *, NULL on host or a bad dev. */
void *agile__backend_cuda_context(agile__backend *be, int dev);

/* agile__backend_reset: after a sticky error (agile__cu_sticky) poisoned dev's context:
 * waits for every backend call on dev to end, resets the primary context (everything made
 * in it is gone; if it will not reset, the worker goes on in a context of its own), makes
 * the device stream again, empties the lease pool and restores every window (at the same
 * base where the range is free again, sinks zeroed again, each lease re-imported from the fd
 * kept at lease time and mapped at its offset: the data survives, since clients and the kept
 * fd hold the memory) and every protected allocation (agile__pmem_addr: where it is now,
 * contents lost). Other objects made
 * in the context (streams, events, modules, cuFFT plans) are the callers' to make again:
 * agile__backend_generation tells them. The caller must not be inside
 * agile__backend_enter. *ns: how long it took. AGILE_ENOTSUP on host. */
int agile__backend_reset(agile__backend *be, int dev, uint64_t *ns);
/* Context resets of dev so far (0 on host). */
unsigned agile__backend_generation(agile__backend *be, int dev);

#endif
