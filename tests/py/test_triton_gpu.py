"""Guarded Triton kernels through the worker (issue 5), on a GPU: elementwise, softmax and
matmul (no TMA) give the same results as native Triton launches, interleaved with PyTorch ops
on the same stream without explicit synchronisation; an adversarial kernel writing far outside
its tensor leaves another tenant's canary intact; two clients flooding launches get
throughputs within 10% of each other. Skipped without a GPU (and without triton).

Triton needs the kernels' source file, so each scenario is written to a file and run as a
child process (libagile's default client and CUDA are per process)."""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from conftest import CABI_PRELUDE, Worker, communicate, run_as

pytestmark = pytest.mark.gpu
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NOBODY = 65534
SCRIBBLE_PTX = os.path.join(ROOT, "tests", "data", "ptx", "hand", "scribble.ptx")

PRELUDE = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {root!r})
    import torch, triton
    import triton.language as tl
    import agile_torch
    import agile_torch.triton as at
    agile_torch.init(runtime_dir={dir!r}, backend="cuda")

    @triton.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask)
        y = tl.load(y_ptr + offs, mask=mask)
        tl.store(out_ptr + offs, x + y, mask=mask)

    @triton.jit
    def softmax_kernel(out_ptr, in_ptr, in_stride, out_stride, n_cols, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        x = tl.load(in_ptr + row * in_stride + cols, mask=cols < n_cols, other=-float("inf"))
        x = x - tl.max(x, axis=0)
        num = tl.exp(x)
        tl.store(out_ptr + row * out_stride + cols, num / tl.sum(num, axis=0), mask=cols < n_cols)

    @triton.jit
    def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, K, BK):
            a = tl.load(a_ptr + rm[:, None] * sam + (k + rk)[None, :] * sak,
                        mask=(rm[:, None] < M) & ((k + rk)[None, :] < K), other=0.0)
            b = tl.load(b_ptr + (k + rk)[:, None] * sbk + rn[None, :] * sbn,
                        mask=((k + rk)[:, None] < K) & (rn[None, :] < N), other=0.0)
            acc += tl.dot(a, b)
        tl.store(c_ptr + rm[:, None] * scm + rn[None, :] * scn, acc.to(tl.float16),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))

    @triton.jit
    def scribble_kernel(p_ptr, far, n, BLOCK: tl.constexpr):
        # writes at p + far + i * 2 MiB for many i: far outside its tensor, across the window
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        addr = p_ptr + far + i.to(tl.int64) * (1 << 19)  # int32 elements: 2 MiB apart
        tl.store(addr, tl.full((BLOCK,), 0x66, tl.int32), mask=i < n)

    def out(**kw):
        print(json.dumps(kw), flush=True)
""")


def run(worker, body, wait=True, **fmt):
    src = PRELUDE.format(root=ROOT, dir=worker.dir) + textwrap.dedent(body).format(**fmt)
    f = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, dir=os.path.dirname(worker.dir))
    f.write(src)
    f.close()
    p = subprocess.Popen([sys.executable, f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.PIPE, text=True)
    if not wait:
        return p
    o, e = communicate(p, worker)
    assert p.returncode == 0, o + e
    return json.loads(o.strip().splitlines()[-1])


@pytest.fixture
def gworker(rundir):
    pytest.importorskip("triton")
    w = Worker(rundir, backend="cuda")
    yield w
    w.stop()


def test_elementwise_softmax_matmul_equal_native(gworker):
    r = run(gworker, """
        torch.manual_seed(0)
        res = {{}}
        with agile_torch.use_pool():
            n = 98432
            x = torch.randn(n, device="cuda"); y = torch.randn(n, device="cuda")
            a_out = torch.empty_like(x); n_out = torch.empty_like(x)
            grid = lambda meta: (triton.cdiv(n, meta["BLOCK"]),)
            at.launch(add_kernel, grid, x, y, a_out, n, BLOCK=1024)
            add_kernel[grid](x, y, n_out, n, BLOCK=1024)
            torch.cuda.synchronize(); at.synchronize()
            res["add"] = bool(torch.equal(a_out, n_out)) and bool(torch.allclose(a_out, x + y))

            s_in = torch.randn(1823, 781, device="cuda")
            s_a = torch.empty_like(s_in); s_n = torch.empty_like(s_in)
            B = triton.next_power_of_2(s_in.shape[1])
            g = (s_in.shape[0],)
            at.launch(softmax_kernel, g, s_a, s_in, s_in.stride(0), s_a.stride(0), s_in.shape[1],
                      BLOCK=B, num_warps=8)
            softmax_kernel[g](s_n, s_in, s_in.stride(0), s_n.stride(0), s_in.shape[1], BLOCK=B,
                              num_warps=8)
            torch.cuda.synchronize(); at.synchronize()
            res["softmax"] = bool(torch.equal(s_a, s_n)) and bool(
                torch.allclose(s_a, torch.softmax(s_in, dim=1), atol=1e-6))

            M, N, K = 512, 384, 256
            A = torch.randn(M, K, device="cuda", dtype=torch.float16)
            Bm = torch.randn(K, N, device="cuda", dtype=torch.float16)
            C_a = torch.empty(M, N, device="cuda", dtype=torch.float16); C_n = torch.empty_like(C_a)
            g = (triton.cdiv(M, 64), triton.cdiv(N, 64))
            args = (A, Bm, None, M, N, K, A.stride(0), A.stride(1), Bm.stride(0), Bm.stride(1),
                    C_a.stride(0), C_a.stride(1))
            at.launch(matmul_kernel, g, A, Bm, C_a, *args[3:], BM=64, BN=64, BK=32)
            matmul_kernel[g](A, Bm, C_n, *args[3:], BM=64, BN=64, BK=32)
            torch.cuda.synchronize(); at.synchronize()
            res["matmul"] = bool(torch.equal(C_a, C_n)) and bool(
                torch.allclose(C_a.float(), (A.float() @ Bm.float()), atol=0.5, rtol=1e-2))
        out(**res)
    """)
    assert r == {"add": True, "softmax": True, "matmul": True}, r


def test_interleaved_with_torch_ops_without_sync(gworker):
    r = run(gworker, """
        guarded_add = agile_torch.guarded(add_kernel)
        ok = True
        s = torch.cuda.Stream()
        with agile_torch.use_pool(), torch.cuda.stream(s):
            n = 1 << 22
            x = torch.randn(n, device="cuda")
            for i in range(10):
                y = x * (i + 1)                       # torch, same stream
                z = torch.empty_like(x)
                guarded_add[(triton.cdiv(n, 1024),)](y, y, z, n, BLOCK=1024)   # worker
                w = z + 1                             # torch, must see z
                ok &= bool(torch.allclose(w, 2 * (i + 1) * x + 1))   # .item()-like sync at the end only
        out(ok=ok)
        at.synchronize()
    """)
    assert r["ok"]


# Another tenant (uid 65534, a C-ABI client) launches a guarded wild writer aimed at this
# tenant's tensor and across its whole window. (Sessions of one uid are one tenant and share
# its window: only another tenant is outside it.)
SCRIBBLER = CABI_PRELUDE + textwrap.dedent("""
    target, ptx = int(sys.argv[2]), open(sys.argv[3], "rb").read()
    p = L.agile_malloc(1 << 20, 0, None)
    assert p, L.agile_last_error()
    m, f = U64(), U64()
    assert L.agile_module_load(ptx, len(ptx), 0, ctypes.byref(m)) == 0, L.agile_last_error()
    assert L.agile_module_function(m, b"scribble", ctypes.byref(f), None) == 0
    W = 1 << 40
    rvs = []
    for far in (target - p, -(1 << 40), 1 << 40, W, -W):
        args = (ctypes.c_uint64 * 3)(p, far & (2**64 - 1), 16 * 256)
        rvs.append(L.agile_launch(f, (UI * 3)(16, 1, 1), (UI * 3)(256, 1, 1), 0, None,
                                  ctypes.byref(args), 20))
    # its writes land in its own window (anywhere in it): errors are its own problem
    print(json.dumps(dict(launches=rvs, barrier=L.agile_barrier(None, ctypes.byref(U64())))))
""")


def test_adversarial_kernel_leaves_another_tenants_canary(shared_cuda_worker):
    pytest.importorskip("triton")
    w, _ = shared_cuda_worker
    victim = run(w, """
        with agile_torch.use_pool():
            c = torch.full((1 << 20,), 0x5A5A5A5A, dtype=torch.int32, device="cuda")
        torch.cuda.synchronize()
        print(json.dumps(dict(ptr=c.data_ptr())), flush=True)
        sys.stdin.readline()
        torch.cuda.synchronize()
        out(intact=bool((c == 0x5A5A5A5A).all()))
    """, wait=False)
    ptr = json.loads(victim.stdout.readline())["ptr"]
    att = run_as(NOBODY, SCRIBBLER, ptr, SCRIBBLE_PTX, runtime_dir=w.dir)
    assert att.returncode == 0, att.stdout + att.stderr + w.logtext()
    assert json.loads(att.stdout.strip().splitlines()[-1])["launches"] == [0] * 5, att.stdout
    o, e = communicate(victim, w, stdin="\n")
    assert victim.returncode == 0, o + e
    assert json.loads(o.strip().splitlines()[-1])["intact"]


def test_two_clients_flooding_launches_fair(gworker):
    start = time.time() + 20  # both have compiled and loaded by then
    body = """
        with agile_torch.use_pool():
            # 3 x 64 MiB per launch (~60 us on an H200): the GPU, not the clients' Python
            # loops, is the bottleneck, so the shares are the dispatcher's and the GPU's doing
            n = 1 << 24
            x = torch.randn(n, device="cuda"); y = torch.randn(n, device="cuda")
            z = torch.empty_like(x)
        g = (triton.cdiv(n, 1024),)
        at.launch(add_kernel, g, x, y, z, n, BLOCK=1024)
        at.synchronize()
        while time.time() < {start}:
            time.sleep(0.001)
        count = 0
        while time.time() < {start} + 3.0:
            at.launch(add_kernel, g, x, y, z, n, BLOCK=1024)
            count += 1
        at.synchronize()
        out(count=count, secs=time.time() - {start})
    """
    kids = [run(gworker, body, wait=False, start=start) for _ in range(2)]
    res = []
    for k in kids:
        o, e = communicate(k, gworker)
        assert k.returncode == 0, o + e
        res.append(json.loads(o.strip().splitlines()[-1]))
    rates = sorted(r["count"] / r["secs"] for r in res)
    assert rates[0] > 100, res
    assert rates[1] <= rates[0] * 1.10, res
