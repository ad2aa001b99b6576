#!/usr/bin/env python3
"""triton_overhead.py - kernel-time overhead of the PTX guard on Triton 3.6 kernels.

Compiles Triton kernels (elementwise, softmax, layernorm, matmul without TMA, attention),
takes their PTX (CompiledKernel.asm["ptx"]), guards it with the agile-guard binary, loads
both with cuModuleLoadData and times them with CUDA events on the same buffers, placed
inside a VMM tenant window exactly as the worker maps it (so the guarded kernel's fenced
addresses are the real ones). Also checks that guarded and unguarded outputs are
bit-identical. Goal: geomean <= 1.03x, max <= 1.10x.

usage: python3 guard/gpu/triton_overhead.py --guard build/bin/agile-guard --out OUT.json
       [--strict] [--reps 50] [--only NAME]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cudrv import Driver, pack_arg  # noqa: E402


# ---- kernels ----------------------------------------------------------------------------
@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


@triton.jit
def softmax_kernel(out_ptr, in_ptr, in_stride, out_stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(in_ptr + row * in_stride + cols, mask=cols < n_cols, other=-float("inf"))
    x = x - tl.max(x, axis=0)
    num = tl.exp(x)
    tl.store(out_ptr + row * out_stride + cols, num / tl.sum(num, axis=0), mask=cols < n_cols)


@triton.jit
def layernorm_kernel(x_ptr, y_ptr, w_ptr, b_ptr, stride, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=mask).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask).to(tl.float32)
    tl.store(y_ptr + row * stride + cols, (xc * rstd * w + b).to(tl.float16), mask=mask)


@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr):
    pid = tl.program_id(0)
    npm, npn = tl.cdiv(M, BM), tl.cdiv(N, BN)
    group = GROUP * npn
    gid = pid // group
    first = gid * GROUP
    gsz = min(npm - first, GROUP)
    pm = first + ((pid % group) % gsz)
    pn = (pid % group) // gsz
    rm = (pm * BM + tl.arange(0, BM)) % M
    rn = (pn * BN + tl.arange(0, BN)) % N
    rk = tl.arange(0, BK)
    a = a_ptr + rm[:, None] * sam + rk[None, :] * sak
    b = b_ptr + rk[:, None] * sbk + rn[None, :] * sbn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BK)):
        acc += tl.dot(tl.load(a, mask=rk[None, :] < K - k * BK, other=0.0),
                      tl.load(b, mask=rk[:, None] < K - k * BK, other=0.0))
        a += BK * sak
        b += BK * sbk
    cm = pm * BM + tl.arange(0, BM)
    cn = pn * BN + tl.arange(0, BN)
    tl.store(c_ptr + cm[:, None] * scm + cn[None, :] * scn, acc.to(tl.float16),
             mask=(cm[:, None] < M) & (cn[None, :] < N))


@triton.jit
def attn_kernel(q_ptr, k_ptr, v_ptr, o_ptr, sz, sh, sm, seq, scale,
                BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr):
    start_m = tl.program_id(0)
    off_hz = tl.program_id(1)
    base = off_hz * sh
    offs_m = start_m * BM + tl.arange(0, BM)
    offs_n = tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    q = tl.load(q_ptr + base + offs_m[:, None] * sm + offs_d[None, :])
    m_i = tl.zeros([BM], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, D], dtype=tl.float32)
    for start_n in range(0, seq, BN):
        k = tl.load(k_ptr + base + (start_n + offs_n)[None, :] * sm + offs_d[:, None])
        qk = tl.dot(q, k) * scale
        m_ij = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp(qk - m_ij[:, None])
        alpha = tl.exp(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + base + (start_n + offs_n)[:, None] * sm + offs_d[None, :])
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v)
        m_i = m_ij
    tl.store(o_ptr + base + offs_m[:, None] * sm + offs_d[None, :], (acc / l_i[:, None]).to(tl.float16))


# ---- cases ------------------------------------------------------------------------------
def cases():
    """(name, kernel, grid, [tensors (torch, on the GPU)], [scalars], constexprs, outputs)"""
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    out = []
    n = 1 << 24
    x, y = torch.randn(n, device=dev, generator=g), torch.randn(n, device=dev, generator=g)
    out.append(("add", add_kernel, (triton.cdiv(n, 1024),), [x, y, torch.empty_like(x)], [n],
                dict(BLOCK=1024), [2]))
    r, c = 8192, 2048
    a = torch.randn(r, c, device=dev, generator=g)
    out.append(("softmax", softmax_kernel, (r,), [torch.empty_like(a), a], [c, c, c],
                dict(BLOCK=triton.next_power_of_2(c), num_warps=8), [0]))
    r, c = 8192, 4096
    xl = torch.randn(r, c, device=dev, generator=g, dtype=torch.float16)
    w = torch.randn(c, device=dev, generator=g, dtype=torch.float16)
    b = torch.randn(c, device=dev, generator=g, dtype=torch.float16)
    out.append(("layernorm", layernorm_kernel, (r,), [xl, torch.empty_like(xl), w, b], [c, c, 1e-5],
                dict(BLOCK=triton.next_power_of_2(c), num_warps=8), [1]))
    M = N = K = 4096
    A = torch.randn(M, K, device=dev, generator=g, dtype=torch.float16)
    B = torch.randn(K, N, device=dev, generator=g, dtype=torch.float16)
    C = torch.empty(M, N, device=dev, dtype=torch.float16)
    out.append(("matmul", matmul_kernel, (triton.cdiv(M, 128) * triton.cdiv(N, 128),), [A, B, C],
                [M, N, K, K, 1, N, 1, N, 1], dict(BM=128, BN=128, BK=64, GROUP=8, num_warps=8, num_stages=3), [2]))
    Z, H, S, D = 4, 16, 2048, 64
    q, k, v = (torch.randn(Z, H, S, D, device=dev, generator=g, dtype=torch.float16) for _ in range(3))
    o = torch.empty_like(q)
    out.append(("attention", attn_kernel, (S // 128, Z * H), [q, k, v, o], [H * S * D, S * D, D, S, D ** -0.5],
                dict(BM=128, BN=64, D=D, num_warps=8, num_stages=2), [3]))
    return out


# ---- helpers ----------------------------------------------------------------------------
def ptx_params(ptx: str, name: str) -> list:
    m = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\((.*?)\)", ptx, re.S)
    if not m:
        raise RuntimeError(f"entry {name} not found in PTX")
    types = []
    for p in m.group(1).split(","):
        t = re.search(r"\.(u64|b64|s64|u32|b32|s32|f32|f64|u16|b16)\b", p)
        types.append(t.group(1) if t else "u64")
    return types


def pack(ptype: str, val):
    if ptype in ("u64", "b64", "s64"):
        return pack_arg("u64", val)
    if ptype == "f32":
        return pack_arg("f32", val)
    if ptype == "f64":
        return pack_arg("f64", val)
    return pack_arg("i32", val)


def meta(ck, key, default=None):
    md = getattr(ck, "metadata", None)
    v = getattr(md, key, None) if md is not None else None
    if v is None and isinstance(md, dict):
        v = md.get(key)
    return default if v is None else v


def time_kernel(drv, fn, grid, block, args, shared, reps, inner=10) -> float:
    """Median over reps of the mean kernel time of `inner` back-to-back launches (us)."""
    for _ in range(5):
        drv.launch(fn, grid, block, args, shared)
    drv.sync()
    e0, e1 = drv.event(), drv.event()
    ts = []
    for _ in range(reps):
        drv.record(e0)
        for _ in range(inner):
            drv.launch(fn, grid, block, args, shared)
        drv.record(e1)
        ts.append(drv.elapsed_ms(e0, e1) * 1000.0 / inner)
    ts.sort()
    return ts[len(ts) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--guard", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--strict", action="store_true", help="time strict mode instead of mask mode")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--window-bits", type=int, default=28)
    ap.add_argument("--only")
    a = ap.parse_args()

    torch.cuda.init()
    torch.zeros(1, device="cuda")  # torch's context is the primary context: ours too
    drv = Driver(torch.cuda.current_device())
    win = drv.window(a.window_bits, 1 << 20)
    viol = drv.alloc(16)
    tmp = tempfile.mkdtemp(prefix="guard-triton.")
    rows, failures = [], []
    print(f"device {drv.name}, triton {triton.__version__}, torch {torch.__version__}, "
          f"mode {'strict' if a.strict else 'mask'}, window 2^{a.window_bits}")
    for name, kern, grid, tensors, scalars, cexpr, outs in cases():
        if a.only and a.only not in name:
            continue
        try:
            ck = kern[grid](*tensors, *scalars, **cexpr)  # compile (and run once) through Triton
            torch.cuda.synchronize()
            ptx = ck.asm["ptx"]
            kname = meta(ck, "name", getattr(ck, "name", None))
            shared = int(meta(ck, "shared", 0))
            nwarps = int(meta(ck, "num_warps", cexpr.get("num_warps", 4)))
            scratch = int(meta(ck, "global_scratch_size", 0) or 0)
            src = os.path.join(tmp, f"{name}.ptx")
            dst = os.path.join(tmp, f"{name}.guarded.ptx")
            rep = os.path.join(tmp, f"{name}.json")
            open(src, "w").write(ptx)
            cmd = [a.guard] + (["--strict"] if a.strict else []) + ["--report", rep, src, "-o", dst]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"guard rejected {name}: {p.stderr.strip()}")
            nsites = json.load(open(rep))["nsites"]
            # buffers: the tensors' contents copied into the window, same for both runs
            win.reset()
            ptrs = []
            for t in tensors:
                nb = t.numel() * t.element_size()
                ptr = win.suballoc(nb, 1024)
                drv.dtod(ptr, t.data_ptr(), nb)
                ptrs.append((ptr, nb))
            types = ptx_params(ptx, kname)
            # PTX parameters: the tensors and scalars in order, minus any int Triton
            # specialised to the constant 1, then Triton's scratch pointers (global,
            # profile): 0..2 trailing extras.
            user = [p_ for p_, _ in ptrs] + list(scalars)
            nextra = len(types) - len(user)
            if not 0 <= nextra <= 2:
                user = [p_ for p_, _ in ptrs] + [s for s in scalars if not (isinstance(s, int) and s == 1)]
                nextra = len(types) - len(user)
            if nextra < 0 or nextra > 2:
                raise RuntimeError(f"{name}: {len(types)} PTX params for {len(user)} arguments")
            scratch_ptr = 0
            if nextra >= 1 and scratch:
                ncta = math.prod(grid)
                scratch_ptr = win.suballoc(scratch * ncta, 256)
            vals = user + [scratch_ptr] + [0] * max(0, nextra - 1) if nextra else user
            args = [pack(t, v) for t, v in zip(types, vals)]
            hidden = [pack_arg("u64", win.mask), pack_arg("u64", win.base)]
            if a.strict:
                drv.memset(viol, 0, 16)
                hidden.append(pack_arg("u64", viol))
            m0, m1 = drv.load(ptx.encode()), drv.load(open(dst, "rb").read())
            f0, f1 = drv.function(m0, kname), drv.function(m1, kname)
            drv.set_dynamic_smem(f0, shared)
            drv.set_dynamic_smem(f1, shared)
            block = (32 * nwarps, 1, 1)
            # correctness: one launch each from the same inputs, outputs bit-identical
            results = []
            for f, extra in ((f0, []), (f1, hidden)):
                for i in outs:
                    drv.memset(ptrs[i][0], 0, ptrs[i][1])
                drv.launch(f, grid, block, args + extra, shared)
                drv.sync()
                results.append([drv.dtoh(*ptrs[i]) for i in outs])
            same = results[0] == results[1]
            t0 = time_kernel(drv, f0, grid, block, args, shared, a.reps)
            t1 = time_kernel(drv, f1, grid, block, args + hidden, shared, a.reps)
            row = {"kernel": name, "entry": kname, "sites": nsites, "unguarded_us": round(t0, 2),
                   "guarded_us": round(t1, 2), "ratio": round(t1 / t0, 4), "outputs_identical": same,
                   "num_warps": nwarps, "shared": shared}
            if a.strict:
                import struct
                row["strict_violation"] = struct.unpack("<IIQ", drv.dtoh(viol, 16))
            rows.append(row)
            print(f"{name:10s} sites {nsites:4d}  unguarded {t0:9.2f} us  guarded {t1:9.2f} us  "
                  f"x{t1 / t0:.3f}  {'identical' if same else 'OUTPUT DIFFERS'}")
            drv.unload(m0)
            drv.unload(m1)
        except Exception as e:  # report and go on with the next kernel
            failures.append({"kernel": name, "error": repr(e)})
            print(f"{name:10s} FAILED: {e!r}")
    ratios = [r["ratio"] for r in rows]
    geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios)) if ratios else float("nan")
    worst = max(ratios) if ratios else float("nan")
    summary = {"device": drv.name, "triton": triton.__version__, "torch": torch.__version__,
               "mode": "strict" if a.strict else "mask", "rows": rows, "failures": failures,
               "geomean": round(geo, 4), "max": round(worst, 4),
               "goal_met": bool(ratios) and geo <= 1.03 and worst <= 1.10 and not failures
               and all(r["outputs_identical"] for r in rows)}
    print(f"\ngeomean x{geo:.3f}  max x{worst:.3f}  (goal geomean <= 1.03, max <= 1.10): "
          f"{'met' if summary['goal_met'] else 'NOT met'}")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    json.dump(summary, open(a.out, "w"), indent=2)
    drv.free(viol)
    win.close()
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
