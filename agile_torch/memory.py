"""Tensors from per-tenant pools that the agile worker owns (torch.cuda.MemPool / allocator)."""
from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Callable, Iterator

import torch

from . import _native
# The torch-free part (connecting, session info, status) lives in session.py.
from .session import _client, init, init_default, session_info, worker_status  # noqa: F401

_lock = threading.Lock()
_allocator = None          # one CUDAPluggableAllocator for the whole process (kept alive)
_pools: dict[int, "torch.cuda.MemPool"] = {}
_enabled = False

# What follows the pools (agile_torch.fft: the torch.fft hook), registered by its module when
# it is imported (importing agile_torch's pool functions imports it): this module calls the
# hooks and never imports them.
_on_pool: list[Callable[[int, "torch.cuda.MemPool"], None]] = []  # pool() made one for a device
_on_enable: list[Callable[[], None]] = []                         # enable() made agile the allocator
_auto_enable: list[Callable[[], None]] = []                       # pool()/enable() with fft=True


def add_hooks(on_pool: Callable[[int, "torch.cuda.MemPool"], None], on_enable: Callable[[], None],
              auto_enable: Callable[[], None]) -> None:
    """Register a feature that follows the pools (agile_torch.fft does, on import)."""
    with _lock:
        _on_pool.append(on_pool)
        _on_enable.append(on_enable)
        _auto_enable.append(auto_enable)


def _call(hooks: list, *args) -> None:
    with _lock:
        todo = list(hooks)
    for h in todo:
        h(*args)


def _get_allocator():
    global _allocator
    with _lock:
        if _allocator is None:
            init_default()
            _allocator = torch.cuda.memory.CUDAPluggableAllocator(
                _native.library_path(), "agile_malloc", "agile_free")
        return _allocator


def _device_index(device) -> int:
    if device is None:
        return torch.cuda.current_device() if torch.cuda.is_initialized() else 0
    if isinstance(device, int):
        return device
    d = torch.device(device)
    return d.index if d.index is not None else 0


def pool(device=None, fft: bool = True) -> "torch.cuda.MemPool":
    """A torch.cuda.MemPool whose memory comes from this tenant's agile pool on `device`.

    Usable at any time (before or after CUDA initialises). PyTorch's caching, stats and OOM
    behaviour stay as they are; the pool's segments are leased from the worker. With fft
    (the default) it also turns on the torch.fft hook (agile_torch.enable_fft) unless
    disable_fft() turned it off.
    """
    idx = _device_index(device)
    alloc = _get_allocator()
    with _lock:
        made = idx not in _pools
        if made:
            _pools[idx] = torch.cuda.MemPool(alloc.allocator())
        p = _pools[idx]
    if made:
        _call(_on_pool, idx, p)  # the torch.fft hook allocates its outputs in this pool
    if fft:
        _call(_auto_enable)
    return p


def pools() -> dict:
    """The MemPools pool() has made so far, by device."""
    with _lock:
        return dict(_pools)


def _oom_message(idx: int, err: BaseException) -> str:
    s = memory_stats(idx)
    info = session_info()
    detail = _native.lib().agile_last_error().decode(errors="replace")
    return (f"agile pool of tenant {info['tenant']} on GPU {idx} is full: quota "
            f"{s['quota_bytes']} bytes, {s['reserved_bytes.all.current']} leased"
            + (f" ({detail})" if detail else "") + f". PyTorch said: {err}")


@contextlib.contextmanager
def use_pool(device=None, fft: bool = True) -> Iterator["torch.cuda.MemPool"]:
    """`with agile_torch.use_pool():` CUDA allocations of this thread come from the agile pool.

    A full pool raises torch.OutOfMemoryError naming the tenant's quota. fft: as for pool().
    """
    idx = _device_index(device)
    p = pool(idx, fft)
    try:
        with torch.cuda.use_mem_pool(p, device=idx):
            yield p
    except torch.OutOfMemoryError as e:
        raise torch.OutOfMemoryError(_oom_message(idx, e)) from e


def enable(fft: bool = True) -> None:
    """Route every CUDA allocation of this process to agile (change_current_allocator); with
    fft (the default) also turn on the torch.fft hook (agile_torch.enable_fft).

    Must run before CUDA initialises: PyTorch cannot swap an allocator that has already
    allocated. After that, use agile_torch.pool() / use_pool() instead.
    """
    global _enabled
    if _enabled:
        return
    if torch.cuda.is_initialized():
        raise RuntimeError(
            "agile_torch.enable() must be called before CUDA is initialised (before the first "
            "CUDA tensor, torch.cuda call or CUDA-using import); PyTorch cannot swap an "
            "allocator that has already allocated. Call it at the top of your script, or use "
            "agile_torch.pool() / agile_torch.use_pool(), which work at any time.")
    torch.cuda.memory.change_current_allocator(_get_allocator())
    _enabled = True
    _call(_on_enable)
    if fft:
        _call(_auto_enable)


def is_enabled() -> bool:
    return _enabled


def memory_stats(device=None) -> dict:
    """This process's agile pool counters for `device`, with torch.cuda.memory_stats() keys
    where one applies (plus agile's own: quota_bytes, window_bytes, num_grows...)."""
    idx = _device_index(device)
    s = _native.MemStats()
    _native.check(_native.lib().agile_memory_stats(idx, ctypes.byref(s)), "memory_stats")
    # the keys: AGILE_MEM_STAT_LIST's (agile/defs.h), read from the library
    return {key: getattr(s, field) for field, key in _native.mem_stat_names()}


def empty_cache() -> None:
    """Give fully unused leased extents back to the worker (after torch.cuda.empty_cache()
    has returned PyTorch's cached blocks to agile)."""
    _native.check(_native.lib().agile_empty_cache(), "agile_empty_cache")


def pool_window(device=None) -> tuple[int, int] | None:
    """(base, size) of this process's window on `device`, or None before its first use."""
    b, n = ctypes.c_uint64(), ctypes.c_uint64()
    if _native.lib().agile_pool_window(_device_index(device), ctypes.byref(b), ctypes.byref(n)) != 0:
        return None
    return b.value, n.value


def is_agile_tensor(t: "torch.Tensor") -> bool:
    """True when t's storage lies in this process's agile pool (its tenant window)."""
    if not t.is_cuda:
        return False
    w = pool_window(t.device.index)
    if w is None:
        return False
    p = t.untyped_storage().data_ptr()
    return w[0] <= p < w[0] + w[1]


class device(str):
    """The agile device: `with agile_torch.device(0):` routes the CUDA allocations made in the
    block (on this thread) to the agile pool of GPU 0 and turns on the worker-served features.

    It is also the name of the underlying CUDA device ("cuda:0"), so it works wherever
    PyTorch accepts a device: `torch.randn(n, device=dev)`.
    """

    def __new__(cls, index: int = 0):
        obj = super().__new__(cls, f"cuda:{int(index)}")
        obj.index = int(index)
        obj._ctx = None
        return obj

    def __enter__(self):
        self._ctx = use_pool(self.index)  # pool(): turns on the torch.fft hook
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        ctx, self._ctx = self._ctx, None
        return ctx.__exit__(*exc)

    def __repr__(self):
        return f"agile_torch.device({self.index})"
