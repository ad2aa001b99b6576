"""Guarded Triton kernels: compiled here, run in the agile worker beside protected state.

    import agile_torch, triton, triton.language as tl

    @agile_torch.guarded
    @triton.jit
    def add(x, y, out, n, BLOCK: tl.constexpr):
        ...

    add[(triton.cdiv(n, 1024),)](x, y, out, n, BLOCK=1024)      # like a Triton launch
    agile_torch.triton.launch(add_jit, grid, x, y, out, n, BLOCK=1024)   # the same, explicit

Triton compiles the kernel locally (`kernel.warmup`); its PTX goes to the worker once per
(PTX, device, mode) (the worker's guard fences every global access to this tenant's window,
verifies and compiles it, with a disk cache), and each launch is one command on the client's
shared-memory ring, ordered with the current torch stream on the GPU (no host sync). Tensor
arguments must live in an agile pool (`agile_torch.pool()` / `enable()`); pointers are passed
as this process's addresses and translated by the guard's fence.

Asynchronous errors (a strict-mode out-of-window access, a time-limit overrun) are reported
by `agile_torch.triton.synchronize()`, which raises `GuardViolation` / `AgileError`.

torch and triton are imported on first use only.
"""
from __future__ import annotations

import ctypes
import hashlib
import struct
import threading
from typing import Any, Callable, Sequence

from . import _native

_lock = threading.Lock()
_modules: dict[tuple, int] = {}
_functions: dict[tuple, tuple[int, list[int], list[int], int]] = {}


class GuardViolation(_native.AgileError):
    """A strict-mode guarded kernel tried to access memory outside this tenant's window."""

    def __init__(self, code: int, what: str, kernel: int, site: int, addr: int):
        super().__init__(code, what)
        self.kernel, self.site, self.addr = kernel, site, addr


def _check(rv: int, what: str) -> None:
    _native.check(rv, what)


def _module(ptx: bytes, device: int, strict: bool) -> int:
    key = (hashlib.sha256(ptx).digest(), device, strict)
    with _lock:
        h = _modules.get(key)
        if h is None:
            out = ctypes.c_uint64()
            flags = ((_native.MODULE_STRICT if strict else 0)
                     | (device << _native.MODULE_DEVICE_SHIFT))
            _check(_native.lib().agile_module_load(ptx, len(ptx), flags, ctypes.byref(out)),
                   "loading the guarded kernel into the agile worker")
            h = _modules[key] = out.value
        return h


def _function(module: int, name: str):
    key = (module, name)
    with _lock:
        f = _functions.get(key)
        if f is None:
            L = _native.lib()
            h, n = ctypes.c_uint64(), ctypes.c_uint()
            _check(L.agile_module_function(module, name.encode(), ctypes.byref(h), ctypes.byref(n)),
                   f"kernel {name}")
            sizes, offs = (ctypes.c_uint32 * max(n.value, 1))(), (ctypes.c_uint32 * max(n.value, 1))()
            total = ctypes.c_uint32()
            _check(L.agile_function_params(h.value, n.value, sizes, offs, ctypes.byref(total)),
                   f"kernel {name} parameters")
            f = _functions[key] = (h.value, list(sizes)[:n.value], list(offs)[:n.value], total.value)
        return f


def _compile(kernel, grid, args, meta):
    """Triton 3.6: warm up (compile without launching) for these arguments."""
    try:
        return kernel.warmup(*args, grid=grid, **meta)
    except TypeError:  # older signature: warmup(*args, grid=..., **kwargs) only with a tuple grid
        g = grid(meta) if callable(grid) else grid
        return kernel.warmup(*args, grid=tuple(g), **meta)


def _param_spec(kernel, compiled) -> list[tuple[str, str]]:
    """(name, Triton type) of the parameters the PTX entry really has, in order: constexprs
    and arguments Triton specialised into constants are not passed."""
    names = list(getattr(kernel, "arg_names", []))
    sig = getattr(getattr(compiled, "src", None), "signature", None)
    if not isinstance(sig, dict):
        raise RuntimeError("this Triton version does not expose compiled.src.signature")
    if sig and all(isinstance(k, int) for k in sig):  # older Tritons key it by position
        sig = {names[k]: v for k, v in sig.items() if k < len(names)}
    consts = getattr(compiled.src, "constexprs", None) or getattr(compiled.src, "constants", None) or {}
    const_names = {names[k[0] if isinstance(k, tuple) else k] if isinstance(k, (int, tuple)) else k
                   for k in consts if not isinstance(k, (int, tuple)) or
                   (k[0] if isinstance(k, tuple) else k) < len(names)}
    return [(n, str(sig[n])) for n in names
            if sig.get(n) is not None and sig[n] != "constexpr" and n not in const_names]


def _runtime_params(kernel, compiled, args, meta, spec=None):
    """The values and Triton types of the PTX entry's parameters for this call."""
    names = list(getattr(kernel, "arg_names", []))
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in meta.items() if k in names})
    if spec is None:
        spec = _param_spec(kernel, compiled)
    return [(bound[n], ty) for n, ty in spec if n in bound]


def _pack(values, sizes, offs, total, in_pool=None) -> bytes:
    """The LAUNCH args buffer: each value at the worker's offset for its PTX parameter."""
    in_pool = in_pool or _in_pool
    buf = bytearray(total)
    for (v, ty), size, off in zip(values, sizes, offs):
        if hasattr(v, "data_ptr") or ty.startswith("*"):
            ptr = 0 if v is None else (v.data_ptr() if hasattr(v, "data_ptr") else int(v))
            if ptr and not in_pool(ptr):
                raise ValueError(f"tensor argument at {ptr:#x} is not in this process's agile pool "
                                 "(allocate it under agile_torch.pool() or enable())")
            struct.pack_into("<Q", buf, off, ptr)
        elif ty.startswith("fp") or ty.startswith("bf") or isinstance(v, float):
            if size == 8:
                struct.pack_into("<d", buf, off, float(v))
            elif size == 4:
                struct.pack_into("<f", buf, off, float(v))
            elif ty == "bf16":
                struct.pack_into("<H", buf, off, struct.unpack("<I", struct.pack("<f", float(v)))[0] >> 16)
            else:
                struct.pack_into("<e", buf, off, float(v))
        else:
            iv = int(v)
            fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
            struct.pack_into("<" + fmt, buf, off, iv & ((1 << (8 * size)) - 1))
    return bytes(buf)


_windows: dict[int, tuple[int, int]] = {}  # a device's window never moves once it exists


def _window(dev: int) -> tuple[int, int] | None:
    w = _windows.get(dev)
    if w is None:
        from .memory import pool_window
        w = pool_window(dev)
        if w:
            _windows[dev] = w
    return w


def _in_pool(ptr: int, dev: int | None = None) -> bool:
    if dev is None:
        import torch
        dev = torch.cuda.current_device()
    w = _window(dev)
    return bool(w) and w[0] <= ptr < w[0] + w[1]


def _device_and_stream():
    """The current CUDA device and its current torch stream (raw handle), the way Triton's own
    launcher reads them (no Python-level torch.cuda calls on the launch path)."""
    import torch
    C = torch._C
    if hasattr(C, "_cuda_getDevice") and hasattr(C, "_cuda_getCurrentRawStream"):
        dev = C._cuda_getDevice()
        return dev, C._cuda_getCurrentRawStream(dev)
    dev = torch.cuda.current_device()
    return dev, torch.cuda.current_stream(dev).cuda_stream


# What a launch needs that depends only on the compiled kernel, the device and the mode:
# (compiled, function handle, param sizes, offsets, args size, param spec, block, shared).
_plans: dict[tuple, tuple] = {}


def _launch_plan(kernel, compiled, dev: int, strict: bool) -> tuple:
    key = (id(compiled), dev, strict)
    p = _plans.get(key)
    if p is not None and p[0] is compiled:
        return p
    md = compiled.metadata
    if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
        raise NotImplementedError("kernels that need Triton's global/profile scratch memory")
    if getattr(md, "num_ctas", 1) not in (0, 1):
        raise NotImplementedError("thread-block clusters (num_ctas > 1)")
    ptx = compiled.asm["ptx"]
    ptx = ptx.encode() if isinstance(ptx, str) else bytes(ptx)
    fn, sizes, offs, total = _function(_module(ptx, dev, strict), md.name)
    p = (compiled, fn, sizes, offs, total, _param_spec(kernel, compiled), 32 * md.num_warps,
         md.shared)
    with _lock:
        _plans[key] = p
    return p


def launch(kernel, grid, *args, strict: bool = False, **meta) -> None:
    """Launch the @triton.jit `kernel` on `grid` (a tuple or a callable of the meta dict) in the
    agile worker, on the current torch stream. Returns once the launch is in the ring."""
    compiled = _compile(kernel, grid, args, meta)
    dev, stream = _device_and_stream()
    _, fn, sizes, offs, total, spec, nthreads, shared = _launch_plan(kernel, compiled, dev, strict)
    values = _runtime_params(kernel, compiled, args, meta, spec)
    # Triton appends two hidden pointers (global_scratch, profile_scratch): 0 here
    while len(values) < len(sizes):
        values.append((0, "*i8"))
    if len(values) != len(sizes):
        raise RuntimeError(f"{compiled.metadata.name}: {len(values)} arguments for {len(sizes)} "
                           "PTX parameters")
    params = _pack(values, sizes, offs, total, lambda p: _in_pool(p, dev))
    g = grid({**dict(zip(kernel.arg_names, args)), **meta}) if callable(grid) else grid
    g = tuple(int(x) for x in g) + (1,) * (3 - len(g))
    if min(g) <= 0:
        return  # an empty grid launches nothing, as in Triton
    gridc = (ctypes.c_uint * 3)(*g)
    block = (ctypes.c_uint * 3)(nthreads, 1, 1)
    _check(_native.lib().agile_launch(fn, gridc, block, shared, ctypes.c_void_p(stream), params,
                                      len(params)),
           f"launching {compiled.metadata.name}")


def synchronize(device: int | None = None) -> None:
    """Wait for this process's guarded launches on device and raise their first asynchronous
    error (GuardViolation for a strict-mode out-of-window access)."""
    import torch
    dev = torch.cuda.current_device() if device is None else device
    c = ctypes.c_void_p()
    _check(_native.lib().agile_default_client(ctypes.byref(c)), "agile client")
    e = _native.AsyncError()
    stream = torch.cuda.current_stream().cuda_stream
    rv = _native.lib().agile_ring_barrier(c, dev, ctypes.c_void_p(stream), ctypes.byref(e))
    eguard = _native.err_code("EGUARD")
    if rv == eguard and e.site in (_native.SITE_ASSERT, _native.SITE_TRAP):
        what = "failed a device assert" if e.site == _native.SITE_ASSERT else "trapped"
        raise GuardViolation(rv, f"guarded kernel {e.kernel} {what} at PTX line {e.addr}; "
                                 f"that thread ended", e.kernel, e.site, e.addr)
    if rv == eguard:
        raise GuardViolation(rv, f"guarded kernel {e.kernel} accessed {e.addr:#x} outside the "
                                 f"tenant's window (site {e.site})", e.kernel, e.site, e.addr)
    _check(rv, "guarded launches")


class Guarded:
    """A @triton.jit function whose launches go through the agile worker: `k[grid](*args)`."""

    def __init__(self, fn, strict: bool = False):
        self.fn, self.strict = fn, strict
        self.__name__ = getattr(fn, "__name__", "guarded")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __getitem__(self, grid) -> Callable[..., None]:
        return lambda *args, **meta: launch(self.fn, grid, *args, strict=self.strict, **meta)

    def run(self, *args, grid, **meta) -> None:
        launch(self.fn, grid, *args, strict=self.strict, **meta)


def guarded(fn=None, *, strict: bool = False):
    """Decorator over a @triton.jit function: `@agile_torch.guarded` or
    `@agile_torch.guarded(strict=True)` (report out-of-window accesses instead of only
    confining them)."""
    if fn is None:
        return lambda f: Guarded(f, strict)
    return Guarded(fn, strict)


__all__ = ["launch", "guarded", "synchronize", "Guarded", "GuardViolation"]
