/* sched.c — deficit round robin over tenants (see sched.h). */
#include "sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- id -> slot index (open addressing, backward-shift deletion: no tombstones) ---------- */

static uint32_t hash_id(uint32_t id)
{
    uint32_t h = id * 0x9e3779b1u; /* Fibonacci hashing: sequential ids spread out */
    return h ^ (h >> 16);
}

static uint32_t index_find(const agile__sched *s, uint32_t id)
{
    for (uint32_t i = hash_id(id) & s->index_mask;; i = (i + 1) & s->index_mask) {
        uint32_t v = s->index[i];
        if (v == 0) return AGILE_SCHED_NONE;
        if (s->t[v - 1].id == id) return v - 1;
    }
}

static void index_put(agile__sched *s, uint32_t id, uint32_t slot)
{
    uint32_t i = hash_id(id) & s->index_mask;
    while (s->index[i])
        i = (i + 1) & s->index_mask;
    s->index[i] = slot + 1;
}

static void index_del(agile__sched *s, uint32_t id)
{
    uint32_t i = hash_id(id) & s->index_mask;
    while (s->t[s->index[i] - 1].id != id)
        i = (i + 1) & s->index_mask;
    /* Shift later members of the probe run back so lookups never stop at a hole. */
    for (uint32_t j = (i + 1) & s->index_mask; s->index[j]; j = (j + 1) & s->index_mask) {
        uint32_t home = hash_id(s->t[s->index[j] - 1].id) & s->index_mask;
        /* move j to i when home is not cyclically in (i, j] */
        bool stay = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stay) {
            s->index[i] = s->index[j];
            i = j;
        }
    }
    s->index[i] = 0;
}

/* ---- active list --------------------------------------------------------------------------- */

static void active_append(agile__sched *s, uint32_t k)
{
    agile__sched_tenant *t = &s->t[k];
    if (s->active_head == AGILE_SCHED_NONE) {
        t->next = t->prev = k;
        s->active_head = k;
    } else {
        uint32_t h = s->active_head, tl = s->t[h].prev;
        t->next = h;
        t->prev = tl;
        s->t[tl].next = k;
        s->t[h].prev = k;
    }
    t->active = true;
    s->nactive++;
}

static void active_unlink(agile__sched *s, uint32_t k)
{
    agile__sched_tenant *t = &s->t[k];
    if (t->next == k) {
        s->active_head = AGILE_SCHED_NONE;
    } else {
        s->t[t->prev].next = t->next;
        s->t[t->next].prev = t->prev;
        if (s->active_head == k) s->active_head = t->next;
    }
    t->active = false;
    s->nactive--;
}

/* ---- API ----------------------------------------------------------------------------------- */

int agile__sched_init(agile__sched *s, uint32_t max_tenants, uint32_t quantum)
{
    int rv = AGILE_OK;
    pthread_condattr_t ca;
    bool ca_init = false;
    memset(s, 0, sizeof *s);
    if (max_tenants == 0 || max_tenants > (1u << 24)) return AGILE_EINVAL;
    uint32_t icap = 2;
    while (icap < 2 * max_tenants)
        icap <<= 1;
    s->t = calloc(max_tenants, sizeof *s->t);
    s->index = calloc(icap, sizeof *s->index);
    if (!s->t || !s->index) {
        rv = AGILE_ENOMEM;
        goto out;
    }
    s->max = max_tenants;
    s->index_mask = icap - 1;
    s->free_head = AGILE_SCHED_NONE;
    s->active_head = AGILE_SCHED_NONE;
    s->quantum = quantum ? quantum : AGILE_SCHED_DEFAULT_QUANTUM;
    if ((rv = pthread_condattr_init(&ca)) != 0) {
        rv = agile_err_sys(rv);
        goto out;
    }
    ca_init = true;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if ((rv = pthread_mutex_init(&s->mu, NULL)) != 0) {
        rv = agile_err_sys(rv);
        goto out;
    }
    if ((rv = pthread_cond_init(&s->cv, &ca)) != 0) {
        pthread_mutex_destroy(&s->mu);
        rv = agile_err_sys(rv);
        goto out;
    }
out:
    if (ca_init) pthread_condattr_destroy(&ca);
    if (rv != AGILE_OK) {
        free(s->t);
        free(s->index);
        memset(s, 0, sizeof *s);
    }
    return rv;
}

void agile__sched_fini(agile__sched *s)
{
    if (!s->t) return;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->t);
    free(s->index);
    memset(s, 0, sizeof *s);
}

int agile__sched_add_tenant(agile__sched *s, uint32_t id, uint32_t weight)
{
    int rv = AGILE_OK;
    uint32_t k;
    if (weight == 0 || weight > AGILE_SCHED_MAX_WEIGHT) return AGILE_EINVAL;
    pthread_mutex_lock(&s->mu);
    if (index_find(s, id) != AGILE_SCHED_NONE) {
        rv = AGILE_EBUSY;
        goto out;
    }
    if (s->free_head != AGILE_SCHED_NONE) {
        k = s->free_head;
        s->free_head = s->t[k].next;
    } else if (s->nslots < s->max) {
        k = s->nslots++;
    } else {
        rv = AGILE_ENOMEM;
        goto out;
    }
    memset(&s->t[k], 0, sizeof s->t[k]);
    s->t[k].id = id;
    s->t[k].weight = weight;
    s->t[k].live = true;
    index_put(s, id, k);
    s->ntenants++;
out:
    pthread_mutex_unlock(&s->mu);
    return rv;
}

int agile__sched_set_weight(agile__sched *s, uint32_t id, uint32_t weight)
{
    int rv = AGILE_OK;
    if (weight == 0 || weight > AGILE_SCHED_MAX_WEIGHT) return AGILE_EINVAL;
    pthread_mutex_lock(&s->mu);
    uint32_t k = index_find(s, id);
    if (k == AGILE_SCHED_NONE || s->t[k].doomed)
        rv = AGILE_ENOENT;
    else
        s->t[k].weight = weight;
    pthread_mutex_unlock(&s->mu);
    return rv;
}

/* Called with the lock held, the tenant not busy. */
static void tenant_free(agile__sched *s, uint32_t k)
{
    if (s->t[k].active) active_unlink(s, k);
    index_del(s, s->t[k].id);
    s->t[k].live = false;
    s->t[k].next = s->free_head;
    s->free_head = k;
    s->ntenants--;
}

int agile__sched_remove_tenant(agile__sched *s, uint32_t id)
{
    int rv = AGILE_OK;
    pthread_mutex_lock(&s->mu);
    uint32_t k = index_find(s, id);
    if (k == AGILE_SCHED_NONE || s->t[k].doomed) {
        rv = AGILE_ENOENT;
        goto out;
    }
    if (s->t[k].busy && s->have_runner && pthread_equal(s->runner, pthread_self())) {
        /* From inside its own pull: finish when the pull returns (charge frees it). */
        s->t[k].doomed = true;
        s->t[k].free_on_charge = true;
        goto out;
    }
    /* No new turns while we wait: a busy tenant is off the active list, and charge does not
     * put a doomed one back; we free it ourselves once its pull is over. */
    s->t[k].doomed = true;
    while (s->t[k].busy)
        pthread_cond_wait(&s->cv, &s->mu);
    tenant_free(s, k);
out:
    pthread_mutex_unlock(&s->mu);
    return rv;
}

/* Called with the lock held. Whether the tenant was idle before. */
static int mark_ready_locked(agile__sched *s, uint32_t id, bool *woke)
{
    uint32_t k = index_find(s, id);
    *woke = false;
    if (k == AGILE_SCHED_NONE || s->t[k].doomed) return AGILE_ENOENT;
    s->t[k].pending = true;
    if (!s->t[k].active && !s->t[k].busy) {
        bool was_idle = s->active_head == AGILE_SCHED_NONE;
        active_append(s, k);
        *woke = true;
        if (was_idle) pthread_cond_broadcast(&s->cv);
    }
    return AGILE_OK;
}

int agile__sched_mark_ready(agile__sched *s, uint32_t id)
{
    bool woke;
    pthread_mutex_lock(&s->mu);
    int rv = mark_ready_locked(s, id, &woke);
    pthread_mutex_unlock(&s->mu);
    return rv;
}

bool agile__sched_wake(agile__sched *s, uint32_t id)
{
    bool woke;
    pthread_mutex_lock(&s->mu);
    mark_ready_locked(s, id, &woke);
    pthread_mutex_unlock(&s->mu);
    return woke;
}

int agile__sched_next(agile__sched *s, uint32_t *id, uint32_t *allowance)
{
    int rv = AGILE_ENOENT;
    pthread_mutex_lock(&s->mu);
    s->runner = pthread_self();
    s->have_runner = true;
    /* Each pass adds quantum x weight to the head's deficit, so a tenant that overdrew
     * (charged above its allowance) is skipped for as many turns as it owes, and the loop
     * ends: some deficit turns positive within AGILE_SCHED_MAX_WEIGHT-bounded passes. */
    while (s->active_head != AGILE_SCHED_NONE) {
        uint32_t k = s->active_head;
        agile__sched_tenant *t = &s->t[k];
        t->deficit += (int64_t)s->quantum * t->weight;
        if (t->deficit > 0) {
            active_unlink(s, k); /* off the list while busy; charge puts it back at the tail */
            t->busy = true;
            t->pending = false;
            *id = t->id;
            *allowance = (uint32_t)AGILE_MIN(t->deficit, (int64_t)UINT32_MAX);
            rv = AGILE_OK;
            break;
        }
        s->active_head = t->next; /* still in debt: next tenant */
    }
    pthread_mutex_unlock(&s->mu);
    return rv;
}

void agile__sched_charge(agile__sched *s, uint32_t id, uint32_t used, bool more)
{
    pthread_mutex_lock(&s->mu);
    uint32_t k = index_find(s, id);
    if (k == AGILE_SCHED_NONE || !s->t[k].busy)
        goto out; /* not from agile__sched_next: nothing to charge */
    agile__sched_tenant *t = &s->t[k];
    t->busy = false;
    t->served += used;
    t->deficit -= used;
    if (t->doomed) {
        if (t->free_on_charge)
            tenant_free(s, k);
        else
            pthread_cond_broadcast(&s->cv); /* its remover waits for this */
        goto out;
    }
    if (more || t->pending) {
        /* A tenant that could not use its turn (blocked on something) may bank at most one
         * extra quantum, so it cannot burst past the others later. */
        int64_t cap = (int64_t)s->quantum * t->weight;
        if (t->deficit > cap) t->deficit = cap;
        active_append(s, k); /* tail: everyone else gets a turn first */
    } else if (t->deficit > 0) {
        t->deficit = 0; /* DRR: an emptied queue keeps no credit, but keeps its debt */
    }
    pthread_cond_broadcast(&s->cv);
out:
    pthread_mutex_unlock(&s->mu);
}

int agile__sched_run(agile__sched *s, agile__sched_pull_fn pull, void *arg, uint64_t budget,
                     uint64_t *done)
{
    uint64_t n = 0;
    uint32_t id, allowance, used, idle = 0;
    while (n < budget && agile__sched_next(s, &id, &allowance) == AGILE_OK) {
        if (allowance > budget - n) allowance = (uint32_t)(budget - n);
        used = 0;
        bool more = pull(arg, id, allowance, &used);
        agile__sched_charge(s, id, used, more);
        n += used;
        /* Tenants that say "more" but dispatch nothing (blocked): stop after a whole
         * fruitless round rather than spin here. */
        idle = used ? 0 : idle + 1;
        if (idle > s->max) break;
    }
    if (done) *done = n;
    return AGILE_OK;
}

int agile__sched_wait(agile__sched *s, int64_t timeout_ns)
{
    int rv = AGILE_OK;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (timeout_ns >= 0) {
        uint64_t t = (uint64_t)ts.tv_nsec + (uint64_t)timeout_ns;
        ts.tv_sec += (time_t)(t / 1000000000u);
        ts.tv_nsec = (long)(t % 1000000000u);
    }
    pthread_mutex_lock(&s->mu);
    while (s->active_head == AGILE_SCHED_NONE) {
        int e = timeout_ns < 0 ? pthread_cond_wait(&s->cv, &s->mu)
                               : pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (e == ETIMEDOUT) {
            rv = AGILE_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rv;
}

int agile__sched_served(agile__sched *s, uint32_t id, uint64_t *units)
{
    int rv = AGILE_OK;
    pthread_mutex_lock(&s->mu);
    uint32_t k = index_find(s, id);
    if (k == AGILE_SCHED_NONE)
        rv = AGILE_ENOENT;
    else
        *units = s->t[k].served;
    pthread_mutex_unlock(&s->mu);
    return rv;
}
