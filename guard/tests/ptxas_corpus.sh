#!/usr/bin/env bash
# ptxas_corpus.sh GUARD CORPUS — every accepted PTX of the corpus, guarded in each mode,
# must assemble with ptxas for the input's own target (sm_90 / sm_90a ...). Exit 77
# (skipped) without a CUDA toolkit.
set -uo pipefail
guard=$1
corpus=$2
ptxas=${PTXAS:-/usr/local/cuda/bin/ptxas}
[[ -x $ptxas ]] || { echo "ptxas not found: skipped"; exit 77; }
tmp=$(mktemp -d /tmp/guard-ptxas.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0 n=0
while IFS= read -r f; do
  arch=$(awk '/^[ \t]*\.target/ {gsub(",", "", $2); print $2; exit}' "$f")
  [[ -n $arch ]] || arch=sm_90
  b=$(echo "${f#$corpus/}" | tr '/' '_')
  for mode in mask strict bits; do
    case $mode in
      mask) opts=() ;;
      strict) opts=(--strict) ;;
      bits) opts=(--window-bits 32) ;;
    esac
    out=$tmp/$b.$mode.ptx
    if ! "$guard" "${opts[@]}" "$f" -o "$out" 2>"$tmp/err"; then
      echo "FAIL guard $mode $f: $(cat "$tmp/err")"; fail=1; continue
    fi
    if ! "$ptxas" -arch="$arch" "$out" -o "$tmp/out.cubin" 2>"$tmp/err"; then
      echo "FAIL ptxas -arch=$arch $mode $f:"; head -5 "$tmp/err"; fail=1; continue
    fi
    n=$((n + 1))
  done
done < <(find "$corpus" -name '*.ptx' -not -path '*/reject/*' | sort)
echo "ptxas: $n guarded outputs assembled"
exit $fail
