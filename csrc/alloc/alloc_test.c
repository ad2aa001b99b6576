#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "alloc.h"
#include "alloc_fake.h"
#include "core.h"

#define MiB (1ull << 20)
#define BASE (1ull << 40) /* W-aligned for every W used here */
#define S1 ((uintptr_t)1)
#define S2 ((uintptr_t)2)

static agile__alloc_stats stats(agile__arena *a)
{
    agile__alloc_stats st;
    agile__arena_stats(a, &st);
    return st;
}

static void test_init_args(void **state)
{
    agile__arena a;
    fake f;
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 3ull << 20, 256, 0),
                     AGILE_EINVAL); /* window not a power of two */
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE + 4096, 1ull << 30, 256, 0),
                     AGILE_EINVAL); /* base not W-aligned */
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 128, 0),
                     AGILE_EINVAL); /* alignment < 256 */
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 768, 0),
                     AGILE_EINVAL);
    assert_int_equal(agile__arena_init(&a, &(agile__arena_ops){0}, &f, BASE, 1ull << 30, 0, 0),
                     AGILE_EINVAL); /* no grow */
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 0, 0), AGILE_OK);
    assert_int_equal(f.grows, 0); /* the arena starts empty */
    assert_int_equal(stats(&a).reserved_bytes, 0);
    agile__arena_fini(&a);
}

static void check_alignment(uint64_t align)
{
    agile__arena a;
    fake f;
    uint64_t sizes[] = {0, 1, 255, 256, 257, 1000, 4096, 4097, 65536, MiB - 1, MiB, MiB + 1,
                        5 * MiB + 3, 100 * MiB + 7};
    uint64_t addr[AGILE_ARRAY_LEN(sizes)];
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, align, 0), 0);
    for (size_t i = 0; i < AGILE_ARRAY_LEN(sizes); i++) {
        assert_int_equal(agile__arena_alloc(&a, sizes[i], S1, &addr[i]), AGILE_OK);
        assert_int_equal(addr[i] % align, 0);
        assert_true(addr[i] >= BASE && addr[i] + sizes[i] <= BASE + (1ull << 30));
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(addr[i], addr[j]);
    }
    agile__alloc_stats st = stats(&a);
    assert_int_equal(st.allocations, AGILE_ARRAY_LEN(sizes));
    assert_true(st.allocated_bytes >= st.requested_bytes);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    for (size_t i = 0; i < AGILE_ARRAY_LEN(sizes); i++)
        assert_int_equal(agile__arena_free(&a, addr[i], sizes[i], S1), AGILE_OK);
    st = stats(&a);
    assert_int_equal(st.allocated_bytes, 0);
    assert_int_equal(st.requested_bytes, 0);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
}

static void test_alignment(void **state)
{
    (void)state;
    check_alignment(256);
    check_alignment(4096);
    check_alignment(2 * MiB);
}

/* Small sizes are rounded to classes with at most 1/8 waste; large ones to the alignment. */
static void test_size_classes(void **state)
{
    agile__arena a;
    fake f;
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 256, 0), 0);
    for (uint64_t s = 1; s <= 4 * MiB; s = s * 5 / 4 + 1) {
        uint64_t p;
        assert_int_equal(agile__arena_alloc(&a, s, S1, &p), 0);
        agile__alloc_stats st = stats(&a);
        uint64_t got = st.allocated_bytes;
        assert_true(got >= s);
        if (s > 2048)
            assert_true(got - s <= s / 8 + 256);
        assert_int_equal(agile__arena_free(&a, p, s, S1), 0);
    }
    agile__arena_fini(&a);
}

static void test_split_coalesce(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p[8], big, q[3];
    int order[8] = {3, 0, 7, 5, 1, 6, 2, 4};
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 256, 64 * MiB),
                     0);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(agile__arena_alloc(&a, 8 * MiB, S1, &p[i]), 0);
        if (i)
            assert_int_equal(p[i], p[i - 1] + 8 * MiB); /* split off the same extent */
    }
    assert_int_equal(f.grows, 1);
    for (int i = 0; i < 8; i++)
        assert_int_equal(agile__arena_free(&a, p[order[i]], 8 * MiB, S1), 0);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    /* the eight blocks merge back into one 64 MiB extent: no second lease */
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &big), 0);
    assert_int_equal(big, p[0]);
    assert_int_equal(f.grows, 1);
    assert_int_equal(agile__arena_free(&a, big, 64 * MiB, S1), 0);
    /* split the merged extent again, then merge a hole in the middle with both sides */
    for (int i = 0; i < 3; i++)
        assert_int_equal(agile__arena_alloc(&a, 20 * MiB, S1, &q[i]), 0);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    assert_int_equal(agile__arena_free(&a, q[1], 20 * MiB, S1), 0);
    assert_int_equal(agile__arena_free(&a, q[0], 20 * MiB, S1), 0);
    assert_int_equal(agile__arena_free(&a, q[2], 20 * MiB, S1), 0);
    agile__arena_synchronized(&a, AGILE_ARENA_ALL_STREAMS);
    agile__alloc_stats st = stats(&a);
    assert_int_equal(st.free_bytes, 64 * MiB);
    assert_int_equal(st.cached_bytes, 0);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    assert_int_equal(f.grows, 1);
    agile__arena_fini(&a);
}

static void test_grow_only_when_needed(void **state)
{
    agile__arena a;
    fake f;
    static uint64_t p[4096];
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 256, 64 * MiB),
                     0);
    for (int i = 0; i < 4096; i++) /* 4096 x 8 KiB = 32 MiB: one lease */
        assert_int_equal(agile__arena_alloc(&a, 8192, S1, &p[i]), 0);
    assert_int_equal(f.grows, 1);
    assert_int_equal(f.last_min, 64 * MiB);
    for (int r = 0; r < 10; r++) { /* churn inside the lease: no new lease */
        for (int i = 0; i < 4096; i++)
            assert_int_equal(agile__arena_free(&a, p[i], 8192, S1), 0);
        for (int i = 0; i < 4096; i++)
            assert_int_equal(agile__arena_alloc(&a, 8192, S1, &p[i]), 0);
        for (int i = 0; i < 4096; i++)
            assert_int_equal(agile__arena_free(&a, p[i], 8192, S1), 0);
        for (int i = 0; i < 4096; i++)
            assert_int_equal(agile__arena_alloc(&a, 8192, S1, &p[i]), 0);
    }
    assert_int_equal(f.grows, 1);
    /* a request above the step asks for at least itself */
    uint64_t big;
    assert_int_equal(agile__arena_alloc(&a, 100 * MiB + 1, S1, &big), 0);
    assert_int_equal(f.grows, 2);
    assert_true(f.last_min >= 100 * MiB + 1 - 64 * MiB); /* less the free tail */
    assert_int_equal(stats(&a).num_grows, 2);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
}

static void test_quota(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p, q, r;
    (void)state;
    fake_init(&f, 1ull << 30, 128 * MiB);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 256, 64 * MiB),
                     0);
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &p), 0);
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &q), 0);
    r = 123;
    assert_int_equal(agile__arena_alloc(&a, 256, S1, &r), AGILE_EQUOTA);
    assert_int_equal(r, 0);
    assert_int_equal(agile__arena_alloc(&a, 2ull << 30, S1, &r), AGILE_ENOMEM); /* > window */
    agile__alloc_stats st = stats(&a);
    assert_int_equal(st.num_ooms, 2);
    assert_int_equal(st.num_grow_failures, 1);
    assert_int_equal(st.reserved_bytes, 128 * MiB);
    /* freed memory serves the next request without the worker */
    assert_int_equal(agile__arena_free(&a, q, 64 * MiB, S1), 0);
    assert_int_equal(agile__arena_alloc(&a, 256, S1, &r), 0);
    assert_int_equal(f.grows, 2);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
}

/* At the quota, entirely free extents too small for a request are traded for a larger one
 * (extents apart from each other: contiguous ones would simply merge). */
static void test_quota_trade(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p, q, r;
    (void)state;
    fake_init(&f, 1ull << 30, 128 * MiB);
    f.gap = 2 * MiB;
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 256, 64 * MiB),
                     0);
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &p), 0);
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &q), 0);
    assert_int_equal(agile__arena_free(&a, p, 64 * MiB, S1), 0);
    assert_int_equal(agile__arena_free(&a, q, 64 * MiB, S1), 0);
    assert_int_equal(agile__arena_alloc(&a, 100 * MiB, S1, &r), 0);
    assert_int_equal(f.shrinks, 2);
    agile__alloc_stats st = stats(&a);
    assert_int_equal(st.reserved_bytes, 100 * MiB);
    assert_int_equal(st.num_shrinks, 2);
    assert_true(st.num_alloc_retries >= 1);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
}

/* Extents leased next to each other form one heap: blocks span them, and empty_cache cuts
 * the free ones out of the middle of a segment. */
static void test_extents_merge(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p[4], big, k;
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 256, 64 * MiB),
                     0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &p[i]), 0);
    agile__alloc_stats st = stats(&a);
    assert_int_equal(st.extents, 4);
    assert_int_equal(st.segments, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(agile__arena_free(&a, p[i], 64 * MiB, S1), 0);
    assert_int_equal(agile__arena_alloc(&a, 200 * MiB, S1, &big), 0); /* spans 4 extents */
    assert_int_equal(big, p[0]);
    assert_int_equal(f.grows, 4);
    assert_int_equal(agile__arena_alloc(&a, 4096, S1, &k), 0); /* in the 4th extent */
    assert_int_equal(k, p[0] + 200 * MiB);
    assert_int_equal(agile__arena_free(&a, big, 200 * MiB, S1), 0);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    /* extents 1-3 lie in the free block before k: they go, the 4th stays */
    assert_int_equal(agile__arena_empty_cache(&a), AGILE_OK);
    assert_int_equal(f.shrinks, 3);
    st = stats(&a);
    assert_int_equal(st.reserved_bytes, 64 * MiB);
    assert_int_equal(st.extents, 1);
    assert_int_equal(st.segments, 1);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    /* k's extent still serves small requests; a new lease joins it */
    assert_int_equal(agile__arena_alloc(&a, 32 * MiB, S1, &big), 0);
    assert_int_equal(f.grows, 4);
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &p[0]), 0);
    assert_int_equal(f.grows, 5);
    assert_int_equal(stats(&a).segments, 1); /* the new extent follows k's */
    assert_int_equal(agile__arena_free(&a, p[0], 64 * MiB, S1), 0);
    assert_int_equal(agile__arena_free(&a, big, 32 * MiB, S1), 0);
    assert_int_equal(agile__arena_free(&a, k, 4096, S1), 0);
    assert_int_equal(agile__arena_empty_cache(&a), AGILE_OK);
    st = stats(&a);
    assert_int_equal(st.reserved_bytes, 0);
    assert_int_equal(st.segments, 0);
    assert_int_equal(f.leased, 0);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
}

static void test_empty_cache(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p[3], keep;
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 256, 64 * MiB),
                     0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(agile__arena_alloc(&a, 60 * MiB, S1, &p[i]), 0);
    assert_int_equal(agile__arena_alloc(&a, 4096, S1, &keep), 0); /* lands in one of them */
    assert_int_equal(f.grows, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(agile__arena_free(&a, p[i], 60 * MiB, S1), 0);
    assert_int_equal(agile__arena_empty_cache(&a), AGILE_OK);
    assert_int_equal(f.shrinks, 2); /* the extent holding `keep` stays */
    agile__alloc_stats st = stats(&a);
    assert_int_equal(st.reserved_bytes, 64 * MiB);
    assert_int_equal(st.segments, 1);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    assert_int_equal(agile__arena_free(&a, keep, 4096, S1), 0);
    assert_int_equal(agile__arena_empty_cache(&a), AGILE_OK);
    assert_int_equal(stats(&a).reserved_bytes, 0);
    assert_int_equal(f.leased, 0);
    /* and the arena grows again afterwards */
    assert_int_equal(agile__arena_alloc(&a, 4096, S1, &keep), 0);
    assert_int_equal(stats(&a).reserved_bytes, 64 * MiB);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
}

/* The stream rules, with events that complete only when the test says so. */
static void test_stream_rules(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p, q, r;
    (void)state;
    fake_init(&f, 1ull << 30, 64 * MiB);
    assert_int_equal(agile__arena_init(&a, &fake_stream_ops, &f, BASE, 1ull << 30, 256, 64 * MiB),
                     0);
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &p), 0);
    fake_submit(&f, S1); /* a kernel on S1 uses p */
    assert_int_equal(agile__arena_free(&a, p, 64 * MiB, S1), 0);
    assert_int_equal(f.ev_records, 0); /* no callback on the free */

    /* S1 has not passed the free: S2 must not get p (and the quota leaves nothing else) */
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S2, &q), AGILE_EQUOTA);
    assert_int_equal(f.ev_records, 1);
    assert_int_equal(agile__arena_alloc(&a, 1 * MiB, S2, &q), AGILE_EQUOTA);
    assert_int_equal(f.ev_records, 1); /* the outstanding event covers the cache: no second */
    /* ... the same stream gets it at once */
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &q), 0);
    assert_int_equal(q, p);
    fake_submit(&f, S1);
    assert_int_equal(agile__arena_free(&a, q, 64 * MiB, S1), 0);
    /* S1 completes the work before the first event only: the block was freed again after it,
     * so it stays S1's */
    pthread_mutex_lock(&f.mu);
    f.completed[S1] = 1;
    pthread_mutex_unlock(&f.mu);
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S2, &q), AGILE_EQUOTA);
    assert_int_equal(f.ev_releases, 1);
    /* S1 passes everything: S2 gets the block */
    fake_complete(&f, S1);
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S2, &q), 0);
    assert_int_equal(q, p);
    assert_int_equal(f.ev_records, f.ev_releases);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    fake_submit(&f, S2);
    assert_int_equal(agile__arena_free(&a, q, 64 * MiB, S2), 0);

    /* with room to grow, S1 gets fresh memory rather than S2's unfinished block */
    f.quota = 1ull << 30;
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &r), 0);
    assert_int_not_equal(r, p);
    assert_int_equal(f.grows, 2);
    /* synchronized: S2's blocks settle without an event */
    agile__arena_synchronized(&a, S2);
    assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &q), 0);
    assert_int_equal(q, p);
    assert_int_equal(f.grows, 2);
    fake_submit(&f, S1);
    assert_int_equal(agile__arena_free(&a, q, 64 * MiB, S1), 0);
    assert_int_equal(agile__arena_free(&a, r, 64 * MiB, S1), 0);
    /* empty_cache leaves S1's unfinished blocks alone */
    assert_int_equal(agile__arena_empty_cache(&a), 0);
    assert_int_equal(f.shrinks, 0);
    assert_int_equal(stats(&a).cached_bytes, 128 * MiB);
    fake_complete(&f, S1);
    assert_int_equal(agile__arena_empty_cache(&a), 0);
    assert_int_equal(f.shrinks, 2);
    assert_int_equal(stats(&a).reserved_bytes, 0);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
    assert_int_equal(f.ev_records, f.ev_releases); /* fini gives back what it held */
}

/* The hot path (same stream, the block comes back) makes no callback, whatever the size. */
static void test_hot_path_no_callbacks(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p, sizes[] = {256, 4096, 64 << 10, 4 * MiB, 100 * MiB};
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_stream_ops, &f, BASE, 1ull << 30, 256, 0), 0);
    for (size_t k = 0; k < AGILE_ARRAY_LEN(sizes); k++) {
        assert_int_equal(agile__arena_alloc(&a, sizes[k], S1, &p), 0); /* may grow */
        assert_int_equal(agile__arena_free(&a, p, sizes[k], S1), 0);
        int grows = f.grows, records = f.ev_records, queries = f.ev_queries;
        for (int i = 0; i < 10000; i++) {
            uint64_t q;
            assert_int_equal(agile__arena_alloc(&a, sizes[k], S1, &q), 0);
            assert_int_equal(q, p);
            fake_submit(&f, S1);
            assert_int_equal(agile__arena_free(&a, q, sizes[k], S1), 0);
        }
        assert_int_equal(f.grows, grows);
        assert_int_equal(f.ev_records, records);
        assert_int_equal(f.ev_queries, queries);
    }
    agile__arena_fini(&a);
}

/* Small blocks: many frees behind one event; a block freed after the event is not covered. */
static void test_stream_epochs(void **state)
{
    agile__arena a;
    fake f;
    uint64_t x, y, z, w;
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_stream_ops, &f, BASE, 1ull << 30, 256, 2 * MiB),
                     0);
    assert_int_equal(agile__arena_alloc(&a, 1 * MiB, S1, &x), 0);
    assert_int_equal(agile__arena_alloc(&a, 1 * MiB, S1, &y), 0);
    fake_submit(&f, S1);
    assert_int_equal(agile__arena_free(&a, x, 1 * MiB + 1, S1), AGILE_EINVAL);
    assert_int_equal(agile__arena_free(&a, x, 1 * MiB, S1), 0);
    /* S2 needs memory: the event is recorded covering x; S2 gets a new lease (all of it) */
    assert_int_equal(agile__arena_alloc(&a, 2 * MiB, S2, &z), 0);
    assert_true(z != x && z != y);
    assert_int_equal(f.ev_records, 1);
    fake_submit(&f, S1);
    assert_int_equal(agile__arena_free(&a, y, 1 * MiB, S1), 0);
    pthread_mutex_lock(&f.mu);
    f.completed[S1] = 1; /* S1 has passed the free of x, not of y */
    pthread_mutex_unlock(&f.mu);
    assert_int_equal(agile__arena_alloc(&a, 1 * MiB, S2, &w), 0);
    assert_int_equal(w, x);
    assert_int_equal(agile__arena_alloc(&a, 1 * MiB, S2, &w), 0);
    assert_true(w != y);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
    assert_int_equal(f.ev_records, f.ev_releases);
}

static void test_free_errors(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p, q;
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 256, 0), 0);
    assert_int_equal(agile__arena_alloc(&a, 1000, S1, &p), 0);
    assert_int_equal(agile__arena_alloc(&a, 3 * MiB, S1, &q), 0);
    assert_int_equal(agile__arena_free(&a, p, 999, S1), AGILE_EINVAL);   /* size mismatch */
    assert_int_equal(agile__arena_free(&a, p, 1024, S1), AGILE_EINVAL);  /* even within class */
    assert_int_equal(agile__arena_free(&a, p + 256, 1000, S1), AGILE_ENOENT); /* interior */
    assert_int_equal(agile__arena_free(&a, BASE - 256, 1000, S1), AGILE_ENOENT);
    assert_int_equal(agile__arena_free(&a, BASE + (1ull << 30), 1000, S1), AGILE_ENOENT);
    assert_int_equal(agile__arena_free(&a, 0, 0, S1), AGILE_ENOENT);
    assert_int_equal(agile__arena_free(&a, p, 1000, S1), AGILE_OK);
    assert_int_equal(agile__arena_free(&a, p, 1000, S1), AGILE_EINVAL); /* double free */
    assert_int_equal(agile__arena_free(&a, q, 3 * MiB, S1), AGILE_OK);
    assert_int_equal(agile__arena_free(&a, q, 3 * MiB, S2), AGILE_EINVAL);
    agile__alloc_stats st = stats(&a);
    assert_int_equal(st.num_free_errors, 8);
    assert_int_equal(st.num_double_frees, 2);
    assert_int_equal(st.num_size_mismatches, 2);
    assert_int_equal(st.num_frees, 2);
    assert_int_equal(st.allocated_bytes, 0);
    /* once settled and merged the address is no block at all */
    agile__arena_synchronized(&a, AGILE_ARENA_ALL_STREAMS);
    assert_int_equal(agile__arena_free(&a, q, 3 * MiB, S1), AGILE_ENOENT);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
}

/* A misbehaving worker or event source is an error return, never a crash or a bad block. */
static void test_worker_faults(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p, q;
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_stream_ops, &f, BASE, 1ull << 30, 256, 0), 0);
    assert_int_equal(agile__arena_alloc(&a, 4096, S1, &p), 0);
    for (int mode = 1; mode <= 3; mode++) {
        f.bad_grow = mode;
        assert_int_equal(agile__arena_alloc(&a, 64 * MiB, S1, &q), AGILE_EPROTO);
        assert_int_equal(q, 0);
    }
    f.bad_grow = 0;
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    /* the too-small extent was taken: the lease is what the worker says it is */
    assert_int_equal(stats(&a).reserved_bytes, f.leased);
    /* events that cannot be recorded: S1's cache stays S1's */
    f.record_fail = true;
    f.quota = f.leased;
    fake_submit(&f, S1);
    assert_int_equal(agile__arena_free(&a, p, 4096, S1), 0);
    assert_int_equal(agile__arena_alloc(&a, 4096, S2, &q), 0); /* from the free extent */
    assert_int_not_equal(q, p);
    assert_int_equal(stats(&a).cached_bytes, 4096);
    assert_int_equal(agile__arena_empty_cache(&a), AGILE_OK); /* tries to record: fails */
    assert_true(stats(&a).num_event_errors > 0);
    assert_int_equal(stats(&a).cached_bytes, 4096);
    agile__arena_synchronized(&a, S1); /* ... until the caller knows better */
    f.record_fail = false;
    /* a failed shrink leaves the extent leased and usable */
    assert_int_equal(agile__arena_free(&a, q, 4096, S2), 0);
    f.shrink_fail = true;
    assert_int_equal(agile__arena_empty_cache(&a), AGILE_ETIMEDOUT);
    agile__alloc_stats st = stats(&a);
    assert_int_equal(st.reserved_bytes, f.leased);
    assert_true(st.reserved_bytes > 0);
    assert_int_equal(st.num_shrinks, 0);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    assert_int_equal(agile__arena_alloc(&a, 4096, S2, &q), 0);
    assert_int_equal(agile__arena_free(&a, q, 4096, S2), 0);
    f.shrink_fail = false;
    assert_int_equal(agile__arena_empty_cache(&a), AGILE_OK);
    assert_int_equal(stats(&a).reserved_bytes, 0);
    assert_int_equal(f.leased, 0);
    agile__arena_fini(&a);
    assert_int_equal(f.ev_records, f.ev_releases);
}

static void test_stats(void **state)
{
    agile__arena a;
    fake f;
    uint64_t p, q;
    (void)state;
    fake_init(&f, 1ull << 30, 1ull << 30);
    assert_int_equal(agile__arena_init(&a, &fake_host_ops, &f, BASE, 1ull << 30, 256, 0), 0);
    assert_int_equal(agile__arena_alloc(&a, 3 * MiB, S1, &p), 0);
    assert_int_equal(agile__arena_alloc(&a, 1 * MiB, S1, &q), 0);
    assert_int_equal(agile__arena_free(&a, p, 3 * MiB, S1), 0);
    agile__alloc_stats st = stats(&a);
    assert_int_equal(st.allocated_bytes, 1 * MiB);
    assert_int_equal(st.allocated_bytes_peak, 4 * MiB);
    assert_int_equal(st.requested_bytes, 1 * MiB);
    assert_int_equal(st.allocated_bytes_total, 4 * MiB);
    assert_int_equal(st.freed_bytes_total, 3 * MiB);
    assert_int_equal(st.reserved_bytes, 64 * MiB);
    assert_int_equal(st.num_allocs, 2);
    assert_int_equal(st.num_frees, 1);
    assert_int_equal(st.allocations, 1);
    assert_int_equal(st.cached_bytes, 3 * MiB);
    assert_int_equal(st.segments, 1);
    agile__arena_reset_peak(&a);
    assert_int_equal(stats(&a).allocated_bytes_peak, 1 * MiB);
    agile__arena_fini(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_args),      cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_size_classes),   cmocka_unit_test(test_split_coalesce),
        cmocka_unit_test(test_grow_only_when_needed), cmocka_unit_test(test_quota),
        cmocka_unit_test(test_quota_trade),    cmocka_unit_test(test_extents_merge),
        cmocka_unit_test(test_empty_cache),
        cmocka_unit_test(test_stream_rules),   cmocka_unit_test(test_stream_epochs),
        cmocka_unit_test(test_hot_path_no_callbacks),
        cmocka_unit_test(test_free_errors),    cmocka_unit_test(test_worker_faults),
        cmocka_unit_test(test_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
