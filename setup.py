"""pip install . : builds agile's C parts with CMake and packages them inside agile_torch.

Needs the CUDA toolkit headers (/usr/local/cuda or AGILE_CUDA_ROOT) and nng (Debian:
libnng-dev, or AGILE_DEPS_PREFIX pointing at unpacked packages). The binaries load the CUDA
driver with dlopen at run time, so the same wheel starts on machines without a GPU.
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
# libagile_aten.so (the torch.fft hook) exists only when PyTorch's headers were found.
ARTIFACTS = {"_lib": ["libagile.so", "libagile_aten.so", "libagile_cufft.so"],
             "_bin": ["agile-worker", "agilectl", "agile-guard"]}


class CMakeBuild(build_py):
    def run(self):
        build_dir = os.environ.get("AGILE_PIP_BUILD_DIR", os.path.join(ROOT, "build-pip"))
        cfg = ["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
               "-DAGILE_TESTS=OFF"]
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
