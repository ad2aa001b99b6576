/* alloc.h — the client-side sub-allocator of one tenant window (one arena per device).
 *
 * The worker leases physical memory at offsets of the tenant's window [base, base + W); the
 * client sub-allocates inside what it has leased, without talking to the worker except to
 * grow the lease (ops->grow) or hand fully unused extents back (ops->shrink, only from
 * agile__arena_empty_cache). It backs agile_malloc/agile_free (PyTorch's
 * CUDAPluggableAllocator signatures) and torch.cuda.MemPool. No CUDA here: streams are opaque
 * uintptr_t values and events come from callbacks.
 *
 * Layout of the free memory, three tiers:
 *   1. per-stream caches: a block freed on stream S goes to S's cache, a LIFO list per size
 *      class. Allocations on S take it back at once (stream order makes that safe): this is the
 *      hot path, O(1), no callbacks, no syscalls.
 *   2. settled free extents: segregated free lists (8 sub-classes per power of two, two-level
 *      bitmap), best fit inside the first bin, split on allocation, merged with free neighbours
 *      on insertion. Any stream may take from here.
 *   3. the worker: ops->grow leases a new extent (a "segment") when 1 and 2 cannot serve.
 * A cached block moves from 1 to 2 only once an event recorded on S after its free reports
 * done (ops->event_query), or when the caller says S is synchronized. The event is recorded
 * lazily — when tiers 1 and 2 cannot serve a request, or when S's cache outgrows its cap —
 * which is safe because an event recorded later than the free completes later too. A cache
 * is capped at 1/64 of the lease (at least 4 MiB): idle cached blocks cannot merge with their
 * neighbours, and an uncapped cache doubled the lease in the fragmentation test. Over the cap,
 * the oldest blocks S has passed settle (amortized: at most one poll per cap/8 bytes freed).
 * Without ops->event_record (host backend: streams are synchronous) all streams share one
 * cache and cached blocks settle as soon as memory is short or the cache is over its cap.
 *
 * Sizes: requests up to small_max (1 MiB) are rounded up to their size class (at most 12.5%
 * waste), larger ones to the alignment. Extents the worker leases next to each other join one
 * segment, and blocks may span them (the worker grows contiguously: the whole lease is one
 * heap); empty_cache cuts out and gives back every extent that lies inside a free block.
 *
 * Locking: one mutex per arena. All entry points are thread-safe. event_* callbacks are called
 * with the arena mutex held (from alloc's slow path, from free only when a cache is over its
 * cap, from empty_cache) and must not call back into the arena or block; grow and shrink are
 * called without it (they talk to the worker and may block), serialized by a second mutex.
 * Not done: per-thread caches (one lock pair per malloc+free is within the 150 ns goal).
 *
 * Cost (alloc-bench, host CPU): malloc+free p50 ~30-80 ns on the same stream, ~80 ns when
 * every allocation crosses streams; glibc malloc/free measures ~10-45 ns in the same run.
 */
#ifndef AGILE_ALLOC_H
#define AGILE_ALLOC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "agile/err.h"

/* agile__arena_ops: how an arena reaches the worker and the streams. ctx is passed through.
 * Every callback returns agile_err_t. */
typedef struct agile__arena_ops {
    /* grow: lease at least min_bytes more; on success store the extent's window offset and
     * size (both multiples of the arena alignment, inside the window, not overlapping a
     * current extent). Quota exceeded: AGILE_EQUOTA or AGILE_ENOMEM. May block. Required. */
    int (*grow)(void *ctx, uint64_t min_bytes, uint64_t *offset, uint64_t *size);
    /* shrink: give back one extent exactly as grow returned it. May block. NULL: extents are
     * never given back. */
    int (*shrink)(void *ctx, uint64_t offset, uint64_t size);
    /* event_record: record an event on stream, store a token for it. NULL: streams are
     * synchronous (host backend), every event is complete. */
    int (*event_record)(void *ctx, uintptr_t stream, uint64_t *event);
    /* event_query: AGILE_OK when the stream has passed the event, AGILE_EBUSY when not yet;
     * anything else is an error and counts as not yet. Must not block. */
    int (*event_query)(void *ctx, uint64_t event);
    /* event_release: the arena is done with the token (return it to a pool). */
    void (*event_release)(void *ctx, uint64_t event);
} agile__arena_ops;

/* agile__alloc_stats: one device's counters. The comment after each field is the
 * torch.cuda.memory_stats() key it maps to, where there is one. */
typedef struct agile__alloc_stats {
    uint64_t allocated_bytes;       /* allocated_bytes.all.current (block sizes, rounded) */
    uint64_t allocated_bytes_peak;  /* allocated_bytes.all.peak */
    uint64_t allocated_bytes_total; /* allocated_bytes.all.allocated */
    uint64_t freed_bytes_total;     /* allocated_bytes.all.freed */
    uint64_t requested_bytes;       /* requested_bytes.all.current (sizes as asked) */
    uint64_t requested_bytes_peak;  /* requested_bytes.all.peak */
    uint64_t reserved_bytes;        /* reserved_bytes.all.current (leased) */
    uint64_t reserved_bytes_peak;   /* reserved_bytes.all.peak */
    uint64_t cached_bytes;          /* freed on a stream, not settled yet (tier 1) */
    uint64_t free_bytes;            /* settled free bytes (tier 2): inactive_split_bytes */
    uint64_t allocations;           /* allocation.all.current */
    uint64_t num_allocs;            /* allocation.all.allocated */
    uint64_t num_frees;             /* allocation.all.freed */
    uint64_t segments;              /* segment.all.current: contiguous runs of extents */
    uint64_t extents;               /* leased extents (as grow returned them) */
    uint64_t num_grows;             /* segment.all.allocated: successful grow calls */
    uint64_t num_shrinks;           /* segment.all.freed: extents given back */
    uint64_t num_grow_failures;     /* grow calls refused (quota) or failed */
    uint64_t num_alloc_retries;     /* num_alloc_retries: caches flushed to serve a request */
    uint64_t num_ooms;              /* num_ooms: allocations that failed */
    uint64_t num_free_errors;       /* frees refused: unknown pointer, size mismatch, double */
    uint64_t num_double_frees;      /* ... of which double frees */
    uint64_t num_size_mismatches;   /* ... of which the size did not match */
    uint64_t num_events_recorded;   /* event_record calls */
    uint64_t num_event_errors;      /* event_record / event_query errors */
} agile__alloc_stats;

/* Private state; the struct is public only so that callers can embed it. */
struct agile__blk;
struct agile__strm;
struct agile__slab;

#define AGILE__ARENA_SL_LOG 3 /* 8 sub-classes per power of two */
#define AGILE__ARENA_FL_MAX 48
#define AGILE__ARENA_NBINS (AGILE__ARENA_FL_MAX << AGILE__ARENA_SL_LOG)

typedef struct agile__arena {
    pthread_mutex_t mu;      /* everything below */
    pthread_mutex_t grow_mu; /* one grow/shrink conversation with the worker at a time */
    const agile__arena_ops *ops;
    void *ctx;
    uint64_t base, window, align, grow_step, small_max;
    unsigned align_log;
    bool streams_sync; /* no event_record: one cache for all streams */
    /* tier 2: segregated free lists */
    uint64_t fl_bitmap;
    uint32_t sl_bitmap[AGILE__ARENA_FL_MAX];
    struct agile__blk *bins[AGILE__ARENA_NBINS];
    /* live and cached blocks by offset (chained hash) */
    struct agile__blk **htab;
    uint64_t hmask, hcount;
    /* streams */
    struct agile__strm **stab; /* open addressing by stream value */
    uint64_t smask, scount;
    struct agile__strm *slast; /* the stream of the last call: skips the lookup */
    /* leased extents, sorted by offset; contiguous ones form one segment, whose blocks run
     * between two zero-size edge blocks (the heads are listed in segs) */
    struct agile__ext {
        uint64_t off, size;
    } *ext;
    uint64_t n_ext, ext_cap;
    struct agile__blk *segs;
    /* block struct pool */
    struct agile__blk *blk_free;
    struct agile__slab *slabs;
    agile__alloc_stats st;
} agile__arena;

/* agile__arena_init: set up an empty arena over the window [base, base + window_size) on caller
 * storage. window_size is a power of two, base is a multiple of it; alignment is a power of two
 * >= 256 (0: 256), grow_step the size asked of the worker (0: 64 MiB; rounded up to the
 * alignment). ops and ctx are borrowed and must outlive the arena. Leases nothing. Does not
 * block. AGILE_EINVAL on bad geometry, AGILE_ENOMEM when metadata cannot be allocated. */
int agile__arena_init(agile__arena *a, const agile__arena_ops *ops, void *ctx, uint64_t base,
                      uint64_t window_size, uint64_t alignment, uint64_t grow_step);

/* agile__arena_fini: release the host metadata and the events held. Does not give extents back
 * (the lease belongs to the session, which ends it) and does not call grow/shrink. Blocks still
 * allocated are forgotten; check agile__arena_stats first to report leaks. */
void agile__arena_fini(agile__arena *a);

/* agile__arena_alloc: allocate size bytes for use on stream; store the address (base + offset
 * in the window, aligned to the arena alignment) in *addr. May
 * block in ops->grow when the lease must grow. AGILE_EQUOTA / AGILE_ENOMEM (from grow, or when
 * the window is full) and *addr = 0 when it cannot be served: never aborts. size 0 gets a
 * minimal block, so that every success is a distinct address. */
int agile__arena_alloc(agile__arena *a, uint64_t size, uintptr_t stream, uint64_t *addr);

/* agile__arena_free: free a block of agile__arena_alloc. size must be the size asked for;
 * stream is the stream whose work last uses the block (the allocation stream, as PyTorch
 * passes it). The block is reusable at once on that stream, and on others once the stream
 * has passed this point. Errors, counted in the stats, the arena unchanged: AGILE_ENOENT for
 * an address that is no block, AGILE_EINVAL for a size mismatch or a double free. Never
 * blocks on the worker. */
int agile__arena_free(agile__arena *a, uint64_t addr, uint64_t size, uintptr_t stream);

/* AGILE_ARENA_ALL_STREAMS: agile__arena_synchronized for every stream (device synchronize). */
#define AGILE_ARENA_ALL_STREAMS ((uintptr_t)-1)

/* agile__arena_synchronized: the caller saw stream (or all, AGILE_ARENA_ALL_STREAMS) complete
 * all work issued so far (cuStreamSynchronize, cuCtxSynchronize, stream destruction): its
 * cached blocks settle now without events, its events are released, and a stream with nothing
 * cached is forgotten. Does not block. */
void agile__arena_synchronized(agile__arena *a, uintptr_t stream);

/* agile__arena_empty_cache: settle what the events allow, then give every extent that lies
 * inside a free block back through ops->shrink (blocks). Returns the first shrink error; an extent
 * whose shrink failed stays leased and usable. Cached blocks whose events are not done stay. */
int agile__arena_empty_cache(agile__arena *a);

/* agile__arena_stats: a consistent snapshot of the counters. Does not block on the worker. */
void agile__arena_stats(agile__arena *a, agile__alloc_stats *out);

/* agile__arena_reset_peak: set the peaks to the current values (reset_peak_memory_stats). */
void agile__arena_reset_peak(agile__arena *a);

/* agile__arena_check: walk every structure and verify its invariants (tests, debug builds).
 * AGILE_EINTERNAL on the first inconsistency. */
int agile__arena_check(agile__arena *a);

#endif
