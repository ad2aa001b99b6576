#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core.h"

static uint8_t buf[1 << 16];

static size_t encode(agile__msg *m)
{
    size_t len = 0;
    assert_int_equal(agile__msg_encode(m, buf, sizeof buf, &len), AGILE_OK);
    assert_int_equal(len, agile__msg_size(m));
    return len;
}

static void test_roundtrip_hello(void **state)
{
    agile__msg m, d;
    size_t len;
    (void)state;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_HELLO;
    m.h.req_id = 0x1122334455667788ull;
    m.u.hello_req.major = 1;
    m.u.hello_req.minor = 3;
    m.u.hello_req.token_lo = 0xa5a5a5a5a5a5a5a5ull;
    m.u.hello_req.token_hi = 42;
    m.u.hello_req.pid = 999;
    len = encode(&m);
    assert_int_equal(len, AGILE_WIRE_HDR_SIZE + 2 + 2 + 8 + 8 + 4 + 4);
    /* little-endian on the wire, whatever the host */
    assert_int_equal(buf[0], 'A');
    assert_int_equal(buf[3], 'L');
    assert_int_equal(buf[16], 0x88);
    assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_OK);
    assert_int_equal(d.h.type, AGILE_MSG_HELLO);
    assert_int_equal(d.h.req_id, m.h.req_id);
    assert_int_equal(d.u.hello_req.token_lo, m.u.hello_req.token_lo);
    assert_int_equal(d.u.hello_req.pid, 999);
}

static void test_roundtrip_every_type(void **state)
{
    (void)state;
    for (unsigned t = 1; t < AGILE_MSG_MAX_; t++) {
        for (unsigned reply = 0; reply < 2; reply++) {
            agile__msg m, d;
            size_t len;
            memset(&m, 0x5a, sizeof m); /* every field non-zero... */
            m.h.type = (uint16_t)t;
            m.h.flags = reply ? AGILE_MSGF_REPLY : 0;
            m.h.status = 0;
            /* ...but blobs must be valid views */
            switch (agile__msg_rec(t, m.h.flags, 0)) {
            case AGILE_REC_ID_status_rep: m.u.status_rep.text = agile__blob_of("{}", 2); break;
            case AGILE_REC_ID_module_load_req: m.u.module_load_req.ptx = agile__blob_of("x", 1); break;
            case AGILE_REC_ID_module_load_rep: m.u.module_load_rep.log = agile__blob_of("", 0); break;
            case AGILE_REC_ID_module_function_req:
                m.u.module_function_req.name = agile__blob_of("k", 1);
                break;
            case AGILE_REC_ID_module_function_rep:
                m.u.module_function_rep.param_sizes = agile__blob_of("abcd", 4);
                break;
            case AGILE_REC_ID_mod_ctl_req: m.u.mod_ctl_req.payload = agile__blob_of("pp", 2); break;
            case AGILE_REC_ID_mod_ctl_rep: m.u.mod_ctl_rep.payload = agile__blob_of("q", 1); break;
            default: break;
            }
            len = encode(&m);
            assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_OK);
            assert_int_equal(d.h.type, t);
            /* re-encoding the decoded message gives the same bytes */
            uint8_t again[1 << 12];
            size_t len2;
            assert_int_equal(agile__msg_encode(&d, again, sizeof again, &len2), AGILE_OK);
            assert_int_equal(len2, len);
            assert_memory_equal(again, buf, len);
            /* every strict prefix is rejected, never over-read */
            for (size_t cut = 0; cut < len; cut++) {
                uint8_t *copy = malloc(cut ? cut : 1);
                memcpy(copy, buf, cut);
                assert_int_not_equal(agile__msg_decode(copy, cut, &d), AGILE_OK);
                free(copy);
            }
        }
    }
}

static void test_error_reply_carries_message(void **state)
{
    agile__msg m, d;
    size_t len;
    char s[64];
    (void)state;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_LOAD;
    m.h.flags = AGILE_MSGF_REPLY;
    m.h.status = AGILE_EREJECT;
    m.u.error.message = agile__blob_of("k.ptx:12: tensormap.replace", 27);
    len = encode(&m);
    assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_OK);
    assert_int_equal(d.h.status, AGILE_EREJECT);
    assert_int_equal(agile__blob_str(d.u.error.message, s, sizeof s), AGILE_OK);
    assert_string_equal(s, "k.ptx:12: tensormap.replace");
    assert_int_equal(agile__blob_str(d.u.error.message, s, 5), AGILE_EINVAL);
    assert_int_equal(agile__blob_str(agile__blob_of("a\0b", 3), s, sizeof s), AGILE_EINVAL);
}

static void make_ping(agile__msg *m)
{
    memset(m, 0, sizeof *m);
    m->h.type = AGILE_MSG_PING;
    m->u.ping.nonce = 77;
}

static void test_rejects_bad_headers(void **state)
{
    agile__msg m, d;
    size_t len;
    (void)state;
    make_ping(&m);
    len = encode(&m);
    buf[0] ^= 1; /* magic */
    assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_EPROTO);
    len = encode(&m);
    buf[4] = 2; /* major */
    assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_EVERSION);
    len = encode(&m);
    buf[8] = 0xee; /* unknown type */
    assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_EPROTO);
    len = encode(&m);
    buf[10] = 0x80; /* unknown flag */
    assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_EPROTO);
    len = encode(&m);
    buf[24] = 1; /* a request with a status */
    assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_EPROTO);
    len = encode(&m);
    /* body_len larger than the maximum */
    buf[12] = 0;
    buf[13] = 0;
    buf[14] = 0;
    buf[15] = 0x10;
    assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_ETOOBIG);
    /* body_len disagreeing with the bytes received, either way */
    len = encode(&m);
    assert_int_equal(agile__msg_decode(buf, len + 1, &d), AGILE_EPROTO);
    buf[12] = 4;
    assert_int_equal(agile__msg_decode(buf, AGILE_WIRE_HDR_SIZE + 4, &d), AGILE_EPROTO);
    assert_int_equal(agile__msg_decode(NULL, 0, &d), AGILE_EPROTO);
}

static void test_blob_length_lies(void **state)
{
    agile__msg m, d;
    size_t len;
    (void)state;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_STATUS;
    m.h.flags = AGILE_MSGF_REPLY;
    m.u.status_rep.text = agile__blob_of("hello", 5);
    len = encode(&m);
    /* blob says 0xffffffff bytes follow */
    memset(buf + AGILE_WIRE_HDR_SIZE, 0xff, 4);
    assert_int_equal(agile__msg_decode(buf, len, &d), AGILE_EPROTO);
}

static void test_newer_minor_may_append(void **state)
{
    agile__msg m, d;
    size_t len;
    (void)state;
    make_ping(&m);
    len = encode(&m);
    /* same minor: trailing bytes are malformed */
    buf[len] = 1;
    buf[12] = (uint8_t)(buf[12] + 1);
    assert_int_equal(agile__msg_decode(buf, len + 1, &d), AGILE_EPROTO);
    /* a newer minor: accepted, extra field ignored */
    buf[6] = AGILE_WIRE_MINOR + 1;
    assert_int_equal(agile__msg_decode(buf, len + 1, &d), AGILE_OK);
    assert_int_equal(d.u.ping.nonce, 77);
}

static void test_encode_too_small(void **state)
{
    agile__msg m;
    size_t len;
    uint8_t small[8];
    (void)state;
    make_ping(&m);
    assert_int_equal(agile__msg_encode(&m, small, sizeof small, &len), AGILE_ETOOBIG);
    m.h.type = 999;
    assert_int_equal(agile__msg_encode(&m, buf, sizeof buf, &len), AGILE_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_hello),
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_error_reply_carries_message),
        cmocka_unit_test(test_rejects_bad_headers),
        cmocka_unit_test(test_blob_length_lies),
        cmocka_unit_test(test_newer_minor_may_append),
        cmocka_unit_test(test_encode_too_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
