"""Build and execute the benchmark notebooks from benchmarks/results/*.json.

    python3 notebooks/make_notebooks.py        (scripts/notebooks installs what it needs)

Writes notebooks/benchmarks.ipynb with its outputs executed (nbclient), so the committed file
shows the plots; rerunning it re-reads the JSON results.

Two kinds of result files are read:
  * benchmarks/run.py's {"name", "what", "date", "device": {...}, "results": {...}}, keyed by
    (name, device);
  * the guard's own reports (guard/gpu/differential.py, guard/gpu/triton_overhead.py), which
    have no "name": they are keyed by the file-name prefix (`differential-...`,
    `triton_overhead-...`) and their device string.
Files are read in sorted file-name order (NAME-DEVICE-YYYY-MM-DD.json), so for one benchmark
and device the newest date wins. Every section prints a note instead of raising when its
file is missing or lacks a key.
"""
import os
import sys

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))

CELLS = [
    ("md", """# agile benchmarks

Every figure is a ratio against a baseline measured **in the same run** (see
`benchmarks/run.py`), or an absolute latency shown next to its baseline. This notebook reads
`benchmarks/results/*.json` (the newest file of each benchmark for each device) and plots them.
Re-execute with `scripts/notebooks`."""),
    ("code", r"""import glob, json, math, os
%matplotlib inline
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

RES = os.path.join(os.path.dirname(os.path.abspath("__file__")), "..", "benchmarks", "results")
if not os.path.isdir(RES):
    RES = os.path.join("benchmarks", "results")
docs = {}    # (name, device) -> run.py document (+ "_file")
extra = {}   # (file-name prefix, device) -> {"date", "file", "data"}: guard reports, other schema
for p in sorted(glob.glob(os.path.join(RES, "*.json"))):   # sorted: the newest date wins
    f = os.path.basename(p)
    try:
        d = json.load(open(p))
    except (OSError, ValueError) as e:
        print(f"note: cannot read {f}: {e}")
        continue
    if not isinstance(d, dict):
        print(f"note: {f} is not a JSON object, skipped")
        continue
    if "name" in d and "results" in d and isinstance(d.get("device"), dict):
        dev = d["device"].get("gpu") or d["device"].get("cpu")
        d["_file"] = f
        docs[(d["name"], dev)] = d
    else:
        stem = f[:-len(".json")]
        prefix = stem.split("-", 1)[0]
        date = stem[-10:] if len(stem) > 10 and stem[-10:-6].isdigit() else "?"
        dev = d.get("device") if isinstance(d.get("device"), str) else "?"
        extra[(prefix, dev)] = {"date": date, "file": f, "data": d}
devices = sorted({k[1] for k in docs} | {k[1] for k in extra})
EXTRA_WHAT = {"differential": "PTX guard: differential (guarded vs unguarded) and adversarial GPU test",
              "triton_overhead": "PTX guard: guarded/unguarded kernel time of Triton 3.6 kernels"}
rows = ["| benchmark | device | date | file | what |", "|---|---|---|---|---|"]
for (n, dev), d in sorted(docs.items()):
    rows.append(f"| {n} | {dev} | {d['date'][:10]} | `{d['_file']}` | {d['what']} |")
for (n, dev), e in sorted(extra.items()):
    rows.append(f"| {n} | {dev} | {e['date']} | `{e['file']}` | {EXTRA_WHAT.get(n, '(other schema)')} |")
display(Markdown("\n".join(rows)))

def get(name, dev=None):
    for (n, d), doc in sorted(docs.items()):
        if n == name and (dev is None or d == dev):
            return doc["results"]
    return None

def get_extra(prefix, dev=None):
    for (n, d), e in sorted(extra.items()):
        if n == prefix and (dev is None or d == dev):
            return e
    return None

def fname(name):
    return next((d["_file"] for (n, _), d in sorted(docs.items()) if n == name), None)

g = next((d for d in devices if "H" in str(d) or "A" in str(d)), None)
# which file won for each benchmark that has several dates
print("torch_alloc files present:", sorted(os.path.basename(p) for p in glob.glob(os.path.join(RES, "torch_alloc-*.json"))))
print("torch_alloc file used:", fname("torch_alloc"))"""),
    ("md", """## Ratios against their goals

Bars are agile / baseline (lower is better); the dashed tick is the goal: green bars meet it,
red bars miss it, blue bars have no ratio goal.
Baselines, each measured in the same run as the agile figure:
* **PING / raw nng**: a bare nng req/rep round trip, same transport, no worker logic.
* **torch.empty**: PyTorch's native CUDA caching allocator (no agile allocator installed).
* **lease +64 MiB**: not a ratio to a measurement; p50 divided by the 300 µs goal.
* **training**: the same model and steps without agile (same loss checked).
* **launch**: native `cuLaunchKernel` of the same kernel in the client's own context.
  Throughput is shown **inverted** (native launches/s ÷ remote launches/s) so that lower is
  better like every other bar.
* **fft**: PyTorch's own cuFFT path, same shapes, same process.
* **Triton guard**: the same Triton kernels' unguarded PTX, same buffers."""),
    ("code", r"""bars = []  # (label, value, goal)
def add(label, f, goal=None):
    try:
        v = f()
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        print(f"note: {label}: missing key in results ({e!r})")
        return
    if v is not None:
        bars.append((label, float(v), goal))

r = get("ctl_gpu", g) or get("ctl")
if r: add("PING / raw nng (p50)", lambda: r["ratio_ping_vs_raw_p50"])
else: print("note: no ctl/ctl_gpu results")
r = get("torch_alloc")
if r:
    print("torch_alloc result keys:", sorted(r))
    print("torch_alloc lease_64MiB keys:", sorted(r.get("lease_64MiB", {})))
    add("torch.empty 4MiB enable()/native", lambda: r["ratio_enable_vs_native_p50"], 1.05)
    add("torch.empty 4MiB pool()/native", lambda: r["ratio_pool_vs_native_p50"])
    add("lease +64MiB p50 / 300us goal", lambda: r["lease_64MiB"]["p50_ns"] / 300e3, 1.0)
else: print("note: no torch_alloc results")
r = get("training")
if r:
    for m in ("transformer", "cnn"):
        for mode in ("pool", "enable"):
            k = f"ratio_{mode}_p50"
            if k in r.get(m, {}):
                add(f"train {m} {mode}()/native (p50 step)", lambda: r[m][k])
        if "ratio_p50" in r.get(m, {}):
            add(f"train {m} agile/native (p50 step)", lambda: r[m]["ratio_p50"])
else: print("note: no training results")
r = get("launch_gpu")
if r:
    add("launch completion p50 remote/native", lambda: r["ratio_completion_p50"])
    add("launch throughput native/remote (inverted, lower=better)",
        lambda: r["native"]["launches_per_s"] / r["remote"]["launches_per_s"])
else: print("note: no launch_gpu results")
r = get("fft_gpu")
if r:
    for case in ("c2c_1m_x16", "fft2_4096", "small_4096"):
        if isinstance(r.get(case), dict):
            add(f"fft {case} agile/native (p50)", lambda: r[case]["ratio"], 1.03 if case != "small_4096" else None)
else: print("note: no fft_gpu results")
e = get_extra("triton_overhead", g) or get_extra("triton_overhead")
if e:
    add("Triton guarded/unguarded (geomean)", lambda: e["data"]["geomean"], 1.03)
    add("Triton guarded/unguarded (max)", lambda: e["data"]["max"], 1.10)
else: print("note: no triton_overhead-*.json")

if bars:
    fig, ax = plt.subplots(figsize=(10, 0.42 * max(3, len(bars)) + 1.2))
    ax.barh([b[0] for b in bars], [b[1] for b in bars],
            color=["tab:blue" if b[2] is None else "tab:green" if b[1] <= b[2] else "tab:red" for b in bars])
    for i, b in enumerate(bars):
        if b[2] is not None:
            ax.plot([b[2], b[2]], [i - 0.4, i + 0.4], "k--")
        ax.text(b[1], i, f" {b[1]:.2f}x", va="center")
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlim(min(0.5, min(b[1] for b in bars) / 1.5), max(b[1] for b in bars) * 2.5)
    ax.set_xlabel("ratio (agile / baseline measured in the same run), log scale")
    ax.invert_yaxis()
    plt.tight_layout(); plt.show()
else:
    print("no ratio results")"""),
    ("md", """## Latencies (p50 and p99)

Absolute times, each shown next to its baseline from the same run: raw nng req/rep vs agile
PING and connect+HELLO; nng vs the shared-memory ring (ring bench) and the ring NOP through
the worker vs PING (ring_e2e); native `cuLaunchKernel` vs the remote (ring) launch, enqueue
and completion; glibc malloc+free vs agile_malloc+free; lease growth of 64 MiB (no
baseline; goal 300 µs)."""),
    ("code", r"""lat = []  # (label, p50 us, p99 us)
def addl(label, f):
    try:
        p50, p99 = f()
        lat.append((label, float(p50), float(p99)))
    except (KeyError, TypeError, ValueError) as e:
        print(f"note: {label}: missing key in results ({e!r})")

r = get("ring")
if r:
    addl("ring round trip (ring bench)", lambda: (r["ring_rt"]["p50_ns"] / 1e3, r["ring_rt"]["p99_ns"] / 1e3))
    addl("nng req/rep (ring bench)", lambda: (r["nng_rt"]["p50_ns"] / 1e3, r["nng_rt"]["p99_ns"] / 1e3))
r = get("ring_e2e")
if r:
    addl("ring NOP via worker (ring_e2e)", lambda: (r["ring_nop"]["p50"], r["ring_nop"]["p99"]))
    addl("agile PING (ring_e2e)", lambda: (r["ping"]["p50"], r["ping"]["p99"]))
    if "speedup_p50" in r:
        print(f"ring_e2e: ring NOP is {r['speedup_p50']:.1f}x faster than PING (p50); "
              f"NOP throughput {r.get('nop_throughput_mops', float('nan')):.2f} Mops/s")
r = get("ctl_gpu", g) or get("ctl")
if r:
    addl("raw nng req/rep", lambda: (r["raw_nng"]["p50"], r["raw_nng"]["p99"]))
    addl("agile PING", lambda: (r["ping"]["p50"], r["ping"]["p99"]))
    addl("agile connect+HELLO", lambda: (r["connect_hello"]["p50"], r["connect_hello"]["p99"]))
r = get("launch_gpu")
if r:
    for side in ("native", "remote"):
        for what in ("enqueue_us", "completion_us"):
            addl(f"launch {side} {what[:-3]}", lambda: (r[side][what]["p50"], r[side][what]["p99"]))
r = get("alloc")
if r:
    for k in ("glibc/4MiB", "same/4MiB", "cross/4MiB"):
        if k in r:
            addl(f"malloc+free {k}", lambda: (r[k]["p50"] / 1e3, r[k]["p99"] / 1e3))
r = get("torch_alloc")
if r:
    addl("lease growth +64MiB", lambda: (r["lease_64MiB"]["p50_ns"] / 1e3, r["lease_64MiB"]["p99_ns"] / 1e3))
if lat:
    fig, ax = plt.subplots(figsize=(10, 0.42 * max(3, len(lat)) + 1.2))
    ax.barh([l[0] for l in lat], [l[2] for l in lat], color="tab:orange", label="p99")
    ax.barh([l[0] for l in lat], [l[1] for l in lat], color="tab:blue", label="p50")
    for i, l in enumerate(lat):
        ax.text(l[2], i, f" {l[1]:.3g} / {l[2]:.3g}", va="center", fontsize=8)
    ax.set_xscale("log"); ax.set_xlabel("microseconds (log); labels: p50 / p99")
    ax.set_xlim(right=max(l[2] for l in lat) * 40)
    ax.legend(loc="upper right"); ax.invert_yaxis()
    plt.tight_layout(); plt.show()
else:
    print("no latency results")"""),
    ("md", """## PTX guard: differential test and Triton kernel overhead

Baselines: the **differential test** runs each corpus kernel unguarded, guarded (mask mode)
and in strict mode on the same in-window data; the compared buffers must equal the
**unguarded run's** and strict mode must record nothing. **Adversarial kernels** run guarded
only: the baseline is a canary buffer outside the tenant window, which must stay untouched,
and strict mode must report the violation (kernel, site, address). The **Triton overhead** bars
are guarded kernel time / the **same kernel's unguarded PTX** on the same buffers (CUDA events);
goals: geomean ≤ 1.03x, max ≤ 1.10x."""),
    ("code", r"""e = get_extra("differential", g) or get_extra("differential")
if not e:
    print("note: no differential-*.json (guard/gpu/differential.py --out ...)")
else:
    d = e["data"]
    try:
        res = d.get("results", [])
        md = [f"**Guard differential test** ({e['file']}, device {d.get('device', '?')}, "
              f"window 2^{d.get('window_bits', '?')} B, guard gap {d.get('gap', '?')} B)", "",
              "| pass | fail | skip | total |", "|---|---|---|---|",
              f"| {d.get('pass', '?')} | {d.get('fail', '?')} | {d.get('skip', '?')} | {len(res)} |", ""]
        adv = [x for x in res if "adversarial" in x.get("ptx", "")]
        other_v = [x for x in res if "adversarial" not in x.get("ptx", "") and x.get("modes", {}).get("strict_violation")]
        md += ["**Adversarial kernels** (guarded only; strict mode's recorded violation)", "",
               "| ptx | kernel | status | violation: kernel id | site | address |", "|---|---|---|---|---|---|"]
        for x in adv + other_v:
            v = x.get("modes", {}).get("strict_violation")
            vk, vs, va = (v.get("kernel", "?"), v.get("site", "?"), hex(v["addr"]) if "addr" in v else "?") if v else ("—", "—", "none recorded")
            name = x.get("kernel", "?") + ("" if x in adv else " *(not adversarial)*")
            md.append(f"| {x.get('ptx', '?')} | {name} | {x.get('status', '?')} | {vk} | {vs} | {va} |")
        bad = [x for x in res if x.get("status") != "pass"]
        if bad:
            md += ["", "**Skipped or failed**", "", "| ptx | kernel | status | detail |", "|---|---|---|---|"]
            for x in bad:
                md.append(f"| {x.get('ptx', '?')} | {x.get('kernel', '?')} | {x.get('status', '?')} | {'; '.join(map(str, x.get('detail', [])))} |")
        display(Markdown("\n".join(md)))
    except (KeyError, TypeError, ValueError) as ex:
        print(f"note: differential report has an unexpected shape ({ex!r})")

e = get_extra("triton_overhead", g) or get_extra("triton_overhead")
if not e or not e["data"].get("rows"):
    print("note: no triton_overhead-*.json with rows (guard/gpu/triton_overhead.py --out ...)")
else:
    d = e["data"]
    try:
        rows = d["rows"]
        names = [x["kernel"] for x in rows]
        ratios = [x["guarded_us"] / x["unguarded_us"] for x in rows]
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
        ax.bar(names, ratios, color=["tab:green" if q <= 1.10 else "tab:red" for q in ratios])
        for i, q in enumerate(ratios):
            ax.text(i, q, f"{q:.3f}", ha="center", va="bottom", fontsize=8)
        ax.axhline(1.03, color="k", ls="--", label="geomean goal 1.03")
        ax.axhline(1.10, color="tab:red", ls=":", label="max goal 1.10")
        if "geomean" in d:
            ax.axhline(d["geomean"], color="tab:blue", lw=1, label=f"measured geomean {d['geomean']:.4f}")
        ax.set_ylim(0.95, max(1.12, max(ratios) + 0.02))
        ax.set_ylabel("guarded / unguarded kernel time")
        ax.set_title(f"Triton {d.get('triton', '?')} kernels, guard mode {d.get('mode', '?')}")
        ax.legend(fontsize=8, loc="upper left")
        x = range(len(rows)); w = 0.4
        ax2.bar([i - w / 2 for i in x], [r_["unguarded_us"] for r_ in rows], w, label="unguarded")
        ax2.bar([i + w / 2 for i in x], [r_["guarded_us"] for r_ in rows], w, label="guarded")
        ax2.set_xticks(list(x)); ax2.set_xticklabels(names)
        ax2.set_ylabel("kernel time (µs)"); ax2.set_title("absolute kernel time"); ax2.legend(fontsize=8)
        plt.tight_layout(); plt.show()
        print(f"geomean {d.get('geomean')}, max {d.get('max')}, goal_met {d.get('goal_met')}, "
              f"outputs identical: {all(r_.get('outputs_identical') for r_ in rows)}, "
              f"guard sites: {dict((r_['kernel'], r_.get('sites')) for r_ in rows)}, failures: {d.get('failures')}")
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as ex:
        print(f"note: triton_overhead report has an unexpected shape ({ex!r})")"""),
    ("md", """## FFT through the worker

Baseline: PyTorch's own cuFFT path (`torch.fft` on the same shapes, same process, run before
the agile hook is installed); p50 wall time per call, each followed by a synchronize. Goals:
ratio ≤ 1.03 for the large transforms (c2c 2^20 × 16, fft2 4096²); for the small 4096-point
transform the goal is on the **added** latency (agile − native ≤ 10 µs), its ratio bar is
shown for reference. The plan cache (fft_plan, FFTW backend on the host) compares a cache hit
with plan creation."""),
    ("code", r"""r = get("fft_gpu")
if not r:
    print("note: no fft_gpu results (benchmarks/run.py --gpu fft_gpu)")
else:
    try:
        cases = [c for c in ("c2c_1m_x16", "fft2_4096", "small_4096") if isinstance(r.get(c), dict)]
        cases += [c for c, v in r.items() if isinstance(v, dict) and "ratio" in v and c not in cases]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ratios = [r[c]["ratio"] for c in cases]
        ax.bar(cases, ratios, color=["tab:green" if q <= 1.03 else "tab:red" for q in ratios])
        for i, q in enumerate(ratios):
            ax.text(i, q, f"{q:.2f}x", ha="center", va="bottom")
        ax.axhline(1.03, color="k", ls="--", label="goal 1.03")
        ax.set_yscale("log"); ax.set_ylabel("agile / native cuFFT (p50), log")
        ax.set_ylim(0.8, max(ratios) * 2); ax.legend()
        plt.tight_layout(); plt.show()
        md = ["| case | native p50 (µs) | agile p50 (µs) | ratio | added (µs) | goal | met |", "|---|---|---|---|---|---|---|"]
        for c in cases:
            v = r[c]
            if c.startswith("small"):
                goal, met = "added ≤ 10 µs", v["added_us"] <= 10
            else:
                goal, met = "ratio ≤ 1.03", v["ratio"] <= 1.03
            md.append(f"| {c} | {v['native_p50_us']:.1f} | {v['agile_p50_us']:.1f} | {v['ratio']:.2f} | "
                      f"**{v['added_us']:.1f}** | {goal} | {'yes' if met else 'no'} |")
        md += ["", f"plan cache hit via the worker: {r.get('plan_hit_us', float('nan')):.1f} µs; "
               f"plan miss (2^20 × 16): {r.get('plan_miss_ms', float('nan')):.1f} ms; "
               f"fallback overhead for non-agile tensors: {r.get('fallback_overhead_us', float('nan')):.1f} µs; "
               f"goals recorded: {r.get('goals')}"]
        display(Markdown("\n".join(md)))
    except (KeyError, TypeError, ValueError) as ex:
        print(f"note: fft_gpu results have an unexpected shape ({ex!r})")
r = get("fft_plan")
if not r:
    print("note: no fft_plan results")
else:
    try:
        md = [f"**FFT plan cache** (backend {r.get('backend', '?')})", "",
              "| shape | plan creation p50 (µs) | cache hit mean (ns) |", "|---|---|---|"]
        for x in r["results"]:
            md.append(f"| {x['shape']} | {x['miss_p50_ns'] / 1e3:.1f} | {x['hit_mean_ns']} |")
        display(Markdown("\n".join(md)))
    except (KeyError, TypeError) as ex:
        print(f"note: fft_plan results have an unexpected shape ({ex!r})")"""),
    ("md", """## Fairness (tenants sharing one GPU)

Baseline (**native**): the same 4 client processes, each with its own CUDA context, launching
the same kernel unguarded; the driver time-slices the contexts. **agile**: 4 tenants, one
process each, launching the guarded kernel through one worker. **skewed**: agile with tenant 0
opening 3 processes (tenants 1–3 one each) — does a tenant gain by opening more sessions?
Jain's index is 1.0 for equal shares and 1/n when one tenant takes everything."""),
    ("code", r"""r = get("fairness")
SC = ("agile", "native", "skewed")
if not r or not any(isinstance(r.get(s), dict) for s in SC):
    print("no fairness results yet (benchmarks/run.py --gpu fairness)")
else:
    sc = [s for s in SC if isinstance(r.get(s), dict)]
    try:
        n = max(len(r[s]["share"]) for s in sc)
        fig, ax = plt.subplots(figsize=(7, 3.2))
        w = 0.8 / len(sc)
        for j, s in enumerate(sc):
            sh = r[s]["share"]
            ax.bar([i + (j - (len(sc) - 1) / 2) * w for i in range(len(sh))], sh, w,
                   label=f"{s} (Jain {r[s]['jain']:.4f})")
        ax.axhline(1 / n, color="k", ls="--", lw=0.8, label=f"fair share 1/{n}")
        ax.set_xticks(range(n)); ax.set_xticklabels([f"tenant {i}" for i in range(n)])
        ax.set_ylabel("throughput share"); ax.set_title(f"throughput share per tenant (tenants are {r.get('tenants_are', '?')})")
        ax.legend(fontsize=8); plt.tight_layout(); plt.show()
    except (KeyError, TypeError, ValueError) as ex:
        print(f"note: fairness shares: unexpected shape ({ex!r})")
    try:
        n = r.get("tenants") or len(r[sc[0]]["share"])
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.6))
        style = {"agile": dict(marker="o", ms=6, lw=2), "native": dict(marker="x", ms=7, ls="--", lw=1),
                 "skewed": dict(marker=".", lw=1.5)}
        for s in sc:
            jw = r[s]["jain_windows"]
            ax.plot([(i + 1) * jw["window_s"] for i in range(len(jw["values"]))], jw["values"],
                    label=f"{s} (min {jw.get('min', min(jw['values'])):.5f})", **style.get(s, {}))
        ax.set_xlabel("time (s), end of window"); ax.set_ylabel("Jain's index")
        ax.set_title(f"fairness over time: Jain's index per {r[sc[0]]['jain_windows']['window_s'] * 1e3:.0f} ms window")
        ax.axhline(1 / n, color="grey", ls=":", lw=0.8)
        ax.set_ylim(0.0, 1.05); ax.legend(fontsize=8, loc="lower right")
        if "series" not in r.get("agile", {}):
            ax2.text(0.5, 0.5, "no agile per-tenant series in the results", ha="center", transform=ax2.transAxes)
            print("note: no agile series (per-tenant launches per bin)")
        else:
            se = r["agile"]["series"]
            for t, ln in enumerate(se["launches"]):
                ax2.plot([(i + 1) * se["bin_s"] for i in range(len(ln))], ln, label=f"tenant {t}")
            ax2.set_xlabel("time (s), end of bin"); ax2.set_ylabel(f"launches per {se['bin_s'] * 1e3:.0f} ms")
            ax2.set_title("agile: per-tenant launches per bin")
            ax2.set_ylim(0, max(max(ln) for ln in se["launches"]) * 1.15); ax2.legend(fontsize=8, ncol=2)
        plt.tight_layout(); plt.show()
    except (KeyError, TypeError, ValueError) as ex:
        print(f"note: fairness over time: unexpected shape ({ex!r})")
    for s in sc:
        x = r[s]
        jw = x.get("jain_windows", {})
        print(f"{s:7s} Jain {x.get('jain', float('nan')):.6f}  (per window: min {jw.get('min', float('nan')):.6f}, "
              f"mean {jw.get('mean', float('nan')):.6f})  total {x.get('total_launches_per_s', float('nan')):.0f} launches/s, "
              f"shares {x.get('share')}")
    if "per_process" in r.get("skewed", {}):
        pp = r["skewed"]["per_process"]
        print(f"skewed per process: tenants {pp.get('tenant')}, shares {pp.get('share')}, Jain across processes {pp.get('jain', float('nan')):.6f}")
    print(f"Jain agile / native: {r.get('jain_ratio_vs_native', float('nan')):.6f}; "
          f"throughput agile / native: {r.get('throughput_ratio_vs_native', float('nan')):.4f}")"""),
]


def main():
    nb = nbformat.v4.new_notebook()
    for kind, src in CELLS:
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": HERE}}).execute()
    out = os.path.join(HERE, "benchmarks.ipynb")
    nbformat.write(nb, out)
    errs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    print("wrote", out, f"({len(errs)} error outputs)")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
