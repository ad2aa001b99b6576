/* module_test.c — the fft module through its ops table, on the host backend: plan handles per
 * tenant, window translation, bounds refusal, stats, tenant teardown. */
#include <complex.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fft.h"

#define W (1ull << 20)

static const agile__module_ops *ops = &agile__fft_module;
static void *mod;
static uint8_t *window;
static agile__module_caller t1, t2;
/* The client maps its window elsewhere: same offsets, another base. */
static const uint64_t client_base = 0x7f1200000000ull;

static int setup(void **state)
{
    agile__module_env env = {AGILE_MODULE_ABI, AGILE_BACKEND_KIND_HOST, NULL, NULL, NULL, NULL,
                             NULL};
    (void)state;
    assert_int_equal(ops->init(&env, &mod), AGILE_OK);
    window = aligned_alloc(W, W);
    memset(window, 0, W);
    t1 = (agile__module_caller){7, 0, {(uint64_t)(uintptr_t)window, W}, NULL};
    t2 = (agile__module_caller){8, 0, {(uint64_t)(uintptr_t)window, W}, NULL};
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ops->fini(mod);
    free(window);
    return 0;
}

static int create(const agile__module_caller *who, const agile__fft_desc *d, uint64_t *h,
                  uint64_t ext[3])
{
    uint8_t payload[256], reply[64];
    agile__wbuf w = {payload, sizeof payload, 0, 0};
    agile__module_reply rep = {0, reply, sizeof reply, 0};
    int rv;
    agile__fft_desc_encode(&w, d);
    rv = ops->ctl(mod, who, AGILE_FFT_OP_PLAN_CREATE, payload, w.len, &rep);
    if (rv == AGILE_OK) {
        agile__rbuf r = {reply, rep.len, 0, 0};
        assert_int_equal(rep.len, 24);
        for (int i = 0; i < 3; i++)
            ext[i] = agile__get_u64(&r);
        *h = rep.handle;
    }
    return rv;
}

static int exec(const agile__module_caller *who, uint64_t h, uint64_t in_off, uint64_t out_off,
                int dir)
{
    uint8_t args[AGILE_FFT_EXEC_ARGS_SIZE];
    agile__wbuf w = {args, sizeof args, 0, 0};
    agile__fft_exec_args a = {h, client_base + in_off, client_base + out_off, dir, 0};
    agile__fft_exec_args_encode(&w, &a);
    assert_int_equal(w.len, AGILE_FFT_EXEC_ARGS_SIZE);
    return ops->exec(mod, who, AGILE_FFT_OP_EXEC, args, w.len);
}

static int destroy(const agile__module_caller *who, uint64_t h)
{
    uint8_t p[8];
    agile__wbuf w = {p, sizeof p, 0, 0};
    agile__put_u64(&w, h);
    return ops->ctl(mod, who, AGILE_FFT_OP_PLAN_DESTROY, p, w.len, NULL);
}

static void test_ops_table(void **state)
{
    agile__module_env env = {AGILE_MODULE_ABI + 1, AGILE_BACKEND_KIND_HOST, NULL, NULL, NULL,
                             NULL, NULL};
    void *m2;
    (void)state;
    assert_string_equal(ops->name, "fft");
    assert_int_equal(ops->abi, AGILE_MODULE_ABI);
    assert_int_equal(ops->abi_size, sizeof(agile__module_ops));
    assert_int_equal(ops->init(&env, &m2), AGILE_EVERSION);
    /* cuda backend without protected memory callbacks: refused cleanly */
    env.abi = AGILE_MODULE_ABI;
    env.backend = AGILE_BACKEND_KIND_CUDA;
    assert_int_not_equal(ops->init(&env, &m2), AGILE_OK);
}

static void test_exec_translated(void **state)
{
    agile__fft_desc d;
    uint64_t n[3] = {16, 0, 0}, h, ext[3];
    double complex *in = (double complex *)(window + 4096),
                   *out = (double complex *)(window + 8192);
    (void)state;
    agile__fft_desc_init_basic(&d, AGILE_FFT_Z2Z, 1, n, 2, 0);
    assert_int_equal(create(&t1, &d, &h, ext), AGILE_OK);
    assert_int_equal(agile__handle_type(h), AGILE_OBJ_PLAN);
    assert_int_equal(ext[0], 2 * 16 * 16);
    assert_int_equal(ext[1], 2 * 16 * 16);
    assert_int_equal(ext[2], 0);
    memset(in, 0, 512);
    in[0] = 1;  /* batch 0: impulse -> all ones */
    in[17] = 1; /* batch 1: shifted impulse -> exp(-2 pi i k / 16) */
    assert_int_equal(exec(&t1, h, 4096, 8192, AGILE_FFT_FORWARD), AGILE_OK);
    for (int k = 0; k < 16; k++) {
        assert_true(cabs(out[k] - 1) < 1e-12);
        assert_true(cabs(out[16 + k] - cexp(-2 * M_PI * I * k / 16)) < 1e-12);
    }
    /* the same client offsets with other high bits land in the same window */
    {
        uint8_t args[AGILE_FFT_EXEC_ARGS_SIZE];
        agile__wbuf w = {args, sizeof args, 0, 0};
        agile__fft_exec_args a = {h, 0xdead00000000ull + 4096, 0x1200000ull + 8192, -1, 0};
        agile__fft_exec_args_encode(&w, &a);
        assert_int_equal(ops->exec(mod, &t1, AGILE_FFT_OP_EXEC, args, w.len), AGILE_OK);
    }
    /* out of window at the end: the output's last byte one past W */
    assert_int_equal(exec(&t1, h, 0, W - 512 + 16, AGILE_FFT_FORWARD), AGILE_EBOUNDS);
    assert_int_equal(exec(&t1, h, 0, W - 512, AGILE_FFT_FORWARD), AGILE_OK);
    assert_int_equal(exec(&t1, h, W - 511, 0, AGILE_FFT_FORWARD), AGILE_EINVAL); /* misaligned */
    assert_int_equal(exec(&t1, h, W - 496, 0, AGILE_FFT_FORWARD), AGILE_EBOUNDS);
    assert_int_equal(exec(&t1, h, 4096, 4096 + 256, AGILE_FFT_FORWARD), AGILE_EINVAL); /* overlap */
    assert_int_equal(exec(&t1, h, 4096, 8192, 2), AGILE_EINVAL); /* direction */
    /* another tenant cannot use, or destroy, t1's plan */
    assert_int_equal(exec(&t2, h, 4096, 8192, AGILE_FFT_FORWARD), AGILE_EHANDLE);
    assert_int_equal(destroy(&t2, h), AGILE_EHANDLE);
    /* malformed args */
    {
        uint8_t args[AGILE_FFT_EXEC_ARGS_SIZE] = {0};
        assert_int_equal(ops->exec(mod, &t1, AGILE_FFT_OP_EXEC, args, sizeof args - 1),
                         AGILE_EINVAL);
        assert_int_equal(ops->exec(mod, &t1, 99, args, sizeof args), AGILE_ENOTSUP);
    }
    /* a bad window is a worker bug, reported as such */
    {
        agile__module_caller bad = t1;
        bad.win.size = W + 1;
        assert_int_equal(exec(&bad, h, 4096, 8192, AGILE_FFT_FORWARD), AGILE_EINTERNAL);
        bad.win.size = W;
        bad.win.worker_base += 16;
        assert_int_equal(exec(&bad, h, 4096, 8192, AGILE_FFT_FORWARD), AGILE_EINTERNAL);
    }
    assert_int_equal(destroy(&t1, h), AGILE_OK);
    assert_int_equal(exec(&t1, h, 4096, 8192, AGILE_FFT_FORWARD), AGILE_EHANDLE);
    assert_int_equal(destroy(&t1, h), AGILE_EHANDLE);
}

static void test_ctl_rejects_and_stats(void **state)
{
    agile__fft_desc d;
    uint64_t n[3] = {32, 0, 0}, h1, h2, ext[3], st[9];
    uint8_t junk[8] = {1, 2, 3}, reply[128];
    agile__module_reply rep = {0, reply, sizeof reply, 0};
    (void)state;
    assert_int_equal(ops->ctl(mod, &t1, AGILE_FFT_OP_PLAN_CREATE, junk, sizeof junk, &rep),
                     AGILE_EINVAL);
    assert_int_equal(ops->ctl(mod, &t1, 77, junk, sizeof junk, &rep), AGILE_ENOTSUP);
    agile__fft_desc_init_basic(&d, AGILE_FFT_C2C, 1, n, 1, 0);
    d.batch = 0;
    assert_int_equal(create(&t1, &d, &h1, ext), AGILE_EINVAL);
    d.batch = 1;
    /* two tenants, one plan object (a cache hit), two handles */
    assert_int_equal(create(&t1, &d, &h1, ext), AGILE_OK);
    assert_int_equal(create(&t2, &d, &h2, ext), AGILE_OK);
    assert_int_not_equal(h1, h2);
    assert_int_equal(ops->ctl(mod, &t1, AGILE_FFT_OP_STATS, NULL, 0, &rep), AGILE_OK);
    assert_int_equal(rep.len, 72);
    {
        agile__rbuf r = {reply, rep.len, 0, 0};
        for (int i = 0; i < 9; i++)
            st[i] = agile__get_u64(&r);
    }
    assert_true(st[0] >= 1);    /* hits */
    assert_int_equal(st[5], 1); /* in use: one shared plan */
    /* tenant teardown drops its handles; the other tenant's plan keeps working */
    ops->tenant_gone(mod, t2.tenant);
    assert_int_equal(destroy(&t2, h2), AGILE_EHANDLE);
    assert_int_equal(exec(&t1, h1, 0, 4096, AGILE_FFT_INVERSE), AGILE_OK);
    ops->tenant_gone(mod, t1.tenant);
    assert_int_equal(exec(&t1, h1, 0, 4096, AGILE_FFT_INVERSE), AGILE_EHANDLE);
    {
        agile__fft_cache_stats cs;
        agile__fft_cache_get_stats(agile__fft_module_cache(mod), &cs);
        assert_int_equal(cs.in_use, 0);
    }
}

/* Execs on one shared plan from two tenants while a third thread destroys and re-creates one
 * tenant's handle and trims the cache: a plan is never destroyed under a running exec (ASan
 * would see the use after free), tenant 7 never fails, tenant 8 fails only with EHANDLE. */
static _Atomic uint64_t h8;
static _Atomic int stop;

typedef struct {
    const agile__module_caller *who;
    uint64_t h, off;
    int fixed, bad;
} runner;

static void *run_execs(void *arg)
{
    runner *r = arg;
    for (int i = 0; i < 3000; i++) {
        uint64_t h = r->fixed ? r->h : atomic_load(&h8);
        int rv = exec(r->who, h, r->off, r->off + 65536, AGILE_FFT_FORWARD);
        if (rv != AGILE_OK && (r->fixed || rv != AGILE_EHANDLE))
            r->bad++;
    }
    return NULL;
}

static void *churn(void *arg)
{
    const agile__fft_desc *d = arg;
    while (!atomic_load(&stop)) {
        uint64_t h, ext[3];
        destroy(&t2, atomic_load(&h8));
        agile__fft_cache_trim(agile__fft_module_cache(mod));
        if (create(&t2, d, &h, ext) != AGILE_OK)
            abort();
        atomic_store(&h8, h);
    }
    return NULL;
}

static void test_concurrent_exec(void **state)
{
    agile__fft_desc d;
    uint64_t n[3] = {256, 0, 0}, h7, h, ext[3];
    pthread_t a, b, c;
    runner r7 = {&t1, 0, 0, 1, 0}, r8 = {&t2, 0, 262144, 0, 0};
    (void)state;
    agile__fft_desc_init_basic(&d, AGILE_FFT_Z2Z, 1, n, 4, 0);
    assert_int_equal(create(&t1, &d, &h7, ext), AGILE_OK);
    /* tenant 8's plan is its own, so destroy + trim really destroys the plan object */
    d.batch = 3;
    assert_int_equal(create(&t2, &d, &h, ext), AGILE_OK);
    atomic_store(&h8, h);
    r7.h = h7;
    atomic_store(&stop, 0);
    pthread_create(&a, NULL, run_execs, &r7);
    pthread_create(&b, NULL, run_execs, &r8);
    pthread_create(&c, NULL, churn, &d);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    atomic_store(&stop, 1);
    pthread_join(c, NULL);
    assert_int_equal(r7.bad, 0);
    assert_int_equal(r8.bad, 0);
    {
        agile__fft_cache_stats st;
        agile__fft_cache_get_stats(agile__fft_module_cache(mod), &st);
        print_message("churn: %llu plan creations, %llu evictions\n",
                      (unsigned long long)st.misses, (unsigned long long)st.evictions);
    }
    ops->tenant_gone(mod, t1.tenant);
    ops->tenant_gone(mod, t2.tenant);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_table),
        cmocka_unit_test(test_exec_translated),
        cmocka_unit_test(test_ctl_rejects_and_stats),
        cmocka_unit_test(test_concurrent_exec),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
