/* agile/agile.h — libagile, the client C ABI of agile.
 *
 * A client process talks to the agile worker of its runtime directory: a control plane
 * (nng, DIR/agile.sock) and an fd socket (DIR/agile.fd.sock) through which the worker
 * learns the client's uid from the kernel and passes memory as file descriptors.
 * Every function returns agile_err_t (agile/err.h) unless it says otherwise; none aborts
 * the host process; all are thread-safe. When a call fails because the worker refused,
 * agile_last_error() gives the worker's message ("tenant 1000: lease ... exceeds quota").
 */
#ifndef AGILE_AGILE_H
#define AGILE_AGILE_H

#include <stddef.h>
#include <stdint.h>

#include "agile/defs.h"
#include "agile/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct agile_client agile_client;
typedef uint64_t agile_handle_t;

typedef struct agile_connect_opts {
    const char *runtime_dir; /* NULL: $AGILE_RUNTIME_DIR, $XDG_RUNTIME_DIR/agile, /tmp/agile-$UID */
    int timeout_ms;          /* 0: 10000. Covers starting a worker. */
    int no_autostart;        /* 1: fail with AGILE_ENOWORKER instead of starting a worker */
    const char *worker_path; /* NULL: $AGILE_WORKER, beside libagile, then $PATH */
    const char *backend;     /* for an autostarted worker: "auto" (NULL), "cuda", "host" */
} agile_connect_opts;

typedef struct agile_session_info {
    uint64_t session;   /* the session's handle */
    uint32_t tenant;    /* our uid, as the worker's kernel saw it */
    uint32_t backend;   /* AGILE_BACKEND_KIND_* (agile/defs.h) */
    uint32_t ndev;
    uint32_t priority;
    uint64_t quota;     /* bytes per GPU */
    uint32_t worker_major, worker_minor;
} agile_session_info;

/* agile_connect: connect to (or start, then connect to) the worker and say HELLO.
 * Blocks up to opts->timeout_ms. On success *out is a new client the caller owns. */
AGILE_API int agile_connect(const agile_connect_opts *opts, agile_client **out);
/* agile_disconnect: say BYE, close both sockets and free c with everything it made in this
 * process: its windows and pools (pointers from them are invalid afterwards), rings, and
 * what it knows of modules, functions and fft plans. Everything the session holds in the
 * worker is released (as it is when the process dies). Disconnecting the default client
 * makes the next implicit call (agile_malloc, ...) connect a new one, with the options
 * agile_init connected the last one with. No other call may be using c meanwhile. A client
 * inherited through fork() is the parent's: the child must not use it; agile_disconnect
 * there only frees the child's copy (the parent's session goes on). */
AGILE_API void agile_disconnect(agile_client *c);
AGILE_API int agile_session_info_get(agile_client *c, agile_session_info *out);
/* agile_ping: one control-plane round trip. */
AGILE_API int agile_ping(agile_client *c);
/* agile_status: the worker's status (json=1: JSON, 0: a table). *text is malloc()ed: free
 * it with agile_free_string. */
AGILE_API int agile_status(agile_client *c, int json, char **text);
AGILE_API void agile_free_string(char *s);
/* agile_object_create / agile_object_destroy: streams and events in the worker's object
 * table (type: 3 = stream, 4 = event). Handles are checked by type, owner and generation. */
AGILE_API int agile_object_create(agile_client *c, unsigned type, int device, agile_handle_t *h);
AGILE_API int agile_object_destroy(agile_client *c, agile_handle_t h);
/* agile_last_error: the worker's message for this thread's last failed call ("" if none). */
AGILE_API const char *agile_last_error(void);

/* ---- raw protocol access (tests, agilectl, fuzzers): send one encoded request, get the
 * reply bytes (malloc()ed, free with agile_free_string). */
AGILE_API int agile_raw_request(agile_client *c, const void *req, size_t len, void **rep,
                                size_t *replen);

/* ---- memory: per-tenant pools in worker-owned windows ------------------------------------
 * The first call connects the process's default client (agile_init's options, else the
 * defaults: autostart, backend auto). Addresses are device pointers on the cuda backend and
 * host pointers on the host backend. */

/* agile_init: connect the default client with these options (idempotent: AGILE_OK if it is
 * connected already, whatever the options). opts may be NULL. */
AGILE_API int agile_init(const agile_connect_opts *opts);
/* agile_default_client: the default client (connecting it if needed), borrowed. */
AGILE_API int agile_default_client(agile_client **out);
/* agile_malloc: size bytes on device for use on stream (a cudaStream_t / CUstream; NULL is
 * the default stream), aligned to 512 bytes. Talks to the worker only to grow the lease.
 * NULL when the tenant's quota or the window is exhausted (agile_last_error says which);
 * never aborts. Signature of torch.cuda.memory.CUDAPluggableAllocator's alloc. */
AGILE_API void *agile_malloc(size_t size, int device, void *stream);
/* agile_free: free a block of agile_malloc, with the size it was allocated with and the
 * stream its last use was on. Reusable at once on that stream, on others once the stream has
 * passed this point (an event). Signature of CUDAPluggableAllocator's free. */
AGILE_API void agile_free(void *ptr, size_t size, int device, void *stream);
/* agile_empty_cache: give every fully unused leased extent of every device back to the
 * worker. Blocks on the worker. */
AGILE_API int agile_empty_cache(void);
/* agile_stream_synchronized: the caller saw stream complete (or all of device's streams:
 * stream = (void*)-1): blocks freed on it are reusable on every stream at once. */
AGILE_API void agile_stream_synchronized(int device, void *stream);

/* The counters of AGILE_MEM_STAT_LIST (agile/defs.h), one uint64_t each, in its order. */
typedef struct agile_mem_stats {
#define AGILE__MEM_STAT_FIELD(field, torch_key) uint64_t field;
    AGILE_MEM_STAT_LIST(AGILE__MEM_STAT_FIELD)
#undef AGILE__MEM_STAT_FIELD
} agile_mem_stats;
/* agile_memory_stats: this process's counters for device (zeros before its first use). */
AGILE_API int agile_memory_stats(int device, agile_mem_stats *out);
/* agile_pool_window: the client-side window of device: [*base, *base + *size). AGILE_ENOENT
 * before the device's first agile_malloc. A pointer p is in this tenant's pool iff
 * base <= p < base + size. */
AGILE_API int agile_pool_window(int device, uint64_t *base, uint64_t *size);

#ifdef __cplusplus
}
#endif
#endif
