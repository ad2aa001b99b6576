"""ctypes view of libagile for the tests (the product binding lives in agile_torch)."""
import ctypes
import os
import sys

BUILD = os.environ.get("AGILE_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
BUILD = os.path.abspath(BUILD)
LIB = os.path.join(BUILD, "lib", "libagile.so")
WORKER = os.path.join(BUILD, "bin", "agile-worker")
AGILECTL = os.path.join(BUILD, "bin", "agilectl")

OBJ_STREAM, OBJ_EVENT = 3, 4


sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from agile_torch import _native  # noqa: E402  (one layout, one signature table)
from agile_torch._native import ConnectOpts, SessionInfo  # noqa: E402


def __getattr__(name):
    if name == "ERR":  # {"EINVAL": 1, ...}: the library's AGILE_ERR_LIST (agile_err_entry)
        return _native.error_codes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load():
    """libagile typed from agile_torch._native.SIGNATURES (a CDLL of its own)."""
    return _native.load(LIB)


class Client:
    def __init__(self, lib, runtime_dir, autostart=False, timeout_ms=5000):
        self.lib = lib
        opts = ConnectOpts(runtime_dir.encode(), timeout_ms, 0 if autostart else 1,
                           WORKER.encode(), b"host")
        h = ctypes.c_void_p()
        rv = lib.agile_connect(ctypes.byref(opts), ctypes.byref(h))
        if rv != 0:
            raise OSError(rv, f"agile_connect: {lib.agile_strerror(rv).decode()}: "
                              f"{lib.agile_last_error().decode()}")
        self.h = h

    def info(self):
        si = SessionInfo()
        assert self.lib.agile_session_info_get(self.h, ctypes.byref(si)) == 0
        return si

    def ping(self):
        return self.lib.agile_ping(self.h)

    def create(self, typ=OBJ_STREAM, dev=0):
        out = ctypes.c_uint64()
        rv = self.lib.agile_object_create(self.h, typ, dev, ctypes.byref(out))
        return rv, out.value

    def destroy(self, handle):
        return self.lib.agile_object_destroy(self.h, handle)

    def raw(self, data: bytes):
        rep = ctypes.c_void_p()
        n = ctypes.c_size_t()
        rv = self.lib.agile_raw_request(self.h, data, len(data), ctypes.byref(rep), ctypes.byref(n))
        if rv != 0:
            return rv, None
        out = ctypes.string_at(rep, n.value)
        self.lib.agile_free_string(rep)
        return 0, out

    def close(self):
        if self.h:
            self.lib.agile_disconnect(self.h)
            self.h = None


def load_mem(lib, runtime_dir):
    """Point the process's default client at runtime_dir (no autostart)."""
    opts = ConnectOpts(runtime_dir.encode(), 5000, 1, WORKER.encode(), b"host")
    rv = lib.agile_init(ctypes.byref(opts))
    assert rv == 0, lib.agile_last_error()
    return lib


def stats(lib, dev=0):
    s = _native.MemStats()
    assert lib.agile_memory_stats(dev, ctypes.byref(s)) == 0
    return s
