"""agile_torch: PyTorch tensors from per-tenant pools owned by the agile worker.

    import agile_torch
    with agile_torch.use_pool():          # or agile_torch.enable() before CUDA initialises
        x = torch.randn(1 << 20, device="cuda")

See README.md for the worker, the protections and the numbers. The PyTorch-facing names are
loaded on first use, so `python3 -m agile_torch.demo` also runs where PyTorch is absent, and
so do agile_torch.worker_status(), session_info() and init() (session.py, torch-free).
"""
from ._native import AgileError, GPUFault, GPUReset, WorkerGone, library_path

# Torch-free (session.py): usable where PyTorch is not installed.
_SESSION = ("init", "session_info", "worker_status")
_MEMORY = ("device", "empty_cache", "enable", "is_agile_tensor", "is_enabled",
           "memory_stats", "pool", "pool_window", "use_pool")
_FFT = ("enable_fft", "disable_fft", "is_fft_enabled", "fft_stats")
__all__ = ["AgileError", "GPUFault", "GPUReset", "WorkerGone", "library_path", *_SESSION, *_MEMORY,
           *_FFT]
__version__ = "0.1.0"
_TRITON = ("guarded", "triton")  # guarded Triton launches through the worker (triton.py)
__all__ = [*__all__, "guarded"]


def __getattr__(name):
    if name in _SESSION:
        from . import session
        return getattr(session, name)
    if name in _MEMORY or name in _FFT:
        # fft registers its hooks on memory's pools when imported (memory never imports it)
        from . import fft, memory
        return getattr(memory if name in _MEMORY else fft, name)
    if name in _TRITON:
        import importlib
        mod = importlib.import_module(".triton", __name__)
        return mod if name == "triton" else getattr(mod, name)
    raise AttributeError(f"module 'agile_torch' has no attribute {name!r}")
