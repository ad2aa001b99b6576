/* sched_test.c — deficit round robin: weighted shares, fairness, idle tenants, threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "ring/ring.h"
#include "ring/sched.h"

#define NT 1100u

/* Simulated tenant queues: backlog in units (UINT64_MAX: flooding), cost per command
 * (fixed, or drawn per command from a tenant's mix, or pieces of a large host op). */
typedef struct {
    uint64_t backlog[NT];
    uint32_t cost[NT];
    uint32_t mix[NT]; /* nonzero: each command costs 1 + rnd % mix (cost[] ignored) */
    bool pieces[NT];  /* the worker's large host ops: a piece takes what is left of the
                       * allowance, at least 4 and at most 256 units (16 KiB .. 1 MiB) */
    uint64_t rng;
    uint64_t units[NT];
    uint64_t pulls[NT];
    uint64_t total_pulls;
} sim;

static uint32_t sim_rnd(sim *s)
{
    s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull; /* Knuth's LCG */
    return (uint32_t)(s->rng >> 33);
}

static uint32_t sim_cost(sim *s, uint32_t id, uint32_t left)
{
    if (s->pieces[id]) return AGILE_MIN(AGILE_MAX(left, 4u), 256u);
    if (s->mix[id]) return 1 + sim_rnd(s) % s->mix[id];
    return s->cost[id] ? s->cost[id] : 1;
}

static bool sim_pull(void *arg, uint32_t id, uint32_t allowance, uint32_t *used)
{
    sim *s = arg;
    uint32_t cost = sim_cost(s, id, allowance);
    uint32_t u = 0;
    s->pulls[id]++;
    s->total_pulls++;
    /* Dispatch whole commands while the allowance covers them; one command is always
     * allowed (DRR charges the overdraft to the next turn). */
    while (s->backlog[id] && (u == 0 || u + cost <= allowance)) {
        u += cost;
        if (s->backlog[id] != UINT64_MAX) s->backlog[id]--;
        cost = sim_cost(s, id, u < allowance ? allowance - u : 0);
    }
    s->units[id] += u;
    *used = u;
    return s->backlog[id] != 0;
}

static double jain(const uint64_t *x, const uint32_t *w, unsigned n)
{
    double sum = 0, sq = 0;
    for (unsigned i = 0; i < n; i++) {
        double v = (double)x[i] / w[i];
        sum += v;
        sq += v * v;
    }
    return sum * sum / (n * sq);
}

static sim *sim_new(void)
{
    sim *s = calloc(1, sizeof *s);
    assert_non_null(s);
    return s;
}

static void flood(agile__sched *s, sim *m, uint32_t id, uint32_t weight)
{
    assert_int_equal(agile__sched_add_tenant(s, id, weight), AGILE_OK);
    m->backlog[id] = UINT64_MAX;
    assert_int_equal(agile__sched_mark_ready(s, id), AGILE_OK);
}

static void test_two_flooders_equal(void **state)
{
    (void)state;
    agile__sched s;
    sim *m = sim_new();
    uint64_t done;
    assert_int_equal(agile__sched_init(&s, 16, 0), AGILE_OK);
    flood(&s, m, 1, 1);
    flood(&s, m, 2, 1);
    /* tenant 2's commands cost 3 units each: shares are in units, not in commands */
    m->cost[2] = 3;
    assert_int_equal(agile__sched_run(&s, sim_pull, m, 100000, &done), AGILE_OK);
    assert_int_equal(done, m->units[1] + m->units[2]);
    assert_true(done >= 100000);
    double ratio = (double)m->units[1] / (double)m->units[2];
    print_message("    1:1 flooding: %llu vs %llu units (ratio %.3f)\n",
                  (unsigned long long)m->units[1], (unsigned long long)m->units[2], ratio);
    assert_true(ratio > 0.9 && ratio < 1.1);
    uint64_t served;
    assert_int_equal(agile__sched_served(&s, 1, &served), AGILE_OK);
    assert_int_equal(served, m->units[1]);
    agile__sched_fini(&s);
    free(m);
}

static void test_weighted(void **state)
{
    (void)state;
    agile__sched s;
    sim *m = sim_new();
    assert_int_equal(agile__sched_init(&s, 16, 4), AGILE_OK);
    flood(&s, m, 1, 1);
    flood(&s, m, 2, 2);
    flood(&s, m, 3, 5);
    assert_int_equal(agile__sched_run(&s, sim_pull, m, 80000, NULL), AGILE_OK);
    double r21 = (double)m->units[2] / (double)m->units[1];
    double r31 = (double)m->units[3] / (double)m->units[1];
    print_message("    weights 1:2:5 -> %llu:%llu:%llu (%.3f, %.3f)\n",
                  (unsigned long long)m->units[1], (unsigned long long)m->units[2],
                  (unsigned long long)m->units[3], r21, r31);
    assert_true(r21 > 1.8 && r21 < 2.2);
    assert_true(r31 > 4.5 && r31 < 5.5);
    /* changing a weight takes effect on the following turns */
    memset(m->units, 0, sizeof m->units);
    assert_int_equal(agile__sched_set_weight(&s, 3, 1), AGILE_OK);
    assert_int_equal(agile__sched_run(&s, sim_pull, m, 60000, NULL), AGILE_OK);
    r31 = (double)m->units[3] / (double)m->units[1];
    assert_true(r31 > 0.9 && r31 < 1.1);
    assert_int_equal(agile__sched_set_weight(&s, 3, 0), AGILE_EINVAL);
    assert_int_equal(agile__sched_set_weight(&s, 9, 1), AGILE_ENOENT);
    agile__sched_fini(&s);
    free(m);
}

static void test_jain_four_equal(void **state)
{
    (void)state;
    agile__sched s;
    sim *m = sim_new();
    uint32_t w[4] = {1, 1, 1, 1};
    assert_int_equal(agile__sched_init(&s, 16, 0), AGILE_OK);
    for (uint32_t i = 0; i < 4; i++)
        flood(&s, m, i, 1);
    m->cost[3] = 7; /* one tenant with expensive commands */
    /* many short runs, as the worker's dispatch loop does */
    for (int k = 0; k < 1000; k++)
        assert_int_equal(agile__sched_run(&s, sim_pull, m, 100, NULL), AGILE_OK);
    double j = jain(m->units, w, 4);
    print_message("    4 equal tenants: %llu %llu %llu %llu, Jain %.5f\n",
                  (unsigned long long)m->units[0], (unsigned long long)m->units[1],
                  (unsigned long long)m->units[2], (unsigned long long)m->units[3], j);
    assert_true(j >= 0.99);
    agile__sched_fini(&s);
    free(m);
}

/* Property: whatever the commands cost (random mixes from NOP-like 1 unit to 4096 units, and
 * large host ops run in pieces as the worker does), flooding tenants get units in proportion
 * to their weights. 40 random cases: 2..8 tenants, weights 1..16. */
static void test_cost_weighted_random(void **state)
{
    (void)state;
    sim *m = sim_new();
    static const uint32_t mixes[] = {1, 4, 64, 300, 4096};
    m->rng = 12345;
    for (int trial = 0; trial < 40; trial++) {
        agile__sched s;
        uint32_t n = 2 + sim_rnd(m) % 7, w[8], maxc = 1, wsum = 0;
        memset(m->units, 0, sizeof m->units);
        assert_int_equal(agile__sched_init(&s, 16, 0), AGILE_OK);
        for (uint32_t i = 0; i < n; i++) {
            w[i] = 1 + sim_rnd(m) % 16;
            wsum += w[i];
            m->mix[i] = mixes[sim_rnd(m) % (sizeof mixes / sizeof mixes[0])];
            m->pieces[i] = sim_rnd(m) % 3 == 0;
            if (m->pieces[i]) m->mix[i] = 256;
            maxc = AGILE_MAX(maxc, m->mix[i]);
            flood(&s, m, i, w[i]);
        }
        /* Enough units that the lightest tenant's share dwarfs DRR's error bound (one
         * command's cost plus one quantum per tenant). */
        uint64_t total = (uint64_t)wsum * (maxc + AGILE_SCHED_DEFAULT_QUANTUM * 16) * 400;
        for (uint64_t done = 0, d; done < total; done += d)
            assert_int_equal(agile__sched_run(&s, sim_pull, m, 4096, &d), AGILE_OK);
        double j = jain(m->units, w, n), lo = 1e300, hi = 0;
        for (uint32_t i = 0; i < n; i++) {
            double x = (double)m->units[i] / w[i];
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
        if (trial < 3 || hi / lo > 1.1)
            print_message("    case %d: %u tenants, max cost %u, units/weight %.0f..%.0f, "
                          "Jain %.5f\n",
                          trial, n, maxc, lo, hi, j);
        assert_true(hi / lo < 1.1);
        assert_true(j >= 0.999);
        agile__sched_fini(&s);
        memset(m->mix, 0, sizeof m->mix);
        memset(m->pieces, 0, sizeof m->pieces);
        memset(m->backlog, 0, sizeof m->backlog);
    }
    free(m);
}

/* A light tenant among flooders gets its work done at once, not after theirs. */
static void test_light_tenant_not_starved(void **state)
{
    (void)state;
    agile__sched s;
    sim *m = sim_new();
    assert_int_equal(agile__sched_init(&s, 16, 0), AGILE_OK);
    flood(&s, m, 1, 1);
    flood(&s, m, 2, 1);
    assert_int_equal(agile__sched_run(&s, sim_pull, m, 1000, NULL), AGILE_OK);
    assert_int_equal(agile__sched_add_tenant(&s, 3, 1), AGILE_OK);
    m->backlog[3] = 5;
    assert_int_equal(agile__sched_mark_ready(&s, 3), AGILE_OK);
    uint64_t done;
    /* within one round it is served: the flooders' turns (at most two quanta each, with
     * carried-over deficit) and then its own */
    assert_int_equal(agile__sched_run(&s, sim_pull, m, 5 * AGILE_SCHED_DEFAULT_QUANTUM, &done),
                     AGILE_OK);
    assert_int_equal(m->units[3], 5);
    assert_int_equal(m->backlog[3], 0);
    agile__sched_fini(&s);
    free(m);
}

static void test_idle_costs_nothing(void **state)
{
    (void)state;
    agile__sched s;
    sim *m = sim_new();
    assert_int_equal(agile__sched_init(&s, NT, 0), AGILE_OK);
    /* 1000 tenants that never have work, registered and even marked ready once and drained */
    for (uint32_t i = 100; i < 1100; i++) {
        assert_int_equal(agile__sched_add_tenant(&s, i, 1 + i % 8), AGILE_OK);
        m->backlog[i] = 1;
        assert_int_equal(agile__sched_mark_ready(&s, i), AGILE_OK);
    }
    assert_int_equal(agile__sched_run(&s, sim_pull, m, UINT64_MAX, NULL), AGILE_OK);
    uint64_t before = m->total_pulls;
    assert_int_equal(before, 1000);
    flood(&s, m, 1, 1);
    uint64_t t0 = agile__now_ns();
    assert_int_equal(agile__sched_run(&s, sim_pull, m, 80000, NULL), AGILE_OK);
    uint64_t dt = agile__now_ns() - t0;
    /* every pull went to the busy tenant; idle ones were never visited */
    assert_int_equal(m->total_pulls - before, m->pulls[1]);
    assert_int_equal(m->units[1], 80000);
    assert_int_equal(m->pulls[1], 80000 / AGILE_SCHED_DEFAULT_QUANTUM);
    print_message("    1000 idle + 1 busy: %.0f ns per turn\n", (double)dt / (double)m->pulls[1]);
    uint32_t id, allow;
    memset(&m->backlog[1], 0, sizeof m->backlog[1]);
    assert_int_equal(agile__sched_run(&s, sim_pull, m, 100, NULL), AGILE_OK);
    assert_int_equal(agile__sched_next(&s, &id, &allow), AGILE_ENOENT);
    assert_int_equal(agile__sched_wait(&s, 1000000), AGILE_ETIMEDOUT);
    agile__sched_fini(&s);
    free(m);
}

static void test_tenant_table(void **state)
{
    (void)state;
    agile__sched s;
    uint64_t u;
    assert_int_equal(agile__sched_init(&s, 64, 0), AGILE_OK);
    assert_int_equal(agile__sched_add_tenant(&s, 1, 0), AGILE_EINVAL);
    assert_int_equal(agile__sched_add_tenant(&s, 1, AGILE_SCHED_MAX_WEIGHT + 1), AGILE_EINVAL);
    /* churn: ids that collide in the hash, removed in odd orders */
    for (int round = 0; round < 50; round++) {
        for (uint32_t i = 0; i < 64; i++)
            assert_int_equal(agile__sched_add_tenant(&s, i * 1024 + (uint32_t)round, 1), AGILE_OK);
        assert_int_equal(agile__sched_add_tenant(&s, 99999, 1), AGILE_ENOMEM);
        assert_int_equal(agile__sched_add_tenant(&s, (uint32_t)round, 1), AGILE_EBUSY);
        for (uint32_t i = 0; i < 64; i += 2)
            assert_int_equal(agile__sched_remove_tenant(&s, i * 1024 + (uint32_t)round), AGILE_OK);
        for (uint32_t i = 0; i < 64; i++)
            assert_int_equal(agile__sched_served(&s, i * 1024 + (uint32_t)round, &u),
                             (i & 1) ? AGILE_OK : AGILE_ENOENT);
        for (uint32_t i = 1; i < 64; i += 2) {
            assert_int_equal(agile__sched_mark_ready(&s, i * 1024 + (uint32_t)round), AGILE_OK);
            assert_int_equal(agile__sched_remove_tenant(&s, i * 1024 + (uint32_t)round), AGILE_OK);
        }
        assert_int_equal(s.ntenants, 0);
        assert_int_equal(s.nactive, 0);
    }
    assert_int_equal(agile__sched_remove_tenant(&s, 5), AGILE_ENOENT);
    assert_int_equal(agile__sched_mark_ready(&s, 5), AGILE_ENOENT);
    agile__sched_fini(&s);
}

/* Marked ready while being pulled and reporting empty: not lost. Removed from inside its own
 * pull: gone when the pull returns. */
typedef struct {
    agile__sched *s;
    int mode;
    int calls;
} reentry;

static bool reentry_pull(void *arg, uint32_t id, uint32_t allowance, uint32_t *used)
{
    reentry *r = arg;
    r->calls++;
    *used = 1;
    if (r->mode == 0 && r->calls == 1)
        agile__sched_mark_ready(r->s, id); /* new work arrived as we drained */
    if (r->mode == 1) assert_int_equal(agile__sched_remove_tenant(r->s, id), AGILE_OK);
    return false;
}

static void test_reentry(void **state)
{
    (void)state;
    agile__sched s;
    reentry r = {&s, 0, 0};
    uint64_t done;
    assert_int_equal(agile__sched_init(&s, 4, 0), AGILE_OK);
    assert_int_equal(agile__sched_add_tenant(&s, 7, 1), AGILE_OK);
    assert_int_equal(agile__sched_mark_ready(&s, 7), AGILE_OK);
    assert_int_equal(agile__sched_run(&s, reentry_pull, &r, 100, &done), AGILE_OK);
    assert_int_equal(r.calls, 2);
    assert_int_equal(done, 2);
    r.mode = 1;
    r.calls = 0;
    assert_int_equal(agile__sched_mark_ready(&s, 7), AGILE_OK);
    assert_int_equal(agile__sched_run(&s, reentry_pull, &r, 100, &done), AGILE_OK);
    assert_int_equal(r.calls, 1);
    assert_int_equal(agile__sched_served(&s, 7, &done), AGILE_ENOENT);
    assert_int_equal(s.ntenants, 0);
    agile__sched_fini(&s);
}

/* ---- threads: producers mark ready, one dispatcher, tenants come and go -------------------- */

#define TT 8u
#define PER 20000u

typedef struct {
    agile__sched s;
    _Atomic uint64_t queued[TT];
    _Atomic uint64_t taken[TT];
    atomic_bool stop;
} mt;

static bool mt_pull(void *arg, uint32_t id, uint32_t allowance, uint32_t *used)
{
    mt *m = arg;
    uint64_t q = atomic_load(&m->queued[id]), t = atomic_load(&m->taken[id]);
    uint32_t n = (uint32_t)AGILE_MIN((uint64_t)allowance, q - t);
    atomic_fetch_add(&m->taken[id], n);
    *used = n;
    return q - t > n;
}

typedef struct {
    mt *m;
    uint32_t id;
} producer_arg;

static void *producer(void *p)
{
    producer_arg *a = p;
    for (unsigned i = 0; i < PER; i++) {
        atomic_fetch_add(&a->m->queued[a->id], 1);
        if (agile__sched_mark_ready(&a->m->s, a->id) != AGILE_OK) abort();
    }
    return NULL;
}

static void *dispatcher(void *p)
{
    mt *m = p;
    while (!atomic_load(&m->stop)) {
        if (agile__sched_wait(&m->s, 1000000) == AGILE_OK)
            agile__sched_run(&m->s, mt_pull, m, 256, NULL);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    mt *m = calloc(1, sizeof *m);
    pthread_t d, p[TT];
    producer_arg pa[TT];
    assert_non_null(m);
    assert_int_equal(agile__sched_init(&m->s, TT + 1, 0), AGILE_OK);
    for (uint32_t i = 0; i < TT; i++)
        assert_int_equal(agile__sched_add_tenant(&m->s, i, 1 + i % 3), AGILE_OK);
    assert_int_equal(pthread_create(&d, NULL, dispatcher, m), 0);
    for (uint32_t i = 0; i < TT; i++) {
        pa[i] = (producer_arg){m, i};
        assert_int_equal(pthread_create(&p[i], NULL, producer, &pa[i]), 0);
    }
    for (uint32_t i = 0; i < TT; i++)
        pthread_join(p[i], NULL);
    /* everything queued is dispatched: no lost wake-up */
    uint64_t end = agile__now_ns() + 10ull * 1000000000ull;
    for (uint32_t i = 0; i < TT; i++)
        while (atomic_load(&m->taken[i]) < PER && agile__now_ns() < end)
            sched_yield();
    for (uint32_t i = 0; i < TT; i++)
        assert_int_equal(atomic_load(&m->taken[i]), PER);
    /* removal while the dispatcher runs: blocks until it is not being pulled */
    for (uint32_t i = 0; i < TT; i++)
        assert_int_equal(agile__sched_remove_tenant(&m->s, i), AGILE_OK);
    atomic_store(&m->stop, true);
    pthread_join(d, NULL);
    agile__sched_fini(&m->s);
    free(m);
}

/* ---- the dispatcher over real rings: the worker's dispatch loop in miniature ---------------- */

#define RT 3u

typedef struct {
    agile__ring_worker w[RT];
    agile__ring_client c[RT];
    agile__ring_cmd *cmd;
    uint64_t taken[RT];
} rings;

/* Take up to `allowance` commands from the tenant's ring, complete each. */
static bool ring_pull(void *arg, uint32_t id, uint32_t allowance, uint32_t *used)
{
    rings *r = arg;
    bool got = true;
    uint32_t n = 0;
    while (n < allowance) {
        if (agile__ring_next(&r->w[id], r->cmd, &got) != AGILE_OK || !got) break;
        assert_int_equal(agile__ring_complete(&r->w[id], r->cmd, AGILE_OK, 0), AGILE_OK);
        n++;
    }
    r->taken[id] += n;
    *used = n;
    return agile__ring_pending(&r->w[id]) > 0;
}

/* Each client keeps its ring full (a flood); the worker scans the rings for doorbells and
 * lets the dispatcher pick whom to serve. Shares follow the weights 1:2:1. */
static void test_rings_flooding(void **state)
{
    (void)state;
    rings *r = calloc(1, sizeof *r);
    agile__sched s;
    agile__ring_cmd *c = calloc(1, sizeof *c);
    agile__ring_cpl cpl[64];
    const uint32_t weight[RT] = {1, 2, 1};
    assert_non_null(r);
    assert_non_null(c);
    r->cmd = calloc(1, sizeof *r->cmd);
    assert_non_null(r->cmd);
    assert_int_equal(agile__sched_init(&s, RT, 0), AGILE_OK);
    for (uint32_t i = 0; i < RT; i++) {
        assert_int_equal(agile__ring_worker_init(&r->w[i], 64, 64, NULL), AGILE_OK);
        assert_int_equal(agile__ring_client_init(&r->c[i], dup(r->w[i].reg.fd), NULL), AGILE_OK);
        assert_int_equal(agile__sched_add_tenant(&s, i, weight[i]), AGILE_OK);
    }
    c->opcode = AGILE_RING_OP_NOP;
    for (int round = 0; round < 2000; round++) {
        for (uint32_t i = 0; i < RT; i++) { /* clients: reap, refill */
            uint32_t n;
            do
                assert_int_equal(agile__ring_poll(&r->c[i], cpl, 64, &n), AGILE_OK);
            while (n);
            while (agile__ring_submit(&r->c[i], c, AGILE_RING_NONBLOCK, 0, NULL) == AGILE_OK)
                ;
        }
        for (uint32_t i = 0; i < RT; i++) /* worker: doorbells */
            if (agile__ring_pending(&r->w[i]))
                assert_int_equal(agile__sched_mark_ready(&s, i), AGILE_OK);
        assert_int_equal(agile__sched_run(&s, ring_pull, r, 40, NULL), AGILE_OK);
    }
    double r10 = (double)r->taken[1] / (double)r->taken[0];
    double r20 = (double)r->taken[2] / (double)r->taken[0];
    print_message("    rings 1:2:1 -> %llu:%llu:%llu commands\n", (unsigned long long)r->taken[0],
                  (unsigned long long)r->taken[1], (unsigned long long)r->taken[2]);
    assert_true(r10 > 1.8 && r10 < 2.2);
    assert_true(r20 > 0.9 && r20 < 1.1);
    for (uint32_t i = 0; i < RT; i++) {
        agile__ring_client_fini(&r->c[i]);
        agile__ring_worker_fini(&r->w[i]);
    }
    agile__sched_fini(&s);
    free(r->cmd);
    free(r);
    free(c);
}

/* Removed by another thread while its pull runs: the removal waits for the pull, and the slot
 * is freed exactly once. */
typedef struct {
    agile__sched *s;
    atomic_int in_pull;
    atomic_int release;
    atomic_int removed;
} blocker;

static bool blocking_pull(void *arg, uint32_t id, uint32_t allowance, uint32_t *used)
{
    blocker *b = arg;
    atomic_store(&b->in_pull, 1);
    while (!atomic_load(&b->release))
        sched_yield();
    *used = 1;
    return true; /* still has work: charge must not put a doomed tenant back */
}

static void *run_blocker(void *p)
{
    blocker *b = p;
    agile__sched_run(b->s, blocking_pull, b, 1, NULL);
    return NULL;
}

static void *remove_one(void *p)
{
    blocker *b = p;
    if (agile__sched_remove_tenant(b->s, 1) != AGILE_OK) abort();
    atomic_store(&b->removed, 1);
    return NULL;
}

static void test_remove_while_pulled(void **state)
{
    (void)state;
    agile__sched s;
    blocker b = {.s = &s};
    pthread_t d, r;
    assert_int_equal(agile__sched_init(&s, 2, 0), AGILE_OK);
    assert_int_equal(agile__sched_add_tenant(&s, 1, 1), AGILE_OK);
    assert_int_equal(agile__sched_mark_ready(&s, 1), AGILE_OK);
    assert_int_equal(pthread_create(&d, NULL, run_blocker, &b), 0);
    while (!atomic_load(&b.in_pull))
        sched_yield();
    assert_int_equal(pthread_create(&r, NULL, remove_one, &b), 0);
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    assert_int_equal(atomic_load(&b.removed), 0);                   /* waits for the pull */
    assert_int_equal(agile__sched_mark_ready(&s, 1), AGILE_ENOENT); /* already going */
    atomic_store(&b.release, 1);
    pthread_join(d, NULL);
    pthread_join(r, NULL);
    assert_int_equal(atomic_load(&b.removed), 1);
    assert_int_equal(s.ntenants, 0);
    assert_int_equal(s.nactive, 0);
    /* the slot was freed once: exactly two tenants fit again */
    assert_int_equal(agile__sched_add_tenant(&s, 1, 1), AGILE_OK);
    assert_int_equal(agile__sched_add_tenant(&s, 2, 1), AGILE_OK);
    assert_int_equal(agile__sched_add_tenant(&s, 3, 1), AGILE_ENOMEM);
    agile__sched_fini(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_flooders_equal),
        cmocka_unit_test(test_weighted),
        cmocka_unit_test(test_jain_four_equal),
        cmocka_unit_test(test_cost_weighted_random),
        cmocka_unit_test(test_light_tenant_not_starved),
        cmocka_unit_test(test_idle_costs_nothing),
        cmocka_unit_test(test_tenant_table),
        cmocka_unit_test(test_reentry),
        cmocka_unit_test(test_remove_while_pulled),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_rings_flooding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
