/* alloc_fake.h — a worker and an event source under the tests' control (tests and bench).
 *
 * The worker leases extents by bumping an offset, up to a quota. Events model streams as
 * counters: record() notes how much work was submitted on the stream; the event is done once
 * the test says that much has completed (fake_complete), or at once with all_done. */
#ifndef AGILE_ALLOC_FAKE_H
#define AGILE_ALLOC_FAKE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc.h"

#define FAKE_STREAMS 16
#define FAKE_EVENTS 4096

typedef struct fake {
    pthread_mutex_t mu;
    uint64_t window, next_off, quota, leased, last_min;
    uint64_t gap; /* left between extents: 0 = contiguous growth, like the worker */
    int grows, grow_refusals, shrinks;
    bool all_done, shrink_fail, record_fail;
    int bad_grow; /* 1: overlapping extent, 2: outside the window, 3: less than asked */
    uint64_t submitted[FAKE_STREAMS], completed[FAKE_STREAMS];
    uint64_t ev_stream[FAKE_EVENTS], ev_pos[FAKE_EVENTS];
    bool ev_live[FAKE_EVENTS];
    int ev_records, ev_releases, ev_queries;
} fake;

static void fake_init(fake *f, uint64_t window, uint64_t quota)
{
    *f = (fake){.window = window, .quota = quota};
    pthread_mutex_init(&f->mu, NULL);
}

static int fake_grow(void *ctx, uint64_t min_bytes, uint64_t *off, uint64_t *size)
{
    fake *f = ctx;
    int rv = AGILE_OK;
    pthread_mutex_lock(&f->mu);
    f->last_min = min_bytes;
    if (f->leased + min_bytes > f->quota || f->next_off + min_bytes > f->window) {
        f->grow_refusals++;
        rv = AGILE_EQUOTA;
    } else if (f->bad_grow == 3) { /* half of it, apart from the rest */
        *off = f->next_off + min_bytes;
        *size = min_bytes / 2;
        f->next_off += 2 * min_bytes;
        f->leased += min_bytes / 2;
    } else if (f->bad_grow) {
        *off = f->bad_grow == 1 ? 0 : f->window;
        *size = min_bytes;
    } else {
        *off = f->next_off;
        *size = min_bytes;
        f->next_off += min_bytes + f->gap;
        f->leased += min_bytes;
        f->grows++;
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fake_shrink(void *ctx, uint64_t off, uint64_t size)
{
    fake *f = ctx;
    (void)off;
    pthread_mutex_lock(&f->mu);
    if (f->shrink_fail) {
        pthread_mutex_unlock(&f->mu);
        return AGILE_ETIMEDOUT;
    }
    f->leased -= size;
    f->shrinks++;
    pthread_mutex_unlock(&f->mu);
    return AGILE_OK;
}

/* Called under the arena lock: no locking of our own needed beyond the arena's, but the tests
 * change completed[] from their own thread, hence f->mu. */
static int fake_record(void *ctx, uintptr_t stream, uint64_t *ev)
{
    fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    for (uint64_t i = 0; i < FAKE_EVENTS && !f->record_fail; i++) {
        if (!f->ev_live[i]) {
            f->ev_live[i] = true;
            f->ev_stream[i] = stream % FAKE_STREAMS;
            f->ev_pos[i] = f->submitted[stream % FAKE_STREAMS];
            f->ev_records++;
            *ev = i + 1; /* tokens are opaque: not 0, to catch mix-ups */
            pthread_mutex_unlock(&f->mu);
            return AGILE_OK;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return AGILE_ENOMEM;
}

static int fake_query(void *ctx, uint64_t ev)
{
    fake *f = ctx;
    int rv;
    pthread_mutex_lock(&f->mu);
    uint64_t i = ev - 1;
    if (ev == 0 || i >= FAKE_EVENTS || !f->ev_live[i])
        abort(); /* the arena used a token it does not hold */
    f->ev_queries++;
    rv = f->all_done || f->completed[f->ev_stream[i]] >= f->ev_pos[i] ? AGILE_OK : AGILE_EBUSY;
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static void fake_release(void *ctx, uint64_t ev)
{
    fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (ev == 0 || ev > FAKE_EVENTS || !f->ev_live[ev - 1])
        abort();
    f->ev_live[ev - 1] = false;
    f->ev_releases++;
    pthread_mutex_unlock(&f->mu);
}

/* Work issued on a stream (a kernel using a block, a free). */
static inline void fake_submit(fake *f, uintptr_t s)
{
    pthread_mutex_lock(&f->mu);
    f->submitted[s % FAKE_STREAMS]++;
    pthread_mutex_unlock(&f->mu);
}

/* The stream has run everything submitted so far. */
static inline void fake_complete(fake *f, uintptr_t s)
{
    pthread_mutex_lock(&f->mu);
    f->completed[s % FAKE_STREAMS] = f->submitted[s % FAKE_STREAMS];
    pthread_mutex_unlock(&f->mu);
}

static const agile__arena_ops fake_host_ops = {.grow = fake_grow, .shrink = fake_shrink};
static const agile__arena_ops fake_stream_ops = {.grow = fake_grow,
                                                 .shrink = fake_shrink,
                                                 .event_record = fake_record,
                                                 .event_query = fake_query,
                                                 .event_release = fake_release};

#endif
