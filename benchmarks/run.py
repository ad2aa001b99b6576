#!/usr/bin/env python3
"""agile benchmarks: one entry point.

    python3 benchmarks/run.py [--list] [--gpu] [--out DIR] [NAME ...]

Runs each named benchmark (default: every CPU one; --gpu adds the GPU ones), prints a table of
its figures, and writes benchmarks/results/<name>-<device>-<date>.json with the device,
driver, torch and CUDA versions and every figure's summary (median/p50, p99, runs). Every
figure is measured against a baseline taken in the same run (the JSON says which).
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.environ.get("AGILE_BUILD_DIR", os.path.join(ROOT, "build"))
BIN = os.path.join(BUILD, "bin")


def device_info():
    info = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            name, drv, mem = [s.strip() for s in out.stdout.splitlines()[0].split(",")]
            info.update(gpu=name, driver=drv, gpu_memory=mem)
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        import torch
        info.update(torch=torch.__version__, cuda=torch.version.cuda)
    except Exception:
        pass
    try:
        out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True)
        info["nvcc"] = out.stdout.strip().splitlines()[-1]
    except OSError:
        pass
    return info


class Worker:
    """A private worker for one benchmark."""

    def __init__(self, backend="host", config=None, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="agile-bench-")
        args = [os.path.join(BIN, "agile-worker"), "--runtime-dir", self.dir, "--backend", backend]
        if config:
            args += ["--config", config]
        args += list(extra_args)
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)

    def stop(self):
        try:
            with open(os.path.join(self.dir, "agile.pid")) as f:
                os.kill(int(f.read()), signal.SIGTERM)
            for _ in range(100):
                if not os.path.exists(os.path.join(self.dir, "agile.pid")):
                    break
                time.sleep(0.05)
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in benchmark output")


def run_cmd(args, timeout=None, env=None):
    timeout = timeout or float(os.environ.get("AGILE_BENCH_TIMEOUT", 600))
    t0 = time.time()
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        sys.stdout.write(out + err)
        raise RuntimeError(f"{os.path.basename(args[-1] if args[0] == sys.executable else args[0])} "
                           f"ran past {timeout} s") from None
    sys.stdout.write(p.stdout if p.returncode == 0 else p.stdout + p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {p.returncode}")
    res = last_json(p.stdout)
    res["wall_s"] = round(time.time() - t0, 2)
    return res


def b_ctl(gpu):
    w = Worker("cuda" if gpu else "host")
    try:
        return run_cmd([os.path.join(BIN, "ctl-bench"), "--runtime-dir", w.dir, "-n", "20000"])
    finally:
        w.stop()


def simple(binary, *args):
    def f(gpu):
        path = os.path.join(BIN, binary)
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        return run_cmd([path, *args])
    return f


def py(script, *args, backend="cuda", worker_args=()):
    def f(gpu):
        w = Worker(backend, extra_args=worker_args)
        try:
            env = dict(os.environ, AGILE_RUNTIME_DIR=w.dir, AGILE_BUILD_DIR=BUILD,
                       PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            return run_cmd([sys.executable, os.path.join(ROOT, script), *args], env=env)
        finally:
            w.stop()
    return f


def script(path):
    """A Python benchmark that starts its own workers."""
    def f(gpu):
        env = dict(os.environ, AGILE_BUILD_DIR=BUILD,
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        return run_cmd([sys.executable, os.path.join(ROOT, path)], env=env)
    return f


# name: (needs a GPU, runner, what it compares)
BENCHES = {
    "ctl": (False, b_ctl, "control-plane PING/HELLO through the worker vs raw nng req/rep"),
    "ring": (False, simple("ring-bench", "--json"), "shared-memory ring round trip vs nng"),
    "alloc": (False, simple("alloc-bench", "--json"), "agile_malloc+free vs glibc malloc+free"),
    "guard": (False, simple("guard-bench", "--json"), "guard throughput (MB/s) and compile cache"),
    "fft_plan": (False, simple("fft-bench", "--json"), "FFT plan cache hit vs plan creation"),
    "ring_e2e": (False, simple("ring-e2e-bench", "--json"), "ring NOP round trip through the worker vs PING"),
    "fairness_host": (False, simple("fairness-host-bench", "--json"),
                      "ring NOP round trip while another tenant floods 1 GiB host memsets vs unloaded"),
    "hostile": (False, script("benchmarks/hostile.py"),
                "root's connect/lease/ring NOP while uid 65534 attacks vs unattacked (needs root)"),
    "ctl_gpu": (True, b_ctl, "control plane on the cuda backend vs raw nng"),
    "torch_alloc": (True, py("benchmarks/torch_alloc.py"), "torch.empty(4 MiB)+del via agile vs native; lease growth"),
    "training": (True, py("benchmarks/training.py"), "training steps with agile vs without"),
    "launch_gpu": (True, py("benchmarks/launch_gpu.py"), "guarded launch through the worker's ring vs native cuLaunchKernel"),
    "fft_gpu": (True, py("benchmarks/fft_gpu.py"), "torch.fft via the worker's fft module vs native cuFFT"),
    "fairness": (True, py("benchmarks/fairness_gpu.py", worker_args=("--shared",)),
                 "4 tenants (uids) on one GPU: throughput shares and Jain's index vs 4 native contexts"),
    "guard_gpu": (True, None, "guarded vs unguarded Triton kernel time"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--gpu", action="store_true", help="also run the GPU benchmarks")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        for n, (g, _, what) in BENCHES.items():
            print(f"{n:12s} {'GPU' if g else 'CPU'}  {what}")
        return 0
    names = a.names or [n for n, (g, f, _) in BENCHES.items() if f and (a.gpu or not g)]
    info = device_info()
    dev = (info.get("gpu") or info["cpu"] or "cpu").replace(" ", "_").replace("/", "_")
    date = datetime.date.today().isoformat()
    os.makedirs(a.out, exist_ok=True)
    failed = 0
    summary = []
    for n in names:
        if n not in BENCHES or BENCHES[n][1] is None:
            print(f"unknown or external benchmark: {n}", file=sys.stderr)
            failed += 1
            continue
        gpu, fn, what = BENCHES[n]
        print(f"\n=== {n}: {what} ===", flush=True)
        try:
            res = fn(gpu)
        except Exception as e:  # report and go on with the others
            print(f"{n}: FAILED: {e}", file=sys.stderr)
            failed += 1
            continue
        doc = {"name": n, "what": what, "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "device": info, "results": res}
        path = os.path.join(a.out, f"{n}-{dev}-{date}.json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        summary.append((n, path))
    print("\nwritten:")
    for n, p in summary:
        print(f"  {n:12s} {os.path.relpath(p, ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
