"""The README's main job, on the host backend: `python3 -m agile_torch.demo --host` runs the
whole story and prints its summary; its worker is stopped afterwards."""
import os
import signal
import subprocess
import sys

import agilec

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_host_demo_runs(rundir):
    env = dict(os.environ, AGILE_BUILD_DIR=agilec.BUILD, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "agile_torch.demo", "--host", "--runtime-dir", rundir],
                       capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        out = p.stdout
        assert "backend host" in out
        assert "data intact: True" in out
        assert "independent verifier: pass" in out
        assert "TENANT(uid)" in out            # agilectl status
        assert "summary (backend host)" in out
        # It ends saying that the worker runs on and how to stop it.
        assert f"is still running on {rundir}" in out
        assert out.strip().splitlines()[-1].endswith(f"agilectl --runtime-dir {rundir} stop")
    finally:
        pid = os.path.join(rundir, "agile.pid")
        if os.path.exists(pid):
            os.kill(int(open(pid).read()), signal.SIGTERM)
