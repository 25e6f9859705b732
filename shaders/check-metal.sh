#!/usr/bin/env bash
# Syntax and type check of the Metal kernel bodies without a Mac: each body is
# wrapped in the kind of signature MLX's fast::metal_kernel generates (template
# parameters for the template arguments, buffers for inputs and outputs, the
# thread-position attributes the body names), instantiated for float, half and
# bfloat16_t, and compiled with `g++ -fsyntax-only` against a mock of the Metal
# standard library (shaders/metal/mock/metal_stdlib). This catches syntax and type
# errors only; the Metal kernels are not yet run on Apple silicon.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cxx=${CXX:-g++}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
check() { # name, template parameters, instantiation args, buffers
  local name=$1 tparams=$2 targs=$3 bufs=$4 body=$here/metal/$1.metal
  for ty in float half bfloat16_t; do
    local src=$tmp/${name}_$ty.cpp
    {
      echo '#include <metal_stdlib>'
      echo 'using namespace metal;'
      cat "$here/metal/prelude.h"
      echo "template <$tparams>"
      echo "[[kernel]] void custom_kernel_${name}($bufs,"
      echo "    uint3 thread_position_in_grid [[thread_position_in_grid]],"
      echo "    uint thread_index_in_simdgroup [[thread_index_in_simdgroup]]) {"
      echo "#line 1 \"$body\""
      cat "$body"
      echo "}"
      echo "void instantiate() { auto* f = &custom_kernel_${name}<$ty, $targs>; (void)f; }"
    } >"$src"
    if ! "$cxx" -std=c++17 -fsyntax-only -Wall -Wno-attributes -Wno-unused-variable \
      -Wno-unknown-pragmas -I "$here/metal/mock" "$src"; then
      echo "check-metal: $name ($ty) failed" >&2
      status=1
    fi
  done
}
check expert_swiglu \
  "typename T, int BITS, int GROUP, int HID, int INTER, int LPR" "4, 64, 2048, 768, 32" \
  "const device T* x_in [[buffer(0)]], const device uint32_t* expert_ids [[buffer(1)]], const device uint32_t* dims_in [[buffer(2)]], const device uint32_t* w_gate [[buffer(3)]], const device T* s_gate [[buffer(4)]], const device T* b_gate [[buffer(5)]], const device uint32_t* w_up [[buffer(6)]], const device T* s_up [[buffer(7)]], const device T* b_up [[buffer(8)]], device T* h_out [[buffer(9)]]"
for res in 0 1; do
  check down_combine \
    "typename T, int BITS, int GROUP, int HID, int INTER, int LPR, int RES" "8, 32, 2048, 768, 16, $res" \
    "const device T* h_in [[buffer(0)]], const device uint32_t* expert_ids [[buffer(1)]], const device uint32_t* dims_in [[buffer(2)]], const device T* gate_scores [[buffer(3)]], const device uint32_t* w_down [[buffer(4)]], const device T* s_down [[buffer(5)]], const device T* b_down [[buffer(6)]], const device T* res_in [[buffer(7)]], device T* y_out [[buffer(8)]]"
done
check moe_gate \
  "typename T, int EXPERTS, int TOPK, int EPL, bool NORM" "128, 8, 4, true" \
  "const device T* logits_in [[buffer(0)]], const device uint32_t* dims_in [[buffer(1)]], device uint32_t* ids_out [[buffer(2)]], device T* scores_out [[buffer(3)]]"
exit $status
