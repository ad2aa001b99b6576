/* ring_test.c — the shared-memory rings: codec, validation, wrap-around, back-pressure,
 * real processes, dead peers, a scribbling client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ring/ring.h"

#define SEC 1000000000ll
#define MS 1000000ll

static agile__ring_cmd *cmd_new(void)
{
    agile__ring_cmd *c = calloc(1, sizeof *c);
    assert_non_null(c);
    return c;
}

static void nop(agile__ring_cmd *c, uint64_t cookie)
{
    memset(c, 0, offsetof(agile__ring_cmd, raw));
    c->opcode = AGILE_RING_OP_NOP;
    c->tag = cookie ^ 0x55;
    c->u.nop.cookie = cookie;
}

/* A client attached to a worker's region in the same process. */
static void pair(agile__ring_worker *w, agile__ring_client *c, uint32_t slots, uint32_t size)
{
    assert_int_equal(agile__ring_worker_init(w, slots, size, NULL), AGILE_OK);
    int fd = dup(w->reg.fd);
    assert_true(fd >= 0);
    assert_int_equal(agile__ring_client_init(c, fd, NULL), AGILE_OK);
}

static void unpair(agile__ring_worker *w, agile__ring_client *c)
{
    agile__ring_client_fini(c);
    agile__ring_worker_fini(w);
}

/* ---- codec --------------------------------------------------------------------------------- */

static void test_codec_every_op(void **state)
{
    (void)state;
    uint8_t slot[AGILE_RING_DEFAULT_SLOT_SIZE];
    agile__ring_cmd *in = cmd_new(), *out = cmd_new();
    static const char params[] = "kernel-params-16";
    for (unsigned op = 1; op < AGILE_RING_OP_MAX_; op++) {
        memset(in, 0x5a, offsetof(agile__ring_cmd, raw)); /* every field non-zero */
        in->opcode = (uint16_t)op;
        in->flags = 0;
        if (op == AGILE_RING_OP_LAUNCH) in->u.launch.params = agile__blob_of(params, 16);
        if (op == AGILE_RING_OP_MOD_OP) in->u.mod_op.args = agile__blob_of(params, 5);
        assert_true(agile__ring_cmd_size(in) <= sizeof slot);
        assert_int_equal(agile__ring_cmd_encode(in, 77 + op, slot, sizeof slot), AGILE_OK);
        assert_int_equal(agile__ring_cmd_decode(slot, sizeof slot, 77 + op, out), AGILE_OK);
        assert_int_equal(out->opcode, op);
        assert_int_equal(out->seq, 77 + op);
        assert_int_equal(out->tag, in->tag);
        assert_int_equal(out->length, agile__ring_cmd_size(in) - AGILE_RING_SLOT_HDR_SIZE);
        /* re-encoding the decoded command gives the same bytes */
        uint8_t again[AGILE_RING_DEFAULT_SLOT_SIZE];
        assert_int_equal(agile__ring_cmd_encode(out, 77 + op, again, sizeof again), AGILE_OK);
        assert_memory_equal(again, slot, agile__ring_cmd_size(in));
        if (op == AGILE_RING_OP_LAUNCH) {
            assert_int_equal(out->u.launch.params.n, 16);
            assert_memory_equal(out->u.launch.params.p, params, 16);
            /* blobs point into the private copy, never into the slot */
            assert_true(out->u.launch.params.p >= out->raw &&
                        out->u.launch.params.p < out->raw + sizeof out->raw);
            assert_int_equal(out->u.launch.grid_x, 0x5a5a5a5a);
        }
        assert_string_not_equal(agile__ring_op_name(op), "?");
    }
    free(in);
    free(out);
}

static void test_codec_too_big(void **state)
{
    (void)state;
    uint8_t slot[AGILE_RING_MIN_SLOT_SIZE];
    static uint8_t big[AGILE_RING_MAX_SLOT_SIZE];
    agile__ring_cmd *c = cmd_new();
    c->opcode = AGILE_RING_OP_LAUNCH;
    c->u.launch.params = agile__blob_of(big, sizeof big);
    assert_int_equal(agile__ring_cmd_encode(c, 0, slot, sizeof slot), AGILE_ETOOBIG);
    c->opcode = 0;
    assert_int_equal(agile__ring_cmd_encode(c, 0, slot, sizeof slot), AGILE_EINVAL);
    c->opcode = AGILE_RING_OP_MAX_;
    assert_int_equal(agile__ring_cmd_size(c), SIZE_MAX);

    agile__ring_worker w;
    agile__ring_client cl;
    pair(&w, &cl, 8, 256);
    c->opcode = AGILE_RING_OP_LAUNCH;
    c->u.launch.params = agile__blob_of(big, 256 - AGILE_RING_SLOT_HDR_SIZE); /* + fields */
    assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_ETOOBIG);
    /* exactly fitting is fine */
    c->u.launch.params.n = 0;
    c->u.launch.params.n = (uint32_t)(256 - agile__ring_cmd_size(c));
    assert_int_equal(agile__ring_cmd_size(c), 256);
    assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_OK);
    agile__ring_cmd *o = cmd_new();
    bool got;
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
    assert_true(got);
    assert_int_equal(o->u.launch.params.n, c->u.launch.params.n);
    unpair(&w, &cl);
    free(c);
    free(o);
}

/* ---- malformed slots ------------------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void test_decode_rejects(void **state)
{
    (void)state;
    uint8_t good[256], bad[256];
    agile__ring_cmd *c = cmd_new(), *o = cmd_new();
    c->opcode = AGILE_RING_OP_MEMCPY;
    c->u.memcpy.bytes = 4096;
    assert_int_equal(agile__ring_cmd_encode(c, 5, good, sizeof good), AGILE_OK);
    assert_int_equal(agile__ring_cmd_decode(good, sizeof good, 5, o), AGILE_OK);

    struct {
        const char *what;
        unsigned off;
        uint32_t v;
        unsigned width;
    } cases[] = {
        {"bad magic", 0, 0x12345678, 4},
        {"completion magic", 0, AGILE_RING_SLOT_CPL, 4},
        {"opcode 0", 4, 0, 2},
        {"opcode past the list", 4, AGILE_RING_OP_MAX_, 2},
        {"opcode huge", 4, 0xffff, 2},
        {"flags", 6, 1, 2},
        {"length > payload", 8, 256 - 32 + 1, 4},
        {"length huge", 8, 0xffffffff, 4},
        {"length short of the record", 8, 8, 4},
        {"status", 12, 1, 4},
        {"seq", 16, 6, 4},
    };
    for (size_t i = 0; i < AGILE_ARRAY_LEN(cases); i++) {
        memcpy(bad, good, sizeof bad);
        if (cases[i].width == 2) {
            bad[cases[i].off] = (uint8_t)cases[i].v;
            bad[cases[i].off + 1] = (uint8_t)(cases[i].v >> 8);
        } else {
            put32(bad + cases[i].off, cases[i].v);
        }
        int rv = agile__ring_cmd_decode(bad, sizeof bad, 5, o);
        if (rv != AGILE_EPROTO) fail_msg("%s: %s", cases[i].what, agile_err_name(rv));
    }
    /* wrong expected seq */
    assert_int_equal(agile__ring_cmd_decode(good, sizeof good, 4, o), AGILE_EPROTO);
    assert_int_equal(agile__ring_cmd_decode(good, sizeof good, 5 + (1ull << 32), o), AGILE_EPROTO);
    /* a blob whose length runs past the payload */
    c->opcode = AGILE_RING_OP_LAUNCH;
    c->u.launch.params = agile__blob_of("abc", 3);
    assert_int_equal(agile__ring_cmd_encode(c, 0, bad, sizeof bad), AGILE_OK);
    put32(bad + 32 + 8 + 8 + 8 * 4, 200); /* params length: 200 > what is there */
    assert_int_equal(agile__ring_cmd_decode(bad, sizeof bad, 0, o), AGILE_EPROTO);
    /* a zeroed slot */
    memset(bad, 0, sizeof bad);
    assert_int_equal(agile__ring_cmd_decode(bad, sizeof bad, 0, o), AGILE_EPROTO);
    free(c);
    free(o);
}

/* A malformed slot through the worker: error completion, ring broken, client told. */
static void test_worker_breaks_on_garbage(void **state)
{
    (void)state;
    agile__ring_worker w;
    agile__ring_client cl;
    agile__ring_cmd *c = cmd_new(), *o = cmd_new();
    agile__ring_cpl cpl;
    bool got;
    pair(&w, &cl, 8, 256);
    nop(c, 1);
    assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_OK);
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
    assert_true(got);
    assert_int_equal(agile__ring_complete(&w, o, AGILE_OK, 0), AGILE_OK);
    /* seq 1, scribbled after the encode */
    assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_OK);
    cl.reg.cmd[1 * 256 + 0] ^= 0xff;
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_EPROTO);
    assert_false(got);
    assert_true(w.broken);
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_EPROTO);
    assert_int_equal(agile__ring_pending(&w), 0);
    assert_int_equal(agile__ring_wait_cmd(&w, 0), AGILE_EPROTO);
    assert_int_equal(agile__ring_complete(&w, o, AGILE_OK, 0), AGILE_EPROTO);
    assert_int_equal(agile__ring_wait(&cl, &cpl, SEC), AGILE_OK); /* NOP 0 */
    assert_int_equal(cpl.status, AGILE_OK);
    assert_int_equal(agile__ring_wait(&cl, &cpl, SEC), AGILE_OK);
    assert_int_equal(cpl.status, AGILE_EPROTO);
    assert_int_equal(cpl.seq, 1);
    unpair(&w, &cl);

    /* lying counters: a tail beyond head + slots */
    pair(&w, &cl, 8, 256);
    atomic_store(&cl.reg.cmd_ctl->tail, 9);
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_EPROTO);
    unpair(&w, &cl);
    /* a completion head beyond what was completed */
    pair(&w, &cl, 8, 256);
    assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_OK);
    atomic_store(&cl.reg.cpl_ctl->head, 3);
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_EPROTO);
    unpair(&w, &cl);
    free(c);
    free(o);
}

/* ---- region header ----------------------------------------------------------------------------
 */

static int attach_copy(const uint8_t *hdr, uint64_t size)
{
    /* A fresh memfd holding a (tampered) header, as a hostile worker-impersonator would. */
    int fd = memfd_create("t", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    assert_int_equal(pwrite(fd, hdr, AGILE_RING_HDR_SIZE, 0), AGILE_RING_HDR_SIZE);
    agile__ring_region r;
    int rv = agile__ring_region_attach(fd, &r);
    if (rv == AGILE_OK)
        agile__ring_region_fini(&r); /* closes fd */
    else
        close(fd);
    return rv;
}

static void test_header_validation(void **state)
{
    (void)state;
    agile__ring_region w;
    assert_int_equal(agile__ring_region_create(64, 256, &w), AGILE_OK);
    uint8_t hdr[AGILE_RING_HDR_SIZE], t[AGILE_RING_HDR_SIZE];
    memcpy(hdr, w.base, sizeof hdr);
    uint64_t size = w.g.size;
    assert_int_equal(attach_copy(hdr, size), AGILE_OK);

    /* the real fd: attach, same geometry */
    agile__ring_region c;
    int fd = dup(w.fd);
    assert_int_equal(agile__ring_region_attach(fd, &c), AGILE_OK);
    assert_memory_equal(&c.g, &w.g, sizeof c.g);
    /* the size is sealed: a client cannot shrink the region under the worker */
    assert_int_not_equal(ftruncate(c.fd, 4096), 0);
    agile__ring_region_fini(&c);

    struct {
        const char *what;
        unsigned off, width;
        uint64_t v;
        int want;
    } cases[] = {
        {"magic", 0, 4, 0x41414141, AGILE_EPROTO},
        {"major", 4, 2, 2, AGILE_EVERSION},
        {"size vs fd", 8, 8, 0, AGILE_EPROTO},
        {"size vs fd +4096", 8, 8, 0, AGILE_EPROTO},
        {"slots not a power of two", 16, 4, 48, AGILE_EPROTO},
        {"slots 0", 16, 4, 0, AGILE_EPROTO},
        {"slots huge", 16, 4, 1u << 31, AGILE_EPROTO},
        {"slots 128 (no longer fits)", 16, 4, 128, AGILE_EPROTO},
        {"slot size 100", 20, 4, 100, AGILE_EPROTO},
        {"slot size 0", 20, 4, 0, AGILE_EPROTO},
        {"slot size 8192", 20, 4, 8192, AGILE_EPROTO},
        {"slot size 512 (no longer fits)", 20, 4, 512, AGILE_EPROTO},
        {"cmd ctl in the header", 24, 8, 64, AGILE_EPROTO},
        {"cmd ctl unaligned", 24, 8, 260, AGILE_EPROTO},
        {"cmd ctl past the end", 24, 8, ~0ull - 10, AGILE_EPROTO},
        {"cmd slots overlap cpl slots", 32, 8, 0, AGILE_EPROTO},
        {"cpl ctl overlaps cmd ctl", 40, 8, 256 + 64, AGILE_EPROTO},
        {"cpl slots past the end", 48, 8, 0, AGILE_EPROTO},
    };
    for (size_t i = 0; i < AGILE_ARRAY_LEN(cases); i++) {
        uint64_t v = cases[i].v;
        memcpy(t, hdr, sizeof t);
        if (i == 2) v = size - 4096;
        if (i == 3) v = size + 4096;
        if (i == 15) /* cmd slots at the cpl slots */
            v = w.g.cpl_off;
        if (i == 17) v = size - 4096;
        for (unsigned b = 0; b < cases[i].width; b++)
            t[cases[i].off + b] = (uint8_t)(v >> (8 * b));
        int rv = attach_copy(t, size);
        if (rv != cases[i].want) fail_msg("%s: got %s", cases[i].what, agile_err_name(rv));
    }
    /* header fine, but the fd is larger than it says */
    assert_int_equal(attach_copy(hdr, size + 4096), AGILE_EPROTO);
    /* a minor from the future is accepted */
    memcpy(t, hdr, sizeof t);
    t[6] = 9;
    assert_int_equal(attach_copy(t, size), AGILE_OK);
    /* not a file at all */
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(agile__ring_region_attach(p[0], &c), AGILE_EPROTO);
    close(p[0]);
    close(p[1]);
    /* too short to hold a header */
    assert_int_equal(agile__ring_hdr_validate(hdr, 64, size, &c.g), AGILE_EPROTO);
    /* layouts out of range */
    agile__ring_geom g;
    assert_int_equal(agile__ring_layout(3, 256, &g), AGILE_EINVAL);
    assert_int_equal(agile__ring_layout(1u << 17, 256, &g), AGILE_EINVAL);
    assert_int_equal(agile__ring_layout(8, 96, &g), AGILE_EINVAL);
    assert_int_equal(agile__ring_layout(8, 8192, &g), AGILE_EINVAL);
    agile__ring_region_fini(&w);
}

/* ---- single-process behaviour ------------------------------------------------------------------
 */

static void test_wraparound(void **state)
{
    (void)state;
    agile__ring_worker w;
    agile__ring_client cl;
    agile__ring_cmd *c = cmd_new(), *o = cmd_new();
    agile__ring_cpl cpl[8];
    uint32_t n;
    bool got;
    pair(&w, &cl, 4, 64);
    uint64_t next_cookie = 0, expect = 0;
    /* batches of 1..4 so positions and batch boundaries drift across the wrap */
    for (unsigned round = 0; round < 20000; round++) {
        unsigned batch = 1 + round % 4;
        for (unsigned i = 0; i < batch; i++) {
            nop(c, next_cookie++);
            assert_int_equal(agile__ring_submit(&cl, c, AGILE_RING_NONBLOCK, 0, NULL), AGILE_OK);
        }
        for (unsigned i = 0; i < batch; i++) {
            assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
            assert_true(got);
            assert_int_equal(o->seq, o->u.nop.cookie);
            assert_int_equal(agile__ring_complete(&w, o, AGILE_OK, o->u.nop.cookie * 3), AGILE_OK);
        }
        assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
        assert_false(got);
        assert_int_equal(agile__ring_poll(&cl, cpl, 8, &n), AGILE_OK);
        assert_int_equal(n, batch);
        for (unsigned i = 0; i < n; i++, expect++) {
            assert_int_equal(cpl[i].seq, expect);
            assert_int_equal(cpl[i].result, expect * 3);
            assert_int_equal(cpl[i].tag, expect ^ 0x55);
            assert_int_equal(cpl[i].opcode, AGILE_RING_OP_NOP);
        }
    }
    assert_true(expect > 4 * 10000); /* wrapped more than 10000 times */
    unpair(&w, &cl);
    free(c);
    free(o);
}

typedef struct {
    agile__ring_worker *w;
    _Atomic uint32_t *start_when; /* serve only once this word is set (NULL: at once) */
    unsigned count;
    int32_t status_of_seq1;
    atomic_bool stop;
    unsigned served;
} server_arg;

/* Wait (generously bounded) for *word to become non-zero: tests wait for the event they
 * check, never for a time that a loaded machine may overrun. */
static bool await_set(_Atomic uint32_t *word)
{
    uint64_t t0 = agile__now_ns();
    while (atomic_load(word) == 0) {
        if (agile__now_ns() - t0 > 60 * SEC) return false;
        sched_yield();
    }
    return true;
}

/* A worker thread: waits (spin + futex), serves `count` commands (0: until stopped). */
static void *server(void *p)
{
    server_arg *a = p;
    agile__ring_cmd *o = calloc(1, sizeof *o);
    if (a->start_when && !await_set(a->start_when)) {
        free(o);
        return NULL;
    }
    while (!atomic_load(&a->stop) && (!a->count || a->served < a->count)) {
        int rv = agile__ring_wait_cmd(a->w, 20 * MS);
        if (rv == AGILE_ETIMEDOUT) continue;
        if (rv != AGILE_OK) break;
        bool got;
        if (agile__ring_next(a->w, o, &got) != AGILE_OK) break;
        if (!got) continue;
        int32_t st = (o->seq == 1) ? a->status_of_seq1 : AGILE_OK;
        if (agile__ring_complete(a->w, o, st, o->u.nop.cookie) != AGILE_OK) break;
        a->served++;
    }
    free(o);
    return NULL;
}

static void test_backpressure(void **state)
{
    (void)state;
    agile__ring_worker w;
    agile__ring_client cl;
    agile__ring_cmd *c = cmd_new(), *o = cmd_new();
    agile__ring_cpl cpl[16];
    uint32_t n;
    bool got;
    pair(&w, &cl, 8, 64);
    for (unsigned i = 0; i < 8; i++) {
        nop(c, i);
        assert_int_equal(agile__ring_submit(&cl, c, AGILE_RING_NONBLOCK, 0, NULL), AGILE_OK);
    }
    nop(c, 8);
    assert_int_equal(agile__ring_submit(&cl, c, AGILE_RING_NONBLOCK, 0, NULL), AGILE_EFULL);
    uint64_t t0 = agile__now_ns();
    assert_int_equal(agile__ring_submit(&cl, c, 0, 30 * MS, NULL), AGILE_ETIMEDOUT);
    assert_true(agile__now_ns() - t0 >= 30 * MS);
    /* a worker that starts once the blocked submit sleeps on the futex: the submit goes
     * through when it drains; it can serve 8 only: then the completion ring is full and we
     * are not reaping yet */
    server_arg a = {.w = &w, .start_when = &w.reg.cmd_ctl->prod_sleeping, .count = 8};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, server, &a), 0);
    uint64_t seq;
    for (unsigned i = 8; i < 12; i++) {
        nop(c, i);
        assert_int_equal(agile__ring_submit(&cl, c, 0, 5 * SEC, &seq), AGILE_OK);
        assert_int_equal(seq, i);
    }
    pthread_join(th, NULL);
    assert_int_equal(a.served, 8);
    /* the futex path ran: the blocked submit slept and was woken */
    assert_true(atomic_load(&w.reg.cmd_ctl->space_ftx) > 0);
    /* and no sleeping flag is left behind (it would cost the peer a syscall per op) */
    assert_int_equal(atomic_load(&w.reg.cmd_ctl->prod_sleeping), 0);
    assert_int_equal(atomic_load(&w.reg.cmd_ctl->cons_sleeping), 0);
    assert_int_equal(atomic_load(&w.reg.cpl_ctl->prod_sleeping), 0);
    assert_int_equal(atomic_load(&w.reg.cpl_ctl->cons_sleeping), 0);
    assert_int_equal(agile__ring_poll(&cl, cpl, 16, &n), AGILE_OK);
    assert_int_equal(n, 8);
    assert_int_equal(agile__ring_poll(&cl, cpl, 16, &n), AGILE_OK);
    assert_int_equal(n, 0);
    for (unsigned i = 8; i < 12; i++) {
        assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
        assert_true(got);
        assert_int_equal(o->u.nop.cookie, i);
    }
    unpair(&w, &cl);

    /* completion back-pressure: a client that never reaps stops being served */
    pair(&w, &cl, 4, 64);
    for (unsigned i = 0; i < 4; i++) {
        nop(c, i);
        assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_OK);
        assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
        assert_true(got);
        assert_int_equal(agile__ring_complete(&w, o, AGILE_OK, 0), AGILE_OK);
    }
    for (unsigned i = 4; i < 8; i++) {
        nop(c, i);
        assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_OK);
    }
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
    assert_false(got); /* commands pending, but no room for their completions */
    assert_int_equal(agile__ring_wait_cmd(&w, 5 * MS), AGILE_ETIMEDOUT);
    /* both rings full: a blocking submit refuses instead of deadlocking */
    nop(c, 8);
    assert_int_equal(agile__ring_submit(&cl, c, 0, SEC, NULL), AGILE_EFULL);
    assert_int_equal(agile__ring_wait(&cl, cpl, 0), AGILE_OK);
    assert_int_equal(agile__ring_wait_cmd(&w, 0), AGILE_OK);
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
    assert_true(got);
    assert_int_equal(o->seq, 4);
    unpair(&w, &cl);
    free(c);
    free(o);
}

static void test_sticky_error_barrier(void **state)
{
    (void)state;
    agile__ring_worker w;
    agile__ring_client cl;
    agile__ring_cmd *c = cmd_new(), *o = cmd_new();
    agile__ring_cpl cpl;
    uint64_t eseq = 99;
    bool got;
    pair(&w, &cl, 16, 256);
    server_arg a = {.w = &w, .status_of_seq1 = AGILE_EBOUNDS};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, server, &a), 0);
    for (unsigned i = 0; i < 4; i++) {
        nop(c, i);
        assert_int_equal(agile__ring_submit(&cl, c, 0, SEC, NULL), AGILE_OK);
    }
    assert_int_equal(agile__ring_barrier(&cl, 0, 5 * SEC, &eseq), AGILE_EBOUNDS);
    assert_int_equal(eseq, 1);
    assert_int_equal(agile__ring_client_error(&cl, NULL), AGILE_OK); /* cleared */
    assert_int_equal(agile__ring_barrier(&cl, 0, 5 * SEC, &eseq), AGILE_OK);
    atomic_store(&a.stop, true);
    pthread_join(th, NULL);

    /* worker-side sticky error: the BARRIER completion carries it (status, failing seq) */
    for (unsigned i = 0; i < 2; i++) {
        nop(c, 100 + i);
        assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_OK);
        assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
        assert_int_equal(agile__ring_complete(&w, o, i ? AGILE_ENOENT : AGILE_OK, 0), AGILE_OK);
    }
    memset(c, 0, offsetof(agile__ring_cmd, raw));
    c->opcode = AGILE_RING_OP_BARRIER;
    assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_OK);
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
    /* completing out of order is refused */
    agile__ring_cmd early = *o;
    early.seq = o->seq + 1;
    assert_int_equal(agile__ring_complete(&w, &early, AGILE_OK, 0), AGILE_EINVAL);
    assert_int_equal(agile__ring_complete(&w, o, AGILE_OK, 0), AGILE_OK);
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(agile__ring_wait(&cl, &cpl, 0), AGILE_OK);
    assert_int_equal(agile__ring_wait(&cl, &cpl, 0), AGILE_OK);
    assert_int_equal(cpl.opcode, AGILE_RING_OP_BARRIER);
    assert_int_equal(cpl.status, AGILE_ENOENT);
    assert_int_equal(cpl.result, cpl.seq - 1);
    assert_int_equal(agile__ring_client_error(&cl, &eseq), AGILE_ENOENT);
    assert_int_equal(eseq, cpl.seq - 1);
    /* waiting for a seq never submitted is refused, not a hang */
    assert_int_equal(agile__ring_wait_seq(&cl, 1000, SEC, NULL), AGILE_EINVAL);
    unpair(&w, &cl);
    free(c);
    free(o);
}

/* ---- processes ----------------------------------------------------------------------------- */

#define MANY 1000000u

/* Client in the child: submit MANY NOPs pipelined, reap and check each completion. */
static int many_client(int fd)
{
    agile__ring_client cl;
    agile__ring_peer peer;
    agile__ring_cmd *c = calloc(1, sizeof *c);
    agile__ring_cpl cpl[64];
    uint64_t expect = 0;
    uint32_t n;
    if (!c || agile__ring_peer_pid(getppid(), &peer) != AGILE_OK ||
        agile__ring_client_init(&cl, fd, &peer) != AGILE_OK)
        return 10;
    for (uint64_t i = 0; i < MANY;) {
        nop(c, i);
        int rv = agile__ring_submit(&cl, c, AGILE_RING_NONBLOCK, 0, NULL);
        if (rv == AGILE_OK) {
            i++;
        } else if (rv == AGILE_EFULL) {
            if (agile__ring_wait(&cl, cpl, 10 * SEC) != AGILE_OK) return 11;
            if (cpl[0].seq != expect || cpl[0].result != expect) return 12;
            expect++;
        } else {
            return 13;
        }
        if (agile__ring_poll(&cl, cpl, 64, &n) != AGILE_OK) return 14;
        for (uint32_t k = 0; k < n; k++, expect++)
            if (cpl[k].seq != expect || cpl[k].result != expect || cpl[k].status) return 15;
    }
    while (expect < MANY) {
        if (agile__ring_wait(&cl, cpl, 10 * SEC) != AGILE_OK || cpl[0].seq != expect) return 16;
        expect++;
    }
    agile__ring_client_fini(&cl);
    free(c);
    return 0;
}

static void test_two_processes_1m(void **state)
{
    (void)state;
    agile__ring_worker w;
    agile__ring_peer peer;
    agile__ring_cmd *o = cmd_new();
    assert_int_equal(agile__ring_worker_init(&w, 256, 64, NULL), AGILE_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(many_client(dup(w.reg.fd)));
    assert_int_equal(agile__ring_peer_pid(pid, &peer), AGILE_OK);
    agile__ring_worker_set_peer(&w, &peer);
    uint64_t t0 = agile__now_ns(), served = 0;
    int rv;
    for (;;) {
        rv = agile__ring_wait_cmd(&w, 10 * SEC);
        if (rv != AGILE_OK) break;
        bool got;
        assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
        if (!got) continue;
        assert_int_equal(o->u.nop.cookie, served);
        assert_int_equal(agile__ring_complete(&w, o, AGILE_OK, o->u.nop.cookie), AGILE_OK);
        served++;
    }
    /* the client closes its side after the last completion */
    assert_int_equal(rv, AGILE_ECLOSED);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(served, MANY);
    print_message("    1M commands across processes: %.2f s\n",
                  (double)(agile__now_ns() - t0) / 1e9);
    agile__ring_worker_fini(&w);
    free(o);
}

/* The client is SIGKILLed while the worker waits for its next command. */
static void test_client_dies(void **state)
{
    (void)state;
    agile__ring_worker w;
    agile__ring_peer peer;
    agile__ring_cmd *o = cmd_new();
    bool got;
    assert_int_equal(agile__ring_worker_init(&w, 16, 256, NULL), AGILE_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        agile__ring_client cl;
        agile__ring_cmd *c = calloc(1, sizeof *c);
        if (!c || agile__ring_client_init(&cl, dup(w.reg.fd), NULL) != AGILE_OK) _exit(1);
        nop(c, 7);
        agile__ring_submit(&cl, c, 0, 0, NULL);
        /* half-written command: the slot is filled, the tail never published */
        memset(cl.reg.cmd + 256, 0x41, 100);
        usleep(100000); /* die while the worker is asleep on the futex */
        raise(SIGKILL);
        _exit(2);
    }
    assert_int_equal(agile__ring_peer_pid(pid, &peer), AGILE_OK);
    agile__ring_worker_set_peer(&w, &peer);
    assert_int_equal(agile__ring_wait_cmd(&w, 5 * SEC), AGILE_OK);
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
    assert_true(got);
    assert_int_equal(agile__ring_complete(&w, o, AGILE_OK, 0), AGILE_OK);
    uint64_t t0 = agile__now_ns();
    /* ECLOSED, not ETIMEDOUT, is the check: the death was noticed, not waited out */
    assert_int_equal(agile__ring_wait_cmd(&w, 120 * SEC), AGILE_ECLOSED);
    uint64_t dt = agile__now_ns() - t0;
    print_message("    client killed ~100 ms into the wait; noticed after %.1f ms\n",
                  (double)dt / 1e6);
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
    assert_false(got);           /* the unpublished half command is never seen */
    agile__ring_worker_fini(&w); /* cleanup: unmap, close, pidfd closed */
    assert_int_equal(w.reg.fd, -1);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    free(o);
}

/* The worker is SIGKILLed while the client waits for a completion. */
static void test_worker_dies(void **state)
{
    (void)state;
    agile__ring_worker w;
    agile__ring_client cl;
    agile__ring_peer peer;
    agile__ring_cmd *c = cmd_new();
    agile__ring_cpl cpl;
    assert_int_equal(agile__ring_worker_init(&w, 16, 256, NULL), AGILE_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* serve exactly one command, then hang: the parent kills us */
        server_arg a = {.w = &w, .count = 1};
        server(&a);
        usleep(100000); /* die while the client is asleep waiting for its completion */
        raise(SIGKILL);
        _exit(0);
    }
    int fd = dup(w.reg.fd);
    agile__ring_region_fini(&w.reg); /* the parent is only the client now */
    assert_int_equal(agile__ring_peer_pid(pid, &peer), AGILE_OK);
    assert_int_equal(agile__ring_client_init(&cl, fd, &peer), AGILE_OK);
    nop(c, 1);
    uint64_t seq;
    int32_t st;
    assert_int_equal(agile__ring_submit(&cl, c, 0, SEC, &seq), AGILE_OK);
    assert_int_equal(agile__ring_wait_seq(&cl, seq, 5 * SEC, &st), AGILE_OK);
    assert_int_equal(st, AGILE_OK);
    assert_int_equal(agile__ring_submit(&cl, c, 0, SEC, &seq), AGILE_OK);
    uint64_t t0 = agile__now_ns();
    assert_int_equal(agile__ring_wait(&cl, &cpl, 120 * SEC), AGILE_ECLOSED);
    uint64_t dt = agile__now_ns() - t0;
    print_message("    worker killed ~100 ms into the wait; noticed after %.1f ms\n",
                  (double)dt / 1e6);
    assert_int_equal(agile__ring_barrier(&cl, 0, 30 * SEC, NULL), AGILE_ECLOSED);
    agile__ring_client_fini(&cl);
    int wst;
    assert_int_equal(waitpid(pid, &wst, 0), pid);

    /* an orderly worker exit (closed word) is noticed at once, without a peer check */
    pair(&w, &cl, 8, 64);
    agile__ring_worker_fini(&w);
    assert_int_equal(agile__ring_wait(&cl, &cpl, 30 * SEC), AGILE_ECLOSED);
    nop(c, 2);
    assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_ECLOSED);
    agile__ring_client_fini(&cl);
    free(c);
}

/* ---- scribbling -------------------------------------------------------------------------- */

typedef struct {
    agile__ring_region *r;
    atomic_bool stop;
} scribble_arg;

static void *scribbler(void *p)
{
    scribble_arg *a = p;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    size_t bytes = (size_t)a->r->g.slots * a->r->g.slot_size;
    while (!atomic_load_explicit(&a->stop, memory_order_relaxed)) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t off = (size_t)(x % bytes) & ~(size_t)3;
        uint32_t v = (uint32_t)(x >> 32);
        /* aim at the length and opcode fields often: those are what a TOCTOU attack flips */
        if ((x & 3) == 0) off = (off / a->r->g.slot_size) * a->r->g.slot_size + 8;
        memcpy(a->r->cmd + off, &v, 4);
        if ((x & 255) == 0)
            atomic_store_explicit(&a->r->cmd_ctl->tail, x >> 40, memory_order_relaxed);
    }
    return NULL;
}

static void test_scribbling_peer(void **state)
{
    (void)state;
    agile__ring_worker w;
    agile__ring_client cl;
    agile__ring_cmd *c = cmd_new(), *o = cmd_new();
    agile__log_set_level(AGILE_LOG_ERROR); /* every broken ring warns: thousands here */
    pair(&w, &cl, 8, 256);
    /* fill every slot with a valid command first, then let the "client" thread rewrite them */
    c->opcode = AGILE_RING_OP_LAUNCH;
    c->u.launch.params = agile__blob_of("0123456789abcdef", 16);
    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(agile__ring_submit(&cl, c, 0, 0, NULL), AGILE_OK);
    scribble_arg a = {.r = &cl.reg};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, scribbler, &a), 0);
    unsigned ok = 0, bad = 0;
    uint64_t end = agile__now_ns() + 500 * MS;
    for (unsigned i = 0; agile__now_ns() < end; i++) {
        const uint8_t *slot = cl.reg.cmd + (size_t)(i & 7) * 256;
        int rv = agile__ring_cmd_decode(slot, 256, i & 7, o);
        if (rv == AGILE_OK) {
            ok++;
            assert_true(o->length <= 256 - 32);
            if (o->opcode == AGILE_RING_OP_LAUNCH) assert_true(o->u.launch.params.n <= o->length);
        } else {
            assert_int_equal(rv, AGILE_EPROTO);
            bad++;
        }
        /* the full worker path too: reset its view and let it read counters and slots */
        bool got;
        w.broken = false;
        w.cmd_head = i & 7;
        w.cpl_tail = i & 7;
        rv = agile__ring_next(&w, o, &got);
        assert_true(rv == AGILE_OK || rv == AGILE_EPROTO);
    }
    atomic_store(&a.stop, true);
    pthread_join(th, NULL);
    print_message("    decodes under scribbling: %u accepted, %u rejected\n", ok, bad);
    assert_true(bad > 0);
    w.broken = true; /* its counters are garbage now: do not let fini trust them */
    unpair(&w, &cl);
    free(c);
    free(o);
}

/* ---- one dispatch thread, many rings -------------------------------------------------------- */

typedef struct {
    agile__ring_client *c;
    int64_t delay_ns;
} late_arg;

static void *late_submit(void *p)
{
    late_arg *a = p;
    agile__ring_cmd *c = calloc(1, sizeof *c);
    struct timespec ts = {0, (long)a->delay_ns};
    nanosleep(&ts, NULL);
    nop(c, 5);
    agile__ring_submit(a->c, c, 0, SEC, NULL);
    free(c);
    return NULL;
}

static void test_wait_any(void **state)
{
    (void)state;
    enum { N = 4 };
    agile__ring_worker w[N], *wp[N];
    agile__ring_client cl[N];
    int32_t st[N];
    for (int i = 0; i < N; i++) {
        pair(&w[i], &cl[i], 8, 64);
        wp[i] = &w[i];
    }
    assert_int_equal(agile__ring_wait_any(wp, N, 0, st), AGILE_ETIMEDOUT);
    assert_int_equal(agile__ring_wait_any(wp, N, 20 * MS, st), AGILE_ETIMEDOUT);
    for (int i = 0; i < N; i++)
        assert_int_equal(st[i], AGILE_ETIMEDOUT);
    /* a command arrives on ring 2 while we sleep on all four */
    late_arg a = {&cl[2], 50 * MS};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, late_submit, &a), 0);
    uint64_t t0 = agile__now_ns();
    assert_int_equal(agile__ring_wait_any(wp, N, 120 * SEC, st), AGILE_OK);
    uint64_t dt = agile__now_ns() - t0;
    pthread_join(th, NULL);
    assert_int_equal(st[2], AGILE_OK);
    assert_int_equal(st[0], AGILE_ETIMEDOUT);
    assert_true(dt >= 40 * MS); /* it slept until the command came (no upper bound: load) */
    assert_true(atomic_load(&w[2].reg.cmd_ctl->data_ftx) > 0); /* woken through the futex */
    for (int i = 0; i < N; i++)
        assert_int_equal(atomic_load(&w[i].reg.cmd_ctl->cons_sleeping), 0);
    /* a client that leaves is reported too */
    agile__ring_client_fini(&cl[0]);
    assert_int_equal(agile__ring_wait_any(wp, N, 120 * SEC, st), AGILE_OK);
    assert_int_equal(st[0], AGILE_ECLOSED);
    assert_int_equal(st[1], AGILE_ETIMEDOUT);
    assert_int_equal(st[2], AGILE_OK);
    assert_int_equal(agile__ring_wait_any(wp, AGILE_RING_WAIT_ANY_MAX + 1, 0, st), AGILE_EINVAL);
    for (int i = 0; i < N; i++) {
        if (i) agile__ring_client_fini(&cl[i]);
        agile__ring_worker_fini(&w[i]);
    }
}

static void test_batch(void **state)
{
    (void)state;
    agile__ring_worker w;
    agile__ring_client cl;
    agile__ring_cmd *c = cmd_new(), *o = cmd_new();
    agile__ring_cpl cpl;
    bool got;
    pair(&w, &cl, 16, 64);
    for (unsigned i = 0; i < 5; i++) {
        nop(c, i);
        assert_int_equal(agile__ring_submit(&cl, c, AGILE_RING_MORE, 0, NULL), AGILE_OK);
    }
    assert_int_equal(agile__ring_pending(&w), 0); /* not published yet */
    assert_int_equal(agile__ring_next(&w, o, &got), AGILE_OK);
    assert_false(got);
    agile__ring_flush(&cl);
    assert_int_equal(agile__ring_pending(&w), 5);
    /* a batch longer than the ring publishes itself rather than waiting on itself */
    server_arg a = {.w = &w, .count = 5 + 40};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, server, &a), 0);
    uint64_t reaped = 0;
    for (unsigned i = 5; i < 45; i++) {
        nop(c, i);
        int rv;
        while ((rv = agile__ring_submit(&cl, c, AGILE_RING_MORE, SEC, NULL)) == AGILE_EFULL) {
            assert_int_equal(agile__ring_wait(&cl, &cpl, SEC), AGILE_OK);
            assert_int_equal(cpl.seq, reaped++);
        }
        assert_int_equal(rv, AGILE_OK);
    }
    /* waiting publishes the tail of the batch */
    while (reaped < 45) {
        assert_int_equal(agile__ring_wait(&cl, &cpl, 5 * SEC), AGILE_OK);
        assert_int_equal(cpl.seq, reaped++);
    }
    pthread_join(th, NULL);
    assert_int_equal(a.served, 45);
    unpair(&w, &cl);
    free(c);
    free(o);
}

int main(void)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_every_op),
        cmocka_unit_test(test_codec_too_big),
        cmocka_unit_test(test_decode_rejects),
        cmocka_unit_test(test_worker_breaks_on_garbage),
        cmocka_unit_test(test_header_validation),
        cmocka_unit_test(test_wraparound),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_sticky_error_barrier),
        cmocka_unit_test(test_two_processes_1m),
        cmocka_unit_test(test_client_dies),
        cmocka_unit_test(test_worker_dies),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_wait_any),
        cmocka_unit_test(test_scribbling_peer),
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
