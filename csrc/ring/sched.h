/* sched.h — the worker's fair dispatcher: deficit round robin over tenants.
 *
 * Each tenant has a weight (policy priority, 1..AGILE_SCHED_MAX_WEIGHT). Tenants with work
 * are on an active list; at its turn a tenant's deficit grows by quantum x weight and it may
 * dispatch up to its deficit in cost units (a command costs 1 unit unless the caller charges
 * more). Unused deficit carries to the next round while the tenant stays busy and is dropped
 * when its queue empties, so a flooding tenant gets its weighted share and no more, and an
 * idle tenant is not on the list at all: it costs nothing per round.
 *
 * Threads: any thread may add, remove, set weights and mark tenants ready; one dispatch
 * thread calls agile__sched_next/charge (or agile__sched_run). The pull callback runs without
 * the lock held. Removing a tenant that is being pulled waits until its pull returns, except
 * from inside the pull itself (then the removal completes when the pull returns).
 */
#ifndef AGILE_SCHED_H
#define AGILE_SCHED_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core.h"

#define AGILE_SCHED_MAX_WEIGHT 64u
#define AGILE_SCHED_DEFAULT_QUANTUM 8u
#define AGILE_SCHED_NONE UINT32_MAX

typedef struct agile__sched_tenant {
    uint32_t id;
    uint32_t weight;
    int64_t deficit;
    uint64_t served;     /* cost units dispatched so far */
    uint32_t next, prev; /* active list (slot indices) */
    bool live;
    bool active;         /* on the active list */
    bool pending;        /* marked ready since its last pull started */
    bool busy;           /* being pulled */
    bool doomed;         /* being removed: no new turns */
    bool free_on_charge; /* removed from inside its own pull: charge frees it */
} agile__sched_tenant;

typedef struct agile__sched {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* tenant became ready; a pull finished */
    agile__sched_tenant *t;
    uint32_t *index; /* open addressing id -> slot + 1 (0 = empty), cap = 2 x max */
    uint32_t max, nslots, ntenants, index_mask;
    uint32_t free_head;
    uint32_t active_head; /* AGILE_SCHED_NONE when idle */
    uint32_t nactive;
    uint32_t quantum;
    pthread_t runner;
    bool have_runner;
} agile__sched;

/* agile__sched_init: on caller storage; room for max_tenants; quantum 0 = default. */
int agile__sched_init(agile__sched *s, uint32_t max_tenants, uint32_t quantum);
/* agile__sched_fini: the dispatch thread must have stopped. */
void agile__sched_fini(agile__sched *s);
/* agile__sched_add_tenant: AGILE_EINVAL on weight 0 or > max, AGILE_EBUSY if id exists,
 * AGILE_ENOMEM at max_tenants. The tenant starts idle. */
int agile__sched_add_tenant(agile__sched *s, uint32_t id, uint32_t weight);
int agile__sched_set_weight(agile__sched *s, uint32_t id, uint32_t weight);
/* agile__sched_remove_tenant: blocks while another thread is pulling this tenant. */
int agile__sched_remove_tenant(agile__sched *s, uint32_t id);
/* agile__sched_mark_ready: the tenant has work (its ring's doorbell). Cheap; idempotent. */
int agile__sched_mark_ready(agile__sched *s, uint32_t id);
/* agile__sched_wake: agile__sched_mark_ready, and whether the tenant was idle (neither
 * waiting for a turn nor being served): a tenant that just got work, which the tenant being
 * served may end its turn for (a long command between pieces). False for an unknown id. */
bool agile__sched_wake(agile__sched *s, uint32_t id);

/* agile__sched_next: the tenant to serve now and its allowance in cost units (> 0).
 * AGILE_ENOENT when no tenant has work. The caller must report with agile__sched_charge. */
int agile__sched_next(agile__sched *s, uint32_t *id, uint32_t *allowance);
/* agile__sched_charge: the tenant from agile__sched_next used `used` units (may exceed the
 * allowance by one command's cost: the excess is taken from its next turn); more=false
 * when its queue is empty (it leaves the active list unless marked ready meanwhile). */
void agile__sched_charge(agile__sched *s, uint32_t id, uint32_t used, bool more);

/* A pull callback: dispatch up to `allowance` units of tenant's work, set *used, return
 * whether the tenant still has work. Errors of the tenant (a broken ring) are the callback's
 * to handle (disconnect it; return false). */
typedef bool (*agile__sched_pull_fn)(void *arg, uint32_t tenant, uint32_t allowance,
                                     uint32_t *used);
/* agile__sched_run: serve tenants in fair order until `budget` units are dispatched or none
 * has work; *done (optional) gets the units dispatched. Does not block. */
int agile__sched_run(agile__sched *s, agile__sched_pull_fn pull, void *arg, uint64_t budget,
                     uint64_t *done);
/* agile__sched_wait: block until some tenant has work, up to timeout_ns (<0: forever).
 * AGILE_OK or AGILE_ETIMEDOUT. */
int agile__sched_wait(agile__sched *s, int64_t timeout_ns);
/* agile__sched_served: cost units dispatched for id so far. */
int agile__sched_served(agile__sched *s, uint32_t id, uint64_t *units);

#endif
