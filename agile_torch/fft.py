"""torch.fft on agile tensors, run by the agile worker's fft module (cuFFT beside protected state).

    import agile_torch
    agile_torch.enable_fft()            # also turned on by enable(), pool(), use_pool(), device()
    with agile_torch.use_pool():
        x = torch.randn(16, 1 << 20, device="cuda", dtype=torch.complex64)
    y = torch.fft.fft(x)                # served by the worker

The hook itself is C++ (csrc/aten/fft_aten.cpp, built into libagile_aten.so when PyTorch's
headers are present): ``aten::_fft_c2c``, ``aten::_fft_r2c`` and ``aten::_fft_c2r`` and their
``.out`` overloads get a kernel on the **CUDA dispatch key only**, so autograd, torch.compile
(Meta/Fake kernels) and every other key keep PyTorch's semantics. PyTorch's own CUDA kernels are
captured first and serve what the hook does not: tensors outside this process's agile pool,
half precision, more than 3 transformed dims, empty tensors, two-sided R2C, and R2C/C2R over
dims starting with (0, 1). Served calls give the sizes and strides PyTorch's cuFFT path gives
and are posted on libagile's command ring, ordered with the current CUDA stream without a host
synchronisation (agile_fft_exec_async); a refusal by the worker (which the hook's own checks
make unlikely) leaves the output unwritten and is raised by the next barrier of this process,
e.g. agile_torch.triton.synchronize().

This module loads the library, tells it where this process's agile pools are (the MemPool of
each device, or that enable() made agile the allocator) and reads its counters.
"""
from __future__ import annotations

import ctypes
import os
import re
import threading
import warnings

import torch

from . import _native, memory

__all__ = ["enable_fft", "disable_fft", "is_fft_enabled", "fft_stats"]

_lock = threading.Lock()
_aten: ctypes.CDLL | None = None
_unavailable: str | None = None  # why the hook cannot load (asked once)
_user_off = False                # disable_fft() was called: pool()/enable() leave it off


def hook_library_path() -> str | None:
    """libagile_aten.so beside libagile.so ($AGILE_ATEN_LIBRARY first), or None if not built."""
    cands = [os.environ.get("AGILE_ATEN_LIBRARY", ""),
             os.path.join(os.path.dirname(_native.library_path()), "libagile_aten.so")]
    return next((c for c in cands if c and os.path.exists(c)), None)


def _release(version: str) -> str:
    """major.minor.patch of a torch version ("2.11.0+cu130", "2.11.0a0+git...": "2.11.0")."""
    m = re.match(r"\d+\.\d+\.\d+", version)
    return m.group(0) if m else version


def _load() -> ctypes.CDLL:
    global _aten, _unavailable
    if _aten is None:
        if _unavailable:
            raise RuntimeError(_unavailable)
        path = hook_library_path()
        if path is None:
            _unavailable = ("agile_torch.fft: libagile_aten.so was not built (it needs PyTorch's "
                            "headers when agile is built: `pip install .` or scripts/build with "
                            "torch importable)")
            raise RuntimeError(_unavailable)
        _native.lib()  # libagile first: the hook links against the loaded copy
        try:
            L = ctypes.CDLL(path)
        except OSError as e:
            _unavailable = f"agile_torch.fft: cannot load {path}: {e}"
            raise RuntimeError(_unavailable) from e
        version = "agile_aten_torch_version"  # first: a hook of another build may lack the rest
        _native.bind(L, {version: _native.ATEN_SIGNATURES[version]})
        built = L.agile_aten_torch_version().decode()
        if _release(built) != _release(torch.__version__):
            _unavailable = (f"agile_torch.fft: {path} was built against torch {built}, this is "
                            f"torch {torch.__version__}: rebuild agile (pip install . / "
                            "scripts/build)")
            raise RuntimeError(_unavailable)
        _aten = _native.bind(L, _native.ATEN_SIGNATURES)
    return _aten


def _on_pool(device: int, pool: "torch.cuda.MemPool") -> None:
    """memory.pool() made `pool` for `device`: the hook allocates its outputs there."""
    if _aten is not None:
        a, b = pool.id
        _aten.agile_aten_set_pool(device, a, b)


def _on_enable() -> None:
    """memory.enable() made agile the CUDA allocator."""
    if _aten is not None:
        _aten.agile_aten_set_allocator(1)


def _auto_enable() -> None:
    """pool() / use_pool() / enable() with fft=True: on, unless disable_fft() turned it off
    or the hook cannot load (said once, as a warning)."""
    if not _user_off and _unavailable is None and not is_fft_enabled():
        enable_fft(quiet=True)


def enable_fft(quiet: bool = False) -> bool:
    """Serve torch.fft on agile tensors through the worker (idempotent). Returns whether the
    hook is on. Without libagile_aten.so (or one built for another torch), or when the hook
    cannot be registered, raises RuntimeError (quiet: warns once and returns False)."""
    global _user_off, _unavailable
    with _lock:
        _user_off = False
        try:
            L = _load()
            if L.agile_aten_fft_enable() != 0:  # this torch's dispatcher refused: it will again
                _unavailable = "agile_torch.fft: " + L.agile_aten_error().decode()
                raise RuntimeError(_unavailable)
        except RuntimeError as e:
            if not quiet:
                raise RuntimeError(str(e)) from e
            warnings.warn(f"torch.fft stays with PyTorch: {e}", RuntimeWarning, stacklevel=3)
            return False
        L.agile_aten_set_allocator(1 if memory.is_enabled() else 0)
        for dev, pool in memory.pools().items():
            a, b = pool.id
            L.agile_aten_set_pool(dev, a, b)
        return True


def disable_fft() -> None:
    """Put PyTorch's own CUDA kernels back and release this process's plans. It stays off
    (pool(), use_pool() and enable() do not turn it back on) until enable_fft()."""
    global _user_off
    with _lock:
        _user_off = True
        if _aten is not None:
            _aten.agile_aten_fft_disable()


def is_fft_enabled() -> bool:
    return _aten is not None and bool(_aten.agile_aten_fft_enabled())


def fft_stats() -> dict:
    """Calls served by the worker / passed to PyTorch's kernels, plans made and held by this
    process, plans the worker could not make (those calls went to PyTorch's kernels), and the
    worker's plan cache counters (shared by all tenants)."""
    v = (ctypes.c_ulonglong * 5)()
    if _aten is not None:
        _aten.agile_aten_fft_stats(v)
    out = dict(zip(("served", "fallback", "plans_created", "plans_held", "plan_failures"),
                   list(v)))
    st = _native.FftStats()
    if _native.lib().agile_fft_cache_stats(ctypes.byref(st)) == 0:
        out["worker_cache"] = {n: getattr(st, n) for n, _ in _native.FftStats._fields_}
    return out


memory.add_hooks(_on_pool, _on_enable, _auto_enable)
