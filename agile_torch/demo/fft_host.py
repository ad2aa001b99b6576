"""The host demo's FFT step: one 4096-point single-precision C2C transform planned and run by
the worker's fft module (FFTW on the host backend) on buffers from this process's agile pool,
through libagile's C API (agile/fft.h), checked against numpy.fft."""
from __future__ import annotations

import ctypes
import time

N = 4096
FORWARD = -1
C2C = 0x29  # cufftType CUFFT_C2C


def demo_fft(L, np) -> tuple[float, float]:
    """L: libagile as _native.lib() types it. Returns (max relative error vs numpy.fft.fft,
    seconds per exec)."""
    nbytes = N * 8  # complex64
    pi = L.agile_malloc(nbytes, 0, None)
    po = L.agile_malloc(nbytes, 0, None)
    if not pi or not po:
        raise RuntimeError("agile_malloc: " + L.agile_last_error().decode())
    plan = ctypes.c_uint64()
    try:
        n = (ctypes.c_longlong * 1)(N)
        rv = L.agile_fft_plan_many(0, 1, n, None, 1, N, None, 1, N, C2C, 1, 0, ctypes.byref(plan))
        if rv:
            raise RuntimeError("agile_fft_plan_many: " + L.agile_last_error().decode())
        rng = np.random.default_rng(0)
        x = (rng.standard_normal(N) + 1j * rng.standard_normal(N)).astype(np.complex64)
        ctypes.memmove(pi, x.ctypes.data, nbytes)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            rv = L.agile_fft_exec(plan.value, pi, po, FORWARD, None)
            runs.append(time.perf_counter() - t0)
            if rv:
                raise RuntimeError("agile_fft_exec: " + L.agile_last_error().decode())
        y = np.frombuffer(ctypes.string_at(po, nbytes), dtype=np.complex64)
        ref = np.fft.fft(x.astype(np.complex128))
        err = float(np.abs(y - ref).max() / np.abs(ref).max())
        return err, sorted(runs)[len(runs) // 2]
    finally:
        if plan.value:
            L.agile_fft_destroy(plan.value)
        L.agile_free(pi, nbytes, 0, None)
        L.agile_free(po, nbytes, 0, None)
