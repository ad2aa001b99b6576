"""Virtualized user pools on the host backend, end to end (issue 8): leases granted in
steps, mapped at the worker's offsets, quota refusal, scrubbing, reclamation on SIGKILL."""
import ctypes
import os
import signal
import subprocess
import sys
import textwrap

import agilec
from conftest import Worker
from test_worker import wait_for

MiB = 1 << 20

CHILD = textwrap.dedent("""
    import ctypes, sys, time
    sys.path.insert(0, {here!r})
    import agilec
    lib = agilec.load_mem(agilec.load(), {dir!r})
    mode = {mode!r}
    if mode == "fill":
        ptrs = []
        for i in range({n}):
            p = lib.agile_malloc({size}, 0, None)
            assert p, lib.agile_last_error()
            ctypes.memset(p, 0xAB, {size})
            ptrs.append(p)
        print("ready", flush=True)
        time.sleep(600)
    elif mode == "probe":
        p = lib.agile_malloc({size}, 0, None)
        assert p, lib.agile_last_error()
        data = ctypes.string_at(p, {size})
        print("zero" if data.count(0) == len(data) else "dirty", flush=True)
    elif mode == "quota":
        a = lib.agile_malloc(100 << 20, 0, None)
        b = lib.agile_malloc(100 << 20, 0, None)
        s = agilec.stats(lib)
        print(bool(a), bool(b), lib.agile_last_error().decode(), s.num_ooms, flush=True)
""")


def run_child(worker, mode, n=1, size=MiB, wait=True):
    code = CHILD.format(here=os.path.dirname(__file__), dir=worker.dir, mode=mode, n=n, size=size)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    if wait:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out
        return out.strip()
    return p


def mine(worker):
    return [t for t in worker.status()["tenants"] if t["uid"] == os.getuid()][0]


def test_malloc_in_window_lease_steps_and_stats(worker, lib):
    lib = agilec.load_mem(lib, worker.dir)
    p = lib.agile_malloc(MiB, 0, None)
    assert p and p % 512 == 0
    base, size = ctypes.c_uint64(), ctypes.c_uint64()
    assert lib.agile_pool_window(0, ctypes.byref(base), ctypes.byref(size)) == 0
    assert base.value % size.value == 0                 # W-aligned
    assert base.value <= p < base.value + size.value     # inside the tenant's window
    assert size.value == 8 << 30                         # quota 8 GiB rounded to 2^k
    ctypes.memset(p, 0x5A, MiB)
    assert ctypes.string_at(p + MiB - 1, 1) == b"\x5a"
    s = agilec.stats(lib)
    assert s.reserved_bytes == 64 * MiB and s.num_grows == 1   # one 64 MiB lease step
    assert s.allocated_bytes >= MiB and s.allocations == 1
    # many more allocations inside the lease: no more grows
    ptrs = [lib.agile_malloc(256 * 1024, 0, None) for _ in range(100)]
    assert all(ptrs) and len(set(ptrs)) == 100
    assert agilec.stats(lib).num_grows == 1
    st = mine(worker)
    assert st["leased_bytes"] == 64 * MiB and st["objects"]["LEASE"] == 1
    # a bad free is refused and counted, nothing else happens
    lib.agile_free(p, 12345, 0, None)
    assert agilec.stats(lib).num_free_errors == 1
    for q in ptrs:
        lib.agile_free(q, 256 * 1024, 0, None)
    lib.agile_free(p, MiB, 0, None)
    assert agilec.stats(lib).allocated_bytes == 0
    assert lib.agile_empty_cache() == 0
    assert agilec.stats(lib).reserved_bytes == 0
    assert wait_for(lambda: mine(worker)["leased_bytes"] == 0, 1.0) is not None


def test_quota_refusal_names_the_quota(rundir, tmp_path):
    conf = tmp_path / "q.conf"
    conf.write_text("quota = 160MiB\n")
    w = Worker(rundir, config=str(conf))
    try:
        out = run_child(w, "quota")
        first, second, rest = out.split(" ", 2)
        assert first == "True" and second == "False"
        assert "exceeds quota" in rest and str(160 * MiB) in rest
        assert mine(w)["quota_refusals"] >= 1
    finally:
        w.stop()


def test_killed_client_memory_reclaimed_and_scrubbed(worker):
    p = run_child(worker, "fill", n=3, size=50 * MiB, wait=False)
    assert p.stdout.readline().strip() == "ready"
    assert mine(worker)["leased_bytes"] >= 150 * MiB
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    took = wait_for(lambda: mine(worker)["leased_bytes"] == 0 and
                    mine(worker)["objects"]["LEASE"] == 0, 60)
    assert took is not None, mine(worker)
    print(f"150 MiB of leases released {took * 1000:.0f} ms after SIGKILL")
    # the next tenant session that leases gets zeroed memory, never the 0xAB pattern
    assert run_child(worker, "probe", size=64 * MiB) == "zero"
