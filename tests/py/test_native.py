"""agile_torch._native's signature table against the C ABI, without a worker: every AGILE_API
function of the public headers (csrc/include/agile/*.h) is declared in _native.SIGNATURES with
its number of arguments and a result exactly where C has one, every declared name is in the
headers and in the built libagile (and the library exports nothing else), the hook's table
matches fft_aten.cpp's AGILE_ATEN_API functions, and the #define constants Python passes are
the headers' values. The lists themselves (errors, memory counters, backends) are read from
the library, so they are checked against the C structs and enums here too."""
import ctypes
import os
import re
import shutil
import subprocess

import pytest

import agilec
from agile_torch import _native

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
INCLUDE = os.path.join(ROOT, "csrc", "include", "agile")
ATEN = os.path.join(ROOT, "csrc", "aten", "fft_aten.cpp")


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _prototypes(text: str, marker: str) -> dict:
    """{name: (result type, number of parameters)} of the `marker` declarations in C text."""
    out = {}
    for m in re.finditer(marker + r"\s+([^;(){}#]*?)\b(agile_\w+)\s*\(([^)]*)\)\s*[;{]",
                         _strip_comments(text)):
        res, name, params = " ".join(m.group(1).split()), m.group(2), m.group(3).strip()
        n = 0 if params in ("", "void") else params.count(",") + 1
        out[name] = (res, n)
    return out


def _header_api() -> dict:
    api = {}
    for f in sorted(os.listdir(INCLUDE)):
        if f.endswith(".h"):
            with open(os.path.join(INCLUDE, f)) as fh:
                api.update(_prototypes(fh.read(), "AGILE_API"))
    return api


def _check_table(table: dict, protos: dict) -> None:
    assert sorted(protos) == sorted(table), (
        f"declared in C only: {sorted(set(protos) - set(table))}; "
        f"in the Python table only: {sorted(set(table) - set(protos))}")
    for name, (res, nparams) in protos.items():
        pres, pargs = table[name]
        assert len(pargs) == nparams, f"{name}: C has {nparams} parameters, Python {len(pargs)}"
        assert (pres is None) == (res == "void"), f"{name}: C returns {res!r}, Python {pres!r}"


def test_every_agile_api_function_is_declared_once_with_its_arity():
    api = _header_api()
    assert len(api) > 40, "the header parser found too few AGILE_API declarations"
    _check_table(_native.SIGNATURES, api)


def test_every_declared_function_exists_in_the_library():
    L = agilec.load()
    for name, (res, args) in _native.SIGNATURES.items():
        f = getattr(L, name)  # AttributeError: not exported
        assert f.restype is res and f.argtypes == args, name


def test_the_library_exports_exactly_the_header_api():
    nm = shutil.which("nm")
    if not nm:
        pytest.skip("no nm")
    out = subprocess.run([nm, "-D", "--defined-only", agilec.LIB], capture_output=True,
                         text=True, check=True).stdout
    exported = {ln.split()[-1] for ln in out.splitlines() if ln.split()[-1].startswith("agile")}
    assert exported == set(_header_api())


def test_the_hook_table_matches_fft_aten():
    with open(ATEN) as f:
        _check_table(_native.ATEN_SIGNATURES, _prototypes(f.read(), "AGILE_ATEN_API"))


def _define(name: str) -> str:
    for f in sorted(os.listdir(INCLUDE)):
        with open(os.path.join(INCLUDE, f)) as fh:
            m = re.search(r"^#define " + name + r"\b(.*)$", fh.read(), re.M)
            if m:
                return m.group(1).split("/*")[0].strip()
    raise AssertionError(f"{name} is not defined in {INCLUDE}")


def _int(c: str) -> int:
    return int(c.rstrip("uU"), 0)


def test_constants_are_the_headers():
    assert _native.MODULE_STRICT == _int(_define("AGILE_MODULE_STRICT"))
    shift = re.search(r"<<\s*(\d+)", _define("AGILE_MODULE_DEVICE"))
    assert shift and _native.MODULE_DEVICE_SHIFT == int(shift.group(1))
    assert _native.SITE_ASSERT == _int(_define("AGILE_SITE_ASSERT"))
    assert _native.SITE_TRAP == _int(_define("AGILE_SITE_TRAP"))


def test_lists_come_from_the_library():
    codes = _native.error_codes()
    assert codes["OK"] == 0
    L = _native.lib()
    for name, code in codes.items():
        assert L.agile_err_name(code).decode() == "AGILE_" + name
    assert len(codes) == len(set(codes.values())) > 25
    fields = [f for f, _ in _native.MemStats._fields_]
    assert fields == [f for f, _ in _native.mem_stat_names()]
    assert ctypes.sizeof(_native.MemStats) == 8 * len(fields)
    assert "quota_bytes" in fields and "window_bytes" in fields
    assert _native.backend_name(1) == "host" and _native.backend_name(2) == "cuda"
    assert _native.backend_name(0) == "?"
    assert _native.error_class(codes["EFAULT"]) is _native.GPUFault
    assert _native.error_class(codes["EINVAL"]) is _native.AgileError
