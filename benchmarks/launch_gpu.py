#!/usr/bin/env python3
"""Remote (guarded, through the worker's ring) vs native launch of an empty kernel, on a GPU.

    AGILE_RUNTIME_DIR=DIR python3 benchmarks/launch_gpu.py [-n N]

Figures (the native cuLaunchKernel of the same, unguarded PTX in this process is the baseline,
measured in the same run):
  enqueue     time the launch call takes on the host (remote: stream-order counters + ring
              post; native: cuLaunchKernel)
  completion  launch + stream synchronize (remote: includes the worker's dispatch and the
              GPU-side cross-process handshake)
  throughput  10 000 back-to-back launches, then one synchronize: launches per second
Prints a table, then one JSON line. benchmarks/run.py starts a cuda worker for it.
"""
import argparse
import ctypes
import faulthandler
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

PTX = b"""
.version 8.0
.target sm_90
.address_size 64
.visible .entry empty()
{
    ret;
}
"""


def summ(v):
    v = sorted(v)
    return {"p50": v[len(v) // 2] * 1e6, "p99": v[int(len(v) * 0.99)] * 1e6,
            "mean": statistics.fmean(v) * 1e6, "runs": len(v)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--burst", type=int, default=10000)
    ap.add_argument("--watchdog", type=float, default=float(os.environ.get("AGILE_BENCH_WATCHDOG", 180)),
                    help="dump every thread's stack and exit if the run takes longer (s)")
    a = ap.parse_args()
    faulthandler.dump_traceback_later(a.watchdog, exit=True)
    import torch
    import agile_torch
    from agile_torch import _native
    agile_torch.init(backend="cuda")
    torch.cuda.init()
    torch.zeros(1, device="cuda")  # the primary context is current from here
    stream = torch.cuda.current_stream()
    s = ctypes.c_void_p(stream.cuda_stream)

    L = _native.lib()  # typed from _native.SIGNATURES
    V, U64, UI = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint
    m, f = U64(), U64()
    t0 = time.perf_counter()
    _native.check(L.agile_module_load(PTX, len(PTX), 0, ctypes.byref(m)), "module load")
    load_s = time.perf_counter() - t0
    _native.check(L.agile_module_function(m, b"empty", ctypes.byref(f), None), "function")
    one = (UI * 3)(1, 1, 1)
    block = (UI * 3)(32, 1, 1)

    cu = ctypes.CDLL("libcuda.so.1")
    cmod, cfn = ctypes.c_void_p(), ctypes.c_void_p()
    assert cu.cuModuleLoadData(ctypes.byref(cmod), ctypes.c_char_p(PTX)) == 0
    assert cu.cuModuleGetFunction(ctypes.byref(cfn), cmod, b"empty") == 0
    cu.cuLaunchKernel.argtypes = [V, UI, UI, UI, UI, UI, UI, UI, V, V, V]

    rt = os.environ.get("AGILE_RUNTIME_DIR", "")

    def sync():
        """stream.synchronize() with a deadline: a stuck cross-process handshake shows the
        worker's view (status, log tail) instead of hanging the run."""
        t0 = time.time()
        t_end = t0 + 30
        while not stream.query():  # spins first (timed figures), then naps
            if time.time() > t_end:
                import subprocess
                ctl = _native.binary_path("agilectl")
                st = subprocess.run([ctl, "--runtime-dir", rt, "--no-start", "status", "--json"],
                                    capture_output=True, text=True, timeout=20).stdout
                log = ""
                try:
                    log = open(os.path.join(rt, "worker.log")).read()[-3000:]
                except OSError:
                    pass
                raise SystemExit(f"stream did not drain in 30 s; ring completed "
                                 f"{L.agile_ring_completed(None, 0)}\nstatus: {st}\nworker log:\n{log}")
            if time.time() - t0 > 0.1:
                time.sleep(0.0002)

    def remote():
        return L.agile_launch(f.value, one, block, 0, s, None, 0)

    def native():
        return cu.cuLaunchKernel(cfn, 1, 1, 1, 32, 1, 1, 0, s, None, None)

    res = {"module_load_s": load_s}
    for name, fn in (("native", native), ("remote", remote)):
        print(f"{name}: warm-up", file=sys.stderr, flush=True)
        for _ in range(200):
            assert fn() == 0
        sync()
        enq, done = [], []
        for _ in range(a.n):
            t0 = time.perf_counter()
            rv = fn()
            t1 = time.perf_counter()
            assert rv == 0, (name, rv, L.agile_last_error())
            enq.append(t1 - t0)
        sync()
        print(f"{name}: enqueue timed; completion", file=sys.stderr, flush=True)
        for _ in range(a.n):
            t0 = time.perf_counter()
            fn()
            sync()
            done.append(time.perf_counter() - t0)
        print(f"{name}: burst", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        for _ in range(a.burst):
            fn()
        sync()
        secs = time.perf_counter() - t0
        res[name] = {"enqueue_us": summ(enq), "completion_us": summ(done),
                     "launches_per_s": a.burst / secs}
    seq = U64()
    _native.check(L.agile_barrier(None, ctypes.byref(seq)), "barrier after the runs")

    print(f"{'empty kernel launch':28s} {'enqueue p50/p99 us':>22s} {'completion p50/p99 us':>24s} {'launches/s':>12s}")
    for name in ("native", "remote"):
        r = res[name]
        print(f"{name + (' (baseline)' if name == 'native' else ' (guarded, ring)'):28s} "
              f"{r['enqueue_us']['p50']:10.2f}/{r['enqueue_us']['p99']:<10.2f} "
              f"{r['completion_us']['p50']:12.2f}/{r['completion_us']['p99']:<10.2f} "
              f"{r['launches_per_s']:12.0f}")
    res["ratio_completion_p50"] = res["remote"]["completion_us"]["p50"] / res["native"]["completion_us"]["p50"]
    res["ratio_throughput"] = res["remote"]["launches_per_s"] / res["native"]["launches_per_s"]
    print(json.dumps({"bench": "launch_gpu", **res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
