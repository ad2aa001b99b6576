/* agile/ring.h — libagile's data plane: work that runs in the worker, beside protected
 * state, posted through a per-client shared-memory command ring (no round trip per op).
 *
 * Every call here is asynchronous unless it says otherwise: it returns once the command is
 * in the ring. Errors of asynchronous commands are sticky per client and device and are
 * returned, with the failing command's sequence number, by the next agile_barrier. They
 * never affect other tenants.
 *
 * Stream order (cuda backend): a command posted on a CUstream runs after the work the
 * client queued on that stream before it, and the client's later work on that stream runs
 * after it, with no host synchronisation: two 32-bit counters per (client stream, worker
 * stream) in the tenant's own pool memory, written and waited on by both GPUs' streams
 * (cuStreamWriteValue32 / cuStreamWaitValue32). A stream that never posts remote work pays
 * nothing. The calling thread must have the client's CUDA context current (PyTorch does).
 * Host backend: commands run in order in the worker; the stream argument only names the
 * worker-side queue.
 *
 * All functions are thread-safe (one lock per client ring; a waiting barrier holds it) and
 * every wait is bounded by the client's timeout and ends with AGILE_ECLOSED as soon as the
 * worker dies. The functions without an agile_client argument use the default client
 * (agile_init / agile_default_client), like agile_malloc.
 */
#ifndef AGILE_RING_PUBLIC_H
#define AGILE_RING_PUBLIC_H

#include <stddef.h>
#include <stdint.h>

#include "agile/agile.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t agile_module_t;
typedef uint64_t agile_function_t;

/* The first asynchronous error since the previous barrier. */
typedef struct agile_async_error {
    int32_t status;  /* agile_err_t, AGILE_OK if none */
    uint32_t kernel; /* AGILE_EGUARD: the kernel (1-based .entry index of its module) */
    uint64_t seq;    /* the failing command's sequence number (AGILE_EGUARD: the barrier's) */
    uint64_t site;   /* AGILE_EGUARD: the guard's site id of the access */
    uint64_t addr;   /* AGILE_EGUARD: the address the kernel tried */
} agile_async_error;
/* agile_async_error.site of an AGILE_EGUARD that is no access: a guarded kernel's device
 * assert failed / it trapped (the guard ends that thread instead); addr is the PTX line. */
#define AGILE_SITE_ASSERT 0xffffffffu
#define AGILE_SITE_TRAP 0xfffffffeu

/* agile_ring_open: attach c's command ring for device (c NULL: the default client).
 * Idempotent; the other calls open it on first use. Blocks (one control round trip). */
AGILE_API int agile_ring_open(agile_client *c, int device);
/* agile_ring_nop: post a NOP and wait for its completion (a data-plane round trip; for
 * benchmarks and liveness checks). Blocks. */
AGILE_API int agile_ring_nop(agile_client *c, int device, uint64_t cookie);
/* agile_ring_nop_async: post a NOP without waiting (throughput tests). */
AGILE_API int agile_ring_nop_async(agile_client *c, int device);
/* agile_ring_barrier: wait until every command c posted on device before it has completed;
 * return (and clear) the first asynchronous error since the previous barrier; *err (may be
 * NULL) gets its details. Blocks. */
AGILE_API int agile_ring_barrier(agile_client *c, int device, void *stream, agile_async_error *err);
/* agile_ring_completed: how many commands of c on device have completed so far. */
AGILE_API uint64_t agile_ring_completed(agile_client *c, int device);

/* agile_memcpy_async: copy n bytes between two addresses of this tenant's pool on one
 * device, in the worker. Out-of-window extents fail with AGILE_EBOUNDS (at the barrier)
 * and write nothing. */
AGILE_API int agile_memcpy_async(void *dst, const void *src, size_t n, void *stream);
/* agile_memset_async: set n bytes at dst (this tenant's pool) to the byte value. */
AGILE_API int agile_memset_async(void *dst, int value, size_t n, void *stream);
/* agile_signal_async / agile_wait_async: the worker-side queue of stream writes the 32-bit
 * counter at *counter (this tenant's pool, 4-byte aligned) / waits until it is >= value
 * (cyclic comparison, as CU_STREAM_WAIT_VALUE_GEQ). On cuda both run on the GPU (the
 * worker's stream); on host the worker polls, and gives up after the policy time limit (or
 * 10 s) with AGILE_ETIMEDOUT at the barrier. Later commands of the ring wait behind a WAIT. */
AGILE_API int agile_signal_async(uint32_t *counter, uint32_t value, void *stream);
AGILE_API int agile_wait_async(const uint32_t *counter, uint32_t value, void *stream);
/* agile_ring_mod_op: post data-plane op `op` of worker module `module` (an AGILE_MODULE_ID_*
 * of agile/defs.h) with args[0..len) (the module's own format; client addresses in it are
 * translated and bounds-checked by the module), ordered with stream like the other
 * commands. Errors come at the barrier. c NULL: the default client. */
AGILE_API int agile_ring_mod_op(agile_client *c, int device, uint32_t module, uint32_t op,
                                const void *args, size_t len, void *stream);
/* agile_barrier: agile_ring_barrier on every device the default client has a ring on;
 * *err_seq (may be NULL) gets the failing command's sequence number. Blocks. */
AGILE_API int agile_barrier(void *stream, uint64_t *err_seq);
/* agile_last_async_error: details of the error the last agile_barrier of this thread
 * returned (kernel/site/addr for AGILE_EGUARD). */
AGILE_API int agile_last_async_error(agile_async_error *out);

/* Flags of agile_module_load. */
#define AGILE_MODULE_STRICT 0x1u /* report out-of-window accesses (AGILE_EGUARD) */
/* TEST ONLY (fault-containment tests): load the PTX as it is, without the guard. The worker
 * refuses it (AGILE_EPERM) unless it was started with AGILE_TEST_UNGUARDED_UID=<the caller's
 * uid> in its environment, which no production deployment sets (the worker logs a warning at each
 * such load). */
#define AGILE_MODULE_TEST_UNGUARDED 0x2u
#define AGILE_MODULE_DEVICE(d) ((unsigned)(d) << 8)

/* agile_module_load: guard, verify and compile PTX in the worker (device in flags via
 * AGILE_MODULE_DEVICE). AGILE_EREJECT with "file:line: reason" in agile_last_error() when
 * the guard refuses it. Blocks (compilation; the worker caches compiled images). */
AGILE_API int agile_module_load(const char *ptx, size_t len, unsigned flags,
                                agile_module_t *module);
AGILE_API int agile_module_unload(agile_module_t module);
/* agile_module_function: the kernel `name` of module; *nparams (may be NULL) gets its
 * parameter count (the guard's hidden parameters are not counted). Blocks. */
AGILE_API int agile_module_function(agile_module_t module, const char *name, agile_function_t *fn,
                                    unsigned *nparams);
/* agile_function_params: the byte size and the offset of each parameter in the args buffer
 * agile_launch takes (CUDA's kernel parameter layout: each at its natural alignment). */
AGILE_API int agile_function_params(agile_function_t fn, unsigned max, uint32_t *sizes,
                                    uint32_t *offsets, uint32_t *args_size);
/* agile_launch: launch fn in the worker on the worker-side queue of stream, ordered with the
 * client's work on stream (cuda). args holds the parameters in the layout above; pointer
 * parameters are this tenant's pool addresses (the guard's fence confines them to the
 * window). Host backend: waits for the worker's answer, AGILE_ENOTSUP (which the next
 * barrier reports again, as every failed command). */
AGILE_API int agile_launch(agile_function_t fn, const unsigned grid[3], const unsigned block[3],
                           unsigned shared_mem, void *stream, const void *args, size_t args_size);

#ifdef __cplusplus
}
#endif
#endif
