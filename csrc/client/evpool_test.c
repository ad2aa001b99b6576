/* evpool_test — the client's CUevent pool against mockcuda (ctest puts it first on
 * LD_LIBRARY_PATH): a record is one cuEventRecord once the pool is warm, events are reused,
 * failures leave nothing behind, the cap holds, threads share a pool. Not a GPU test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "core.h"
#include "cudadrv.h"
#include "evpool.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

static void (*mock_fail)(const char *, int);
static void (*mock_events)(int *, int *, int *);
static void (*mock_busy)(int);
static CUcontext ctx;

static int setup(void **state)
{
    char why[256];
    CUdevice dev;
    void *h;
    (void)state;
    if (agile__cuda_load(why, sizeof why) != AGILE_OK) {
        fprintf(stderr, "cuda: %s (LD_LIBRARY_PATH must hold mockcuda)\n", why);
        return -1;
    }
    h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!h) return -1;
    *(void **)&mock_fail = dlsym(h, "mockcuda_fail");
    *(void **)&mock_events = dlsym(h, "mockcuda_events");
    *(void **)&mock_busy = dlsym(h, "mockcuda_events_busy");
    dlclose(h);
    if (!mock_fail || !mock_events || !mock_busy) {
        fprintf(stderr, "libcuda.so.1 is not mockcuda\n");
        return -1;
    }
    if (agile__cu.cuDeviceGet(&dev, 0) != CUDA_SUCCESS ||
        agile__cu.cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS ||
        agile__cu.cuCtxSetCurrent(ctx) != CUDA_SUCCESS)
        return -1;
    return 0;
}

static int live(void)
{
    int l, c, r;
    mock_events(&l, &c, &r);
    return l;
}

static int records(void)
{
    int l, c, r;
    mock_events(&l, &c, &r);
    return r;
}

static void test_reuse(void **state)
{
    agile__evpool p;
    uint64_t ev[10];
    int l0 = live(), r0 = records();
    (void)state;
    agile__evpool_init(&p);
    /* one at a time: one event, recorded 100 times */
    for (int i = 0; i < 100; i++) {
        uint64_t e;
        assert_int_equal(agile__evpool_record(&p, 0x1234, &e), AGILE_OK);
        assert_int_equal(agile__evpool_query(&p, e), AGILE_OK);
        agile__evpool_release(&p, e);
    }
    assert_int_equal(p.created, 1);
    assert_int_equal(records() - r0, 100);
    /* ten outstanding: ten events, reused by the next ten */
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 10; i++)
            assert_int_equal(agile__evpool_record(&p, (uintptr_t)i, &ev[i]), AGILE_OK);
        for (int i = 0; i < 10; i++)
            for (int j = 0; j < i; j++)
                assert_true(ev[i] != ev[j]);
        for (int i = 0; i < 10; i++)
            agile__evpool_release(&p, ev[i]);
    }
    assert_int_equal(p.created, 10);
    assert_int_equal(live() - l0, 10);
    agile__evpool_fini(&p);
    assert_int_equal(live(), l0);
}

static void test_query_busy(void **state)
{
    agile__evpool p;
    uint64_t e;
    (void)state;
    agile__evpool_init(&p);
    assert_int_equal(agile__evpool_record(&p, 7, &e), AGILE_OK);
    mock_busy(1);
    assert_int_equal(agile__evpool_query(&p, e), AGILE_EBUSY);
    mock_busy(0);
    assert_int_equal(agile__evpool_query(&p, e), AGILE_OK);
    agile__evpool_release(&p, e);
    agile__evpool_fini(&p);
}

static void test_failures(void **state)
{
    agile__evpool p;
    uint64_t e = 0;
    int l0 = live();
    (void)state;
    agile__evpool_init(&p);
    mock_fail("cuEventCreate", 1);
    int rv = agile__evpool_record(&p, 1, &e);
    mock_fail("", 0);
    assert_int_equal(agile_err_class(rv), AGILE_ECUDA);
    assert_int_equal(live(), l0);
    /* a failed record keeps the event in the pool: the next record reuses it */
    mock_fail("cuEventRecord", 1);
    rv = agile__evpool_record(&p, 1, &e);
    mock_fail("", 0);
    assert_int_equal(agile_err_class(rv), AGILE_ECUDA);
    assert_int_equal(p.nfree, 1);
    assert_int_equal(agile__evpool_record(&p, 1, &e), AGILE_OK);
    assert_int_equal(p.created, 1);
    agile__evpool_release(&p, e);
    agile__evpool_fini(&p);
    assert_int_equal(live(), l0);
}

static void test_cap(void **state)
{
    enum { N = AGILE__EVPOOL_CAP + 20 };
    static uint64_t ev[N];
    agile__evpool p;
    int l0 = live();
    (void)state;
    agile__evpool_init(&p);
    for (int i = 0; i < N; i++)
        assert_int_equal(agile__evpool_record(&p, 3, &ev[i]), AGILE_OK);
    for (int i = 0; i < N; i++)
        agile__evpool_release(&p, ev[i]);
    assert_int_equal(p.nfree, AGILE__EVPOOL_CAP);
    assert_int_equal(p.destroyed, 20);
    assert_int_equal(live() - l0, AGILE__EVPOOL_CAP);
    agile__evpool_fini(&p);
    assert_int_equal(live(), l0);
}

static void *worker(void *arg)
{
    agile__evpool *p = arg;
    /* the context is per thread, as PyTorch's threads each make it current */
    if (agile__cu.cuCtxSetCurrent(ctx) != CUDA_SUCCESS) return (void *)1;
    for (int i = 0; i < 5000; i++) {
        uint64_t a, b;
        if (agile__evpool_record(p, 1, &a) != AGILE_OK) return (void *)1;
        if (agile__evpool_record(p, 2, &b) != AGILE_OK) return (void *)1;
        if (a == b || agile__evpool_query(p, a) != AGILE_OK) return (void *)1;
        agile__evpool_release(p, b);
        agile__evpool_release(p, a);
    }
    return NULL;
}

static void test_threads(void **state)
{
    enum { T = 4 };
    agile__evpool p;
    pthread_t t[T];
    int l0 = live();
    (void)state;
    agile__evpool_init(&p);
    for (int i = 0; i < T; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &p), 0);
    for (int i = 0; i < T; i++) {
        void *r;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_null(r);
    }
    /* at most two out per thread at any time */
    assert_true(p.created <= 2 * T);
    agile__evpool_fini(&p);
    assert_int_equal(live(), l0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse),    cmocka_unit_test(test_query_busy),
        cmocka_unit_test(test_failures), cmocka_unit_test(test_cap),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
