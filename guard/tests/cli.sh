#!/usr/bin/env bash
# cli.sh GUARD CORPUS — agile-guard's command line: exit codes, file:line reasons,
# --verify, --report JSON, --compile with the cache (miss, then hit).
set -uo pipefail
g=$1
c=$2
tmp=$(mktemp -d /tmp/guard-cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # check NAME EXPECTED_RC ACTUAL_RC
  if [[ $2 != "$3" ]]; then echo "FAIL $1: exit $3, expected $2"; fail=1; else echo "ok   $1"; fi
}
"$g" --help >"$tmp/help"; check "--help" 0 $?
grep -q "usage: agile-guard" "$tmp/help" || { echo "FAIL --help text"; fail=1; }
"$g" 2>/dev/null; check "no input" 2 $?
"$g" --bogus "$c/basic.ptx" 2>/dev/null; check "unknown option" 2 $?
"$g" "$tmp/missing.ptx" 2>/dev/null; check "missing file" 2 $?
"$g" --window-bits 3 "$c/basic.ptx" 2>/dev/null; check "bad --window-bits" 2 $?
"$g" "$c/reject/tensormap.ptx" >/dev/null 2>"$tmp/err"; check "reject" 1 $?
grep -Eq "^$c/reject/tensormap.ptx:[0-9]+: TMA" "$tmp/err" || { echo "FAIL reason format: $(cat "$tmp/err")"; fail=1; }
"$g" "$c/basic.ptx" >"$tmp/out.ptx"; check "guard to stdout" 0 $?
"$g" "$c/basic.ptx" -o "$tmp/out2.ptx" --report "$tmp/r.json"; check "guard -o --report" 0 $?
cmp -s "$tmp/out.ptx" "$tmp/out2.ptx" || { echo "FAIL stdout and -o differ"; fail=1; }
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['accepted'] and r['nsites']>0 and r['functions'][0]['hidden_params']" "$tmp/r.json"
check "report is JSON" 0 $?
"$g" --report "$tmp/rej.json" "$c/reject/malloc.ptx" 2>/dev/null >/dev/null; check "reject with report" 1 $?
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert not r['accepted'] and 'gate' in r['rejected']['reason']" "$tmp/rej.json"
check "rejection report" 0 $?
"$g" --gate malloc "$c/reject/malloc.ptx" >/dev/null; check "--gate allows the call" 0 $?
"$g" --verify "$tmp/out.ptx"; check "--verify guarded" 0 $?
"$g" --verify "$c/basic.ptx" 2>"$tmp/err"; check "--verify unguarded" 1 $?
grep -q "not fenced" "$tmp/err" || { echo "FAIL verify reason: $(cat "$tmp/err")"; fail=1; }
"$g" --strict "$c/adversarial.ptx" -o "$tmp/s.ptx"; check "--strict" 0 $?
grep -q "__agile_viol" "$tmp/s.ptx" || { echo "FAIL strict params"; fail=1; }
"$g" --roundtrip "$c/funcs_debug.ptx" | cmp -s - "$c/funcs_debug.ptx"; check "--roundtrip" 0 $?
if [[ -e /usr/local/cuda/lib64/libnvJitLink.so.13 || -n ${AGILE_NVJITLINK:-} ]]; then
  "$g" --compile sm_90 --cache-dir "$tmp/cache" --cubin "$tmp/a.cubin" "$c/basic.ptx" >/dev/null 2>"$tmp/c1"
  check "--compile (miss)" 0 $?
  grep -q "cache miss" "$tmp/c1" || { echo "FAIL expected miss: $(cat "$tmp/c1")"; fail=1; }
  "$g" --compile sm_90 --cache-dir "$tmp/cache" "$c/basic.ptx" >/dev/null 2>"$tmp/c2"
  check "--compile (hit)" 0 $?
  grep -q "cache hit" "$tmp/c2" || { echo "FAIL expected hit: $(cat "$tmp/c2")"; fail=1; }
  cat "$tmp/c1" "$tmp/c2"
  [[ -s $tmp/a.cubin ]] || { echo "FAIL no cubin"; fail=1; }
fi
exit $fail
