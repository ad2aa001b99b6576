"""Build and execute the benchmark notebooks from benchmarks/results/*.json.

    python3 notebooks/make_notebooks.py        (scripts/notebooks installs what it needs)

Writes notebooks/benchmarks.ipynb with its outputs executed (nbclient), so the committed file
shows the plots; rerunning it re-reads the JSON results.
"""
import os
import sys

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))

CELLS = [
    ("md", """# agile benchmarks

Every figure is a ratio against a baseline measured **in the same run** (see
`benchmarks/run.py`). This notebook reads `benchmarks/results/*.json` (the newest file of each
benchmark for each device) and plots them. Re-execute with `scripts/notebooks`."""),
    ("code", """import glob, json, os
%matplotlib inline
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

RES = os.path.join(os.path.dirname(os.path.abspath("__file__")), "..", "benchmarks", "results")
if not os.path.isdir(RES):
    RES = os.path.join("benchmarks", "results")
docs = {}
for p in sorted(glob.glob(os.path.join(RES, "*.json"))):
    d = json.load(open(p))
    if "name" not in d or "results" not in d:
        continue
    dev = d["device"].get("gpu") or d["device"].get("cpu")
    docs[(d["name"], dev)] = d          # sorted by file name: the newest date wins
devices = sorted({k[1] for k in docs})
rows = ["| benchmark | device | date | what |", "|---|---|---|---|"]
for (n, dev), d in sorted(docs.items()):
    rows.append(f"| {n} | {dev} | {d['date']} | {d['what']} |")
display(Markdown("\\n".join(rows)))"""),
    ("md", "## Ratios against their goals\n\nBars are agile/baseline (lower is better) except where the label says *speed-up*; the dashed line is the goal."),
    ("code", """def get(name, dev=None):
    for (n, d), doc in docs.items():
        if n == name and (dev is None or d == dev):
            return doc["results"]
    return None

bars = []  # (label, value, goal)
g = next((d for d in devices if "H" in str(d) or "A" in str(d)), None)
r = get("ctl_gpu", g) or get("ctl")
if r: bars.append(("PING / raw nng (p50)", r["ratio_ping_vs_raw_p50"], None))
r = get("torch_alloc")
if r:
    bars.append(("torch.empty 4MiB enable()/native", r["ratio_enable_vs_native_p50"], 1.05))
    bars.append(("torch.empty 4MiB pool()/native", r["ratio_pool_vs_native_p50"], None))
    bars.append(("lease +64MiB / 300us goal", r["lease_64MiB"]["p50_ns"] / 300e3, 1.0))
r = get("training")
if r:
    for m in ("transformer", "cnn"):
        for mode in ("pool", "enable"):
            k = f"ratio_{mode}_p50"
            if k in r.get(m, {}):
                bars.append((f"train {m} {mode}()/native", r[m][k], None))
        if "ratio_p50" in r.get(m, {}):
            bars.append((f"train {m} enable()/native", r[m]["ratio_p50"], None))
r = get("fft_gpu")
if r:
    for k, v in r.items():
        if k.startswith("ratio"):
            bars.append((f"fft {k}", v, 1.03))
r = get("guard_overhead") or get("triton_overhead")
if r and "geomean" in r:
    bars.append(("guarded/unguarded Triton (geomean)", r["geomean"], 1.03))
fig, ax = plt.subplots(figsize=(9, 0.45 * max(3, len(bars)) + 1))
labels = [b[0] for b in bars]
ax.barh(labels, [b[1] for b in bars], color=["tab:green" if (b[2] is None or b[1] <= b[2]) else "tab:red" for b in bars])
for i, b in enumerate(bars):
    if b[2] is not None:
        ax.plot([b[2], b[2]], [i - 0.4, i + 0.4], "k--")
    ax.text(b[1], i, f" {b[1]:.2f}x", va="center")
ax.axvline(1.0, color="grey", lw=0.5)
ax.set_xlabel("ratio (agile / baseline measured in the same run)")
ax.invert_yaxis()
plt.tight_layout(); plt.show()"""),
    ("md", "## Latencies (p50 and p99)"),
    ("code", """lat = []  # (label, p50 us, p99 us)
r = get("ring")
if r:
    lat.append(("ring round trip", r["ring_rt"]["p50_ns"] / 1e3, r["ring_rt"]["p99_ns"] / 1e3))
    lat.append(("nng req/rep (ring bench)", r["nng_rt"]["p50_ns"] / 1e3, r["nng_rt"]["p99_ns"] / 1e3))
r = get("ctl_gpu", g) or get("ctl")
if r:
    lat.append(("raw nng req/rep", r["raw_nng"]["p50"], r["raw_nng"]["p99"]))
    lat.append(("agile PING", r["ping"]["p50"], r["ping"]["p99"]))
    lat.append(("agile connect+HELLO", r["connect_hello"]["p50"], r["connect_hello"]["p99"]))
r = get("alloc")
if r:
    for k in ("same/4MiB", "cross/4MiB", "glibc/4MiB"):
        if k in r:
            lat.append((f"malloc+free {k}", r[k]["p50"] / 1e3, r[k]["p99"] / 1e3))
fig, ax = plt.subplots(figsize=(9, 0.45 * max(3, len(lat)) + 1))
y = range(len(lat))
ax.barh([l[0] for l in lat], [l[2] for l in lat], color="tab:orange", label="p99")
ax.barh([l[0] for l in lat], [l[1] for l in lat], color="tab:blue", label="p50")
ax.set_xscale("log"); ax.set_xlabel("microseconds (log)"); ax.legend(); ax.invert_yaxis()
plt.tight_layout(); plt.show()"""),
    ("md", "## Fairness (tenants sharing one GPU)"),
    ("code", """r = get("fairness") or get("launch_gpu")
if r and "shares" in r:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([str(i) for i in range(len(r["shares"]))], r["shares"])
    ax.set_xlabel("tenant"); ax.set_ylabel("throughput share")
    ax.set_title(f"Jain's index {r.get('jain', float('nan')):.3f}")
    plt.tight_layout(); plt.show()
else:
    print("no fairness results yet (benchmarks/run.py --gpu fairness)")"""),
]


def main():
    nb = nbformat.v4.new_notebook()
    for kind, src in CELLS:
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": HERE}}).execute()
    out = os.path.join(HERE, "benchmarks.ipynb")
    nbformat.write(nb, out)
    print("wrote", out)


if __name__ == "__main__":
    sys.exit(main())
