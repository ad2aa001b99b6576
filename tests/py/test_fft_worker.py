"""The fft module served by the worker, end to end on the host backend (issue 6): plans and
execs through libagile's agile_fft_* (real worker process, real nng, FFTW), results against
numpy.fft, window bounds, handle checks, policy, and reclamation of a killed client's plans.

Each scenario runs in a child process: libagile's default client is per process."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import agilec
from conftest import Worker
from test_worker import wait_for

np = pytest.importorskip("numpy")

PRELUDE = textwrap.dedent("""
    import ctypes, json, sys, time
    import numpy as np
    sys.path.insert(0, {here!r})
    import agilec
    lib = agilec.load_mem(agilec.load(), {dir!r})
    LL = ctypes.POINTER(ctypes.c_longlong)
    lib.agile_fft_plan_many.argtypes = [ctypes.c_int, ctypes.c_int, LL, LL, ctypes.c_longlong,
        ctypes.c_longlong, LL, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_int,
        ctypes.c_longlong, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)]
    lib.agile_fft_exec.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                   ctypes.c_void_p]
    lib.agile_fft_destroy.argtypes = [ctypes.c_uint64]
    C2C, R2C, C2R, Z2Z, D2Z, Z2D = 0x29, 0x2a, 0x2c, 0x69, 0x6a, 0x6c

    def arr(vals):
        return (ctypes.c_longlong * len(vals))(*vals) if vals is not None else None

    def plan(typ, n, batch=1, inplace=0, inembed=None, istride=0, idist=0, onembed=None,
             ostride=0, odist=0):
        h = ctypes.c_uint64()
        rv = lib.agile_fft_plan_many(0, len(n), arr(n), arr(inembed), istride, idist,
                                     arr(onembed), ostride, odist, typ, batch, inplace,
                                     ctypes.byref(h))
        return rv, h.value

    def buf(nbytes, dtype):
        p = lib.agile_malloc(nbytes, 0, None)
        assert p, lib.agile_last_error()
        a = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(p)).view(dtype)
        return p, a

    def err():
        return lib.agile_last_error().decode()
""")


def child(worker, body, wait=True):
    code = PRELUDE.format(here=os.path.dirname(__file__), dir=worker.dir) + textwrap.dedent(body)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if not wait:
        return p
    out, errout = p.communicate(timeout=120)
    assert p.returncode == 0, out + errout
    return json.loads(out.strip().splitlines()[-1])


def mine(worker):
    return [t for t in worker.status()["tenants"] if t["uid"] == os.getuid()][0]


def test_transforms_match_numpy(worker):
    r = child(worker, """
        rng = np.random.default_rng(1)
        res = {}
        # batched 1-D C2C, both directions (unnormalised, numpy's ifft * n)
        n, b = 256, 8
        pi, ai = buf(n * b * 8, np.complex64)
        po, ao = buf(n * b * 8, np.complex64)
        x = (rng.standard_normal((b, n)) + 1j * rng.standard_normal((b, n))).astype(np.complex64)
        ai[:] = x.ravel()
        rv, h = plan(C2C, [n], b)
        assert rv == 0, err()
        assert lib.agile_fft_exec(h, pi, po, -1, None) == 0, err()
        res["c2c_fwd"] = float(np.abs(ao.reshape(b, n) - np.fft.fft(x, axis=1)).max())
        assert lib.agile_fft_exec(h, pi, po, 1, None) == 0, err()
        res["c2c_inv"] = float(np.abs(ao.reshape(b, n) - np.fft.ifft(x, axis=1) * n).max())
        # in place Z2Z 2-D
        pz, az = buf(32 * 48 * 16, np.complex128)
        z = rng.standard_normal((32, 48)) + 1j * rng.standard_normal((32, 48))
        az[:] = z.ravel()
        rv, hz = plan(Z2Z, [32, 48], 1, inplace=1)
        assert rv == 0, err()
        assert lib.agile_fft_exec(hz, pz, pz, -1, None) == 0, err()
        res["z2z_2d_inplace"] = float(np.abs(az.reshape(32, 48) - np.fft.fft2(z)).max())
        # D2Z 2-D, then Z2D back
        pr, ar = buf(16 * 20 * 8, np.float64)
        pc, ac = buf(16 * 11 * 16, np.complex128)
        xr = rng.standard_normal((16, 20))
        ar[:] = xr.ravel()
        rv, hr = plan(D2Z, [16, 20])
        assert rv == 0, err()
        assert lib.agile_fft_exec(hr, pr, pc, -1, None) == 0, err()
        res["d2z"] = float(np.abs(ac.reshape(16, 11) - np.fft.rfft2(xr)).max())
        rv, hb = plan(Z2D, [16, 20])
        assert rv == 0, err()
        pr2, ar2 = buf(16 * 20 * 8, np.float64)
        assert lib.agile_fft_exec(hb, pc, pr2, 1, None) == 0, err()
        res["z2d"] = float(np.abs(ar2.reshape(16, 20) / 320 - xr).max())
        # R2C with an advanced layout: every other row of a 2-D array, strided columns
        rows, cols = 6, 64
        pa, aa = buf(rows * 2 * cols * 4, np.float32)
        xa = rng.standard_normal((rows * 2, cols)).astype(np.float32)
        aa[:] = xa.ravel()
        pb, ab = buf(rows * (cols // 2 + 1) * 8, np.complex64)
        rv, ha = plan(R2C, [cols], rows, inembed=[cols], istride=1, idist=2 * cols,
                      onembed=[cols // 2 + 1], ostride=1, odist=cols // 2 + 1)
        assert rv == 0, err()
        assert lib.agile_fft_exec(ha, pa, pb, -1, None) == 0, err()
        ref = np.fft.rfft(xa[::2].astype(np.float64), axis=1)
        res["r2c_adv"] = float(np.abs(ab.reshape(rows, -1) - ref).max() / np.abs(ref).max())
        for h_ in (h, hz, hr, hb, ha):
            assert lib.agile_fft_destroy(h_) == 0, err()
        print(json.dumps(res))
    """)
    assert r["c2c_fwd"] < 1e-3 and r["c2c_inv"] < 1e-3, r
    assert r["z2z_2d_inplace"] < 1e-9 and r["d2z"] < 1e-9 and r["z2d"] < 1e-12, r
    assert r["r2c_adv"] < 1e-5, r


def test_exec_async_is_ordered_on_the_ring(worker):
    """agile_fft_exec_async: posted on the command ring, run in order with the other commands
    of the stream (20 rounds of: copy an input in, forward, inverse of its output, copy that
    out, through the same buffers), results at the barrier; a plan this process does not hold and an extent past the window fail at once; a
    destroy posted on the ring runs after the execs before it."""
    r = child(worker, """
        lib.agile_fft_exec_async.argtypes = lib.agile_fft_exec.argtypes
        lib.agile_memcpy_async.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                           ctypes.c_void_p]
        lib.agile_barrier.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        rng = np.random.default_rng(7)
        n, b, k = 512, 4, 20
        nb = n * b * 8
        p0, a0 = buf(nb, np.complex64)
        p1, a1 = buf(nb, np.complex64)
        p2, a2 = buf(nb, np.complex64)
        ps, a_s = buf(nb * k, np.complex64)     # k different inputs
        pd, a_d = buf(nb * k, np.complex64)     # and where each round trip lands
        xs = (rng.standard_normal((k, b, n)) +
              1j * rng.standard_normal((k, b, n))).astype(np.complex64)
        a_s[:] = xs.ravel()
        a_d[:] = 0
        x = xs[-1]
        rv, h = plan(C2C, [n], b)
        assert rv == 0, err()
        lib.agile_fft_destroy_async.argtypes = [ctypes.c_uint64, ctypes.c_void_p]
        res = {}
        res["foreign"] = lib.agile_fft_exec_async(h + 1, p0, p1, -1, None)
        base, size = ctypes.c_uint64(), ctypes.c_uint64()
        lib.agile_pool_window(0, ctypes.byref(base), ctypes.byref(size))
        res["past_end"] = lib.agile_fft_exec_async(h, p0, base.value + size.value - 64, -1, None)
        res["past_end_msg"] = err()
        res["bad_dir"] = lib.agile_fft_exec_async(h, p0, p1, 0, None)
        for i in range(k):   # all in flight before one barrier; p0..p2 are reused each time,
            # so any command overtaking the one before it leaves another input's data in pd
            assert lib.agile_memcpy_async(p0, ps + i * nb, nb, None) == 0, err()
            assert lib.agile_fft_exec_async(h, p0, p1, -1, None) == 0, err()
            assert lib.agile_fft_exec_async(h, p1, p2, 1, None) == 0, err()
            assert lib.agile_memcpy_async(pd + i * nb, p2, nb, None) == 0, err()
        # released behind the execs on the ring: they all still find the plan
        assert lib.agile_fft_destroy_async(h, None) == 0, err()
        res["gone"] = lib.agile_fft_exec_async(h, p0, p1, -1, None)
        res["barrier"] = lib.agile_barrier(None, None)
        res["fwd"] = float(np.abs(a1.reshape(b, n) - np.fft.fft(x, axis=1)).max())
        res["roundtrip"] = float(np.abs(a_d.reshape(k, b, n) / n - xs).max())
        res["destroy_again"] = lib.agile_fft_destroy(h)
        print(json.dumps(res))
    """)
    assert r["barrier"] == 0, r
    assert r["fwd"] < 1e-3 and r["roundtrip"] < 1e-5, r
    assert r["foreign"] == agilec.ERR["EHANDLE"], r
    assert r["past_end"] == agilec.ERR["EBOUNDS"] and "window" in r["past_end_msg"], r
    assert r["bad_dir"] == agilec.ERR["EINVAL"], r
    assert r["gone"] == agilec.ERR["EHANDLE"] and r["destroy_again"] == agilec.ERR["EHANDLE"], r


def test_plan_leaving_the_window_is_ebounds_and_writes_nothing(rundir, tmp_path):
    conf = tmp_path / "agile.conf"
    conf.write_text("quota = 64MiB\n")  # W = 64 MiB: an extent past it is easy to describe
    w = Worker(rundir, config=str(conf))
    try:
        r = child(w, """
            n = 1024
            pi, ai = buf(1 << 20, np.complex64)
            po, ao = buf(1 << 20, np.complex64)
            ai[:] = 1.0
            ao[:] = 7.0
            batch = (64 << 20) // (n * 8) + 1     # reads one transform past the window
            rv, h = plan(C2C, [n], batch)
            assert rv == 0, err()
            rv1 = lib.agile_fft_exec(h, pi, po, -1, None)
            msg = err()
            # an in-window start whose output runs off the end of the window
            rv2, h2 = plan(C2C, [n], 4)
            base, size = ctypes.c_uint64(), ctypes.c_uint64()
            lib.agile_pool_window(0, ctypes.byref(base), ctypes.byref(size))
            rv3 = lib.agile_fft_exec(h2, pi, base.value + size.value - 64, -1, None)
            print(json.dumps({"rv1": rv1, "rv3": rv3, "msg": msg,
                              "in_intact": bool((ai == 1.0).all()),
                              "out_intact": bool((ao == 7.0).all())}))
        """)
    finally:
        w.stop()
    assert r["rv1"] == agilec.ERR["EBOUNDS"], r
    assert r["rv3"] == agilec.ERR["EBOUNDS"], r
    assert "window" in r["msg"], r
    assert r["in_intact"] and r["out_intact"], r


def test_stale_forged_and_foreign_plan_handles(worker):
    owner = child(worker, """
        rv, h = plan(C2C, [64])
        assert rv == 0, err()
        print(json.dumps({"h": h}), flush=True)
        sys.stdin.readline()
    """, wait=False)
    owner_h = json.loads(owner.stdout.readline())["h"]
    try:
        r = child(worker, f"""
            pi, ai = buf(64 * 8, np.complex64)
            po, ao = buf(64 * 8, np.complex64)
            rv, h = plan(C2C, [64])
            assert rv == 0, err()
            out = {{}}
            out["ok"] = lib.agile_fft_exec(h, pi, po, -1, None)
            out["foreign"] = lib.agile_fft_exec({owner_h}, pi, po, -1, None)
            out["foreign_msg"] = err()
            out["forged_gen"] = lib.agile_fft_exec(h ^ (1 << 40), pi, po, -1, None)
            out["forged_type"] = lib.agile_fft_exec((h & ~(0xff << 56)) | (2 << 56), pi, po, -1,
                                                    None)
            out["zero"] = lib.agile_fft_exec(0, pi, po, -1, None)
            out["destroy_foreign"] = lib.agile_fft_destroy({owner_h})
            assert lib.agile_fft_destroy(h) == 0, err()
            out["stale"] = lib.agile_fft_exec(h, pi, po, -1, None)
            out["double_destroy"] = lib.agile_fft_destroy(h)
            out["not_agile"] = lib.agile_fft_exec(h, ctypes.addressof(ctypes.c_char()), po, -1,
                                                  None)
            print(json.dumps(out))
        """)
    finally:
        owner.stdin.write("\n")
        owner.stdin.flush()
        owner.communicate(timeout=30)
    EH = agilec.ERR["EHANDLE"]
    assert r["ok"] == 0, r
    assert r["foreign"] == EH and "plan" in r["foreign_msg"], r
    assert r["forged_gen"] == EH and r["forged_type"] == EH and r["zero"] == EH, r
    assert r["destroy_foreign"] == EH and r["stale"] == EH and r["double_destroy"] == EH, r
    assert r["not_agile"] == agilec.ERR["EBOUNDS"], r


def test_policy_without_fft_is_eperm(rundir, tmp_path):
    conf = tmp_path / "agile.conf"
    conf.write_text("modules = none\n")
    w = Worker(rundir, config=str(conf))
    try:
        r = child(w, """
            rv, h = plan(C2C, [64])
            print(json.dumps({"rv": rv, "msg": err()}))
        """)
    finally:
        w.stop()
    assert r["rv"] == agilec.ERR["EPERM"], r
    assert "fft" in r["msg"] and "modules" in r["msg"], r


def test_killed_client_plans_are_released(worker):
    p = child(worker, """
        hs = []
        for n in (64, 128, 256):
            rv, h = plan(C2C, [n], 4)
            assert rv == 0, err()
            hs.append(h)
        pi, ai = buf(256 * 4 * 8, np.complex64)
        assert lib.agile_fft_exec(hs[2], pi, pi + 0, -1, None) in (0, 1)  # placement: EINVAL ok
        print(json.dumps({"n": len(hs)}), flush=True)
        time.sleep(600)
    """, wait=False)
    try:
        assert json.loads(p.stdout.readline())["n"] == 3
        t = mine(worker)
        assert t["objects"]["PLAN"] == 3, t
        assert "protected_bytes" in t, t
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert wait_for(lambda: mine(worker)["objects"]["PLAN"] == 0, 5) is not None, mine(worker)
        assert mine(worker)["protected_bytes"] == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # the worker is still healthy and the plan cache still serves others
    r = child(worker, """
        rv, h = plan(C2C, [64], 4)
        st = (ctypes.c_uint64 * 9)()
        lib.agile_fft_cache_stats.argtypes = [ctypes.c_void_p]
        assert lib.agile_fft_cache_stats(st) == 0, err()
        print(json.dumps({"rv": rv, "hits": st[0], "misses": st[1]}))
    """)
    assert r["rv"] == 0 and r["misses"] >= 3, r


def test_kill_during_concurrent_execs_leaves_a_healthy_worker(worker):
    p = child(worker, """
        import threading
        n, b = 1024, 16
        bufs = [(buf(n * b * 8, np.complex64)[0], buf(n * b * 8, np.complex64)[0])
                for _ in range(4)]
        def loop(i):
            rv, h = plan(C2C, [n], b)
            assert rv == 0, err()
            while True:
                r = lib.agile_fft_exec(h, bufs[i][0], bufs[i][1], -1, None)
                assert r == 0, (r, err())
                if i == 0:  # churn plans too: destroy while the others exec
                    lib.agile_fft_destroy(h)
                    rv, h = plan(C2C, [n], b)
                    assert rv == 0, err()
        for i in range(4):
            threading.Thread(target=loop, args=(i,), daemon=True).start()
        time.sleep(0.3)
        print(json.dumps({"running": True}), flush=True)
        time.sleep(600)
    """, wait=False)
    try:
        assert json.loads(p.stdout.readline())["running"]
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert wait_for(lambda: mine(worker)["objects"]["PLAN"] == 0, 5) is not None, mine(worker)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    r = child(worker, """
        rv, h = plan(Z2Z, [32], 2)
        pi, ai = buf(64 * 16, np.complex128)
        ai[:] = 1.0
        po, ao = buf(64 * 16, np.complex128)
        rv2 = lib.agile_fft_exec(h, pi, po, -1, None)
        print(json.dumps({"rv": rv, "rv2": rv2, "dc": float(ao[0].real)}))
    """)
    assert r == {"rv": 0, "rv2": 0, "dc": 32.0}, r
