"""agile-worker --shared: one worker, several local uids, each its own tenant (host backend).

The uid-switching tests need root (they drop a child to nobody); elsewhere they skip."""
import json
import os
import stat
import subprocess
import tempfile

import pytest

import agilec
from conftest import Worker, binaries_for, drop_to

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")


@pytest.fixture
def opendir():
    """A parent every uid can traverse (TemporaryDirectory makes it 0700)."""
    with tempfile.TemporaryDirectory(prefix="agile-s") as d:
        os.chmod(d, 0o755)
        yield os.path.join(d, "rt")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def ctl(d, *args, user=None):
    return subprocess.run([binaries_for(user).agilectl, "--runtime-dir", d, "--no-start", *args],
                          capture_output=True, text=True, timeout=20,
                          preexec_fn=drop_to(user) if user is not None else None)


def start_fails(d, *extra):
    out = subprocess.run([agilec.WORKER, "--foreground", "--runtime-dir", d, "--backend", "host",
                          *extra], capture_output=True, text=True, timeout=20)
    assert out.returncode == 1, out.stderr
    return out.stderr


def test_help_mentions_shared():
    out = subprocess.run([agilec.WORKER, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--shared" in out.stdout


def test_private_modes_unchanged(opendir):
    w = Worker(opendir)
    try:
        assert mode(opendir) == 0o700
        assert mode(os.path.join(opendir, "agile.sock")) == 0o700
        assert "shared" not in w.logtext()
    finally:
        assert w.stop() == 0


def test_shared_modes(opendir):
    os.mkdir(opendir, 0o700)  # an existing private dir is opened up to 0755
    w = Worker(opendir, "--shared")
    try:
        st = os.stat(opendir)
        assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == os.geteuid()
        for sock in ("agile.sock", "agile.fd.sock"):
            p = os.path.join(opendir, sock)
            assert stat.S_ISSOCK(os.stat(p).st_mode) and mode(p) == 0o666, sock
        assert "shared: every local user may connect" in w.logtext()
        out = ctl(opendir, "status", "--json")
        assert out.returncode == 0, out.stderr
        assert [t["uid"] for t in json.loads(out.stdout)["tenants"]] == [os.geteuid()]
    finally:
        assert w.stop() == 0
    assert not os.path.exists(os.path.join(opendir, "agile.sock"))
    # the same dir without --shared goes back to private
    w = Worker(opendir)
    try:
        assert mode(opendir) == 0o700
    finally:
        w.stop()


@pytest.mark.parametrize("bad", [0o775, 0o757, 0o777])
def test_shared_refuses_a_dir_others_can_write(opendir, bad):
    os.mkdir(opendir)
    os.chmod(opendir, bad)
    err = start_fails(opendir, "--shared")
    assert "writable by group or others" in err and "refusing to share" in err
    assert mode(opendir) == bad  # refused, not repaired
    assert not os.path.exists(os.path.join(opendir, "agile.pid"))


@as_root
def test_shared_refuses_a_foreign_dir(opendir):
    os.mkdir(opendir, 0o755)
    os.chown(opendir, NOBODY, NOBODY)
    assert f"belongs to uid {NOBODY}" in start_fails(opendir, "--shared")


def test_client_refuses_a_dir_others_can_write(opendir):
    w = Worker(opendir, "--shared")
    try:
        os.chmod(opendir, 0o777)  # as if someone loosened it after the worker started
        out = ctl(opendir, "status")
        assert out.returncode != 0 and "writable by group or others" in out.stderr, out.stderr
        os.chmod(opendir, 0o755)
        assert ctl(opendir, "status").returncode == 0
    finally:
        w.stop()


@as_root
def test_client_refuses_a_dir_of_another_non_root_uid(opendir):
    # A worker of uid nobody: root's client must not trust it (it could be anyone's fake).
    os.mkdir(opendir, 0o755)
    os.chown(opendir, NOBODY, NOBODY)  # nobody cannot create it in our parent
    w = Worker(opendir, "--shared", user=NOBODY)
    try:
        assert os.stat(opendir).st_uid == NOBODY
        out = ctl(opendir, "status")
        assert out.returncode != 0 and f"belongs to uid {NOBODY}" in out.stderr, out.stderr
        # its own uid is served as usual
        out = ctl(opendir, "status", "--json", user=NOBODY)
        assert out.returncode == 0, out.stderr
    finally:
        w.stop()


@as_root
def test_private_worker_keeps_other_uids_out(opendir):
    w = Worker(opendir)
    try:
        out = ctl(opendir, "status", "--json", user=NOBODY)
        assert out.returncode != 0
        assert [t["uid"] for t in json.loads(ctl(opendir, "status", "--json").stdout)["tenants"]] \
            == [0]
    finally:
        w.stop()


@as_root
def test_other_uid_is_its_own_tenant(opendir):
    w = Worker(opendir, "--shared")
    try:
        out = ctl(opendir, "status", "--json", user=NOBODY)
        assert out.returncode == 0, out.stderr + w.logtext()[-2000:]
        mine = {t["uid"]: t for t in json.loads(out.stdout)["tenants"]}
        assert mine[NOBODY]["sessions"] == 1  # the one asking
        out = ctl(opendir, "status", "--json")
        assert out.returncode == 0, out.stderr
        tenants = {t["uid"]: t for t in json.loads(out.stdout)["tenants"]}
        assert set(tenants) == {0, NOBODY}
        assert tenants[NOBODY]["sessions"] == 0 and tenants[0]["sessions"] == 1
        assert tenants[NOBODY]["quota_bytes"] == tenants[0]["quota_bytes"]  # same defaults
    finally:
        assert w.stop() == 0
