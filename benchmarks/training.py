"""Training steps of a small transformer and a small CNN (fixed seed) with tensors from the
agile pool vs PyTorch's native allocator, in the same run."""
import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

STEP = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {root!r})
    import torch
    mode, model_name = {mode!r}, {model!r}
    if mode in ("enable", "pool"):
        import agile_torch
        agile_torch.init(runtime_dir={dir!r})
        if mode == "enable":
            agile_torch.enable()
        else:
            agile_torch.use_pool().__enter__()
    torch.manual_seed(0)
    if model_name == "transformer":
        model = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True), 4).cuda()
        x = torch.randn(32, 128, 256, device="cuda")
        loss_fn = lambda out: out.pow(2).mean()
    else:
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1),
                                    torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10)).cuda()
        x = torch.randn(64, 3, 64, 64, device="cuda")
        loss_fn = lambda out: out.logsumexp(1).mean()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x))
        loss.backward()
        opt.step()
        return loss
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(60):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    print("JSON" + json.dumps({{"p50_ms": times[len(times) // 2] * 1e3, "p99_ms": times[-1] * 1e3,
                               "runs": len(times), "loss": loss.item()}}), flush=True)
""")


def run(mode, model):
    code = STEP.format(root=ROOT, dir=os.environ.get("AGILE_RUNTIME_DIR", ""), mode=mode, model=model)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(p.stdout + p.stderr)
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("JSON")][-1][4:])


def main():
    res = {}
    print(f"{'model':12s} {'mode':8s} {'native p50 ms':>14s} {'agile p50 ms':>13s} {'ratio':>7s}  same loss")
    for m in ("transformer", "cnn"):
        n = run("native", m)
        res[m] = {"native": n}
        for mode in ("pool", "enable"):
            a = run(mode, m)
            same = abs(a["loss"] - n["loss"]) <= 1e-5 * max(1.0, abs(n["loss"]))
            res[m][mode] = a
            res[m][f"ratio_{mode}_p50"] = a["p50_ms"] / n["p50_ms"]
            res[m][f"same_loss_{mode}"] = same
            print(f"{m:12s} {mode:8s} {n['p50_ms']:14.3f} {a['p50_ms']:13.3f} {a['p50_ms'] / n['p50_ms']:7.3f}  {same}")
    print(json.dumps({"bench": "training", **res}))


if __name__ == "__main__":
    main()
