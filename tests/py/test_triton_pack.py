"""agile_torch.triton's argument handling without a GPU, torch or triton: which Python
arguments become PTX parameters, and how they are packed at the worker's offsets."""
import os
import struct
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from agile_torch import triton as at  # noqa: E402


class Tensor:
    def __init__(self, ptr):
        self.ptr = ptr

    def data_ptr(self):
        return self.ptr


def test_runtime_params_drop_constexprs_and_specialised():
    kernel = SimpleNamespace(arg_names=["x", "y", "n", "one", "scale", "BLOCK"])
    sig = {"x": "*fp32", "y": "*fp16", "n": "i32", "one": "constexpr", "scale": "fp32",
           "BLOCK": "constexpr"}
    compiled = SimpleNamespace(src=SimpleNamespace(signature=sig, constexprs={}))
    x, y = Tensor(0x1000), Tensor(0x2000)
    vals = at._runtime_params(kernel, compiled, (x, y, 77, 1, 0.5), {"BLOCK": 128})
    assert [t for _, t in vals] == ["*fp32", "*fp16", "i32", "fp32"]
    # positional signatures (older Tritons) and constants by index
    compiled = SimpleNamespace(src=SimpleNamespace(
        signature={0: "*fp32", 1: "*fp16", 2: "i32", 4: "fp32"}, constants={(3,): 1, (5,): 128}))
    vals = at._runtime_params(kernel, compiled, (x, y, 77, 1, 0.5), {"BLOCK": 128})
    assert [v for v, _ in vals] == [x, y, 77, 0.5]


def test_pack_at_worker_offsets():
    vals = [(Tensor(0x10000), "*fp32"), (77, "i32"), (0.5, "fp32"), (-3, "i64"), (1.5, "fp16"),
            (0, "*i8"), (0, "*i8")]
    sizes = [8, 4, 4, 8, 2, 8, 8]
    offs = [0, 8, 12, 16, 24, 32, 40]
    buf = at._pack(vals, sizes, offs, 48, in_pool=lambda p: True)
    assert struct.unpack_from("<Q", buf, 0)[0] == 0x10000
    assert struct.unpack_from("<i", buf, 8)[0] == 77
    assert struct.unpack_from("<f", buf, 12)[0] == 0.5
    assert struct.unpack_from("<q", buf, 16)[0] == -3
    assert struct.unpack_from("<e", buf, 24)[0] == 1.5
    assert buf[32:] == bytes(16)
    with pytest.raises(ValueError, match="not in this process's agile pool"):
        at._pack(vals[:1], sizes[:1], offs[:1], 8, in_pool=lambda p: False)


def test_guarded_decorator_shapes():
    def k():
        pass
    g = at.guarded(k)
    assert isinstance(g, at.Guarded) and g.fn is k and not g.strict
    s = at.guarded(strict=True)(k)
    assert s.strict and callable(s[(1,)])
