"""Where agile_torch loads libagile from (agile_torch/_native.py), so that a checkout never
loads a stale copy and an installed package never loads a checkout's build. The wheel itself
is built and installed into a fresh venv by tests/packaging/check_wheel.py (scripts/test)."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

PROBE = ("import agile_torch._native as n; print(n.in_checkout()); print(n.library_path()); "
         "print(n.binary_path('agilectl'))")


def _fake_lib(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("not a library\n")


def _probe(top, **env):
    e = {k: v for k, v in os.environ.items()
         if k not in ("AGILE_BUILD_DIR", "AGILE_LIBRARY", "PYTHONPATH")}
    e.update(env)
    p = subprocess.run([sys.executable, "-c", PROBE], cwd=top, env=e, capture_output=True,
                       text=True, timeout=60)
    return p


def _package_copy(top, checkout):
    shutil.copytree(os.path.join(ROOT, "agile_torch"), os.path.join(top, "agile_torch"),
                    ignore=shutil.ignore_patterns("__pycache__", "_lib", "_bin"))
    if checkout:
        open(os.path.join(top, "CMakeLists.txt"), "w").close()
        os.makedirs(os.path.join(top, "csrc"))
    # What `pip install .` with setup.py used to leave in the source tree.
    _fake_lib(os.path.join(top, "agile_torch", "_lib", "libagile.so.0"))
    _fake_lib(os.path.join(top, "agile_torch", "_lib", "libagile.so"))
    _fake_lib(os.path.join(top, "agile_torch", "_bin", "agilectl"))


def test_checkout_ignores_copies_inside_the_package(tmp_path):
    top = str(tmp_path)
    _package_copy(top, checkout=True)
    build = os.path.join(top, "elsewhere")
    _fake_lib(os.path.join(build, "lib", "libagile.so"))
    _fake_lib(os.path.join(build, "bin", "agilectl"))
    p = _probe(top, AGILE_BUILD_DIR=build)
    assert p.returncode == 0, p.stderr
    inside, lib, ctl = p.stdout.split()
    assert inside == "True"
    assert lib == os.path.join(build, "lib", "libagile.so")
    assert ctl == os.path.join(build, "bin", "agilectl")
    # Without AGILE_BUILD_DIR: the checkout's build/, and an error naming it when absent.
    p = _probe(top)
    assert p.returncode != 0 and os.path.join(top, "build", "lib", "libagile.so") in p.stderr
    assert "_lib" not in p.stderr.split("looked in:")[1].split(")")[0]


def test_installed_package_uses_its_own_libraries(tmp_path):
    top = str(tmp_path)
    _package_copy(top, checkout=False)
    build = os.path.join(top, "elsewhere")
    _fake_lib(os.path.join(build, "lib", "libagile.so"))
    p = _probe(top, AGILE_BUILD_DIR=build)  # a checkout's build is never mixed in
    assert p.returncode == 0, p.stderr
    inside, lib, ctl = p.stdout.split()
    assert inside == "False"
    assert lib == os.path.join(top, "agile_torch", "_lib", "libagile.so.0")
    assert ctl == os.path.join(top, "agile_torch", "_bin", "agilectl")
    # AGILE_LIBRARY overrides both.
    p = _probe(top, AGILE_LIBRARY=os.path.join(build, "lib", "libagile.so"))
    assert p.stdout.split()[1] == os.path.join(build, "lib", "libagile.so")


def test_session_api_imports_without_torch(tmp_path):
    """worker_status(), session_info() and init() resolve without importing torch."""
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "import agile_torch\n"
            "for n in ('worker_status', 'session_info', 'init'): getattr(agile_torch, n)\n"
            "print('ok')")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
