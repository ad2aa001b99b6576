"""The data plane on the host backend, end to end (issue 5): command rings attached over the
control plane and passed as fds, in-window memcpy/memset, sticky asynchronous errors at
barriers, a malformed ring drops only its own client, a client killed mid-command leaves the
worker serving, two flooding clients share the dispatcher fairly, LAUNCH without a GPU is
AGILE_ENOTSUP, rejected PTX is AGILE_EREJECT with the guard's `file:line: reason`.

Scenarios that use pool memory run in a child process: libagile's default client is per
process."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import agilec
from conftest import Worker
from test_worker import wait_for

HERE = os.path.dirname(__file__)
PTX = os.path.join(HERE, "..", "data", "ptx")
# the library's codes (agilec.ERR)
EBOUNDS, ENOTSUP, EREJECT, EINVAL = (
    agilec.ERR[n] for n in ("EBOUNDS", "ENOTSUP", "EREJECT", "EINVAL"))

PRELUDE = textwrap.dedent("""
    import ctypes, json, os, re, sys, time
    sys.path.insert(0, {here!r})
    import agilec
    lib = agilec.load_mem(agilec.load(), {dir!r})
    V, U64, SZ, I = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_int
    lib.agile_ring_open.argtypes = [V, I]
    lib.agile_ring_nop.argtypes = [V, I, U64]
    lib.agile_ring_nop_async.argtypes = [V, I]
    lib.agile_ring_completed.argtypes = [V, I]
    lib.agile_ring_completed.restype = U64
    lib.agile_memset_async.argtypes = [V, I, SZ, V]
    lib.agile_memcpy_async.argtypes = [V, V, SZ, V]
    lib.agile_barrier.argtypes = [V, ctypes.POINTER(U64)]
    lib.agile_signal_async.argtypes = [V, ctypes.c_uint32, V]
    lib.agile_wait_async.argtypes = [V, ctypes.c_uint32, V]
    lib.agile_module_load.argtypes = [ctypes.c_char_p, SZ, ctypes.c_uint, ctypes.POINTER(U64)]
    lib.agile_module_function.argtypes = [U64, ctypes.c_char_p, ctypes.POINTER(U64),
                                          ctypes.POINTER(ctypes.c_uint)]
    lib.agile_function_params.argtypes = [U64, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint32),
                                          ctypes.POINTER(ctypes.c_uint32),
                                          ctypes.POINTER(ctypes.c_uint32)]
    lib.agile_launch.argtypes = [U64, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                 ctypes.c_uint, V, V, SZ]

    def barrier():
        seq = U64()
        rv = lib.agile_barrier(None, ctypes.byref(seq))
        return rv, seq.value

    def window():
        b, s = U64(), U64()
        assert lib.agile_pool_window(0, ctypes.byref(b), ctypes.byref(s)) == 0
        return b.value, s.value

    def err():
        return lib.agile_last_error().decode()

    def out(**kw):
        print(json.dumps(kw), flush=True)
""")


def child(worker, body, wait=True, **fmt):
    code = PRELUDE.format(here=HERE, dir=worker.dir) + textwrap.dedent(body).format(**fmt)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if not wait:
        return p
    out, errout = p.communicate(timeout=120)
    assert p.returncode == 0, out + errout
    return json.loads(out.strip().splitlines()[-1])


def mine(worker):
    return [t for t in worker.status()["tenants"] if t["uid"] == os.getuid()][0]


def test_ring_attach_and_nop_round_trip(worker, lib):
    import ctypes
    c = agilec.Client(lib, worker.dir)
    lib.agile_ring_open.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.agile_ring_nop.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
    assert lib.agile_ring_open(c.h, 0) == 0
    assert lib.agile_ring_open(c.h, 0) == 0          # idempotent
    assert lib.agile_ring_open(c.h, 5) == EINVAL     # no such device: refused by the worker
    assert b"device 5" in lib.agile_last_error()
    for i in range(200):
        assert lib.agile_ring_nop(c.h, 0, i) == 0
    assert mine(worker)["objects"]["RING"] == 1
    c.close()
    assert wait_for(lambda: mine(worker)["objects"]["RING"] == 0, 5) is not None


def test_memcpy_memset_in_window_and_bounds(worker):
    r = child(worker, """
        p = lib.agile_malloc(1 << 20, 0, None)
        assert p, err()
        base, W = window()
        assert lib.agile_memset_async(p, 0xAB, 4096, None) == 0
        assert lib.agile_memcpy_async(p + 8192, p, 4096, None) == 0
        ok = barrier()
        a, b = ctypes.string_at(p, 4096), ctypes.string_at(p + 8192, 4096)
        # source extent runs past the window's end: AGILE_EBOUNDS, nothing written
        ctypes.memset(p + 65536, 0x11, 4096)
        assert lib.agile_memcpy_async(p + 65536, base + W - 100, 4096, None) == 0   # seq n
        assert lib.agile_memset_async(p + 65536, 0x22, 16, None) == 0              # seq n+1
        bad = barrier()
        after = ctypes.string_at(p + 65536, 4096)
        clean = barrier()
        # the translation keeps only the offset: another VA with the same offset lands in
        # our own window, never elsewhere
        alias = (p + (W << 3)) & ((1 << 64) - 1)
        assert lib.agile_memset_async(alias, 0x33, 8, None) == 0
        aliased = barrier()
        out(ok=ok, a=sorted(set(a)), b=sorted(set(b)), bad=bad, after=after[:16].hex(),
            tail=sorted(set(after[16:])), clean=clean, aliased=aliased,
            alias_bytes=ctypes.string_at(p, 8).hex())
    """)
    assert r["ok"] == [0, 0]
    assert r["a"] == [0xAB] and r["b"] == [0xAB]
    # the memcpy (the 4th command: 0 memset, 1 memcpy, 2 barrier, 3 memcpy) failed; the memset
    # after it still ran (errors are reported, not fatal) and the barrier names the first one
    assert r["bad"] == [EBOUNDS, 3]
    assert r["after"] == "22" * 16 and r["tail"] == [0x11]
    assert r["clean"] == [0, 0]
    assert r["aliased"] == [0, 0] and r["alias_bytes"] == "33" * 8


def test_barrier_error_is_per_tenant_session(worker):
    """One client's async error is not seen by another client's barrier."""
    a = child(worker, """
        p = lib.agile_malloc(1 << 20, 0, None)
        base, W = window()
        lib.agile_memset_async(base + W - 8, 0, 64, None)
        sys.stdout.write("posted\\n"); sys.stdout.flush()
        time.sleep(0.5)
        out(r=barrier())
    """, wait=False)
    b = child(worker, """
        p = lib.agile_malloc(1 << 20, 0, None)
        lib.agile_memset_async(p, 1, 64, None)
        out(r=barrier())
    """)
    oa, ea = a.communicate(timeout=60)
    assert a.returncode == 0, oa + ea
    assert json.loads(oa.strip().splitlines()[-1])["r"][0] == EBOUNDS
    assert b["r"] == [0, 0]


def test_signal_and_wait_order_the_ring(worker):
    r = child(worker, """
        p = lib.agile_malloc(1 << 20, 0, None)
        ctr = ctypes.c_uint32.from_address(p)
        ctr.value = 0
        ctypes.memset(p + 4096, 0, 64)
        assert lib.agile_wait_async(p, 1, None) == 0          # holds back what follows
        assert lib.agile_memset_async(p + 4096, 0x5A, 64, None) == 0
        assert lib.agile_signal_async(p + 8, 77, None) == 0
        time.sleep(0.3)
        before = ctypes.string_at(p + 4096, 1).hex(), ctypes.c_uint32.from_address(p + 8).value
        ctr.value = 1                                          # release the WAIT
        b = barrier()
        after = ctypes.string_at(p + 4096, 1).hex(), ctypes.c_uint32.from_address(p + 8).value
        misaligned = lib.agile_signal_async(p + 2, 1, None)
        bad = barrier()
        out(before=before, after=after, b=b, misaligned=misaligned, bad=bad)
    """)
    assert r["before"] == ["00", 0]
    assert r["after"] == ["5a", 77] and r["b"] == [0, 0]
    assert r["misaligned"] == 0 and r["bad"][0] == EINVAL


def test_mod_op_errors_come_at_the_barrier(worker, lib):
    import ctypes
    c = agilec.Client(lib, worker.dir)
    lib.agile_ring_mod_op.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32,
                                      ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t,
                                      ctypes.c_void_p]
    lib.agile_ring_barrier.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                       ctypes.c_void_p]
    lib.agile_ring_nop.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
    assert lib.agile_ring_mod_op(c.h, 0, 99, 1, b"junk", 4, None) == 0   # unknown module
    assert lib.agile_ring_mod_op(c.h, 0, 0, 7, b"\xff" * 40, 40, None) == 0  # fft, garbage args
    assert lib.agile_ring_barrier(c.h, 0, None, None) != 0
    assert lib.agile_ring_barrier(c.h, 0, None, None) == 0
    assert lib.agile_ring_nop(c.h, 0, 1) == 0
    c.close()


def test_dead_worker_ends_waits_at_once(rundir):
    w = Worker(rundir)
    try:
        p = child(w, """
            p = lib.agile_malloc(1 << 20, 0, None)
            ctypes.c_uint32.from_address(p).value = 0
            assert lib.agile_wait_async(p, 1, None) == 0     # never satisfied
            print("waiting", flush=True)
            t0 = time.time()
            rv = barrier()
            out(rv=rv[0], secs=time.time() - t0)
        """, wait=False)
        assert p.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        w.proc.kill()
        o, e = p.communicate(timeout=60)
        assert p.returncode == 0, o + e
        r = json.loads(o.strip().splitlines()[-1])
        assert r["rv"] == 8, r          # AGILE_ECLOSED (noticed), not AGILE_ETIMEDOUT (waited out)
    finally:
        w.stop()


def _ring_map_code():
    return """
        def ring_region():
            for line in open("/proc/self/maps"):
                if "agile-ring" in line:
                    lo = int(line.split("-")[0], 16)
                    return lo
            raise RuntimeError("no ring mapping")
    """


def test_malformed_slot_drops_only_that_client(worker, lib):
    other = agilec.Client(lib, worker.dir)
    import ctypes
    lib.agile_ring_nop.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
    assert lib.agile_ring_nop(other.h, 0, 1) == 0
    perr0 = mine(worker)["protocol_errors"]
    r = child(worker, _ring_map_code() + """
        c = ctypes.c_void_p()
        assert lib.agile_default_client(ctypes.byref(c)) == 0
        assert lib.agile_ring_nop(c, 0, 7) == 0
        base = ring_region()
        u32 = lambda off: ctypes.c_uint32.from_address(base + off).value
        u64 = lambda off: ctypes.c_uint64.from_address(base + off).value
        slots, slot_size, cmd_ctl, cmd = u32(16), u32(20), u64(24), u64(32)
        tail = u64(cmd_ctl)
        slot = base + cmd + (tail % slots) * slot_size
        # a slot with the right magic and seq but opcode 99
        ctypes.memmove(slot, (0x444d4341).to_bytes(4, "little") + (99).to_bytes(2, "little") +
                       bytes(6) + bytes(4) + tail.to_bytes(8, "little") + bytes(8), 32)
        ctypes.c_uint64.from_address(base + cmd_ctl).value = tail + 1
        # wake the worker if it sleeps (data_ftx at +128, cons_sleeping at +132)
        time.sleep(0.5)
        rv = lib.agile_ring_nop(c, 0, 8)
        out(rv=rv, ping=lib.agile_ping(c))
    """)
    assert r["rv"] != 0               # the ring is broken (EPROTO) or closed
    assert r["ping"] != 0             # the whole session was dropped
    assert lib.agile_ring_nop(other.h, 0, 2) == 0   # the other client is served
    assert other.ping() == 0
    assert mine(worker)["protocol_errors"] > perr0
    other.close()


def test_client_killed_mid_command_worker_fine(worker, lib):
    p = child(worker, """
        p = lib.agile_malloc(64 << 20, 0, None)
        assert p, err()
        print("go", flush=True)
        while True:
            lib.agile_memset_async(p, 5, 64 << 20, None)
    """, wait=False)
    assert p.stdout.readline().strip() == "go"
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    # agilectl's session is the one left; the ring, the lease and the window are gone
    assert wait_for(lambda: mine(worker)["sessions"] == 1 and mine(worker)["leased_bytes"] == 0,
                    10) is not None
    c = agilec.Client(lib, worker.dir)
    import ctypes
    lib.agile_ring_nop.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
    assert lib.agile_ring_nop(c.h, 0, 3) == 0
    c.close()
    assert worker.proc.poll() is None


FLOOD = """
    p = lib.agile_malloc(1 << 20, 0, None)
    assert p, err()
    assert lib.agile_ring_open(None, 0) == 0
    start, end = {start}, {end}
    while time.time() < start:
        time.sleep(0.001)
    n = 0
    while time.time() < end:
        for _ in range(64):
            rv = {op}
            assert rv == 0, (rv, err())
        n += 64
    done = lib.agile_ring_completed(None, 0)
    out(done=done, posted=n)
"""


def _flood(worker, op):
    start = time.time() + 1.5
    end = start + 2.5
    kids = [child(worker, FLOOD, wait=False, start=start, end=end, op=op) for _ in range(2)]
    res = []
    for k in kids:
        o, e = k.communicate(timeout=60)
        assert k.returncode == 0, o + e
        res.append(json.loads(o.strip().splitlines()[-1]))
    return res


def test_two_flooding_clients_get_fair_shares(worker):
    # memset of 1 MiB: the worker is the bottleneck, so both rings stay full and the
    # dispatcher's order alone decides the shares; a full ring is tens of ms of the worker's
    # time, so a client descheduled for a while on a 2-core machine does not run dry
    a, b = _flood(worker, "lib.agile_memset_async(p, 1, 1 << 20, None)")
    lo, hi = sorted([a["done"], b["done"]])
    assert lo > 100, (a, b)
    assert hi <= lo * 1.10, (a, b)


def test_launch_on_host_is_enotsup_and_module_params(worker):
    r = child(worker, """
        ptx = open({ptx!r}, "rb").read()
        m = U64()
        assert lib.agile_module_load(ptx, len(ptx), 0, ctypes.byref(m)) == 0, err()
        f, n = U64(), ctypes.c_uint()
        assert lib.agile_module_function(m, b"add_kernel", ctypes.byref(f), ctypes.byref(n)) == 0
        sizes, offs, total = (ctypes.c_uint32 * 16)(), (ctypes.c_uint32 * 16)(), ctypes.c_uint32()
        lib.agile_function_params(f, 16, sizes, offs, ctypes.byref(total))
        nofn = lib.agile_module_function(m, b"no_such_kernel", ctypes.byref(U64()), None)
        nofn_err = err()
        grid, block = (ctypes.c_uint * 3)(1, 1, 1), (ctypes.c_uint * 3)(128, 1, 1)
        args = ctypes.create_string_buffer(total.value)
        rv = lib.agile_launch(f, grid, block, 0, None, args, total.value)
        bad = lib.agile_launch(f, grid, block, 0, None, args, total.value - 8)
        out(n=n.value, sizes=list(sizes)[:n.value], offs=list(offs)[:n.value], total=total.value,
            rv=rv, bad=bad, nofn=nofn, nofn_err=nofn_err, after=barrier())
    """, ptx=os.path.join(PTX, "triton", "add.ptx"))
    assert r["n"] == 6
    assert r["sizes"] == [8, 8, 8, 4, 8, 8] and r["offs"] == [0, 8, 16, 24, 32, 40]
    assert r["total"] == 48
    assert r["rv"] == ENOTSUP
    assert r["bad"] == EINVAL
    assert r["nofn"] == agilec.ERR["ENOENT"] and "no_such_kernel" in r["nofn_err"]
    # the worker keeps the error sticky too: the next barrier names the launch (seq 0)
    assert r["after"] == [ENOTSUP, 0]


LAYOUT_PTX = r"""
.version 8.0
.target sm_90
.address_size 64
.visible .entry other(.param .u32 a) { ret; }
.visible .entry k(.param .u8 a, .param .align 8 .b8 s[12], .param .u16 h, .param .f64 d,
                  .param .u64 .ptr .global .align 16 p, .param .align 16 .b8 v[32])
{
    ret;
}
"""


def test_parameter_layout_from_ptx(worker):
    r = child(worker, """
        ptx = {ptx!r}.encode()
        m, f, n = U64(), U64(), ctypes.c_uint()
        assert lib.agile_module_load(ptx, len(ptx), 0, ctypes.byref(m)) == 0, err()
        assert lib.agile_module_function(m, b"k", ctypes.byref(f), ctypes.byref(n)) == 0, err()
        sizes, offs, total = (ctypes.c_uint32 * 8)(), (ctypes.c_uint32 * 8)(), ctypes.c_uint32()
        lib.agile_function_params(f, 8, sizes, offs, ctypes.byref(total))
        out(sizes=list(sizes)[:n.value], offs=list(offs)[:n.value], total=total.value)
    """, ptx=LAYOUT_PTX)
    assert r["sizes"] == [1, 12, 2, 8, 8, 32]
    assert r["offs"] == [0, 8, 20, 24, 32, 48]
    assert r["total"] == 80


def test_rejected_ptx_is_ereject_with_line_and_reason(worker):
    r = child(worker, """
        out(res=[[name, lib.agile_module_load(p, len(p), 0, ctypes.byref(U64())), err()]
                 for name, p in (("malloc", open({a!r}, "rb").read()),
                                 ("tensormap", open({b!r}, "rb").read()),
                                 ("garbage", b"this is not PTX"))])
    """, a=os.path.join(PTX, "reject", "malloc.ptx"), b=os.path.join(PTX, "reject", "tensormap.ptx"))
    for name, rv, msg in r["res"]:
        assert rv == EREJECT, (name, rv, msg)
        assert re.match(r"<ptx>:\d+: \S", msg), (name, msg)
    assert "malloc" in r["res"][0][2]


def test_module_policy_and_status_counter(rundir):
    conf = rundir + ".conf"
    with open(conf, "w") as f:
        f.write("[default]\nmodules = fft\n")
    w = Worker(rundir, config=conf)
    try:
        r = child(w, """
            ptx = open({ptx!r}, "rb").read()
            out(rv=lib.agile_module_load(ptx, len(ptx), 0, ctypes.byref(U64())), msg=err())
        """, ptx=os.path.join(PTX, "triton", "add.ptx"))
        assert r["rv"] == agilec.ERR["EPERM"] and "guard" in r["msg"]
        assert mine(w)["timelimit_exceeded"] == 0
    finally:
        w.stop()


def test_worker_progress_needs_no_client_call(worker):
    """Work the client posts and then waits for outside the ring (a GPU stream's wait, here a
    host counter) completes although the client reads no completion: more than a completion
    ring's worth of async commands, then a SIGNAL the client only polls in memory. Without
    libagile's reaper the worker, out of completion slots, would never take the SIGNAL."""
    r = child(worker, """
        p = lib.agile_malloc(4096, 0, None)
        ctypes.memset(p, 0, 4096)
        ctr = ctypes.c_uint32.from_address(p)
        for i in range(1500):                       # ring: 1024 slots
            assert lib.agile_memset_async(p + 64 + i, 1, 1, None) == 0, err()
        assert lib.agile_signal_async(p, 7, None) == 0, err()
        t0 = time.time()
        while ctr.value != 7 and time.time() - t0 < 120:
            time.sleep(0.001)
        out(value=ctr.value, secs=time.time() - t0, completed=lib.agile_ring_completed(None, 0),
            barrier=barrier()[0])
    """)
    assert r["value"] == 7, r
    assert r["completed"] >= 1501 and r["barrier"] == 0, r



def test_forked_child_drops_its_copy_and_the_parent_goes_on(worker):
    """fork() copies one thread and none of nng's: a child that disconnects the client it
    inherited only drops its copy (no reaper to join, no BYE through nng, which would panic);
    the parent's session and ring keep working."""
    r = child(worker, """
        p = lib.agile_malloc(4096, 0, None)
        assert lib.agile_memset_async(p, 1, 64, None) == 0, err()
        c = V()
        assert lib.agile_default_client(ctypes.byref(c)) == 0
        lib.agile_disconnect.argtypes = [V]
        pid = os.fork()
        if pid == 0:
            lib.agile_disconnect(c)
            os._exit(0)
        _, st = os.waitpid(pid, 0)
        assert lib.agile_memset_async(p, 2, 64, None) == 0, err()
        out(child_status=st, parent_barrier=barrier()[0], byte=ctypes.string_at(p, 1)[0])
    """)
    assert r == {"child_status": 0, "parent_barrier": 0, "byte": 2}, r
