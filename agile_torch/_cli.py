"""Console entry points (agilectl, agile-worker, agile-guard): each runs the packaged binary
of the same build as the library (agile_torch._native.binary_path) in this process."""
from __future__ import annotations

import os
import sys

from . import _native


def _exec(name: str) -> None:
    try:
        path = _native.binary_path(name)
    except ImportError as e:
        path, why = None, str(e)
    else:
        why = "not beside " + _native.library_path()
    if path is None:
        sys.exit(f"{name}: the agile binary was not found ({why})")
    os.execv(path, [name, *sys.argv[1:]])


def agilectl() -> None:
    _exec("agilectl")


def agile_worker() -> None:
    _exec("agile-worker")


def agile_guard() -> None:
    _exec("agile-guard")
