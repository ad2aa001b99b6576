"""libagile's C ABI, typed for Python (ctypes; no logic of its own).

Where libagile comes from, so that the Python code and the libraries it loads are always of
one build:
  - $AGILE_LIBRARY, when set (either case);
  - in a source checkout (this package beside the repository's CMakeLists.txt and csrc/):
    $AGILE_BUILD_DIR/lib, else <repo>/build/lib (scripts/build); never a copy inside the
    package, so an old install's leftovers are not loaded;
  - installed (wheel): the package's own _lib/ (libagile.so.0) and _bin/, never a checkout's.
"""
from __future__ import annotations

import ctypes
import os
from functools import lru_cache

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)


def in_checkout() -> bool:
    """Whether this agile_torch is a source checkout's (not an installed package)."""
    return (os.path.isfile(os.path.join(_REPO, "CMakeLists.txt"))
            and os.path.isdir(os.path.join(_REPO, "csrc")))


def library_path() -> str:
    if os.environ.get("AGILE_LIBRARY"):
        cands = [os.environ["AGILE_LIBRARY"]]
        hint = "$AGILE_LIBRARY names a file that does not exist"
    elif in_checkout():
        build = os.environ.get("AGILE_BUILD_DIR") or os.path.join(_REPO, "build")
        cands = [os.path.join(build, "lib", "libagile.so")]
        hint = "build first: scripts/build (or point AGILE_BUILD_DIR at a build directory)"
    else:
        cands = [os.path.join(_HERE, "_lib", "libagile.so.0")]
        hint = "the installed package lacks its libraries: reinstall it (pip install agile-torch)"
    for c in cands:
        if os.path.exists(c):
            return os.path.abspath(c)
    raise ImportError("libagile not found (looked in: " + ", ".join(cands) + "); " + hint)


def binary_path(name: str) -> str | None:
    """agile-worker, agilectl or agile-guard of the same build as library_path()."""
    lib_dir = os.path.dirname(library_path())
    for c in (os.path.join(lib_dir, "..", "bin", name), os.path.join(lib_dir, "..", "_bin", name)):
        if os.path.exists(c):
            return os.path.abspath(c)
    return None


class ConnectOpts(ctypes.Structure):
    _fields_ = [("runtime_dir", ctypes.c_char_p), ("timeout_ms", ctypes.c_int),
                ("no_autostart", ctypes.c_int), ("worker_path", ctypes.c_char_p),
                ("backend", ctypes.c_char_p)]


class SessionInfo(ctypes.Structure):
    _fields_ = [("session", ctypes.c_uint64), ("tenant", ctypes.c_uint32),
                ("backend", ctypes.c_uint32), ("ndev", ctypes.c_uint32),
                ("priority", ctypes.c_uint32), ("quota", ctypes.c_uint64),
                ("worker_major", ctypes.c_uint32), ("worker_minor", ctypes.c_uint32)]


MEM_FIELDS = ("allocated_bytes", "allocated_bytes_peak", "allocated_bytes_total",
              "freed_bytes_total", "requested_bytes", "requested_bytes_peak", "reserved_bytes",
              "reserved_bytes_peak", "cached_bytes", "free_bytes", "allocations", "num_allocs",
              "num_frees", "segments", "num_grows", "num_shrinks", "num_grow_failures",
              "num_alloc_retries", "num_ooms", "num_free_errors", "quota_bytes", "window_bytes")


class MemStats(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in MEM_FIELDS]


class AgileError(RuntimeError):
    """A libagile call failed; .code is the agile_err_t, the message includes the worker's."""

    def __init__(self, code: int, what: str):
        self.code = code
        super().__init__(what)


class GPUFault(AgileError):
    """AGILE_EFAULT: a kernel of this process faulted the GPU in the worker (a trap, an illegal
    or misaligned address the guard could not prevent); the worker ended this process's session
    and reset its GPU context, or, where the driver refuses that (the H200's driver 580 did),
    exited. `agilectl status` (or the worker's log) names the kernel."""


class GPUReset(AgileError):
    """AGILE_ERESET: another tenant's fault reset the worker's GPU context; this process's
    commands in flight then were lost (their outputs unwritten), its memory was not. Where the
    reset succeeded later calls work; where the worker had to exit instead, they fail with
    WorkerGone or a closed connection (libagile does not reconnect yet)."""


class WorkerGone(AgileError):
    """AGILE_EWORKER: the worker's side of the stream order is gone (the worker exited or
    ended the session); libagile released the streams that waited on it."""


AGILE_EFAULT, AGILE_ERESET, AGILE_EWORKER = 23, 24, 25
_ERRORS = {AGILE_EFAULT: GPUFault, AGILE_ERESET: GPUReset, AGILE_EWORKER: WorkerGone}


@lru_cache(maxsize=None)
def lib() -> ctypes.CDLL:
    L = ctypes.CDLL(library_path())
    c_void_p, c_int, c_size_t, c_uint64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint64
    sig = {
        "agile_init": (c_int, [ctypes.POINTER(ConnectOpts)]),
        "agile_default_client": (c_int, [ctypes.POINTER(c_void_p)]),
        "agile_session_info_get": (c_int, [c_void_p, ctypes.POINTER(SessionInfo)]),
        "agile_status": (c_int, [c_void_p, c_int, ctypes.POINTER(c_void_p)]),
        "agile_free_string": (None, [c_void_p]),
        "agile_ping": (c_int, [c_void_p]),
        "agile_strerror": (ctypes.c_char_p, [c_int]),
        "agile_last_error": (ctypes.c_char_p, []),
        "agile_malloc": (c_void_p, [c_size_t, c_int, c_void_p]),
        "agile_free": (None, [c_void_p, c_size_t, c_int, c_void_p]),
        "agile_empty_cache": (c_int, []),
        "agile_memory_stats": (c_int, [c_int, ctypes.POINTER(MemStats)]),
        "agile_pool_window": (c_int, [c_int, ctypes.POINTER(c_uint64), ctypes.POINTER(c_uint64)]),
        "agile_stream_synchronized": (None, [c_int, c_void_p]),
    }
    for name, (res, args) in sig.items():
        f = getattr(L, name)
        f.restype = res
        f.argtypes = args
    return L


def check(rv: int, what: str) -> None:
    if rv != 0:
        L = lib()
        detail = L.agile_last_error().decode(errors="replace")
        cls = _ERRORS.get(rv, AgileError)
        raise cls(rv, f"{what}: {L.agile_strerror(rv).decode()}" + (f": {detail}" if detail else ""))
