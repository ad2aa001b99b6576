/* cufft_stub_test.c — the cuda backend's own logic against libagile_cufft_stub.so (cuFFT's
 * ABI, no GPU): auto-allocation off, one work area per (tenant, device, stream) from the
 * worker's protected memory and accounted to that tenant, set before every exec together
 * with the stream, grown on demand, freed per tenant; cuFFT errors wrapped; no plan leaks. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fft.h"

struct stub_exec {
    int handle, direction, count;
    void *stream, *area, *in, *out;
};

static struct stub_exec *last;
static void (*stub_config)(size_t work, int fail);
static int (*stub_live_plans)(void);

static uint64_t bytes[8], next_addr = 0x100000;
static int allocs, frees, fail_tenant = -1;

static int alloc_protected(void *ctx, uint32_t tenant, int device, uint64_t size, uint64_t *addr,
                           void **handle)
{
    (void)ctx, (void)device;
    if ((int)tenant == fail_tenant)
        return AGILE_EQUOTA;
    bytes[tenant] += size;
    *addr = next_addr;
    next_addr += 0x100000;
    *handle = (void *)(uintptr_t)(allocs + 1);
    allocs++;
    return AGILE_OK;
}

static void free_protected(void *ctx, uint32_t tenant, int device, void *handle, uint64_t addr,
                           uint64_t size)
{
    (void)ctx, (void)device, (void)handle, (void)addr;
    bytes[tenant] -= size;
    frees++;
}

static agile__fft_backend *open_stub(void)
{
    agile__fft_cufft_cfg cfg = {CUFFT_STUB_PATH, alloc_protected, free_protected, NULL};
    agile__fft_backend *be = NULL;
    void *h;
    assert_int_equal(agile__fft_cufft_open(&cfg, &be), AGILE_OK);
    /* the backend's handle and ours are one instance of the stub */
    h = dlopen(CUFFT_STUB_PATH, RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(h);
    last = dlsym(h, "stub_last");
    *(void **)&stub_config = dlsym(h, "stub_config");
    *(void **)&stub_live_plans = dlsym(h, "stub_live_plans");
    assert_non_null(last);
    assert_non_null(stub_config);
    return be;
}

static agile__fft_bplan *plan(agile__fft_backend *be, uint32_t type, uint64_t n0)
{
    agile__fft_desc d;
    agile__fft_bplan *p = NULL;
    uint64_t n[3] = {n0, 0, 0};
    agile__fft_desc_init_basic(&d, type, 1, n, 2, 0);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    assert_int_equal(be->plan_create(be, &d, 0, &p), AGILE_OK);
    return p;
}

static void test_work_areas(void **state)
{
    agile__fft_backend *be = open_stub();
    agile__fft_bplan *p1, *p2;
    int version = 0, live0 = stub_live_plans(), count;
    void *A = (void *)0xa, *B = (void *)0xb, *area_1A;
    agile__fft_env t1A = {1, 0, A}, t2A = {2, 0, A}, t1B = {1, 0, B}, t3A = {3, 0, A};
    char in[16], out[16];
    (void)state;
    assert_int_equal(agile__fft_cufft_version(be, &version), AGILE_OK);
    assert_int_equal(version, 99999);

    stub_config(4096, 0);
    p1 = plan(be, AGILE_FFT_C2C, 64);
    assert_int_equal(be->work_size(p1), 4096);
    assert_int_equal(stub_live_plans(), live0 + 1);

    assert_int_equal(be->exec(be, p1, &t1A, in, out, AGILE_FFT_FORWARD), AGILE_OK);
    assert_ptr_equal(last->stream, A);
    assert_ptr_equal(last->in, in);
    assert_ptr_equal(last->out, out);
    assert_int_equal(last->direction, -1);
    area_1A = last->area;
    assert_non_null(area_1A);
    assert_int_equal(bytes[1], 4096);
    /* the same plan for another tenant on the same stream: its own area, its own account */
    assert_int_equal(be->exec(be, p1, &t2A, in, out, AGILE_FFT_INVERSE), AGILE_OK);
    assert_ptr_not_equal(last->area, area_1A);
    assert_int_equal(bytes[2], 4096);
    /* the same tenant on another stream: another area (they may run concurrently) */
    assert_int_equal(be->exec(be, p1, &t1B, in, out, AGILE_FFT_FORWARD), AGILE_OK);
    assert_ptr_not_equal(last->area, area_1A);
    assert_ptr_equal(last->stream, B);
    assert_int_equal(bytes[1], 8192);
    /* back to tenant 1, stream A: the area is reused and set again on the shared plan */
    assert_int_equal(be->exec(be, p1, &t1A, in, out, AGILE_FFT_FORWARD), AGILE_OK);
    assert_ptr_equal(last->area, area_1A);
    assert_ptr_equal(last->stream, A);
    assert_int_equal(allocs, 3);

    /* a plan needing more: the (tenant 1, A) area grows, the old one is given back */
    stub_config(10000, 0);
    p2 = plan(be, AGILE_FFT_R2C, 64);
    assert_int_equal(be->exec(be, p2, &t1A, in, out, 0), AGILE_OK);
    assert_int_equal(frees, 1);
    assert_int_equal(bytes[1], 4096 + 10000);
    assert_ptr_not_equal(last->area, area_1A);
    area_1A = last->area;
    /* the smaller plan fits in the grown area */
    assert_int_equal(be->exec(be, p1, &t1A, in, out, AGILE_FFT_FORWARD), AGILE_OK);
    assert_ptr_equal(last->area, area_1A);
    assert_int_equal(allocs, 4);

    /* bad direction and a failing allocation: refused before anything is enqueued */
    count = last->count;
    assert_int_equal(be->exec(be, p1, &t1A, in, out, 0), AGILE_EINVAL);
    fail_tenant = 3;
    assert_int_equal(be->exec(be, p1, &t3A, in, out, AGILE_FFT_FORWARD), AGILE_EQUOTA);
    assert_int_equal(last->count, count);
    fail_tenant = -1;

    /* planning failure: wrapped cuFFT error, nothing left behind */
    stub_config(4096, 1);
    {
        agile__fft_desc d;
        agile__fft_bplan *p = NULL;
        uint64_t n[3] = {8, 0, 0};
        int live = stub_live_plans(), rv;
        agile__fft_desc_init_basic(&d, AGILE_FFT_Z2Z, 1, n, 1, 0);
        assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
        rv = be->plan_create(be, &d, 0, &p);
        assert_int_equal(agile_err_class(rv), AGILE_ECUFFT);
        assert_int_equal(rv & AGILE_ERR_CODE_MASK, 8); /* CUFFT_INVALID_SIZE */
        assert_int_equal(stub_live_plans(), live);
    }
    stub_config(4096, 0);

    /* a tenant's teardown frees its areas only */
    be->release_tenant(be, 1);
    assert_int_equal(bytes[1], 0);
    assert_int_equal(bytes[2], 4096);
    be->plan_destroy(be, p1);
    be->plan_destroy(be, p2);
    assert_int_equal(stub_live_plans(), live0);
    be->close(be); /* frees what is left */
    assert_int_equal(bytes[2], 0);
    assert_int_equal(allocs, frees);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_work_areas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
