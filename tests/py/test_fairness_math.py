"""The math of benchmarks/fairness_gpu.py (Jain's index, shares, binning), on the CPU."""
import importlib.util
import os
import subprocess
import sys

import pytest

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "fairness_gpu.py")
spec = importlib.util.spec_from_file_location("fairness_gpu", PATH)
fg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fg)


def test_jain_equal_is_one():
    assert fg.jain([7, 7, 7, 7]) == pytest.approx(1.0)
    assert fg.jain([0.5]) == pytest.approx(1.0)


def test_jain_skewed():
    assert fg.jain([1, 0, 0, 0]) == pytest.approx(0.25)          # one takes all: 1/n
    assert fg.jain([3, 1, 1, 1]) == pytest.approx(36 / 48)
    assert fg.jain([2, 2, 1, 1]) == pytest.approx(36 / 40)
    assert fg.jain([1, 2, 3, 4]) < fg.jain([2, 2, 3, 3]) < 1.0
    assert fg.jain([0, 0, 0]) is None and fg.jain([]) is None    # nothing ran: no verdict


def test_jain_scale_invariant():
    assert fg.jain([3, 1, 1, 1]) == pytest.approx(fg.jain([300, 100, 100, 100]))


def test_bins_spread_a_batch_over_its_interval():
    b = fg.bin_counts([(0.0, 0.2, 20), (0.2, 0.3, 10), (0.95, 1.2, 10)], 0.1, 1.0)
    assert b == pytest.approx([10, 10, 10, 0, 0, 0, 0, 0, 0, 2])  # after 1.0 s: dropped


def test_fairness_report():
    even = [(i * 0.05, (i + 1) * 0.05, 64) for i in range(20)]
    r = fg.fairness([even, even, even, even[:10]], 1.0)
    assert r["share"] == pytest.approx([2 / 7, 2 / 7, 2 / 7, 1 / 7], abs=1e-4)
    assert r["jain"] == pytest.approx(fg.jain([2, 2, 2, 1]))
    w = r["jain_windows"]["values"]
    assert w[0] == pytest.approx(1.0) and w[-1] == pytest.approx(1 / (4 * 3 / 9))  # 3 of 4
    assert len(r["series"]["launches"][0]) == 10


def test_selftest_flag():
    out = subprocess.run([sys.executable, PATH, "--selftest"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "selftest ok" in out.stdout, out.stderr
