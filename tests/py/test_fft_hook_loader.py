"""agile_torch.fft's loader of the C++ hook (libagile_aten.so), without a GPU or PyTorch: a
stand-in `torch` module is enough for the paths that decide whether the hook can load. A hook
that was not built, or was built for another torch, is a clear RuntimeError from
enable_fft(), and one warning (not one per pool() call) from the automatic paths."""
import os
import subprocess
import sys
import textwrap

import agilec

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

PRELUDE = textwrap.dedent("""
    import sys, types, warnings
    sys.path.insert(0, {root!r})
    fake = types.ModuleType("torch")
    fake.__version__ = "2.11.0+cu130"
    sys.modules["torch"] = fake          # only what the loader looks at
    import agile_torch.fft as f
""")


def run(tmp_path, body, **env):
    """body in a child whose libagile sits alone in a directory (no hook beside it, even
    where the build made one)."""
    alone = tmp_path / "lib"
    alone.mkdir()
    (alone / "libagile.so").symlink_to(os.path.realpath(agilec.LIB))
    code = PRELUDE.format(root=ROOT) + textwrap.dedent(body)
    e = {k: v for k, v in os.environ.items() if k != "AGILE_ATEN_LIBRARY"}
    e.update(env, AGILE_LIBRARY=str(alone / "libagile.so"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=e)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_missing_hook_is_a_clear_error_and_one_warning(tmp_path):
    out = run(tmp_path, """
        assert f.hook_library_path() is None
        try:
            f.enable_fft()
            raise SystemExit("enable_fft() did not raise")
        except RuntimeError as e:
            assert "libagile_aten.so was not built" in str(e), e
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            f._auto_enable(); f._auto_enable(); f._auto_enable()
        assert len(w) == 0, [str(x.message) for x in w]   # enable_fft() said it already
        assert not f.is_fft_enabled()
        assert f.enable_fft(quiet=True) is False
        print("ok")
    """)
    assert out.strip().endswith("ok")


def test_hook_built_for_another_torch_is_refused(tmp_path):
    src = tmp_path / "v.c"
    src.write_text('const char *agile_aten_torch_version(void) { return "2.9.1"; }\n')
    lib = tmp_path / "libagile_aten.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    out = run(tmp_path, """
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert f.enable_fft(quiet=True) is False
            f._auto_enable()                  # said once: no second attempt, no second warning
        assert len(w) == 1 and "built against torch 2.9.1" in str(w[0].message), w
        assert "rebuild agile" in str(w[0].message)
        print("ok")
    """, AGILE_ATEN_LIBRARY=str(lib))
    assert out.strip().endswith("ok")


def test_automatic_path_warns_once(tmp_path):
    """pool()/use_pool()/enable() call _auto_enable every time: one warning in all."""
    out = run(tmp_path, """
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for _ in range(3):
                f._auto_enable()
        assert len(w) == 1 and "libagile_aten.so was not built" in str(w[0].message), \\
            [str(x.message) for x in w]
        print("ok")
    """)
    assert out.strip().endswith("ok")


def test_release_compares_major_minor_patch(tmp_path):
    out = run(tmp_path, """
        assert f._release("2.11.0") == f._release("2.11.0+cu130") == "2.11.0"
        assert f._release("2.11.0a0+git1234") == f._release("2.11.0.dev20261101") == "2.11.0"
        assert f._release("2.9.1") != f._release("2.11.0")
        print("ok")
    """)
    assert out.strip().endswith("ok")


def test_memory_reaches_fft_through_hooks_only(tmp_path):
    """memory <-> fft is no import cycle: fft registers its hooks on memory when imported, and
    memory never imports fft."""
    out = run(tmp_path, """
        import ast, inspect
        import agile_torch.memory as m
        assert f._on_pool in m._on_pool and f._on_enable in m._on_enable
        assert f._auto_enable in m._auto_enable
        tree = ast.parse(inspect.getsource(m))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in n.names}
        assert "fft" not in imported and not any(x.endswith(".fft") for x in imported), imported
        print("ok")
    """)
    assert out.strip().endswith("ok")
