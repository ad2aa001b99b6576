/* alloc_model_test — random operation sequences checked against a reference model, and the
 * fragmentation bound over a long mixed run.
 *
 * The model keeps, per alignment unit of the window, the live block that owns it and the
 * stream and stream position of its last free. Streams are counters (alloc_fake.h): work is
 * submitted, completes when the test says so. The arena must never hand out a unit that is
 * live, nor a unit freed on another stream before that stream has passed the free; its stats
 * must match the model's sums. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "alloc.h"
#include "alloc_fake.h"
#include "core.h"

#define MiB (1ull << 20)
#define BASE (1ull << 40)
#define WINDOW (256ull << 20)
#define ALIGN 256ull
#define UNITS (WINDOW / ALIGN)
#define NLIVE 512
#define NSTREAMS 3

static uint32_t owner[UNITS];   /* live block id + 1, 0 = not live */
static uint8_t free_strm[UNITS]; /* stream of the last free, 0 = settled/never */
static uint64_t free_pos[UNITS];

typedef struct {
    uint64_t addr, size;
    uintptr_t stream;
} live_blk;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Log-uniform 1 B .. 2^maxlog B. */
static uint64_t log_size(uint64_t *s, unsigned maxlog)
{
    unsigned l = (unsigned)(rnd(s) % maxlog);
    return (1ull << l) + rnd(s) % (1ull << l);
}

static uint64_t nunits(uint64_t size)
{
    return size ? (size + ALIGN - 1) / ALIGN : 1;
}

static void model_run(const agile__arena_ops *ops, uint64_t seed, long steps)
{
    agile__arena a;
    fake f;
    static live_blk lv[NLIVE];
    uint64_t live_req = 0, nlive = 0, rng = seed;
    long ooms = 0, allocs = 0, cross = 0;
    memset(owner, 0, sizeof(owner));
    memset(free_strm, 0, sizeof(free_strm));
    memset(lv, 0, sizeof(lv));
    fake_init(&f, WINDOW, 96 * MiB);
    assert_int_equal(agile__arena_init(&a, ops, &f, BASE, WINDOW, ALIGN, 8 * MiB), 0);
    for (long step = 0; step < steps; step++) {
        uint64_t r = rnd(&rng) % 100;
        int k = (int)(rnd(&rng) % NLIVE);
        uintptr_t s = 1 + rnd(&rng) % NSTREAMS;
        if (r < 45 && !lv[k].addr) {
            uint64_t sz = rnd(&rng) % 8 ? log_size(&rng, 17) : log_size(&rng, 24);
            uint64_t addr;
            int rv = agile__arena_alloc(&a, sz, s, &addr);
            if (rv != AGILE_OK) {
                assert_true(rv == AGILE_EQUOTA || rv == AGILE_ENOMEM);
                assert_int_equal(addr, 0);
                ooms++;
                continue;
            }
            allocs++;
            assert_int_equal(addr % ALIGN, 0);
            assert_true(addr >= BASE && addr - BASE + sz <= WINDOW);
            uint64_t u0 = (addr - BASE) / ALIGN;
            for (uint64_t u = u0; u < u0 + nunits(sz); u++) {
                if (owner[u])
                    fail_msg("step %ld: unit %llu handed out twice", step,
                             (unsigned long long)u);
                if (ops->event_record && free_strm[u] && free_strm[u] != s) {
                    cross++;
                    if (f.completed[free_strm[u]] < free_pos[u])
                        fail_msg("step %ld: unit %llu freed on stream %u at %llu reused on "
                                 "stream %u, stream only at %llu",
                                 step, (unsigned long long)u, free_strm[u],
                                 (unsigned long long)free_pos[u], (unsigned)s,
                                 (unsigned long long)f.completed[free_strm[u]]);
                }
                owner[u] = (uint32_t)k + 1;
                free_strm[u] = 0;
            }
            lv[k] = (live_blk){addr, sz, s};
            live_req += sz;
            nlive++;
            fake_submit(&f, s); /* a kernel uses it */
        } else if (r < 90 && lv[k].addr) {
            /* mostly freed on the allocation stream, sometimes on another (record_stream) */
            uintptr_t fs = rnd(&rng) % 10 ? lv[k].stream : s;
            if (rnd(&rng) % 50 == 0) { /* an error on the way: must change nothing */
                assert_int_equal(agile__arena_free(&a, lv[k].addr, lv[k].size + 1, fs),
                                 AGILE_EINVAL);
            }
            assert_int_equal(agile__arena_free(&a, lv[k].addr, lv[k].size, fs), AGILE_OK);
            uint64_t u0 = (lv[k].addr - BASE) / ALIGN;
            for (uint64_t u = u0; u < u0 + nunits(lv[k].size); u++) {
                assert_int_equal(owner[u], (uint32_t)k + 1);
                owner[u] = 0;
                free_strm[u] = (uint8_t)fs;
                free_pos[u] = f.submitted[fs];
            }
            if (rnd(&rng) % 20 == 0) { /* double free: EINVAL while cached, ENOENT once merged */
                int rv = agile__arena_free(&a, lv[k].addr, lv[k].size, fs);
                assert_true(rv == AGILE_EINVAL || rv == AGILE_ENOENT);
            }
            live_req -= lv[k].size;
            nlive--;
            lv[k].addr = 0;
        } else if (r < 97) {
            /* a stream makes progress, part or all of the way */
            pthread_mutex_lock(&f.mu);
            uint64_t behind = f.submitted[s] - f.completed[s];
            f.completed[s] += behind ? rnd(&rng) % (behind + 1) : 0;
            pthread_mutex_unlock(&f.mu);
        } else if (r < 98) {
            fake_complete(&f, s);
            agile__arena_synchronized(&a, s);
        } else if (r < 99) {
            assert_int_equal(agile__arena_empty_cache(&a), AGILE_OK);
        } else {
            agile__alloc_stats st;
            agile__arena_stats(&a, &st);
            assert_int_equal(st.requested_bytes, live_req);
            assert_int_equal(st.allocations, nlive);
            assert_true(st.reserved_bytes <= 96 * MiB);
            assert_int_equal(st.reserved_bytes, f.leased);
            if (step % 64 == 0)
                assert_int_equal(agile__arena_check(&a), AGILE_OK);
        }
    }
    for (int k = 0; k < NLIVE; k++)
        if (lv[k].addr)
            assert_int_equal(agile__arena_free(&a, lv[k].addr, lv[k].size, lv[k].stream), 0);
    for (uintptr_t s = 1; s <= NSTREAMS; s++)
        fake_complete(&f, s);
    assert_int_equal(agile__arena_empty_cache(&a), AGILE_OK);
    agile__alloc_stats st;
    agile__arena_stats(&a, &st);
    printf("  %s seed %llu: %ld allocs, %ld refused, %ld cross-stream unit reuses, %llu grows, "
           "%llu shrinks, %llu events\n",
           ops->event_record ? "streams" : "host", (unsigned long long)seed, allocs, ooms,
           cross, (unsigned long long)st.num_grows, (unsigned long long)st.num_shrinks,
           (unsigned long long)st.num_events_recorded);
    assert_int_equal(st.allocations, 0);
    assert_int_equal(st.reserved_bytes, 0);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
    assert_int_equal(f.ev_records, f.ev_releases);
    assert_true(allocs > steps / 10);
}

static void test_model_streams(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 6; seed++)
        model_run(&fake_stream_ops, seed * 0x2545F4914F6CDD1Dull, 200000);
}

static void test_model_host(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 3; seed++)
        model_run(&fake_host_ops, seed * 0x9E3779B97F4A7C15ull, 200000);
}

/* Fragmentation: a long run of mixed sizes (many small, some large, a few huge) around a
 * steady live set. The lease must stay within a fixed factor of the peak in use. */
static void frag_run(const agile__arena_ops *ops, int nstreams)
{
    agile__arena a;
    fake f;
    enum { N = 2048 };
    static live_blk lv[N];
    uint64_t rng = 0xC0FFEE, in_use = 0, peak = 0;
    long steps = 2000000;
    memset(lv, 0, sizeof(lv));
    fake_init(&f, 1ull << 36, 1ull << 36);
    f.all_done = true;
    assert_int_equal(agile__arena_init(&a, ops, &f, 1ull << 36, 1ull << 36, 512, 64 * MiB), 0);
    for (long i = 0; i < steps; i++) {
        int k = (int)(rnd(&rng) % N);
        uintptr_t s = 1 + rnd(&rng) % (uint64_t)nstreams;
        if (lv[k].addr) {
            assert_int_equal(agile__arena_free(&a, lv[k].addr, lv[k].size, lv[k].stream), 0);
            in_use -= lv[k].size;
            lv[k].addr = 0;
        }
        uint64_t r = rnd(&rng) % 1000, sz;
        if (r < 800)
            sz = log_size(&rng, 16); /* up to 64 KiB */
        else if (r < 995)
            sz = log_size(&rng, 23); /* up to 8 MiB */
        else
            sz = 16 * MiB + rnd(&rng) % (112 * MiB); /* 16 .. 128 MiB */
        assert_int_equal(agile__arena_alloc(&a, sz, s, &lv[k].addr), 0);
        lv[k].size = sz;
        lv[k].stream = s;
        in_use += sz;
        peak = AGILE_MAX(peak, in_use);
    }
    agile__alloc_stats st;
    agile__arena_stats(&a, &st);
    double ratio = (double)st.reserved_bytes_peak / (double)peak;
    printf("  %d stream(s): %ld ops, peak in use %llu MiB (allocated %llu MiB), peak reserved "
           "%llu MiB (%.2fx), now in use %llu MiB reserved %llu MiB, grows %llu, retries %llu\n",
           nstreams, steps, (unsigned long long)(peak >> 20),
           (unsigned long long)(st.allocated_bytes_peak >> 20),
           (unsigned long long)(st.reserved_bytes_peak >> 20), ratio,
           (unsigned long long)(in_use >> 20), (unsigned long long)(st.reserved_bytes >> 20),
           (unsigned long long)st.num_grows, (unsigned long long)st.num_alloc_retries);
    /* the bound: 1.5x the peak requested plus one 128 MiB extent per stream */
    assert_true(st.reserved_bytes_peak <= peak + peak / 2 + (uint64_t)nstreams * 128 * MiB);
    assert_int_equal(agile__arena_check(&a), AGILE_OK);
    agile__arena_fini(&a);
}

static void test_fragmentation_host(void **state)
{
    (void)state;
    frag_run(&fake_host_ops, 1);
}

static void test_fragmentation_streams(void **state)
{
    (void)state;
    frag_run(&fake_stream_ops, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_streams),
        cmocka_unit_test(test_model_host),
        cmocka_unit_test(test_fragmentation_host),
        cmocka_unit_test(test_fragmentation_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
