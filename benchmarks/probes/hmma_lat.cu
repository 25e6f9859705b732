// Device probe (device run 28, 2026-11-26): cycles per step of a dependent chain of
// mma.sync.m16n8k16 (bf16, f32 accumulate) on one warp, alone and with the 4-bit
// packed dequantization of the expert kernels in each step, at 1-16 warps per SM.
// Build and run on the device: nvcc -O3 -arch=sm_90 -o hl hmma_lat.cu && ./hl
#include <cstdio>
#include <cstdint>
__global__ void chain(float* out, long long* cyc, int n, uint32_t a0, uint32_t b0) {
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  uint32_t a = a0 + threadIdx.x, b = b0 ^ threadIdx.x;
  long long t0 = clock64();
  for (int i = 0; i < n; ++i) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a), "r"(a), "r"(a), "r"(a), "r"(b), "r"(b));
  }
  long long t1 = clock64();
  if ((threadIdx.x & 31) == 0) cyc[blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32] = t1 - t0;
  out[blockIdx.x * blockDim.x + threadIdx.x] = c[0] + c[1] + c[2] + c[3];
}
#include <cuda_bf16.h>
__global__ void chain_deq(float* out, long long* cyc, int n, uint32_t a0, uint32_t w0) {
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  uint32_t a = a0 + threadIdx.x, w = w0 ^ threadIdx.x;
  const uint32_t sel = 0x4440u | (threadIdx.x & 3);
  const uint32_t magic = 0x43004300u;
  const __nv_bfloat162 s2 = __floats2bfloat162_rn(0.01f, 0.01f);
  const __nv_bfloat162 z2 = __floats2bfloat162_rn(-0.08f, -0.08f);
  long long t0 = clock64();
  for (int i = 0; i < n; ++i) {
    w = w * 1664525u + 1013904223u;
    uint32_t bb[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t b = __byte_perm(w >> h, 0u, sel);
      uint32_t v = ((b * 0x1001u) & 0x000f000fu) | magic;
      __nv_bfloat162 q = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&v), *reinterpret_cast<const __nv_bfloat162*>(&magic));
      __nv_bfloat162 r = __hfma2(q, s2, z2);
      bb[h] = *reinterpret_cast<uint32_t*>(&r);
    }
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a), "r"(a), "r"(a), "r"(a), "r"(bb[0]), "r"(bb[1]));
  }
  long long t1 = clock64();
  if ((threadIdx.x & 31) == 0) cyc[blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32] = t1 - t0;
  out[blockIdx.x * blockDim.x + threadIdx.x] = c[0] + c[1] + c[2] + c[3];
}
int main() {
  const int n = 1024;
  for (int warps : {1, 4, 8, 12, 16}) {
    for (int blocks : {1, 132}) {
      float* out; long long* cyc;
      cudaMalloc(&out, blocks * warps * 32 * 4); cudaMalloc(&cyc, blocks * warps * 8);
      chain<<<blocks, warps * 32>>>(out, cyc, n, 0x3f803f80u, 0x3f803f80u);
      cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
      cudaEventRecord(e0);
      chain<<<blocks, warps * 32>>>(out, cyc, n, 0x3f803f80u, 0x3f803f80u);
      cudaEventRecord(e1); cudaEventSynchronize(e1);
      float ms; cudaEventElapsedTime(&ms, e0, e1);
      long long h[16]; cudaMemcpy(h, cyc, 8 * (warps < 16 ? warps : 16), cudaMemcpyDeviceToHost);
      printf("warps/block %2d blocks %3d: %.1f cycles per dependent mma (warp 0), kernel %.1f us for %d mma per warp\n",
             warps, blocks, (double)h[0] / n, ms * 1000, n);
      chain_deq<<<blocks, warps * 32>>>(out, cyc, n, 0x3f803f80u, 12345u);
      cudaEventRecord(e0);
      chain_deq<<<blocks, warps * 32>>>(out, cyc, n, 0x3f803f80u, 12345u);
      cudaEventRecord(e1); cudaEventSynchronize(e1);
      cudaEventElapsedTime(&ms, e0, e1);
      cudaMemcpy(h, cyc, 8 * (warps < 16 ? warps : 16), cudaMemcpyDeviceToHost);
      printf("   with dequant: %.1f cycles per step (warp 0), kernel %.1f us\n", (double)h[0] / n, ms * 1000);
      cudaFree(out); cudaFree(cyc);
    }
  }
  return 0;
}
