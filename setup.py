"""pip install . : builds agile's C parts with CMake and packages them inside agile_torch.

Needs the CUDA toolkit headers (/usr/local/cuda or AGILE_CUDA_ROOT) and nng (Debian:
libnng-dev, or AGILE_DEPS_PREFIX pointing at unpacked packages). The binaries load the CUDA
driver with dlopen at run time, so the same wheel starts on machines without a GPU.
"""
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
# libagile_aten.so (the torch.fft hook) exists only when PyTorch's headers were found.
ARTIFACTS = {"_lib": ["libagile.so", "libagile_aten.so", "libagile_cufft.so"],
             "_bin": ["agile-worker", "agilectl", "agile-guard"]}


def torch_cmake_args() -> list:
    """Where PyTorch is, for the torch.fft hook. pip builds in an isolated environment that
    hides the installed packages, so ask this interpreter again without pip's isolation
    (PYTHONPATH / PYTHONNOUSERSITE); AGILE_TORCH_DIR overrides."""
    if os.environ.get("AGILE_TORCH_DIR"):
        return ["-DAGILE_TORCH_DIR=" + os.environ["AGILE_TORCH_DIR"]]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    probe = ("import os, torch; print(os.path.dirname(torch.__file__)); "
             "print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
    try:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                             text=True, timeout=300, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if not out or out.returncode != 0:
        print("agile: torch is not importable here; building without the torch.fft hook")
        return []
    tdir, abi = out.stdout.split()[-2:]
    return ["-DAGILE_TORCH_DIR=" + tdir, "-DAGILE_TORCH_CXX11_ABI=" + abi]


class CMakeBuild(build_py):
    def run(self):
        build_dir = os.environ.get("AGILE_PIP_BUILD_DIR", os.path.join(ROOT, "build-pip"))
        cfg = ["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
               "-DAGILE_TESTS=OFF", *torch_cmake_args()]
        subprocess.check_call(cfg)
        subprocess.check_call(["cmake", "--build", build_dir, "-j", str(os.cpu_count() or 2)])
        super().run()
        for sub, names in ARTIFACTS.items():
            for dest_root in {os.path.join(self.build_lib, "agile_torch"),
                              os.path.join(ROOT, "agile_torch")}:
                dest = os.path.join(dest_root, sub)
                os.makedirs(dest, exist_ok=True)
                for n in names:
                    src = os.path.join(build_dir, "lib" if sub == "_lib" else "bin", n)
                    if os.path.exists(src):
                        shutil.copy2(os.path.realpath(src), os.path.join(dest, n))
                    elif os.path.exists(os.path.join(dest, n)):
                        os.remove(os.path.join(dest, n))  # not built this time: no stale copy
                if sub == "_lib":
                    # libagile_aten.so and libagile_cufft.so ask for libagile's SONAME
                    shutil.copy2(os.path.join(dest, "libagile.so"),
                                 os.path.join(dest, "libagile.so.0"))


setup(
    name="agile-torch",
    version="0.1.0",
    description="agile: a GPU operating-system layer for protected CUDA services, faced to PyTorch",
    packages=["agile_torch"],
    package_data={"agile_torch": ["_lib/*", "_bin/*"]},
    python_requires=">=3.11",
    cmdclass={"build_py": CMakeBuild},
    zip_safe=False,
)
