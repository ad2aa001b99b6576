/* evpool.h — a pool of CUevents for the client sub-allocator's stream-aware reuse (one pool
 * per device: an event belongs to the context it was created in). Internal to libagile.
 *
 * The arena records an event on a stream when it must know that the stream has passed a
 * free, and calls these with its own mutex held (alloc.h): so nothing here blocks on the GPU
 * or calls back into the arena. Creating and destroying a CUevent costs driver work every
 * time (measured as the gap of torch.empty+del under agile_torch.enable()); pooled, a
 * record is one cuEventRecord. Events are created lazily with CU_EVENT_DISABLE_TIMING
 * (cheaper to record and query; the arena never times), in the context current on the
 * calling thread, as before. */
#ifndef AGILE_EVPOOL_H
#define AGILE_EVPOOL_H

#include <pthread.h>
#include <stdint.h>

/* Free events kept per pool; releases beyond it destroy. More than the arena holds in any
 * test (a few per stream with cached blocks), small enough to be nothing in device memory. */
#define AGILE__EVPOOL_CAP 256

typedef struct agile__evpool {
    pthread_mutex_t mu; /* the free list and counters; never held across a driver call */
    uint64_t free[AGILE__EVPOOL_CAP];
    unsigned nfree;
    uint64_t created, destroyed; /* events ever created, destroyed (tests, stats) */
} agile__evpool;

/* agile__evpool_init / _fini on caller storage. fini destroys the free events (their
 * context must still exist); events still out with the arena are its to release first. */
void agile__evpool_init(agile__evpool *p);
void agile__evpool_fini(agile__evpool *p);

/* agile__evpool_record: take a free event (or create one) and record it on stream; the
 * token in *event goes back with agile__evpool_release. A wrapped CUDA error otherwise
 * (the event, if any, stays in the pool). Does not block. */
int agile__evpool_record(agile__evpool *p, uintptr_t stream, uint64_t *event);

/* agile__evpool_query: AGILE_OK when the stream has passed the event, AGILE_EBUSY when not
 * yet, a wrapped CUDA error otherwise. Does not block. */
int agile__evpool_query(agile__evpool *p, uint64_t event);

/* agile__evpool_release: the event goes back to the pool (re-recording a pending event is
 * allowed: it then tracks the new record only). */
void agile__evpool_release(agile__evpool *p, uint64_t event);

#endif
