"""torch.fft on agile tensors, run by the agile worker's fft module (cuFFT beside protected state).

    import agile_torch
    agile_torch.fft.enable_fft()        # or: with agile_torch.device(0): ...
    with agile_torch.use_pool():
        x = torch.randn(16, 1 << 20, device="cuda", dtype=torch.complex64)
    y = torch.fft.fft(x)                # served by the worker

How it hooks in: ``aten::_fft_c2c``, ``aten::_fft_r2c`` and ``aten::_fft_c2r`` (and their
``.out`` overloads) get a kernel on the **CUDA dispatch key only**, registered with
``torch.library.Library("aten", "IMPL")``. The autograd formulas (Autograd keys) are untouched,
and so is every other key, so autograd, torch.compile (which traces through the Meta kernels and
calls the op at run time) and the functional/out variants keep PyTorch's semantics. The CUDA
kernel that was registered before is captured with ``torch.library.get_kernel`` (torch >= 2.9)
and called, with the dispatch key set it was given, for everything the hook does not serve:
tensors outside this process's agile pool, half precision, more than 3 transformed dims,
empty tensors, two-sided R2C (``torch.fft.fft`` of a real tensor), and R2C/C2R over dims that
start with (0, 1) (PyTorch's cuFFT path does those in several passes with its own output
layout; matching it is not worth a second code path).

What a served call does, mirroring ``_exec_fft`` in aten/src/ATen/native/cuda/SpectralOps.cpp
so the output has the sizes *and strides* PyTorch's cuFFT path produces (torch.compile asserts
them): batch dims first in decreasing stride order, then the transformed dims (C2C: sorted by
decreasing stride; R2C/C2R: in the order given, the halved dim last); the batch collapsed into
one dim; the input made contiguous in the pool (always copied for C2R, which cuFFT overwrites);
a basic-layout plan (cached here and in the worker); the output allocated contiguous in the
pool and viewed back with PyTorch's strides; normalisation applied as PyTorch does
(``none`` / ``1/sqrt(n)`` / ``1/n`` over the signal's numel).

Stream order: the worker runs the transform in its own CUDA context. Until the shared-memory
data plane lands, agile_fft_exec synchronises the current stream first and returns when the
transform is complete (a control-plane round trip per call, ~0.1 ms); correctness first.
"""
from __future__ import annotations

import collections
import ctypes
import math
import threading
import warnings

import torch

from . import _native, memory

__all__ = ["enable_fft", "disable_fft", "is_fft_enabled", "fft_stats"]

_C2C, _R2C, _C2R, _Z2Z, _D2Z, _Z2D = 0x29, 0x2A, 0x2C, 0x69, 0x6A, 0x6C
_FORWARD, _INVERSE = -1, 1
_OPS = ("_fft_c2c", "_fft_c2c.out", "_fft_r2c", "_fft_r2c.out", "_fft_c2r", "_fft_c2r.out")

_lock = threading.Lock()
_lib: torch.library.Library | None = None
_orig: dict[str, object] = {}
# This process's plan handles, least recently used first. Bounded: a held plan cannot be
# evicted from the worker's cache (256 plans by default), so we release the oldest ourselves.
_MAX_PLANS = 128
_plans: "collections.OrderedDict[tuple, int]" = collections.OrderedDict()
_stats = {"served": 0, "fallback": 0, "plans_created": 0}


def _typed_lib() -> ctypes.CDLL:
    L = _native.lib()
    if not getattr(L, "_agile_fft_typed", False):
        LL = ctypes.POINTER(ctypes.c_longlong)
        L.agile_fft_plan_many.restype = ctypes.c_int
        L.agile_fft_plan_many.argtypes = [
            ctypes.c_int, ctypes.c_int, LL, LL, ctypes.c_longlong, ctypes.c_longlong, LL,
            ctypes.c_longlong, ctypes.c_longlong, ctypes.c_int, ctypes.c_longlong, ctypes.c_int,
            ctypes.POINTER(ctypes.c_uint64)]
        L.agile_fft_exec.restype = ctypes.c_int
        L.agile_fft_exec.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_int, ctypes.c_void_p]
        L.agile_fft_destroy.restype = ctypes.c_int
        L.agile_fft_destroy.argtypes = [ctypes.c_uint64]
        L.agile_fft_cache_stats.restype = ctypes.c_int
        L.agile_fft_cache_stats.argtypes = [ctypes.c_void_p]
        L._agile_fft_typed = True
    return L


def _plan(dev: int, typ: int, n: list[int], batch: int) -> tuple[tuple, int]:
    key = (dev, typ, tuple(n), batch)
    with _lock:
        h = _plans.get(key)
        if h is not None:
            _plans.move_to_end(key)
            return key, h
    L = _typed_lib()
    arr = (ctypes.c_longlong * len(n))(*n)
    out = ctypes.c_uint64()
    _native.check(L.agile_fft_plan_many(dev, len(n), arr, None, 0, 0, None, 0, 0, typ, batch, 0,
                                        ctypes.byref(out)), "agile_fft_plan_many")
    evicted = []
    with _lock:
        if key in _plans:  # a racing thread made it first: keep one
            evicted.append(out.value)
            h = _plans[key]
        else:
            h = _plans[key] = out.value
            _stats["plans_created"] += 1
            while len(_plans) > _MAX_PLANS:
                evicted.append(_plans.popitem(last=False)[1])
    for e in evicted:
        L.agile_fft_destroy(e)
    return key, h


def _run(dev: int, typ: int, n: list[int], batch: int, src: int, dst: int, direction: int,
         stream: int) -> None:
    L = _typed_lib()
    for attempt in (0, 1):
        key, h = _plan(dev, typ, n, batch)
        rv = L.agile_fft_exec(h, src, dst, direction, stream)
        if rv == 4 and attempt == 0:  # AGILE_EHANDLE: evicted by another thread meanwhile
            with _lock:
                if _plans.get(key) == h:
                    del _plans[key]
            continue
        _native.check(rv, "agile_fft_exec")
        return


def _served(t: torch.Tensor, dtypes: tuple, dim) -> bool:
    return (t.is_cuda and t.dtype in dtypes and 0 < len(dim) <= 3 and t.numel() > 0
            and memory.is_agile_tensor(t))


def _alloc(size, dtype, device) -> torch.Tensor:
    """A contiguous tensor in the agile pool of `device`, whatever the caller's allocator."""
    if memory.is_enabled():
        return torch.empty(size, dtype=dtype, device=device)
    with torch.cuda.use_mem_pool(memory.pool(device.index), device=device.index):
        return torch.empty(size, dtype=dtype, device=device)


def _to_pool_contiguous(x: torch.Tensor, force_copy: bool) -> torch.Tensor:
    if not force_copy and x.is_contiguous() and memory.is_agile_tensor(x):
        return x
    y = _alloc(x.shape, x.dtype, x.device)
    y.copy_(x)
    return y


def _exec(self: torch.Tensor, out_sizes: list[int], dims: list[int], typ: int, direction: int,
          out_dtype: torch.dtype, clone_input: bool) -> torch.Tensor:
    """PyTorch's cuFFT _exec_fft, with the transform run by the worker."""
    ndim = self.dim()
    strides = self.stride()
    tset = set(dims)
    batch = sorted((d for d in range(ndim) if d not in tset), key=lambda d: -strides[d])
    perm = batch + list(dims)
    nb = len(batch)
    x = self.permute(perm)
    x = x.reshape([-1] + list(x.shape[nb:]))
    bsize = x.shape[0]
    signal = [max(x.shape[1 + i], out_sizes[d]) for i, d in enumerate(dims)]
    x = _to_pool_contiguous(x, clone_input)
    bout = [bsize] + [out_sizes[d] for d in dims]
    out = _alloc(bout, out_dtype, self.device)
    _run(self.device.index, typ, signal, bsize, x.data_ptr(), out.data_ptr(), direction,
         torch.cuda.current_stream(self.device).cuda_stream)
    # Back to the original batch shape and dim order, with PyTorch's strides.
    ostr = out.stride()
    out_strides = [0] * ndim
    numel = 1
    for i in range(nb - 1, -1, -1):
        out_strides[perm[i]] = numel * ostr[0]
        numel *= out_sizes[perm[i]]
    for i in range(nb, ndim):
        out_strides[perm[i]] = ostr[1 + i - nb]
    return out.as_strided(out_sizes, out_strides, out.storage_offset())


def _normalize(out: torch.Tensor, normalization: int, sizes, dims) -> torch.Tensor:
    if normalization == 0:
        return out
    n = 1
    for d in dims:
        n *= sizes[d]
    return out.mul_(1.0 / (math.sqrt(n) if normalization == 1 else n))


def _wrap(dims, ndim):
    return [d % ndim for d in dims]


def _fallback(name, ks, *args, **kwargs):
    _stats["fallback"] += 1
    return _orig[name].call_boxed(ks, *args, **kwargs)


def _c2c_impl(self, dim, normalization, forward):
    dims = _wrap(dim, self.dim())
    st = self.stride()
    dims = sorted(dims, key=lambda d: -st[d])  # _sort_dims: decreasing input stride
    typ = _C2C if self.dtype == torch.complex64 else _Z2Z
    out = _exec(self, list(self.shape), dims, typ, _FORWARD if forward else _INVERSE, self.dtype,
                False)
    _stats["served"] += 1
    return _normalize(out, normalization, self.shape, dims)


def _r2c_impl(self, dim, normalization):
    dims = _wrap(dim, self.dim())
    out_sizes = list(self.shape)
    out_sizes[dims[-1]] = self.shape[dims[-1]] // 2 + 1
    typ, odt = (_R2C, torch.complex64) if self.dtype == torch.float32 else (_D2Z, torch.complex128)
    out = _exec(self, out_sizes, dims, typ, _FORWARD, odt, False)
    _stats["served"] += 1
    return _normalize(out, normalization, self.shape, dims)


def _c2r_impl(self, dim, normalization, last_dim_size):
    dims = _wrap(dim, self.dim())
    out_sizes = list(self.shape)
    out_sizes[dims[-1]] = int(last_dim_size)
    typ, odt = (_C2R, torch.float32) if self.dtype == torch.complex64 else (_Z2D, torch.float64)
    # cuFFT's C2R overwrites its input: run on a private contiguous copy, as PyTorch does
    # (its batch-dim order then follows the copy's strides, so ours does too).
    tmp = _to_pool_contiguous(self, True)
    out = _exec(tmp, out_sizes, dims, typ, _INVERSE, odt, False)
    _stats["served"] += 1
    return _normalize(out, normalization, out_sizes, dims)


def _optimized_path(dims) -> bool:
    # PyTorch's use_optimized_cufft_path: otherwise it runs several passes (other layout).
    return not (len(dims) > 3 or (len(dims) >= 2 and dims[0] == 0 and dims[1] == 1))


_CPLX = (torch.complex64, torch.complex128)
_REAL = (torch.float32, torch.float64)


def _into(out: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    if out.shape != r.shape:
        out.resize_(r.shape)
    return out.copy_(r)


def k_c2c(ks, self, dim, normalization, forward):
    if not _served(self, _CPLX, dim):
        return _fallback("_fft_c2c", ks, self, dim, normalization, forward)
    return _c2c_impl(self, dim, normalization, forward)


def k_c2c_out(ks, self, dim, normalization, forward, *, out):
    if not _served(self, _CPLX, dim):
        return _fallback("_fft_c2c.out", ks, self, dim, normalization, forward, out=out)
    return _into(out, _c2c_impl(self, dim, normalization, forward))


def _r2c_ok(self, dim, onesided):
    return onesided and _served(self, _REAL, dim) and _optimized_path(_wrap(dim, self.dim()))


def k_r2c(ks, self, dim, normalization, onesided):
    if not _r2c_ok(self, dim, onesided):
        return _fallback("_fft_r2c", ks, self, dim, normalization, onesided)
    return _r2c_impl(self, dim, normalization)


def k_r2c_out(ks, self, dim, normalization, onesided, *, out):
    if not _r2c_ok(self, dim, onesided):
        return _fallback("_fft_r2c.out", ks, self, dim, normalization, onesided, out=out)
    return _into(out, _r2c_impl(self, dim, normalization))


def _c2r_ok(self, dim):
    return _served(self, _CPLX, dim) and _optimized_path(_wrap(dim, self.dim()))


def k_c2r(ks, self, dim, normalization, last_dim_size):
    if not _c2r_ok(self, dim):
        return _fallback("_fft_c2r", ks, self, dim, normalization, last_dim_size)
    return _c2r_impl(self, dim, normalization, last_dim_size)


def k_c2r_out(ks, self, dim, normalization, last_dim_size, *, out):
    if not _c2r_ok(self, dim):
        return _fallback("_fft_c2r.out", ks, self, dim, normalization, last_dim_size, out=out)
    return _into(out, _c2r_impl(self, dim, normalization, last_dim_size))


_KERNELS = {"_fft_c2c": k_c2c, "_fft_c2c.out": k_c2c_out, "_fft_r2c": k_r2c,
            "_fft_r2c.out": k_r2c_out, "_fft_c2r": k_c2r, "_fft_c2r.out": k_c2r_out}


def enable_fft(quiet: bool = False) -> bool:
    """Serve torch.fft on agile tensors through the worker (idempotent). Returns whether the
    hook is on. Needs torch.library.get_kernel (torch >= 2.9) to keep the original CUDA kernels
    reachable; without it, raises RuntimeError (or returns False when quiet)."""
    global _lib
    with _lock:
        if _lib is not None:
            return True
        if not hasattr(torch.library, "get_kernel"):
            if quiet:
                return False
            raise RuntimeError("agile_torch.fft needs torch.library.get_kernel (torch >= 2.9) to "
                               f"keep PyTorch's own cuFFT kernels for other tensors; torch "
                               f"{torch.__version__} lacks it")
        orig = {name: torch.library.get_kernel(f"aten::{name}", "CUDA") for name in _OPS}
        lib = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():
            # "Overriding a previously registered kernel": that is the point.
            warnings.simplefilter("ignore")
            for name in _OPS:
                try:  # another Python registration on these keys is ours to replace
                    lib.impl(name, _KERNELS[name], "CUDA", with_keyset=True, allow_override=True)
                except TypeError:  # torch without allow_override
                    lib.impl(name, _KERNELS[name], "CUDA", with_keyset=True)
        _orig.clear()
        _orig.update(orig)
        _lib = lib
        return True


def disable_fft() -> None:
    """Put PyTorch's own CUDA kernels back and release this process's plans."""
    global _lib
    with _lock:
        if _lib is None:
            return
        _lib._destroy()
        _lib = None
        plans = list(_plans.values())
        _plans.clear()
    for h in plans:
        _typed_lib().agile_fft_destroy(h)


def is_fft_enabled() -> bool:
    return _lib is not None


def fft_stats() -> dict:
    """Calls served by the worker / passed to PyTorch's kernels, plans made here, and the
    worker's plan cache counters (shared by all tenants)."""
    out = dict(_stats)
    st = (ctypes.c_uint64 * 9)()
    if _typed_lib().agile_fft_cache_stats(st) == 0:
        names = ("hits", "misses", "evictions", "create_failures", "entries", "in_use",
                 "work_bytes", "max_entries", "max_work_bytes")
        out["worker_cache"] = dict(zip(names, list(st)))
    return out
