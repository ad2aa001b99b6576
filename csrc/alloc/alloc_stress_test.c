/* alloc_stress_test — 8 threads x 1M operations on one arena under contention.
 *
 * A shadow map of the window (one tag per alignment unit) is claimed with atomic exchanges at
 * every allocation and released at every free: two live blocks that overlap, or a block freed
 * under another's tag, fail at once. At the end nothing may be left: no allocation, no cached
 * byte, every extent returned by empty_cache, every event released. $AGILE_ALLOC_STRESS_OPS
 * overrides the per-thread operation count (sanitizer builds on a busy machine). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "alloc.h"
#include "alloc_fake.h"
#include "core.h"

#define MiB (1ull << 20)
#define BASE (1ull << 40)
#define WINDOW (1ull << 30)
#define ALIGN 256ull
#define THREADS 8
#define SLOTS 256

static _Atomic uint8_t shadow[WINDOW / ALIGN];
static agile__arena arena;
static fake fk;
static long ops_per_thread = 1000000;
static atomic_long failures;

typedef struct {
    int id;
    uint64_t rng;
    long allocs, frees, ooms;
} worker;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t pick_size(uint64_t *s)
{
    uint64_t r = rnd(s) % 100;
    if (r < 90)
        return 1 + rnd(s) % 4096;
    if (r < 99)
        return 4097 + rnd(s) % (64 * 1024);
    return 64 * 1024 + rnd(s) % MiB;
}

static void mark(uint64_t addr, uint64_t size, uint8_t tag, uint8_t expect)
{
    uint64_t u0 = (addr - BASE) / ALIGN, n = (size + ALIGN - 1) / ALIGN;
    if (n == 0)
        n = 1;
    for (uint64_t u = u0; u < u0 + n; u++) {
        uint8_t was = atomic_exchange_explicit(&shadow[u], tag, memory_order_relaxed);
        if (was != expect) {
            fprintf(stderr, "overlap at unit %llu: found tag %u, expected %u\n",
                    (unsigned long long)u, was, expect);
            atomic_fetch_add(&failures, 1);
        }
    }
}

static void *run(void *arg)
{
    worker *w = arg;
    uint64_t addr[SLOTS] = {0}, size[SLOTS] = {0};
    uintptr_t strm[SLOTS] = {0};
    uint8_t tag = (uint8_t)(w->id + 1);
    for (long i = 0; i < ops_per_thread; i++) {
        int k = (int)(rnd(&w->rng) % SLOTS);
        if (!addr[k]) {
            uint64_t sz = pick_size(&w->rng);
            /* own stream mostly, a shared one sometimes: cross-stream reuse under contention */
            uintptr_t s = rnd(&w->rng) % 8 ? (uintptr_t)(w->id + 1) : 15;
            int rv = agile__arena_alloc(&arena, sz, s, &addr[k]);
            if (rv != AGILE_OK) {
                w->ooms++;
                continue;
            }
            if (addr[k] % ALIGN || addr[k] < BASE || addr[k] + sz > BASE + WINDOW)
                atomic_fetch_add(&failures, 1);
            mark(addr[k], sz, tag, 0);
            size[k] = sz;
            strm[k] = s;
            w->allocs++;
        } else {
            mark(addr[k], size[k], 0, tag);
            uintptr_t s = rnd(&w->rng) % 16 ? strm[k] : (uintptr_t)(w->id + 1);
            if (agile__arena_free(&arena, addr[k], size[k], s) != AGILE_OK)
                atomic_fetch_add(&failures, 1);
            addr[k] = 0;
            w->frees++;
        }
    }
    for (int k = 0; k < SLOTS; k++) {
        if (addr[k]) {
            mark(addr[k], size[k], 0, tag);
            if (agile__arena_free(&arena, addr[k], size[k], strm[k]) != AGILE_OK)
                atomic_fetch_add(&failures, 1);
            w->frees++;
        }
    }
    return NULL;
}

static void stress(const agile__arena_ops *ops)
{
    pthread_t th[THREADS];
    worker w[THREADS];
    agile__alloc_stats st;
    long allocs = 0, frees = 0, ooms = 0;
    uint64_t t0 = agile__now_ns();
    fake_init(&fk, WINDOW, WINDOW);
    fk.all_done = true;
    atomic_store(&failures, 0);
    assert_int_equal(agile__arena_init(&arena, ops, &fk, BASE, WINDOW, ALIGN, 16 * MiB), 0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.id = i, .rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)};
        assert_int_equal(pthread_create(&th[i], NULL, run, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        allocs += w[i].allocs;
        frees += w[i].frees;
        ooms += w[i].ooms;
    }
    assert_int_equal(atomic_load(&failures), 0);
    assert_int_equal(allocs, frees);
    assert_int_equal(agile__arena_check(&arena), AGILE_OK);
    agile__arena_stats(&arena, &st);
    printf("  %s: %ld ops in %.2f s, %ld allocs, %ld ooms, reserved peak %llu MiB, "
           "allocated peak %llu MiB, grows %llu, retries %llu, events %llu\n",
           ops->event_record ? "streams" : "host", ops_per_thread * THREADS,
           (double)(agile__now_ns() - t0) / 1e9, allocs, ooms,
           (unsigned long long)(st.reserved_bytes_peak >> 20),
           (unsigned long long)(st.allocated_bytes_peak >> 20),
           (unsigned long long)st.num_grows, (unsigned long long)st.num_alloc_retries,
           (unsigned long long)st.num_events_recorded);
    assert_int_equal(ooms, 0);
    assert_int_equal(st.allocations, 0);
    assert_int_equal(st.allocated_bytes, 0);
    assert_int_equal(st.requested_bytes, 0);
    assert_int_equal(st.num_allocs, (uint64_t)allocs);
    assert_int_equal(st.num_frees, (uint64_t)frees);
    assert_int_equal(st.num_free_errors, 0);
    /* no leak: everything settles and every extent goes back */
    assert_int_equal(agile__arena_empty_cache(&arena), AGILE_OK);
    agile__arena_stats(&arena, &st);
    assert_int_equal(st.cached_bytes, 0);
    assert_int_equal(st.reserved_bytes, 0);
    assert_int_equal(fk.leased, 0);
    for (uint64_t u = 0; u < WINDOW / ALIGN; u++)
        if (atomic_load_explicit(&shadow[u], memory_order_relaxed))
            fail_msg("unit %llu still tagged", (unsigned long long)u);
    agile__arena_fini(&arena);
    assert_int_equal(fk.ev_records, fk.ev_releases);
}

static void test_threads_streams(void **state)
{
    (void)state;
    stress(&fake_stream_ops);
}

static void test_threads_host(void **state)
{
    (void)state;
    stress(&fake_host_ops);
}

int main(void)
{
    const char *e = getenv("AGILE_ALLOC_STRESS_OPS");
    if (e && atol(e) > 0)
        ops_per_thread = atol(e);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_streams),
        cmocka_unit_test(test_threads_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
