/* guard_test.c — unit tests of the guard: fences, offsets, strict mode, rejection,
 * the verifier against hand-broken outputs, SHA-256 and the compile cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"
#include "guard.h"
#include "ptx.h"

#define HDR ".version 8.7\n.target sm_90\n.address_size 64\n\n"

static const char *k_global =
    HDR ".visible .entry k(.param .u64 k_param_0)\n{\n\t.reg .b32 %r<4>;\n\t.reg .b64 %rd<4>;\n"
        "\tld.param.u64 %rd1, [k_param_0];\n"
        "\tld.global.u32 %r1, [%rd1];\n"
        "\tld.global.u32 %r2, [%rd1+8];\n"
        "\tst.global.u32 [%rd1+-8], %r1;\n"
        "\tst.global.u32 [%rd1+2097152], %r2;\n"
        "\tret;\n}\n";

static const char *k_generic =
    HDR ".visible .entry k(.param .u64 k_param_0)\n{\n\t.reg .b32 %r<4>;\n\t.reg .b64 %rd<4>;\n"
        "\t.reg .pred %p<2>;\n"
        "\tld.param.u64 %rd1, [k_param_0];\n"
        "\tsetp.eq.u64 %p1, %rd1, 0;\n"
        "\t@%p1 ld.u32 %r1, [%rd1];\n"
        "\tatom.add.u32 %r2, [%rd1+4], 1;\n"
        "\tld.shared.u32 %r3, [%rd1];\n"
        "\tret;\n}\n";

static char *mutate(const char *p, const char *from, const char *to);

static char *guard(const char *src, bool strict, unsigned bits, uint64_t gap, int *rvp, char *err)
{
    agile_guard_opts o;
    agile_guard_result res;
    char *out;
    agile_guard_opts_init(&o);
    o.strict = strict;
    o.window_bits = bits;
    if (gap) o.guard_gap = gap;
    *rvp = agile_guard_ptx(src, strlen(src), &o, &res);
    if (err) snprintf(err, 320, "%s", res.err);
    out = res.ptx;
    res.ptx = NULL;
    agile_guard_result_fini(&res);
    return out;
}

static int verify(const char *p, unsigned bits, uint64_t gap, char *err)
{
    agile_guard_vopts v = {bits, gap, NULL, 0};
    char e[300];
    return agile_guard_verify(p, strlen(p), &v, err ? err : e, 300);
}

typedef struct mutation {
    const char *from, *to;
} mutation;

/* Each mutation of the guarded output p (the first `from` replaced by `to`) must be refused
 * by the verifier. */
static void expect_refused(const char *p, const mutation *m, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        char err[300];
        char *q = mutate(p, m[i].from, m[i].to);
        if (q == NULL) fail_msg("%s mutation %zu: pattern not found", what, i);
        if (verify(q, 0, 0, err) != AGILE_EGUARD)
            fail_msg("%s mutation %zu accepted:\n%s", what, i, q);
        free(q);
    }
}

static void test_global_fence(void **state)
{
    int rv;
    char *p = guard(k_global, false, 0, 0, &rv, NULL);
    (void)state;
    assert_int_equal(rv, AGILE_OK);
    assert_non_null(strstr(p, ".param .u64 __agile_mask, .param .u64 __agile_base"));
    assert_non_null(strstr(p, "ld.param.u64 %agile_mask, [__agile_mask];"));
    assert_non_null(strstr(
        p, "and.b64 %agile_t0, %rd1, %agile_m4;\n\tor.b64 %agile_a0, %agile_t0, %agile_base;\n"
           "\tld.global.u32 %r1, [%agile_a0];"));
    /* the 4-byte accesses' mask clears the low two bits too, computed once at entry */
    assert_non_null(strstr(p, "and.b64 %agile_m4, %agile_mask, -4;"));
    /* a small positive offset stays (the gap covers it) */
    assert_non_null(strstr(p, "ld.global.u32 %r2, [%agile_a1+8];"));
    /* negative and large offsets are folded before the fence */
    assert_non_null(
        strstr(p, "add.s64 %agile_x2, %rd1, -8;\n\tand.b64 %agile_t2, %agile_x2, %agile_m4;"));
    assert_non_null(strstr(p, "add.s64 %agile_x3, %rd1, 2097152;"));
    assert_int_equal(verify(p, 0, 0, NULL), AGILE_OK);
    /* explicit global accesses only: no shared memory to zero */
    assert_null(strstr(p, "bar.sync"));
    free(p);
    /* a smaller gap folds what the default keeps */
    p = guard(k_global, false, 0, 4096, &rv, NULL);
    assert_non_null(strstr(p, "[%agile_a1+8]"));
    free(p);
    p = guard(k_global, false, 0, 260, &rv, NULL);
    assert_non_null(strstr(p, "add.s64 %agile_x1, %rd1, 8;"));
    assert_int_equal(verify(p, 0, 260, NULL), AGILE_OK);
    free(p);
}

static void test_generic_fence(void **state)
{
    int rv;
    char *p = guard(k_generic, false, 0, 0, &rv, NULL);
    (void)state;
    assert_int_equal(rv, AGILE_OK);
    /* global side fenced; shared side clamped into the CTA's allocation; others aligned */
    assert_non_null(strstr(
        p, "isspacep.global %agile_p0, %rd1;\n\tisspacep.shared %agile_q0, %rd1;\n"
           "\tcvta.to.shared.u64 %agile_y0, %rd1;\n\tcvt.u32.u64 %agile_u0, %agile_y0;\n"
           "\tmin.u32 %agile_u0, %agile_u0, %agile_l4;\n\tand.b32 %agile_u0, %agile_u0, -4;\n"
           "\tcvt.u64.u32 %agile_y0, %agile_u0;\n\tcvta.shared.u64 %agile_y0, %agile_y0;\n"
           "\tand.b64 %agile_g0, %rd1, -4;\n"
           "\tselp.b64 %agile_g0, %agile_y0, %agile_g0, %agile_q0;\n"
           "\tand.b64 %agile_t0, %rd1, %agile_m4;\n"
           "\tor.b64 %agile_t0, %agile_t0, %agile_base;\n"
           "\tselp.b64 %agile_a0, %agile_t0, %agile_g0, %agile_p0;\n\t@%p1 ld.u32 %r1, "
           "[%agile_a0];"));
    {
        static const mutation m[] = {
            {"\tmin.u32 %agile_u0, %agile_u0, %agile_l4;\n", ""},
            {"isspacep.shared %agile_q0, %rd1;", "isspacep.local %agile_q0, %rd1;"},
            {"cvta.to.shared.u64 %agile_y0, %rd1;", "cvta.to.shared.u64 %agile_y0, %rd2;"},
            {"selp.b64 %agile_g0, %agile_y0, %agile_g0, %agile_q0;",
             "selp.b64 %agile_g0, %agile_g0, %agile_y0, %agile_q0;"},
            {"min.u32 %agile_u0, %agile_u0, %agile_l4;", "min.u32 %agile_u0, %agile_u0, %agile_l2;"},
            {"\tcvta.shared.u64 %agile_y0, %agile_y0;\n",
             "\tcvta.shared.u64 %agile_y0, %agile_y0;\n\tadd.s64 %agile_y0, %agile_y0, 8;\n"},
        };
        expect_refused(p, m, AGILE_ARRAY_LEN(m), "generic");
    }
    /* generic + offset: the offset is part of the tested address */
    assert_non_null(
        strstr(p, "add.s64 %agile_x1, %rd1, 4;\n\tisspacep.global %agile_p1, %agile_x1;"));
    assert_non_null(strstr(p, "atom.add.u32 %r2, [%agile_a1], 1;"));
    /* explicit shared space: confined to the CTA's allocation, aligned */
    assert_non_null(strstr(p, "cvt.u32.u64 %agile_u2, %rd1;\n\tmin.u32 %agile_u2, %agile_u2, "
                              "%agile_l4;\n\tand.b32 %agile_u2, %agile_u2, -4;\n\t"
                              "ld.shared.u32 %r3, [%agile_u2];"));
    assert_non_null(strstr(p, "mov.u32 %agile_sh, %aggr_smem_size;\n\tsub.u32 %agile_l4, "
                              "%agile_sh, 4;"));
    /* it may read shared memory: the entry zeroes it first (through the same clamp) */
    assert_non_null(strstr(p, "mov.u32 %agile_ze, %reserved_smem_offset_begin;"));
    assert_non_null(strstr(p, "st.shared.v4.b32 [%agile_zu], {%agile_zz, %agile_zz, %agile_zz, "
                              "%agile_zz};"));
    assert_non_null(strstr(p, "__agile_zd:\n\tbar.sync 0;\n"));
    assert_true(strstr(p, "bar.sync 0;") < strstr(p, "ld.param.u64 %rd1, [k_param_0];"));
    {
        char *q = mutate(p, "\tmin.u32 %agile_zu, %agile_zc, %agile_l16;\n", "");
        assert_int_equal(verify(q, 0, 0, NULL), AGILE_EGUARD);
        free(q);
    }
    assert_int_equal(verify(p, 0, 0, NULL), AGILE_OK);
    free(p);
}

static void test_window_bits(void **state)
{
    int rv;
    char *p = guard(k_global, false, 32, 0, &rv, NULL);
    (void)state;
    assert_int_equal(rv, AGILE_OK);
    assert_non_null(strstr(p, "and.b64 %agile_t0, %rd1, 0xfffffffc;"));
    assert_int_equal(verify(p, 32, 0, NULL), AGILE_OK);
    /* a verifier that expects a smaller window refuses the wider mask */
    assert_int_equal(verify(p, 20, 0, NULL), AGILE_EGUARD);
    assert_int_equal(verify(p, 0, 0, NULL), AGILE_EGUARD);
    free(p);
}

/* Every fenced access is aligned to its width: the mask clears the low bits, an offset
 * that would break the alignment is folded into the address, the generic side is aligned,
 * bulk sizes are multiples of 16, a generic mbarrier runs only on shared memory. */
static void test_alignment(void **state)
{
    static const char *src =
        HDR ".visible .entry k(.param .u64 k_param_0)\n{\n\t.reg .b32 %r<4>;\n\t.reg .b64 "
            "%rd<4>;\n\t.reg .f32 %f<5>;\n\t.reg .pred %p<2>;\n"
            "\tld.param.u64 %rd1, [k_param_0];\n"
            "\tld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd1+4];\n"
            "\tld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd1+32];\n"
            "\tst.v2.f32 [%rd1], {%f1, %f2};\n"
            "\tatom.global.add.u64 %rd2, [%rd1], 1;\n"
            "\tcp.async.cg.shared.global [%r1], [%rd1], 16;\n"
            "\tcp.async.bulk.global.shared::cta.bulk_group [%rd1], [%r2], %r3;\n"
            "\tsetp.eq.u32 %p1, %r1, 0;\n"
            "\t@%p1 mbarrier.init.b64 [%rd1+8], %r1;\n"
            "\tret;\n}\n";
    int rv;
    char *p = guard(src, false, 0, 0, &rv, NULL), *q;
    (void)state;
    assert_int_equal(rv, AGILE_OK);
    /* +4 would misalign the 16-byte access: folded in; +32 keeps it */
    assert_non_null(strstr(p, "add.s64 %agile_x0, %rd1, 4;\n\tand.b64 %agile_t0, %agile_x0, "
                              "%agile_m16;"));
    assert_non_null(strstr(p, "[%agile_a1+32]"));
    assert_non_null(strstr(p, "and.b64 %agile_g2, %rd1, -8;"));
    assert_non_null(strstr(p, "and.b64 %agile_t3, %rd1, %agile_m8;"));
    /* cp.async: the shared side confined and aligned (index 4), the global side fenced */
    assert_non_null(strstr(p, "min.u32 %agile_u4, %r1, %agile_l16;\n\tand.b32 %agile_u4, "
                              "%agile_u4, -16;"));
    assert_non_null(strstr(p, "and.b64 %agile_t5, %rd1, %agile_m16;"));
    assert_non_null(strstr(p, "and.b32 %agile_s6, %agile_s6, -16;"));
    assert_non_null(strstr(p, "isspacep.shared %agile_p7, %agile_g7;\n\t@!%p1 setp.ne.u32 "
                              "%agile_p7, 0, 0;\n\t@%agile_p7 mbarrier.init.b64 [%agile_g7], %r1;"));
    assert_int_equal(verify(p, 0, 0, NULL), AGILE_OK);
    /* the verifier refuses each alignment broken by hand */
    static const mutation m[] = {
        {"%agile_x0, %agile_m16;", "%agile_x0, %agile_m8;"},
        {"[%agile_a1+32]", "[%agile_a1+36]"},
        {"and.b32 %agile_s6, %agile_s6, -16;", "and.b32 %agile_s6, %agile_s6, -8;"},
        {"\tand.b32 %agile_s6, %agile_s6, -16;\n", ""},
        {"@%agile_p7 mbarrier", "@!%agile_p7 mbarrier"},
        {"isspacep.shared %agile_p7", "isspacep.global %agile_p7"},
        {"and.b64 %agile_g7, %agile_x7, -8;", "and.b64 %agile_g7, %agile_x7, -4;"},
        {"@!%p1 setp.ne.u32 %agile_p7, 0, 0;", "@!%p1 setp.ne.u32 %agile_p7, 0, 1;"},
        /* the shared side of cp.async: misaligned, unclamped, clamped for a smaller width */
        {"and.b32 %agile_u4, %agile_u4, -16;", "and.b32 %agile_u4, %agile_u4, -8;"},
        {"\tmin.u32 %agile_u4, %r1, %agile_l16;\n", ""},
        {"min.u32 %agile_u4, %r1, %agile_l16;", "min.u32 %agile_u4, %r1, %agile_l8;"},
        {"sub.u32 %agile_l16, %agile_sh, 16;", "sub.u32 %agile_l16, %agile_sh, 8;"},
        {"mov.u32 %agile_sh, %aggr_smem_size;", "mov.u32 %agile_sh, %total_smem_size;"},
        {"[%agile_u4], [%agile_a5]", "[%r1], [%agile_a5]"},
        {"and.b64 %agile_m16, %agile_mask, -16;", "and.b64 %agile_m16, %agile_mask, -8;"},
    };
    expect_refused(p, m, AGILE_ARRAY_LEN(m), "alignment");
    free(p);
    /* immediate window masks clear the low bits too */
    p = guard(src, false, 24, 0, &rv, NULL);
    assert_int_equal(rv, AGILE_OK);
    assert_non_null(strstr(p, "and.b64 %agile_t0, %agile_x0, 0xfffff0;"));
    assert_int_equal(verify(p, 24, 0, NULL), AGILE_OK);
    q = mutate(p, "%agile_x0, 0xfffff0;", "%agile_x0, 0xfffff8;");
    assert_int_equal(verify(q, 24, 0, NULL), AGILE_EGUARD);
    free(q);
    free(p);
}

/* Explicit shared accesses stay inside the CTA's shared allocation (issue 13): a sized
 * variable named in bounds is left alone, everything else is clamped below
 * %aggr_smem_size - width and aligned; PTX before 8.1 (no %aggr_smem_size) is refused. */
static void test_shared(void **state)
{
    static const char *body =
        ".visible .entry k(.param .u32 k_param_0)\n{\n\t.reg .b32 %r<4>;\n"
        "\t.shared .align 16 .b8 buf[256];\n\tld.param.u32 %r1, [k_param_0];\n"
        "\tst.shared.u32 [buf+252], %r1;\n"      /* inside buf: unchanged */
        "\tst.shared.u32 [buf+256], %r1;\n"      /* past buf: clamped */
        "\tst.shared.v4.u32 [%r1+-4], {%r1, %r1, %r1, %r1};\n"
        "\tatom.shared.add.u32 %r2, [1048576], 1;\n"
        "\tret;\n}\n";
    char src[1024], err[320];
    int rv;
    char *p;
    (void)state;
    snprintf(src, sizeof(src), ".version 8.7\n.target sm_90\n.address_size 64\n\n%s", body);
    p = guard(src, false, 0, 0, &rv, NULL);
    assert_int_equal(rv, AGILE_OK);
    assert_non_null(strstr(p, "\tst.shared.u32 [buf+252], %r1;"));
    assert_non_null(strstr(p, "mov.u32 %agile_u0, buf;\n\tadd.u32 %agile_u0, %agile_u0, 256;\n\t"
                              "min.u32 %agile_u0, %agile_u0, %agile_l4;"));
    assert_non_null(strstr(p, "add.u32 %agile_u1, %r1, -4;\n\tmin.u32 %agile_u1, %agile_u1, "
                              "%agile_l16;\n\tand.b32 %agile_u1, %agile_u1, -16;"));
    assert_non_null(strstr(p, "mov.u32 %agile_u2, 1048576;"));
    assert_int_equal(verify(p, 0, 0, NULL), AGILE_OK);
    /* the verifier refuses a shared access put back past the variable or unconfined */
    char *q = mutate(p, "[buf+252]", "[buf+256]");
    assert_int_equal(verify(q, 0, 0, NULL), AGILE_EGUARD);
    free(q);
    q = mutate(p, "atom.shared.add.u32 %r2, [%agile_u2], 1;", "atom.shared.add.u32 %r2, [%r1], 1;");
    assert_non_null(q);
    assert_int_equal(verify(q, 0, 0, NULL), AGILE_EGUARD);
    free(q);
    free(p);
    snprintf(src, sizeof(src), ".version 8.0\n.target sm_90\n.address_size 64\n\n%s", body);
    p = guard(src, false, 0, 0, &rv, err);
    assert_null(p);
    assert_int_equal(rv, AGILE_EREJECT);
    assert_non_null(strstr(err, "need .version 8.1"));
}

/* Explicit local accesses stay below the end of the function's frame (its one sized
 * .local variable), aligned; a named access inside a variable is left alone. */
static void test_local(void **state)
{
    static const char *src =
        HDR ".visible .entry k(.param .u32 k_param_0)\n{\n"
            "\t.local .align 16 .b8 __local_depot0[64];\n\t.reg .b32 %r<4>;\n\t.reg .b64 "
            "%SPL, %rd<3>;\n\tmov.u64 %SPL, __local_depot0;\n\tld.param.u32 %r1, [k_param_0];\n"
            "\tst.local.u32 [__local_depot0+60], %r1;\n"
            "\tmul.wide.u32 %rd1, %r1, 4;\n\tadd.s64 %rd2, %SPL, %rd1;\n"
            "\tst.local.u32 [%rd2+1048576], %r1;\n"
            "\tld.local.v4.u32 {%r1, %r2, %r3, %r1}, [%rd2];\n"
            "\tret;\n}\n";
    static const char *two =
        HDR ".visible .entry k(.param .u64 k_param_0)\n{\n"
            "\t.local .align 8 .b8 a[16];\n\t.local .align 8 .b8 b[16];\n\t.reg .b64 %rd<3>;\n"
            "\tld.param.u64 %rd1, [k_param_0];\n\tst.local.u64 [%rd1], %rd1;\n\tret;\n}\n";
    int rv;
    char err[320];
    char *p = guard(src, false, 0, 0, &rv, err);
    (void)state;
    assert_int_equal(rv, AGILE_OK);
    assert_non_null(strstr(p, "\t.local .align 16 .b8 __local_depot0[64];\n\tmov.u64 %agile_fr, "
                              "__local_depot0;\n\tadd.u64 %agile_h4, %agile_fr, 60;\n\t"
                              "add.u64 %agile_h16, %agile_fr, 48;"));
    assert_non_null(strstr(p, "\tst.local.u32 [__local_depot0+60], %r1;"));
    /* the frame is zeroed at entry (16-byte stores: .align 16, 64 bytes), before any tenant
     * instruction */
    assert_non_null(strstr(p, "add.u64 %agile_fe, %agile_fr, 64;"));
    assert_non_null(strstr(p, "min.u64 %agile_fw, %agile_fz, %agile_h16;\n\tand.b64 %agile_fw, "
                              "%agile_fw, -16;\n\tst.local.v4.b32 [%agile_fw], {%agile_fv, "));
    assert_true(strstr(p, "__agile_fd:") < strstr(p, "mov.u64 %SPL, __local_depot0;"));
    assert_non_null(strstr(p, "add.s64 %agile_o0, %rd2, 1048576;\n\tmin.u64 %agile_o0, %agile_o0, "
                              "%agile_h4;\n\tand.b64 %agile_o0, %agile_o0, -4;"));
    assert_non_null(strstr(p, "min.u64 %agile_o1, %rd2, %agile_h16;\n\tand.b64 %agile_o1, "
                              "%agile_o1, -16;\n\tld.local.v4.u32"));
    assert_int_equal(verify(p, 0, 0, NULL), AGILE_OK);
    static const mutation m[] = {
        {"\tmin.u64 %agile_o1, %rd2, %agile_h16;\n", ""},
        {"min.u64 %agile_o1, %rd2, %agile_h16;", "min.u64 %agile_o1, %rd2, %agile_h4;"},
        {"and.b64 %agile_o1, %agile_o1, -16;", "and.b64 %agile_o1, %agile_o1, -4;"},
        {"add.u64 %agile_h16, %agile_fr, 48;", "add.u64 %agile_h16, %agile_fr, 64;"},
        {"[__local_depot0+60]", "[__local_depot0+64]"},
        {"[%agile_o1]", "[%rd2]"},
        {"\n\tmin.u64 %agile_fw, %agile_fz, %agile_h16;", ""},
    };
    expect_refused(p, m, AGILE_ARRAY_LEN(m), "local");
    free(p);
    p = guard(two, false, 0, 0, &rv, err);
    assert_null(p);
    assert_int_equal(rv, AGILE_EREJECT);
    assert_non_null(strstr(err, "exactly one sized .local variable"));
}

/* call __assertfail and trap become a report in the violation record and an exit: the
 * kernel runs guarded (issue 12.10) and can no longer fault the shared context. */
static void test_device_assert(void **state)
{
    static const char *src =
        HDR ".extern .func __assertfail(.param .b64 a0, .param .b64 a1, .param .b32 a2, "
            ".param .b64 a3, .param .b64 a4) .noreturn;\n"
            ".func f(.param .b64 p)\n{\n\t.reg .b64 %rd<2>;\n\tld.param.u64 %rd1, [p];\n"
            "\t{\n\t.param .b64 q0;\n\tst.param.b64 [q0], %rd1;\n\t.param .b64 q1;\n"
            "\tst.param.b64 [q1], %rd1;\n\t.param .b32 q2;\n\tst.param.b32 [q2], 7;\n"
            "\t.param .b64 q3;\n\tst.param.b64 [q3], %rd1;\n\t.param .b64 q4;\n"
            "\tst.param.b64 [q4], 1;\n\tcall.uni __assertfail, (q0, q1, q2, q3, q4);\n\t}\n"
            "\ttrap;\n\tret;\n}\n"
            ".visible .entry k(.param .u64 k_param_0)\n{\n\t.reg .b64 %rd<2>;\n\t.reg .pred "
            "%p<2>;\n\tld.param.u64 %rd1, [k_param_0];\n\tsetp.eq.u64 %p1, %rd1, 0;\n"
            "\t{\n\t.param .b64 a;\n\tst.param.b64 [a], %rd1;\n\tcall.uni f, (a);\n\t}\n"
            "\t@!%p1 trap;\n\tret;\n}\n";
    agile_guard_opts o;
    agile_guard_result res;
    char *q;
    (void)state;
    agile_guard_opts_init(&o);
    assert_int_equal(agile_guard_ptx(src, strlen(src), &o, &res), AGILE_OK);
    assert_true(res.record);
    assert_null(strstr(res.ptx, "call.uni __assertfail"));
    assert_null(strstr(res.ptx, "trap;"));
    assert_non_null(strstr(res.ptx, ".param .u64 __agile_viol"));
    assert_non_null(strstr(res.ptx, ".param .b64 __agile_fviol, .param .b32 __agile_fkid"));
    assert_non_null(strstr(res.ptx, "atom.global.cas.b32 %agile_c, [%agile_viol], 0, %agile_kid;"
                                    "\n\tsetp.eq.u32 %agile_w, %agile_c, 0;\n\t@%agile_w "
                                    "st.global.u32 [%agile_viol+4], 4294967295;\n\t@%agile_w "
                                    "st.global.u64 [%agile_viol+8], 21;\n\texit;"));
    /* the trap in f (line 23) and the predicated one in k */
    assert_non_null(strstr(res.ptx, "[%agile_viol+4], 4294967294;\n\t@%agile_w st.global.u64 "
                                    "[%agile_viol+8], 23;\n\texit;"));
    assert_non_null(strstr(res.ptx, "@!%p1 atom.global.cas.b32 %agile_c, [%agile_viol], 0, "
                                    "%agile_kid;\n\tsetp.eq.and.u32 %agile_w, %agile_c, 0, !%p1;"));
    assert_non_null(strstr(res.ptx, "\n\t@!%p1 exit;"));
    assert_non_null(strstr(res.report, "\"__agile_viol\""));
    assert_int_equal(verify(res.ptx, 0, 0, NULL), AGILE_OK);
    /* the verifier refuses the trap put back, and a callee given another record */
    q = mutate(res.ptx, "\n\t@!%p1 exit;", "\n\t@!%p1 trap;");
    assert_int_equal(verify(q, 0, 0, NULL), AGILE_EGUARD);
    free(q);
    q = mutate(res.ptx, "st.param.b64 [__agile_cv], %agile_viol;", "st.param.b64 [__agile_cv], %rd1;");
    assert_non_null(q);
    assert_int_equal(verify(q, 0, 0, NULL), AGILE_EGUARD);
    free(q);
    agile_guard_result_fini(&res);
    /* provided as a gate, __assertfail is called as declared */
    const char *gates[] = {"__assertfail"};
    o.gates = gates;
    o.ngates = 1;
    assert_int_equal(agile_guard_ptx(src, strlen(src), &o, &res), AGILE_OK);
    assert_non_null(strstr(res.ptx, "call.uni __assertfail"));
    agile_guard_result_fini(&res);
}

static void test_strict(void **state)
{
    int rv;
    char *p = guard(k_generic, true, 0, 0, &rv, NULL);
    (void)state;
    assert_int_equal(rv, AGILE_OK);
    assert_non_null(strstr(p, ".param .u64 __agile_viol"));
    assert_non_null(strstr(p, "setp.eq.and.u64 %agile_k0|%agile_v0, %agile_a0, %agile_x0, %p1;"));
    assert_non_null(strstr(p, "@%agile_k0 ld.u32 %r1, [%agile_a0];"));
    assert_non_null(strstr(p, "@%agile_v0 mov.b32 %r1, 0;"));
    assert_non_null(
        strstr(p, "@%agile_v0 atom.global.cas.b32 %agile_c, [%agile_viol], 0, %agile_kid;"));
    assert_non_null(strstr(p, "@%agile_w st.global.u32 [%agile_viol+4], 1;"));
    assert_non_null(strstr(p, "mov.u32 %agile_kid, 1;"));
    assert_int_equal(verify(p, 0, 0, NULL), AGILE_OK);
    free(p);
}

static void test_reject(void **state)
{
    static const struct {
        const char *body, *why;
    } cases[] = {
        {"\ttensormap.replace.tile.global_address.global.b1024.b64 [%rd1], %rd1;\n", "TMA"},
        {"\tmultimem.red.relaxed.sys.global.add.u32 [%rd1], 1;\n", "multimem"},
        {"\tcall %rd1, (), proto;\n", "indirect call"},
        {"\tcall.uni vprintf, (%rd1);\n", "neither defined"},
        {"\tld.global.u32 %r1, [nowhere];\n", "not a variable"},
        {"\tfoo.bar [%rd1], 1;\n", "not modelled"},
        {"\tmov.u64 %agile_mask, 0;\n", "reserved"},
        {"\tld.global.u32 %r1, [%rd1+%r1];\n", "unsupported address"},
        /* instructions that fault */
        {"\t@%p1 brkpt;\n", "brkpt raises a fault"},
        {"\tsetmaxnreg.dec.sync.aligned.u32 40;\n", "setmaxnreg"},
        {"\talloca.u64 %rd2, %r1, 16;\n", "dynamic stack allocation"},
        {"\tsust.b.1d.b32.trap [%rd1, {%r1}], {%r2};\n", "texture/surface"},
        {"\tmbarrier.init.b64 [16], %r1;\n", "mbarrier object outside .shared"},
        {"\tcp.async.ca.shared.global [%rd2], [%rd1], %r1;\n", "access width"},
        {"\tcp.async.bulk.global.shared::cta.bulk_group [%rd1], [%rd2], 40;\n", "multiple of 16"},
    };
    (void)state;
    for (size_t i = 0; i < AGILE_ARRAY_LEN(cases); i++) {
        char src[1024], err[320];
        int rv;
        snprintf(src, sizeof(src),
                 HDR ".visible .entry k(.param .u64 k_param_0)\n{\n\t.reg .b32 %%r<4>;\n\t.reg "
                     ".b64 %%rd<4>;\n"
                     "\tld.param.u64 %%rd1, [k_param_0];\n%s\tret;\n}\n",
                 cases[i].body);
        char *p = guard(src, false, 0, 0, &rv, err);
        assert_null(p);
        assert_int_equal(rv, AGILE_EREJECT);
        if (strstr(err, cases[i].why) == NULL)
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].why);
        assert_non_null(strstr(err, "<ptx>:10: "));
    }
}

/* Replace the first occurrence of `from` by `to`. */
static char *mutate(const char *p, const char *from, const char *to)
{
    const char *at = strstr(p, from);
    size_t n;
    char *q;
    if (at == NULL) return NULL;
    n = strlen(p) - strlen(from) + strlen(to);
    q = malloc(n + 1);
    memcpy(q, p, (size_t)(at - p));
    strcpy(q + (at - p), to);
    strcat(q, at + strlen(from));
    return q;
}

static void test_verifier_breaks(void **state)
{
    static const struct {
        const char *src, *from, *to;
    } m[] = {
        /* delete a fence */
        {"g", "\tor.b64 %agile_a0, %agile_t0, %agile_base;\n", ""},
        {"g", "\tand.b64 %agile_t0, %rd1, %agile_m4;\n", ""},
        /* fence with the wrong registers */
        {"g", "or.b64 %agile_a0, %agile_t0, %agile_base;", "or.b64 %agile_a0, %agile_t0, %rd1;"},
        {"g", "and.b64 %agile_t0, %rd1, %agile_m4;", "and.b64 %agile_t0, %rd1, %rd2;"},
        /* redefine the fenced register between fence and use */
        {"g", "\tld.global.u32 %r1, [%agile_a0];",
         "\tadd.s64 %agile_a0, %agile_a0, 64;\n\tld.global.u32 %r1, [%agile_a0];"},
        {"g", "\tld.global.u32 %r1, [%agile_a0];",
         "\tld.global.u64 %agile_a0, [%agile_a0];\n\tld.global.u32 %r1, [%agile_a0];"},
        /* predicated fence */
        {"g", "\tor.b64 %agile_a0,", "\t@%p1 or.b64 %agile_a0,"},
        /* a label (another basic block) between fence and use */
        {"g", "\tld.global.u32 %r1, [%agile_a0];", "L1:\n\tld.global.u32 %r1, [%agile_a0];"},
        /* reorder: use before fence */
        {"g",
         "\tand.b64 %agile_t0, %rd1, %agile_m4;\n\tor.b64 %agile_a0, %agile_t0, "
         "%agile_base;\n\tld.global.u32 %r1, [%agile_a0];",
         "\tld.global.u32 %r1, [%agile_a0];\n\tand.b64 %agile_t0, %rd1, %agile_m4;\n\tor.b64 "
         "%agile_a0, %agile_t0, %agile_base;"},
        /* unfenced register */
        {"g", "ld.global.u32 %r1, [%agile_a0];", "ld.global.u32 %r1, [%rd1];"},
        /* offset beyond the gap */
        {"g", "[%agile_a1+8]", "[%agile_a1+4194304]"},
        {"g", "[%agile_a1+8]", "[%agile_a1+-8]"},
        /* the base no longer comes from the hidden parameter */
        {"g", "ld.param.u64 %agile_base, [__agile_base];", "mov.u64 %agile_base, 0;"},
        {"g", "\tld.global.u32 %r1,", "\tmov.u64 %agile_base, 0;\n\tld.global.u32 %r1,"},
        {"g", ".param .u64 __agile_base)", ".param .u64 __agile_basex)"},
        /* a guard register shadowed in a nested scope */
        {"g", "\tld.global.u32 %r1, [%agile_a0];",
         "\t{ .reg .b64 %agile_a0;\n\tld.global.u32 %r1, [%agile_a0]; }"},
        /* generic: wrong test, wrong select, X redefined between test and select */
        {"n", "isspacep.global %agile_p0", "isspacep.shared %agile_p0"},
        {"n", "selp.b64 %agile_a0, %agile_t0, %agile_g0, %agile_p0;",
         "selp.b64 %agile_a0, %rd1, %agile_g0, %agile_p0;"},
        {"n", "\tand.b64 %agile_g0, %rd1, -4;",
         "\tadd.s64 %rd1, %rd1, 4096;\n\tand.b64 %agile_g0, %rd1, -4;"},
        {"n", "\tselp.b64 %agile_a0, %agile_t0, %agile_g0, %agile_p0;\n", ""},
        /* generic: the non-global side left misaligned, or aligned before the test */
        {"n", "selp.b64 %agile_a0, %agile_t0, %agile_g0, %agile_p0;",
         "selp.b64 %agile_a0, %agile_t0, %rd1, %agile_p0;"},
        {"n", "\tand.b64 %agile_g0, %rd1, -4;", "\tand.b64 %agile_g0, %rd1, -2;"},
        /* a misaligned mask: the 4-byte access fenced with the byte mask */
        {"g", "and.b64 %agile_t0, %rd1, %agile_m4;", "and.b64 %agile_t0, %rd1, %agile_mask;"},
        /* the alignment mask register set wrongly, twice, or used before it is set */
        {"g", "and.b64 %agile_m4, %agile_mask, -4;", "and.b64 %agile_m4, %agile_mask, -2;"},
        {"g", "and.b64 %agile_m4, %agile_mask, -4;", "and.b64 %agile_m4, %agile_base, -4;"},
        {"g", "\tld.global.u32 %r1,", "\tand.b64 %agile_m4, %agile_mask, -4;\n\tld.global.u32 %r1,"},
        {"g", "\tand.b64 %agile_m4, %agile_mask, -4;\n", ""},
        /* a kept offset that breaks the alignment */
        {"g", "[%agile_a1+8]", "[%agile_a1+6]"},
        /* an instruction that faults */
        {"g", "\tret;", "\ttrap;\n\tret;"},
        {"g", "\tret;", "\t@%p1 brkpt;\n\tret;"},
        {"g", "\tret;", "\tsetmaxnreg.inc.sync.aligned.u32 232;\n\tret;"},
        /* an mbarrier through an unchecked generic address */
        {"g", "\tret;", "\tmbarrier.init.b64 [%rd1], 1;\n\tret;"},
        /* a generic select used for an explicit global access */
        {"n", "@%p1 ld.u32 %r1, [%agile_a0];", "@%p1 ld.global.u32 %r1, [%agile_a0];"},
        /* an opcode the verifier does not model */
        {"g", "\tret;", "\tfoo.global.u32 [%rd1], 1;\n\tret;"},
        {"g", "\tret;",
         "\tcp.async.bulk.tensor.1d.global.shared::cta.bulk_group [%rd1, {%r1}], [%r2];\n\tret;"},
    };
    int rv;
    char *g = guard(k_global, false, 0, 0, &rv, NULL);
    char *n = guard(k_generic, false, 0, 0, &rv, NULL);
    (void)state;
    assert_int_equal(verify(g, 0, 0, NULL), AGILE_OK);
    assert_int_equal(verify(n, 0, 0, NULL), AGILE_OK);
    for (size_t i = 0; i < AGILE_ARRAY_LEN(m); i++) {
        char *q = mutate(m[i].src[0] == 'g' ? g : n, m[i].from, m[i].to);
        char err[300];
        if (q == NULL) fail_msg("mutation %zu: pattern not found", i);
        if (verify(q, 0, 0, err) != AGILE_EGUARD) fail_msg("mutation %zu accepted:\n%s", i, q);
        free(q);
    }
    /* the unguarded input itself is refused */
    assert_int_equal(verify(k_global, 0, 0, NULL), AGILE_EGUARD);
    free(g);
    free(n);
}

static void test_calls(void **state)
{
    const char *src =
        HDR ".func (.param .b32 r) f(.param .b64 p)\n{\n\t.reg .b64 %rd<2>;\n\t.reg .b32 %r<2>;\n"
            "\tld.param.u64 %rd1, [p];\n\tld.global.u32 %r1, [%rd1];\n\tst.param.b32 [r], "
            "%r1;\n\tret;\n}\n"
            ".visible .entry k(.param .u64 k_param_0)\n{\n\t.reg .b64 %rd<2>;\n\t.reg .b32 %r<2>;\n"
            "\tld.param.u64 %rd1, [k_param_0];\n\t{\n\t.param .b64 a;\n\tst.param.b64 [a], %rd1;\n"
            "\t.param .b32 ret;\n\tcall.uni (ret), f, (a);\n\tld.param.b32 %r1, "
            "[ret];\n\t}\n\tret;\n}\n";
    int rv;
    char *p = guard(src, false, 0, 0, &rv, NULL), *q;
    (void)state;
    assert_int_equal(rv, AGILE_OK);
    assert_non_null(
        strstr(p, "f(.param .b64 p,\n\t.param .b64 __agile_fmask, .param .b64 __agile_fbase)"));
    assert_non_null(strstr(p, "ld.param.u64 %agile_mask, [__agile_fmask];"));
    assert_non_null(strstr(p, "call.uni (ret), f, (a, __agile_cm, __agile_cb); }"));
    assert_int_equal(verify(p, 0, 0, NULL), AGILE_OK);
    /* the caller passes something else as the mask */
    q = mutate(p, "st.param.b64 [__agile_cm], %agile_mask;", "st.param.b64 [__agile_cm], %rd1;");
    assert_int_equal(verify(q, 0, 0, NULL), AGILE_EGUARD);
    free(q);
    q = mutate(p, "(a, __agile_cm, __agile_cb)", "(a, __agile_cb, __agile_cm)");
    assert_int_equal(verify(q, 0, 0, NULL), AGILE_EGUARD);
    free(q);
    free(p);
}

static void test_sha256(void **state)
{
    static const char *const exp[] = {
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"};
    static const char *const in[] = {"", "abc",
                                     "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"};
    (void)state;
    for (size_t i = 0; i < 3; i++) {
        uint8_t d[32];
        char hex[65];
        const void *b[1] = {in[i]};
        size_t l[1] = {strlen(in[i])};
        agile_guard_sha256(b, l, 1, d);
        for (int k = 0; k < 32; k++)
            snprintf(hex + 2 * k, 3, "%02x", d[k]);
        assert_string_equal(hex, exp[i]);
    }
}

static void test_compile_cache(void **state)
{
    char dir[] = "/tmp/agile-guard-cache.XXXXXX", log[2048], cmd[200];
    agile_guard_compile_opts co = {"sm_90", NULL, 0, NULL, 0};
    void *img = NULL;
    size_t n = 0;
    bool hit = true;
    int rv;
    char *p = guard(k_global, false, 0, 0, &rv, NULL);
    (void)state;
    assert_non_null(mkdtemp(dir));
    co.cache_dir = dir;
    rv = agile_guard_compile(p, strlen(p), &co, &img, &n, &hit, log, sizeof(log));
    if (rv == AGILE_ENOTSUP) {
        free(p);
        p = NULL;
        skip(); /* no nvJitLink on this machine */
    }
    if (rv != AGILE_OK) fail_msg("compile: %s: %s", agile_err_name(rv), log);
    assert_false(hit);
    assert_true(n > 0);
    free(img);
    rv = agile_guard_compile(p, strlen(p), &co, &img, &n, &hit, log, sizeof(log));
    assert_int_equal(rv, AGILE_OK);
    assert_true(hit);
    free(img);
    /* other options are another key */
    static const char *const lineinfo[] = {"-lineinfo"};
    co.options = lineinfo;
    co.noptions = 1;
    rv = agile_guard_compile(p, strlen(p), &co, &img, &n, &hit, log, sizeof(log));
    assert_int_equal(rv, AGILE_OK);
    assert_false(hit);
    free(img);
    /* a 1-byte budget keeps nothing after the next store */
    co.cache_max = 1;
    co.options = NULL;
    co.noptions = 0;
    co.arch = "sm_90a";
    rv = agile_guard_compile(p, strlen(p), &co, &img, &n, &hit, log, sizeof(log));
    assert_int_equal(rv, AGILE_OK);
    free(img);
    co.arch = "sm_90";
    rv = agile_guard_compile(p, strlen(p), &co, &img, &n, &hit, log, sizeof(log));
    assert_int_equal(rv, AGILE_OK);
    assert_false(hit);
    free(img);
    /* broken PTX: rejected by the JIT, with a log */
    rv = agile_guard_compile("garbage", 7, &co, &img, &n, &hit, log, sizeof(log));
    assert_int_equal(rv, AGILE_EREJECT);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    free(p);
}

static void test_report(void **state)
{
    agile_guard_opts o;
    agile_guard_result res;
    (void)state;
    agile_guard_opts_init(&o);
    assert_int_equal(agile_guard_ptx(k_generic, strlen(k_generic), &o, &res), AGILE_OK);
    assert_non_null(strstr(res.report, "\"name\": \"k\", \"kind\": \"entry\""));
    assert_non_null(strstr(res.report, "\"sites\": {\"ld\": 1, \"atom\": 1}"));
    assert_non_null(strstr(res.report, "\"hidden_params\": [\"__agile_mask\", \"__agile_base\"]"));
    assert_int_equal(res.nsites, 2);
    agile_guard_result_fini(&res);
    assert_int_equal(agile_guard_ptx("garbage ptx", 11, &o, &res), AGILE_EREJECT);
    assert_non_null(strstr(res.report, "\"accepted\": false"));
    agile_guard_result_fini(&res);
}

/* agile_guard_entry_params: CUDA's parameter layout of a kernel of the tenant's PTX. */
static void test_entry_params(void **state)
{
    static const char ptx[] =
        ".version 8.0\n.target sm_90\n.address_size 64\n"
        ".visible .entry first()\n{\n\tret;\n}\n"
        ".visible .func helper(.param .u64 p)\n{\n\tret;\n}\n"
        ".visible .entry declared_only(.param .u32 a);\n"
        ".visible .entry k(.param .u8 c, .param .u64 .ptr .global .align 16 p,\n"
        "\t.param .align 16 .b8 s[24], .param .f16 h, .param .b32 v[3])\n{\n\tret;\n}\n"
        ".visible .entry bad(.param .pred q)\n{\n\tret;\n}\n";
    agile_guard_entry e;
    char err[200];
    (void)state;

    assert_int_equal(agile_guard_entry_params(ptx, strlen(ptx), "k", &e, err, sizeof err),
                     AGILE_OK);
    assert_int_equal(e.kernel_id, 2); /* `first` is 1; a declaration is no kernel */
    assert_int_equal(e.nparams, 5);
    /* u8 at 0; u64 aligned to 8 (.align after .ptr is the pointee's); 24 bytes aligned to 16;
     * f16 at 48; three b32 aligned to 4 */
    const uint32_t size[] = {1, 8, 24, 2, 12}, offset[] = {0, 8, 16, 40, 44};
    for (uint32_t i = 0; i < 5; i++) {
        assert_int_equal(e.size[i], size[i]);
        assert_int_equal(e.offset[i], offset[i]);
    }
    assert_int_equal(e.argsize, 56);

    assert_int_equal(agile_guard_entry_params(ptx, strlen(ptx), "first", &e, err, sizeof err),
                     AGILE_OK);
    assert_int_equal(e.kernel_id, 1);
    assert_int_equal(e.nparams, 0);
    assert_int_equal(e.argsize, 0);

    assert_int_equal(agile_guard_entry_params(ptx, strlen(ptx), "helper", &e, err, sizeof err),
                     AGILE_ENOENT); /* a .func is not a kernel */
    assert_string_equal(err, "no kernel (.entry) named 'helper' in the module");
    assert_int_equal(
        agile_guard_entry_params(ptx, strlen(ptx), "declared_only", &e, err, sizeof err),
        AGILE_ENOENT);
    assert_int_equal(agile_guard_entry_params(ptx, strlen(ptx), "bad", &e, err, sizeof err),
                     AGILE_EINVAL);
    assert_string_equal(err, "kernel 'bad': parameter 0 not understood");
    assert_int_equal(agile_guard_entry_params("garbage", 7, "k", &e, err, sizeof err),
                     AGILE_EREJECT);
    assert_non_null(strstr(err, "module PTX does not parse: "));
    assert_int_equal(agile_guard_entry_params(ptx, strlen(ptx), "k", &e, NULL, 0), AGILE_OK);

    /* more parameters than a launch can carry */
    size_t cap = 64 + (AGILE_GUARD_MAX_PARAMS + 1) * 24;
    char *many = malloc(cap);
    size_t n = (size_t)snprintf(many, cap, ".version 8.0\n.target sm_90\n.entry m(");
    for (uint32_t i = 0; i <= AGILE_GUARD_MAX_PARAMS; i++)
        n += (size_t)snprintf(many + n, cap - n, "%s.param .u8 p%u", i ? ", " : "", i);
    n += (size_t)snprintf(many + n, cap - n, ")\n{\n\tret;\n}\n");
    assert_true(n < cap);
    assert_int_equal(agile_guard_entry_params(many, n, "m", &e, err, sizeof err), AGILE_ETOOBIG);
    assert_string_equal(err, "kernel 'm' has more than 256 parameters");
    free(many);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_global_fence),  cmocka_unit_test(test_generic_fence),
        cmocka_unit_test(test_window_bits),   cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_shared),        cmocka_unit_test(test_local),
        cmocka_unit_test(test_device_assert),
        cmocka_unit_test(test_strict),
        cmocka_unit_test(test_reject),        cmocka_unit_test(test_verifier_breaks),
        cmocka_unit_test(test_calls),         cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_compile_cache), cmocka_unit_test(test_report),
        cmocka_unit_test(test_entry_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
