/* cache.c — the plan cache: one plan object per (desc, device) for the backend, shared by
 * every tenant that asks for the same transform (buffers and work areas never are).
 *
 * Entries are refcounted: a plan held by a handle or by a running exec is never destroyed.
 * Idle entries (no holder) sit on an LRU list and are the only ones eviction considers; the
 * bounds (count, bytes of work area) are enforced on insert and on release.
 * Plan creation is slow (cuFFT: tens of ms), so it runs outside the lock; a racing creator
 * of the same key loses and destroys its duplicate. Plans are destroyed outside the lock. */
#include "fft.h"

#include <stdlib.h>
#include <string.h>

#define NBUCKETS 256u

struct agile__fft_centry {
    agile__fft_desc d;
    int device;
    uint64_t hash;
    agile__fft_bplan *plan;
    uint64_t work;
    uint32_t refs;
    agile__fft_centry *hnext;
    agile__fft_centry *prev, *next; /* LRU, while refs == 0 */
};

const agile__fft_desc *agile__fft_centry_desc(const agile__fft_centry *e)
{
    return &e->d;
}
agile__fft_bplan *agile__fft_centry_plan(const agile__fft_centry *e)
{
    return e->plan;
}
int agile__fft_centry_device(const agile__fft_centry *e)
{
    return e->device;
}

int agile__fft_cache_init(agile__fft_cache *c, agile__fft_backend *be, uint64_t max_entries,
                          uint64_t max_work_bytes)
{
    memset(c, 0, sizeof *c);
    c->buckets = calloc(NBUCKETS, sizeof *c->buckets);
    if (!c->buckets) return AGILE_ENOMEM;
    c->nbuckets = NBUCKETS;
    c->be = be;
    c->max_entries = max_entries;
    c->max_work_bytes = max_work_bytes;
    c->st.max_entries = max_entries;
    c->st.max_work_bytes = max_work_bytes;
    pthread_mutex_init(&c->mu, NULL);
    return AGILE_OK;
}

static uint64_t key_hash(const agile__fft_desc *d, int device)
{
    return agile__fft_desc_hash(d) ^ ((uint64_t)(uint32_t)device * 0x9e3779b97f4a7c15ull);
}

static agile__fft_centry *lookup(agile__fft_cache *c, const agile__fft_desc *d, int device,
                                 uint64_t h)
{
    for (agile__fft_centry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->device == device && agile__fft_desc_equal(&e->d, d)) return e;
    return NULL;
}

static void lru_unlink(agile__fft_cache *c, agile__fft_centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(agile__fft_cache *c, agile__fft_centry *e)
{
    e->prev = NULL;
    e->next = c->lru_head;
    if (c->lru_head)
        c->lru_head->prev = e;
    else
        c->lru_tail = e;
    c->lru_head = e;
}

static void hash_unlink(agile__fft_cache *c, agile__fft_centry *e)
{
    agile__fft_centry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
}

/* Take idle entries off the tail while over the bounds (all of them when force); they are
 * chained through hnext into *victims for destruction after the lock is dropped. */
static void evict_locked(agile__fft_cache *c, int force, agile__fft_centry **victims)
{
    while (c->lru_tail &&
           (force || c->st.entries > c->max_entries || c->st.work_bytes > c->max_work_bytes)) {
        agile__fft_centry *e = c->lru_tail;
        lru_unlink(c, e);
        hash_unlink(c, e);
        c->st.entries--;
        c->st.work_bytes -= e->work;
        c->st.evictions++;
        e->hnext = *victims;
        *victims = e;
    }
}

static void destroy_list(agile__fft_cache *c, agile__fft_centry *v)
{
    agile__fft_centry *rev = NULL;
    /* victims were pushed newest-evicted first; destroy in eviction (LRU) order */
    while (v) {
        agile__fft_centry *next = v->hnext;
        v->hnext = rev;
        rev = v;
        v = next;
    }
    v = rev;
    while (v) {
        agile__fft_centry *next = v->hnext;
        c->be->plan_destroy(c->be, v->plan);
        free(v);
        v = next;
    }
}

int agile__fft_cache_hold(agile__fft_cache *c, const agile__fft_desc *d, int device,
                          agile__fft_centry **out)
{
    uint64_t h = key_hash(d, device);
    agile__fft_centry *e, *fresh = NULL, *victims = NULL;
    int rv = AGILE_OK;

    pthread_mutex_lock(&c->mu);
    e = lookup(c, d, device, h);
    if (e) {
        if (e->refs++ == 0) {
            lru_unlink(c, e);
            c->st.in_use++;
        }
        c->st.hits++;
        pthread_mutex_unlock(&c->mu);
        *out = e;
        return AGILE_OK;
    }
    c->st.misses++;
    pthread_mutex_unlock(&c->mu);

    fresh = calloc(1, sizeof *fresh);
    if (!fresh) {
        rv = AGILE_ENOMEM;
        goto fail;
    }
    fresh->d = *d;
    fresh->device = device;
    fresh->hash = h;
    rv = c->be->plan_create(c->be, d, device, &fresh->plan);
    if (rv != AGILE_OK) goto fail;
    fresh->work = c->be->work_size(fresh->plan);

    pthread_mutex_lock(&c->mu);
    e = lookup(c, d, device, h);
    if (e) {
        /* Someone created the same plan meanwhile: use theirs. */
        if (e->refs++ == 0) {
            lru_unlink(c, e);
            c->st.in_use++;
        }
        fresh->hnext = NULL;
        victims = fresh;
    } else {
        e = fresh;
        e->refs = 1;
        e->hnext = c->buckets[h & (c->nbuckets - 1)];
        c->buckets[h & (c->nbuckets - 1)] = e;
        c->st.entries++;
        c->st.in_use++;
        c->st.work_bytes += e->work;
        evict_locked(c, 0, &victims);
    }
    pthread_mutex_unlock(&c->mu);
    destroy_list(c, victims);
    *out = e;
    return AGILE_OK;
fail:
    pthread_mutex_lock(&c->mu);
    c->st.create_failures++;
    pthread_mutex_unlock(&c->mu);
    free(fresh);
    return rv;
}

void agile__fft_cache_rele(agile__fft_cache *c, agile__fft_centry *e)
{
    agile__fft_centry *victims = NULL;
    pthread_mutex_lock(&c->mu);
    if (--e->refs == 0) {
        c->st.in_use--;
        lru_push(c, e);
        evict_locked(c, 0, &victims);
    }
    pthread_mutex_unlock(&c->mu);
    destroy_list(c, victims);
}

void agile__fft_cache_trim(agile__fft_cache *c)
{
    agile__fft_centry *victims = NULL;
    pthread_mutex_lock(&c->mu);
    evict_locked(c, 1, &victims);
    pthread_mutex_unlock(&c->mu);
    destroy_list(c, victims);
}

void agile__fft_cache_get_stats(agile__fft_cache *c, agile__fft_cache_stats *st)
{
    pthread_mutex_lock(&c->mu);
    *st = c->st;
    pthread_mutex_unlock(&c->mu);
}

void agile__fft_cache_fini(agile__fft_cache *c)
{
    agile__fft_centry *victims = NULL;
    if (!c->buckets) return;
    /* Every entry is in exactly one bucket; held ones at fini are a caller bug, freed anyway
     * so nothing leaks. */
    for (uint32_t i = 0; i < c->nbuckets; i++) {
        while (c->buckets[i]) {
            agile__fft_centry *e = c->buckets[i];
            c->buckets[i] = e->hnext;
            if (e->refs) agile__warn("fft: plan cache fini with a held plan (%u refs)", e->refs);
            e->hnext = victims;
            victims = e;
        }
    }
    c->lru_head = c->lru_tail = NULL;
    destroy_list(c, victims);
    free(c->buckets);
    c->buckets = NULL;
    pthread_mutex_destroy(&c->mu);
}
