// A host-compiler stand-in for the CUDA names the zmlx kernel bodies use, so that
// `g++ -fsyntax-only` can catch syntax and type errors on machines without CUDA
// (shaders/check-cuda.sh). It declares; it does not implement: nothing here runs.
#pragma once
#include <math.h>
#include <cstdint>
#include <limits>
#include <utility>

#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __grid_constant__

struct __half {
  unsigned short x;
};
struct __nv_bfloat16 {
  unsigned short x;
};
float __half2float(__half);
float __bfloat162float(__nv_bfloat16);
__half __float2half_rn(float);
__nv_bfloat16 __float2bfloat16_rn(float);

struct uint4 {
  unsigned int x, y, z, w;
};
uint4 make_uint4(unsigned int, unsigned int, unsigned int, unsigned int);
template <typename T>
T __ldg(const T*);
float __shfl_xor_sync(unsigned int, float, int);
int __shfl_xor_sync(unsigned int, int, int);
void __syncthreads();

struct Dim3 {
  unsigned int x, y, z;
};
extern Dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace cuda {
namespace std {
using ::std::numeric_limits;
}
}  // namespace cuda

// ---- Router (moe_gate.cu) names ------------------------------------------------
float __expf(float);
float __fadd_rn(float, float);
float __fsub_rn(float, float);
float __fmul_rn(float, float);
float __fmaf_rn(float, float, float);
float __frcp_rn(float);
float __shfl_sync(unsigned int, float, int);
__half operator+(const __half&, const __half&);
__half operator/(const __half&, const __half&);
__nv_bfloat16 operator+(const __nv_bfloat16&, const __nv_bfloat16&);
__nv_bfloat16 operator/(const __nv_bfloat16&, const __nv_bfloat16&);
// ---- end of router names -------------------------------------------------------
// ---- Norm kernels (norm.cuh, add_rms_norm.cu, head_norm_rope.cu) ---------------
float __int_as_float(int);
float __fdiv_rn(float, float);
float rsqrtf(float);
__half operator*(const __half&, const __half&);
__nv_bfloat16 operator*(const __nv_bfloat16&, const __nv_bfloat16&);
// The down kernel's norm tail (down_combine_norm.cu).
void __threadfence();
unsigned int atomicAdd(unsigned int*, unsigned int);
template <typename T>
T __ldcg(const T*);
// ---- end of norm names ---------------------------------------------------------
// ---- Packed conversions (mma.cuh) ----------------------------------------------
float __uint_as_float(unsigned int);
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
struct __half2 {
  __half x, y;
};
__nv_bfloat162 __floats2bfloat162_rn(float, float);
__half2 __floats2half2_rn(float, float);
// ---- end of packed conversions -------------------------------------------------
// ---- Pipelined chain (mma.cuh) -------------------------------------------------
void __syncwarp(unsigned int mask = 0xffffffffu);
unsigned long long __cvta_generic_to_shared(const void*);
__nv_bfloat162 __hsub2(__nv_bfloat162, __nv_bfloat162);
__nv_bfloat162 __hfma2(__nv_bfloat162, __nv_bfloat162, __nv_bfloat162);
__half2 __hsub2(__half2, __half2);
__half2 __hfma2(__half2, __half2, __half2);
unsigned int __byte_perm(unsigned int, unsigned int, unsigned int);
// ---- end of pipelined chain ----------------------------------------------------
// ---- Router keys (route.cuh) ---------------------------------------------------
unsigned int __float_as_uint(float);
unsigned short __half_as_ushort(__half);
__half __ushort_as_half(unsigned short);
int __any_sync(unsigned int, int);
unsigned int __reduce_max_sync(unsigned int, unsigned int);
unsigned int max(unsigned int, unsigned int);
// ---- end of router keys --------------------------------------------------------
// ---- Fused router (router_qmv.cuh, swiglu_router.cu) ---------------------------
struct uint2 {
  unsigned int x, y;
};
__half __hfma(__half, __half, __half);
__half __hmul_rn(__half, __half);
__half __hadd_rn(__half, __half);
__nv_bfloat16 __hfma(__nv_bfloat16, __nv_bfloat16, __nv_bfloat16);
__nv_bfloat16 __hmul_rn(__nv_bfloat16, __nv_bfloat16);
__nv_bfloat16 __hadd_rn(__nv_bfloat16, __nv_bfloat16);
void __nanosleep(unsigned int);
void __trap();
unsigned int atomicExch(unsigned int*, unsigned int);
int min(int, int);
// ---- end of fused router -------------------------------------------------------
