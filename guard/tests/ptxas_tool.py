"""ptxas_tool.py — run ptxas and read the cubin it writes (shared by the lexical probes, the
differential check and the property test). Standard library only.

A cubin is an ELF64 file; each function's machine code is its section `.text.<name>`.
The section bytes are what the differential check compares: two PTX texts that ptxas reads
as the same program give the same bytes (ptxas is deterministic for a fixed input)."""
import os
import struct
import subprocess
import tempfile

PTXAS = os.environ.get("PTXAS", "/usr/local/cuda/bin/ptxas")


def have_ptxas():
    return os.access(PTXAS, os.X_OK)


def elf_sections(data):
    """{name: bytes} of an ELF64 little-endian file (NOBITS sections are b'')."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not an ELF64 little-endian file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    stroff = hdrs[shstrndx][4]
    out = {}
    for name, typ, _flags, _addr, off, size, *_ in hdrs:
        end = data.index(b"\0", stroff + name)
        nm = data[stroff + name:end].decode("ascii", "replace")
        out[nm] = b"" if typ == 8 else data[off:off + size]
    return out


def functions(cubin):
    """{function name: machine code} of a cubin."""
    return {k[len(".text."):]: v for k, v in elf_sections(cubin).items() if k.startswith(".text.")}


def compile_ptx(ptx, arch="sm_90", timeout=300):
    """ptxas on a PTX text (bytes). Returns (returncode, messages, cubin bytes or None)."""
    with tempfile.TemporaryDirectory(prefix="agile-ptxas-") as d:
        src, out = os.path.join(d, "in.ptx"), os.path.join(d, "out.cubin")
        with open(src, "wb") as f:
            f.write(ptx)
        r = subprocess.run([PTXAS, "-arch=" + arch, src, "-o", out], capture_output=True,
                           timeout=timeout, check=False)
        msg = (r.stdout + r.stderr).decode("utf-8", "replace")
        cubin = None
        if r.returncode == 0 and os.path.exists(out):
            with open(out, "rb") as f:
                cubin = f.read()
        return r.returncode, msg, cubin


def target_of(ptx):
    """The .target of a PTX text (bytes), for -arch; sm_90 when absent."""
    for line in ptx.split(b"\n"):
        w = line.split()
        if len(w) >= 2 and w[0] == b".target":
            return w[1].rstrip(b",").decode("ascii", "replace")
    return "sm_90"
