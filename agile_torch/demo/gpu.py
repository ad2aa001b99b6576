"""The GPU demo's Triton parts (imported only where torch and triton are): a guarded add
kernel timed against the same kernel launched natively, and a wild writer run as another
process (`python3 -m agile_torch.demo.gpu OFFSET RUNTIME_DIR`)."""
from __future__ import annotations

import json
import sys
import time

import torch
import triton
import triton.language as tl

import agile_torch
from agile_torch import triton as at


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    tl.store(out_ptr + i, tl.load(x_ptr + i, mask=m) + tl.load(y_ptr + i, mask=m), mask=m)


@triton.jit
def scribble_kernel(p_ptr, far, BLOCK: tl.constexpr):
    # one store far away from its own tensor: p + far + i
    i = tl.arange(0, BLOCK)
    tl.store(p_ptr + far + i, tl.full((BLOCK,), 0x66, tl.int32))


def _p50_us(fn, iters: int, label: str, bar) -> float:
    ts = []
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
        if bar and (i % 10 == 9 or i + 1 == iters):
            bar(i, iters, label)
    ts.sort()
    return ts[len(ts) // 2] * 1e6


def guarded_add(bar) -> dict:
    """One guarded launch checked against torch, then launch latency (launch + sync) of the
    same kernel guarded in the worker vs launched natively by Triton."""
    n = 1 << 20
    with agile_torch.use_pool():
        x = torch.randn(n, device="cuda")
        y = torch.randn(n, device="cuda")
        z = torch.empty_like(x)
    grid = (triton.cdiv(n, 1024),)
    at.launch(add_kernel, grid, x, y, z, n, BLOCK=1024)
    at.synchronize()
    ok = bool(torch.equal(z, x + y))
    zn = torch.empty_like(x)
    add_kernel[grid](x, y, zn, n, BLOCK=1024)
    iters = 200
    nat = _p50_us(lambda: add_kernel[grid](x, y, zn, n, BLOCK=1024), iters, "native Triton launches",
                  bar)
    agl = _p50_us(lambda: at.launch(add_kernel, grid, x, y, z, n, BLOCK=1024), iters,
                  "guarded launches (worker)", bar)
    at.synchronize()
    return {"equal": ok, "launches": iters + 1, "native_us": nat, "guarded_us": agl}


def attack(offset: int, runtime_dir: str) -> dict:
    """Run in another process of the same uid (the same tenant: it shares the demo's window):
    aim a strict-mode guarded store one window past the demo's tensor (`offset` into the
    window), i.e. outside the tenant's window, where other tenants' and the worker's memory
    lie. A masking fence would wrap it onto the tensor (its own tenant's memory); strict mode
    skips it and reports it. Returns what the worker says."""
    agile_torch.init(runtime_dir=runtime_dir)
    with agile_torch.use_pool():
        mine = torch.zeros(1 << 16, dtype=torch.int32, device="cuda")
    base, size = agile_torch.pool_window()
    target = base + offset + size
    at.launch(scribble_kernel, (1,), mine, (target - mine.data_ptr()) // 4, BLOCK=32, strict=True)
    try:
        at.synchronize()
        return {"reported": False}
    except at.GuardViolation as e:
        return {"reported": True, "kernel": e.kernel, "site": e.site, "addr": hex(e.addr),
                "message": str(e)}


if __name__ == "__main__":
    print(json.dumps(attack(int(sys.argv[1]), sys.argv[2])), flush=True)
