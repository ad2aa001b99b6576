/* plan_test.c — fft desc codec, validation, extents and bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "fft_testutil.h"

static uint8_t buf[512];

static size_t enc(const agile__fft_desc *d)
{
    agile__wbuf w = {buf, sizeof buf, 0, 0};
    agile__fft_desc_encode(&w, d);
    assert_false(w.overflow);
    assert_int_equal(w.len, AGILE_FFT_DESC_WIRE_SIZE);
    return w.len;
}

static void basic(agile__fft_desc *d, uint32_t type, uint32_t rank, uint64_t n0, uint64_t n1,
                  uint64_t n2, uint64_t batch, int inplace)
{
    uint64_t n[3] = {n0, n1, n2};
    agile__fft_desc_init_basic(d, type, rank, n, batch, inplace);
}

static void test_roundtrip(void **state)
{
    (void)state;
    for (int i = 0; i < 2000; i++) {
        agile__fft_desc d, back;
        tu_random_desc(&d, 8);
        assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
        enc(&d);
        assert_int_equal(agile__fft_desc_decode(buf, AGILE_FFT_DESC_WIRE_SIZE, &back), AGILE_OK);
        assert_true(agile__fft_desc_equal(&d, &back));
        assert_int_equal(agile__fft_desc_hash(&d), agile__fft_desc_hash(&back));
        /* validate is idempotent: the normalised form is a fixed point */
        assert_int_equal(agile__fft_desc_validate(&back), AGILE_OK);
        assert_true(agile__fft_desc_equal(&d, &back));
    }
}

static void test_wire_layout(void **state)
{
    agile__fft_desc d;
    (void)state;
    basic(&d, AGILE_FFT_Z2Z, 2, 0x1234, 7, 0, 3, 0);
    enc(&d);
    assert_int_equal(buf[0], 1);    /* major, little-endian */
    assert_int_equal(buf[4], 0x69); /* type */
    assert_int_equal(buf[8], 2);    /* rank */
    assert_int_equal(buf[16], 0x34);
    assert_int_equal(buf[17], 0x12);
    assert_int_equal(buf[40], 3); /* batch */
}

#define expect_reject(d) expect_reject_at(d, __LINE__)
static void expect_reject_at(agile__fft_desc *d, int line)
{
    agile__fft_desc back;
    enc(d);
    if (agile__fft_desc_decode(buf, AGILE_FFT_DESC_WIRE_SIZE, &back) != AGILE_EINVAL)
        fail_msg("desc of line %d was not rejected", line);
}

static void test_rejects(void **state)
{
    agile__fft_desc d, back;
    (void)state;
    basic(&d, 0x2b, 1, 8, 0, 0, 1, 0); /* not a cufftType */
    expect_reject(&d);
    basic(&d, AGILE_FFT_C2C, 0, 8, 0, 0, 1, 0);
    expect_reject(&d);
    basic(&d, AGILE_FFT_C2C, 4, 8, 8, 8, 1, 0);
    expect_reject(&d);
    basic(&d, AGILE_FFT_C2C, 2, 8, 0, 0, 1, 0); /* n = 0 */
    expect_reject(&d);
    basic(&d, AGILE_FFT_C2C, 1, AGILE_FFT_MAX_N + 1, 0, 0, 1, 0);
    expect_reject(&d);
    basic(&d, AGILE_FFT_C2C, 1, 8, 0, 0, 0, 0); /* batch = 0 */
    expect_reject(&d);
    basic(&d, AGILE_FFT_C2C, 1, 8, 0, 0, AGILE_FFT_MAX_BATCH + 1, 0);
    expect_reject(&d);
    basic(&d, AGILE_FFT_C2C, 1, 8, 0, 0, 1, 0);
    d.flags = 0x100; /* unknown flag */
    expect_reject(&d);
    /* basic layouts whose extent passes the 1 PiB sanity bound */
    basic(&d, AGILE_FFT_Z2Z, 3, 1u << 20, 1u << 20, 1u << 20, 1, 0);
    expect_reject(&d);
    basic(&d, AGILE_FFT_Z2Z, 3, AGILE_FFT_MAX_N, AGILE_FFT_MAX_N, AGILE_FFT_MAX_N,
          AGILE_FFT_MAX_BATCH, 0); /* products overflow 64 bits */
    expect_reject(&d);

    /* advanced layouts */
    basic(&d, AGILE_FFT_C2C, 2, 4, 4, 0, 2, 0);
    d.flags |= AGILE_FFT_F_ADVANCED;
    d.inembed[1] = d.onembed[1] = 4;
    d.istride = d.ostride = 1;
    d.idist = d.odist = 16;
    enc(&d);
    assert_int_equal(agile__fft_desc_decode(buf, AGILE_FFT_DESC_WIRE_SIZE, &back), AGILE_OK);
    d.istride = 0;
    expect_reject(&d);
    d.istride = 1, d.odist = 0;
    expect_reject(&d);
    d.odist = 16, d.onembed[1] = 3; /* row shorter than the data */
    expect_reject(&d);
    d.onembed[1] = AGILE_FFT_MAX_STRIDE + 1;
    expect_reject(&d);
    d.onembed[1] = 4, d.ostride = AGILE_FFT_MAX_STRIDE;
    d.odist = AGILE_FFT_MAX_STRIDE, d.batch = 4096; /* extent > 1 PiB */
    expect_reject(&d);
    /* stride * linear index overflows 64 bits even though each field is in range */
    basic(&d, AGILE_FFT_Z2Z, 3, 1u << 16, 1u << 16, 1u << 16, 1, 0);
    d.flags |= AGILE_FFT_F_ADVANCED;
    d.inembed[1] = d.inembed[2] = d.onembed[1] = d.onembed[2] = AGILE_FFT_MAX_STRIDE;
    d.istride = d.ostride = d.idist = d.odist = AGILE_FFT_MAX_STRIDE;
    expect_reject(&d);
}

static void test_truncated_and_versions(void **state)
{
    agile__fft_desc d, back;
    uint8_t big[AGILE_FFT_DESC_WIRE_SIZE + 8];
    (void)state;
    basic(&d, AGILE_FFT_R2C, 3, 4, 5, 6, 2, 0);
    enc(&d);
    for (size_t len = 0; len < AGILE_FFT_DESC_WIRE_SIZE; len++)
        assert_int_equal(agile__fft_desc_decode(buf, len, &back), AGILE_EINVAL);
    memcpy(big, buf, AGILE_FFT_DESC_WIRE_SIZE);
    memset(big + AGILE_FFT_DESC_WIRE_SIZE, 0xee, 8);
    /* same minor: trailing bytes are malformed */
    assert_int_equal(agile__fft_desc_decode(big, sizeof big, &back), AGILE_EINVAL);
    /* newer minor: appended fields are ignored */
    big[2] = AGILE_FFT_DESC_MINOR + 1;
    assert_int_equal(agile__fft_desc_decode(big, sizeof big, &back), AGILE_OK);
    /* another major is refused */
    buf[0] = 2;
    assert_int_equal(agile__fft_desc_decode(buf, AGILE_FFT_DESC_WIRE_SIZE, &back), AGILE_EINVAL);
}

static void test_basic_normalisation(void **state)
{
    agile__fft_desc d, e;
    uint64_t ib, ob;
    (void)state;
    /* One embed alone means basic (cuFFT): the given stride is ignored. */
    basic(&d, AGILE_FFT_C2C, 1, 8, 0, 0, 3, 0);
    d.flags |= AGILE_FFT_F_IN_EMBED;
    d.istride = 7;
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    basic(&e, AGILE_FFT_C2C, 1, 8, 0, 0, 3, 0);
    assert_int_equal(agile__fft_desc_validate(&e), AGILE_OK);
    assert_true(agile__fft_desc_equal(&d, &e));
    assert_int_equal(d.flags & AGILE_FFT_F_ADVANCED, 0);
    assert_int_equal(d.istride, 1);
    assert_int_equal(d.idist, 8);

    /* R2C out of place: real n, complex n/2+1 */
    basic(&d, AGILE_FFT_R2C, 1, 8, 0, 0, 3, 0);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    assert_int_equal(agile__fft_extent(&d, &ib, &ob), AGILE_OK);
    assert_int_equal(ib, 3 * 8 * 4);
    assert_int_equal(ob, 3 * 5 * 8);
    /* in place: the real side is padded to 2*(n/2+1) */
    basic(&d, AGILE_FFT_D2Z, 2, 3, 7, 0, 2, 1);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    assert_int_equal(d.inembed[1], 8);
    assert_int_equal(d.idist, 24);
    assert_int_equal(d.odist, 12);
    assert_int_equal(agile__fft_extent(&d, &ib, &ob), AGILE_OK);
    assert_int_equal(ib, (24 + 2 * 8 + 6 + 1) * 8);
    assert_int_equal(ob, (12 + 2 * 4 + 3 + 1) * 16);
    assert_true(ib <= ob);
    /* C2R: complex in, real out */
    basic(&d, AGILE_FFT_C2R, 3, 2, 3, 9, 1, 0);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    assert_int_equal(agile__fft_extent(&d, &ib, &ob), AGILE_OK);
    assert_int_equal(ib, 2 * 3 * 5 * 8);
    assert_int_equal(ob, 2 * 3 * 9 * 4);
    assert_string_equal(agile__fft_type_name(AGILE_FFT_Z2D), "Z2D");
}

static void test_inplace_consistency(void **state)
{
    agile__fft_desc d;
    (void)state;
    basic(&d, AGILE_FFT_C2C, 2, 4, 4, 0, 2, 1);
    d.flags |= AGILE_FFT_F_ADVANCED;
    d.inembed[1] = d.onembed[1] = 5;
    d.istride = d.ostride = 1;
    d.idist = d.odist = 20;
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    d.onembed[1] = 6; /* in and out rows differ: not the same storage */
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_EINVAL);
    d.onembed[1] = 5, d.odist = 21;
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_EINVAL);

    basic(&d, AGILE_FFT_R2C, 2, 4, 6, 0, 2, 1);
    d.flags |= AGILE_FFT_F_ADVANCED;
    d.inembed[1] = 8, d.onembed[1] = 4;
    d.istride = d.ostride = 1;
    d.idist = 32, d.odist = 16;
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    d.inembed[1] = 6; /* unpadded real rows */
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_EINVAL);
    d.inembed[1] = 8, d.idist = 31;
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_EINVAL);
    d.idist = 32, d.istride = d.ostride = 2, d.idist = 64, d.odist = 32;
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_EINVAL); /* strided in place */
}

/* ---- extents: brute force over every touched element ------------------------------------ */

static void max_cb(uint64_t idx, void *arg)
{
    uint64_t *m = arg;
    if (idx > *m) *m = idx;
}

static void test_extent_bruteforce(void **state)
{
    (void)state;
    for (int i = 0; i < 3000; i++) {
        agile__fft_desc d;
        agile__fft_side in, out;
        uint64_t ib, ob, mi = 0, mo = 0;
        tu_random_desc(&d, 7);
        assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
        assert_int_equal(agile__fft_extent(&d, &ib, &ob), AGILE_OK);
        agile__fft_sides(&d, &in, &out);
        tu_side_foreach(&in, max_cb, &mi);
        tu_side_foreach(&out, max_cb, &mo);
        assert_int_equal(ib, (mi + 1) * in.elem);
        assert_int_equal(ob, (mo + 1) * out.elem);
    }
}

/* ---- bounds -------------------------------------------------------------------------------- */

static void test_bounds(void **state)
{
    agile__fft_desc d;
    uint64_t ib, ob;
    const uint64_t base = 1ull << 30, W = 1ull << 20;
    (void)state;
    basic(&d, AGILE_FFT_C2C, 1, 64, 0, 0, 4, 0);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    assert_int_equal(agile__fft_extent(&d, &ib, &ob), AGILE_OK);
    assert_int_equal(ib, 64 * 4 * 8);
    /* input ends exactly at the window's end: fine; one element or one byte more: refused */
    assert_int_equal(agile__fft_check_bounds(&d, base + W - ib, base, base, W), AGILE_OK);
    assert_int_equal(agile__fft_check_bounds(&d, base + W - ib + 8, base, base, W), AGILE_EBOUNDS);
    assert_int_equal(agile__fft_check_bounds(&d, base + W - ib + 1, base, base, W), AGILE_EBOUNDS);
    assert_int_equal(agile__fft_check_bounds(&d, base, base + W - ob, base, W), AGILE_OK);
    assert_int_equal(agile__fft_check_bounds(&d, base, base + W - ob + 1, base, W), AGILE_EBOUNDS);
    assert_int_equal(agile__fft_check_bounds(&d, base - 8, base + ib, base, W), AGILE_EBOUNDS);
    assert_int_equal(agile__fft_check_bounds(&d, base, base + W, base, W), AGILE_EBOUNDS);
    /* wrap-around: addresses near 2^64 must not pass by overflowing */
    assert_int_equal(agile__fft_check_bounds(&d, UINT64_MAX - 16, base, base, W), AGILE_EBOUNDS);
    assert_int_equal(agile__fft_check_bounds(&d, base, UINT64_MAX - 16, base, W), AGILE_EBOUNDS);
    /* a window at the very top of the address space */
    assert_int_equal(agile__fft_check_bounds(&d, UINT64_MAX - W + 1, UINT64_MAX - W + 1 + ib,
                                             UINT64_MAX - W + 1, W),
                     AGILE_OK);
    assert_int_equal(
        agile__fft_check_bounds(&d, UINT64_MAX - ib + 2, UINT64_MAX - W + 1, UINT64_MAX - W + 1, W),
        AGILE_EBOUNDS);
    /* window smaller than the extent */
    assert_int_equal(agile__fft_check_bounds(&d, base, base, base, ib - 1), AGILE_EBOUNDS);
    /* out-of-place on overlapping buffers */
    assert_int_equal(agile__fft_check_bounds(&d, base, base, base, W), AGILE_EINVAL);
    assert_int_equal(agile__fft_check_bounds(&d, base, base + ib - 8, base, W), AGILE_EINVAL);
    assert_int_equal(agile__fft_check_bounds(&d, base + ob - 8, base, base, W), AGILE_EINVAL);
    assert_int_equal(agile__fft_check_bounds(&d, base + ib, base, base, W), AGILE_OK);
    /* in place: in must equal out */
    basic(&d, AGILE_FFT_R2C, 1, 64, 0, 0, 4, 1);
    assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
    assert_int_equal(agile__fft_check_bounds(&d, base, base, base, W), AGILE_OK);
    assert_int_equal(agile__fft_check_bounds(&d, base, base + 8, base, W), AGILE_EINVAL);
    /* an unvalidated in-place desc with inconsistent layouts is refused by the check too */
    d.onembed[0] = 33, d.odist = 40; /* idist 66 != 2 * 40 */
    assert_int_equal(agile__fft_check_bounds(&d, base, base, base, W), AGILE_EBOUNDS);
    /* an unvalidated desc whose extent overflows: refused, not wrapped */
    basic(&d, AGILE_FFT_Z2Z, 1, 8, 0, 0, 2, 0);
    d.istride = d.ostride = 1;
    d.idist = UINT64_MAX / 2;
    d.odist = 8;
    assert_int_equal(agile__fft_check_bounds(&d, base, base + W / 2, base, W), AGILE_EBOUNDS);
    d.idist = 8, d.istride = 0; /* stride 0 is never valid */
    assert_int_equal(agile__fft_check_bounds(&d, base, base + W / 2, base, W), AGILE_EBOUNDS);
}

static void test_bounds_random(void **state)
{
    (void)state;
    for (int i = 0; i < 2000; i++) {
        agile__fft_desc d;
        uint64_t ib, ob, base = tu_range(0, 1ull << 40) * 64, W = 1ull << 16;
        uint64_t in, out;
        tu_random_desc(&d, 8);
        assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
        assert_int_equal(agile__fft_extent(&d, &ib, &ob), AGILE_OK);
        if (ib + ob > W) continue;
        if (d.flags & AGILE_FFT_F_INPLACE) {
            uint64_t m = AGILE_MAX(ib, ob);
            in = out = base + W - m;
            assert_int_equal(agile__fft_check_bounds(&d, in, out, base, W), AGILE_OK);
            assert_int_equal(agile__fft_check_bounds(&d, in + 1, out + 1, base, W), AGILE_EBOUNDS);
            assert_int_equal(agile__fft_check_bounds(&d, base - 1, base - 1, base, W),
                             AGILE_EBOUNDS);
        } else {
            in = base;
            out = base + W - ob;
            assert_int_equal(agile__fft_check_bounds(&d, in, out, base, W), AGILE_OK);
            assert_int_equal(agile__fft_check_bounds(&d, in, out + 1, base, W), AGILE_EBOUNDS);
            assert_int_equal(agile__fft_check_bounds(&d, base + W - ib + 1, base, base, W),
                             AGILE_EBOUNDS);
        }
    }
}

/* ---- the FFTW backend touches nothing outside the extent --------------------------------- */

typedef struct {
    uint8_t *mark;
    uint32_t elem;
} markarg;

static void mark_cb(uint64_t idx, void *arg)
{
    markarg *m = arg;
    memset(m->mark + idx * m->elem, 1, m->elem);
}

/* Map `bytes` so that they end (or start) exactly at a PROT_NONE page: an access one byte past
 * the extent faults even inside uninstrumented FFTW, where ASan cannot see. */
static uint8_t *guarded(size_t bytes, int at_end, void **map, size_t *maplen)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), body = (bytes + pg - 1) / pg * pg;
    uint8_t *m;
    *maplen = body + 2 * pg;
    m = mmap(NULL, *maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m, pg, PROT_NONE), 0);
    assert_int_equal(mprotect(m + pg + body, pg, PROT_NONE), 0);
    *map = m;
    return at_end ? m + pg + body - bytes : m + pg;
}

static void test_fftw_exact_extent(void **state)
{
    agile__fft_backend *be;
    (void)state;
    assert_int_equal(agile__fft_fftw_open(&be), AGILE_OK);
    for (int i = 0; i < 600; i++) {
        agile__fft_desc d;
        agile__fft_side in, out;
        agile__fft_bplan *p;
        agile__fft_env env = {1, 0, NULL};
        uint64_t ib, ob, both;
        int inplace, at_end = i & 1;
        uint8_t *ibuf, *obuf, *omark, *imark, *heap_in, *heap_out;
        void *imap, *omap = NULL;
        size_t ilen, olen = 0;
        markarg ma;
        tu_random_desc(&d, 6);
        assert_int_equal(agile__fft_desc_validate(&d), AGILE_OK);
        assert_int_equal(agile__fft_extent(&d, &ib, &ob), AGILE_OK);
        agile__fft_sides(&d, &in, &out);
        inplace = (d.flags & AGILE_FFT_F_INPLACE) != 0;
        both = AGILE_MAX(ib, ob);
        assert_int_equal(be->plan_create(be, &d, 0, &p), AGILE_OK);

        /* 1. exactly-sized heap buffers (ASan builds see instrumented accesses) */
        heap_in = malloc(inplace ? both : ib);
        heap_out = inplace ? heap_in : malloc(ob);
        memset(heap_in, 0, inplace ? both : ib);
        if (!inplace) memset(heap_out, 0, ob);
        assert_int_equal(be->exec(be, p, &env, heap_in, heap_out, AGILE_FFT_FORWARD), AGILE_OK);
        free(heap_in);
        if (!inplace) free(heap_out);

        /* 2. guard pages at the end (or start) of each extent, sentinel everywhere else */
        ibuf = guarded(inplace ? both : ib, at_end, &imap, &ilen);
        obuf = inplace ? ibuf : guarded(ob, at_end, &omap, &olen);
        memset(ibuf, 0xa5, inplace ? both : ib);
        if (!inplace) memset(obuf, 0xa5, ob);
        omark = calloc(1, inplace ? both : ob);
        imark = calloc(1, inplace ? both : ib);
        ma.mark = omark, ma.elem = out.elem;
        tu_side_foreach(&out, mark_cb, &ma);
        ma.mark = inplace ? omark : imark, ma.elem = in.elem;
        tu_side_foreach(&in, mark_cb, &ma);
        assert_int_equal(be->exec(be, p, &env, ibuf, obuf, AGILE_FFT_INVERSE), AGILE_OK);
        /* bytes outside the output layout (and the input layout, which C2R may clobber)
         * keep their sentinel */
        for (uint64_t b = 0; b < (inplace ? both : ob); b++)
            if (!omark[b]) assert_int_equal(obuf[b], 0xa5);
        if (!inplace)
            for (uint64_t b = 0; b < ib; b++)
                if (!imark[b]) assert_int_equal(ibuf[b], 0xa5);
        free(omark);
        free(imark);
        munmap(imap, ilen);
        if (omap) munmap(omap, olen);
        be->plan_destroy(be, p);
    }
    be->close(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_wire_layout),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_truncated_and_versions),
        cmocka_unit_test(test_basic_normalisation),
        cmocka_unit_test(test_inplace_consistency),
        cmocka_unit_test(test_extent_bruteforce),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_bounds_random),
        cmocka_unit_test(test_fftw_exact_extent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
