/* backend_test.c — FFTW backend semantics (cuFFT's sign and normalisation) and the cuFFT
 * backend's load paths; cuFFT execution itself needs a GPU and runs in scripts/gpu-check. */
#include <complex.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fft.h"

static agile__fft_env env0 = {1, 0, NULL};

static void test_fftw_sign_and_scale(void **state)
{
    agile__fft_backend *be;
    agile__fft_bplan *p;
    agile__fft_desc d;
    uint64_t n[3] = {8, 0, 0};
    double complex x[8], y[8], z[8];
    (void)state;
    assert_int_equal(agile__fft_fftw_open(&be), AGILE_OK);
    assert_string_equal(be->name, "fftw");
    agile__fft_desc_init_basic(&d, AGILE_FFT_Z2Z, 1, n, 1, 0);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    assert_int_equal(be->plan_create(be, &d, 0, &p), AGILE_OK);
    assert_int_equal(be->work_size(p), 0);
    /* x = e_1: forward (sign -1) gives exp(-2 pi i k / 8) */
    memset(x, 0, sizeof x);
    x[1] = 1;
    assert_int_equal(be->exec(be, p, &env0, x, y, AGILE_FFT_FORWARD), AGILE_OK);
    for (int k = 0; k < 8; k++)
        assert_true(cabs(y[k] - cexp(-2 * M_PI * I * k / 8)) < 1e-12);
    /* inverse is unnormalised: round trip = 8 x */
    assert_int_equal(be->exec(be, p, &env0, y, z, AGILE_FFT_INVERSE), AGILE_OK);
    for (int k = 0; k < 8; k++)
        assert_true(cabs(z[k] - 8 * x[k]) < 1e-12);
    assert_int_equal(be->exec(be, p, &env0, y, z, 0), AGILE_EINVAL);
    be->plan_destroy(be, p);
    be->close(be);
}

static void test_fftw_real_inplace(void **state)
{
    agile__fft_backend *be;
    agile__fft_bplan *r2c, *c2r;
    agile__fft_desc d;
    uint64_t n[3] = {3, 6, 0};
    float buf[3 * 8], orig[3 * 8];
    (void)state;
    assert_int_equal(agile__fft_fftw_open(&be), AGILE_OK);
    agile__fft_desc_init_basic(&d, AGILE_FFT_R2C, 2, n, 1, 1);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    assert_int_equal(be->plan_create(be, &d, 0, &r2c), AGILE_OK);
    agile__fft_desc_init_basic(&d, AGILE_FFT_C2R, 2, n, 1, 1);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    assert_int_equal(be->plan_create(be, &d, 0, &c2r), AGILE_OK);
    /* padded rows of 8 floats, 6 used */
    for (int i = 0; i < 24; i++)
        buf[i] = (i % 8) < 6 ? (float)(i * 0.25 - 2) : 0.0f;
    memcpy(orig, buf, sizeof buf);
    assert_int_equal(be->exec(be, r2c, &env0, buf, buf, AGILE_FFT_FORWARD), AGILE_OK);
    /* DC term = sum of inputs */
    {
        float s = 0;
        for (int i = 0; i < 24; i++)
            s += (i % 8) < 6 ? orig[i] : 0;
        assert_true(fabsf(buf[0] - s) < 1e-4f);
    }
    assert_int_equal(be->exec(be, c2r, &env0, buf, buf, AGILE_FFT_INVERSE), AGILE_OK);
    for (int i = 0; i < 24; i++)
        if (i % 8 < 6) assert_true(fabsf(buf[i] - 18 * orig[i]) < 1e-3f);
    be->plan_destroy(be, r2c);
    be->plan_destroy(be, c2r);
    be->close(be);
}

static int fake_alloc(void *ctx, uint32_t tenant, int device, uint64_t size, uint64_t *addr,
                      void **handle)
{
    (void)ctx, (void)tenant, (void)device, (void)size, (void)addr, (void)handle;
    return AGILE_ENOMEM;
}
static void fake_free(void *ctx, uint32_t tenant, int device, void *handle, uint64_t addr,
                      uint64_t size)
{
    (void)ctx, (void)tenant, (void)device, (void)handle, (void)addr, (void)size;
}

static void test_cufft_load_failures(void **state)
{
    agile__fft_backend *be = NULL;
    agile__fft_cufft_cfg cfg = {"/nonexistent/libcufft.so.99", fake_alloc, fake_free, NULL};
    (void)state;
    assert_int_equal(agile__fft_cufft_open(&cfg, &be), AGILE_ENODEV);
    assert_null(be);
    /* a library that loads but is not cuFFT: the missing symbol is reported, not called */
    cfg.lib_path = "libm.so.6";
    assert_int_equal(agile__fft_cufft_open(&cfg, &be), AGILE_ENODEV);
    assert_null(be);
    /* no protected-memory callbacks: refused before loading anything */
    cfg.alloc_protected = NULL;
    assert_int_equal(agile__fft_cufft_open(&cfg, &be), AGILE_EINVAL);
}

static void test_cufft_load_if_present(void **state)
{
    agile__fft_backend *be = NULL;
    agile__fft_cufft_cfg cfg = {getenv("AGILE_TEST_CUFFT"), fake_alloc, fake_free, NULL};
    int version = 0, rv;
    (void)state;
    rv = agile__fft_cufft_open(&cfg, &be);
    if (rv == AGILE_ENODEV) {
        /* no cuFFT on the loader path here: the failure path is what we can check */
        assert_null(be);
        return;
    }
    assert_int_equal(rv, AGILE_OK);
    assert_string_equal(be->name, "cufft");
    assert_int_equal(agile__fft_cufft_version(be, &version), AGILE_OK);
    assert_true(version >= 10000);
    {
        /* Planning needs a GPU; without one it must fail with a wrapped cuFFT error and
         * leave nothing behind, with one it must succeed. */
        agile__fft_desc d;
        agile__fft_bplan *p = NULL;
        uint64_t n[3] = {64, 0, 0};
        agile__fft_desc_init_basic(&d, AGILE_FFT_C2C, 1, n, 4, 0);
        assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
        rv = be->plan_create(be, &d, 0, &p);
        print_message("cuFFT %d: plan_create without a context -> %s\n", version,
                      agile_strerror(rv));
        if (rv == AGILE_OK)
            be->plan_destroy(be, p);
        else
            assert_int_equal(agile_err_class(rv), AGILE_ECUFFT);
    }
    be->close(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fftw_sign_and_scale),
        cmocka_unit_test(test_fftw_real_inplace),
        cmocka_unit_test(test_cufft_load_failures),
        cmocka_unit_test(test_cufft_load_if_present),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
