"""libagile's C ABI, typed for Python (ctypes; no logic of its own): SIGNATURES is the one
table of its C signatures, and the names and codes of its lists (errors, memory counters,
backends) are read from the library, not copied.

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
    """agile_connect_opts (agile/agile.h)."""
    _fields_ = [("runtime_dir", ctypes.c_char_p), ("timeout_ms", ctypes.c_int),
                ("no_autostart", ctypes.c_int), ("worker_path", ctypes.c_char_p),
                ("backend", ctypes.c_char_p)]


class SessionInfo(ctypes.Structure):
    """agile_session_info (agile/agile.h)."""
    _fields_ = [("session", ctypes.c_uint64), ("tenant", ctypes.c_uint32),
                ("backend", ctypes.c_uint32), ("ndev", ctypes.c_uint32),
                ("priority", ctypes.c_uint32), ("quota", ctypes.c_uint64),
                ("worker_major", ctypes.c_uint32), ("worker_minor", ctypes.c_uint32)]


class _MemStats(ctypes.Structure):
    """agile_mem_stats (agile/agile.h): one uint64 per counter of AGILE_MEM_STAT_LIST, whose
    names lib() reads from the library (agile_mem_stat_name) before anything can make one.
    Public as MemStats, which loads the library first."""


class AsyncError(ctypes.Structure):
    """agile_async_error (agile/ring.h)."""
    _fields_ = [("status", ctypes.c_int32), ("kernel", ctypes.c_uint32), ("seq", ctypes.c_uint64),
                ("site", ctypes.c_uint64), ("addr", ctypes.c_uint64)]


class FftStats(ctypes.Structure):
    """agile_fft_stats (agile/fft.h)."""
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "hits", "misses", "evictions", "create_failures", "entries", "in_use", "work_bytes",
        "max_entries", "max_work_bytes")]


_V, _I, _UI, _SZ = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_size_t
_U32, _U64, _LL, _S = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_longlong, ctypes.c_char_p
_P = ctypes.POINTER

# Every function of libagile's C ABI (the AGILE_API declarations of csrc/include/agile/*.h), as
# name: (result, [arguments]). The only place Python declares them: lib() applies it, and
# tests/py/test_native.py checks it against the headers and the library. Pointers into agile
# pools (device or host addresses) are c_void_p, so callers pass plain integers.
SIGNATURES: dict[str, tuple] = {
    # agile/err.h, agile/defs.h
    "agile_strerror": (_S, [_I]),
    "agile_err_name": (_S, [_I]),
    "agile_err_entry": (_S, [_UI, _P(_I)]),
    "agile_backend_name": (_S, [_I]),
    "agile_mem_stat_name": (_S, [_UI, _P(_S)]),
    # agile/agile.h: sessions
    "agile_connect": (_I, [_P(ConnectOpts), _P(_V)]),
    "agile_disconnect": (None, [_V]),
    "agile_session_info_get": (_I, [_V, _P(SessionInfo)]),
    "agile_ping": (_I, [_V]),
    "agile_status": (_I, [_V, _I, _P(_V)]),
    "agile_free_string": (None, [_V]),
    "agile_object_create": (_I, [_V, _UI, _I, _P(_U64)]),
    "agile_object_destroy": (_I, [_V, _U64]),
    "agile_last_error": (_S, []),
    "agile_raw_request": (_I, [_V, _S, _SZ, _P(_V), _P(_SZ)]),
    # agile/agile.h: memory
    "agile_init": (_I, [_P(ConnectOpts)]),
    "agile_default_client": (_I, [_P(_V)]),
    "agile_malloc": (_V, [_SZ, _I, _V]),
    "agile_free": (None, [_V, _SZ, _I, _V]),
    "agile_empty_cache": (_I, []),
    "agile_stream_synchronized": (None, [_I, _V]),
    "agile_memory_stats": (_I, [_I, _P(_MemStats)]),
    "agile_pool_window": (_I, [_I, _P(_U64), _P(_U64)]),
    # agile/fft.h
    "agile_fft_plan_many": (_I, [_I, _I, _P(_LL), _P(_LL), _LL, _LL, _P(_LL), _LL, _LL, _I, _LL,
                                 _I, _P(_U64)]),
    "agile_fft_exec": (_I, [_U64, _V, _V, _I, _V]),
    "agile_fft_exec_async": (_I, [_U64, _V, _V, _I, _V]),
    "agile_fft_destroy": (_I, [_U64]),
    "agile_fft_destroy_async": (_I, [_U64, _V]),
    "agile_fft_cache_stats": (_I, [_P(FftStats)]),
    "agile_fft_plan_extent": (_I, [_U64, _P(_U64), _P(_U64)]),
    # agile/ring.h
    "agile_ring_open": (_I, [_V, _I]),
    "agile_ring_nop": (_I, [_V, _I, _U64]),
    "agile_ring_nop_async": (_I, [_V, _I]),
    "agile_ring_barrier": (_I, [_V, _I, _V, _P(AsyncError)]),
    "agile_ring_completed": (_U64, [_V, _I]),
    "agile_memcpy_async": (_I, [_V, _V, _SZ, _V]),
    "agile_memset_async": (_I, [_V, _I, _SZ, _V]),
    "agile_signal_async": (_I, [_V, _U32, _V]),
    "agile_wait_async": (_I, [_V, _U32, _V]),
    "agile_ring_mod_op": (_I, [_V, _I, _U32, _U32, _V, _SZ, _V]),
    "agile_barrier": (_I, [_V, _P(_U64)]),
    "agile_last_async_error": (_I, [_P(AsyncError)]),
    "agile_module_load": (_I, [_S, _SZ, _UI, _P(_U64)]),
    "agile_module_unload": (_I, [_U64]),
    "agile_module_function": (_I, [_U64, _S, _P(_U64), _P(_UI)]),
    "agile_function_params": (_I, [_U64, _UI, _P(_U32), _P(_U32), _P(_U32)]),
    "agile_launch": (_I, [_U64, _P(_UI), _P(_UI), _UI, _V, _V, _SZ]),
}

# libagile_aten.so, the torch.fft hook (the AGILE_ATEN_API functions of csrc/aten/fft_aten.cpp).
ATEN_SIGNATURES: dict[str, tuple] = {
    "agile_aten_torch_version": (_S, []),
    "agile_aten_fft_enable": (_I, []),
    "agile_aten_error": (_S, []),
    "agile_aten_fft_disable": (None, []),
    "agile_aten_fft_enabled": (_I, []),
    "agile_aten_set_pool": (_I, [_I, ctypes.c_ulonglong, ctypes.c_ulonglong]),
    "agile_aten_set_allocator": (None, [_I]),
    "agile_aten_fft_stats": (None, [_P(ctypes.c_ulonglong)]),
}


# The #define constants of the public headers that Python passes or compares (the lists are
# read from the library instead; tests/py/test_native.py checks these against the headers).
MODULE_STRICT = 0x1                         # AGILE_MODULE_STRICT (agile/ring.h)
MODULE_DEVICE_SHIFT = 8                     # AGILE_MODULE_DEVICE(d): d << 8
SITE_ASSERT, SITE_TRAP = 0xFFFFFFFF, 0xFFFFFFFE  # AGILE_SITE_ASSERT, AGILE_SITE_TRAP


def bind(L: ctypes.CDLL, signatures: dict) -> ctypes.CDLL:
    """Type L's functions from a signature table (SIGNATURES, ATEN_SIGNATURES)."""
    for name, (res, args) in signatures.items():
        f = getattr(L, name)
        f.restype, f.argtypes = res, args
    return L


def load(path: str | None = None) -> ctypes.CDLL:
    """A typed libagile loaded from path (default: library_path()); lib() is the shared one."""
    L = bind(ctypes.CDLL(path or library_path()), SIGNATURES)
    names = _mem_stat_names(L)
    if not hasattr(_MemStats, "_fields_"):
        _MemStats._fields_ = [(n, ctypes.c_uint64) for n, _ in names]
    elif [f for f, _ in _MemStats._fields_] != [n for n, _ in names]:
        raise ImportError(f"{path}: its agile_mem_stats differs from the library loaded first")
    return L


def _mem_stat_names(L: ctypes.CDLL) -> tuple:
    out, i, key = [], 0, ctypes.c_char_p()
    while (name := L.agile_mem_stat_name(i, ctypes.byref(key))) is not None:
        out.append((name.decode(), key.value.decode()))
        i += 1
    return tuple(out)


@lru_cache(maxsize=None)
def lib() -> ctypes.CDLL:
    """libagile, loaded once and typed from SIGNATURES."""
    return load()


@lru_cache(maxsize=None)
def mem_stat_names() -> tuple:
    """((field, torch.cuda.memory_stats() key), ...) of AGILE_MEM_STAT_LIST, in field order."""
    return _mem_stat_names(lib())


@lru_cache(maxsize=None)
def error_codes() -> dict:
    """{"EINVAL": 1, ...}: AGILE_ERR_LIST as the library has it (agile_err_entry)."""
    L, out, i, code = lib(), {}, 0, ctypes.c_int()
    while (name := L.agile_err_entry(i, ctypes.byref(code))) is not None:
        out[name.decode().removeprefix("AGILE_")] = code.value
        i += 1
    return out


def err_code(name: str) -> int:
    """The value of AGILE_<name> ("EGUARD")."""
    return error_codes()[name]


def backend_name(kind: int) -> str:
    """"host" / "cuda" for an AGILE_BACKEND_KIND_* value, "?" for anything else."""
    n = lib().agile_backend_name(kind)
    return n.decode() if n is not None else "?"


def __getattr__(name: str):
    if name == "MemStats":  # its fields come from the library: load it first
        lib()
        return _MemStats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


# The AgileError subclass of an error code, by its name in AGILE_ERR_LIST.
_ERROR_CLASSES = {"EFAULT": GPUFault, "ERESET": GPUReset, "EWORKER": WorkerGone}


def error_class(code: int) -> type:
    """The exception class check() raises for code."""
    for name, cls in _ERROR_CLASSES.items():
        if error_codes().get(name) == code:
            return cls
    return AgileError


def check(rv: int, what: str) -> None:
    if rv != 0:
        L = lib()
        detail = L.agile_last_error().decode(errors="replace")
        msg = f"{what}: {L.agile_strerror(rv).decode()}" + (f": {detail}" if detail else "")
        raise error_class(rv)(rv, msg)
