#!/usr/bin/env python3
"""ptxas_differential.py — does ptxas read the guarded PTX as the guard does?

Trusts neither the guard's tokenizer nor the verifier's scanner. For each PTX file the
guard accepts (mask mode, and strict with -s):
  1. G = agile-guard FILE          (the text that would run; the verifier, run on its
                                    own, must accept it)
  2. C = guard-canon G             (the guard's own token stream of G re-emitted: comments
                                    dropped, one space between tokens, .file names and
                                    unknown pragmas neutralised; see guard/canon.c)
  3. ptxas -arch=<.target> on G and on C, and compare the cubins: the same set of
     functions, each function's machine code (.text.<name>) byte for byte, and every
     other section (symbols, globals and their initialisers, constant banks, attributes)
     except the line tables and the embedded PTX text (TEXT_DEPENDENT);
  4. guard-canon --no-loc G (every .loc line, as far as the guard reads it, dropped): the
     machine code must still be the same (line information does not change it; an
     instruction ptxas reads after a .loc's operands does).
Anything ptxas reads differently from the guard (a store hidden in a string or a comment,
a line continuation, a whole extra .entry, a byte that ends ptxas's input) changes the set
of functions or the code of one. A guarded text ptxas refuses is counted, not failed
(nothing would run); ptxas compiling it but refusing the guard's reading is a difference.

usage: ptxas_differential.py --guard BIN --canon BIN [--strict] PATH...   (files or dirs;
dirs are searched for *.ptx and *.fuzz, reject/ included: whatever the guard accepts is
checked). Exit 0 all agree, 1 a difference, 77 no ptxas."""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ptxas_tool  # noqa: E402


# Sections that record the PTX text itself or its .file names (line tables): the only ones
# that differ between a text and its canonical form over the whole corpus.
TEXT_DEPENDENT = {".debug_line", ".rela.debug_line", ".nv_debug_ptx_txt"}


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, check=False, timeout=300, **kw)


def check_text(guard, canon, ptx, strict=False, tmpdir=None):
    """Check one PTX text (bytes). Returns (status, detail): 'refused' (the rewriter
    refuses), 'agree', 'ptxas-refuses' (the guarded text: nothing would run) or 'DIFF'
    (the verifier refuses the rewriter's output, or ptxas reads it differently from the
    guard)."""
    with tempfile.TemporaryDirectory(prefix="agile-diff-", dir=tmpdir) as d:
        src, out = os.path.join(d, "in.ptx"), os.path.join(d, "guarded.ptx")
        with open(src, "wb") as f:
            f.write(ptx)
        r = run([guard, "--no-verify"] + (["--strict"] if strict else []) + [src, "-o", out])
        if r.returncode != 0:
            msg = r.stderr.decode("utf-8", "replace").strip()
            # a refusal is exit 1 with "file:line: reason"; anything else is a crash
            if r.returncode == 1 and msg.startswith(src + ":") and "\n" not in msg:
                return "refused", msg
            return "DIFF", "the rewriter failed (exit %d): %s" % (r.returncode, msg[:500])
        v = run([guard, "--verify", out])
        if v.returncode != 0:
            return "DIFF", "the verifier refuses what the rewriter accepted: " + \
                v.stderr.decode("utf-8", "replace").strip()
        with open(out, "rb") as f:
            guarded = f.read()
        c = run([canon, out])
        if c.returncode != 0:
            return "DIFF", "the guard accepted a text its own tokenizer refuses on re-reading: " + \
                c.stderr.decode("utf-8", "replace").strip()
        arch = ptxas_tool.target_of(guarded)
        rg, mg, cg = ptxas_tool.compile_ptx(guarded, arch)
        rc, mc, cc = ptxas_tool.compile_ptx(c.stdout, arch)
        if rg != 0:  # nothing would run: safe, whatever ptxas made of the guard's reading
            return "ptxas-refuses", mg.strip().splitlines()[0] if mg.strip() else ""
        if rc != 0:
            return "DIFF", "ptxas compiles the guarded text but refuses the guard's reading " \
                "of it: " + mc.strip()[:300]
        fg, fc = ptxas_tool.functions(cg), ptxas_tool.functions(cc)
        if set(fg) != set(fc):
            return "DIFF", "functions: ptxas %s, guard %s" % (sorted(fg), sorted(fc))
        for name in sorted(fg):
            if fg[name] != fc[name]:
                return "DIFF", "machine code of '%s' differs (%d vs %d bytes)" % (
                    name, len(fg[name]), len(fc[name]))
        c2 = run([canon, "--no-loc", out])
        r2, m2, cn = ptxas_tool.compile_ptx(c2.stdout, arch)
        if c2.returncode != 0 or r2 != 0:
            return "DIFF", "ptxas refuses the guard's reading without .loc lines: " + m2.strip()[:300]
        if ptxas_tool.functions(cn) != fg:
            return "DIFF", "machine code differs without the .loc lines the guard read: code " \
                "after a .loc's operands"
        sg, sc = ptxas_tool.elf_sections(cg), ptxas_tool.elf_sections(cc)
        for name in sorted(set(sg) | set(sc)):
            if name not in TEXT_DEPENDENT and sg.get(name) != sc.get(name):
                return "DIFF", "section '%s' differs" % name
        return "agree", "%d functions" % len(fg)


def files_of(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, _dirs, names in os.walk(p):
                out += [os.path.join(root, n) for n in names if n.endswith((".ptx", ".fuzz"))]
        else:
            out.append(p)
    return sorted(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--guard", required=True)
    ap.add_argument("--canon", required=True)
    ap.add_argument("--strict", action="store_true", help="also check strict-mode outputs")
    ap.add_argument("paths", nargs="+")
    a = ap.parse_args()
    if not ptxas_tool.have_ptxas():
        print("ptxas not found: skipped")
        return 77
    counts = {}
    bad = 0
    for f in files_of(a.paths):
        with open(f, "rb") as fh:
            ptx = fh.read()
        for strict in ([False, True] if a.strict else [False]):
            st, detail = check_text(a.guard, a.canon, ptx, strict)
            counts[st] = counts.get(st, 0) + 1
            if st == "DIFF":
                bad += 1
                print("DIFF %s%s: %s" % (f, " (strict)" if strict else "", detail))
            elif st == "ptxas-refuses":
                print("note %s: ptxas refuses the guarded text: %s" % (f, detail))
    print("ptxas differential: " + ", ".join("%s %d" % kv for kv in sorted(counts.items())))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
