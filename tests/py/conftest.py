import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import agilec  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")


# Every test ends: one that runs longer than this fails (with its stack) instead of hanging
# the suite. Child processes get their own, shorter limits (child_timeout()).
TEST_TIMEOUT = int(os.environ.get("AGILE_TEST_TIMEOUT", "300"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    def expire(signum, frame):
        raise TimeoutError(f"{item.nodeid} ran past {TEST_TIMEOUT} s (AGILE_TEST_TIMEOUT)")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def child_timeout(default=120):
    return int(os.environ.get("AGILE_CHILD_TIMEOUT", default))


def communicate(p, worker=None, timeout=None, stdin=None):
    """p.communicate() bounded in time; on expiry the child is killed and the failure shows
    everything it printed and the worker's log, so a hang on a remote machine is diagnosable."""
    try:
        o, e = p.communicate(stdin, timeout=timeout or child_timeout())
    except subprocess.TimeoutExpired:
        p.kill()
        o, e = p.communicate()
        log = worker.logtext()[-4000:] if worker is not None else ""
        pytest.fail(f"child ran past {timeout or child_timeout()} s\n--- stdout\n{o}\n--- stderr\n"
                    f"{e}\n--- worker log (tail)\n{log}", pytrace=False)
    return o, e


def have_gpu():
    try:
        import ctypes
        cu = ctypes.CDLL("libcuda.so.1")
        n = ctypes.c_int()
        return cu.cuInit(0) == 0 and cu.cuDeviceGetCount(ctypes.byref(n)) == 0 and n.value > 0
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    if have_gpu():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine (scripts/gpu-check runs these)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def drop_to(uid):
    """preexec_fn: run the child as uid (root only). Run the binaries of binaries_for(uid)."""
    def fn():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return fn


class Worker:
    """A foreground agile-worker in runtime_dir; extra: more command-line arguments;
    user: a uid to run it as."""

    def __init__(self, runtime_dir, *extra, backend="host", config=None, user=None):
        self.dir = runtime_dir
        args = [binaries_for(user).worker, "--foreground", "--runtime-dir", runtime_dir, "--backend", backend,
                *extra]
        if config:
            args += ["--config", config]
        self.log = open(os.path.join(runtime_dir + ".log"), "w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=drop_to(user) if user is not None else None)
        # A generous bound: a loaded 2-core machine can take seconds to start a process.
        deadline = time.time() + 60
        # Ready when it says so (stale socket files of a killed worker may still be there).
        while "worker ready" not in self.logtext():
            if self.proc.poll() is not None or time.time() > deadline:
                log = self.logtext()
                self.stop()
                raise RuntimeError("worker did not start: " + log)
            time.sleep(0.02)

    def status(self):
        out = subprocess.run([agilec.AGILECTL, "--runtime-dir", self.dir, "--no-start", "status",
                              "--json"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Binaries:
    """Paths of agile-worker and agilectl that a given uid can execute."""

    def __init__(self, bindir):
        self.worker = os.path.join(bindir, "agile-worker")
        self.agilectl = os.path.join(bindir, "agilectl")


def _others_can_reach(path):
    """Can a uid that owns none of path's folders traverse them all and execute path? (A checkout
    in a 0700 folder, what mktemp -d makes, is not reachable for another uid; nor is a venv's
    python that links to an interpreter in root's home: the link's target is what runs.)"""
    path = os.path.realpath(path)
    if not os.stat(path).st_mode & stat.S_IXOTH:
        return False
    d = os.path.dirname(path)
    while True:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
        if d == "/":
            return True
        d = os.path.dirname(d)


_copies = {}


def binaries_for(uid):
    """The build's binaries when uid is None (ourselves) or they are reachable for others; else
    copies of bin/ and lib/ (the binaries find libagile through $ORIGIN/../lib) in a 0755
    folder of their own, made once per test session and removed at its end."""
    build_bin = os.path.dirname(agilec.WORKER)
    if uid is None or all(_others_can_reach(p) for p in (agilec.WORKER, agilec.AGILECTL)):
        return Binaries(build_bin)
    if "dir" not in _copies:
        top = tempfile.mkdtemp(prefix="agile-bin.")
        os.chmod(top, 0o755)
        for sub in ("bin", "lib"):
            src = os.path.join(os.path.dirname(build_bin), sub)
            dst = os.path.join(top, sub)
            os.mkdir(dst, 0o755)
            for name in os.listdir(src):
                f = os.path.join(src, name)
                if os.path.isfile(f) and (sub == "lib" or name in ("agile-worker", "agilectl")):
                    shutil.copy2(f, dst, follow_symlinks=False)
                    if not os.path.islink(os.path.join(dst, name)):
                        os.chmod(os.path.join(dst, name), 0o755)
        _copies["dir"] = top
    return Binaries(os.path.join(_copies["dir"], "bin"))


def python_for(uid):
    """An interpreter uid can run (for scripts that need only the standard library)."""
    for exe in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(exe) and _others_can_reach(exe):
            return exe
    pytest.skip(f"no Python interpreter that uid {uid} can run")


# The start of a script that uses libagile through ctypes only (a client running as another
# uid cannot import torch from a root-only checkout): L is libagile (argv[1]) with the
# signatures it needs, V/U64/SZ/UI the ctypes types, AErr agile_last_async_error's record, and
# this thread has device 0's primary CUDA context current (launches order with it).
CABI_PRELUDE = """\
import ctypes, json, sys, time
L = ctypes.CDLL(sys.argv[1])
V, U64, SZ, UI = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_uint
L.agile_malloc.restype = V
L.agile_malloc.argtypes = [SZ, ctypes.c_int, V]
L.agile_module_load.argtypes = [ctypes.c_char_p, SZ, UI, ctypes.POINTER(U64)]
L.agile_module_function.argtypes = [U64, ctypes.c_char_p, ctypes.POINTER(U64),
                                    ctypes.POINTER(UI)]
L.agile_launch.argtypes = [U64, ctypes.POINTER(UI), ctypes.POINTER(UI), UI, V, V, SZ]
L.agile_barrier.argtypes = [V, ctypes.POINTER(U64)]
L.agile_last_error.restype = ctypes.c_char_p
class AErr(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int32), ("kernel", ctypes.c_uint32), ("seq", U64),
                ("site", U64), ("addr", U64)]
L.agile_last_async_error.argtypes = [ctypes.POINTER(AErr)]
cu = ctypes.CDLL("libcuda.so.1")
ctx = V()
assert cu.cuInit(0) == 0 and cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0
assert cu.cuCtxSetCurrent(ctx) == 0
"""


def run_as(uid, script, *args, runtime_dir, timeout=120):
    """Run the Python text `script` (standard library + ctypes) as uid, with libagile's path as
    argv[1] and args after it, against the worker of runtime_dir; returns CompletedProcess."""
    lib = os.path.join(os.path.dirname(binaries_for(uid).worker), "..", "lib", "libagile.so")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False,
                                     dir=os.path.dirname(runtime_dir)) as f:
        f.write(script)
    os.chmod(f.name, 0o644)
    env = {"AGILE_RUNTIME_DIR": runtime_dir, "PATH": "/usr/bin:/bin",
           "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH", "")}
    return subprocess.run([python_for(uid), f.name, os.path.abspath(lib), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          preexec_fn=drop_to(uid))


@pytest.fixture
def shared_cuda_worker():
    """A --shared worker on the cuda backend in a folder every uid can traverse: (worker, dir).
    For tests where uid 65534 plays another tenant (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("another tenant runs as uid 65534: needs root")
    with tempfile.TemporaryDirectory(prefix="agile-s") as d:
        os.chmod(d, 0o755)
        w = Worker(os.path.join(d, "rt"), "--shared", backend="cuda")
        try:
            yield w, d
        finally:
            w.stop()


def pytest_sessionfinish(session, exitstatus):
    if "dir" in _copies:
        shutil.rmtree(_copies.pop("dir"), ignore_errors=True)


# AGILE_TEST_REPEAT=N runs every selected test N times (with -k or a node id: one test N times),
# the way to hunt a flaky test; scripts/test repeat wraps it.
def pytest_generate_tests(metafunc):
    n = int(os.environ.get("AGILE_TEST_REPEAT", "1"))
    if n > 1:
        metafunc.fixturenames.append("_repeat")
        metafunc.parametrize("_repeat", range(n), ids=lambda i: f"rep{i}")


@pytest.fixture
def rundir():
    with tempfile.TemporaryDirectory(prefix="agile-t") as d:
        yield os.path.join(d, "rt")


@pytest.fixture
def worker(rundir):
    w = Worker(rundir)
    yield w
    w.stop()


@pytest.fixture(scope="session")
def lib():
    assert os.path.exists(agilec.LIB), f"{agilec.LIB} missing: build first (scripts/build)"
    return agilec.load()
