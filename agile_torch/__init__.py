"""agile_torch: PyTorch tensors from per-tenant pools owned by the agile worker.

    import agile_torch
    with agile_torch.use_pool():          # or agile_torch.enable() before CUDA initialises
        x = torch.randn(1 << 20, device="cuda")

See README.md for the worker, the protections and the numbers.
"""
from ._native import AgileError, library_path
from .memory import (device, empty_cache, enable, init, is_agile_tensor, is_enabled,
                     memory_stats, pool, pool_window, session_info, use_pool, worker_status)

__all__ = ["AgileError", "device", "empty_cache", "enable", "init", "is_agile_tensor",
           "is_enabled", "library_path", "memory_stats", "pool", "pool_window",
           "session_info", "use_pool", "worker_status"]
__version__ = "0.1.0"
