#!/usr/bin/env python3
"""torch.fft through the agile worker vs PyTorch's own cuFFT path, in one process and run.

    AGILE_RUNTIME_DIR=<dir of a cuda worker> python3 benchmarks/fft_gpu.py
    (benchmarks/run.py --gpu fft_gpu starts the worker)

Figures (p50 of wall time per call, each call followed by torch.cuda.synchronize(), so both
sides pay the same host sync). The machine drifts over a run, so native and agile are measured
in alternating rounds (native with the hook removed, then agile with it installed, 7 times)
and each figure is the median of its rounds' p50s (every round's value is in the JSON):
  - c2c_1m_x16: batched 1-D C2C, 16 transforms of 2^20 complex64 points. Goal: ratio <= 1.03.
  - fft2_4096: 2-D C2C of 4096 x 4096 complex64. Goal: ratio <= 1.03.
  - small_4096: one 4096-point C2C: added latency per call (agile - native). Goal <= 10 us.
    The hook (C++, libagile_aten.so) posts the exec on the command ring, ordered with the
    stream (no host sync, no round trip); what remains is the cross-context stream handshake.
  - plan_hit_us: agile_fft_plan_many of a plan the worker has cached (one round trip + a
    cache hit); plan_miss_ms: the first plan of 2^19 x 16 (cuFFT planning in the worker).
  - fallback_overhead_us: a non-agile tensor with the hook installed vs removed (the boxed
    C++ kernel that decides and calls PyTorch's original kernel).
The last line is JSON.
"""
import ctypes
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import torch  # noqa: E402

import agile_torch  # noqa: E402
import agile_torch.fft as afft  # noqa: E402
from agile_torch import _native  # noqa: E402


def p50_us(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2] * 1e6, ts[min(len(ts) - 1, int(len(ts) * 0.99))] * 1e6


def main():
    agile_torch.init(runtime_dir=os.environ.get("AGILE_RUNTIME_DIR"), backend="cuda")
    torch.manual_seed(0)
    shapes = {
        "c2c_1m_x16": ((16, 1 << 20), lambda t: torch.fft.fft(t), 20),
        "fft2_4096": ((4096, 4096), lambda t: torch.fft.fft2(t), 20),
        "small_4096": ((1, 4096), lambda t: torch.fft.fft(t), 500),
    }
    native_t, agile_in = {}, {}
    for name, (shape, _, _) in shapes.items():
        native_t[name] = torch.randn(*shape, dtype=torch.complex64, device="cuda")
        with agile_torch.use_pool():
            a = torch.empty_like(native_t[name])
        a.copy_(native_t[name])
        agile_in[name] = a
    res = {"bench": "fft_gpu", "device": torch.cuda.get_device_name(), "torch": torch.__version__}

    L = _native.lib()  # typed from _native.SIGNATURES
    rounds = 7
    nat_r = {n: [] for n in shapes}
    ag_r = {n: [] for n in shapes}
    fb_r = []
    for _ in range(rounds):
        afft.disable_fft()  # PyTorch's own kernels, no hook in the way
        for n, (_, f, it) in shapes.items():
            nat_r[n].append(p50_us(lambda f=f, n=n: f(native_t[n]), it))
        afft.enable_fft()
        served0 = afft.fft_stats()["served"]
        for n, (_, f, it) in shapes.items():
            ag_r[n].append(p50_us(lambda f=f, n=n: f(agile_in[n]), it))
        assert afft.fft_stats()["served"] > served0, "the hook did not serve the agile tensors"
        fb_r.append(p50_us(lambda: torch.fft.fft(native_t["small_4096"]), 500)[0])

    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]
    native = {n: (med([v[0] for v in nat_r[n]]), med([v[1] for v in nat_r[n]])) for n in shapes}
    agile = {n: (med([v[0] for v in ag_r[n]]), med([v[1] for v in ag_r[n]])) for n in shapes}
    fb = (med(fb_r),)
    # Plan miss (first plan of this desc in the worker) and hit (worker cache, new client handle).
    n = (ctypes.c_longlong * 1)(1 << 19)
    h = ctypes.c_uint64()
    t0 = time.perf_counter()
    assert L.agile_fft_plan_many(0, 1, n, None, 0, 0, None, 0, 0, 0x29, 16, 0, ctypes.byref(h)) == 0
    res["plan_miss_ms"] = (time.perf_counter() - t0) * 1e3
    L.agile_fft_destroy(h.value)
    hits = []
    for _ in range(200):
        t0 = time.perf_counter()
        assert L.agile_fft_plan_many(0, 1, n, None, 0, 0, None, 0, 0, 0x29, 16, 0,
                                     ctypes.byref(h)) == 0
        hits.append(time.perf_counter() - t0)
        L.agile_fft_destroy(h.value)
    hits.sort()
    res["plan_hit_us"] = hits[len(hits) // 2] * 1e6
    # Correctness of what was timed.
    for name, (_, f, _) in shapes.items():
        torch.testing.assert_close(f(agile_in[name]), f(native_t[name]))
    res["rounds"] = {n: {"native_p50_us": [v[0] for v in nat_r[n]],
                         "agile_p50_us": [v[0] for v in ag_r[n]]} for n in shapes}
    res["rounds"]["fallback_small_p50_us"] = fb_r

    print(f"{'case':12s} {'native p50 us':>14s} {'agile p50 us':>13s} {'ratio':>7s} {'added us':>9s}")
    for name in shapes:
        nat, ag = native[name][0], agile[name][0]
        res[name] = {"native_p50_us": nat, "native_p99_us": native[name][1], "agile_p50_us": ag,
                     "agile_p99_us": agile[name][1], "ratio": ag / nat, "added_us": ag - nat}
        print(f"{name:12s} {nat:14.1f} {ag:13.1f} {ag / nat:7.3f} {ag - nat:9.1f}")
    res["fallback_overhead_us"] = fb[0] - native["small_4096"][0]  # medians of the rounds
    res["goals"] = {"ratio_large_le_1.03": max(res["c2c_1m_x16"]["ratio"],
                                              res["fft2_4096"]["ratio"]) <= 1.03,
                    "small_added_le_10us": res["small_4096"]["added_us"] <= 10.0}
    print(f"plan hit {res['plan_hit_us']:.1f} us, plan miss {res['plan_miss_ms']:.1f} ms, "
          f"fallback overhead {res['fallback_overhead_us']:.1f} us")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
