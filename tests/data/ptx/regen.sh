#!/usr/bin/env bash
# tests/data/ptx/regen.sh — regenerate the nvcc part of the guard corpus from src/*.cu.
# The .ptx files are committed so that the tests need no nvcc; rerun after editing a .cu.
set -euo pipefail
cd "$(dirname "$0")"
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
gen() { # gen SRC ARCH OUT
  "$NVCC" -std=c++17 -arch="$2" -ptx -lineinfo "src/$1" -o "$3"
}
gen basic.cu sm_90 basic.ptx
gen atomics.cu sm_90 atomics.ptx
gen funcs.cu sm_90 funcs.ptx
gen async.cu sm_90 async.ptx
gen adversarial.cu sm_90 adversarial.ptx
gen sm90.cu sm_90a sm90a.ptx
# A debug build: DWARF .section blocks, .file/.loc with inlined_at.
"$NVCC" -std=c++17 -arch=sm_90 -ptx -G src/funcs.cu -o funcs_debug.ptx
"$NVCC" -std=c++17 -arch=sm_90a -ptx -O3 src/basic.cu -o basic_sm90a.ptx
