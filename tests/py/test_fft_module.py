"""fft module on the host backend (FFTW) against numpy.fft, through the module's real paths.

libagile_fft_test.so (built from modules/fft/fft_testlib.c) wire-encodes each plan
description, creates the plan through the module's ctl op and runs it through the module's
exec op with a tenant window (client address -> worker address translation + bounds check).

Every case checks, besides the numbers:
  * the extent the C code computes equals a brute-force enumeration done here in numpy;
  * no byte of the window outside the plan's output layout changes (for C2R, whose input
    cuFFT and FFTW may clobber, and for in-place plans, outside input + output layouts).

The library is found under $AGILE_BUILD_DIR/lib (default ./build). A missing library is a
failure with a message, never a skip.
"""
from __future__ import annotations

import ctypes
import os
import pathlib

import numpy as np
import pytest

import agilec

C2C, Z2Z, R2C, D2Z, C2R, Z2D = 0x29, 0x69, 0x2A, 0x6A, 0x2C, 0x6C
TYPES = (C2C, Z2Z, R2C, D2Z, C2R, Z2D)
NAMES = {C2C: "C2C", Z2Z: "Z2Z", R2C: "R2C", D2Z: "D2Z", C2R: "C2R", Z2D: "Z2D"}
F_IN_EMBED, F_OUT_EMBED, F_INPLACE = 1, 2, 4
F_ADVANCED = F_IN_EMBED | F_OUT_EMBED
FORWARD, INVERSE = -1, 1
# the library's codes (agilec.ERR)
OK, EINVAL, EHANDLE, EBOUNDS = (agilec.ERR[n] for n in ("OK", "EINVAL", "EHANDLE", "EBOUNDS"))

REPO = pathlib.Path(__file__).resolve().parents[2]


def _lib_path() -> pathlib.Path:
    build = pathlib.Path(os.environ.get("AGILE_BUILD_DIR", "build"))
    if not build.is_absolute():
        build = (REPO / build) if not build.exists() else build.resolve()
    return build / "lib" / "libagile_fft_test.so"


@pytest.fixture(scope="module")
def lib():
    path = _lib_path()
    if not path.exists():
        pytest.fail(
            f"{path} is missing: build it with `cmake --build <build dir> --target agile_fft_test` "
            "and point AGILE_BUILD_DIR at that build directory",
            pytrace=False,
        )
    L = ctypes.CDLL(str(path))
    u64p = ctypes.POINTER(ctypes.c_uint64)
    i64p = ctypes.POINTER(ctypes.c_int64)
    L.agile_fft_test_open.argtypes = [ctypes.c_uint64]
    L.agile_fft_test_open.restype = ctypes.c_void_p
    L.agile_fft_test_close.argtypes = [ctypes.c_void_p]
    L.agile_fft_test_close.restype = None
    L.agile_fft_test_desc.argtypes = [i64p, i64p]
    L.agile_fft_test_extent.argtypes = [i64p, u64p, u64p]
    L.agile_fft_test_check_bounds.argtypes = [i64p] + [ctypes.c_uint64] * 4
    L.agile_fft_test_plan_create.argtypes = [ctypes.c_void_p, ctypes.c_uint32, i64p, u64p, u64p]
    L.agile_fft_test_plan_destroy.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64]
    L.agile_fft_test_exec.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
        ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64,
    ]
    L.agile_fft_test_stats.argtypes = [ctypes.c_void_p, u64p]
    L.agile_fft_test_stats.restype = None
    L.agile_fft_test_err_name.argtypes = [ctypes.c_int]
    L.agile_fft_test_err_name.restype = ctypes.c_char_p
    return L


@pytest.fixture()
def mod(lib):
    m = lib.agile_fft_test_open(64)
    assert m, "agile_fft_test_open failed"
    yield m
    lib.agile_fft_test_close(m)


# ---- descriptions -------------------------------------------------------------------------


def fields(type_, n, batch=1, flags=0, inembed=(0, 0, 0), istride=0, idist=0,
           onembed=(0, 0, 0), ostride=0, odist=0):
    n = list(n) + [0] * (3 - len(n))
    ie = list(inembed) + [0] * (3 - len(inembed))
    oe = list(onembed) + [0] * (3 - len(onembed))
    rank = sum(1 for x in n if x)
    return [type_, rank, *n, batch, flags, *ie, istride, idist, *oe, ostride, odist]


def arr(f):
    return (ctypes.c_int64 * 17)(*f)


def is_double(t):
    return t in (Z2Z, D2Z, Z2D)


def real_in(t):
    return t in (R2C, D2Z)


def real_out(t):
    return t in (C2R, Z2D)


def side_dims(t, n, output):
    real = real_out(t) if output else real_in(t)
    dims = list(n)
    if not real and (real_in(t) or real_out(t)):
        dims[-1] = dims[-1] // 2 + 1
    return dims, real


def dtype_of(t, real):
    if is_double(t):
        return np.dtype(np.float64 if real else np.complex128)
    return np.dtype(np.float32 if real else np.complex64)


class Side:
    def __init__(self, t, n, output, embed, stride, dist, batch):
        self.dims, self.real = side_dims(t, n, output)
        self.dtype = dtype_of(t, self.real)
        self.elem = self.dtype.itemsize
        rank = len(n)
        pitch = [1] * rank
        for k in range(rank - 2, -1, -1):
            pitch[k] = pitch[k + 1] * embed[k + 1]
        idx = np.arange(batch, dtype=np.int64).reshape((batch,) + (1,) * rank) * dist
        for k in range(rank):
            shape = [1] * (rank + 1)
            shape[k + 1] = self.dims[k]
            idx = idx + stride * pitch[k] * np.arange(self.dims[k], dtype=np.int64).reshape(shape)
        self.idx = idx  # element index of (b, i0, ...), shape (batch, *dims)
        self.extent = (int(idx.max()) + 1) * self.elem

    def byte_mask(self, mask, off):
        for j in range(self.elem):
            mask[off + self.idx.ravel() * self.elem + j] = True


def normalised(lib, f):
    out = (ctypes.c_int64 * 17)()
    rc = lib.agile_fft_test_desc(arr(f), out)
    return rc, list(out)


def sides(nf):
    t, rank = nf[0], nf[1]
    n = nf[2:2 + rank]
    batch = nf[5]
    ie, istride, idist = nf[7:10], nf[10], nf[11]
    oe, ostride, odist = nf[12:15], nf[15], nf[16]
    return (Side(t, n, False, ie, istride, idist, batch),
            Side(t, n, True, oe, ostride, odist, batch))


# ---- random descriptions (mirrors modules/fft/fft_testutil.h) -----------------------------

SIZES_1D = [1, 2, 3, 4, 5, 7, 8, 12, 16, 17, 31, 32, 60, 64, 97, 128]


def random_fields(rng, type_=None, rank=None, inplace=None, advanced=None):
    t = type_ if type_ is not None else TYPES[rng.integers(len(TYPES))]
    rank = rank if rank is not None else int(rng.integers(1, 4))
    if rank == 1:
        n = [int(rng.choice(SIZES_1D))]
    else:
        n = [int(rng.integers(1, 13 if rank == 2 else 8)) for _ in range(rank)]
    batch = int(rng.integers(1, 5))
    inplace = bool(rng.integers(4) == 0) if inplace is None else inplace
    advanced = bool(rng.integers(2)) if advanced is None else advanced
    flags = F_INPLACE if inplace else 0
    if not advanced:
        return fields(t, n, batch, flags)
    flags |= F_ADVANCED
    idims, _ = side_dims(t, n, False)
    odims, _ = side_dims(t, n, True)
    if inplace:
        if t in (C2C, Z2Z):
            s = int(rng.integers(1, 4))
            e = [idims[k] + (int(rng.integers(0, 3)) if k else 0) for k in range(rank)]
            d = int(np.prod(e)) * s + int(rng.integers(0, 4))
            return fields(t, n, batch, flags, e, s, d, e, s, d)
        cdims = odims if real_in(t) else idims
        ce = [cdims[k] + (int(rng.integers(0, 3)) if k else 0) for k in range(rank)]
        re = ce[:-1] + [2 * ce[-1]]
        cd = int(np.prod(ce)) + int(rng.integers(0, 4))
        if real_in(t):
            return fields(t, n, batch, flags, re, 1, 2 * cd, ce, 1, cd)
        return fields(t, n, batch, flags, ce, 1, cd, re, 1, 2 * cd)
    lay = []
    for dims in (idims, odims):
        e = [dims[k] + (int(rng.integers(0, 3)) if k else 0) for k in range(rank)]
        if rng.integers(4) == 0:  # interleaved batches
            s, d = batch + int(rng.integers(0, 3)), 1
        else:
            s = int(rng.integers(1, 4))
            d = int(np.prod(e)) * s + int(rng.integers(0, 4))
        lay.append((e, s, d))
    (ie, s_in, d_in), (oe, s_out, d_out) = lay
    return fields(t, n, batch, flags, ie, s_in, d_in, oe, s_out, d_out)


# ---- running one plan through the module ----------------------------------------------------


class Window:
    """A W-aligned, W-sized host window, as the worker maps one; the client sees it at
    client_base (another base, same offsets)."""

    def __init__(self, need):
        W = 1 << 16
        while W < need:
            W <<= 1
        self.W = W
        self.raw = np.zeros(2 * W, np.uint8)
        addr = self.raw.ctypes.data
        self.off = (-addr) % W
        self.buf = self.raw[self.off:self.off + W]
        self.base = addr + self.off
        self.client_base = 0x3A5000000000 & ~(W - 1)

    def view(self, dtype, off, count):
        return np.ndarray((count,), dtype=dtype, buffer=self.buf, offset=off)


def reference(t, x, rank, n, direction):
    axes = tuple(range(1, rank + 1))
    N = int(np.prod(n))
    if t in (C2C, Z2Z):
        x = x.astype(np.complex128)
        return np.fft.fftn(x, axes=axes) if direction == FORWARD else np.fft.ifftn(x, axes=axes) * N
    if real_in(t):
        return np.fft.rfftn(x.astype(np.float64), axes=axes)
    return np.fft.irfftn(x.astype(np.complex128), s=n, axes=axes) * N


def run_case(lib, mod, rng, f, direction=None, place="random"):
    rc, nf = normalised(lib, f)
    assert rc == OK, f"valid desc refused: {lib.agile_fft_test_err_name(rc)} {f}"
    t, rank = nf[0], nf[1]
    n = nf[2:2 + rank]
    batch = nf[5]
    inplace = bool(nf[6] & F_INPLACE)
    sin, sout = sides(nf)

    ib, ob = ctypes.c_uint64(), ctypes.c_uint64()
    assert lib.agile_fft_test_extent(arr(f), ctypes.byref(ib), ctypes.byref(ob)) == OK
    assert (ib.value, ob.value) == (sin.extent, sout.extent), (nf, sin.extent, sout.extent)

    h, ext = ctypes.c_uint64(), (ctypes.c_uint64 * 3)()
    rc = lib.agile_fft_test_plan_create(mod, 1, arr(f), ctypes.byref(h), ext)
    assert rc == OK, f"plan_create: {lib.agile_fft_test_err_name(rc)} {nf}"
    assert (ext[0], ext[1]) == (sin.extent, sout.extent)

    win = Window(sin.extent + sout.extent + 4096)
    W = win.W
    if inplace:
        span = max(sin.extent, sout.extent)
        in_off = out_off = (W - span) // 16 * 16 if place == "end" else int(rng.integers(0, 64)) * 16
    else:
        in_off = int(rng.integers(0, 64)) * 16
        lo = (in_off + sin.extent + 15) // 16 * 16
        out_off = W - sout.extent if place == "end" else lo + int(rng.integers(0, 64)) * 16
    win.buf[:] = rng.integers(0, 256, W, dtype=np.uint8)

    # input: Hermitian-consistent spectra for C2R (both libraries assume it), random otherwise
    shape = (batch, *sin.dims)
    if real_out(t):
        x = np.fft.rfftn(rng.standard_normal((batch, *n)), axes=tuple(range(1, rank + 1)))
    elif sin.real:
        x = rng.standard_normal(shape)
    else:
        x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    x = x.astype(sin.dtype)
    vin = win.view(sin.dtype, in_off, sin.extent // sin.elem)
    vin[sin.idx] = x
    before = win.buf.copy()

    if direction is None:
        direction = FORWARD if t in (C2C, Z2Z) and rng.integers(2) == 0 else INVERSE
        if t not in (C2C, Z2Z):
            direction = FORWARD if real_in(t) else INVERSE
    rc = lib.agile_fft_test_exec(mod, 1, h.value, win.client_base + in_off, win.client_base + out_off,
                                 direction, win.base, W)
    assert rc == OK, f"exec: {lib.agile_fft_test_err_name(rc)} {nf}"

    vout = win.view(sout.dtype, out_off, sout.extent // sout.elem)
    got = vout[sout.idx].astype(np.complex128 if not sout.real else np.float64)
    want = reference(t, x, rank, n, direction)
    denom = max(np.linalg.norm(want), 1e-30)
    err = np.linalg.norm(got - want) / denom
    tol = 1e-12 if is_double(t) else 1e-5
    assert err <= tol, f"{NAMES[t]} rank {rank} n {n} batch {batch} rel err {err:.3g} > {tol} ({nf})"

    # nothing outside the layouts the plan owns has changed
    mask = np.zeros(W, bool)
    sout.byte_mask(mask, out_off)
    if inplace or real_out(t):
        sin.byte_mask(mask, in_off)
    changed = np.nonzero((win.buf != before) & ~mask)[0]
    assert changed.size == 0, f"bytes outside the plan's layouts changed at {changed[:8]} ({nf})"

    assert lib.agile_fft_test_plan_destroy(mod, 1, h.value) == OK
    return err


# ---- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", TYPES, ids=[NAMES[t] for t in TYPES])
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("inplace", [False, True], ids=["oop", "inplace"])
@pytest.mark.parametrize("advanced", [False, True], ids=["basic", "advanced"])
def test_every_kind(lib, mod, t, rank, inplace, advanced):
    rng = np.random.default_rng(hash((t, rank, inplace, advanced)) & 0xFFFFFFFF)
    for i in range(4):
        f = random_fields(rng, t, rank, inplace, advanced)
        run_case(lib, mod, rng, f, place="end" if i == 3 else "random")


def test_random_shapes(lib, mod):
    rng = np.random.default_rng(20261122)
    worst = {False: 0.0, True: 0.0}
    for _ in range(400):
        f = random_fields(rng)
        err = run_case(lib, mod, rng, f)
        worst[is_double(f[0])] = max(worst[is_double(f[0])], err)
    assert worst[False] <= 1e-5 and worst[True] <= 1e-12


def test_both_directions_c2c(lib, mod):
    rng = np.random.default_rng(7)
    for t in (C2C, Z2Z):
        for d in (FORWARD, INVERSE):
            run_case(lib, mod, rng, fields(t, [8, 6, 5], 3), direction=d)
            run_case(lib, mod, rng, fields(t, [1000], 2, F_ADVANCED, [0], 3, 1, [0], 2, 2001), direction=d)


def test_large_1d_and_strided(lib, mod):
    rng = np.random.default_rng(11)
    run_case(lib, mod, rng, fields(Z2Z, [4096], 4))
    run_case(lib, mod, rng, fields(C2C, [1 << 14], 1))
    run_case(lib, mod, rng, fields(D2Z, [2 * 3 * 5 * 7 * 11], 2))
    # PyTorch-style: FFT over dim 0 of a (n, k) row-major tensor = stride k, dist 1, batch k
    run_case(lib, mod, rng, fields(C2C, [64], 5, F_ADVANCED, [64], 5, 1, [64], 5, 1))
    run_case(lib, mod, rng, fields(R2C, [30], 3, F_ADVANCED, [30], 3, 1, [16], 3, 1))


def _plan(lib, mod, f, tenant=1):
    h, ext = ctypes.c_uint64(), (ctypes.c_uint64 * 3)()
    rc = lib.agile_fft_test_plan_create(mod, tenant, arr(f), ctypes.byref(h), ext)
    return rc, h.value, ext[0], ext[1]


def test_bounds_refusal(lib, mod):
    f = fields(C2C, [64], 4)
    rc, h, ib, ob = _plan(lib, mod, f)
    assert rc == OK and ib == ob == 64 * 4 * 8
    win = Window(1 << 16)
    W, cb = win.W, win.client_base

    def ex(i, o, d=FORWARD, tenant=1, handle=h):
        return lib.agile_fft_test_exec(mod, tenant, handle, cb + i, cb + o, d, win.base, W)

    win.buf[:] = 0x5A
    before = win.buf.copy()
    # output's last byte exactly at the window's end: fine; one element / one byte more: refused
    assert ex(W - ib - ob, W - ob) == OK
    win.buf[:] = 0x5A
    assert ex(0, W - ob + 8) == EBOUNDS
    assert ex(0, W - ob + 16) == EBOUNDS
    assert ex(W - ib + 8, 0) == EBOUNDS
    assert ex(0, W - 8) == EBOUNDS
    assert np.array_equal(win.buf, before), "a refused exec wrote to the window"
    # client addresses with any high bits land in the tenant's window (translation = containment)
    assert lib.agile_fft_test_exec(mod, 1, h, 0xFFFF000000000000, 0x0000100000000000 + ib,
                                   FORWARD, win.base, W) == OK
    # misaligned, overlapping, bad direction
    assert ex(4, 4096) == EINVAL
    assert ex(0, ib - 8) == EINVAL
    assert ex(0, 4096, d=0) == EINVAL
    # another tenant's handle, a destroyed handle
    assert ex(0, 4096, tenant=2) == EHANDLE
    assert lib.agile_fft_test_plan_destroy(mod, 2, h) == EHANDLE
    assert lib.agile_fft_test_plan_destroy(mod, 1, h) == OK
    assert ex(0, 4096) == EHANDLE

    # check_bounds directly: windows near the top of the address space, wrap-around
    top = (1 << 64) - W
    assert lib.agile_fft_test_check_bounds(arr(f), top, top + ib, top, W) == OK
    assert lib.agile_fft_test_check_bounds(arr(f), top + W - ib + 1, top, top, W) == EBOUNDS
    assert lib.agile_fft_test_check_bounds(arr(f), (1 << 64) - 16, 0, 0, W) == EBOUNDS
    assert lib.agile_fft_test_check_bounds(arr(f), 0, 0, 0, ib - 1) == EBOUNDS


def test_bounds_random_plans(lib):
    """For random plans: refused iff some touched byte falls outside the window."""
    rng = np.random.default_rng(5)
    W = 1 << 14
    for _ in range(300):
        f = random_fields(rng)
        rc, nf = normalised(lib, f)
        assert rc == OK
        sin, sout = sides(nf)
        inplace = bool(nf[6] & F_INPLACE)
        base = int(rng.integers(1, 1 << 30)) * W
        i = base + int(rng.integers(-64, W)) * 16
        o = i if inplace else base + int(rng.integers(-64, W)) * 16
        rc = lib.agile_fft_test_check_bounds(arr(f), i, o, base, W)
        inside = (base <= i and i + sin.extent <= base + W and base <= o and o + sout.extent <= base + W)
        if not inside:
            assert rc == EBOUNDS
        elif not inplace and i < o + sout.extent and o < i + sin.extent:
            assert rc == EINVAL
        else:
            assert rc == OK


def test_invalid_descs(lib, mod):
    bad = [
        fields(0x2B, [8]),                                                 # not a cufftType
        fields(C2C, [0, 8]),                                               # n = 0 (rank 2 by zeros)
        fields(C2C, [8], 0),                                               # batch 0
        fields(C2C, [8], 1, 0x80),                                         # unknown flag
        fields(C2C, [8, 8], 2, F_ADVANCED, [8, 8], 0, 64, [8, 8], 1, 64),  # stride 0
        fields(C2C, [8, 8], 2, F_ADVANCED, [8, 8], 1, 0, [8, 8], 1, 64),   # dist 0
        fields(C2C, [8, 8], 2, F_ADVANCED, [8, 7], 1, 64, [8, 8], 1, 64),  # embed < n
        fields(Z2Z, [1 << 20, 1 << 20, 1 << 20]),                          # > 1 PiB
        fields(Z2Z, [1 << 32, 1 << 32, 1 << 32], 1 << 40),                 # 64-bit overflow
        fields(C2C, [8, 8], 2, F_ADVANCED | F_INPLACE, [8, 8], 1, 64, [8, 9], 1, 72),  # in-place mismatch
        fields(R2C, [8], 2, F_ADVANCED | F_INPLACE, [10], 1, 11, [5], 1, 5),           # idist != 2*odist
    ]
    bad[1][1] = 2  # rank 2 with n[0] = 0
    for f in bad:
        rc, _, _, _ = _plan(lib, mod, f)
        assert rc == EINVAL, (f, lib.agile_fft_test_err_name(rc))


def test_cache_shared_plans(lib, mod):
    st = (ctypes.c_uint64 * 9)()
    lib.agile_fft_test_stats(mod, st)
    h0, m0 = st[0], st[1]
    f = fields(R2C, [16, 16], 2)
    r1, h1, _, _ = _plan(lib, mod, f, tenant=1)
    r2, h2, _, _ = _plan(lib, mod, f, tenant=2)
    assert r1 == r2 == OK and h1 != h2
    lib.agile_fft_test_stats(mod, st)
    assert st[1] == m0 + 1 and st[0] == h0 + 1  # one miss, one hit: one shared plan object
    assert st[5] >= 1
    assert lib.agile_fft_test_plan_destroy(mod, 1, h1) == OK
    assert lib.agile_fft_test_plan_destroy(mod, 2, h2) == OK
