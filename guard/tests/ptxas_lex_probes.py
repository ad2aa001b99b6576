#!/usr/bin/env python3
"""ptxas_lex_probes.py — what ptxas does with each lexical form the guard refuses
(guard/README.md, "Lexing"). The guard's rules rest on these observations; if a ptxas
release changes one, this test fails and the rules must be looked at again.

Each probe is a kernel whose body holds a global store (STORE) somewhere in a lexical
construct. ptxas either refuses the text ("error"), or compiles it; then the kernel's
machine code equals that of the plain kernel with the store ("store": ptxas read the
store as code) or without it ("plain": ptxas read it as string or comment text).
Exit 77 (skipped) without ptxas."""
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ptxas_tool  # noqa: E402

HEAD = (b".version 8.0\n.target sm_90\n.address_size 64\n.file 1 \"a.cu\"\n\n"
        b".visible .entry k(.param .u64 p)\n{\n\t.reg .b64 %rd<4>;\n\t.reg .b32 %r<4>;\n"
        b"\tld.param.u64 %rd1, [p];\n\tmov.u32 %r1, 7;\n")
TAIL = b"\n\tret;\n}\n"
STORE = b"st.global.u32 [%rd1], %r1;"

PROBES = [
    # name, body, expectation, a word ptxas must print (or None)
    ("backslash-quote ends the string", b'\t.pragma "x\\"; ' + STORE + b' //";', "store",
     "unsupported"),
    ("'/*' in a string opens nothing", b'\t.pragma "a /*"; ' + STORE + b' .pragma "*/";',
     "store", "unsupported"),
    ("'//' in a string opens nothing", b'\t.pragma "a // b"; ' + STORE, "store", None),
    ("a quote in a // comment", b"\t// \"\n\t" + STORE + b"\n\t// \"", "store", None),
    ("a quote in a block comment", b'\t/* " */ ' + STORE + b' /* " */', "store", None),
    ("block comments do not nest", b"\t/* /* */ " + STORE + b" /* */", "store", None),
    ("'//' in a block comment", b"\t/* // */ " + STORE, "store", None),
    ("backslash-newline in code", b"\tst.global.u32 [%rd1], \\\n%r1;", "error", None),
    ("backslash-newline in a comment", b"\t// a \\\n\t" + STORE, "store", None),
    ("a string over a newline", b'\t.pragma "nounroll\n";', "plain", "unsupported"),
    ("NUL", b"\t// a\0b\n\t" + STORE, "error", None),
    ("a byte >= 0x80", b"\t// caf\xc3\xa9\n\t" + STORE, "error", None),
    ("a control byte in a comment", b"\t// a\x01b", "plain", None),
    ("form feed", b"\t\x0c" + STORE, "store", None),
    ("vertical tab", b"\t\x0b" + STORE, "error", None),
    ("a bare CR does not end a // comment", b"\t// a\r" + STORE, "plain", None),
    ("an unknown pragma", b'\t.pragma "foobar";', "plain", "unsupported"),
    ("a list of pragma strings", b'\t.pragma "nounroll", "foobar";', "plain", None),
    ("'#define'", b"#define X " + STORE + b"\n\tX", "error", None),
    ("allow-listed pragma", b'\t.pragma "nounroll";', "plain", None),
    ("a word after .loc's operands", b"\t.loc 1 5 0 " + STORE, "store", None),
    ("a word after .loc's operands, ';' below", b"\t.loc 1 5 0 st.global.u32 [%rd1], %r1\n;",
     "store", None),
]


def main():
    if not ptxas_tool.have_ptxas():
        print("ptxas not found: skipped")
        return 77
    ref = {}
    for kind, body in (("plain", b""), ("store", b"\t" + STORE)):
        rc, msg, cubin = ptxas_tool.compile_ptx(HEAD + body + TAIL)
        if rc != 0:
            print("reference kernel does not assemble:", msg)
            return 1
        ref[kind] = ptxas_tool.functions(cubin)
    if ref["plain"] == ref["store"]:
        print("the store does not change the code: probes cannot tell")
        return 1
    bad = 0
    for name, body, want, word in PROBES:
        rc, msg, cubin = ptxas_tool.compile_ptx(HEAD + body + TAIL)
        if rc != 0:
            got = "error"
        else:
            fn = ptxas_tool.functions(cubin)
            got = "store" if fn == ref["store"] else "plain" if fn == ref["plain"] else "other"
        ok = got == want and (word is None or word in msg)
        bad += not ok
        print("%-4s %-38s ptxas: %-5s (expected %s)%s" %
              ("ok" if ok else "FAIL", name, got, want, "  " + msg.strip().splitlines()[0] if msg.strip() else ""))
    print("%d probes, %d differ from the recorded behaviour" % (len(PROBES), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
