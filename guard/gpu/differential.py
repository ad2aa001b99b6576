#!/usr/bin/env python3
"""differential.py - differential and adversarial GPU test of the PTX guard.

For every corpus PTX with a launch description (tests/data/ptx/launch/*.json):
  * normal kernels: run the unguarded module, the guarded module (mask mode) and the
    strict-mode module on the same in-window data; the compared buffers must be equal and
    strict mode must record no violation;
  * "smoke" kernels: guarded runs must complete, strict without violation;
  * adversarial kernels (forged pointers, pointer arithmetic past the end, atomics and
    vector stores outside the window, generic pointers to global memory): run guarded
    only; a canary buffer outside the window must stay untouched in both modes, and strict
    mode must report the violation (kernel, site, address outside the window).

The window is mapped as the worker maps it: W = 2^k bytes at a W-aligned base reserved
with cuMemAddressReserve, one physical chunk for the window and a sink chunk for the
guard gap after it (cuMemCreate/cuMemMap/cuMemSetAccess). Only libcuda.so.1 (ctypes) is
needed.

usage: python3 guard/gpu/differential.py --guard build/bin/agile-guard --out OUT.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cudrv import CudaError, Driver, pack_arg  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CANARY_SIZE = 1 << 20
CANARY_BYTE = 0xAB
DTYPES = {"f16": ("e", 2), "f32": ("f", 4), "f64": ("d", 8), "i32": ("i", 4), "u32": ("I", 4), "i16": ("h", 2), "u8": ("B", 1),
          "i64": ("q", 8)}


def init_bytes(kind: str, size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    if kind == "zero":
        return bytes(size)
    if kind == "iota_i32":
        return struct.pack(f"<{size // 4}i", *range(size // 4))
    if kind == "iota_u8":
        return bytes(i & 0xFF for i in range(size))
    if kind == "rand_f32":
        return struct.pack(f"<{size // 4}f", *[rnd.uniform(-4, 4) for _ in range(size // 4)])
    if kind == "rand_f16":
        return struct.pack(f"<{size // 2}e", *[rnd.uniform(-2, 2) for _ in range(size // 2)])
    if kind == "rand_f64":
        return struct.pack(f"<{size // 8}d", *[rnd.uniform(-4, 4) for _ in range(size // 8)])
    if kind.startswith("rand_i32_"):
        n = int(kind.rsplit("_", 1)[1])
        return struct.pack(f"<{size // 4}i", *[rnd.randrange(n) for _ in range(size // 4)])
    if kind.startswith("const_i32_"):
        v = int(kind.rsplit("_", 1)[1])
        return struct.pack(f"<{size // 4}i", *([v] * (size // 4)))
    raise ValueError(f"unknown init {kind}")


def decode(data: bytes, dtype: str) -> list:
    code, w = DTYPES[dtype]
    return list(struct.unpack(f"<{len(data) // w}{code}", data[: len(data) // w * w]))


def run_guard(guard: str, ptx: str, out: str, report: str, strict: bool, extra: list) -> tuple[bool, str]:
    cmd = [guard] + (["--strict"] if strict else []) + extra + ["--report", report, ptx, "-o", out]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode == 0, p.stderr.strip()


class Runner:
    def __init__(self, drv: Driver, bits: int, gap: int):
        self.drv = drv
        self.win = drv.window(bits, gap)
        self.canary = drv.alloc(CANARY_SIZE)
        self.viol = drv.alloc(16)
        lo, hi = self.win.base, self.win.base + self.win._reserved
        if lo <= self.canary < hi:
            raise CudaError("canary landed inside the window")

    def close(self):
        self.drv.free(self.canary)
        self.drv.free(self.viol)
        self.win.close()

    def reset_canary(self):
        self.drv.memset(self.canary, CANARY_BYTE, CANARY_SIZE)

    def canary_intact(self) -> bool:
        return self.drv.dtoh(self.canary, CANARY_SIZE) == bytes([CANARY_BYTE]) * CANARY_SIZE

    def setup(self, spec: dict, seed: int) -> dict:
        self.win.reset()
        bufs = {}
        for name, b in spec.get("buffers", {}).items():
            addr = self.win.suballoc(b["size"])
            self.drv.htod(addr, init_bytes(b.get("init", "zero"), b["size"], seed + len(bufs)))
            bufs[name] = (addr, b["size"])
        return bufs

    def args(self, spec: dict, bufs: dict) -> list:
        env = {"W": self.win.size, "GAP": self.win._reserved - self.win.size, "CANARY": self.canary,
               "BASE": self.win.base, "BUF0": min((a for a, _ in bufs.values()), default=self.win.base)}
        out = []
        for kind, val in spec.get("args", []):
            if isinstance(val, str) and kind != "ptr":
                val = eval(val, {"__builtins__": {}}, env)  # trusted corpus sidecar
            if kind == "ptr":
                out.append(pack_arg("ptr", bufs[val][0]))
            elif kind == "canary":
                out.append(pack_arg("u64", self.canary + int(val)))
            else:
                out.append(pack_arg(kind, val))
        return out

    def launch(self, mod, spec: dict, args: list, hidden: list) -> None:
        fn = self.drv.function(mod, spec["name"])
        self.drv.set_dynamic_smem(fn, spec.get("shared", 0))
        self.drv.launch(fn, spec.get("grid", [1]), spec.get("block", [32]), args + hidden, spec.get("shared", 0))
        self.drv.sync()

    def hidden(self, strict: bool) -> list:
        h = [pack_arg("u64", self.win.mask), pack_arg("u64", self.win.base)]
        if strict:
            self.drv.memset(self.viol, 0, 16)
            h.append(pack_arg("u64", self.viol))
        return h

    def violation(self) -> dict:
        kernel, site, addr = struct.unpack("<IIQ", self.drv.dtoh(self.viol, 16))
        return {"kernel": kernel, "site": site, "addr": addr}

    def snapshot(self, spec: dict, bufs: dict) -> dict:
        return {c["buf"]: self.drv.dtoh(*bufs[c["buf"]]) for c in spec.get("compare", [])}


def compare(spec: dict, a: dict, b: dict) -> list:
    errs = []
    for c in spec.get("compare", []):
        x, y = decode(a[c["buf"]], c["dtype"]), decode(b[c["buf"]], c["dtype"])
        if c.get("sorted"):
            x, y = sorted(x), sorted(y)
        if x != y:
            bad = next(i for i in range(len(x)) if x[i] != y[i])
            errs.append(f"{c['buf']}[{bad}]: {x[bad]} != {y[bad]}")
    return errs


def check_expect(runner: Runner, items: list, bufs: dict) -> list:
    errs = []
    for e in items:
        vals = decode(runner.drv.dtoh(*bufs[e["buf"]]), e["dtype"])
        if "all" in e and any(v != e["all"] for v in vals):
            errs.append(f"{e['buf']}: expected all {e['all']}, got {vals[:8]}...")
    return errs


def site_kernel_ok(report: dict, name: str, v: dict) -> list:
    errs = []
    kernels = {f["name"]: f for f in report["functions"] if f["kind"] == "entry"}
    k = kernels.get(name)
    if k is None:
        return [f"kernel {name} not in report"]
    if v["kernel"] != k["kernel_id"] + 1:
        errs.append(f"violation kernel {v['kernel']} != {k['kernel_id'] + 1}")
    if not (0 <= v["site"] < report["nsites"]):
        errs.append(f"violation site {v['site']} out of range")
    return errs


def entry_params(ptx: str, name: str) -> list | None:
    """Parameter kinds of .entry name: 'u64', 'u32', 'f32', 'f64', 'b8[16]'..."""
    import re
    m = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\((.*?)\)", ptx, re.S)
    if not m:
        return None
    out = []
    for p in m.group(1).split(","):
        if not p.strip():
            continue
        arr = re.search(r"\.b8\s+\S+\[(\d+)\]", p)
        t = re.search(r"\.(u64|b64|s64|u32|b32|s32|f32|f64|u16|b16|s16|u8|b8)\b", p)
        out.append(f"b8[{arr.group(1)}]" if arr else (t.group(1) if t else "?"))
    return out


ARG_OK = {"ptr": ("u64", "b64"), "u64": ("u64", "b64", "s64"), "i64": ("u64", "b64", "s64"),
          "canary": ("u64", "b64"), "i32": ("u32", "b32", "s32"), "u32": ("u32", "b32", "s32"),
          "f32": ("f32",), "f64": ("f64",), "float4": ("b8[16]",)}


def check_only(a) -> int:
    """No GPU: validate every launch description against its PTX and the guard."""
    errors = 0
    launch_dir = os.path.join(a.corpus, "launch")
    tmp = tempfile.mkdtemp(prefix="guard-diff-check.")
    for lf in sorted(os.listdir(launch_dir)):
        if not lf.endswith(".json"):
            continue
        desc = json.load(open(os.path.join(launch_dir, lf)))
        ptx_path = os.path.join(a.corpus, desc["ptx"])
        ptx = open(ptx_path).read()
        for mode in ("mask", "strict"):
            ok, err = run_guard(a.guard, ptx_path, os.path.join(tmp, "o.ptx"), os.path.join(tmp, "r.json"),
                                mode == "strict", [])
            if not ok:
                print(f"{lf}: guard ({mode}) failed: {err}")
                errors += 1
        for spec in desc["kernels"]:
            if spec.get("skip"):
                continue
            label = f"{lf}:{spec.get('label', spec['name'])}"
            params = entry_params(ptx, spec["name"])
            if params is None:
                print(f"{label}: no .entry {spec['name']} in {desc['ptx']}")
                errors += 1
                continue
            args = spec.get("args", [])
            if len(args) != len(params):
                print(f"{label}: {len(args)} args for {len(params)} parameters {params}")
                errors += 1
            for (kind, val), pt in zip(args, params):
                if pt not in ARG_OK.get(kind, ()):
                    print(f"{label}: argument kind {kind} for a .{pt} parameter")
                    errors += 1
                if kind == "ptr" and val not in spec.get("buffers", {}):
                    print(f"{label}: unknown buffer {val}")
                    errors += 1
                if isinstance(val, str) and kind != "ptr":
                    env = {"W": 1 << a.window_bits, "GAP": a.gap, "CANARY": 1 << 40, "BASE": 1 << 41, "BUF0": 1 << 41}
                    eval(val, {"__builtins__": {}}, env)
            for c in spec.get("compare", []) + spec.get("expect", {}).get("buffers", []):
                if c["buf"] not in spec.get("buffers", {}) or c["dtype"] not in DTYPES:
                    print(f"{label}: bad compare entry {c}")
                    errors += 1
            for b in spec.get("buffers", {}).values():
                init_bytes(b.get("init", "zero"), b["size"], 0)
            blk = spec.get("block", [32])
            if blk[0] * (blk[1] if len(blk) > 1 else 1) > 1024:
                print(f"{label}: block too large")
                errors += 1
    print(f"launch descriptions: {'OK' if errors == 0 else f'{errors} error(s)'}")
    return 1 if errors else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--guard", required=True, help="path to agile-guard")
    ap.add_argument("--out", help="JSON results (required unless --check)")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "tests", "data", "ptx"))
    ap.add_argument("--window-bits", type=int, default=24)
    ap.add_argument("--gap", type=int, default=1 << 20)
    ap.add_argument("--only", help="run only kernels whose name contains this")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--check", action="store_true", help="no GPU: validate the launch descriptions only")
    a = ap.parse_args()
    if a.check:
        return check_only(a)

    if not a.out:
        ap.error("--out is required")
    drv = Driver()
    print(f"device: {drv.name} (sm_{drv.cc[0]}{drv.cc[1]}), window 2^{a.window_bits}, gap {a.gap}")
    runner = Runner(drv, a.window_bits, a.gap)
    results = []
    tmp = tempfile.mkdtemp(prefix="guard-diff.")
    launch_dir = os.path.join(a.corpus, "launch")
    dead = None
    for lf in sorted(os.listdir(launch_dir)):
        if not lf.endswith(".json"):
            continue
        desc = json.load(open(os.path.join(launch_dir, lf)))
        ptx = os.path.join(a.corpus, desc["ptx"])
        mods, reports = {}, {}
        try:
            for mode in ("mask", "strict"):
                out, rep = os.path.join(tmp, f"{lf}.{mode}.ptx"), os.path.join(tmp, f"{lf}.{mode}.json")
                ok, err = run_guard(a.guard, ptx, out, rep, mode == "strict", ["--gap", str(a.gap)])
                if not ok:
                    raise RuntimeError(f"guard failed ({mode}): {err}")
                mods[mode] = drv.load(open(out, "rb").read())
                reports[mode] = json.load(open(rep))
            if any(not k.get("adversarial") and not k.get("skip") for k in desc["kernels"]):
                mods["plain"] = drv.load(open(ptx, "rb").read())
        except Exception as e:  # a module that does not load fails all its kernels
            results.append({"ptx": desc["ptx"], "kernel": "*", "status": "fail", "detail": str(e)})
            print(f"FAIL {desc['ptx']}: {e}")
            continue
        for spec in desc["kernels"]:
            label = spec.get("label", spec["name"])
            if a.only and a.only not in label:
                continue
            r = {"ptx": desc["ptx"], "kernel": label, "status": "pass", "detail": [], "modes": {}}
            if spec.get("skip"):
                r["status"], r["detail"] = "skip", [spec["skip"]]
                results.append(r)
                print(f"skip {desc['ptx']}:{label}: {spec['skip']}")
                continue
            if dead:
                r["status"], r["detail"] = "not-run", [f"context lost earlier: {dead}"]
                results.append(r)
                continue
            try:
                t0 = time.time()
                if spec.get("adversarial"):
                    for mode in ("mask", "strict"):
                        runner.reset_canary()
                        bufs = runner.setup(spec, a.seed)
                        runner.launch(mods[mode], spec, runner.args(spec, bufs), runner.hidden(mode == "strict"))
                        if not runner.canary_intact():
                            r["detail"].append(f"{mode}: canary outside the window was modified")
                        r["detail"] += [f"{mode}: {e}" for e in check_expect(runner, spec.get("expect", {}).get("buffers", []), bufs)]
                        if mode == "strict":
                            v = runner.violation()
                            r["modes"]["strict_violation"] = v
                            if v["kernel"] == 0:
                                r["detail"].append("strict: no violation recorded")
                            else:
                                r["detail"] += site_kernel_ok(reports["strict"], spec["name"], v)
                                if runner.win.base <= v["addr"] < runner.win.base + runner.win.size:
                                    r["detail"].append(f"strict: recorded address {v['addr']:#x} is inside the window")
                            r["detail"] += [f"strict: {e}" for e in
                                            check_expect(runner, spec.get("expect", {}).get("strict_buffers", []), bufs)]
                else:
                    snaps = {}
                    modes = ("mask", "strict") if spec.get("smoke") else ("plain", "mask", "strict")
                    for mode in modes:
                        bufs = runner.setup(spec, a.seed)
                        hidden = [] if mode == "plain" else runner.hidden(mode == "strict")
                        runner.launch(mods[mode], spec, runner.args(spec, bufs), hidden)
                        snaps[mode] = runner.snapshot(spec, bufs)
                        if mode == "strict":
                            v = runner.violation()
                            if v["kernel"] != 0:
                                r["detail"].append(f"strict: false violation {v}")
                    if not spec.get("smoke"):
                        r["detail"] += [f"mask: {e}" for e in compare(spec, snaps["plain"], snaps["mask"])]
                        r["detail"] += [f"strict: {e}" for e in compare(spec, snaps["plain"], snaps["strict"])]
                r["seconds"] = round(time.time() - t0, 3)
            except CudaError as e:
                r["detail"].append(f"CUDA error: {e}")
                if "ILLEGAL" in str(e) or "LAUNCH_FAILED" in str(e) or "MISALIGNED" in str(e):
                    dead = f"{label}: {e}"
            except Exception as e:  # keep going: one broken spec must not hide the others
                r["detail"].append(f"error: {e!r}")
                traceback.print_exc()
            if r["detail"]:
                r["status"] = "fail"
            results.append(r)
            extra = f"  violation={r['modes'].get('strict_violation')}" if "strict_violation" in r["modes"] else ""
            print(f"{r['status']:4} {desc['ptx']}:{label}{extra}" + ("" if r["status"] == "pass" else f"  {r['detail']}"))
        for m in mods.values():
            drv.unload(m)
    if not dead:
        runner.close()
    npass = sum(r["status"] == "pass" for r in results)
    nfail = sum(r["status"] in ("fail", "not-run") for r in results)
    summary = {"device": drv.name, "window_bits": a.window_bits, "gap": a.gap, "pass": npass, "fail": nfail,
               "skip": sum(r["status"] == "skip" for r in results), "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(f"\n{npass} passed, {nfail} failed, {summary['skip']} skipped -> {a.out}")
    return 0 if nfail == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
