#!/usr/bin/env python3
"""Fairness of 4 tenants sharing one GPU through one agile worker: throughput share per
tenant and Jain's index, over the whole run and per 250 ms window.

    python3 benchmarks/fairness_gpu.py [--runtime-dir DIR] [--duration S] [--kernel-us US]
    python3 benchmarks/fairness_gpu.py --selftest          # the math only (no GPU, no worker)
    python3 benchmarks/fairness_gpu.py --backend host      # CPU smoke test of the plumbing

Scenarios, each a set of client processes started together that flood work for --duration s
(a barrier every 64 launches bounds what is in flight) and count what completed, per barrier:
  agile    4 tenants, one process each, launching a guarded kernel through the worker
  native   the baseline, measured in the same run: the same 4 processes, each its own CUDA
           context (driver API), launching the same kernel unguarded; contexts time-slice
  skewed   agile, tenant 0 with 3 processes, tenants 1-3 with one each: does a tenant gain
           by opening more sessions? (shares and Jain across tenants and across processes)
The kernel spins on %globaltimer for --kernel-us and stores one word per block into the
tenant's own agile_malloc buffer (so it is a real guarded kernel); its grid fills every SM
to full occupancy, so one tenant's kernel alone keeps the whole GPU busy.

Tenants: as root each tenant's processes drop to their own uid (61001..61004), so the worker
sees 4 real tenants (its dir must then be shared: agile-worker --shared); otherwise they are 4
sessions of one uid ("tenants_are" in the JSON says which). Without --runtime-dir (or
$AGILE_RUNTIME_DIR) the script starts its own --shared worker. --backend host replaces the
kernel by a 4 KiB agile_memset_async (the host backend cannot launch kernels) and skips the
native baseline: it tests the plumbing, not the GPU.

Prints a table, then one JSON line: {"agile": ..., "native": ..., "skewed": ...,
"jain_ratio_vs_native": J(agile) / J(native)}. benchmarks/run.py starts a --shared cuda
worker for it.
"""
import argparse
import ctypes
import json
import os
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)

N_TENANTS = 4
BASE_UID = 61001
BATCH = 64          # launches per barrier / synchronize
BIN_S = 0.1         # throughput time series
WINDOW_S = 0.25     # Jain's index over time
THREADS = 128

PTX = """
.version 8.0
.target sm_90
.address_size 64

.visible .entry busy(.param .u64 out, .param .u64 ns)
{
    .reg .b64 %rd<8>;
    .reg .b32 %r<3>;
    .reg .pred %p<2>;
    ld.param.u64 %rd1, [out];
    ld.param.u64 %rd2, [ns];
    mov.u64 %rd3, %globaltimer;
LOOP:
    mov.u64 %rd4, %globaltimer;
    sub.s64 %rd5, %rd4, %rd3;
    setp.lt.u64 %p0, %rd5, %rd2;
    @%p0 bra LOOP;
    mov.u32 %r1, %tid.x;
    setp.ne.u32 %p1, %r1, 0;
    @%p1 bra DONE;
    mov.u32 %r2, %ctaid.x;
    mul.wide.u32 %rd6, %r2, 4;
    add.s64 %rd7, %rd1, %rd6;
    st.global.u32 [%rd7], %r2;
DONE:
    ret;
}
"""


# ---- math (imported by tests/py/test_fairness_math.py) ---------------------------------------

def jain(xs):
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all are equal, 1/n when one
    gets everything. None when nobody got anything (no verdict)."""
    xs = [float(x) for x in xs]
    if not xs:
        return None
    sq = sum(x * x for x in xs)
    if sq == 0:
        return None
    return sum(xs) ** 2 / (len(xs) * sq)


def shares(xs):
    tot = float(sum(xs))
    return [x / tot if tot else 0.0 for x in xs]


def bin_counts(events, width, duration):
    """Completions per bin of `width` s over [0, duration). events: (t0, t1, n), n launches
    that completed at some point in (t0, t1] (between two barrier returns), spread evenly
    over that interval; what falls outside [0, duration) is dropped."""
    nb = int(round(duration / width))
    out = [0.0] * nb
    for t0, t1, n in events:
        if t1 <= t0:
            t0 = t1 - 1e-9
        rate = n / (t1 - t0)
        a, b = max(t0, 0.0), min(t1, duration)
        i = int(a // width)
        while a < b and i < nb:
            e = min(b, (i + 1) * width)
            if e > a:
                out[i] += rate * (e - a)
            a = e
            i += 1
    return out


def fairness(per_tenant_events, duration):
    """Shares and Jain's index over the run and per window, from each tenant's events (a
    tenant with several processes: their events concatenated)."""
    totals = [sum(bin_counts(ev, duration, duration)) for ev in per_tenant_events]
    series = [bin_counts(ev, BIN_S, duration) for ev in per_tenant_events]
    windows = [bin_counts(ev, WINDOW_S, duration) for ev in per_tenant_events]
    jt = [jain(col) for col in zip(*windows)]
    valid = [j for j in jt if j is not None]
    return {
        "launches": [round(t, 1) for t in totals],
        "launches_per_s": [round(t / duration, 1) for t in totals],
        "total_launches_per_s": round(sum(totals) / duration, 1),
        "share": [round(s, 4) for s in shares(totals)],
        "jain": jain(totals),
        "jain_windows": {"window_s": WINDOW_S, "values": [None if j is None else round(j, 4)
                                                           for j in jt],
                         "min": min(valid) if valid else None,
                         "mean": sum(valid) / len(valid) if valid else None},
        "series": {"bin_s": BIN_S, "launches": [[round(x, 1) for x in s] for s in series]},
    }


def selftest():
    assert abs(jain([5, 5, 5, 5]) - 1.0) < 1e-12
    assert abs(jain([1, 0, 0, 0]) - 0.25) < 1e-12
    assert abs(jain([3, 1, 1, 1]) - 36 / 48) < 1e-12
    assert jain([0, 0]) is None
    assert shares([1, 1, 2]) == [0.25, 0.25, 0.5]
    b = bin_counts([(0.0, 0.2, 20), (0.2, 0.3, 10), (0.9, 1.1, 10)], 0.1, 1.0)
    assert [round(x, 6) for x in b] == [10, 10, 10, 0, 0, 0, 0, 0, 0, 5], b
    f = fairness([[(0.0, 1.0, 100)]] * 4, 1.0)
    assert f["jain"] == 1.0 and f["share"] == [0.25] * 4 and f["jain_windows"]["min"] == 1.0
    print("selftest ok")


# ---- children ----------------------------------------------------------------------------

def cuda_lib():
    cu = ctypes.CDLL("libcuda.so.1")
    V, UI, I = ctypes.c_void_p, ctypes.c_uint, ctypes.c_int
    cu.cuLaunchKernel.argtypes = [V, UI, UI, UI, UI, UI, UI, UI, V, V, V]
    cu.cuCtxSetCurrent.argtypes = [V]
    cu.cuModuleGetFunction.argtypes = [ctypes.POINTER(V), V, ctypes.c_char_p]
    cu.cuDeviceGetAttribute.argtypes = [ctypes.POINTER(I), I, I]
    return cu


def cu_check(rv, what):
    if rv != 0:
        raise RuntimeError(f"{what}: CUresult {rv}")


def primary_ctx(cu):
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    cu_check(cu.cuInit(0), "cuInit")
    cu_check(cu.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
    cu_check(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    cu_check(cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    return ctx


def child_native(a):
    """One CUDA context of its own, the unguarded kernel, cuCtxSynchronize every BATCH."""
    cu = cuda_lib()
    primary_ctx(cu)
    mod, fn, buf = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_uint64()
    ptx = PTX.encode()
    cu_check(cu.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(ptx)), "cuModuleLoadData")
    cu_check(cu.cuModuleGetFunction(ctypes.byref(fn), mod, b"busy"), "cuModuleGetFunction")
    cu_check(cu.cuMemAlloc_v2(ctypes.byref(buf), ctypes.c_size_t(a.grid * 4)), "cuMemAlloc")
    p_out, p_ns = ctypes.c_uint64(buf.value), ctypes.c_uint64(a.kernel_us * 1000)
    params = (ctypes.c_void_p * 2)(ctypes.cast(ctypes.byref(p_out), ctypes.c_void_p),
                                   ctypes.cast(ctypes.byref(p_ns), ctypes.c_void_p))

    def launch():
        return cu.cuLaunchKernel(fn, a.grid, 1, 1, THREADS, 1, 1, 0, None, params, None)

    def barrier():
        return cu.cuCtxSynchronize()

    return launch, barrier


def child_agile(a):
    """libagile's default client (no torch): the guarded kernel through the worker's ring,
    agile_barrier every BATCH. On the host backend: a 4 KiB memset through the ring."""
    from agile_torch import _native
    L = _native.lib()  # typed from _native.SIGNATURES
    U64, UI = ctypes.c_uint64, ctypes.c_uint
    cuda = a.backend == "cuda"
    if cuda:
        primary_ctx(cuda_lib())  # libagile maps the pool into, and orders on, this context
    opts = _native.ConnectOpts(a.runtime_dir.encode(), 20000, 1, None, a.backend.encode())
    _native.check(L.agile_init(ctypes.byref(opts)), "agile_init")
    size = max(4096, a.grid * 4)
    buf = L.agile_malloc(size, 0, None)
    if not buf:
        raise RuntimeError("agile_malloc: " + L.agile_last_error().decode())
    seq = U64()

    def barrier():
        return L.agile_barrier(None, ctypes.byref(seq))

    if not cuda:
        def launch():
            return L.agile_memset_async(buf, 1, 4096, None)
        return launch, barrier
    ptx = PTX.encode()
    m, f = U64(), U64()
    _native.check(L.agile_module_load(ptx, len(ptx), 0, ctypes.byref(m)), "agile_module_load")
    _native.check(L.agile_module_function(m, b"busy", ctypes.byref(f), None), "agile_module_function")
    grid, block = (UI * 3)(a.grid, 1, 1), (UI * 3)(THREADS, 1, 1)
    args = ctypes.create_string_buffer(struct.pack("<QQ", buf, a.kernel_us * 1000), 16)

    def launch():
        return L.agile_launch(f.value, grid, block, 0, None, args, 16)

    return launch, barrier


def child_main(a):
    launch, barrier = (child_native if a.child == "native" else child_agile)(a)
    for _ in range(2):  # warm up: guard/JIT caches, the ring, the lease
        for _ in range(8):
            rv = launch()
            if rv:
                raise RuntimeError(f"warm-up launch: {rv}")
        rv = barrier()
        if rv:
            raise RuntimeError(f"warm-up barrier: {rv}")
    print("READY", flush=True)
    start = float(sys.stdin.readline())
    while time.monotonic() < start:
        time.sleep(min(0.001, max(0.0, start - time.monotonic())))
    events, prev = [], 0.0
    end = start + a.duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for _ in range(BATCH):
            rv = launch()
            if rv:
                raise RuntimeError(f"launch: {rv}")
        rv = barrier()
        t = time.monotonic() - start
        if rv:
            raise RuntimeError(f"barrier: {rv}")
        events.append((round(prev, 6), round(t, 6), BATCH))
        prev = t
    print(json.dumps({"uid": os.getuid(), "pid": os.getpid(), "events": events}), flush=True)
    return 0


# ---- parent ------------------------------------------------------------------------------

def drop_to(uid):
    def fn():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return fn


def others_can(path, file_bits):
    """Whether any uid may reach and use path (every dir above it o+x, the path file_bits)."""
    path = os.path.realpath(path)
    try:
        if stat.S_IMODE(os.stat(path).st_mode) & file_bits != file_bits:
            return False
        d = os.path.dirname(path)
        while True:
            if not stat.S_IMODE(os.stat(d).st_mode) & 0o001:
                return False
            if d == "/":
                return True
            d = os.path.dirname(d)
    except OSError:
        return False


def child_python():
    """An interpreter the dropped uids can run (the children need no site-packages): ours,
    else the system's (a pyenv under /root is out of their reach)."""
    for c in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if others_can(c, 0o005):
            return c
    return None


def run_scenario(a, mode, tenant_of, as_uids):
    """Start one process per entry of tenant_of (its tenant index), release them together,
    collect their events."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CUDA_CACHE_DISABLE="1")  # the uids we drop to have no writable $HOME
    procs = []
    try:
        for t in tenant_of:
            cmd = [a.python, os.path.abspath(__file__), "--child", mode, "--runtime-dir",
                   a.runtime_dir, "--backend", a.backend, "--duration", str(a.duration),
                   "--kernel-us", str(a.kernel_us), "--grid", str(a.grid)]
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env, cwd="/",
                                          preexec_fn=drop_to(BASE_UID + t) if as_uids else None))
        deadline = time.monotonic() + 120
        for p in procs:
            while True:
                r, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
                line = p.stdout.readline() if r else ""
                if line.strip() == "READY":
                    break
                if not r or not line:
                    p.kill()
                    raise RuntimeError(f"{mode} child did not get ready: {line}{p.stderr.read()}")
        start = time.monotonic() + 0.2
        for p in procs:
            p.stdin.write(f"{start!r}\n")
            p.stdin.flush()
        results = []
        for p in procs:
            o, e = p.communicate(timeout=a.duration + 120)
            if p.returncode != 0:
                raise RuntimeError(f"{mode} child exited {p.returncode}: {e[-3000:]}")
            results.append(json.loads(o.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    per_tenant = [[] for _ in range(N_TENANTS)]
    for t, r in zip(tenant_of, results):
        per_tenant[t] += r["events"]
    res = fairness(per_tenant, a.duration)
    res["processes"] = len(procs)
    res["uids"] = [r["uid"] for r in results]
    if len(procs) > N_TENANTS:  # also per process: is the split by session or by tenant?
        per_proc = fairness([r["events"] for r in results], a.duration)
        res["per_process"] = {"tenant": list(tenant_of), "share": per_proc["share"],
                              "jain": per_proc["jain"]}
    return res


def device_grid(a):
    """Blocks that fill every SM to full occupancy with THREADS-thread blocks."""
    if a.backend != "cuda":
        return 1
    cu = cuda_lib()
    cu_check(cu.cuInit(0), "cuInit")
    sms, thr = ctypes.c_int(), ctypes.c_int()
    cu_check(cu.cuDeviceGetAttribute(ctypes.byref(sms), 16, 0), "SM count")  # MULTIPROCESSOR_COUNT
    cu_check(cu.cuDeviceGetAttribute(ctypes.byref(thr), 39, 0), "threads/SM")  # MAX_THREADS_PER_MULTIPROCESSOR
    return sms.value * (thr.value // THREADS)


def start_worker(backend):
    d = tempfile.mkdtemp(prefix="agile-fair-")
    worker = os.path.join(os.environ.get("AGILE_BUILD_DIR", os.path.join(ROOT, "build")), "bin",
                          "agile-worker")
    out = subprocess.run([worker, "--shared", "--runtime-dir", d, "--backend", backend],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        raise RuntimeError(out.stderr)
    return d


def stop_worker(d):
    try:
        with open(os.path.join(d, "agile.pid")) as f:
            os.kill(int(f.read()), signal.SIGTERM)
        for _ in range(100):
            if not os.path.exists(os.path.join(d, "agile.pid")):
                break
            time.sleep(0.05)
    except (OSError, ValueError):
        pass
    shutil.rmtree(d, ignore_errors=True)


def tenants_seen(d):
    ctl = os.path.join(os.environ.get("AGILE_BUILD_DIR", os.path.join(ROOT, "build")), "bin",
                       "agilectl")
    out = subprocess.run([ctl, "--runtime-dir", d, "--no-start", "status", "--json"],
                         capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        return None
    return sorted(t["uid"] for t in json.loads(out.stdout)["tenants"] if t["uid"] != os.getuid())


def table(name, r):
    j = r["jain_windows"]
    print(f"{name:8s} {r['total_launches_per_s']:10.0f}/s  "
          + " ".join(f"{s * 100:5.1f}%" for s in r["share"])
          + f"   J={r['jain']:.4f}  window J min/mean {j['min'] or 0:.3f}/{j['mean'] or 0:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime-dir", default=os.environ.get("AGILE_RUNTIME_DIR"))
    ap.add_argument("--backend", choices=("cuda", "host"), default="cuda")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds of flooding per scenario")
    ap.add_argument("--kernel-us", type=int, default=50, help="how long one kernel spins")
    ap.add_argument("--grid", type=int, default=0, help="blocks (default: fill every SM)")
    ap.add_argument("--selftest", action="store_true", help="check the math and exit")
    ap.add_argument("--child", choices=("agile", "native"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.selftest:
        selftest()
        return 0
    if a.child:
        return child_main(a)

    if not a.grid:
        a.grid = device_grid(a)
    own = not a.runtime_dir
    if own:
        a.runtime_dir = start_worker(a.backend)
    try:
        as_uids = os.geteuid() == 0
        st = os.stat(a.runtime_dir)
        if as_uids and stat.S_IMODE(st.st_mode) & 0o005 != 0o005:
            print(f"note: {a.runtime_dir} is not shared (agile-worker --shared): tenants are "
                  "sessions of one uid", file=sys.stderr)
            as_uids = False
        a.python = child_python() if as_uids else sys.executable
        lib = os.path.join(os.environ.get("AGILE_BUILD_DIR", os.path.join(ROOT, "build")), "lib",
                           "libagile.so")
        if as_uids and (not a.python or not others_can(os.path.abspath(__file__), 0o004)
                        or not others_can(lib, 0o004)):
            print("note: other uids cannot run python, read this script or libagile.so: tenants "
                  "are sessions of one uid", file=sys.stderr)
            as_uids, a.python = False, sys.executable
        res = {"bench": "fairness_gpu", "backend": a.backend,
               "tenants_are": "uids" if as_uids else "sessions", "tenants": N_TENANTS,
               "duration_s": a.duration, "kernel_us": a.kernel_us, "grid": a.grid,
               "block": THREADS, "batch": BATCH}
        print(f"{'scenario':8s} {'launches':>12s}  shares (tenant 0..3)           Jain's index")
        res["agile"] = run_scenario(a, "agile", list(range(N_TENANTS)), as_uids)
        table("agile", res["agile"])
        if a.backend == "cuda":
            res["native"] = run_scenario(a, "native", list(range(N_TENANTS)), as_uids)
            table("native", res["native"])
        else:
            res["native"] = None  # no kernels on the host backend
        res["skewed"] = run_scenario(a, "agile", [0, 0, 0, 1, 2, 3], as_uids)
        table("skewed", res["skewed"])
        pp = res["skewed"]["per_process"]
        print(f"{'':8s} per process {' '.join(f'{s * 100:5.1f}%' for s in pp['share'])}"
              f"   J={pp['jain']:.4f}  (tenant 0 has 3 processes)")
        res["tenants_seen_by_worker"] = tenants_seen(a.runtime_dir) if as_uids else None
        n = res["native"]
        res["jain_ratio_vs_native"] = (res["agile"]["jain"] / n["jain"]
                                       if n and n["jain"] and res["agile"]["jain"] else None)
        res["throughput_ratio_vs_native"] = (
            res["agile"]["total_launches_per_s"] / n["total_launches_per_s"]
            if n and n["total_launches_per_s"] else None)
    finally:
        if own:
            stop_worker(a.runtime_dir)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
