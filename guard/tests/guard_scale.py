#!/usr/bin/env python3
"""guard_scale.py — guard time on big generated modules, and register lookup by name.

1. Scale (issue 12 item 6): one kernel with N individually declared registers, each the
   address of a global store (N fences). Prints, for each N, the seconds and peak memory of
   the rewriter (--no-verify) and of the verifier (--verify on its output), and the ratio
   of the largest to the smallest time per register. Before the register index, the
   rewriter scanned every declaration per lookup: N = 32k took 2.1 s, N = 128k 44.7 s
   (2-core CI machine). Then N module variables, each named by a load ([g_i]): both the
   rewriter and the verifier scanned every variable per lookup (32k: 5.0 s + 5.6 s).
   No timed assertion: the figures are printed for the reader.
2. Lookup semantics (strict mode zeroes a skipped load's destination with the register's
   declared width, found by name): ranges whose prefix ends in a digit (%q12<2> declares
   %q120 and %q121), no leading zeros (%h03 is not in %h<4>), the last declaration wins.

usage: guard_scale.py --guard BIN [--sizes 8000,32000,128000]"""
import argparse
import os
import subprocess
import sys
import tempfile
import time


def gen(n):
    out = [".version 8.0", ".target sm_90", ".address_size 64", "",
           ".visible .entry big(.param .u64 big_p)", "{", "\t.reg .b64 %rd<4>;",
           "\t.reg .b32 %r<4>;"]
    out += ["\t.reg .b64 %%a%d;" % i for i in range(n)]
    out.append("\tld.param.u64 %rd1, [big_p];")
    for i in range(n):
        out.append("\tadd.s64 %%a%d, %%rd1, %d;" % (i, 4 * i))
        out.append("\tst.global.u32 [%%a%d], %%r1;" % i)
    out += ["\tret;", "}", ""]
    return "\n".join(out).encode()


def gen_vars(n):
    """n module variables, each named by a load: [g_i] lookups."""
    out = [".version 8.0", ".target sm_90", ".address_size 64", ""]
    out += [".global .align 4 .u32 g%d;" % i for i in range(n)]
    out += [".visible .entry big()", "{", "\t.reg .b32 %r<4>;"]
    out += ["\tld.global.u32 %%r1, [g%d];" % i for i in range(n)]
    out += ["\tret;", "}", ""]
    return "\n".join(out).encode()


GNU_TIME = "/usr/bin/time"


def timed(cmd):
    """(seconds, peak RSS in MiB or None) of a command that must succeed. The peak comes
    from GNU time where installed (a child's own ru_maxrss may carry the parent's)."""
    mem = os.access(GNU_TIME, os.X_OK)
    with tempfile.NamedTemporaryFile(prefix="agile-scale-") as tf:
        full = [GNU_TIME, "-f", "%M", "-o", tf.name] + cmd if mem else cmd
        t = time.monotonic()
        r = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        dt = time.monotonic() - t
        if r.returncode != 0:
            raise SystemExit("FAIL %s: %s" % (" ".join(cmd), r.stderr.decode()[:500]))
        peak = int(open(tf.name).read().split()[-1]) / 1024.0 if mem else None
    return dt, peak


def mib(x):
    return "peak %.0f MiB" % x if x is not None else "peak n/a"


LOOKUP = b""".version 8.0
.target sm_90
.address_size 64
.visible .entry k(.param .u64 k_p)
{
	.reg .b64 %rd<2>;
	.reg .b16 %h<4>;
	.reg .b32 %h1x;
	.reg .b64 %q12<2>;
	.reg .b32 %w;
	.reg .b64 %w;
	ld.param.u64 %rd1, [k_p];
	ld.global.u16 %h3, [%rd1];
	ld.global.u32 %h1x, [%rd1];
	ld.global.u64 %q120, [%rd1];
	ld.global.u64 %q121, [%rd1];
	ld.global.u64 %w, [%rd1];
	LAST
	ret;
}
"""


def lookup(guard, d):
    bad = 0
    cases = [(b"", 0, [b"mov.b16 %h3, 0;", b"mov.b32 %h1x, 0;", b"mov.b64 %q120, 0;",
                       b"mov.b64 %q121, 0;", b"mov.b64 %w, 0;"]),
             (b"ld.global.u64 %q122, [%rd1];", 1, [b"cannot tell the width of '%q122'"]),
             (b"ld.global.u16 %h03, [%rd1];", 1, [b"cannot tell the width of '%h03'"]),
             (b"ld.global.u16 %h4, [%rd1];", 1, [b"cannot tell the width of '%h4'"])]
    for last, want_rc, wants in cases:
        src = os.path.join(d, "lookup.ptx")
        with open(src, "wb") as f:
            f.write(LOOKUP.replace(b"LAST", last))
        r = subprocess.run([guard, "--strict", src], capture_output=True, check=False)
        text = r.stdout + r.stderr
        ok = r.returncode == want_rc and all(w in text for w in wants)
        bad += not ok
        print("%-4s lookup %-32s exit %d" % ("ok" if ok else "FAIL", last.decode() or "(declared)",
                                             r.returncode))
        if not ok:
            print(text.decode()[:800])
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--guard", required=True)
    ap.add_argument("--sizes", default="8000,32000,128000")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="agile-scale-") as d:
        bad = lookup(a.guard, d)
        for what, make in (("registers", gen), ("variables", gen_vars)):
            per = []
            for n in [int(x) for x in a.sizes.split(",")]:
                src, out = os.path.join(d, "big.ptx"), os.path.join(d, "big.guarded.ptx")
                with open(src, "wb") as f:
                    f.write(make(n))
                tg, mg = timed([a.guard, "--no-verify", src, "-o", out])
                tv, mv = timed([a.guard, "--verify", out])
                per.append((tg + tv) / n)
                print("guard scale: %6d %s, %5.1f MB: rewrite %.2f s (%s), verify %.2f s (%s)" %
                      (n, what, os.path.getsize(src) / 1e6, tg, mib(mg), tv, mib(mv)))
            if len(per) > 1:
                print("guard scale: time per %s, largest / smallest module: %.1fx" %
                      (what[:-1], per[-1] / per[0]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
