"""Python-level tests of the PTX guard CLI (no GPU): exit codes, reasons, report JSON,
the verifier, and the GPU scripts' launch descriptions (checked without a GPU)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "ptx"
BUILD = pathlib.Path(os.environ.get("AGILE_BUILD_DIR", ROOT / "build"))
GUARD = BUILD / "bin" / "agile-guard"

pytestmark = pytest.mark.skipif(not GUARD.exists(), reason=f"{GUARD} not built")


def run(*args, **kw):
    return subprocess.run([str(GUARD), *map(str, args)], capture_output=True, text=True, **kw)


def test_help():
    p = run("--help")
    assert p.returncode == 0 and "usage: agile-guard" in p.stdout


def test_usage_error():
    assert run().returncode == 2
    assert run("--no-such-option", CORPUS / "basic.ptx").returncode == 2


@pytest.mark.parametrize("ptx", sorted(p.name for p in (CORPUS / "reject").glob("*.ptx")))
def test_reject(ptx):
    path = CORPUS / "reject" / ptx
    want = next(l.split("EXPECT-REJECT:", 1)[1].strip() for l in path.read_text().splitlines() if "EXPECT-REJECT:" in l)
    p = run(path)
    assert p.returncode == 1
    assert p.stderr.startswith(f"{path}:") and want in p.stderr


def test_guard_report_verify(tmp_path):
    out, rep = tmp_path / "o.ptx", tmp_path / "r.json"
    p = run("--strict", "--report", rep, CORPUS / "adversarial.ptx", "-o", out)
    assert p.returncode == 0, p.stderr
    r = json.loads(rep.read_text())
    assert r["accepted"] and r["mode"] == "strict" and r["nsites"] > 0
    entries = [f for f in r["functions"] if f["kind"] == "entry"]
    assert entries and all("__agile_viol" in f["hidden_params"] for f in entries)
    assert run("--verify", out).returncode == 0
    assert run("--verify", CORPUS / "adversarial.ptx").returncode == 1


def test_triton_corpus_guarded():
    files = sorted((CORPUS / "triton").glob("*.ptx")) + sorted((CORPUS / "hand").glob("*.ptx"))
    assert files
    for f in files:
        p = run(f)
        assert p.returncode == 0, f"{f}: {p.stderr}"
        assert "__agile_base" in p.stdout


def test_gpu_launch_descriptions():
    p = subprocess.run([sys.executable, str(ROOT / "guard" / "gpu" / "differential.py"), "--guard", str(GUARD),
                        "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
