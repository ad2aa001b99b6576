"""The agile demo: `python3 -m agile_torch.demo [--host] [--runtime-dir DIR]`.

With a GPU and PyTorch: trains a small model on tensors from agile_torch.pool(), runs
torch.fft through the worker, launches a guarded Triton kernel, tries an out-of-window write
and shows it contained, and prints a summary table. Without (or with --host): the same story
on the host backend with the C client (libagile): leases, an FFT via FFTW in the worker,
guarding a PTX file with its report, and `agilectl status`. Either way the worker keeps
running afterwards, and the last lines say how to stop it.

Its PTX files ship in the wheel as package data (demo/data/, pyproject.toml's
wheel.force-include); a checkout reads them from the corpus, tests/data/ptx/. Every tool it
runs has its exit status checked; its scratch files live in a fresh temporary directory.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from .. import _native

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MiB = 1 << 20
# The demo's PTX: name -> where it is in the corpus (the wheel has it as demo/data/NAME).
DEMO_PTX = {"softmax.ptx": "triton/softmax.ptx", "bulk_tensor.ptx": "reject/bulk_tensor.ptx"}


def demo_ptx(name: str) -> str:
    cands = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", name),
             os.path.join(ROOT, "tests", "data", "ptx", DEMO_PTX[name])]
    for c in cands:
        if os.path.exists(c):
            return c
    raise SystemExit(f"demo data {name} not found (looked in: {', '.join(cands)})")


def run_tool(cmd: list, what: str, ok=(0,)) -> subprocess.CompletedProcess:
    """Run one of agile's tools; an exit status outside ok ends the demo with its output."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in ok:
        raise SystemExit(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n"
                         f"{(p.stdout + p.stderr).strip()}")
    return p


def default_runtime_dir() -> str:
    """Where the worker lives: the same rule as agile-worker's --runtime-dir default."""
    if os.environ.get("AGILE_RUNTIME_DIR"):
        return os.environ["AGILE_RUNTIME_DIR"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "agile")
    return f"/tmp/agile-{os.getuid()}"


def bar(i: int, n: int, label: str) -> None:
    w = 30
    done = int(w * (i + 1) / n)
    sys.stdout.write(f"\r  {label:28s} [{'#' * done}{'.' * (w - done)}] {i + 1}/{n}")
    if i + 1 == n:
        sys.stdout.write("\n")
    sys.stdout.flush()


def tool(name: str) -> str:
    p = _native.binary_path(name)
    if not p:
        raise SystemExit(f"{name} not found beside {_native.library_path()}: build first")
    return p


def start_worker(runtime_dir: str, backend: str) -> None:
    ctl = tool("agilectl")
    if subprocess.run([ctl, "--runtime-dir", runtime_dir, "--no-start", "status"],
                      capture_output=True).returncode == 0:
        print(f"worker: reusing the worker already running on {runtime_dir}")
        return
    out = subprocess.run([tool("agile-worker"), "--runtime-dir", runtime_dir, "--backend", backend],
                         capture_output=True, text=True)
    print(out.stdout.strip() or out.stderr.strip())
    if out.returncode != 0:
        raise SystemExit(1)


def guard_story(rows: list) -> None:
    print("\n[guard] rewriting Triton's softmax PTX so every global access stays in the window")
    guard = tool("agile-guard")
    with tempfile.TemporaryDirectory(prefix="agile-demo.") as tmp:
        rep, out = os.path.join(tmp, "guard.json"), os.path.join(tmp, "softmax.guarded.ptx")
        t0 = time.perf_counter()
        run_tool([guard, "--report", rep, demo_ptx("softmax.ptx"), "-o", out], "agile-guard")
        dt = time.perf_counter() - t0
        with open(rep) as fh:
            f = json.load(fh)["functions"][0]
        print(f"  {f['name']}: {f['nsites']} sites fenced {f['sites']}, hidden params {f['hidden_params']}")
        run_tool([guard, "--verify", out], "the independent verifier (agile-guard --verify)")
        print("  independent verifier: pass")
    # 1 = refused; anything else (0 accepted, 2 an I/O error) ends the demo.
    rj = run_tool([guard, demo_ptx("bulk_tensor.ptx"), "-o", os.devnull],
                  "agile-guard on a TMA kernel", ok=(1,))
    print(f"  a TMA kernel is refused (exit {rj.returncode}): {rj.stderr.strip().splitlines()[0]}")
    rows.append(("guard sites (softmax)", f"{f['nsites']}", f"{dt * 1e3:.1f} ms incl. process start"))


def host_demo(runtime_dir: str) -> None:
    rows: list = []
    start_worker(runtime_dir, "host")  # the C client writes its leases from the CPU
    L = _native.lib()
    opts = _native.ConnectOpts(runtime_dir.encode(), 10000, 0, tool("agile-worker").encode(), None)
    _native.check(L.agile_init(ctypes.byref(opts)), "connect")
    c = ctypes.c_void_p()
    _native.check(L.agile_default_client(ctypes.byref(c)), "connect")
    si = _native.SessionInfo()
    L.agile_session_info_get(c, ctypes.byref(si))
    backend = _native.backend_name(si.backend)
    print(f"session: tenant uid {si.tenant} (from the kernel), backend {backend}, quota {si.quota >> 20} MiB/GPU")

    print("\n[leases] three 100 MiB blocks from the tenant's pool, written and read back")
    ptrs = []
    t0 = time.perf_counter()
    for i in range(3):
        p = L.agile_malloc(100 * MiB, 0, None)
        if not p:
            raise SystemExit("agile_malloc failed: " + L.agile_last_error().decode())
        ctypes.memset(p, 0x41 + i, 100 * MiB)
        ptrs.append(p)
        bar(i, 3, "allocate + fill")
    dt = time.perf_counter() - t0
    ok = all(ctypes.string_at(p + 12345, 1) == bytes([0x41 + i]) for i, p in enumerate(ptrs))
    s = _native.MemStats()
    L.agile_memory_stats(0, ctypes.byref(s))
    print(f"  data intact: {ok}; leased {s.reserved_bytes >> 20} MiB in {s.num_grows} lease(s), "
          f"window {s.window_bytes >> 30} GiB")
    rows.append(("pool bytes in use", f"{s.allocated_bytes >> 20} MiB", f"{dt * 1e3:.1f} ms to allocate+fill 300 MiB"))

    print("\n[fft] a 4096-point C2C transform served by the worker (FFTW on the host backend)")
    if hasattr(L, "agile_fft_plan_many"):
        try:
            import numpy as np
            from . import fft_host
            err, dt = fft_host.demo_fft(L, np)
            print(f"  max relative error vs numpy.fft: {err:.2e}")
            rows.append(("FFT 4096 C2C via worker", f"err {err:.1e}", f"{dt * 1e6:.0f} us"))
        except Exception as e:  # show what happened, go on with the story
            print(f"  FFT step failed: {e}")
    else:
        print("  (this build has no fft client API)")

    guard_story(rows)
    for i, p in enumerate(ptrs):
        L.agile_free(p, 100 * MiB, 0, None)
    print("\n[status] agilectl status (through the same control plane as every client)")
    print(run_tool([tool("agilectl"), "--runtime-dir", runtime_dir, "status"],
                   "agilectl status").stdout)
    summary(rows, backend)


def summary(rows: list, backend: str) -> None:
    print(f"summary (backend {backend})")
    print(f"  {'what':28s} {'value':>16s}  detail")
    for what, val, detail in rows:
        print(f"  {what:28s} {val:>16s}  {detail}")


def gpu_demo(runtime_dir: str) -> None:
    import torch

    import agile_torch

    rows: list = []
    start_worker(runtime_dir, "auto")
    agile_torch.init(runtime_dir=runtime_dir)
    info = agile_torch.session_info()
    print(f"session: tenant uid {info['tenant']}, backend {info['backend']}, "
          f"quota {info['quota_bytes'] >> 30} GiB/GPU")

    print("\n[train] a small MLP on tensors from agile_torch.pool(), same seed as native")

    def train(use_agile: bool):
        torch.manual_seed(0)
        with agile_torch.use_pool() if use_agile else contextlib.nullcontext():
            model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.GELU(),
                                        torch.nn.Linear(1024, 10)).cuda()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            x = torch.randn(1024, 512, device="cuda")
            y = torch.randint(0, 10, (1024,), device="cuda")
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            n = 100
            for i in range(n):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                if i % 10 == 9:
                    bar(i, n, f"training steps ({'agile pool' if use_agile else 'native'})")
            torch.cuda.synchronize()
            return loss.item(), (time.perf_counter() - t0) / n, x

    train(False)  # warm-up: cuBLAS handles and kernels load once, outside the timing
    nl, nt, _ = train(False)
    al, at, x = train(True)
    print(f"  final loss native {nl:.6f}  agile {al:.6f}  (same: {abs(nl - al) < 1e-5}); "
          f"x in the agile pool: {agile_torch.is_agile_tensor(x)}")
    rows.append(("train step (agile/native)", f"{at / nt:.2f}x",
                 f"{at * 1e3:.2f} ms vs {nt * 1e3:.2f} ms"))

    print("\n[fft] torch.fft on agile tensors, served by the worker's cuFFT (C++ ATen hook, ring)")
    try:
        from agile_torch import fft as afft
        afft.enable_fft()
        with agile_torch.use_pool():
            s = torch.randn(16, 4096, device="cuda")
        sn = s.clone()  # outside the pool: PyTorch's own cuFFT
        f = torch.fft.rfft(s)
        ref = torch.fft.rfft(sn)
        err = ((f - ref).abs().max() / ref.abs().max()).item()

        def p50(t, label):
            ts = []
            for i in range(200):
                t0 = time.perf_counter()
                torch.fft.rfft(t)
                torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
                if i % 20 == 19:
                    bar(i, 200, label)
            return sorted(ts)[100] * 1e6
        nat_us, ag_us = p50(sn, "rfft native"), p50(s, "rfft via the worker")
        st = afft.fft_stats()
        print(f"  relative error vs native: {err:.2e}; served by the worker: {st['served']}, "
              f"passed to PyTorch: {st['fallback']}; rfft 16x4096 p50 {ag_us:.1f} us vs native "
              f"{nat_us:.1f} us")
        rows.append(("FFT calls served", f"{st['served']}", f"max rel. error {err:.1e}"))
        rows.append(("FFT rfft 16x4096 (agile/nat)", f"{ag_us / nat_us:.2f}x",
                     f"{ag_us:.1f} us vs {nat_us:.1f} us (p50, call + sync)"))
    except Exception as e:  # show what happened, go on with the story
        print(f"  FFT step failed: {e}")

    print("\n[triton] a guarded Triton kernel launched inside the worker")
    try:
        from . import gpu as demo_gpu
        r = demo_gpu.guarded_add(bar)
        print(f"  result equal to torch: {r['equal']}; launch+sync p50 {r['guarded_us']:.1f} us "
              f"guarded vs {r['native_us']:.1f} us native Triton")
        rows.append(("guarded launches", f"{r['launches']}", f"result equal: {r['equal']}"))
        rows.append(("launch+sync (guarded/nat)", f"{r['guarded_us'] / r['native_us']:.2f}x",
                     f"{r['guarded_us']:.1f} us vs {r['native_us']:.1f} us"))

        print("\n[contain] another process of this tenant aims a strict guarded store one window "
              "past this process's tensor (outside the tenant's window)")
        with agile_torch.use_pool():
            canary = torch.full((1 << 16,), 0x5A5A5A5A, dtype=torch.int32, device="cuda")
        torch.cuda.synchronize()
        base, _ = agile_torch.pool_window()
        p = subprocess.run([sys.executable, "-m", "agile_torch.demo.gpu", str(canary.data_ptr() - base),
                            runtime_dir], capture_output=True, text=True, timeout=300,
                           cwd=ROOT)
        if p.returncode != 0:
            raise RuntimeError(f"the other process failed (exit {p.returncode}): "
                               f"{p.stderr.strip()[-300:]}")
        rep = json.loads(p.stdout.strip().splitlines()[-1])
        torch.cuda.synchronize()
        intact = bool((canary == 0x5A5A5A5A).all())
        print(f"  target {canary.data_ptr():#x}: intact {intact}; worker report: "
              f"{rep.get('message')}")
        rows.append(("wild write contained", f"{intact}",
                     f"reported: {rep.get('reported')} (site {rep.get('site')})"))
    except Exception as e:
        print(f"  Triton step failed: {e}")

    guard_story(rows)
    st = agile_torch.worker_status()
    me = [t for t in st["tenants"] if t["uid"] == info["tenant"]][0]
    rows.append(("tenant leased bytes", f"{me['leased_bytes'] >> 20} MiB",
                 f"objects {me['object_count']}"))
    print("\n[status]")
    print(run_tool([tool("agilectl"), "--runtime-dir", runtime_dir, "status"],
                   "agilectl status").stdout)
    summary(rows, info["backend"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m agile_torch.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", action="store_true", help="the host-backend story even if a GPU is present")
    ap.add_argument("--runtime-dir", default=default_runtime_dir())
    a = ap.parse_args(argv)
    gpu = False
    if not a.host:
        try:
            import torch
            gpu = torch.cuda.is_available()
        except ImportError:
            gpu = False
    if gpu:
        gpu_demo(a.runtime_dir)
    else:
        print("no GPU with PyTorch here: the host-backend story with the C client")
        host_demo(a.runtime_dir)
    still_running(a.runtime_dir)
    return 0


def still_running(runtime_dir: str) -> None:
    """The demo's last words: the worker it started (or reused) keeps running, and how to stop it."""
    try:
        with open(os.path.join(runtime_dir, "agile.pid")) as fh:
            pid = fh.read().split()[0]
    except (OSError, IndexError):
        pid = "?"
    ctl = tool("agilectl")
    on_path = shutil.which("agilectl")
    # The wheel's console command (beside this interpreter) runs the same binary.
    if on_path and (os.path.realpath(on_path) == os.path.realpath(ctl)
                    or os.path.dirname(on_path) == os.path.dirname(sys.executable)):
        ctl = "agilectl"
    print(f"\nThe worker (pid {pid}) is still running on {runtime_dir}: later runs and clients "
          f"reuse it. Stop it with:\n  {ctl} --runtime-dir {runtime_dir} stop")

