/* dataplane_test: the worker's data plane in one process on the host backend (the message
 * handler driven directly, as the fuzzer does; the ring fd read back from the session's fd
 * socket): attach, NOP, in-window memset/memcpy, bounds, sticky errors at the barrier, host
 * WAIT/SIGNAL, LAUNCH without a GPU, guarded module load, a malformed slot killing only its
 * session, and teardown of a session with a busy ring. Runs under ASan in CI. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>

#include "fdpass.h"
#include "dataplane.h"
#include "guard.h"
#include "ring/ring.h"
#include "twin.h"
#include "worker.h"

#define NS (5ll * 1000000000ll)

static agile__worker W;

typedef struct {
    agile__session *s;
    int sock; /* the client's end of the fd socket */
    uint32_t pipe;
    agile__ring_client rc;
} conn;

static int call(conn *c, agile__msg *m, agile__msg *rep, uint8_t **buf)
{
    uint8_t req[4096];
    size_t len = 0, replen = 0;
    m->h.req_id = 1;
    assert_int_equal(agile__msg_encode(m, req, sizeof req, &len), AGILE_OK);
    assert_int_equal(agile__worker_handle(&W, c->pipe, (uint32_t)getuid(), req, len, buf, &replen),
                     AGILE_OK);
    assert_int_equal(agile__msg_decode(*buf, replen, rep), AGILE_OK);
    return rep->h.status;
}

static int recv_fd(conn *c)
{
    uint8_t rec[AGILE_FDREC_SIZE];
    size_t got = 0;
    int fd = -1;
    assert_int_equal(agile__fd_recv(c->sock, &fd, rec, sizeof rec, &got), AGILE_OK);
    return fd;
}

static void open_conn_uid(conn *c, uint32_t pipe, uint32_t uid)
{
    int sp[2];
    memset(c, 0, sizeof *c);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    assert_int_equal(agile__session_new(&W, sp[0], uid, getpid(), &c->s), AGILE_OK);
    agile__session *b = agile__session_bind(&W, c->s->token[0], c->s->token[1], pipe, uid);
    assert_ptr_equal(b, c->s);
    agile__session_rele(b);
    c->sock = sp[1];
    c->pipe = pipe;
}

static void open_conn(conn *c, uint32_t pipe)
{
    open_conn_uid(c, pipe, (uint32_t)getuid());
}

/* A LEASE_GROW of `bytes` on c's session: the lease's offset in the tenant's window. */
static uint64_t lease_off(conn *c, uint64_t bytes)
{
    agile__msg m, rep;
    uint8_t *buf = NULL;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_LEASE_GROW;
    m.u.lease_grow_req.bytes = bytes;
    assert_int_equal(call(c, &m, &rep, &buf), AGILE_OK);
    uint64_t off = rep.u.lease_grow_rep.offset;
    assert_true(rep.u.lease_grow_rep.size >= bytes);
    free(buf);
    close(recv_fd(c));
    return off;
}

static void lease(conn *c, uint64_t bytes)
{
    (void)lease_off(c, bytes);
}

static void attach(conn *c)
{
    agile__msg m, rep;
    uint8_t *buf = NULL;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_RING_ATTACH;
    assert_int_equal(call(c, &m, &rep, &buf), AGILE_OK);
    free(buf);
    int fd = recv_fd(c);
    assert_true(fd >= 0);
    agile__ring_peer none = {-1, 0, NULL, NULL};
    assert_int_equal(agile__ring_client_init(&c->rc, fd, &none), AGILE_OK);
}

static void close_conn(conn *c)
{
    agile__ring_client_fini(&c->rc);
    agile__session_kill(c->s, "test done");
    agile__sessions_reap(&W);
    close(c->sock);
}

static void cmd0(agile__ring_cmd *cmd, uint16_t op)
{
    memset(cmd, 0, offsetof(agile__ring_cmd, raw));
    cmd->opcode = op;
}

static int32_t run1(conn *c, agile__ring_cmd *cmd)
{
    uint64_t seq;
    int32_t st = -1;
    assert_int_equal(agile__ring_submit(&c->rc, cmd, 0, NS, &seq), AGILE_OK);
    assert_int_equal(agile__ring_wait_seq(&c->rc, seq, NS, &st), AGILE_OK);
    return st;
}

static uint8_t *wbase(conn *c)
{
    return (uint8_t *)(uintptr_t)agile__window_base(agile__twin_window(c->s, 0));
}

static void test_nop_memset_memcpy_bounds(void **state)
{
    conn c;
    agile__ring_cmd cmd;
    uint64_t err_seq = 0;
    (void)state;
    open_conn(&c, 1);
    attach(&c);
    cmd0(&cmd, AGILE_RING_OP_NOP);
    cmd.u.nop.cookie = 42;
    assert_int_equal(run1(&c, &cmd), AGILE_OK);

    /* no window yet: bounds */
    cmd0(&cmd, AGILE_RING_OP_MEMSET);
    cmd.u.memset.count = 16;
    cmd.u.memset.elem_size = 1;
    assert_int_equal(run1(&c, &cmd), AGILE_EBOUNDS);
    assert_int_equal(agile__ring_barrier(&c.rc, 0, NS, &err_seq), AGILE_EBOUNDS);
    assert_int_equal(err_seq, 1);

    lease(&c, 1 << 20);
    uint64_t W0 = agile__window_size(agile__twin_window(c.s, 0));
    uint8_t *b = wbase(&c);
    /* the client's addresses: only the offset counts (another base, same offsets) */
    uint64_t cbase = 0x7f0000000000ull & ~(W0 - 1);
    cmd0(&cmd, AGILE_RING_OP_MEMSET);
    cmd.u.memset.dst = cbase + 4096;
    cmd.u.memset.count = 1000;
    cmd.u.memset.value = 0xAB;
    cmd.u.memset.elem_size = 1;
    assert_int_equal(run1(&c, &cmd), AGILE_OK);
    assert_int_equal(b[4096], 0xAB);
    assert_int_equal(b[4096 + 999], 0xAB);
    assert_int_equal(b[4096 + 1000], 0);

    cmd0(&cmd, AGILE_RING_OP_MEMSET); /* 32-bit pattern */
    cmd.u.memset.dst = cbase + 8192;
    cmd.u.memset.count = 4;
    cmd.u.memset.value = 0x01020304;
    cmd.u.memset.elem_size = 4;
    assert_int_equal(run1(&c, &cmd), AGILE_OK);
    assert_int_equal(b[8192], 4);
    assert_int_equal(b[8192 + 15], 1);

    cmd0(&cmd, AGILE_RING_OP_MEMCPY);
    cmd.u.memcpy.dst = cbase + 65536;
    cmd.u.memcpy.src = cbase + 4096;
    cmd.u.memcpy.bytes = 1000;
    assert_int_equal(run1(&c, &cmd), AGILE_OK);
    assert_memory_equal(b + 65536, b + 4096, 1000);

    /* an extent past the window's end: refused, nothing written */
    cmd0(&cmd, AGILE_RING_OP_MEMCPY);
    cmd.u.memcpy.dst = cbase + 131072;
    cmd.u.memcpy.src = cbase + W0 - 10;
    cmd.u.memcpy.bytes = 100;
    assert_int_equal(run1(&c, &cmd), AGILE_EBOUNDS);
    assert_int_equal(b[131072], 0);
    cmd0(&cmd, AGILE_RING_OP_MEMSET);
    cmd.u.memset.dst = cbase + 5;
    cmd.u.memset.count = UINT64_MAX / 2; /* count * elem overflows */
    cmd.u.memset.elem_size = 4;
    assert_int_equal(run1(&c, &cmd), AGILE_EINVAL);
    assert_int_equal(agile__ring_barrier(&c.rc, 0, NS, &err_seq), AGILE_EBOUNDS);
    assert_int_equal(agile__ring_barrier(&c.rc, 0, NS, &err_seq), AGILE_OK);

    /* LAUNCH on the host backend */
    cmd0(&cmd, AGILE_RING_OP_LAUNCH);
    cmd.u.launch.function = 12345;
    assert_int_equal(run1(&c, &cmd), AGILE_ENOTSUP);
    assert_int_equal(agile__ring_barrier(&c.rc, 0, NS, NULL), AGILE_ENOTSUP);

    /* host WAIT holds the ring until the counter reaches the value; SIGNAL writes it */
    uint32_t *ctr = (uint32_t *)(void *)(b + 12288);
    *ctr = 0;
    uint64_t s1, s2;
    cmd0(&cmd, AGILE_RING_OP_WAIT);
    cmd.u.wait.counter = cbase + 12288;
    cmd.u.wait.value = 2;
    assert_int_equal(agile__ring_submit(&c.rc, &cmd, 0, NS, &s1), AGILE_OK);
    cmd0(&cmd, AGILE_RING_OP_SIGNAL);
    cmd.u.signal.counter = cbase + 12292;
    cmd.u.signal.value = 9;
    assert_int_equal(agile__ring_submit(&c.rc, &cmd, 0, NS, &s2), AGILE_OK);
    usleep(100000);
    assert_int_equal(ctr[1], 0);
    __atomic_store_n(ctr, 2, __ATOMIC_RELEASE);
    int32_t st = -1;
    assert_int_equal(agile__ring_wait_seq(&c.rc, s2, NS, &st), AGILE_OK);
    assert_int_equal(st, AGILE_OK);
    assert_int_equal(ctr[1], 9);
    close_conn(&c);
}

static const char add_ptx[] = ".version 8.0\n.target sm_90\n.address_size 64\n"
                              ".visible .entry k(.param .u64 p, .param .u32 v)\n{\n"
                              "\t.reg .b64 %rd<2>;\n\t.reg .b32 %r<2>;\n"
                              "\tld.param.u64 %rd1, [p];\n\tld.param.u32 %r1, [v];\n"
                              "\tst.global.u32 [%rd1], %r1;\n\tret;\n}\n";
static const char bad_ptx[] = ".version 8.0\n.target sm_90\n.address_size 64\n"
                              ".visible .entry k(.param .u64 p)\n{\n"
                              "\ttensormap.replace.tile.global_address.global.b1024.b64 [p], 0;\n"
                              "\tret;\n}\n";

static void test_modules(void **state)
{
    conn c;
    agile__msg m, rep;
    uint8_t *buf = NULL;
    (void)state;
    open_conn(&c, 2);
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_LOAD;
    m.u.module_load_req.ptx = agile__blob_of(add_ptx, strlen(add_ptx));
    assert_int_equal(call(&c, &m, &rep, &buf), AGILE_OK);
    uint64_t mod = rep.u.module_load_rep.handle;
    free(buf);
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_FUNCTION;
    m.u.module_function_req.module = mod;
    m.u.module_function_req.name = agile__blob_of("k", 1);
    assert_int_equal(call(&c, &m, &rep, &buf), AGILE_OK);
    assert_int_equal(rep.u.module_function_rep.nparams, 2);
    assert_int_equal(rep.u.module_function_rep.param_sizes.n, 16);
    free(buf);
    m.u.module_function_req.name = agile__blob_of("nope", 4);
    assert_int_equal(call(&c, &m, &rep, &buf), AGILE_ENOENT);
    free(buf);

    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_LOAD;
    m.u.module_load_req.ptx = agile__blob_of(bad_ptx, strlen(bad_ptx));
    assert_int_equal(call(&c, &m, &rep, &buf), AGILE_EREJECT);
    char msg[512];
    assert_int_equal(agile__blob_str(rep.u.error.message, msg, sizeof msg), AGILE_OK);
    assert_non_null(strstr(msg, "<ptx>:6: "));
    free(buf);

    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_UNLOAD;
    m.u.handle.handle = mod;
    assert_int_equal(call(&c, &m, &rep, &buf), AGILE_OK);
    free(buf);
    close_conn(&c);
}

static void test_malformed_slot_kills_only_its_session(void **state)
{
    conn a, b;
    agile__ring_cmd cmd;
    (void)state;
    open_conn(&a, 3);
    open_conn(&b, 4);
    attach(&a);
    attach(&b);
    cmd0(&cmd, AGILE_RING_OP_NOP);
    assert_int_equal(run1(&a, &cmd), AGILE_OK);
    /* garbage in a's next slot, published by hand */
    uint8_t *slot = a.rc.reg.cmd + (a.rc.cmd_tail & a.rc.reg.mask) * a.rc.reg.g.slot_size;
    memset(slot, 0xEE, a.rc.reg.g.slot_size);
    atomic_store(&a.rc.reg.cmd_ctl->tail, a.rc.cmd_tail + 1);
    atomic_fetch_add(&a.rc.reg.cmd_ctl->data_ftx, 1);
    for (int i = 0; i < 12000; i++) { /* up to 120 s: generous for a loaded machine */
        pthread_mutex_lock(&W.mu);
        int dead = a.s->state == SESS_DEAD;
        pthread_mutex_unlock(&W.mu);
        if (dead) break;
        usleep(10000);
    }
    assert_int_equal(a.s->state, SESS_DEAD);
    assert_int_equal(run1(&b, &cmd), AGILE_OK);
    close_conn(&a);
    assert_int_equal(run1(&b, &cmd), AGILE_OK);
    close_conn(&b);
}

static void test_teardown_with_busy_ring(void **state)
{
    conn c;
    agile__ring_cmd cmd;
    (void)state;
    open_conn(&c, 5);
    lease(&c, 64 << 20);
    attach(&c);
    for (int i = 0; i < 200; i++) {
        cmd0(&cmd, AGILE_RING_OP_MEMSET);
        cmd.u.memset.count = 32 << 20;
        cmd.u.memset.elem_size = 1;
        cmd.u.memset.value = (uint32_t)i & 0xff;
        if (agile__ring_submit(&c.rc, &cmd, AGILE_RING_NONBLOCK, 0, NULL) != AGILE_OK) break;
    }
    close_conn(&c); /* objects freed while the dispatcher works on the ring */
    assert_int_equal(W.objs.live, 0);
}

/* The cuda backend's command path (worker streams, events, the completion queue) against
 * mockcuda, which runs memory operations on host memory at once: bookkeeping, not GPU
 * behaviour (tests/py/test_dataplane_gpu.py is that). */
static void test_cuda_mock_memops(void **state)
{
    conn c;
    agile__ring_cmd cmd;
    uint64_t seq[8], err_seq = 0;
    (void)state;
    open_conn(&c, 6);
    attach(&c);
    lease(&c, 1 << 20);
    uint8_t *b = wbase(&c);
    for (int i = 0; i < 4; i++) { /* several streams, batched */
        cmd0(&cmd, AGILE_RING_OP_MEMSET);
        cmd.tag = (uint64_t)i;
        cmd.u.memset.dst = 4096u * (unsigned)i;
        cmd.u.memset.count = 4096;
        cmd.u.memset.value = 0x10u + (unsigned)i;
        cmd.u.memset.elem_size = 1;
        assert_int_equal(agile__ring_submit(&c.rc, &cmd, AGILE_RING_MORE, NS, &seq[i]), AGILE_OK);
    }
    cmd0(&cmd, AGILE_RING_OP_MEMCPY);
    cmd.u.memcpy.dst = 65536;
    cmd.u.memcpy.src = 4096;
    cmd.u.memcpy.bytes = 4096;
    assert_int_equal(agile__ring_submit(&c.rc, &cmd, 0, NS, &seq[4]), AGILE_OK);
    int32_t st = -1;
    assert_int_equal(agile__ring_wait_seq(&c.rc, seq[4], NS, &st), AGILE_OK);
    assert_int_equal(st, AGILE_OK);
    assert_int_equal(b[0], 0x10);
    assert_int_equal(b[3 * 4096 + 4095], 0x13);
    assert_int_equal(b[65536], 0x11);
    cmd0(&cmd, AGILE_RING_OP_MEMSET);
    cmd.u.memset.dst = agile__window_size(agile__twin_window(c.s, 0)) - 8;
    cmd.u.memset.count = 64;
    cmd.u.memset.elem_size = 1;
    assert_int_equal(run1(&c, &cmd), AGILE_EBOUNDS);
    cmd0(&cmd, AGILE_RING_OP_MEMSET); /* a 4-byte pattern that is not one byte: no D32 */
    cmd.u.memset.count = 4;
    cmd.u.memset.value = 0x01020304;
    cmd.u.memset.elem_size = 4;
    assert_int_equal(run1(&c, &cmd), AGILE_ENOTSUP);
    assert_int_equal(agile__ring_barrier(&c.rc, 0, NS, &err_seq), AGILE_EBOUNDS);
    assert_int_equal(err_seq, seq[4] + 1);
    cmd0(&cmd, AGILE_RING_OP_NOP);
    assert_int_equal(run1(&c, &cmd), AGILE_OK);
    assert_int_equal(agile__ring_barrier(&c.rc, 0, NS, NULL), AGILE_OK);
    close_conn(&c);
}

/* Fault containment (issue 13) on mockcuda: tenant B's kernel raises a sticky error (the
 * mock's "fault*" kernels do, as a trap does on a GPU) while tenant A has commands in flight.
 * B gets AGILE_EFAULT and its session ends; A gets AGILE_ERESET for what was in flight (its
 * stream-order SIGNAL written anyway), keeps its data and goes on; the context was reset
 * once; the record names B and its kernel; a fresh tenant C leases and runs afterwards. */
static const char fault_ptx[] = ".version 8.0\n.target sm_90\n.address_size 64\n"
                                ".visible .entry fault_k()\n{\n\tret;\n}\n";

static uint64_t load_fn(conn *c, const char *ptx, const char *name);

/* A one-thread launch of fn on c's ring; its seq. */
static uint64_t launch1(conn *c, uint64_t fn)
{
    agile__ring_cmd cmd;
    uint64_t seq = 0;
    cmd0(&cmd, AGILE_RING_OP_LAUNCH);
    cmd.u.launch.function = fn;
    cmd.u.launch.grid_x = cmd.u.launch.grid_y = cmd.u.launch.grid_z = 1;
    cmd.u.launch.block_x = cmd.u.launch.block_y = cmd.u.launch.block_z = 1;
    assert_int_equal(agile__ring_submit(&c->rc, &cmd, 0, NS, &seq), AGILE_OK);
    return seq;
}

static void test_cuda_mock_fault_recovery(void **state)
{
    conn a, b, c;
    agile__ring_cmd cmd;
    uint64_t seq_set = 0, seq_sig = 0, seq_l = 0, err_seq = 0;
    int32_t st = -1;
    agile__dp_faults f;
    void (*sticky_busy)(int), *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    int (*resets)(void);
    (void)state;
    assert_non_null(lib);
    *(void **)&sticky_busy = dlsym(lib, "mockcuda_events_busy");
    *(void **)&resets = dlsym(lib, "mockcuda_resets");
    assert_true(sticky_busy && resets);
    int r0 = resets();

    open_conn_uid(&a, 11, 50001);
    lease(&a, 2 << 20);
    attach(&a);
    open_conn_uid(&b, 12, 50002);
    lease(&b, 2 << 20);
    attach(&b);
    uint8_t *wa = wbase(&a);
    cmd0(&cmd, AGILE_RING_OP_MEMSET); /* A's data, before the fault */
    cmd.u.memset.count = 4096;
    cmd.u.memset.value = 0x5a;
    cmd.u.memset.elem_size = 1;
    assert_int_equal(run1(&a, &cmd), AGILE_OK);

    uint64_t fn = load_fn(&b, fault_ptx, "fault_k");

    sticky_busy(1); /* A's GPU work stays in flight until the fault */
    cmd0(&cmd, AGILE_RING_OP_MEMSET);
    cmd.u.memset.dst = 4096;
    cmd.u.memset.count = 4096;
    cmd.u.memset.value = 0x11;
    cmd.u.memset.elem_size = 1;
    assert_int_equal(agile__ring_submit(&a.rc, &cmd, AGILE_RING_MORE, NS, &seq_set), AGILE_OK);
    cmd0(&cmd, AGILE_RING_OP_SIGNAL);
    cmd.u.signal.counter = 8192;
    cmd.u.signal.value = 7;
    assert_int_equal(agile__ring_submit(&a.rc, &cmd, 0, NS, &seq_sig), AGILE_OK);
    wa[8192] = 0; /* the mock wrote it at once; the recovery must write it again */
    seq_l = launch1(&b, fn);

    assert_int_equal(agile__ring_wait_seq(&b.rc, seq_l, 6 * NS, &st), AGILE_OK);
    assert_int_equal(st, AGILE_EFAULT);
    assert_int_equal(agile__ring_wait_seq(&a.rc, seq_sig, 6 * NS, &st), AGILE_OK);
    assert_int_equal(st, AGILE_ERESET);
    sticky_busy(0);
    assert_int_equal(resets(), r0 + 1);
    assert_int_equal(wa[8192], 7);
    assert_int_equal(wa[0], 0x5a); /* A's lease kept its data through the reset */
    assert_int_equal(wa[4095], 0x5a);
    assert_int_equal(agile__ring_barrier(&a.rc, 0, NS, &err_seq), AGILE_ERESET);
    assert_int_equal(err_seq, seq_set);
    cmd0(&cmd, AGILE_RING_OP_MEMSET); /* A goes on */
    cmd.u.memset.dst = 12288;
    cmd.u.memset.count = 16;
    cmd.u.memset.value = 0x22;
    cmd.u.memset.elem_size = 1;
    assert_int_equal(run1(&a, &cmd), AGILE_OK);
    assert_int_equal(wa[12288 + 15], 0x22);
    assert_int_equal(agile__ring_barrier(&a.rc, 0, NS, NULL), AGILE_OK);

    agile__dp_faults_get(&W, 0, &f);
    assert_int_equal(f.faults, 1);
    assert_int_equal(f.resets, 1);
    assert_int_equal(f.uid, 50002);
    assert_string_equal(f.kernel, "fault_k");
    assert_int_equal(f.victims, 1);
    assert_int_equal(f.err, agile_err_cuda(719)); /* CUDA_ERROR_LAUNCH_FAILED */
    /* recovered (the time it took is a figure: status prints recovery_ms; a loaded machine
     * moves it, so it is not a pass/fail here) */
    assert_true(f.recovery_ns > 0);
    printf("mock recovery took %.3f ms\n", (double)f.recovery_ns / 1e6);
    char *js = agile__worker_status(&W, 1, AGILE_STATUS_ALL); /* what agilectl status shows */
    assert_non_null(js);
    assert_non_null(strstr(js, "\"faults\":1,\"context_resets\":1,\"last_fault\":{\"uid\":50002,"
                               "\"kernel\":\"fault_k\",\"error\":")); /* the driver's name */
    free(js);
    pthread_mutex_lock(&W.mu);
    assert_int_equal(b.s->state, SESS_DEAD); /* B's sessions were ended */
    pthread_mutex_unlock(&W.mu);

    open_conn_uid(&c, 13, 50003); /* a fresh tenant after the reset */
    lease(&c, 2 << 20);
    attach(&c);
    cmd0(&cmd, AGILE_RING_OP_MEMSET);
    cmd.u.memset.count = 64;
    cmd.u.memset.value = 0x33;
    cmd.u.memset.elem_size = 1;
    assert_int_equal(run1(&c, &cmd), AGILE_OK);
    assert_int_equal(wbase(&c)[63], 0x33);
    /* B's session was ended by the worker: no reference of ours is left to kill */
    agile__ring_client_fini(&b.rc);
    agile__sessions_reap(&W);
    close(b.sock);
    close_conn(&c);
    close_conn(&a);
    dlclose(lib);
}

/* A guarded kernel's failed device assert (issue 12.10) on mockcuda: the guard gives a
 * module with a trap or __assertfail the violation record in mask mode too; the worker arms
 * it for the launch and the tenant's next barrier says AGILE_EGUARD with (kernel, assert
 * site) in the tag and the PTX line as result; the tenant goes on, nothing faulted. */
static const char assert_ptx[] = ".version 8.7\n.target sm_90\n.address_size 64\n"
                                 ".visible .entry assertfail_k()\n{\n\ttrap;\n\tret;\n}\n"
                                 ".visible .entry fine_k()\n{\n\tret;\n}\n";

static uint64_t load_fn(conn *c, const char *ptx, const char *name)
{
    agile__msg m, rep;
    uint8_t *buf = NULL;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_LOAD;
    m.u.module_load_req.ptx = agile__blob_of(ptx, strlen(ptx));
    assert_int_equal(call(c, &m, &rep, &buf), AGILE_OK);
    uint64_t mod = rep.u.module_load_rep.handle;
    free(buf);
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_FUNCTION;
    m.u.module_function_req.module = mod;
    m.u.module_function_req.name = agile__blob_of(name, strlen(name));
    assert_int_equal(call(c, &m, &rep, &buf), AGILE_OK);
    free(buf);
    return rep.u.module_function_rep.handle;
}

static void test_cuda_mock_device_assert(void **state)
{
    conn a;
    agile__ring_cmd cmd;
    agile__ring_cpl cpl;
    agile__dp_faults f;
    uint64_t seq, faults0;
    (void)state;
    agile__dp_faults_get(&W, 0, &f);
    faults0 = f.faults;
    open_conn_uid(&a, 15, 50005);
    lease(&a, 2 << 20);
    attach(&a);
    uint64_t fa = load_fn(&a, assert_ptx, "assertfail_k"), ff = load_fn(&a, assert_ptx, "fine_k");
    cmd0(&cmd, AGILE_RING_OP_LAUNCH);
    cmd.u.launch.function = fa;
    cmd.u.launch.grid_x = cmd.u.launch.grid_y = cmd.u.launch.grid_z = 1;
    cmd.u.launch.block_x = cmd.u.launch.block_y = cmd.u.launch.block_z = 1;
    assert_int_equal(run1(&a, &cmd), AGILE_OK); /* the launch itself is fine */
    cmd0(&cmd, AGILE_RING_OP_BARRIER);
    assert_int_equal(agile__ring_submit(&a.rc, &cmd, 0, NS, &seq), AGILE_OK);
    do
        assert_int_equal(agile__ring_wait(&a.rc, &cpl, NS), AGILE_OK);
    while (cpl.seq != seq);
    assert_int_equal(cpl.status, AGILE_EGUARD);
    assert_int_equal(cpl.tag, (uint64_t)1 << 32 | AGILE_GUARD_SITE_ASSERT);
    assert_int_equal(cpl.result, 42);
    a.rc.err_status = AGILE_OK; /* reported: as agile__ring_barrier clears it */
    cmd0(&cmd, AGILE_RING_OP_LAUNCH); /* the tenant goes on */
    cmd.u.launch.function = ff;
    cmd.u.launch.grid_x = cmd.u.launch.grid_y = cmd.u.launch.grid_z = 1;
    cmd.u.launch.block_x = cmd.u.launch.block_y = cmd.u.launch.block_z = 1;
    assert_int_equal(run1(&a, &cmd), AGILE_OK);
    assert_int_equal(agile__ring_barrier(&a.rc, 0, NS, NULL), AGILE_OK);
    agile__dp_faults_get(&W, 0, &f);
    assert_int_equal(f.faults, faults0); /* not a fault */
    close_conn(&a);
}

/* The H200's case (driver 580): after the fault the process's CUDA state stays lost, even
 * across a context reset. The suspect still gets AGILE_EFAULT, and the worker ends itself
 * the way SIGTERM ends it (caught here). */
static volatile sig_atomic_t got_term;
static void on_term(int sig)
{
    (void)sig;
    got_term = 1;
}

static void test_cuda_mock_fault_process_lost(void **state)
{
    conn b;
    uint64_t seq_l = 0, ns = 0;
    int32_t st = -1;
    void (*process)(int), *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    struct sigaction sa, old;
    (void)state;
    assert_non_null(lib);
    *(void **)&process = dlsym(lib, "mockcuda_sticky_process");
    assert_non_null(process);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    assert_int_equal(sigaction(SIGTERM, &sa, &old), 0);
    got_term = 0;
    process(1);

    open_conn_uid(&b, 22, 50022);
    lease(&b, 2 << 20);
    attach(&b);
    uint64_t fn = load_fn(&b, fault_ptx, "fault_k");
    seq_l = launch1(&b, fn);
    assert_int_equal(agile__ring_wait_seq(&b.rc, seq_l, 6 * NS, &st), AGILE_OK);
    assert_int_equal(st, AGILE_EFAULT);
    for (int i = 0; i < 6000 && !got_term; i++) /* posted before the worker ends itself */
        usleep(1000);
    assert_true(got_term);

    /* the rest of this process goes on: the mock's state comes back with a real reset */
    process(0);
    assert_int_equal(agile__backend_reset(W.be, 0, &ns), AGILE_OK);
    agile__ring_client_fini(&b.rc);
    agile__sessions_reap(&W);
    close(b.sock);
    assert_int_equal(sigaction(SIGTERM, &old, NULL), 0);
    dlclose(lib);
}

/* The test-only unguarded load: refused unless the worker's environment names the uid. */
static void test_unguarded_is_test_only(void **state)
{
    conn c;
    agile__msg m, rep;
    uint8_t *buf = NULL;
    char uid[16];
    (void)state;
    open_conn(&c, 14);
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_MODULE_LOAD;
    m.u.module_load_req.flags = AGILE_MODULE_LOAD_TEST_UNGUARDED;
    m.u.module_load_req.ptx = agile__blob_of(fault_ptx, strlen(fault_ptx));
    unsetenv("AGILE_TEST_UNGUARDED_UID");
    assert_int_equal(call(&c, &m, &rep, &buf), AGILE_EPERM);
    free(buf);
    snprintf(uid, sizeof uid, "%u", (unsigned)getuid() + 1);
    setenv("AGILE_TEST_UNGUARDED_UID", uid, 1); /* another uid's permission is not ours */
    assert_int_equal(call(&c, &m, &rep, &buf), AGILE_EPERM);
    free(buf);
    snprintf(uid, sizeof uid, "%u", (unsigned)getuid());
    setenv("AGILE_TEST_UNGUARDED_UID", uid, 1);
    assert_int_equal(call(&c, &m, &rep, &buf), AGILE_OK);
    free(buf);
    unsetenv("AGILE_TEST_UNGUARDED_UID");
    close_conn(&c);
}

static int backend = AGILE_BACKEND_KIND_HOST;

static int setup(void **state)
{
    char err[256] = "";
    (void)state;
    agile__log_set_level(AGILE_LOG_ERROR);
    agile__worker_zero(&W);
    W.cfg.dflt.quota = 256ull << 20;
    W.cfg.dflt.lease_step = 2ull << 20;
    int rv = agile__worker_init_core(&W, backend, NULL, err, sizeof err);
    if (rv != AGILE_OK) fprintf(stderr, "worker: %s\n", err);
    return rv;
}

static int teardown(void **state)
{
    (void)state;
    agile__worker_fini(&W);
    return 0;
}

/* Host ops above 16 KiB run in pieces and steps (non-temporal stores for memsets, copies in
 * copy order): every element size, unaligned ends and overlapping copies both ways give
 * what one memset/memmove would, the bytes around untouched; each completes as one command
 * and the ring's next command sees all of it. */
static void test_large_host_ops(void **state)
{
    conn c;
    agile__ring_cmd cmd;
    const uint64_t N = 6 << 20;
    (void)state;
    open_conn(&c, 40);
    attach(&c);
    lease(&c, N);
    uint8_t *b = wbase(&c), *want = malloc(N);
    assert_non_null(want);
    for (uint64_t i = 0; i < N; i++)
        b[i] = want[i] = (uint8_t)(i * 7 + 1);
    static const struct {
        uint32_t es, value;
        uint64_t off, count;
    } sets[] = {{1, 0x5a, 3, (1 << 20) + 5}, {2, 0xbeef, 2 * 3 + (1 << 21), 300001},
                {4, 0x01020304, 4 * 5 + (3 << 20), 200003}, {1, 0, 17, 16385}};
    for (size_t k = 0; k < sizeof sets / sizeof sets[0]; k++) {
        cmd0(&cmd, AGILE_RING_OP_MEMSET);
        cmd.u.memset.dst = sets[k].off;
        cmd.u.memset.count = sets[k].count;
        cmd.u.memset.value = sets[k].value;
        cmd.u.memset.elem_size = sets[k].es;
        assert_int_equal(run1(&c, &cmd), AGILE_OK);
        for (uint64_t i = 0; i < sets[k].count * sets[k].es; i++)
            want[sets[k].off + i] = (uint8_t)(sets[k].value >> (8 * (i % sets[k].es)));
        assert_memory_equal(b, want, N);
    }
    static const struct {
        uint64_t dst, src, n;
    } cps[] = {{(1 << 20) + 1, 0, (2 << 20) + 3}, /* overlapping, destination above: backward */
               {5, (1 << 20) + 9, (2 << 20) + 7}, /* overlapping, destination below */
               {4 << 20, 1 << 20, (1 << 20) + 11}};
    for (size_t k = 0; k < sizeof cps / sizeof cps[0]; k++) {
        cmd0(&cmd, AGILE_RING_OP_MEMCPY);
        cmd.u.memcpy.dst = cps[k].dst;
        cmd.u.memcpy.src = cps[k].src;
        cmd.u.memcpy.bytes = cps[k].n;
        assert_int_equal(run1(&c, &cmd), AGILE_OK);
        memmove(want + cps[k].dst, want + cps[k].src, cps[k].n);
        assert_memory_equal(b, want, N);
    }
    /* out of the window: refused before a byte is set, as before */
    cmd0(&cmd, AGILE_RING_OP_MEMSET);
    cmd.u.memset.dst = agile__window_size(agile__twin_window(c.s, 0)) - 4096;
    cmd.u.memset.count = 1 << 20;
    cmd.u.memset.elem_size = 1;
    assert_int_equal(run1(&c, &cmd), AGILE_EBOUNDS);
    assert_memory_equal(b, want, N);
    free(want);
    close_conn(&c);
}

/* Windows per tenant (twin.h): a tenant's sessions share one window and sink, with disjoint
 * lease offsets; another uid has its own; the window goes with the tenant's last session.
 * On the host backend and on mockcuda (the cuda window and sink paths). */
static void test_tenant_window(void **state)
{
    conn a, b, o;
    uint64_t step = W.cfg.dflt.lease_step;
    (void)state;
    open_conn(&a, 30);
    open_conn(&b, 31);
    open_conn_uid(&o, 32, (uint32_t)getuid() + 1);
    uint64_t oa = lease_off(&a, 1 << 20), ob = lease_off(&b, 1 << 20), oa2 = lease_off(&a, 1);
    agile__window *win = agile__twin_window(a.s, 0);
    agile__tenant *t = a.s->tenant;
    assert_non_null(win);
    assert_ptr_equal(agile__twin_window(b.s, 0), win);
    assert_true(oa + step <= ob || ob + step <= oa); /* one offset space: no overlap */
    assert_true(oa2 + step <= ob || ob + step <= oa2);
    assert_true(oa2 != oa);
    assert_int_equal(t->sink[0], agile__window_sink_bytes(win));
    assert_true(t->sink[0] > 0);
    (void)lease_off(&o, 1);
    assert_true(agile__twin_window(o.s, 0) != win); /* another tenant, another window */
    close_conn(&a); /* its leases go, b's stay, the window stays */
    assert_int_equal(t->leased[0], step);
    assert_int_equal(t->sink[0], agile__window_sink_bytes(win));
    assert_true(lease_off(&b, 1) != ob);
    close_conn(&b);
    assert_int_equal(t->leased[0], 0);
    assert_int_equal(t->sink[0], 0); /* released with the last session */
    close_conn(&o);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "cuda-mock") == 0) {
        const struct CMUnitTest mock[] = {
            cmocka_unit_test(test_cuda_mock_memops),
            cmocka_unit_test(test_cuda_mock_fault_recovery),
            cmocka_unit_test(test_cuda_mock_fault_process_lost),
            cmocka_unit_test(test_cuda_mock_device_assert),
            cmocka_unit_test(test_teardown_with_busy_ring),
            cmocka_unit_test(test_tenant_window),
        };
        backend = AGILE_BACKEND_KIND_CUDA;
        return cmocka_run_group_tests(mock, setup, teardown);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nop_memset_memcpy_bounds),
        cmocka_unit_test(test_modules),
        cmocka_unit_test(test_unguarded_is_test_only),
        cmocka_unit_test(test_malformed_slot_kills_only_its_session),
        cmocka_unit_test(test_teardown_with_busy_ring),
        cmocka_unit_test(test_tenant_window),
        cmocka_unit_test(test_large_host_ops),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
