"""A hostile or careless tenant against a --shared worker (issue 12 items 2, 4, 5, 6, 9), host
backend, real processes. Each item has a test that failed before the fix; the last test runs
every attack as uid 65534 while root connects, leases and runs ring commands, all of which
must be served. benchmarks/hostile.py reuses that test's attacks to measure root's slowdown.

The uid-switching tests need root; elsewhere they skip."""
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import agilec
from conftest import Worker, binaries_for, communicate, drop_to
from test_shared import opendir  # noqa: F401 (a fixture: a runtime dir every uid can reach)
from test_fairness_host import bench_for
from test_worker import HDR, MAGIC, wait_for

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LIVE_FUZZ = os.path.join(os.path.dirname(os.path.dirname(agilec.WORKER)), "tests",
                         "worker_live_fuzz")
FDREC = struct.Struct("<IHHQQQQQ")
FDREC_TOKEN, FDREC_REFUSED = 1, 4


def python_for(uid):
    """A python3 that uid can run (this one may live in root's home)."""
    for exe in (sys.executable, shutil.which("python3", path="/usr/bin:/bin") or ""):
        try:
            if exe and subprocess.run([exe, "-c", ""], preexec_fn=drop_to(uid), cwd="/",
                                      capture_output=True).returncode == 0:
                return exe
        except OSError:
            continue
    pytest.skip(f"no python3 that uid {uid} can run")


def libdir_for(uid):
    """libagile's dir that uid can read (beside binaries_for(uid)'s bin/)."""
    return os.path.join(os.path.dirname(os.path.dirname(binaries_for(uid).worker)), "lib")


def err_name(lib, rv):
    lib.agile_err_name.restype = ctypes.c_char_p
    return lib.agile_err_name(rv).decode()


def config(tmp_path, text):
    p = tmp_path / "agile.conf"
    p.write_text(textwrap.dedent(text))
    return str(p)


def ctl(d, *args, user=None, timeout=30):
    return subprocess.run([binaries_for(user).agilectl, "--runtime-dir", d, "--no-start", *args],
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=drop_to(user) if user is not None else None)


def tenants(d, user=None):
    out = ctl(d, "status", "--json", user=user)
    assert out.returncode == 0, out.stderr
    return {t["uid"]: t for t in json.loads(out.stdout)["tenants"]}


def limited_worker(d, tmp_path, sessions, pending):
    """A --shared worker whose uids get `sessions` sessions and `pending` pending ones."""
    return Worker(d, "--shared", config=config(tmp_path, f"""
        [default]
        max_sessions = {sessions}
        max_pending = {pending}
    """))


def live_fuzz_for_others(attack_dir):
    """worker_live_fuzz copied where another uid can run it."""
    exe = os.path.join(attack_dir, "worker_live_fuzz")
    shutil.copy2(LIVE_FUZZ, exe)
    os.chmod(exe, 0o755)
    return exe


def fd_connect(d):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(d, "agile.fd.sock"))
    return s


def fd_record(s, timeout=30):
    s.settimeout(timeout)
    data = b""
    while len(data) < FDREC.size:
        chunk = s.recv(FDREC.size - len(data))
        if not chunk:
            return None
        data += chunk
    magic, ver, kind, seq, handle, a, b, _ = FDREC.unpack(data)
    return {"kind": kind, "handle": handle, "a": a, "b": b}


# ---- item 2: malformed control requests --------------------------------------------------

def test_malformed_storm_is_answered_and_status_answers_at_once(opendir):
    """200 connections x 8 malformed messages (random bytes, truncated, right magic + garbage,
    lying lengths, reply flags, other majors): each gets an error reply, and afterwards a
    fresh client's status comes back at once. Before: no reply to any (each send waited out
    its timeout) and the worker's contexts ended up stuck."""
    w = Worker(opendir, "--shared")
    try:
        out = subprocess.run([LIVE_FUZZ, "--runtime-dir", opendir, "--storm", "200", "8"],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr + w.logtext()[-3000:]
        print(out.stdout.strip())
        t0 = time.monotonic()
        st = tenants(opendir)
        took = time.monotonic() - t0
        assert os.geteuid() in st
        assert took < 10, f"status took {took:.1f} s after the storm"
        print(f"agilectl status after the storm: {took * 1000:.0f} ms")
        # counted (a few mutations happen to be well formed: a HELLO with a wrong token)
        assert json.loads(ctl(opendir, "status", "--json").stdout)["protocol_errors"] >= 1200
    finally:
        assert w.stop() == 0


@as_root
def test_malformed_storm_other_uid_status_at_once(opendir):
    w = Worker(opendir, "--shared")
    try:
        out = subprocess.run([LIVE_FUZZ, "--runtime-dir", opendir, "--storm", "200", "8"],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        t0 = time.monotonic()
        assert NOBODY in tenants(opendir, user=NOBODY)
        assert time.monotonic() - t0 < 10
    finally:
        assert w.stop() == 0


# ---- item 5: sessions and pending connections per uid --------------------------------------

def test_session_and_pending_limits_per_uid(opendir, lib, tmp_path):
    """A uid past max_sessions / max_pending is refused with AGILE_ELIMIT naming the limit;
    refusals are counted and their log lines rate-limited. Before: no per-uid limit (one uid
    could take all 4096 sessions) and one unthrottled log line per refusal."""
    w = limited_worker(opendir, tmp_path, 4, 2)
    held, socks = [], []
    try:
        for _ in range(4):
            held.append(agilec.Client(lib, opendir))
        with pytest.raises(OSError) as e:
            agilec.Client(lib, opendir)
        assert e.value.errno == agilec.ERR["ELIMIT"], str(e.value)
        assert "max_sessions: 4" in str(e.value), str(e.value)
        assert err_name(lib, e.value.errno) == "AGILE_ELIMIT"
        for c in held:
            c.close()
        held = []
        # sessions are torn down by the reaper: wait until only agilectl's own is left
        assert wait_for(lambda: tenants(opendir)[os.geteuid()]["sessions"] <= 1, 60) is not None
        # two connections that never say HELLO: the third is refused, with a record saying why
        for _ in range(2):
            s = fd_connect(opendir)
            assert fd_record(s)["kind"] == FDREC_TOKEN
            socks.append(s)
        s = fd_connect(opendir)
        r = fd_record(s)
        assert r["kind"] == FDREC_REFUSED and r["a"] == agilec.ERR["ELIMIT"], r
        assert r["handle"] == 2 and r["b"] == 2, r
        s.close()
        # a flood of refusals writes a few log lines, then one saying how many it left out
        for _ in range(300):
            s = fd_connect(opendir)
            fd_record(s)
            s.close()
        lines = [ln for ln in w.logtext().splitlines() if "refusing connection" in ln]
        assert 2 <= len(lines) <= 12, len(lines)

        def suppressed_said():
            s = fd_connect(opendir)
            fd_record(s)
            s.close()
            return "similar lines suppressed" in w.logtext()
        assert wait_for(suppressed_said, 60) is not None
        # agilectl is a connection not past HELLO too: refused while the two are held
        out = ctl(opendir, "status")
        assert out.returncode == 1 and "max_pending: 2" in out.stderr, out.stderr
        for s in socks:
            s.close()
        socks = []
        # the pending ones gone, the uid connects again
        assert wait_for(lambda: ctl(opendir, "status").returncode == 0, 60) is not None
        me = tenants(opendir)[os.geteuid()]
        assert me["refusals"]["sessions"] == 1 and me["refusals"]["pending"] >= 300
        assert me["limits"]["max_sessions"] == 4 and me["limits"]["max_pending"] == 2
        assert me["pending_sessions"] == 0
        held.append(agilec.Client(lib, opendir))
    finally:
        for c in held:
            c.close()
        for s in socks:
            s.close()
        assert w.stop() == 0


@as_root
def test_one_uid_at_its_session_limit_leaves_others_served(opendir, tmp_path):
    w = limited_worker(opendir, tmp_path, 3, 3)
    try:
        hog = subprocess.Popen([python_for(NOBODY), "-c", ATTACK_PRELUDE + textwrap.dedent("""
            held = []
            while True:
                try:
                    held.append(connect())
                except OSError as e:
                    print("refused", e, flush=True)
                    break
            sys.stdin.read()
        """), libdir_for(NOBODY), opendir], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, preexec_fn=drop_to(NOBODY), cwd="/")
        line = hog.stdout.readline()
        assert line.startswith("refused") and "max_sessions" in line, line
        assert tenants(opendir)[os.geteuid()]["sessions"] == 1  # ours: agilectl
        assert tenants(opendir)[NOBODY]["refusals"]["sessions"] == 1
        hog.stdin.close()
        hog.wait(60)
    finally:
        assert w.stop() == 0


@as_root
def test_control_connections_per_uid_are_bounded(opendir, tmp_path, attack_dir):
    """nng connections that never send anything: a uid gets max_sessions + max_pending of them,
    the rest are closed as they come (counted); other uids are served meanwhile."""
    w = limited_worker(opendir, tmp_path, 4, 2)
    try:
        p = subprocess.Popen([live_fuzz_for_others(attack_dir), "--runtime-dir", opendir,
                              "--hold", "50"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             preexec_fn=drop_to(NOBODY), cwd="/")
        try:
            p.stdout.readline()  # the seed
            assert p.stdout.readline().strip() == "holding"

            def hoarded():
                t = tenants(opendir).get(NOBODY)
                # at most 6 held (one may have gone: nng ends a pipe now and then)
                return t and t["connections"] <= 6 and t["refusals"]["connections"] >= 44
            # generous bounds: 50 connections, each refused in turn, on a machine that may be
            # at load 16 (60 s ran out once there)
            assert wait_for(hoarded, 240) is not None, json.dumps(tenants(opendir).get(NOBODY))
        finally:
            p.stdin.close()
            p.wait(120)
        assert wait_for(lambda: tenants(opendir)[NOBODY]["connections"] == 0, 240) is not None
        assert "closing a control connection" in w.logtext()
    finally:
        assert w.stop() == 0


# ---- item 4: objects per tenant ------------------------------------------------------------

def test_object_limit_per_tenant_refused_and_counted(opendir, lib, tmp_path):
    """Past max_objects a tenant's creates are AGILE_ELIMIT (naming max_objects) and counted;
    the limit is the tenant's, over all its sessions. Before: one tenant could fill the
    worker's whole table (2^20 entries) and every uid's connect failed."""
    cfg = config(tmp_path, """
        [default]
        max_objects = 100
    """)
    w = Worker(opendir, "--shared", config=cfg)
    try:
        a, b = agilec.Client(lib, opendir), agilec.Client(lib, opendir)
        made, rv = 0, 0
        while made < 1000:
            rv, _ = (a if made % 2 else b).create()
            if rv:
                break
            made += 1
        assert err_name(lib, rv) == "AGILE_ELIMIT"
        assert "max_objects 100" in lib.agile_last_error().decode()
        assert made == 98  # the two sessions' own handles count
        me = tenants(opendir)[os.geteuid()]
        assert me["refusals"]["objects"] == 1 and me["limits"]["max_objects"] == 100
        # a session of the tenant at its limit still connects (its handle is never refused)
        c = agilec.Client(lib, opendir)
        assert c.ping() == 0
        c.close()
        b.close()
        assert wait_for(lambda: tenants(opendir)[os.geteuid()]["object_count"] <= 50, 60)
        assert a.create()[0] == 0
        a.close()
    finally:
        assert w.stop() == 0


# ---- item 6: module size and concurrent loads ----------------------------------------------

def big_ptx(nbytes, regs=2000):
    """A valid kernel of about nbytes: a chain of adds over many registers and a fenced store."""
    head = textwrap.dedent(f"""\
        .version 8.0
        .target sm_80
        .address_size 64
        .visible .entry big(.param .u64 p)
        {{
        .reg .b32 %r<{regs + 1}>;
        .reg .b64 %rd<2>;
        ld.param.u64 %rd1, [p];
        mov.u32 %r0, 1;
        """)
    body, i = [], 0
    size = len(head)
    while size < nbytes:
        line = f"add.u32 %r{i % regs + 1}, %r{(i + 7) % regs}, {i & 1023};\n"
        body.append(line)
        size += len(line)
        i += 1
    tail = f"st.global.u32 [%rd1], %r{regs};\nret;\n}}\n"
    return (head + "".join(body) + tail).encode()


MODULE_CHILD = textwrap.dedent("""
    import ctypes, json, sys, threading
    sys.path.insert(0, {here!r})
    import agilec
    lib = agilec.load_mem(agilec.load(), {dir!r})
    lib.agile_module_load.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                      ctypes.POINTER(ctypes.c_uint64)]
    lib.agile_err_name.restype = ctypes.c_char_p
    ptx = open({ptx!r}, "rb").read()
    res, msgs = [], []
    def load():
        m = ctypes.c_uint64()
        rv = lib.agile_module_load(ptx, len(ptx), 0, ctypes.byref(m))
        res.append(lib.agile_err_name(rv).decode())
        msgs.append(lib.agile_last_error().decode())
    big = {big!r}
    if big:
        load()
    else:
        ts = [threading.Thread(target=load) for _ in range({n})]
        [t.start() for t in ts]
        [t.join() for t in ts]
    print(json.dumps({{"res": res, "msgs": msgs}}), flush=True)
""")


def module_child(d, ptx_path, n=1, big=False):
    p = subprocess.Popen([sys.executable, "-c", MODULE_CHILD.format(
        here=HERE, dir=d, ptx=ptx_path, n=n, big=big)], stdout=subprocess.PIPE, text=True)
    o, _ = communicate(p, timeout=300)
    assert p.returncode == 0, o
    return json.loads(o)


def test_module_size_cap_and_concurrent_loads_per_tenant(opendir, tmp_path):
    """MODULE_LOAD past max_module_bytes is AGILE_ETOOBIG naming the limit; past
    max_module_loads in flight it is AGILE_ELIMIT; both counted. Before: 16 MiB accepted and
    32 concurrent loads of one tenant held every worker context."""
    cfg = config(tmp_path, """
        [default]
        max_module_bytes = 256KiB
        max_module_loads = 1
    """)
    w = Worker(opendir, "--shared", config=cfg)
    try:
        big = tmp_path / "big.ptx"
        big.write_bytes(big_ptx(300 << 10))
        r = module_child(opendir, str(big), big=True)
        assert r["res"] == ["AGILE_ETOOBIG"] and "max_module_bytes (262144)" in r["msgs"][0], r
        fits = tmp_path / "fits.ptx"
        fits.write_bytes(big_ptx(250 << 10))
        r = module_child(opendir, str(fits), n=12)
        assert set(r["res"]) <= {"AGILE_OK", "AGILE_EREJECT", "AGILE_ELIMIT"}, r
        assert "AGILE_ELIMIT" in r["res"], r  # twelve at once, one admitted at a time
        assert any("max_module_loads" in m for m in r["msgs"])
        me = tenants(opendir)[os.geteuid()]
        assert me["refusals"]["module_bytes"] == 1 and me["refusals"]["requests"] >= 1
        assert me["module_loads_in_flight"] == 0 and me["requests_in_flight"] <= 1
    finally:
        assert w.stop() == 0


def guard_children(worker_pid):
    """The worker's guard processes (worker/guardproc.h): its children named agile-guard-job."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                name = f.read().split(b"\0")[0]
        except (OSError, ValueError, IndexError):
            continue
        if ppid == worker_pid and name == b"agile-guard-job":
            found.append(int(pid))
    return found


def foreign_fds(pid):
    """pid's fds past 0-2 that could be the worker's: sockets, memfds, shm, anonymous."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if int(fd) > 2 and (target.startswith(("socket:", "anon_inode:", "/memfd:")) or
                            target.startswith("/dev/shm")):
            out.append((fd, target))
    return out


def test_a_crashed_guard_process_fails_its_load_only(opendir, tmp_path):
    """Guard work runs in a child process that holds none of the worker's fds; one that
    crashes (here: killed with SIGSEGV while it guards a 3.5 MiB module) fails that load with
    AGILE_EGUARD naming the signal, and the worker goes on serving (a load after it succeeds,
    status answers)."""
    w = Worker(opendir)
    try:
        big = tmp_path / "big.ptx"
        big.write_bytes(big_ptx(7 << 19, regs=20000))
        small = tmp_path / "small.ptx"
        small.write_bytes(big_ptx(4 << 10))
        for _ in range(5):  # the kill must land while the child works: retried if it was done
            p = subprocess.Popen([sys.executable, "-c", MODULE_CHILD.format(
                here=HERE, dir=opendir, ptx=str(big), n=1, big=True)], stdout=subprocess.PIPE,
                text=True)
            kids = []
            assert wait_for(lambda: kids.extend(guard_children(w.proc.pid)) or kids or
                            p.poll() is not None, 120) is not None
            for k in kids:
                # while it works it holds nothing of the worker's: no socket but its own
                # stdin/stdout, no tenant's memory or ring (what it inherited is closed first
                # thing; files it opens itself are its own business)
                seen = []
                assert wait_for(lambda: not seen.append(foreign_fds(k)) and not seen[-1], 60) \
                    is not None, seen[-1]
                os.kill(k, signal.SIGSEGV)
            o, _ = communicate(p, timeout=300)
            assert p.returncode == 0, o
            r = json.loads(o)
            if kids:
                break
        assert kids, "the guard process was never seen working"
        assert r["res"] == ["AGILE_EGUARD"], r
        assert "guard process failed: signal 11" in r["msgs"][0], r
        assert module_child(opendir, str(small))["res"] == ["AGILE_OK"]
        assert tenants(opendir)[os.geteuid()]["module_loads_in_flight"] == 0
        assert "guard process failed" in w.logtext()
    finally:
        assert w.stop() == 0


# ---- item 9: status rows and refused runtime dirs ------------------------------------------

@as_root
def test_shared_status_shows_a_uid_its_own_rows(opendir, lib):
    w = Worker(opendir, "--shared")
    try:
        c = agilec.Client(lib, opendir)
        mine = tenants(opendir, user=NOBODY)
        assert set(mine) == {NOBODY}, mine  # before: root's row too
        out = ctl(opendir, "status", user=NOBODY)
        rows = [ln.split()[0] for ln in out.stdout.splitlines()
                if ln.split() and ("MiB" in ln or "/" in ln) and ln.split()[0].isdigit()]
        assert out.returncode == 0 and set(rows) == {str(NOBODY)}, out.stdout
        assert set(tenants(opendir)) == {0, NOBODY}  # root sees everyone
        c.close()
    finally:
        assert w.stop() == 0


def test_agilectl_says_why_a_runtime_dir_was_refused(tmp_path):
    """A runtime dir squatted as a symlink: agilectl says the worker refused it and why,
    at once. Before: "did not come up in time" after the whole timeout."""
    os.chmod(tmp_path, 0o755)
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "rt"
    link.symlink_to(target)
    t0 = time.monotonic()
    out = subprocess.run([agilec.AGILECTL, "--runtime-dir", str(link), "--start", "status"],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, AGILE_WORKER=agilec.WORKER))
    took = time.monotonic() - t0
    assert out.returncode == 1
    assert "could not start" in out.stderr and "is a symbolic link" in out.stderr, out.stderr
    assert "did not come up in time" not in out.stderr
    assert took < 9, took  # the client's whole timeout is 10 s
    assert not (target / "worker.log").exists()  # nothing written where the link points


@as_root
def test_agilectl_says_why_a_foreign_runtime_dir_was_refused(tmp_path):
    os.chmod(tmp_path, 0o755)
    d = tmp_path / "rt"
    d.mkdir()
    os.chown(d, NOBODY, NOBODY)
    out = subprocess.run([agilec.AGILECTL, "--runtime-dir", str(d), "--start", "status"],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, AGILE_WORKER=agilec.WORKER))
    assert out.returncode == 1 and f"belongs to uid {NOBODY}" in out.stderr, out.stderr


# ---- two uids: every attack, root's latency ------------------------------------------------

# Runs as the attacker: only the copied libagile and this text (the checkout may be out of
# its reach). argv: libagile's dir, the runtime dir.
ATTACK_PRELUDE = textwrap.dedent("""
    import ctypes, os, socket, sys, threading, time
    LIBDIR, DIR = sys.argv[1], sys.argv[2]
    class ConnectOpts(ctypes.Structure):
        _fields_ = [("runtime_dir", ctypes.c_char_p), ("timeout_ms", ctypes.c_int),
                    ("no_autostart", ctypes.c_int), ("worker_path", ctypes.c_char_p),
                    ("backend", ctypes.c_char_p)]
    lib = ctypes.CDLL(os.path.join(LIBDIR, "libagile.so"))
    lib.agile_connect.argtypes = [ctypes.POINTER(ConnectOpts), ctypes.POINTER(ctypes.c_void_p)]
    lib.agile_disconnect.argtypes = [ctypes.c_void_p]
    lib.agile_object_create.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_uint64)]
    lib.agile_last_error.restype = ctypes.c_char_p
    lib.agile_module_load.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                      ctypes.POINTER(ctypes.c_uint64)]
    OPTS = ConnectOpts(DIR.encode(), 20000, 1, None, b"host")
    def connect():
        h = ctypes.c_void_p()
        rv = lib.agile_connect(ctypes.byref(OPTS), ctypes.byref(h))
        if rv:
            raise OSError(rv, lib.agile_last_error().decode())
        return h
""")

ATTACKS = {
    # item 5: every session and pending connection the uid may have, churned
    "sessions": """
        held, pend = [], []
        print("attacking", flush=True)
        while True:
            try:
                held.append(connect())
            except OSError:
                for h in held[: len(held) // 2]:
                    lib.agile_disconnect(h)
                held = held[len(held) // 2:]
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(os.path.join(DIR, "agile.fd.sock"))
            pend.append(s)
            if len(pend) > 80:
                pend.pop(0).close()
    """,
    # item 4: objects up to the tenant's limit, then the session's teardown, over and over
    "objects": """
        print("attacking", flush=True)
        out = ctypes.c_uint64()
        while True:
            h = connect()
            while lib.agile_object_create(h, 3, 0, ctypes.byref(out)) == 0:
                pass
            lib.agile_disconnect(h)
    """,
    # item 3: 64 sessions, each leasing a byte and releasing it, closed and opened again
    "windows": """
        import struct
        HDR = struct.Struct(sys.argv[3])
        lib.agile_raw_request.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                          ctypes.POINTER(ctypes.c_void_p),
                                          ctypes.POINTER(ctypes.c_size_t)]
        def raw(h, typ, body):
            rep, n = ctypes.c_void_p(), ctypes.c_size_t()
            data = HDR.pack(int(sys.argv[4]), 1, 0, typ, 0, len(body), 7, 0, 0) + body
            if lib.agile_raw_request(h, data, len(data), ctypes.byref(rep), ctypes.byref(n)):
                return None
            out = ctypes.string_at(rep, n.value)
            lib.agile_free_string(rep)
            return out
        print("attacking", flush=True)
        while True:
            hs = [connect() for _ in range(64)]
            for h in hs:
                rep = raw(h, 7, struct.pack("<IIQ", 0, 0, 1))  # LEASE_GROW of 1 byte
                if rep and HDR.unpack_from(rep)[7] == 0:
                    raw(h, 8, rep[HDR.size:HDR.size + 8])      # LEASE_RELEASE of it
            for h in hs:
                lib.agile_disconnect(h)
    """,
    # item 6: module loads from many threads, some over the size cap
    "loads": """
        ptx = open(sys.argv[3], "rb").read()
        huge = ptx + b" " * (5 << 20)  # over max_module_bytes (4 MiB)
        lib.agile_init.argtypes = [ctypes.POINTER(ConnectOpts)]
        assert lib.agile_init(ctypes.byref(OPTS)) == 0
        def loop(n):
            m = ctypes.c_uint64()
            p = ptx if n % 4 else huge
            while True:
                lib.agile_module_load(p, len(p), 0, ctypes.byref(m))
        for n in range(32):
            threading.Thread(target=loop, args=(n,), daemon=True).start()
        print("attacking", flush=True)
        while True:
            time.sleep(3600)
    """,
}

VICTIM = textwrap.dedent("""
    import ctypes, json, statistics, sys, time
    sys.path.insert(0, {here!r})
    import agilec
    lib = agilec.load_mem(agilec.load(), {dir!r})
    lib.agile_ring_nop.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
    c = agilec.Client(lib, {dir!r})
    assert lib.agile_ring_nop(c.h, 0, 0) == 0
    conn, lease, ring = [], [], []
    for i in range({n}):
        t0 = time.perf_counter()
        agilec.Client(lib, {dir!r}).close()
        t1 = time.perf_counter()
        p = lib.agile_malloc(64 << 20, 0, None)
        assert p, lib.agile_last_error()
        lib.agile_free(p, 64 << 20, 0, None)
        assert lib.agile_empty_cache() == 0
        lease.append(time.perf_counter() - t1)
        # the ring: one NOP, which wakes the dispatcher (it sleeps when idle, and the connect
        # and lease above left it idle). Back-to-back NOPs are bimodal (a few us while both
        # sides spin, tens when a loaded machine preempts a spinner), so they would compare
        # scheduler luck, not the worker
        t2 = time.perf_counter()
        assert lib.agile_ring_nop(c.h, 0, i) == 0
        conn.append(t1 - t0); ring.append(time.perf_counter() - t2)
    print(json.dumps({{"connect": conn, "lease": lease, "ring": ring}}), flush=True)
""")


def victim(d, n=60):
    p = subprocess.Popen([sys.executable, "-c", VICTIM.format(here=HERE, dir=d, n=n)],
                         stdout=subprocess.PIPE, text=True)
    o, _ = communicate(p, timeout=300)
    assert p.returncode == 0, o
    return json.loads(o)


@pytest.fixture
def attack_dir():
    """Where the attacker's script lives: a 0755 dir of its own."""
    d = tempfile.mkdtemp(prefix="agile-attack.")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def attacker_preexec():
    """The attacker's own process runs at nice 19: on two cores, a uid's processes burning CPU
    slow everyone's whatever the worker does (that is the OS's, or a cgroup's, to share), so
    the two-uid test measures what the worker spends on the attacker, not what the attacker's
    process spends itself."""
    os.nice(19)
    drop_to(NOBODY)()


def start_attack(name, d, attack_dir):
    libdir = libdir_for(NOBODY)
    if name == "malformed":
        # the storm starts with its first connection: nothing to wait for
        return subprocess.Popen([live_fuzz_for_others(attack_dir), "--runtime-dir", d,
                                 "--storm", "1000000", "8"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=attacker_preexec, cwd="/")
    if name == "memsets":
        # item 7: 256 MiB memsets in a loop (benchmarks/fairness_host.c's flooder)
        p = subprocess.Popen([bench_for(NOBODY), "flood", "--runtime-dir", d, "--bytes",
                              str(256 << 20)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=attacker_preexec, cwd="/")
        line = p.stdout.readline()
        if line.strip() != "flooding":
            p.kill()
            raise AssertionError(f"attack {name} did not start: {line!r} {p.communicate()}")
        return p
    script = os.path.join(attack_dir, name + ".py")
    with open(script, "w") as f:
        f.write(ATTACK_PRELUDE + textwrap.dedent(ATTACKS[name]))
    os.chmod(script, 0o644)
    args = [python_for(NOBODY), script, libdir, d]
    if name == "windows":
        args += [HDR.format, str(MAGIC)]
    if name == "loads":
        ptx = os.path.join(attack_dir, "big.ptx")
        with open(ptx, "wb") as f:
            f.write(big_ptx(2 << 20, regs=20000))
        os.chmod(ptx, 0o644)
        args.append(ptx)
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=attacker_preexec, cwd="/")
    line = p.stdout.readline()
    if line.strip() != "attacking":
        p.kill()
        raise AssertionError(f"attack {name} did not start: {line!r} {p.communicate()}")
    return p


def idle(d):
    t = tenants(d).get(NOBODY)
    return t is None or (t["sessions"] == 0 and t["requests_in_flight"] == 0
                         and t["object_count"] == 0)


def med(xs):
    return statistics.median(xs)


# What each attack leaves in the worker's counters (whole status, the attacker's row): its
# excess was refused, not served, or its work was shared out. Malformed messages come before a session names its uid, so
# they count in the worker's total only.
REFUSED = {
    "malformed": lambda s, t: s["protocol_errors"] > 0,
    "sessions": lambda s, t: t["refusals"]["sessions"] + t["refusals"]["pending"] > 0,
    "objects": lambda s, t: t["refusals"]["objects"] > 0,
    "loads": lambda s, t: t["refusals"]["module_bytes"] > 0,
    # served, not refused: the window stays one (its sink counted once), the memsets pause
    # for other work
    "windows": lambda s, t: t["sink_bytes_per_gpu"][0] > 0,
    "memsets": lambda s, t: t["host_op_pauses"] > 0,
}


def refused(attack):
    """Whether a worker status shows `attack` refused."""
    def check(st):
        rows = {t["uid"]: t for t in st["tenants"]}
        return NOBODY in rows and REFUSED[attack](st, rows[NOBODY])
    return check


@as_root
@pytest.mark.parametrize("attack", sorted(REFUSED))
def test_two_uids_attacks_leave_root_served(opendir, attack, attack_dir, tmp_path):
    """While uid 65534 runs each attack, root connects, leases and runs ring commands, and every
    one is answered correctly (the victim asserts each); the attacker's excess is refused and
    counted against its own uid; once it is killed the worker finishes its work and is idle.

    How much slower root's operations are under attack is a figure, not a pass/fail: on two
    shared cores it moves with the machine's load. `python3 benchmarks/run.py hostile` measures
    it (alternating unloaded and attacked rounds, medians, ratios against the 2x goal)."""
    # max_objects low enough for the objects attack to reach it within one victim run
    w = Worker(opendir, "--shared", config=config(tmp_path, """
        [default]
        max_objects = 1024
    """))
    try:
        victim(opendir, n=10)  # warm up: the first lease maps the window
        figures, st = measure_under_attack(opendir, attack, attack_dir, rounds=1,
                                           until=refused(attack))
        print(f"{attack}: " + ", ".join(f"{k} {b:.0f} us unloaded / {l:.0f} us attacked"
                                        for k, (b, l) in figures.items()))
        assert refused(attack)(st), json.dumps(st)
    finally:
        w.stop()


def status(d):
    out = ctl(d, "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def measure_under_attack(d, attack, attack_dir, rounds=4, n=60, until=None):
    """Root's connect, lease and ring round trip (median us) with nobody attacking and while
    uid 65534 runs `attack`, in alternating rounds (a machine whose load drifts affects both
    alike), and the worker's status (agilectl status --json): with `until`, the one in which
    until(status) held (each attack runs on after root's round until it does: the attacker
    runs at nice 19 and may get little CPU on a busy machine), else the one at the end. Fails
    if root is not served, the attack stopped on its own, or the worker does not come back to
    idle."""
    base, loaded = {"connect": [], "lease": [], "ring": []}, {"connect": [], "lease": [], "ring": []}
    during = None
    for _ in range(rounds):
        for k, v in victim(d, n).items():
            base[k] += v
        p = start_attack(attack, d, attack_dir)
        try:
            for k, v in victim(d, n).items():
                loaded[k] += v
            if until is not None:
                seen = []
                assert wait_for(lambda: until(seen.append(status(d)) or seen[-1]), 120) \
                    is not None, seen[-1]
                during = seen[-1]
            assert p.poll() is None, p.stderr.read()
        finally:
            p.kill()
            p.wait()
        # the next unloaded round starts once the worker has finished the attacker's work
        # (a module load in progress runs to its end, a session's teardown too)
        assert wait_for(lambda: idle(d), 120) is not None, tenants(d)
    return {k: (med(base[k]) * 1e6, med(loaded[k]) * 1e6) for k in base}, during or status(d)
