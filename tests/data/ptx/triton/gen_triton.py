"""Generate the Triton 3.x PTX corpus for the guard's tests (run on a GPU machine).

    python3 tests/data/ptx/triton/gen_triton.py OUTDIR

Each kernel is compiled by launching it once on small CUDA tensors (the launch returns the
CompiledKernel), and its PTX plus launch metadata are written to OUTDIR/<name>.ptx and
OUTDIR/<name>.json. The kernels are the shapes real PyTorch/Triton code has: elementwise,
reductions, softmax, layernorm, matmul (no TMA), attention.
"""
import json
import os
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x + y, mask=mask)


@triton.jit
def gelu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    y = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def sum_rows_kernel(x_ptr, out_ptr, n_cols, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + row * stride + cols, mask=cols < n_cols, other=0.0)
    tl.store(out_ptr + row, tl.sum(acc, axis=0))


@triton.jit
def atomic_hist_kernel(x_ptr, hist_ptr, n, NBINS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    v = tl.load(x_ptr + offs, mask=mask, other=0)
    tl.atomic_add(hist_ptr + (v % NBINS), 1, mask=mask)


@triton.jit
def softmax_kernel(out_ptr, in_ptr, in_stride, out_stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(in_ptr + row * in_stride + cols, mask=mask, other=-float("inf"))
    x = x - tl.max(x, axis=0)
    num = tl.exp(x)
    y = num / tl.sum(num, axis=0)
    tl.store(out_ptr + row * out_stride + cols, y, mask=mask)


@triton.jit
def layernorm_kernel(x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, stride, n, eps,
                     BLOCK: tl.constexpr):
    row = tl.program_id(0)
    x_ptr += row * stride
    y_ptr += row * stride
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, n, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + cols, mask=cols < n, other=0.).to(tl.float32)
    mean = tl.sum(acc, axis=0) / n
    var_acc = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, n, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < n, other=0.).to(tl.float32)
        x = tl.where(cols < n, x - mean, 0.)
        var_acc += x * x
    rstd = 1 / tl.sqrt(tl.sum(var_acc, axis=0) / n + eps)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)
    for off in range(0, n, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < n
        w = tl.load(w_ptr + cols, mask=mask)
        b = tl.load(b_ptr + cols, mask=mask)
        x = tl.load(x_ptr + cols, mask=mask, other=0.).to(tl.float32)
        tl.store(y_ptr + cols, (x - mean) * rstd * w + b, mask=mask)


@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    group = GROUP_M * num_pid_n
    gid = pid // group
    first_m = gid * GROUP_M
    gsize = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % group) % gsize)
    pid_n = (pid % group) // gsize
    offs_am = (pid_m * BM + tl.arange(0, BM)) % M
    offs_bn = (pid_n * BN + tl.arange(0, BN)) % N
    offs_k = tl.arange(0, BK)
    a_ptrs = a_ptr + offs_am[:, None] * sam + offs_k[None, :] * sak
    b_ptrs = b_ptr + offs_k[:, None] * sbk + offs_bn[None, :] * sbn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BK)):
        a = tl.load(a_ptrs, mask=offs_k[None, :] < K - k * BK, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k * BK, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BK * sak
        b_ptrs += BK * sbk
    c = acc.to(tl.float16)
    offs_cm = pid_m * BM + tl.arange(0, BM)
    offs_cn = pid_n * BN + tl.arange(0, BN)
    c_ptrs = c_ptr + scm * offs_cm[:, None] + scn * offs_cn[None, :]
    tl.store(c_ptrs, c, mask=(offs_cm[:, None] < M) & (offs_cn[None, :] < N))


@triton.jit
def attn_fwd_kernel(Q, K, V, O, sqm, skn, svn, som, N_CTX, scale,
                    BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr):
    start_m = tl.program_id(0)
    off_b = tl.program_id(1)
    offs_m = start_m * BM + tl.arange(0, BM)
    offs_n = tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    base = off_b * N_CTX * D
    q = tl.load(Q + base + offs_m[:, None] * sqm + offs_d[None, :], mask=offs_m[:, None] < N_CTX, other=0.0)
    m_i = tl.zeros([BM], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, D], dtype=tl.float32)
    for start_n in range(0, N_CTX, BN):
        cols = start_n + offs_n
        k = tl.load(K + base + cols[None, :] * skn + offs_d[:, None], mask=cols[None, :] < N_CTX, other=0.0)
        qk = tl.dot(q, k) * scale
        qk = tl.where(cols[None, :] < N_CTX, qk, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp(qk - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = tl.load(V + base + cols[:, None] * svn + offs_d[None, :], mask=cols[:, None] < N_CTX, other=0.0)
        acc = tl.dot(p.to(tl.float16), v, acc)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(O + base + offs_m[:, None] * som + offs_d[None, :], acc.to(tl.float16), mask=offs_m[:, None] < N_CTX)


def main(out):
    os.makedirs(out, exist_ok=True)
    dev = "cuda"
    n = 4096
    x = torch.randn(n, device=dev)
    y = torch.randn(n, device=dev)
    o = torch.empty_like(x)
    runs = {}
    runs["add"] = add_kernel[(triton.cdiv(n, 1024),)](x, y, o, n, BLOCK=1024)
    runs["gelu_fp16"] = gelu_kernel[(triton.cdiv(n, 1024),)](x.half(), torch.empty(n, device=dev, dtype=torch.float16), n, BLOCK=1024)
    X = torch.randn(64, 1000, device=dev)
    runs["sum_rows"] = sum_rows_kernel[(64,)](X, torch.empty(64, device=dev), 1000, X.stride(0), BLOCK=256)
    xi = torch.randint(0, 1 << 20, (n,), device=dev, dtype=torch.int32)
    runs["atomic_hist"] = atomic_hist_kernel[(triton.cdiv(n, 512),)](xi, torch.zeros(64, device=dev, dtype=torch.int32), n, NBINS=64, BLOCK=512)
    S = torch.randn(128, 781, device=dev)
    runs["softmax"] = softmax_kernel[(128,)](torch.empty_like(S), S, S.stride(0), S.stride(0), 781, BLOCK=1024)
    L = torch.randn(64, 1024, device=dev, dtype=torch.float16)
    w = torch.randn(1024, device=dev, dtype=torch.float16)
    b = torch.randn(1024, device=dev, dtype=torch.float16)
    runs["layernorm"] = layernorm_kernel[(64,)](L, torch.empty_like(L), w, b, torch.empty(64, device=dev), torch.empty(64, device=dev), L.stride(0), 1024, 1e-5, BLOCK=512)
    A = torch.randn(512, 256, device=dev, dtype=torch.float16)
    B = torch.randn(256, 384, device=dev, dtype=torch.float16)
    C = torch.empty(512, 384, device=dev, dtype=torch.float16)
    runs["matmul"] = matmul_kernel[(triton.cdiv(512, 64) * triton.cdiv(384, 64),)](
        A, B, C, 512, 384, 256, A.stride(0), A.stride(1), B.stride(0), B.stride(1), C.stride(0), C.stride(1),
        BM=64, BN=64, BK=32, GROUP_M=8)
    Bt, N, D = 2, 256, 64
    q = torch.randn(Bt, N, D, device=dev, dtype=torch.float16)
    k = torch.randn_like(q)
    v = torch.randn_like(q)
    oo = torch.empty_like(q)
    runs["attention"] = attn_fwd_kernel[(triton.cdiv(N, 64), Bt)](q, k, v, oo, D, D, D, D, N, 0.125, BM=64, BN=64, D=D)
    torch.cuda.synchronize()
    for name, ck in runs.items():
        with open(os.path.join(out, name + ".ptx"), "w") as f:
            f.write(ck.asm["ptx"])
        md = ck.metadata
        meta = {"name": md.name, "num_warps": md.num_warps, "shared": md.shared,
                "triton": triton.__version__, "torch": torch.__version__,
                "device": torch.cuda.get_device_name()}
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
        print(f"{name}: {len(ck.asm['ptx'])} bytes of PTX, kernel {md.name}, warps {md.num_warps}, shared {md.shared}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/ptx/triton")
