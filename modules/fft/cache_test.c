/* cache_test.c — the plan cache: hits, LRU eviction order, held plans survive, byte bound,
 * stats, concurrent use. A fake backend records creations and destructions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fft.h"

typedef struct fake_plan {
    uint64_t id, work;
} fake_plan;

static int creates, destroys, fail_next;
static uint64_t destroyed[64];
static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;

static int fake_create(agile__fft_backend *b, const agile__fft_desc *d, int device,
                       agile__fft_bplan **out)
{
    fake_plan *p;
    (void)b;
    (void)device;
    if (fail_next) {
        fail_next = 0;
        return AGILE_ENOTSUP;
    }
    p = malloc(sizeof *p);
    p->id = d->n[0];
    p->work = d->n[0] * 100; /* work area grows with n: exercises the byte bound */
    pthread_mutex_lock(&fake_mu);
    creates++;
    pthread_mutex_unlock(&fake_mu);
    *out = (agile__fft_bplan *)p;
    return AGILE_OK;
}

static void fake_destroy(agile__fft_backend *b, agile__fft_bplan *bp)
{
    fake_plan *p = (fake_plan *)bp;
    (void)b;
    pthread_mutex_lock(&fake_mu);
    if (destroys < 64) destroyed[destroys] = p->id;
    destroys++;
    pthread_mutex_unlock(&fake_mu);
    free(p);
}

static uint64_t fake_work(const agile__fft_bplan *bp)
{
    return ((const fake_plan *)bp)->work;
}

static agile__fft_backend fake = {
    .name = "fake",
    .kind = AGILE_BACKEND_KIND_HOST,
    .plan_create = fake_create,
    .plan_destroy = fake_destroy,
    .work_size = fake_work,
};

static int reset(void **state)
{
    (void)state;
    creates = destroys = fail_next = 0;
    memset(destroyed, 0, sizeof destroyed);
    return 0;
}

static agile__fft_desc desc_n(uint64_t n)
{
    agile__fft_desc d;
    uint64_t dims[3] = {n, 0, 0};
    agile__fft_desc_init_basic(&d, AGILE_FFT_C2C, 1, dims, 1, 0);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    return d;
}

static agile__fft_centry *hold(agile__fft_cache *c, uint64_t n, int device)
{
    agile__fft_desc d = desc_n(n);
    agile__fft_centry *e = NULL;
    assert_int_equal(agile__fft_cache_hold(c, &d, device, &e), AGILE_OK);
    assert_non_null(e);
    return e;
}

static void test_hits_and_keys(void **state)
{
    agile__fft_cache c;
    agile__fft_cache_stats st;
    agile__fft_centry *a, *b, *x, *y;
    agile__fft_desc d;
    (void)state;
    assert_int_equal(agile__fft_cache_init(&c, &fake, 8, 1u << 30), AGILE_OK);
    a = hold(&c, 16, 0);
    b = hold(&c, 16, 0);
    assert_ptr_equal(a, b); /* same key: one plan object */
    x = hold(&c, 16, 1);    /* other device: another plan */
    assert_ptr_not_equal(a, x);
    d = desc_n(16);
    d.type = AGILE_FFT_Z2Z; /* other type: another plan */
    assert_int_equal(agile__fft_cache_hold(&c, &d, 0, &y), AGILE_OK);
    assert_ptr_not_equal(a, y);
    assert_int_equal(agile__fft_centry_device(x), 1);
    assert_int_equal(agile__fft_centry_desc(y)->type, AGILE_FFT_Z2Z);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 3);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.in_use, 3);
    assert_int_equal(st.work_bytes, 3 * 1600);
    agile__fft_cache_rele(&c, a);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.in_use, 3); /* b still holds it */
    agile__fft_cache_rele(&c, b);
    agile__fft_cache_rele(&c, x);
    agile__fft_cache_rele(&c, y);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.entries, 3); /* idle plans stay cached */
    assert_int_equal(destroys, 0);
    a = hold(&c, 16, 0); /* an idle plan is a hit too */
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(creates, 3);
    agile__fft_cache_rele(&c, a);
    agile__fft_cache_fini(&c);
    assert_int_equal(destroys, 3);
}

static void test_lru_order(void **state)
{
    agile__fft_cache c;
    agile__fft_cache_stats st;
    (void)state;
    assert_int_equal(agile__fft_cache_init(&c, &fake, 3, 1u << 30), AGILE_OK);
    for (uint64_t n = 1; n <= 3; n++)
        agile__fft_cache_rele(&c, hold(&c, n, 0));
    /* touch 1: LRU order is now 2, 3, 1 */
    agile__fft_cache_rele(&c, hold(&c, 1, 0));
    agile__fft_cache_rele(&c, hold(&c, 4, 0)); /* evicts 2 */
    assert_int_equal(destroys, 1);
    assert_int_equal(destroyed[0], 2);
    agile__fft_cache_rele(&c, hold(&c, 5, 0)); /* evicts 3 */
    assert_int_equal(destroyed[1], 3);
    agile__fft_cache_rele(&c, hold(&c, 1, 0)); /* still cached */
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.evictions, 2);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 5);
    agile__fft_cache_fini(&c);
}

static void test_in_use_not_evicted(void **state)
{
    agile__fft_cache c;
    agile__fft_cache_stats st;
    agile__fft_centry *held[4];
    (void)state;
    assert_int_equal(agile__fft_cache_init(&c, &fake, 2, 1u << 30), AGILE_OK);
    for (int i = 0; i < 4; i++)
        held[i] = hold(&c, (uint64_t)i + 10, 0);
    /* over the bound, but every plan is held: nothing may be destroyed */
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.entries, 4);
    assert_int_equal(destroys, 0);
    /* the plan objects are still usable */
    for (int i = 0; i < 4; i++)
        assert_int_equal(((fake_plan *)agile__fft_centry_plan(held[i]))->id, (uint64_t)i + 10);
    agile__fft_cache_rele(&c, held[2]); /* idle + over the bound: goes at once */
    assert_int_equal(destroys, 1);
    assert_int_equal(destroyed[0], 12);
    agile__fft_cache_rele(&c, held[0]);
    assert_int_equal(destroys, 2);
    agile__fft_cache_rele(&c, held[1]); /* back within the bound: kept */
    agile__fft_cache_rele(&c, held[3]);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(destroys, 2);
    agile__fft_cache_trim(&c);
    assert_int_equal(destroys, 4);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.entries, 0);
    agile__fft_cache_fini(&c);
}

static void test_byte_bound_and_failures(void **state)
{
    agile__fft_cache c;
    agile__fft_cache_stats st;
    agile__fft_centry *e;
    agile__fft_desc d = desc_n(7);
    (void)state;
    /* 1000 bytes of work area: 400 + 300 + 200 fit; a 600 pushes out the two oldest */
    assert_int_equal(agile__fft_cache_init(&c, &fake, 100, 1000), AGILE_OK);
    agile__fft_cache_rele(&c, hold(&c, 4, 0));
    agile__fft_cache_rele(&c, hold(&c, 3, 0));
    agile__fft_cache_rele(&c, hold(&c, 2, 0));
    assert_int_equal(destroys, 0);
    e = hold(&c, 6, 0);
    assert_int_equal(destroys, 2);
    assert_int_equal(destroyed[0], 4);
    assert_int_equal(destroyed[1], 3);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.work_bytes, 800);
    assert_int_equal(st.evictions, 2);
    /* a held plan larger than the whole bound is kept while held, dropped when released */
    agile__fft_cache_rele(&c, e);
    e = hold(&c, 11, 0);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.work_bytes, 1100); /* everything idle went; the held one stays */
    agile__fft_cache_rele(&c, e);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.entries, 0);
    fail_next = 1;
    assert_int_equal(agile__fft_cache_hold(&c, &d, 0, &e), AGILE_ENOTSUP);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.create_failures, 1);
    agile__fft_cache_fini(&c);
}

typedef struct {
    agile__fft_cache *c;
    unsigned seed;
} targ;

static void *worker(void *arg)
{
    targ *t = arg;
    unsigned s = t->seed;
    for (int i = 0; i < 20000; i++) {
        agile__fft_desc d;
        agile__fft_centry *e;
        s = s * 1103515245u + 12345u;
        d = desc_n(1 + (s >> 16) % 12);
        if (agile__fft_cache_hold(t->c, &d, 0, &e) != AGILE_OK) abort();
        if (((fake_plan *)agile__fft_centry_plan(e))->id != d.n[0]) abort();
        agile__fft_cache_rele(t->c, e);
    }
    return NULL;
}

static void test_threads(void **state)
{
    agile__fft_cache c;
    agile__fft_cache_stats st;
    pthread_t th[4];
    targ args[4];
    (void)state;
    assert_int_equal(agile__fft_cache_init(&c, &fake, 5, 1u << 30), AGILE_OK);
    for (int i = 0; i < 4; i++) {
        args[i].c = &c;
        args[i].seed = (unsigned)i * 7919u + 1;
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    agile__fft_cache_get_stats(&c, &st);
    assert_int_equal(st.hits + st.misses, 80000);
    assert_int_equal(st.in_use, 0);
    assert_true(st.entries <= 5);
    assert_int_equal((uint64_t)creates, st.misses);
    agile__fft_cache_fini(&c);
    assert_int_equal(creates, destroys);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_hits_and_keys, reset),
        cmocka_unit_test_setup(test_lru_order, reset),
        cmocka_unit_test_setup(test_in_use_not_evicted, reset),
        cmocka_unit_test_setup(test_byte_bound_and_failures, reset),
        cmocka_unit_test_setup(test_threads, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
