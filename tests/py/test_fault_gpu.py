"""Fault containment (issue 13): one tenant's kernel must never take the worker, or another
tenant, down.

Section "worker and client" (below): faults the guard cannot prevent. The attacker (uid 65534,
another tenant of a --shared cuda worker) loads a kernel through the TEST-ONLY unguarded route
(AGILE_MODULE_TEST_UNGUARDED, allowed only because the worker's environment names its uid in
AGILE_TEST_UNGUARDED_UID) that traps, hits a breakpoint, loads a v4 from a misaligned address
or reads an unmapped one: each a sticky error that poisons the worker's context. Meanwhile a
victim tenant runs torch.fft (served by the worker's cuFFT) and guarded Triton launches in a
loop. The victim must see no error or a recoverable one (GPUReset), no wrong result, its data
intact, and go on within 1 s; the attacker gets AGILE_EFAULT; `agilectl status` counts the
context reset and names the attacker's kernel; a fresh process leases and runs FFTs afterwards.
Also: a client whose stream waits on a worker that is SIGKILLed mid-handshake is released and
told AGILE_EWORKER (no hang). GPU tests are marked; they skip without a GPU (and the attack
tests without root, which the second uid needs).

Other sections (the guard's refusals of trap, brkpt, misaligned and out-of-range accesses) may
follow below their own header."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import agilec
from conftest import CABI_PRELUDE, Worker, communicate, run_as

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NOBODY = 65534
# the library's codes (agilec.ERR)
EFAULT, ERESET, EWORKER = (agilec.ERR[n] for n in ("EFAULT", "ERESET", "EWORKER"))

# ---- section: worker and client (engineer "fault") --------------------------------------------


def test_error_classes_map_the_fault_codes():
    """agile_torch raises GPUFault / GPUReset / WorkerGone (AgileError subclasses) for the
    fault codes, with libagile's message."""
    sys.path.insert(0, ROOT)
    from agile_torch import _native, AgileError, GPUFault, GPUReset, WorkerGone
    for code, cls in ((EFAULT, GPUFault), (ERESET, GPUReset), (EWORKER, WorkerGone)):
        with pytest.raises(cls) as e:
            _native.check(code, "x")
        assert isinstance(e.value, AgileError) and e.value.code == code
        name = {EFAULT: "faulted the GPU", ERESET: "context reset", EWORKER: "stream-ordered"}
        assert name[code] in str(e.value), str(e.value)   # agile_strerror's message


ATTACK_PTX = r"""
.version 8.0
.target sm_90
.address_size 64

.global .align 16 .b8 agile_buf[64];

.visible .entry trap_k(.param .u64 p)
{
    trap;
    ret;
}

.visible .entry brkpt_k(.param .u64 p)
{
    brkpt;
    ret;
}

.visible .entry misaligned_k(.param .u64 p)
{
    .reg .b64 %rd<3>;
    .reg .f32 %f<5>;
    mov.u64 %rd1, agile_buf;
    add.s64 %rd2, %rd1, 4;
    ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd2];
    add.f32 %f1, %f1, %f2;
    add.f32 %f3, %f3, %f4;
    add.f32 %f1, %f1, %f3;
    st.global.f32 [%rd1], %f1;
    ret;
}

.visible .entry wild_k(.param .u64 p)
{
    .reg .b64 %rd<2>;
    .reg .b32 %r<2>;
    mov.u64 %rd1, 16;
    ld.global.volatile.u32 %r1, [%rd1];
    st.global.u32 [%rd1+8], %r1;
    ret;
}
"""

# The attacker: libagile through ctypes only (it runs as uid 65534, which cannot import torch
# from a root-only checkout). Prints one JSON line.
ATTACKER = CABI_PRELUDE + textwrap.dedent("""
    ptx, kernel = sys.argv[2].encode(), sys.argv[3].encode()
    p = L.agile_malloc(1 << 20, 0, None)
    assert p, L.agile_last_error()
    m, f = U64(), U64()
    rv = L.agile_module_load(ptx, len(ptx), 0x2, ctypes.byref(m))   # AGILE_MODULE_TEST_UNGUARDED
    assert rv == 0, (rv, L.agile_last_error())
    assert L.agile_module_function(m, kernel, ctypes.byref(f), None) == 0, L.agile_last_error()
    g, b, arg = (UI * 3)(1, 1, 1), (UI * 3)(32, 1, 1), U64(p)
    t_launch = time.time()
    rv_launch = L.agile_launch(f, g, b, 0, None, ctypes.byref(arg), 8)
    seq = U64()
    rv = L.agile_barrier(None, ctypes.byref(seq))
    print(json.dumps(dict(launch=rv_launch, barrier=rv, t_launch=t_launch, t_done=time.time(),
                          err=L.agile_last_error().decode(errors="replace"))), flush=True)
""")

# The victim: torch.fft through the worker and a guarded Triton add, checked every round,
# until the test's flag file exists and 20 rounds have passed since. Prints one JSON line.
VICTIM = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {root!r})
    import torch
    import triton
    import triton.language as tl
    import agile_torch
    import agile_torch.fft as afft
    from agile_torch import AgileError, GPUReset
    agile_torch.init(runtime_dir={dir!r}, backend="cuda")
    assert afft.enable_fft()

    @triton.jit
    def add_kernel(x_ptr, y_ptr, z_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        tl.store(z_ptr + i, tl.load(x_ptr + i, mask=m) + tl.load(y_ptr + i, mask=m), mask=m)

    guarded_add = agile_torch.guarded(add_kernel)
    torch.manual_seed(0)
    n = 1 << 16
    with agile_torch.use_pool():
        keep = torch.arange(1 << 22, device="cuda", dtype=torch.float32)  # must survive
        x = torch.randn(8, 4096, dtype=torch.complex64, device="cuda")
        a = torch.randn(n, device="cuda")
        b = torch.randn(n, device="cuda")
        z = torch.empty(n, device="cuda")
    ref_fft, ref_add = torch.fft.fft(x.cpu()), (a + b).cpu()
    keep_sum = float(keep.double().sum())
    served0 = afft.fft_stats()["served"]
    print("ready", flush=True)
    log, resets, msgs, after, gone = [], [], [], None, None
    t_stop = time.time() + {limit}
    while time.time() < t_stop:
        t0 = time.time()
        try:
            z.zero_()
            y = torch.fft.fft(x)
            guarded_add[(triton.cdiv(n, 1024),)](a, b, z, n, BLOCK=1024)
            agile_torch.triton.synchronize()
            torch.cuda.synchronize()
            ok = torch.allclose(y.cpu(), ref_fft, atol=1e-3, rtol=1e-3) and torch.equal(z.cpu(), ref_add)
            log.append((t0, time.time(), "ok" if ok else "wrong"))
        except GPUReset as e:   # recoverable: this round's work was lost, not the memory
            resets.append(time.time())
            msgs.append(str(e))
        except AgileError as e:  # the worker went away (WorkerGone, ECLOSED): no more rounds
            gone = (time.time(), e.code, str(e))
            break
        if after is None and os.path.exists({flag!r}):
            after = time.time()
        if after is not None and sum(1 for s, _, k in log if k == "ok" and s > after) >= 20:
            break
    torch.cuda.synchronize()                  # no hang: nothing waits on the worker unbounded
    print(json.dumps(dict(log=log, resets=resets, msgs=msgs[:3], flag=after, gone=gone,
                          keep_ok=float(keep.double().sum()) == keep_sum,
                          served=afft.fft_stats()["served"] - served0)), flush=True)
""")

FRESH = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import torch
    import agile_torch
    import agile_torch.fft as afft
    agile_torch.init(runtime_dir={dir!r}, backend="cuda")
    assert afft.enable_fft()
    with agile_torch.use_pool():
        big = torch.ones(64 << 20, dtype=torch.uint8, device="cuda")   # a new lease
        x = torch.randn(4, 8192, dtype=torch.complex64, device="cuda")
    y = torch.fft.fft(x)
    ok = torch.allclose(y.cpu(), torch.fft.fft(x.cpu()), atol=1e-3, rtol=1e-3)
    agile_torch.triton.synchronize()
    print(json.dumps(dict(ok=bool(ok), big=int(big.sum()), served=afft.fft_stats()["served"])),
          flush=True)
""")


def _script(dirname, text):
    f = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, dir=dirname)
    f.write(text)
    f.close()
    os.chmod(f.name, 0o644)
    return f.name


def _attack_beside_victim(w, d, script, ptx, kernel, settle=0.0):
    """Start the victim (VICTIM: FFTs and guarded launches in a loop), run `script` as uid
    65534 with (ptx, kernel), then let the victim finish its rounds. Returns (attacker's JSON,
    victim's JSON, worker log)."""
    flag = os.path.join(d, "attacked")
    victim = subprocess.Popen([sys.executable, _script(d, VICTIM.format(
        root=ROOT, dir=w.dir, flag=flag, limit=90))], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == "ready", victim.stderr.read()
        time.sleep(settle)   # rounds of the victim's loop before the attack
        att = run_as(NOBODY, script, ptx, kernel, runtime_dir=w.dir)
        assert att.returncode == 0, att.stdout + att.stderr + w.logtext()
        a = json.loads(att.stdout.strip().splitlines()[-1])
        open(flag, "w").close()
        o, e = communicate(victim, w, timeout=150)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == 0, o + e + w.logtext()
    return a, json.loads(o.strip().splitlines()[-1]), w.logtext()


@pytest.fixture
def shared_gpu_worker(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the attacker runs as uid 65534 (another tenant): needs root")
    with tempfile.TemporaryDirectory(prefix="agile-f") as d:
        os.chmod(d, 0o755)
        monkeypatch.setenv("AGILE_TEST_UNGUARDED_UID", str(NOBODY))   # the test-only route
        w = Worker(os.path.join(d, "rt"), "--shared", backend="cuda")
        try:
            yield w, d
        finally:
            w.stop()


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["trap_k", "brkpt_k", "misaligned_k", "wild_k"])
def test_victim_survives_a_fault_the_guard_cannot_prevent(shared_gpu_worker, kernel):
    pytest.importorskip("triton")
    w, d = shared_gpu_worker
    a, v, log = _attack_beside_victim(w, d, ATTACKER, ATTACK_PTX, kernel, settle=1.0)

    # the attacker: a clear error naming the fault, its session ended
    assert a["launch"] == 0 and a["barrier"] == EFAULT, (a, log)
    assert "faulted the GPU" in a["err"], a
    # the worker noticed and named tenant and kernel
    assert f"[tenant {NOBODY}] GPU 0: kernel {kernel} faulted the context (CUDA_ERROR_" in log, log
    # the victim: no wrong result, its data intact, no hang, at most a recoverable error
    kinds = [k for _, _, k in v["log"]]
    assert "wrong" not in kinds, (v["log"][-30:], log)
    assert v["keep_ok"], v
    assert v["served"] > 0, v          # its FFTs went through the worker
    assert all("reset" in m for m in v["msgs"]), v["msgs"]
    if "recovered in" in log:
        # the context came back in the worker: status counts it, the victim goes on in 1 s
        dev = w.status()["devices"][0]
        assert dev["faults"] == 1 and dev["context_resets"] == 1, (dev, log)
        assert dev["last_fault"]["uid"] == NOBODY and dev["last_fault"]["kernel"] == kernel, dev
        assert v["gone"] is None, v
        ok_after = [end for s, end, k in v["log"] if k == "ok" and s >= a["t_launch"]]
        assert ok_after, (v, log)
        gap = min(ok_after) - a["t_launch"]
        print(f"{kernel}: recovered in the worker; victim resets {len(v['resets'])}, back in "
              f"{gap * 1000:.0f} ms after the launch; worker: {dev['last_fault']}")
        assert gap < 1.0, (gap, v["resets"], v["msgs"], log)
    else:
        # the driver kept the process's CUDA state lost (H200, driver 580): the worker ended
        # itself; the victim was told (WorkerGone / closed), promptly, and did not hang
        assert "the worker exits so that a fresh one can serve" in log, log
        assert w.proc.wait(60) == 0, log
        assert v["gone"] is not None and v["gone"][1] in (EWORKER, 8), v   # 8: AGILE_ECLOSED
        print(f"{kernel}: worker exited; victim told {v['gone'][1]} "
              f"{(v['gone'][0] - a['t_launch']) * 1000:.0f} ms after the launch")
        assert v["gone"][0] - a["t_launch"] < 5.0, (v["gone"], a)
    # a fresh process leases and runs FFTs (in the recovered worker, or a fresh one it starts)
    p = subprocess.Popen([sys.executable, _script(d, FRESH.format(root=ROOT, dir=w.dir))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        o, e = communicate(p, w, timeout=120)
    finally:
        pid = os.path.join(w.dir, "agile.pid")   # an autostarted worker goes with the test
        if w.proc.poll() is not None and os.path.exists(pid):
            try:
                os.kill(int(open(pid).read().split()[0]), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass
    assert p.returncode == 0, o + e + w.logtext()
    f = json.loads(o.strip().splitlines()[-1])
    assert f["ok"] and f["big"] == 64 << 20 and f["served"] > 0, f


STOPPED = textwrap.dedent("""
    import ctypes, json, sys, time
    sys.path.insert(0, {root!r})
    import torch
    import agile_torch
    from agile_torch import _native
    agile_torch.init(runtime_dir={dir!r}, backend="cuda")
    L = _native.lib()
    V, U64, SZ = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t
    L.agile_memset_async.argtypes = [V, ctypes.c_int, SZ, V]
    L.agile_barrier.argtypes = [V, ctypes.POINTER(U64)]
    with agile_torch.use_pool():
        x = torch.ones(64 << 20, dtype=torch.uint8, device="cuda")
    s = torch.cuda.Stream()
    rv = L.agile_memset_async(x.data_ptr(), 1, 4096, V(s.cuda_stream))   # attaches the ring
    seq = U64()
    assert rv == 0 and L.agile_barrier(V(s.cuda_stream), ctypes.byref(seq)) == 0, rv
    with torch.cuda.stream(s):   # loads the sum kernel now: a lazy load later would wait
        x[:4096].sum(dtype=torch.int64)       # for the stream that waits on the stopped worker
    torch.cuda.synchronize()
    print("ready", flush=True)
    sys.stdin.readline()                       # the worker is stopped now
    with torch.cuda.stream(s):
        rv = L.agile_memset_async(x.data_ptr(), 0, x.numel(), V(s.cuda_stream))
        assert rv == 0, (rv, L.agile_last_error())
        total = x.sum(dtype=torch.int64)       # ordered after the memset on s
    print("posted", flush=True)
    sys.stdin.readline()                       # the worker is killed now
    t0 = time.time()
    s.synchronize()                            # waited on the worker's counter: released
    dt = time.time() - t0
    seq = U64()
    rv = L.agile_barrier(V(s.cuda_stream), ctypes.byref(seq))
    print(json.dumps(dict(dt=dt, rv=rv, total=int(total), x0=int(x[0]),
                          err=L.agile_last_error().decode())), flush=True)
""")


@pytest.mark.gpu
def test_stream_waiting_on_a_killed_worker_is_released(rundir):
    """The worker is stopped with a stream-ordered memset posted (its half of the handshake
    never runs), then SIGKILLed: the client's stream must not hang; the barrier says
    AGILE_EWORKER; the tensor kept its memory (the memset never ran)."""
    w = Worker(rundir, backend="cuda")
    p = subprocess.Popen([sys.executable, "-c", STOPPED.format(root=ROOT, dir=w.dir)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        os.kill(w.proc.pid, signal.SIGSTOP)
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "posted", p.stderr.read()
        os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.wait(30)
        p.stdin.write("killed\n")
        p.stdin.flush()
        o, e = communicate(p, None, timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
        w.stop()
    assert p.returncode == 0, o + e
    r = json.loads(o.strip().splitlines()[-1])
    assert r["rv"] == EWORKER, r
    assert r["dt"] < 30, r                     # released when the worker's death is seen
    assert r["total"] == 64 << 20 and r["x0"] == 1, r


# ---- section: the guard's refusals (engineer "flt") -----------------------------------------
#
# The guard makes these faults impossible (guard/README.md, "No guarded kernel can fault"):
# a second tenant (uid 65534) loads tests/data/ptx/hand/fault_attacks.ptx through the normal,
# guarded route and launches each attack while the victim above runs FFTs and guarded Triton
# launches. Nothing may fault: the worker counts no fault and no context reset, the victim
# sees no error at all, a fresh tenant leases and runs FFTs; the attacker's barrier is clean
# (its access was confined), or AGILE_EGUARD naming the kernel for the trap (reported, thread
# ended), or its load is refused naming the instruction and the kernel (brkpt).

# the library's codes (agilec.ERR)
EGUARD, EREJECT = (agilec.ERR[n] for n in ("EGUARD", "EREJECT"))
ATTACKS_PTX = os.path.join(ROOT, "tests", "data", "ptx", "hand", "fault_attacks.ptx")
BRKPT_PTX = r"""
.version 8.7
.target sm_90
.address_size 64

.visible .entry brkpt_k(.param .u64 p)
{
    brkpt;
    ret;
}
"""

# The attacker through the guarded route: libagile through ctypes only. Prints one JSON line.
GUARDED_ATTACKER = CABI_PRELUDE + textwrap.dedent("""
    ptx, kernel = sys.argv[2].encode(), sys.argv[3].encode()
    p = L.agile_malloc(1 << 20, 0, None)
    assert p, L.agile_last_error()
    m, f = U64(), U64()
    rv = L.agile_module_load(ptx, len(ptx), 0, ctypes.byref(m))       # guarded (the default)
    if rv != 0:
        print(json.dumps(dict(load=rv, err=L.agile_last_error().decode(errors="replace"))))
        sys.exit(0)
    assert L.agile_module_function(m, kernel, ctypes.byref(f), None) == 0, L.agile_last_error()
    g, b, arg = (UI * 3)(2, 1, 1), (UI * 3)(128, 1, 1), U64(p)
    t_launch = time.time()
    rv_launch = L.agile_launch(f, g, b, 0, None, ctypes.byref(arg), 8)
    seq = U64()
    rv = L.agile_barrier(None, ctypes.byref(seq))
    e = AErr()
    L.agile_last_async_error(ctypes.byref(e))
    print(json.dumps(dict(load=0, launch=rv_launch, barrier=rv, t_launch=t_launch,
                          kernel=e.kernel, site=e.site, addr=e.addr,
                          err=L.agile_last_error().decode(errors="replace"))), flush=True)
""")


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["misaligned_v4", "shared_overflow", "local_overflow",
                                    "generic_shared_overflow", "trapper", "brkpt_k"])
def test_guarded_attack_cannot_fault(shared_gpu_worker, kernel):
    pytest.importorskip("triton")
    w, d = shared_gpu_worker
    ptx = BRKPT_PTX if kernel == "brkpt_k" else open(ATTACKS_PTX).read()
    a, v, log = _attack_beside_victim(w, d, GUARDED_ATTACKER, ptx, kernel)
    print(f"{kernel}: attacker {a}; victim rounds {len(v['log'])}, resets {len(v['resets'])}")

    # the attacker: confined, reported or refused, with its kernel named
    if kernel == "brkpt_k":
        assert a["load"] == EREJECT, a
        assert "brkpt" in a["err"] and "'brkpt_k'" in a["err"], a
    elif kernel == "trapper":
        assert a["launch"] == 0 and a["barrier"] == EGUARD, (a, log)
        assert a["kernel"] == 3 and a["site"] == 0xFFFFFFFE, a        # 3rd entry, a trap
        assert "kernel 3: trap at PTX line" in log, log
    else:
        assert a["load"] == 0 and a["launch"] == 0 and a["barrier"] == 0, (a, log)
    # the worker: nothing faulted
    dev = w.status()["devices"][0]
    assert dev.get("faults", 0) == 0 and dev.get("context_resets", 0) == 0, (dev, log)
    # the victim: every round ok, no error at all, its data intact
    assert [k for _, _, k in v["log"]].count("ok") == len(v["log"]), (v["log"][-30:], log)
    assert not v["resets"] and v["keep_ok"] and v["served"] > 0, v
    # a fresh tenant leases and runs FFTs
    p = subprocess.Popen([sys.executable, _script(d, FRESH.format(root=ROOT, dir=w.dir))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    o, e = communicate(p, w, timeout=120)
    assert p.returncode == 0, o + e + w.logtext()
    f = json.loads(o.strip().splitlines()[-1])
    assert f["ok"] and f["big"] == 64 << 20 and f["served"] > 0, f


# One tenant, libagile's C API: the Inductor-style device assert (hand/inductor_assert.ptx)
# and the shared-memory scrub.
GUARD_CHILD = textwrap.dedent("""
    import ctypes, json, struct, sys
    sys.path.insert(0, {root!r})
    import torch
    import agile_torch
    from agile_torch import _native
    agile_torch.init(runtime_dir={dir!r}, backend="cuda")
    torch.cuda.init()
    L = _native.lib()
    V, U64, SZ, UI = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_uint
    L.agile_barrier.argtypes = [V, ctypes.POINTER(U64)]
    L.agile_module_load.argtypes = [ctypes.c_char_p, SZ, UI, ctypes.POINTER(U64)]
    L.agile_module_function.argtypes = [U64, ctypes.c_char_p, ctypes.POINTER(U64),
                                        ctypes.POINTER(UI)]
    L.agile_launch.argtypes = [U64, ctypes.POINTER(UI), ctypes.POINTER(UI), UI, V, V, SZ]
    class AErr(ctypes.Structure):
        _fields_ = [("status", ctypes.c_int32), ("kernel", ctypes.c_uint32), ("seq", U64),
                    ("site", U64), ("addr", U64)]
    L.agile_last_async_error.argtypes = [ctypes.POINTER(AErr)]

    def load(ptx):
        m = U64()
        assert L.agile_module_load(ptx.encode(), len(ptx), 0, ctypes.byref(m)) == 0, \\
            L.agile_last_error()
        return m.value

    def fn(m, name):
        f = U64()
        assert L.agile_module_function(m, name.encode(), ctypes.byref(f), None) == 0
        return f.value

    def launch(f, grid, block, args, shmem=0):
        g, b = (UI * 3)(*grid), (UI * 3)(*block)
        s = torch.cuda.current_stream().cuda_stream
        return L.agile_launch(f, g, b, shmem, V(s), args, len(args))

    def barrier():
        seq, e = U64(), AErr()
        rv = L.agile_barrier(None, ctypes.byref(seq))
        L.agile_last_async_error(ctypes.byref(e))
        return rv, e.kernel, e.site, e.addr
""")

SCRUB_PTX = r"""
.version 8.7
.target sm_90
.address_size 64

.extern .shared .align 16 .b8 smem[];

// Fills its dynamic shared memory with 0xA5A5A5A5.
.visible .entry writer(.param .u64 p, .param .u32 n)
{
    .reg .b32 %r<6>;
    .reg .pred %p1;
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    shl.b32 %r2, %r2, 2;
    mov.u32 %r3, smem;
    mov.u32 %r5, 0xA5A5A5A5;
L:
    setp.ge.u32 %p1, %r2, %r1;
    @%p1 bra D;
    add.u32 %r4, %r3, %r2;
    st.shared.u32 [%r4], %r5;
    add.u32 %r2, %r2, 512;
    bra L;
D:
    ret;
}

// Reads its dynamic shared memory without writing it, ORs it into *p.
.visible .entry reader(.param .u64 p, .param .u32 n)
{
    .reg .b32 %r<7>;
    .reg .b64 %rd<2>;
    .reg .pred %p1;
    ld.param.u64 %rd1, [p];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    shl.b32 %r2, %r2, 2;
    mov.u32 %r3, smem;
    mov.u32 %r6, 0;
L:
    setp.ge.u32 %p1, %r2, %r1;
    @%p1 bra D;
    add.u32 %r4, %r3, %r2;
    ld.shared.u32 %r5, [%r4];
    or.b32 %r6, %r6, %r5;
    add.u32 %r2, %r2, 512;
    bra L;
D:
    atom.global.or.b32 %r5, [%rd1], %r6;
    ret;
}
"""


def _guard_child(worker, body, **fmt):
    code = GUARD_CHILD.format(root=ROOT, dir=worker.dir) + textwrap.dedent(body).format(**fmt)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    o, e = communicate(p, worker, timeout=180)
    assert p.returncode == 0, o + e + worker.logtext()
    return json.loads(o.strip().splitlines()[-1])


@pytest.mark.gpu
def test_inductor_device_assert_is_reported_and_the_tenant_goes_on(rundir):
    """Issue 12.10: the Inductor-style kernel runs guarded; an out-of-range index makes its
    assert fail: the barrier says AGILE_EGUARD with site AGILE_GUARD_SITE_ASSERT and the PTX
    line of the call (no fault, no trap), the worker logs it, and the same tenant's next
    launches with valid indices run and give the right result."""
    w = Worker(rundir, backend="cuda")
    try:
        r = _guard_child(w, """
            ptx = open({path!r}).read()
            f = fn(load(ptx), "triton_poi_fused_index_0")
            n = 1024
            with agile_torch.use_pool():
                idx = torch.randint(0, 64, (n,), device="cuda", dtype=torch.int64)
                tab = torch.randn(64, device="cuda")
                out = torch.zeros(n, device="cuda")
            args = struct.pack("QQQI", idx.data_ptr(), tab.data_ptr(), out.data_ptr(), n)
            assert launch(f, (n // 128, 1, 1), (128, 1, 1), args) == 0
            good = barrier()
            ok1 = torch.equal(out, tab[idx])
            idx[5] = 1000                                  # out of range: the assert fires
            assert launch(f, (n // 128, 1, 1), (128, 1, 1), args) == 0
            bad = barrier()
            idx[5] = 3
            out.zero_()
            assert launch(f, (n // 128, 1, 1), (128, 1, 1), args) == 0
            again = barrier()
            torch.cuda.synchronize()
            print(json.dumps(dict(good=good, bad=bad, again=again, ok1=bool(ok1),
                                  ok2=bool(torch.equal(out, tab[idx])))))
        """, path=os.path.join(ROOT, "tests", "data", "ptx", "hand", "inductor_assert.ptx"))
        log = w.logtext()
        dev = w.status()["devices"][0]
    finally:
        w.stop()
    assert r["good"][0] == 0 and r["ok1"], r
    assert r["bad"][0] == EGUARD and r["bad"][1] == 1 and r["bad"][2] == 0xFFFFFFFF, r
    assert r["bad"][3] == 73, r                        # the PTX line of `call.uni`
    assert "kernel 1: device assert failed at PTX line 73" in log, log
    assert r["again"][0] == 0 and r["ok2"], r
    assert dev.get("faults", 0) == 0, dev


@pytest.mark.gpu
def test_shared_memory_is_zeroed_between_kernels(rundir):
    """Issue 12.8: a kernel that reads shared memory it never wrote sees zeros, after another
    kernel filled the same SMs' shared memory with a pattern (many blocks, 48 KiB each)."""
    w = Worker(rundir, backend="cuda")
    try:
        r = _guard_child(w, """
            m = load({ptx!r})
            fw, fr = fn(m, "writer"), fn(m, "reader")
            n = 48 << 10
            with agile_torch.use_pool():
                acc = torch.zeros(1, device="cuda", dtype=torch.int32)
            args = struct.pack("QI", acc.data_ptr(), n)
            seen = 0
            for _ in range(20):
                assert launch(fw, (1024, 1, 1), (128, 1, 1), args, shmem=n) == 0
                assert launch(fr, (1024, 1, 1), (128, 1, 1), args, shmem=n) == 0
            rv = barrier()
            torch.cuda.synchronize()
            print(json.dumps(dict(rv=rv, acc=int(acc.item()))))
        """, ptx=SCRUB_PTX)
    finally:
        w.stop()
    assert r["rv"][0] == 0, r
    assert r["acc"] == 0, f"a kernel read another kernel's shared memory: {r['acc']:#x}"
