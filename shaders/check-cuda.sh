#!/usr/bin/env bash
# Syntax and type check of the CUDA kernel bodies without CUDA: each body is wrapped
# in the signature MLX's fast::cuda_kernel would generate (template arguments as
# constexpr lines) and compiled with `g++ -fsyntax-only` against a mock of the CUDA
# names (shaders/cuda/mock/cuda_mock.h). NVRTC on a GPU machine stays the real
# compiler; this only catches typos and type errors early. Usage: check-cuda.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cxx=${CXX:-g++}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
check() { # name, type, template lines, signature[, headers (default: the expert
  # kernels')[, body files (default: name.cu)]]
  local name=$1 ty=$2 consts=$3 sig=$4
  local headers=${5:-prelude.cuh mma.cuh} bodies=${6:-$1.cu}
  {
    echo '#define ZMLX_SYNTAX_ONLY'
    echo '#include "cuda_mock.h"'
    for h in $headers; do cat "$here/cuda/$h"; done
    echo "namespace mlx::core::cu {"
    echo "__global__ void custom_kernel_${name}(${sig//T/$ty}) {"
    echo "  using T = $ty;"
    echo "$consts"
    for b in $bodies; do
      echo "#line 1 \"$here/cuda/$b\""
      cat "$here/cuda/$b"
    done
    echo "}"
    echo "}"
  } >"$tmp/$name.cpp"
  if ! "$cxx" -std=c++17 -fsyntax-only -Wall -Wno-unused-variable -Wno-unknown-pragmas \
    -I "$here/cuda/mock" "$tmp/$name.cpp"; then
    echo "check-cuda: $name ($ty) failed" >&2
    status=1
  fi
}
for ty in __half __nv_bfloat16; do
  for bits in 4 8; do
    pipe=$((bits == 4 ? 8 : 2))
    rows=$((bits == 4 ? 16 : 8))
    swiglu_consts="constexpr int BITS = $bits; constexpr int GROUP = 64; constexpr int HID = 2048; constexpr int INTER = 768; constexpr int DEQ = $((bits / 4 - 1)); constexpr int PIPE = $pipe; constexpr int TPB = 4; constexpr int ROWS = $rows; constexpr int CPS = $((rows / 2));"
    check expert_swiglu "$ty" "$swiglu_consts" \
      "const T* x_in, const uint32_t* expert_ids, const uint32_t* dims_in, const uint32_t* w_gate, const T* s_gate, const T* b_gate, const uint32_t* w_up, const T* s_up, const T* b_up, T* h_out" \
      "prelude.cuh mma.cuh" "swiglu_ids.cu expert_swiglu.cu"
    check routed_swiglu "$ty" "$swiglu_consts constexpr int RK = 8; constexpr int REXP = 128; constexpr bool NORM = true;" \
      "const T* x_in, const T* logits_in, const uint32_t* dims_in, const uint32_t* w_gate, const T* s_gate, const T* b_gate, const uint32_t* w_up, const T* s_up, const T* b_up, T* h_out, uint32_t* ids_out, T* scores_out" \
      "prelude.cuh mma.cuh route.cuh" "swiglu_route.cu expert_swiglu.cu"
    check router_swiglu "$ty" "$swiglu_consts constexpr int RK = 8; constexpr int REXP = 128; constexpr bool NORM = true; constexpr int RGROUP = 64; constexpr int QDEQ = 2; constexpr int RROWS = 2; constexpr int RWAIT = 1000000;" \
      "const T* x_in, const uint32_t* w_router, const uint32_t* dims_in, const uint32_t* w_gate, const T* s_gate, const T* b_gate, const uint32_t* w_up, const T* s_up, const T* b_up, const T* s_router, const T* b_router, const uint32_t* rscr_in, T* h_out, uint32_t* ids_out, T* scores_out" \
      "prelude.cuh mma.cuh route.cuh router_qmv.cuh" "swiglu_router.cu expert_swiglu.cu"
    check down_combine "$ty" \
      "constexpr int BITS = $bits; constexpr int GROUP = 32; constexpr int HID = 2048; constexpr int INTER = 768; constexpr int DEQ = 2; constexpr int SUMV = 1; constexpr int RES = $((bits / 8)); constexpr int PIPE = $((10 - pipe)); constexpr int ROWS = $((24 - rows)); constexpr int CPS = 4;" \
      "const T* h_in, const uint32_t* expert_ids, const uint32_t* dims_in, const T* gate_scores, const uint32_t* w_down, const T* s_down, const T* b_down, const T* res_in, T* y_out"
    check down_combine_norm "$ty" \
      "constexpr int BITS = $bits; constexpr int GROUP = 64; constexpr int HID = 2048; constexpr int INTER = 768; constexpr int DEQ = 2; constexpr int SUMV = 0; constexpr int RES = 1; constexpr int PIPE = $pipe; constexpr int ROWS = $rows; constexpr int CPS = 8; constexpr int EPS = 897988541; constexpr int FMAV = 0;" \
      "const T* h_in, const uint32_t* expert_ids, const uint32_t* dims_in, const T* gate_scores, const uint32_t* w_down, const T* s_down, const T* b_down, const T* res_in, const T* wn_in, const uint32_t* cnt_in, T* y_out, T* n_out" \
      "prelude.cuh mma.cuh norm.cuh" "down_combine.cu down_combine_norm.cu"
  done
done
for ty in float __half __nv_bfloat16; do
  check moe_gate "$ty" \
    "constexpr int EXPERTS = 128; constexpr int TOPK = 8; constexpr int EPL = 4; constexpr bool NORM = true;" \
    "const T* logits_in, const uint32_t* dims_in, uint32_t* ids_out, T* scores_out" \
    "prelude.cuh route.cuh"
done
for ty in float __half __nv_bfloat16; do
  for axis in 128 2048 1000; do
    check add_rms_norm "$ty" \
      "constexpr int AXIS = $axis; constexpr int EPS = 897988541; constexpr int FMAV = 0;" \
      "const T* x_in, const T* r_in, const T* w_in, T* h_out, T* n_out" \
      "prelude.cuh norm.cuh"
  done
  check head_norm_rope "$ty" \
    "constexpr int D = 128; constexpr int NQ = 32; constexpr int NK = 4; constexpr int EPS = 897988541; constexpr int LB = 1101881344; constexpr int SC = 1065353216; constexpr int FMAV = 0; constexpr int ROPEV = 0;" \
    "const T* q_in, const T* k_in, const T* wq_in, const T* wk_in, const int32_t* offset_in, T* q_out, T* k_out" \
    "prelude.cuh norm.cuh"
  check head_norm_rope_kv "$ty" \
    "constexpr int D = 128; constexpr int NQ = 32; constexpr int NK = 4; constexpr int EPS = 897988541; constexpr int LB = 1101881344; constexpr int SC = 1065353216; constexpr int FMAV = 0; constexpr int ROPEV = 0;" \
    "const T* q_in, const T* k_in, const T* v_in, const T* wq_in, const T* wk_in, const int32_t* pos_in, const T* kc_in, const T* vc_in, T* q_out" \
    "prelude.cuh norm.cuh"
done
exit $status
