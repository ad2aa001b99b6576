"""agile_torch on a GPU (issue 8): pool() and enable() give the same training losses as
native PyTorch, the worker sees the tenant's bytes, a full pool raises OutOfMemoryError
naming the quota, and another tenant's window holds no mapping of our memory."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import Worker, communicate

pytestmark = pytest.mark.gpu
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

TRAIN = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    import torch
    mode = {mode!r}
    import agile_torch
    if mode != "native":
        agile_torch.init(runtime_dir={dir!r}, backend="cuda")
    if mode == "enable":
        agile_torch.enable()
    torch.manual_seed(0)
    def run():
        model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(),
                                    torch.nn.Linear(512, 10)).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        g = torch.Generator(device="cpu").manual_seed(1)
        x = torch.randn(512, 256, generator=g).cuda()
        y = torch.randint(0, 10, (512,), generator=g).cuda()
        losses = []
        for _ in range(20):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, x
    if mode == "pool":
        with agile_torch.use_pool():
            losses, x = run()
    else:
        losses, x = run()
    out = {{"losses": losses}}
    if mode != "native":
        out["agile_tensor"] = agile_torch.is_agile_tensor(x)
        out["stats"] = agile_torch.memory_stats()
        out["status"] = agile_torch.worker_status()
        out["tenant"] = agile_torch.session_info()["tenant"]
        if mode == "enable":
            try:
                torch.cuda.memory.change_current_allocator
                agile_torch.enable()  # idempotent once enabled
                out["enable_again"] = "ok"
            except Exception as e:
                out["enable_again"] = repr(e)
    print("JSON" + json.dumps(out), flush=True)
""")


def run_py(code, env=None, timeout=None):
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    o, e = communicate(p, None, timeout)
    assert p.returncode == 0, o + e
    line = [l for l in o.splitlines() if l.startswith("JSON")][-1]
    return json.loads(line[4:])


@pytest.fixture
def gpu_worker(rundir):
    w = Worker(rundir, backend="cuda")
    yield w
    w.stop()


def test_cuda_worker_status_shows_the_gpu(gpu_worker):
    st = gpu_worker.status()
    assert st["backend"] == "cuda"
    assert st["devices"][0]["name"] and st["devices"][0]["total_bytes"] > 0
    print(json.dumps(st["devices"]))


def test_pool_and_enable_train_like_native(gpu_worker):
    native = run_py(TRAIN.format(root=ROOT, dir=gpu_worker.dir, mode="native"))
    pool = run_py(TRAIN.format(root=ROOT, dir=gpu_worker.dir, mode="pool"))
    enab = run_py(TRAIN.format(root=ROOT, dir=gpu_worker.dir, mode="enable"))
    for r in (pool, enab):
        assert r["agile_tensor"] is True
        assert r["losses"] == pytest.approx(native["losses"], rel=1e-5, abs=1e-6)
        assert r["stats"]["reserved_bytes.all.current"] > 0
        me = [t for t in r["status"]["tenants"] if t["uid"] == r["tenant"]][0]
        assert me["leased_bytes"] > 0
    print("losses native", native["losses"][:3], "pool", pool["losses"][:3], "enable", enab["losses"][:3])


def test_enable_after_cuda_init_says_so(gpu_worker):
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {ROOT!r})
        import torch, agile_torch, json
        torch.zeros(1, device="cuda")
        try:
            agile_torch.enable()
            print("JSON" + json.dumps({{"err": None}}))
        except RuntimeError as e:
            print("JSON" + json.dumps({{"err": str(e)}}))
    """)
    r = run_py(code)
    assert r["err"] and "before CUDA is initialised" in r["err"]


def test_full_pool_raises_oom_with_quota(rundir, tmp_path):
    conf = tmp_path / "q.conf"
    conf.write_text("quota = 512MiB\n")
    w = Worker(rundir, backend="cuda", config=str(conf))
    try:
        code = textwrap.dedent(f"""
            import sys, json; sys.path.insert(0, {ROOT!r})
            import torch, agile_torch
            agile_torch.init(runtime_dir={rundir!r})
            keep = []
            err = None
            try:
                with agile_torch.use_pool():
                    for i in range(10):
                        keep.append(torch.empty(128 << 20, dtype=torch.uint8, device="cuda"))
            except torch.OutOfMemoryError as e:
                err = str(e)
            print("JSON" + json.dumps({{"err": err, "n": len(keep)}}))
        """)
        r = run_py(code)
        assert r["err"] and "quota 536870912 bytes" in r["err"], r
        assert 1 <= r["n"] <= 4
    finally:
        w.stop()


def test_other_tenant_window_holds_no_mapping_of_ours(gpu_worker):
    owner = textwrap.dedent(f"""
        import sys, json, time; sys.path.insert(0, {ROOT!r})
        import torch, agile_torch
        agile_torch.init(runtime_dir={gpu_worker.dir!r})
        with agile_torch.use_pool():
            x = torch.full((1 << 20,), 0x5A, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        base, size = agile_torch.pool_window()
        print(json.dumps({{"ptr": x.data_ptr(), "off": x.data_ptr() - base}}), flush=True)
        sys.stdin.readline()
    """)
    p = subprocess.Popen([sys.executable, "-c", owner], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    info = json.loads(p.stdout.readline())
    try:
        spy = textwrap.dedent(f"""
            import sys, json, ctypes; sys.path.insert(0, {ROOT!r})
            import torch, agile_torch
            agile_torch.init(runtime_dir={gpu_worker.dir!r})
            with agile_torch.use_pool():
                y = torch.empty((64 << 20,), dtype=torch.uint8, device="cuda")
            base, size = agile_torch.pool_window()
            cu = ctypes.CDLL("libcuda.so.1")
            buf = (ctypes.c_uint8 * 4096)()
            # the owner's absolute address: either unmapped here, or (windows are often reserved
            # at the same VA in every process) our own memory, never the owner's bytes
            r_abs = cu.cuMemcpyDtoH_v2(buf, ctypes.c_uint64({info['ptr']}), 4096)
            abs_has_theirs = r_abs == 0 and all(b == 0x5A for b in buf)
            # the same window offset in our own window is our (scrubbed) memory, not theirs
            same = y[{info['off']} % (64 << 20):][:4096].cpu()
            print("JSON" + json.dumps({{"r_abs": r_abs, "abs_has_theirs": abs_has_theirs,
                                        "same_has_theirs": bool((same == 0x5A).all()),
                                        "same_zero": bool((same == 0).all())}}))
        """)
        r = run_py(spy)
        assert not r["abs_has_theirs"]
        assert not r["same_has_theirs"]
        assert r["same_zero"]
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(30)
