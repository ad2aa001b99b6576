"""libagile_cufft.so: an unmodified-style cuFFT C program (csrc/cufft/cufft_sample.c) linked
against the shim runs its FFTs in a host-backend worker and matches a naive DFT."""
import os
import subprocess

import agilec

SAMPLE = os.path.join(agilec.BUILD, "bin", "cufft-sample")


def test_cufft_sample_against_worker(worker):
    assert os.path.exists(SAMPLE), f"{SAMPLE} missing: build first"
    env = dict(os.environ, AGILE_RUNTIME_DIR=worker.dir)
    out = subprocess.run([SAMPLE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cufft-sample: ok" in out.stdout, out.stdout
    # the sample's plans were released with its session
    mine = [t for t in worker.status()["tenants"] if t["uid"] == os.getuid()]
    assert not mine or mine[0]["objects"]["PLAN"] == 0


def test_shim_links_no_cufft():
    lib = os.path.join(agilec.BUILD, "lib", "libagile_cufft.so")
    out = subprocess.run(["ldd", lib], capture_output=True, text=True)
    assert "libcufft" not in out.stdout, out.stdout
