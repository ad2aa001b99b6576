/* alloc.c — the window sub-allocator (see alloc.h for the model).
 *
 * Metadata lives in host memory only: the window may be device memory the CPU cannot touch,
 * so there are no in-band headers. Blocks are tracked by struct agile__blk, pooled; a block
 * that is allocated or cached is found by offset in a chained hash; settled free blocks sit
 * in the segregated bins and are found through their physical neighbours when merging.
 */
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#include "core.h"

enum { B_FREE = 1, B_USED = 2, B_CACHED = 3, B_EDGE = 4 };

#define SL_LOG AGILE__ARENA_SL_LOG
#define SL_COUNT (1u << SL_LOG)
#define NBINS AGILE__ARENA_NBINS
#define EV_MAX 4               /* outstanding events per stream */
#define CACHE_SCAN 4           /* cached blocks looked at per allocation */
#define BIN_SCAN 32            /* tier-2 blocks looked at for the best fit in the first bin */
#define SMALL_MAX (1ull << 20) /* requests up to this are rounded to their size class */
#define BLK_CHUNK 512
#define CACHE_CAP_SHIFT 6          /* a stream caches at most 1/64 of the lease ... */
#define CACHE_CAP_MIN (4ull << 20) /* ... or 4 MiB */

typedef struct agile__blk {
    uint64_t off, size, req;
    struct agile__blk *pprev, *pnext; /* physical neighbours inside the segment */
    struct agile__blk *prev, *next;   /* tier-2 bin list or stream class list */
    struct agile__blk *fprev, *fnext; /* the owning stream's list in free order */
    struct agile__blk *hnext;         /* hash chain */
    struct agile__blk *mate;          /* edge blocks: the other end of the segment */
    struct agile__strm *owner;        /* cached: the stream it was freed on */
    uint64_t epoch;                   /* cached: the first event sequence that covers it */
    uint32_t bin;
    uint8_t state;
} blk;

typedef struct agile__strm {
    uintptr_t id;
    struct agile__strm *hnext;
    blk *fhead, *ftail;
    uint64_t cached, trim_at;
    uint64_t seq_next, seq_done;
    uint64_t ev_tok[EV_MAX], ev_seq[EV_MAX];
    unsigned ev_head, ev_n;
    blk *cls[NBINS];
} strm;

typedef struct agile__slab {
    struct agile__slab *next;
    blk b[BLK_CHUNK];
} slab;

/* --- size classes and bins ------------------------------------------------------------- */

static inline unsigned fls64(uint64_t x)
{
    return 63u - (unsigned)__builtin_clzll(x);
}

/* Bin of u units (u >= 1): [fl][sl], 8 linear bins below 8 units. */
static inline unsigned bin_of(uint64_t u)
{
    if (u < SL_COUNT)
        return (unsigned)u;
    unsigned f = fls64(u);
    unsigned sl = (unsigned)(u >> (f - SL_LOG)) ^ SL_COUNT;
    return ((f - SL_LOG + 1) << SL_LOG) | sl;
}

/* The size a request is served with: small ones rounded up to the lower bound of the next
 * bin (8 classes per power of two), so that blocks of one class are interchangeable. */
static inline uint64_t round_size(const agile__arena *a, uint64_t size)
{
    uint64_t u = (size + a->align - 1) >> a->align_log;
    if (u == 0)
        u = 1;
    if (size <= a->small_max && u >= SL_COUNT) {
        uint64_t g = 1ull << (fls64(u) - SL_LOG);
        u = (u + g - 1) & ~(g - 1);
    }
    return u << a->align_log;
}

/* --- block structs ---------------------------------------------------------------------- */

static blk *blk_new(agile__arena *a)
{
    blk *b = a->blk_free;
    if (!b) {
        slab *s = malloc(sizeof(*s));
        if (!s)
            return NULL;
        s->next = a->slabs;
        a->slabs = s;
        for (int i = BLK_CHUNK - 1; i >= 0; i--) {
            s->b[i].next = a->blk_free;
            a->blk_free = &s->b[i];
        }
        b = a->blk_free;
    }
    a->blk_free = b->next;
    memset(b, 0, sizeof(*b));
    return b;
}

static void blk_put(agile__arena *a, blk *b)
{
    b->state = 0;
    b->next = a->blk_free;
    a->blk_free = b;
}

/* --- hash of allocated and cached blocks ------------------------------------------------ */

static inline uint64_t hslot(const agile__arena *a, uint64_t off)
{
    return ((off >> a->align_log) * 0x9E3779B97F4A7C15ull >> 20) & a->hmask;
}

static void hash_grow(agile__arena *a)
{
    uint64_t n = (a->hmask + 1) * 2;
    blk **t = calloc(n, sizeof(*t));
    if (!t)
        return; /* chains get longer; still correct */
    uint64_t old = a->hmask + 1;
    blk **ot = a->htab;
    a->htab = t;
    a->hmask = n - 1;
    for (uint64_t i = 0; i < old; i++) {
        blk *b = ot[i], *nx;
        for (; b; b = nx) {
            nx = b->hnext;
            uint64_t h = hslot(a, b->off);
            b->hnext = t[h];
            t[h] = b;
        }
    }
    free(ot);
}

static void hash_add(agile__arena *a, blk *b)
{
    if (a->hcount >= a->hmask + 1)
        hash_grow(a);
    uint64_t h = hslot(a, b->off);
    b->hnext = a->htab[h];
    a->htab[h] = b;
    a->hcount++;
}

static blk *hash_find(const agile__arena *a, uint64_t off)
{
    blk *b = a->htab[hslot(a, off)];
    while (b && b->off != off)
        b = b->hnext;
    return b;
}

static void hash_del(agile__arena *a, blk *b)
{
    blk **pp = &a->htab[hslot(a, b->off)];
    while (*pp != b)
        pp = &(*pp)->hnext;
    *pp = b->hnext;
    a->hcount--;
}

/* --- tier 2: settled free extents ------------------------------------------------------- */

static void t2_push(agile__arena *a, blk *b)
{
    unsigned i = bin_of(b->size >> a->align_log);
    b->bin = i;
    b->state = B_FREE;
    b->prev = NULL;
    b->next = a->bins[i];
    if (b->next)
        b->next->prev = b;
    a->bins[i] = b;
    a->fl_bitmap |= 1ull << (i >> SL_LOG);
    a->sl_bitmap[i >> SL_LOG] |= 1u << (i & (SL_COUNT - 1));
    a->st.free_bytes += b->size;
}

static void t2_unlink(agile__arena *a, blk *b)
{
    unsigned i = b->bin;
    if (b->prev)
        b->prev->next = b->next;
    else
        a->bins[i] = b->next;
    if (b->next)
        b->next->prev = b->prev;
    if (!a->bins[i]) {
        a->sl_bitmap[i >> SL_LOG] &= ~(1u << (i & (SL_COUNT - 1)));
        if (!a->sl_bitmap[i >> SL_LOG])
            a->fl_bitmap &= ~(1ull << (i >> SL_LOG));
    }
    a->st.free_bytes -= b->size;
    b->state = 0;
}

/* Insert a block that left use into tier 2, merging it with free neighbours. The lower block
 * always survives a merge, so a segment's first block lives as long as the segment. */
static void t2_insert(agile__arena *a, blk *b)
{
    blk *p = b->pprev, *n = b->pnext;
    if (p && p->state == B_FREE) {
        t2_unlink(a, p);
        p->size += b->size;
        p->pnext = n;
        if (n)
            n->pprev = p;
        blk_put(a, b);
        b = p;
    }
    if (n && n->state == B_FREE) {
        t2_unlink(a, n);
        b->size += n->size;
        b->pnext = n->pnext;
        if (n->pnext)
            n->pnext->pprev = b;
        blk_put(a, n);
    }
    t2_push(a, b);
}

/* Best fit among the first BIN_SCAN blocks of size's own bin, else the first block of the next
 * non-empty bin (every block there fits). */
static blk *t2_find(const agile__arena *a, uint64_t size)
{
    unsigned i = bin_of(size >> a->align_log);
    blk *best = NULL;
    int n = 0;
    for (blk *b = a->bins[i]; b && n < BIN_SCAN; b = b->next, n++) {
        if (b->size >= size && (!best || b->size < best->size)) {
            best = b;
            if (b->size == size)
                break;
        }
    }
    if (best)
        return best;
    unsigned fl = i >> SL_LOG, sl = i & (SL_COUNT - 1);
    uint32_t slm = sl + 1 < SL_COUNT ? a->sl_bitmap[fl] & (~0u << (sl + 1)) : 0;
    if (!slm) {
        uint64_t flm = fl + 1 < 64 ? a->fl_bitmap & (~0ull << (fl + 1)) : 0;
        if (!flm)
            return NULL;
        fl = (unsigned)__builtin_ctzll(flm);
        slm = a->sl_bitmap[fl];
    }
    return a->bins[(fl << SL_LOG) | (unsigned)__builtin_ctz(slm)];
}

/* Take size bytes out of tier 2 as an allocated block (state B_USED, in the hash). */
static blk *t2_take(agile__arena *a, uint64_t size)
{
    blk *b = t2_find(a, size);
    if (!b)
        return NULL;
    t2_unlink(a, b);
    if (b->size > size) {
        blk *r = blk_new(a);
        if (r) { /* without a struct the whole block is handed out: waste, not failure */
            r->off = b->off + size;
            r->size = b->size - size;
            r->pprev = b;
            r->pnext = b->pnext;
            if (b->pnext)
                b->pnext->pprev = r;
            b->pnext = r;
            b->size = size;
            t2_push(a, r);
        }
    }
    b->state = B_USED;
    hash_add(a, b);
    return b;
}

/* --- tier 1: per-stream caches ---------------------------------------------------------- */

static strm *strm_find(agile__arena *a, uintptr_t id)
{
    strm *s = a->stab[(id * 0x9E3779B97F4A7C15ull >> 32) & a->smask];
    while (s && s->id != id)
        s = s->hnext;
    return s;
}

static void strm_link(agile__arena *a, strm *s)
{
    uint64_t h = (s->id * 0x9E3779B97F4A7C15ull >> 32) & a->smask;
    s->hnext = a->stab[h];
    a->stab[h] = s;
}

static strm *strm_get(agile__arena *a, uintptr_t id)
{
    if (a->streams_sync)
        id = 0;
    strm *s = a->slast;
    if (s && s->id == id)
        return s;
    s = strm_find(a, id);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
        s->id = id;
        s->seq_next = 1;
        s->trim_at = CACHE_CAP_MIN;
        if (a->scount >= a->smask + 1) {
            uint64_t n = (a->smask + 1) * 2;
            strm **t = calloc(n, sizeof(*t));
            if (t) {
                strm **ot = a->stab;
                uint64_t old = a->smask + 1;
                a->stab = t;
                a->smask = n - 1;
                for (uint64_t i = 0; i < old; i++) {
                    strm *x = ot[i], *nx;
                    for (; x; x = nx) {
                        nx = x->hnext;
                        strm_link(a, x);
                    }
                }
                free(ot);
            }
        }
        strm_link(a, s);
        a->scount++;
    }
    a->slast = s;
    return s;
}

static void strm_forget(agile__arena *a, strm *s)
{
    strm **pp = &a->stab[(s->id * 0x9E3779B97F4A7C15ull >> 32) & a->smask];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    a->scount--;
    if (a->slast == s)
        a->slast = NULL;
    free(s);
}

static void cache_unlink(agile__arena *a, strm *s, blk *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        s->cls[b->bin] = b->next;
    if (b->next)
        b->next->prev = b->prev;
    if (b->fprev)
        b->fprev->fnext = b->fnext;
    else
        s->fhead = b->fnext;
    if (b->fnext)
        b->fnext->fprev = b->fprev;
    else
        s->ftail = b->fprev;
    s->cached -= b->size;
    a->st.cached_bytes -= b->size;
    b->owner = NULL;
}

/* A cached block of s that serves size without wasting more than 1/8 of it. */
static blk *cache_take(agile__arena *a, strm *s, uint64_t size)
{
    blk *b = s->cls[bin_of(size >> a->align_log)];
    for (int n = 0; b && n < CACHE_SCAN; b = b->next, n++) {
        if (b->size >= size && b->size - size <= size >> 3) {
            cache_unlink(a, s, b);
            return b;
        }
    }
    return NULL;
}

static void cache_put(agile__arena *a, strm *s, blk *b)
{
    unsigned i = bin_of(b->size >> a->align_log);
    b->bin = i;
    b->state = B_CACHED;
    b->owner = s;
    b->epoch = s->seq_next;
    b->prev = NULL;
    b->next = s->cls[i];
    if (b->next)
        b->next->prev = b;
    s->cls[i] = b;
    b->fnext = NULL;
    b->fprev = s->ftail;
    if (s->ftail)
        s->ftail->fnext = b;
    else
        s->fhead = b;
    s->ftail = b;
    s->cached += b->size;
    a->st.cached_bytes += b->size;
}

/* Move s's cached blocks covered by a completed event (all of them when `all`) to tier 2. */
static uint64_t settle(agile__arena *a, strm *s, bool all)
{
    uint64_t n = 0;
    blk *b;
    while ((b = s->fhead) && (all || b->epoch <= s->seq_done)) {
        cache_unlink(a, s, b);
        hash_del(a, b);
        n += b->size;
        t2_insert(a, b);
    }
    return n;
}

static void ev_pop(agile__arena *a, strm *s, bool done)
{
    if (done)
        s->seq_done = s->ev_seq[s->ev_head];
    if (a->ops->event_release)
        a->ops->event_release(a->ctx, s->ev_tok[s->ev_head]);
    s->ev_head = (s->ev_head + 1) % EV_MAX;
    s->ev_n--;
}

static void ev_poll(agile__arena *a, strm *s)
{
    while (s->ev_n) {
        int r = a->ops->event_query(a->ctx, s->ev_tok[s->ev_head]);
        if (r != AGILE_OK) {
            if (r != AGILE_EBUSY)
                a->st.num_event_errors++;
            return;
        }
        ev_pop(a, s, true);
    }
}

/* Record an event on s covering every block cached so far, unless one already does or too
 * many are outstanding. */
static void ev_record(agile__arena *a, strm *s)
{
    uint64_t tok;
    if (s->ev_n == EV_MAX || !s->ftail || s->ftail->epoch != s->seq_next)
        return;
    int r = a->ops->event_record(a->ctx, s->id, &tok);
    a->st.num_events_recorded++;
    if (r != AGILE_OK) {
        a->st.num_event_errors++;
        return;
    }
    unsigned i = (s->ev_head + s->ev_n) % EV_MAX;
    s->ev_tok[i] = tok;
    s->ev_seq[i] = s->seq_next++;
    s->ev_n++;
}

/* Settle everything the streams have passed, recording events where none covers the cache
 * yet. Returns the bytes moved to tier 2. Slow path only: it calls the event callbacks. */
static uint64_t settle_all(agile__arena *a)
{
    uint64_t n = 0;
    for (uint64_t h = 0; h <= a->smask; h++) {
        for (strm *s = a->stab[h]; s; s = s->hnext) {
            if (!s->fhead)
                continue;
            if (a->streams_sync) {
                n += settle(a, s, true);
                continue;
            }
            ev_poll(a, s);
            ev_record(a, s);
            ev_poll(a, s); /* event sources that complete at once (host, idle streams) */
            n += settle(a, s, false);
        }
    }
    return n;
}

/* Bound a stream's cache: blocks idle in it cannot merge with their neighbours, and a large
 * idle cache fragments the heap (measured: 2.1x the peak in use where settling at once gives
 * 1.35x, alloc_model_test). Over the cap, the oldest blocks settle down to half of it; with
 * events, those the stream has passed (polling at most once per cap/8 bytes freed, recording
 * one event for the rest). Amortized: each trim settles half the cap or waits for cap/8 more
 * bytes. `keep`, the block just freed, neither counts nor settles. */
static void cache_trim(agile__arena *a, strm *s, const blk *keep)
{
    uint64_t cap = AGILE_MAX(a->st.reserved_bytes >> CACHE_CAP_SHIFT, CACHE_CAP_MIN);
    if (s->cached - keep->size <= cap) {
        s->trim_at = cap;
        return;
    }
    blk *b;
    if (!a->streams_sync) {
        ev_poll(a, s);
        ev_record(a, s);
        ev_poll(a, s);
    }
    while (s->cached - keep->size > cap / 2 && (b = s->fhead) && b != keep &&
           (a->streams_sync || b->epoch <= s->seq_done)) {
        cache_unlink(a, s, b);
        hash_del(a, b);
        t2_insert(a, b);
    }
    s->trim_at = AGILE_MAX(cap, s->cached - keep->size + cap / 8);
}

/* --- extents and segments ---------------------------------------------------------------
 * A segment is a run of contiguous extents: head edge, blocks, tail edge (edges have size 0
 * and state B_EDGE, so they never merge). Heads are listed in a->segs through prev/next. */

/* Index of the first extent with off >= x. */
static uint64_t ext_lower(const agile__arena *a, uint64_t x)
{
    uint64_t lo = 0, hi = a->n_ext;
    while (lo < hi) {
        uint64_t m = (lo + hi) / 2;
        if (a->ext[m].off < x)
            lo = m + 1;
        else
            hi = m;
    }
    return lo;
}

static void seg_list_add(agile__arena *a, blk *h)
{
    h->prev = NULL;
    h->next = a->segs;
    if (h->next)
        h->next->prev = h;
    a->segs = h;
    a->st.segments++;
}

static void seg_list_del(agile__arena *a, blk *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        a->segs = h->next;
    if (h->next)
        h->next->prev = h->prev;
    a->st.segments--;
}

static blk *edge_new(agile__arena *a, uint64_t off)
{
    blk *e = blk_new(a);
    if (e) {
        e->off = off;
        e->state = B_EDGE;
    }
    return e;
}

/* Add [off, off + size) to the lease: a new segment, or joined to the segments it touches.
 * `counted`: a new lease (stats), not one handed back after a failed shrink. */
static int seg_add(agile__arena *a, uint64_t off, uint64_t size, bool counted)
{
    blk *b = NULL, *h = NULL, *t = NULL, *left = NULL, *right = NULL;
    if (size == 0 || (off | size) & (a->align - 1) || off >= a->window ||
        size > a->window - off)
        return AGILE_EPROTO;
    uint64_t i = ext_lower(a, off);
    if ((i < a->n_ext && a->ext[i].off < off + size) ||
        (i > 0 && a->ext[i - 1].off + a->ext[i - 1].size > off))
        return AGILE_EPROTO;
    if (a->n_ext == a->ext_cap) {
        uint64_t cap = a->ext_cap ? a->ext_cap * 2 : 16;
        struct agile__ext *e = realloc(a->ext, cap * sizeof(*e));
        if (!e)
            return AGILE_ENOMEM;
        a->ext = e;
        a->ext_cap = cap;
    }
    for (blk *x = a->segs; x; x = x->next) {
        if (x->mate->off == off)
            left = x;
        if (x->off == off + size)
            right = x;
    }
    b = blk_new(a);
    if (!left)
        h = edge_new(a, off);
    if (!right)
        t = edge_new(a, off + size);
    if (!b || (!left && !h) || (!right && !t)) {
        if (b)
            blk_put(a, b);
        if (h)
            blk_put(a, h);
        if (t)
            blk_put(a, t);
        return AGILE_ENOMEM;
    }
    memmove(&a->ext[i + 1], &a->ext[i], (a->n_ext - i) * sizeof(*a->ext));
    a->ext[i].off = off;
    a->ext[i].size = size;
    a->n_ext++;
    b->off = off;
    b->size = size;
    if (left) { /* replace its tail edge by b */
        blk *lt = left->mate;
        b->pprev = lt->pprev;
        lt->pprev->pnext = b;
        h = left;
        blk_put(a, lt);
    } else {
        h->pnext = b;
        b->pprev = h;
    }
    if (right) { /* replace its head edge by b */
        b->pnext = right->pnext;
        right->pnext->pprev = b;
        t = right->mate;
        seg_list_del(a, right);
        blk_put(a, right);
    } else {
        t->pprev = b;
        b->pnext = t;
    }
    h->mate = t;
    t->mate = h;
    if (!left)
        seg_list_add(a, h);
    a->st.reserved_bytes += size;
    a->st.reserved_bytes_peak = AGILE_MAX(a->st.reserved_bytes_peak, a->st.reserved_bytes);
    a->st.extents++;
    if (counted)
        a->st.num_grows++;
    t2_insert(a, b);
    return AGILE_OK;
}

/* Cut extent e out of the free block b, splitting its segment in two around it: b keeps the
 * part before e, a new block the part after; edges close both sides; an empty side goes. */
static int seg_cut(agile__arena *a, blk *h0, blk *b, uint64_t eoff, uint64_t esize,
                   blk **resume)
{
    blk *t0, *nt, *nh, *r = NULL, *p = b->pprev, *n = b->pnext;
    uint64_t bend = b->off + b->size, eend = eoff + esize;
    bool keep_left = eoff > b->off, keep_right = eend < bend;
    nt = edge_new(a, eoff);
    nh = edge_new(a, eend);
    if (keep_left && keep_right)
        r = blk_new(a);
    if (!nt || !nh || (keep_left && keep_right && !r)) {
        if (nt)
            blk_put(a, nt);
        if (nh)
            blk_put(a, nh);
        if (r)
            blk_put(a, r);
        return AGILE_ENOMEM;
    }
    t0 = h0->mate;
    t2_unlink(a, b);
    if (!keep_right && keep_left)
        r = NULL;
    else if (!keep_left)
        r = keep_right ? b : NULL;
    /* left side: ... p | [b] | nt */
    if (keep_left) {
        b->size = eoff - b->off;
        b->pnext = nt;
        nt->pprev = b;
        t2_push(a, b);
    } else {
        p->pnext = nt;
        nt->pprev = p;
    }
    /* right side: nh | [r] | n ... */
    if (r) {
        r->off = eend;
        r->size = bend - eend;
        r->pprev = nh;
        nh->pnext = r;
        r->pnext = n;
        n->pprev = r;
        t2_push(a, r);
    } else {
        nh->pnext = n;
        n->pprev = nh;
        if (!keep_left)
            blk_put(a, b);
    }
    h0->mate = nt;
    nt->mate = h0;
    nh->mate = t0;
    t0->mate = nh;
    seg_list_add(a, nh);
    *resume = nh;
    if (h0->pnext == nt) { /* nothing left before the cut */
        seg_list_del(a, h0);
        blk_put(a, h0);
        blk_put(a, nt);
    }
    if (nh->pnext == t0) { /* nothing left after it */
        seg_list_del(a, nh);
        blk_put(a, nh);
        blk_put(a, t0);
        *resume = NULL;
    }
    uint64_t i = ext_lower(a, eoff);
    memmove(&a->ext[i], &a->ext[i + 1], (a->n_ext - i - 1) * sizeof(*a->ext));
    a->n_ext--;
    a->st.reserved_bytes -= esize;
    a->st.extents--;
    return AGILE_OK;
}

/* The first extent inside the free block b, or -1. */
static int64_t ext_inside(const agile__arena *a, const blk *b)
{
    uint64_t i = ext_lower(a, b->off);
    if (i < a->n_ext && a->ext[i].off + a->ext[i].size <= b->off + b->size)
        return (int64_t)i;
    return -1;
}

static bool has_free_ext(const agile__arena *a)
{
    for (blk *h = a->segs; h; h = h->next)
        for (blk *b = h->pnext; b->state != B_EDGE; b = b->pnext)
            if (b->state == B_FREE && ext_inside(a, b) >= 0)
                return true;
    return false;
}

/* Give back every extent that lies inside a free block. Called with grow_mu and mu held;
 * drops mu around the shrink calls (the extents are out of every structure meanwhile); an
 * extent whose shrink fails is added back. Returns the first error. */
static int release_free_exts(agile__arena *a)
{
    int rv = AGILE_OK;
    struct agile__ext *gone = NULL;
    uint64_t ngone = 0, cap = 0;
    if (!a->ops->shrink)
        return AGILE_OK;
    blk *heads = a->segs; /* new heads go in front: this walk reaches them through the chain */
    for (blk *h = heads, *hn; h; h = hn) {
        blk *cur = h; /* the head of the segment being walked */
        hn = h->next;
        for (blk *b = h->pnext; b && b->state != B_EDGE;) {
            int64_t i = b->state == B_FREE ? ext_inside(a, b) : -1;
            if (i < 0) {
                b = b->pnext;
                continue;
            }
            if (ngone == cap) {
                cap = cap ? cap * 2 : 8;
                struct agile__ext *g = realloc(gone, cap * sizeof(*g));
                if (!g) {
                    rv = AGILE_ENOMEM;
                    goto shrink;
                }
                gone = g;
            }
            struct agile__ext e = a->ext[i];
            blk *resume;
            if (seg_cut(a, cur, b, e.off, e.size, &resume) != AGILE_OK) {
                rv = AGILE_ENOMEM;
                goto shrink;
            }
            gone[ngone++] = e;
            /* what is left before the cut was walked already; go on after it */
            cur = resume;
            b = resume ? resume->pnext : NULL;
        }
    }
shrink:
    if (!ngone)
        goto out;
    pthread_mutex_unlock(&a->mu);
    for (uint64_t k = 0; k < ngone; k++) {
        int r = a->ops->shrink(a->ctx, gone[k].off, gone[k].size);
        if (r != AGILE_OK) {
            if (rv == AGILE_OK)
                rv = r;
            gone[k].size |= 1; /* sizes are aligned: the low bit marks the ones that stay */
        }
    }
    pthread_mutex_lock(&a->mu);
    for (uint64_t k = 0; k < ngone; k++) {
        if (gone[k].size & 1) {
            if (seg_add(a, gone[k].off, gone[k].size & ~1ull, false) != AGILE_OK)
                agile__error("alloc: extent [%llu, +%llu) lost after a failed shrink",
                             (unsigned long long)gone[k].off,
                             (unsigned long long)(gone[k].size & ~1ull));
        } else {
            a->st.num_shrinks++;
        }
    }
out:
    free(gone);
    return rv;
}

/* Free bytes at the end of the highest extent: a contiguous grow extends them. */
static uint64_t tail_free(const agile__arena *a)
{
    if (!a->n_ext)
        return 0;
    uint64_t end = a->ext[a->n_ext - 1].off + a->ext[a->n_ext - 1].size;
    for (blk *h = a->segs; h; h = h->next)
        if (h->mate->off == end)
            return h->mate->pprev->state == B_FREE ? h->mate->pprev->size : 0;
    return 0;
}

/* Tiers 2 and 3, with mu held (dropped around grow). */
static int alloc_slow(agile__arena *a, uint64_t size, blk **out)
{
    int rv = AGILE_OK;
    blk *b = t2_take(a, size);
    if (b)
        goto out;
    if (settle_all(a)) {
        a->st.num_alloc_retries++;
        if ((b = t2_take(a, size)))
            goto out;
    }
    pthread_mutex_unlock(&a->mu);
    pthread_mutex_lock(&a->grow_mu);
    pthread_mutex_lock(&a->mu);
    for (int shrunk = 0, partial = 1, stepped = 1;;) {
        uint64_t off = 0, sz = 0;
        if ((b = t2_take(a, size))) /* another thread grew meanwhile */
            break;
        /* The worker grows the lease contiguously: free space at its end counts. */
        uint64_t tail = partial ? tail_free(a) : 0;
        uint64_t need = size - AGILE_MIN(tail, size);
        uint64_t want = stepped ? AGILE_MAX(a->grow_step, need) : need;
        pthread_mutex_unlock(&a->mu);
        rv = a->ops->grow(a->ctx, want, &off, &sz);
        pthread_mutex_lock(&a->mu);
        if (rv == AGILE_OK) {
            rv = seg_add(a, off, sz, true);
            if (rv == AGILE_OK && (b = t2_take(a, size)))
                break;
            if (rv == AGILE_OK && want < size && partial) {
                partial = 0; /* not at the end after all: ask for the whole size */
                continue;
            }
            if (rv == AGILE_OK)
                rv = AGILE_EPROTO; /* the worker leased less than asked */
            agile__error("alloc: grow(%llu) returned [%llu, +%llu): %s",
                         (unsigned long long)want, (unsigned long long)off,
                         (unsigned long long)sz, agile_err_name(rv));
            break;
        }
        if (rv == AGILE_EQUOTA && stepped && want > need) {
            stepped = 0; /* a whole step is past the quota: what is needed may still fit */
            continue;
        }
        a->st.num_grow_failures++;
        /* Quota: free extents too small for this request can be traded for a larger one. */
        if (shrunk || !has_free_ext(a))
            break;
        shrunk = 1;
        a->st.num_alloc_retries++;
        if (release_free_exts(a) != AGILE_OK)
            break;
    }
    pthread_mutex_unlock(&a->grow_mu);
    if (b)
        rv = AGILE_OK;
out:
    *out = b;
    return rv;
}

/* --- API -------------------------------------------------------------------------------- */

int agile__arena_init(agile__arena *a, const agile__arena_ops *ops, void *ctx, uint64_t base,
                      uint64_t window_size, uint64_t alignment, uint64_t grow_step)
{
    int rv = AGILE_OK;
    memset(a, 0, sizeof(*a));
    if (alignment == 0)
        alignment = 256;
    if (grow_step == 0)
        grow_step = 64ull << 20;
    if (!ops || !ops->grow || (ops->event_record && !ops->event_query) ||
        alignment < 256 || (alignment & (alignment - 1)) || window_size < alignment ||
        (window_size & (window_size - 1)) || window_size > (1ull << 52) ||
        (base & (window_size - 1)) || grow_step > window_size)
        return AGILE_EINVAL;
    a->ops = ops;
    a->ctx = ctx;
    a->base = base;
    a->window = window_size;
    a->align = alignment;
    a->align_log = fls64(alignment);
    a->grow_step = AGILE_ALIGN_UP(grow_step, alignment);
    a->small_max = SMALL_MAX;
    a->streams_sync = ops->event_record == NULL;
    a->hmask = 1023;
    a->smask = 15;
    a->htab = calloc(a->hmask + 1, sizeof(*a->htab));
    a->stab = calloc(a->smask + 1, sizeof(*a->stab));
    if (!a->htab || !a->stab) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    if (pthread_mutex_init(&a->grow_mu, NULL) != 0) {
        pthread_mutex_destroy(&a->mu);
        rv = AGILE_ENOMEM;
        goto out;
    }
out:
    if (rv != AGILE_OK) {
        free(a->htab);
        free(a->stab);
        memset(a, 0, sizeof(*a));
    }
    return rv;
}

void agile__arena_fini(agile__arena *a)
{
    if (!a->htab)
        return;
    for (uint64_t h = 0; h <= a->smask; h++) {
        strm *s = a->stab[h], *nx;
        for (; s; s = nx) {
            nx = s->hnext;
            while (s->ev_n)
                ev_pop(a, s, false);
            free(s);
        }
    }
    while (a->slabs) {
        slab *s = a->slabs;
        a->slabs = s->next;
        free(s);
    }
    free(a->htab);
    free(a->stab);
    free(a->ext);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->grow_mu);
    memset(a, 0, sizeof(*a));
}

int agile__arena_alloc(agile__arena *a, uint64_t size, uintptr_t stream, uint64_t *addr)
{
    int rv = AGILE_OK;
    blk *b = NULL;
    *addr = 0;
    if (size > a->window) {
        pthread_mutex_lock(&a->mu);
        a->st.num_ooms++;
        pthread_mutex_unlock(&a->mu);
        return AGILE_ENOMEM;
    }
    uint64_t rs = round_size(a, size);
    pthread_mutex_lock(&a->mu);
    strm *s = strm_get(a, stream);
    if (!s) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    b = cache_take(a, s, rs);
    if (b)
        b->state = B_USED;
    else
        AGILE_TRY(alloc_slow(a, rs, &b));
    b->req = size;
    a->st.allocated_bytes += b->size;
    a->st.allocated_bytes_total += b->size;
    if (a->st.allocated_bytes > a->st.allocated_bytes_peak)
        a->st.allocated_bytes_peak = a->st.allocated_bytes;
    a->st.requested_bytes += size;
    if (a->st.requested_bytes > a->st.requested_bytes_peak)
        a->st.requested_bytes_peak = a->st.requested_bytes;
    a->st.allocations++;
    a->st.num_allocs++;
    *addr = a->base + b->off;
out:
    if (rv != AGILE_OK)
        a->st.num_ooms++;
    pthread_mutex_unlock(&a->mu);
    return rv;
}

int agile__arena_free(agile__arena *a, uint64_t addr, uint64_t size, uintptr_t stream)
{
    int rv = AGILE_OK;
    uint64_t off = addr - a->base;
    pthread_mutex_lock(&a->mu);
    blk *b = addr >= a->base && off < a->window ? hash_find(a, off) : NULL;
    if (!b) {
        rv = AGILE_ENOENT;
        goto out;
    }
    if (b->state == B_CACHED) {
        a->st.num_double_frees++;
        rv = AGILE_EINVAL;
        goto out;
    }
    if (b->req != size) {
        a->st.num_size_mismatches++;
        rv = AGILE_EINVAL;
        goto out;
    }
    strm *s = strm_get(a, stream);
    if (!s) { /* ownership moves only on success: the block stays allocated */
        rv = AGILE_ENOMEM;
        goto out;
    }
    a->st.allocated_bytes -= b->size;
    a->st.freed_bytes_total += b->size;
    a->st.requested_bytes -= size;
    a->st.allocations--;
    a->st.num_frees++;
    cache_put(a, s, b);
    /* The block just freed does not count: a loop that frees and allocates one large block
     * must not trim (and call back) at every free. */
    if (s->cached - b->size > s->trim_at)
        cache_trim(a, s, b);
out:
    if (rv != AGILE_OK)
        a->st.num_free_errors++;
    pthread_mutex_unlock(&a->mu);
    return rv;
}

void agile__arena_synchronized(agile__arena *a, uintptr_t stream)
{
    pthread_mutex_lock(&a->mu);
    for (uint64_t h = 0; h <= a->smask; h++) {
        strm *s = a->stab[h], *nx;
        for (; s; s = nx) {
            nx = s->hnext;
            if (stream != AGILE_ARENA_ALL_STREAMS && !a->streams_sync && s->id != stream)
                continue;
            while (s->ev_n)
                ev_pop(a, s, false);
            s->seq_done = s->seq_next - 1;
            settle(a, s, true);
            strm_forget(a, s);
        }
    }
    pthread_mutex_unlock(&a->mu);
}

int agile__arena_empty_cache(agile__arena *a)
{
    int rv;
    pthread_mutex_lock(&a->grow_mu);
    pthread_mutex_lock(&a->mu);
    settle_all(a);
    rv = release_free_exts(a);
    pthread_mutex_unlock(&a->mu);
    pthread_mutex_unlock(&a->grow_mu);
    return rv;
}

void agile__arena_stats(agile__arena *a, agile__alloc_stats *out)
{
    pthread_mutex_lock(&a->mu);
    *out = a->st;
    pthread_mutex_unlock(&a->mu);
}

void agile__arena_reset_peak(agile__arena *a)
{
    pthread_mutex_lock(&a->mu);
    a->st.allocated_bytes_peak = a->st.allocated_bytes;
    a->st.requested_bytes_peak = a->st.requested_bytes;
    a->st.reserved_bytes_peak = a->st.reserved_bytes;
    pthread_mutex_unlock(&a->mu);
}

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            agile__error("alloc: check failed: %s (%s:%d)", #c, __FILE__, __LINE__);              \
            rv = AGILE_EINTERNAL;                                                                  \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

int agile__arena_check(agile__arena *a)
{
    int rv = AGILE_OK;
    uint64_t used = 0, cached = 0, freeb = 0, reserved = 0, nlive = 0, nsegs = 0, ext = 0;
    pthread_mutex_lock(&a->mu);
    for (uint64_t i = 0; i < a->n_ext; i++) {
        CHECK(a->ext[i].size && !((a->ext[i].off | a->ext[i].size) & (a->align - 1)));
        CHECK(i == 0 || a->ext[i - 1].off + a->ext[i - 1].size <= a->ext[i].off);
        ext += a->ext[i].size;
    }
    CHECK(a->n_ext == a->st.extents);
    for (blk *h = a->segs; h; h = h->next) {
        uint64_t end = h->off;
        nsegs++;
        CHECK(h->state == B_EDGE && h->pprev == NULL && h->mate->mate == h);
        CHECK(!h->next || h->next->prev == h);
        blk *b;
        for (b = h->pnext; b->state != B_EDGE; b = b->pnext) {
            CHECK(b->off == end && b->size && !(b->size & (a->align - 1)));
            CHECK(b->pnext->pprev == b && b->pprev->pnext == b);
            end += b->size;
            if (b->state == B_FREE) {
                CHECK(b->pnext->state != B_FREE);
                CHECK(b->bin == bin_of(b->size >> a->align_log));
                freeb += b->size;
            } else {
                CHECK(b->state == B_USED || b->state == B_CACHED);
                CHECK(hash_find(a, b->off) == b);
                nlive++;
                if (b->state == B_USED)
                    used += b->size;
                else
                    cached += b->size;
            }
        }
        CHECK(b == h->mate && b->off == end && b->pnext == NULL && end > h->off);
        /* a segment is a run of whole extents */
        uint64_t i = ext_lower(a, h->off), covered = 0;
        CHECK(i < a->n_ext && a->ext[i].off == h->off);
        for (; i < a->n_ext && a->ext[i].off < end; i++)
            covered += a->ext[i].size;
        CHECK(covered == end - h->off);
        reserved += end - h->off;
    }
    for (unsigned i = 0; i < NBINS; i++) {
        bool on = a->sl_bitmap[i >> SL_LOG] >> (i & (SL_COUNT - 1)) & 1;
        CHECK(on == (a->bins[i] != NULL));
        CHECK(!on || (a->fl_bitmap >> (i >> SL_LOG) & 1));
        for (blk *b = a->bins[i]; b; b = b->next) {
            CHECK(b->state == B_FREE && b->bin == i);
            CHECK(!b->next || b->next->prev == b);
        }
    }
    for (uint64_t h = 0; h <= a->smask; h++) {
        for (strm *s = a->stab[h]; s; s = s->hnext) {
            uint64_t c = 0, prev_epoch = 0;
            for (blk *b = s->fhead; b; b = b->fnext) {
                CHECK(b->state == B_CACHED && b->owner == s && b->epoch >= prev_epoch);
                prev_epoch = b->epoch;
                c += b->size;
            }
            CHECK(c == s->cached);
        }
    }
    CHECK(nlive == a->hcount);
    CHECK(used == a->st.allocated_bytes && cached == a->st.cached_bytes);
    CHECK(freeb == a->st.free_bytes && reserved == a->st.reserved_bytes);
    CHECK(ext == a->st.reserved_bytes && nsegs == a->st.segments);
out:
    pthread_mutex_unlock(&a->mu);
    return rv;
}
