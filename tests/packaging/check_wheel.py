#!/usr/bin/env python3
"""tests/packaging/check_wheel.py — the Python package as a user gets it (scripts/test runs it).

1. `pip wheel .` (pyproject.toml: scikit-build-core drives CMake); prints the wheel's tag and
   file list and checks them: a platform tag, only agile_torch/ and its .dist-info at the top
   (nothing stray in site-packages), the libraries and binaries inside agile_torch/, the
   declared dependencies and licence.
2. A fresh venv (no system site-packages, so no torch) gets that wheel; from outside the
   checkout, with no AGILE_BUILD_DIR/AGILE_LIBRARY, it runs `agilectl --version`,
   `agile-worker --version`, `agile-guard --version` and
   `python -c "import agile_torch; print(agile_torch.worker_status())"` (a worker autostarted
   from the wheel in a private runtime dir), then `python -m agile_torch.demo --host` (its PTX
   from the package data) and the `agilectl ... stop` that the demo's last line gives.
3. `pip install .` into a second fresh venv, then `agilectl --version` from it.
4. Neither build wrote into the source tree (agile_torch/_lib, _bin, dist) or build/lib.
Exit status 0 when all hold; every command and its output is printed.
"""
from __future__ import annotations

import email.parser
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARIES = ("agile-worker", "agilectl", "agile-guard")
REQUIRED = ["agile_torch/__init__.py", "agile_torch/_lib/libagile.so.0",
            "agile_torch/_lib/libagile_cufft.so", *(f"agile_torch/_bin/{b}" for b in BINARIES),
            "agile_torch/demo/__main__.py", "agile_torch/demo/data/softmax.ptx",
            "agile_torch/demo/data/bulk_tensor.ptx"]
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    p = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    out = p.stdout.rstrip()
    if out:
        print("\n".join("  | " + line for line in out.splitlines()[-40:]), flush=True)
    print(f"  (exit {p.returncode}, {time.monotonic() - t0:.1f} s)", flush=True)
    return p


def user_env(tmp: str) -> dict:
    """The environment of a user of the installed package: nothing pointing into a checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGILE_BUILD_DIR", "AGILE_LIBRARY", "AGILE_WORKER", "PYTHONPATH",
                        "VIRTUAL_ENV", "PYTHONHOME")}
    env["AGILE_RUNTIME_DIR"] = os.path.join(tmp, "rt")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(ROOT))
    return env


def source_tree_state() -> set[str]:
    """Files a build could leave in the checkout where it must not (stale copies)."""
    found = set()
    for d in ("agile_torch/_lib", "agile_torch/_bin", "build/lib", "dist"):
        for f in glob.glob(os.path.join(ROOT, d, "**"), recursive=True):
            if os.path.isfile(f):
                found.add((os.path.relpath(f, ROOT), os.stat(f).st_mtime_ns))
    return found


def stop_worker(rt: str) -> None:
    pidf = os.path.join(rt, "agile.pid")
    try:
        pid = int(open(pidf).read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"  worker {pid} stopped")
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    print(f"  worker {pid} did not stop on SIGTERM within 10 s: killed")


def fresh_venv(path: str) -> str:
    """A venv of this interpreter's base Python, without system site-packages (and without
    pip: this interpreter's pip installs into it with --python, saving ensurepip's time)."""
    base = getattr(sys, "_base_executable", sys.executable)
    p = run([base, "-m", "venv", "--without-pip", path])
    if p.returncode != 0:
        sys.exit(f"check_wheel: cannot make a venv at {path}")
    return os.path.join(path, "bin")


def pip_install(vbin: str, what: str, *opts: str, **kw) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pip", "--python", os.path.join(vbin, "python"), "install",
                "-q", "--disable-pip-version-check", *opts, what], **kw)


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="agile-wheel.")
    os.makedirs(os.path.join(tmp, "rt"), mode=0o700)
    env_build = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    before = source_tree_state()
    try:
        print("\n--- pip wheel .", flush=True)
        dist = os.path.join(tmp, "dist")
        p = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                 "-w", dist, ROOT], cwd=tmp, env=env_build)
        wheels = glob.glob(os.path.join(dist, "*.whl"))
        check(p.returncode == 0 and len(wheels) == 1, "pip wheel . built one wheel")
        if not wheels:
            return 1
        whl = wheels[0]
        name = os.path.basename(whl)[:-4]
        dist_name, version, *_, py, abi, plat = name.split("-")
        print(f"\nwheel: {os.path.basename(whl)}  ({os.path.getsize(whl)} bytes)")
        print(f"tag:   {py}-{abi}-{plat}")
        check(plat != "any" and plat.startswith(("linux_", "manylinux")),
              f"platform tag ({plat}), not -any: the wheel holds x86-64 ELF files")
        with zipfile.ZipFile(whl) as z:
            infos = z.infolist()
            print("files:")
            for i in infos:
                print(f"  {i.file_size:>9}  {i.filename}")
            names = [i.filename for i in infos]
            tops = sorted({n.split("/")[0] for n in names})
            info_dir = f"{dist_name}-{version}.dist-info"
            check(tops == sorted(["agile_torch", info_dir]),
                  f"top level is agile_torch/ and {info_dir}/ only (found: {', '.join(tops)})")
            for r in REQUIRED:
                check(r in names, f"wheel holds {r}")
            for i in infos:
                if i.filename.startswith("agile_torch/_bin/"):
                    check((i.external_attr >> 16) & 0o111 != 0, f"{i.filename} is executable")
            meta = email.parser.Parser().parsestr(z.read(f"{info_dir}/METADATA").decode())
            eps = z.read(f"{info_dir}/entry_points.txt").decode()
        reqs = meta.get_all("Requires-Dist") or []
        print("metadata: Requires-Dist " + "; ".join(reqs) + f"; License-Expression "
              f"{meta.get('License-Expression')}; Requires-Python {meta.get('Requires-Python')}")
        check(any(r.split(";")[0].strip().startswith("numpy") for r in reqs), "depends on numpy")
        check(any("torch" in r and 'extra == "torch"' in r for r in reqs), "torch is an extra")
        check(bool(meta.get("License-Expression") or meta.get("License")), "licence declared")
        for b in BINARIES:
            check(f"{b} = agile_torch._cli:" in eps, f"console entry point {b}")

        print("\n--- a fresh venv gets the wheel", flush=True)
        venv = os.path.join(tmp, "venv-wheel")
        vbin = fresh_venv(venv)
        p = pip_install(vbin, whl, cwd=tmp)
        check(p.returncode == 0, "pip install the wheel into a fresh venv")
        env = user_env(tmp)
        for b in BINARIES:
            p = run([os.path.join(vbin, b), "--version"], cwd=tmp, env=env)
            check(p.returncode == 0 and version in p.stdout,
                  f"{b} --version from the venv says {version}")
        py_exe = os.path.join(vbin, "python")
        p = run([py_exe, "-c", "import importlib.util; print(importlib.util.find_spec('torch'))"],
                cwd=tmp, env=env)
        check(p.stdout.strip() == "None", "torch is not installed in the fresh venv")
        p = run([py_exe, "-c", "import agile_torch; print(agile_torch.worker_status())"],
                cwd=tmp, env=env)
        check(p.returncode == 0 and "'tenants'" in p.stdout,
              "import agile_torch; agile_torch.worker_status() without torch")
        p = run([py_exe, "-c", "import agile_torch, os; "
                 "print(agile_torch.session_info()); print(agile_torch.__file__); "
                 "print(agile_torch.library_path())"], cwd=tmp, env=env)
        lines = p.stdout.splitlines()
        check(p.returncode == 0 and len(lines) >= 3 and lines[-2].startswith(venv)
              and lines[-1].startswith(venv),
              "session_info() works; agile_torch and libagile come from the venv")
        site = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))[0]
        stray = [f for f in os.listdir(site)
                 if os.path.isfile(os.path.join(site, f)) and (".so" in f or f.endswith(".a"))]
        print("site-packages: " + " ".join(sorted(os.listdir(site))))
        check(not stray, "no libraries at the top of site-packages" + (f": {stray}" if stray else ""))
        rt = env["AGILE_RUNTIME_DIR"]
        p = run([py_exe, "-m", "agile_torch.demo", "--host", "--runtime-dir", rt], cwd=tmp, env=env)
        last = p.stdout.strip().splitlines()[-1].split() if p.stdout.strip() else []
        check(p.returncode == 0 and "independent verifier: pass" in p.stdout
              and "is still running on" in p.stdout and last[-3:] == ["--runtime-dir", rt, "stop"],
              "python -m agile_torch.demo --host from the wheel; it ends saying how to stop the worker")
        if last[-3:] == ["--runtime-dir", rt, "stop"]:
            p = run(last, cwd=tmp, env=env)  # what the demo told the user to run
            q = run([os.path.join(vbin, "agilectl"), "--runtime-dir", rt, "status"], cwd=tmp,
                    env=env)
            check(p.returncode == 0 and q.returncode == 1,
                  "the demo's stop command stopped the worker (status then finds none)")
        stop_worker(rt)

        print("\n--- pip install . into a second fresh venv", flush=True)
        vbin2 = fresh_venv(os.path.join(tmp, "venv-src"))
        # --no-deps: the dependencies were installed and seen above; this is about the build.
        p = pip_install(vbin2, ROOT, "--no-deps", cwd=tmp, env=env_build)
        check(p.returncode == 0, "pip install . into a fresh venv")
        p = run([os.path.join(vbin2, "agilectl"), "--version"], cwd=tmp, env=env)
        check(p.returncode == 0 and version in p.stdout, f"agilectl --version says {version}")

        after = source_tree_state()
        check(after == before, "the builds wrote nothing into agile_torch/_lib, _bin, dist or "
              "build/lib (scripts/build's)"
              + (f" (new: {sorted(after - before)})" if after != before else ""))
    finally:
        stop_worker(os.path.join(tmp, "rt"))
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ncheck_wheel: {'FAILED: ' + '; '.join(failures) if failures else 'all checks passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
