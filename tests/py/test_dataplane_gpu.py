"""The data plane on the cuda backend (issue 5): cross-process stream order without host sync
(in-window memcpy/memset through the worker interleaved with PyTorch ops on one stream),
guarded PTX launches from libagile's C API, strict-mode violations reported at the barrier,
the per-launch time limit, and out-of-window extents refused. Skipped without a GPU.

Each scenario runs in a child process (libagile's default client and CUDA are per process)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import agilec
from conftest import Worker, communicate

pytestmark = pytest.mark.gpu
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# the library's codes (agilec.ERR)
EBOUNDS, EGUARD, ETIMELIMIT = (agilec.ERR[n] for n in ("EBOUNDS", "EGUARD", "ETIMELIMIT"))

# Hand-written PTX: a store at p + off, an add of two vectors, and a spin on %globaltimer.
PTX = r"""
.version 8.0
.target sm_90
.address_size 64

.visible .entry store32(.param .u64 p, .param .u64 off, .param .u32 v)
{
    .reg .b64 %rd<4>;
    .reg .b32 %r<2>;
    ld.param.u64 %rd1, [p];
    ld.param.u64 %rd2, [off];
    ld.param.u32 %r1, [v];
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r1;
    ret;
}

.visible .entry vadd(.param .u64 a, .param .u64 b, .param .u64 c, .param .u32 n)
{
    .reg .b64 %rd<8>;
    .reg .b32 %r<6>;
    .reg .f32 %f<4>;
    .reg .pred %p1;
    ld.param.u64 %rd1, [a];
    ld.param.u64 %rd2, [b];
    ld.param.u64 %rd3, [c];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    mul.wide.u32 %rd4, %r5, 4;
    add.s64 %rd5, %rd1, %rd4;
    add.s64 %rd6, %rd2, %rd4;
    add.s64 %rd7, %rd3, %rd4;
    ld.global.f32 %f1, [%rd5];
    ld.global.f32 %f2, [%rd6];
    add.f32 %f3, %f1, %f2;
    st.global.f32 [%rd7], %f3;
DONE:
    ret;
}

.visible .entry spin(.param .u64 ns)
{
    .reg .b64 %rd<5>;
    .reg .pred %p1;
    ld.param.u64 %rd1, [ns];
    mov.u64 %rd2, %globaltimer;
LOOP:
    mov.u64 %rd3, %globaltimer;
    sub.s64 %rd4, %rd3, %rd2;
    setp.lt.u64 %p1, %rd4, %rd1;
    @%p1 bra LOOP;
    ret;
}
"""

PRELUDE = textwrap.dedent("""
    import ctypes, json, os, struct, sys, time
    sys.path.insert(0, {root!r})
    import torch
    import agile_torch
    from agile_torch import _native
    agile_torch.init(runtime_dir={dir!r}, backend="cuda")
    torch.cuda.init()
    L = _native.lib()
    V, U64, SZ, I, UI = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_int, ctypes.c_uint
    L.agile_memset_async.argtypes = [V, I, SZ, V]
    L.agile_memcpy_async.argtypes = [V, V, SZ, V]
    L.agile_barrier.argtypes = [V, ctypes.POINTER(U64)]
    L.agile_module_load.argtypes = [ctypes.c_char_p, SZ, UI, ctypes.POINTER(U64)]
    L.agile_module_function.argtypes = [U64, ctypes.c_char_p, ctypes.POINTER(U64), ctypes.POINTER(UI)]
    L.agile_launch.argtypes = [U64, ctypes.POINTER(UI), ctypes.POINTER(UI), UI, V, V, SZ]
    class AErr(ctypes.Structure):
        _fields_ = [("status", ctypes.c_int32), ("kernel", ctypes.c_uint32), ("seq", U64),
                    ("site", U64), ("addr", U64)]
    L.agile_last_async_error.argtypes = [ctypes.POINTER(AErr)]
    PTX = {ptx!r}.encode()

    def err():
        return L.agile_last_error().decode()

    def barrier():
        seq = U64()
        rv = L.agile_barrier(None, ctypes.byref(seq))
        e = AErr()
        L.agile_last_async_error(ctypes.byref(e))
        return rv, seq.value, e.kernel, e.site, e.addr

    def module(strict=False):
        m = U64()
        rv = L.agile_module_load(PTX, len(PTX), 1 if strict else 0, ctypes.byref(m))
        assert rv == 0, (rv, err())
        return m.value

    def fn(m, name):
        f = U64()
        assert L.agile_module_function(m, name.encode(), ctypes.byref(f), None) == 0, err()
        return f.value

    def launch(f, grid, block, args, stream=None):
        g, b = (UI * 3)(*grid), (UI * 3)(*block)
        s = stream.cuda_stream if stream is not None else torch.cuda.current_stream().cuda_stream
        return L.agile_launch(f, g, b, 0, V(s), args, len(args))

    def out(**kw):
        print(json.dumps(kw), flush=True)
""")


def child(worker, body, **fmt):
    code = PRELUDE.format(root=ROOT, dir=worker.dir, ptx=PTX) + textwrap.dedent(body).format(**fmt)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    o, e = communicate(p, worker)
    assert p.returncode == 0, o + e
    return json.loads(o.strip().splitlines()[-1])


@pytest.fixture
def gworker(rundir):
    w = Worker(rundir, backend="cuda")
    yield w
    w.stop()


def test_stream_order_memset_memcpy_between_torch_ops(gworker):
    """fill (torch) -> memset (worker) -> sum (torch) on one stream, no host sync in between:
    the worker's op runs after the fill and before the sum, every time."""
    r = child(gworker, """
        s = torch.cuda.Stream()
        bad = 0
        with agile_torch.use_pool(), torch.cuda.stream(s):
            x = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")  # 64 MiB: fill takes a while
            y = torch.empty_like(x)
            sums = []
            for i in range(20):
                x.fill_(7)                                    # client stream
                assert L.agile_memset_async(x.data_ptr(), i % 3, x.numel(), V(s.cuda_stream)) == 0
                sums.append(x[:1 << 20].sum(dtype=torch.int64))   # client stream, after the memset
                y.fill_(1)
                assert L.agile_memcpy_async(y.data_ptr(), x.data_ptr(), x.numel(), V(s.cuda_stream)) == 0
                sums.append(y[-(1 << 20):].sum(dtype=torch.int64))
        s.synchronize()
        vals = [int(v) for v in sums]
        want = []
        for i in range(20):
            want += [(i % 3) << 20, (i % 3) << 20]
        out(ok=vals == want, vals=vals[:6], want=want[:6], barrier=barrier()[:2])
    """)
    assert r["ok"], r
    assert r["barrier"] == [0, 0]


def test_stream_that_posts_nothing_pays_nothing(gworker):
    r = child(gworker, """
        with agile_torch.use_pool():
            x = torch.ones(1 << 20, device="cuda")
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            t0 = time.perf_counter()
            for _ in range(1000):
                x.add_(1)
            s.synchronize()
            dt = time.perf_counter() - t0
        out(value=float(x[0]), status=agile_torch.worker_status()["tenants"][0]["objects"]["RING"])
    """)
    assert r["value"] == 1001.0
    assert r["status"] == 0   # no ring was even attached


def test_guarded_ptx_launch_matches_torch(gworker):
    r = child(gworker, """
        m = module()
        f = fn(m, "vadd")
        n = 1 << 20
        with agile_torch.use_pool():
            a = torch.randn(n, device="cuda"); b = torch.randn(n, device="cuda")
            c = torch.zeros(n, device="cuda")
        args = struct.pack("<QQQI", a.data_ptr(), b.data_ptr(), c.data_ptr(), n)   # 28 bytes
        rv = launch(f, ((n + 255) // 256, 1, 1), (256, 1, 1), args)
        d = c * 2            # torch op on the same stream, no sync
        torch.cuda.synchronize()
        out(rv=rv, ok=bool(torch.allclose(c, a + b)), ok2=bool(torch.allclose(d, 2 * (a + b))),
            barrier=barrier()[:2])
    """)
    assert r["rv"] == 0 and r["ok"] and r["ok2"] and r["barrier"] == [0, 0]


def test_out_of_window_store_is_confined_and_strict_reports_it(gworker):
    r = child(gworker, """
        with agile_torch.use_pool():
            x = torch.zeros(1 << 20, dtype=torch.int32, device="cuda")
        base, W = agile_torch.pool_window()
        # mask mode: base + W + off lands at offset off of our own window
        f = fn(module(), "store32")
        off = x.data_ptr() - base + 64
        rv = launch(f, (1, 1, 1), (1, 1, 1), struct.pack("<QQI", base + W, off, 0x1234))
        torch.cuda.synchronize()
        confined = int(x[16])
        b1 = barrier()
        # strict mode: the same store is skipped and reported
        fs = fn(module(strict=True), "store32")
        rv2 = launch(fs, (1, 1, 1), (1, 1, 1), struct.pack("<QQI", base + W, off + 4, 0x5678))
        torch.cuda.synchronize()
        b2 = barrier()
        b3 = barrier()
        out(rv=rv, confined=confined, b1=b1[:2], rv2=rv2, skipped=int(x[17]), b2=b2, b3=b3[:2],
            target=base + W + off + 4)
    """)
    assert r["rv"] == 0 and r["confined"] == 0x1234 and r["b1"] == [0, 0]
    assert r["rv2"] == 0 and r["skipped"] == 0
    status, seq, kernel, site, addr = r["b2"]
    assert status == EGUARD and kernel == 1 and addr == r["target"]
    assert r["b3"] == [0, 0]   # reported once


def test_time_limit(rundir):
    conf = rundir + ".conf"
    with open(conf, "w") as f:
        f.write("[default]\ntime_limit_ms = 200\n")
    w = Worker(rundir, backend="cuda", config=conf)
    try:
        r = child(w, """
            f = fn(module(), "spin")
            with agile_torch.use_pool():
                torch.zeros(1, device="cuda")     # a window for the launch
            rv = launch(f, (1, 1, 1), (1, 1, 1), struct.pack("<Q", 1_000_000_000))  # 1 s
            b = barrier()
            time.sleep(1.2)   # the spin holds the worker stream until it ends
            ok = launch(f, (1, 1, 1), (1, 1, 1), struct.pack("<Q", 1_000_000))        # 1 ms
            b2 = barrier()
            st = agile_torch.worker_status()
            out(rv=rv, b=b[:2], ok=ok, b2=b2[:2],
                counter=[t for t in st["tenants"] if t["uid"] == os.getuid()][0]["timelimit_exceeded"])
        """)
        assert r["rv"] == 0 and r["b"][0] == ETIMELIMIT
        assert r["ok"] == 0 and r["b2"] == [0, 0]
        assert r["counter"] >= 1
    finally:
        w.stop()


def test_out_of_window_extent_refused_on_gpu(gworker):
    r = child(gworker, """
        with agile_torch.use_pool():
            x = torch.full((1 << 20,), 9, dtype=torch.uint8, device="cuda")
        base, W = agile_torch.pool_window()
        assert L.agile_memcpy_async(x.data_ptr(), base + W - 16, 4096, None) == 0
        b = barrier()
        torch.cuda.synchronize()
        out(b=b[:1], untouched=int((x == 9).all()))
    """)
    assert r["b"] == [EBOUNDS] and r["untouched"] == 1
