"""The torch-free part of agile_torch: connecting to the worker, this session, its status.

Importable and usable where PyTorch is not installed (agile_torch.worker_status(),
agile_torch.session_info(), agile_torch.init()); memory.py builds the pools on it.
"""
from __future__ import annotations

import ctypes
import json

from . import _native


def init(runtime_dir: str | None = None, backend: str | None = None, timeout_ms: int = 0) -> None:
    """Connect this process to the agile worker (starting one if none listens).

    Optional: the first allocation connects with the defaults. Calling it first lets you pick
    the runtime directory or the backend of an autostarted worker.
    """
    worker = _native.binary_path("agile-worker")
    opts = _native.ConnectOpts(runtime_dir.encode() if runtime_dir else None, timeout_ms, 0,
                               worker.encode() if worker else None,
                               backend.encode() if backend else None)
    _native.check(_native.lib().agile_init(ctypes.byref(opts)), "agile_torch.init")


def _client() -> ctypes.c_void_p:
    c = ctypes.c_void_p()
    _native.check(_native.lib().agile_default_client(ctypes.byref(c)), "connecting to the agile worker")
    return c


def session_info() -> dict:
    """This process's session: tenant uid (as the kernel told the worker), backend, quota."""
    si = _native.SessionInfo()
    _native.check(_native.lib().agile_session_info_get(_client(), ctypes.byref(si)), "session_info")
    return {"tenant": si.tenant, "backend": _native.backend_name(si.backend),
            "devices": si.ndev, "priority": si.priority, "quota_bytes": si.quota,
            "protocol": f"{si.worker_major}.{si.worker_minor}"}


def worker_status() -> dict:
    """The worker's status (what `agilectl status --json` prints)."""
    L = _native.lib()
    p = ctypes.c_void_p()
    _native.check(L.agile_status(_client(), 1, ctypes.byref(p)), "agile status")
    try:
        return json.loads(ctypes.string_at(p).decode())
    finally:
        L.agile_free_string(p)


def init_default() -> None:
    """Connect with the defaults unless init() connected already."""
    c = ctypes.c_void_p()
    if _native.lib().agile_default_client(ctypes.byref(c)) != 0:
        init()
