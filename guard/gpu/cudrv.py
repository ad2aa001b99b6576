"""cudrv.py - a minimal ctypes binding to the CUDA driver (libcuda.so.1) for the guard's
GPU scripts: context, modules from PTX/cubin, launches with a packed parameter list,
device memory, and a VMM-mapped tenant window (2^k aligned, plus a mapped guard gap).

No third-party dependency: the scripts must run on a bare GPU machine with Python 3.
"""
from __future__ import annotations

import ctypes as C
import struct
from dataclasses import dataclass, field

CUdeviceptr = C.c_uint64


class CudaError(RuntimeError):
    pass


class _Loc(C.Structure):
    _fields_ = [("type", C.c_int), ("id", C.c_int)]


class _AllocFlags(C.Structure):
    _fields_ = [("compressionType", C.c_ubyte), ("gpuDirectRDMACapable", C.c_ubyte),
                ("usage", C.c_ushort), ("reserved", C.c_ubyte * 4)]


class _AllocProp(C.Structure):
    _fields_ = [("type", C.c_int), ("requestedHandleTypes", C.c_int), ("location", _Loc),
                ("win32HandleMetaData", C.c_void_p), ("allocFlags", _AllocFlags)]


class _AccessDesc(C.Structure):
    _fields_ = [("location", _Loc), ("flags", C.c_int)]


CU_MEM_ALLOCATION_TYPE_PINNED = 1
CU_MEM_LOCATION_TYPE_DEVICE = 1
CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3
CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8


class Driver:
    def __init__(self, device: int = 0):
        self.lib = C.CDLL("libcuda.so.1")
        self._check(self.lib.cuInit(0), "cuInit")
        self.dev = C.c_int()
        self._check(self.lib.cuDeviceGet(C.byref(self.dev), device), "cuDeviceGet")
        self.ctx = C.c_void_p()
        self._check(self.lib.cuDevicePrimaryCtxRetain(C.byref(self.ctx), self.dev), "cuDevicePrimaryCtxRetain")
        self._check(self.lib.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")
        name = C.create_string_buffer(256)
        self.lib.cuDeviceGetName(name, 256, self.dev)
        self.name = name.value.decode()
        major, minor = C.c_int(), C.c_int()
        self.lib.cuDeviceGetAttribute(C.byref(major), 75, self.dev)  # COMPUTE_CAPABILITY_MAJOR
        self.lib.cuDeviceGetAttribute(C.byref(minor), 76, self.dev)
        self.cc = (major.value, minor.value)

    # -- errors -------------------------------------------------------------------------
    def err_name(self, rc: int) -> str:
        s = C.c_char_p()
        self.lib.cuGetErrorName(rc, C.byref(s))
        return s.value.decode() if s.value else str(rc)

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise CudaError(f"{what}: {self.err_name(rc)} ({rc})")

    # -- memory -------------------------------------------------------------------------
    def alloc(self, size: int) -> int:
        p = CUdeviceptr()
        self._check(self.lib.cuMemAlloc_v2(C.byref(p), C.c_size_t(size)), "cuMemAlloc")
        return p.value

    def free(self, p: int) -> None:
        self._check(self.lib.cuMemFree_v2(CUdeviceptr(p)), "cuMemFree")

    def htod(self, dst: int, data: bytes) -> None:
        buf = C.create_string_buffer(bytes(data), len(data))
        self._check(self.lib.cuMemcpyHtoD_v2(CUdeviceptr(dst), buf, C.c_size_t(len(data))), "cuMemcpyHtoD")

    def dtoh(self, src: int, size: int) -> bytes:
        buf = C.create_string_buffer(size)
        self._check(self.lib.cuMemcpyDtoH_v2(buf, CUdeviceptr(src), C.c_size_t(size)), "cuMemcpyDtoH")
        return buf.raw

    def dtod(self, dst: int, src: int, size: int) -> None:
        self._check(self.lib.cuMemcpyDtoD_v2(CUdeviceptr(dst), CUdeviceptr(src), C.c_size_t(size)), "cuMemcpyDtoD")

    def memset(self, dst: int, byte: int, size: int) -> None:
        self._check(self.lib.cuMemsetD8_v2(CUdeviceptr(dst), C.c_ubyte(byte), C.c_size_t(size)), "cuMemsetD8")

    def sync(self) -> None:
        self._check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")

    # -- modules and launches -----------------------------------------------------------
    def load(self, image: bytes) -> C.c_void_p:
        """cuModuleLoadData on PTX text (NUL-terminated here) or a cubin."""
        mod = C.c_void_p()
        data = image if image.startswith(b"\x7fELF") else image + b"\0"
        buf = C.create_string_buffer(data, len(data))
        self._check(self.lib.cuModuleLoadData(C.byref(mod), buf), "cuModuleLoadData")
        return mod

    def unload(self, mod) -> None:
        self.lib.cuModuleUnload(mod)

    def function(self, mod, name: str) -> C.c_void_p:
        f = C.c_void_p()
        self._check(self.lib.cuModuleGetFunction(C.byref(f), mod, name.encode()), f"cuModuleGetFunction({name})")
        return f

    def set_dynamic_smem(self, fn, nbytes: int) -> None:
        if nbytes > 48 * 1024:
            self._check(self.lib.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, nbytes),
                        "cuFuncSetAttribute")

    def launch(self, fn, grid, block, args: list, shared: int = 0, stream=None) -> None:
        """args: list of (ctype_instance) - each passed by pointer, as cuLaunchKernel wants."""
        ptrs = (C.c_void_p * max(1, len(args)))(*[C.cast(C.pointer(a), C.c_void_p) for a in args])
        g = list(grid) + [1] * (3 - len(grid))
        b = list(block) + [1] * (3 - len(block))
        self._check(self.lib.cuLaunchKernel(fn, g[0], g[1], g[2], b[0], b[1], b[2], shared, stream,
                                            ptrs, None), "cuLaunchKernel")

    # -- events -------------------------------------------------------------------------
    def event(self):
        e = C.c_void_p()
        self._check(self.lib.cuEventCreate(C.byref(e), 0), "cuEventCreate")
        return e

    def record(self, e, stream=None) -> None:
        self._check(self.lib.cuEventRecord(e, stream), "cuEventRecord")

    def elapsed_ms(self, a, b) -> float:
        self._check(self.lib.cuEventSynchronize(b), "cuEventSynchronize")
        ms = C.c_float()
        self._check(self.lib.cuEventElapsedTime(C.byref(ms), a, b), "cuEventElapsedTime")
        return ms.value

    # -- VMM window ---------------------------------------------------------------------
    def _prop(self) -> _AllocProp:
        p = _AllocProp()
        p.type = CU_MEM_ALLOCATION_TYPE_PINNED
        p.location.type = CU_MEM_LOCATION_TYPE_DEVICE
        p.location.id = self.dev.value
        return p

    def granularity(self) -> int:
        g = C.c_size_t()
        p = self._prop()
        self._check(self.lib.cuMemGetAllocationGranularity(C.byref(g), C.byref(p), 0),
                    "cuMemGetAllocationGranularity")
        return g.value

    def window(self, bits: int, gap: int) -> "Window":
        return Window(self, bits, gap)


@dataclass
class Window:
    """A tenant window as the worker maps it: W = 2^bits bytes at a W-aligned base, backed
    by one physical chunk, followed by a guard gap backed by a separate sink chunk, so a
    fenced address plus an offset below the gap never faults."""
    drv: Driver
    bits: int
    gap: int
    base: int = 0
    size: int = 0
    _handles: list = field(default_factory=list)
    _reserved: int = 0
    _next: int = 0

    def __post_init__(self):
        d = self.drv
        gran = d.granularity()
        self.size = 1 << self.bits
        if self.size % gran:
            raise CudaError(f"window 2^{self.bits} is not a multiple of the granularity {gran}")
        gap = (self.gap + gran - 1) // gran * gran
        self._reserved = self.size + gap
        p = CUdeviceptr()
        d._check(d.lib.cuMemAddressReserve(C.byref(p), C.c_size_t(self._reserved), C.c_size_t(self.size),
                                           CUdeviceptr(0), C.c_ulonglong(0)), "cuMemAddressReserve")
        self.base = p.value
        if self.base % self.size:
            raise CudaError("cuMemAddressReserve ignored the alignment")
        prop = self._prop = d._prop()
        off = 0
        for chunk in (self.size, gap):
            h = C.c_ulonglong()
            d._check(d.lib.cuMemCreate(C.byref(h), C.c_size_t(chunk), C.byref(prop), C.c_ulonglong(0)), "cuMemCreate")
            d._check(d.lib.cuMemMap(CUdeviceptr(self.base + off), C.c_size_t(chunk), C.c_size_t(0), h,
                                    C.c_ulonglong(0)), "cuMemMap")
            self._handles.append((self.base + off, chunk, h))
            off += chunk
        acc = _AccessDesc()
        acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE
        acc.location.id = d.dev.value
        acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE
        d._check(d.lib.cuMemSetAccess(CUdeviceptr(self.base), C.c_size_t(self._reserved), C.byref(acc), 1),
                 "cuMemSetAccess")
        d.memset(self.base, 0, self._reserved)

    @property
    def mask(self) -> int:
        return self.size - 1

    def reset(self) -> None:
        self._next = 0

    def suballoc(self, size: int, align: int = 256) -> int:
        off = (self._next + align - 1) // align * align
        if off + size > self.size:
            raise CudaError("window full")
        self._next = off + size
        return self.base + off

    def close(self) -> None:
        d = self.drv
        for addr, chunk, h in self._handles:
            d.lib.cuMemUnmap(CUdeviceptr(addr), C.c_size_t(chunk))
            d.lib.cuMemRelease(h)
        d.lib.cuMemAddressFree(CUdeviceptr(self.base), C.c_size_t(self._reserved))
        self._handles = []


def pack_arg(kind: str, value):
    """A kernel argument as a ctypes value (passed by pointer to cuLaunchKernel)."""
    if kind in ("ptr", "u64"):
        return C.c_uint64(int(value) & (2**64 - 1))
    if kind == "i64":
        return C.c_int64(int(value))
    if kind == "i32":
        return C.c_int32(int(value))
    if kind == "u32":
        return C.c_uint32(int(value))
    if kind == "f32":
        return C.c_float(float(value))
    if kind == "f64":
        return C.c_double(float(value))
    if kind == "float4":
        class F4(C.Structure):
            _pack_ = 16
            _fields_ = [("v", C.c_float * 4)]
        f = F4()
        for i, x in enumerate(value):
            f.v[i] = float(x)
        return f
    raise ValueError(f"unknown argument kind {kind}")


def f32s(data: bytes) -> list:
    return list(struct.unpack(f"<{len(data) // 4}f", data[: len(data) // 4 * 4]))
