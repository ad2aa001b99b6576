"""Windows per tenant, shared by its sessions (issue 12 item 3), on the host backend with real
processes. Before, every session had its own 8 GiB window (~1025 mappings in the worker, whose
limit is 65530), so 64 sessions of one uid that each leased and released a byte left every
other tenant's lease failing with ENOMEM. Now the tenant's sessions share one window: the
worker's mappings stay bounded, offsets never overlap between sessions, a session's end frees
its own leases only, and the window's sink shows in status and counts in the quota."""
import concurrent.futures
import os
import struct
import subprocess

import agilec
from conftest import Worker, drop_to
from test_fairness_host import bench_for
from test_shared import opendir  # noqa: F401 (a fixture: a runtime dir every uid can reach)
from test_worker import msg, parse_reply, wait_for

NOBODY = 65534
SESSIONS = 64
LEASE_GROW, LEASE_RELEASE = 7, 8
GRAN = 2 << 20


def lease(c, nbytes):
    """A raw LEASE_GROW on c's session: (status, handle, offset, size). The fd the worker
    passes stays unread in the client's fd socket; the lease is the worker's."""
    rv, rep = c.raw(msg(LEASE_GROW, struct.pack("<IIQ", 0, 0, nbytes)))
    assert rv == 0, rv
    r = parse_reply(rep)
    if r["status"]:
        return r["status"], 0, 0, 0
    h, off, size = struct.unpack_from("<QQQ", r["body"])
    return 0, h, off, size


def release(c, h):
    rv, rep = c.raw(msg(LEASE_RELEASE, struct.pack("<Q", h)))
    assert rv == 0, rv
    return parse_reply(rep)["status"]


def maps(pid):
    with open(f"/proc/{pid}/maps") as f:
        return sum(1 for _ in f)


def mine(w, uid=None):
    uid = os.getuid() if uid is None else uid
    return [t for t in w.status()["tenants"] if t["uid"] == uid][0]


def other_tenant_leases(w, uid):
    """A process of uid (None: ours) leases 64 MiB (agile_malloc) and sets it through its ring:
    fairness-host-bench's flood mode, ended after its first memset."""
    p = subprocess.run([bench_for(uid), "flood", "--runtime-dir", w.dir, "--bytes", str(64 << 20),
                        "--paced"], input="", capture_output=True, text=True, timeout=120,
                       preexec_fn=drop_to(uid) if uid is not None else None)
    return p.returncode == 0 and p.stdout.startswith("flooding"), p.stderr


def test_many_sessions_share_one_window(opendir, lib):
    root = os.geteuid() == 0
    w = Worker(opendir, "--shared") if root else Worker(opendir)
    clients = []
    try:
        base = maps(w.proc.pid)
        c0 = agilec.Client(lib, opendir)
        clients.append(c0)
        st, h, off, size = lease(c0, 1)
        assert st == 0 and size >= GRAN
        one_window = maps(w.proc.pid) - base
        assert release(c0, h) == 0
        t = mine(w)
        assert t["sink_bytes_per_gpu"][0] > 0 and t["leased_bytes"] == 0
        print(f"\none window: {one_window} mappings in the worker, sink "
              f"{t['sink_bytes_per_gpu'][0]} bytes")
        # 64 sessions of one uid, each leasing and releasing a byte, all staying connected
        for _ in range(SESSIONS - 1):
            c = agilec.Client(lib, opendir)
            clients.append(c)
            st, h, _, _ = lease(c, 1)
            assert st == 0, st
            assert release(c, h) == 0
        n = maps(w.proc.pid) - base
        print(f"{SESSIONS} sessions of one uid: {n} mappings (one window: {one_window})")
        # one window's worth, not 64 (threads' malloc arenas may add a few dozen lines)
        assert n < one_window * 3 // 2, (n, one_window)
        assert mine(w)["sessions"] >= SESSIONS  # (agilectl status is a session too)
        # another tenant (uid 65534 as root, else this uid in another process) still leases
        ok, err = other_tenant_leases(w, NOBODY if root else None)
        assert ok, err
        # sessions leasing at the same time get disjoint offsets; ending one frees only its own
        with concurrent.futures.ThreadPoolExecutor(8) as ex:  # ctypes lets the GIL go
            got = list(ex.map(lambda c: (c, *lease(c, 3 << 20)), clients[:8]))
        held = []
        for c, st, h, off, size in got:
            assert st == 0, st
            held.append((c, h, off, size))
        spans = sorted((off, off + size) for _, _, off, size in held)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
        before = mine(w)["leased_bytes"]
        gone = held.pop(0)
        gone[0].close()
        clients.remove(gone[0])
        assert wait_for(lambda: mine(w)["leased_bytes"] == before - gone[3], 60) is not None
        for c, h, off, size in held:  # the others' leases are there: releasing works once
            assert release(c, h) == 0
            assert release(c, h) != 0
    finally:
        for c in clients:
            c.close()
        w.stop()


def test_window_released_with_the_last_session(rundir, lib):
    w = Worker(rundir)
    try:
        base = maps(w.proc.pid)
        a, b = agilec.Client(lib, rundir), agilec.Client(lib, rundir)
        assert lease(a, 1)[0] == 0 and lease(b, 1)[0] == 0
        peak = maps(w.proc.pid)
        assert peak - base > 512  # the window's sink mappings
        sink = mine(w)["sink_bytes_per_gpu"][0]
        assert sink > 0
        a.close()
        assert wait_for(lambda: mine(w)["objects"]["LEASE"] == 1, 60) is not None
        assert mine(w)["sink_bytes_per_gpu"][0] == sink  # b still holds the window
        b.close()
        assert wait_for(lambda: mine(w)["sink_bytes_per_gpu"][0] == 0, 60) is not None
        # its mappings are gone (other lines may come and go: threads' malloc arenas)
        assert wait_for(lambda: maps(w.proc.pid) <= base + (peak - base) // 4, 60) is not None
    finally:
        w.stop()


def test_sink_counts_in_the_quota(rundir, lib, tmp_path):
    conf = tmp_path / "agile.conf"
    conf.write_text("quota = 64MiB\nlease_step = 2MiB\n")
    w = Worker(rundir, config=str(conf))
    try:
        c = agilec.Client(lib, rundir)
        st, h, off, size = lease(c, 2 << 20)
        assert st == 0
        sink = mine(w)["sink_bytes_per_gpu"][0]
        assert sink >= GRAN
        st, _, _, _ = lease(c, (64 << 20) - size - sink + GRAN)  # one granule too many
        assert st != 0
        assert mine(w)["quota_refusals"] >= 1
        st, _, _, _ = lease(c, (64 << 20) - size - sink)  # exactly what is left
        assert st == 0, st
        c.close()
    finally:
        w.stop()
