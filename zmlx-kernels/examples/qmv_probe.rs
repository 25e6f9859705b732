//! Which arithmetic MLX's one-token quantized matmul uses for 4-bit affine weights on
//! CUDA: a probe for fusing the attention projections (o_proj into the add + norm
//! kernel, q/k/v into the head norm + RoPE kernel), which needs their bits.
//!
//! MLX's `quantized_matmul` with one row of activations runs its `qmv_kernel`: one
//! warp a weight row, each lane a run of consecutive values every 32 runs, the
//! lane's partial sums added in order in f32, a warp butterfly, a rounding to T
//! (shaders/cuda/router_qmv.cuh reproduces the 8-bit case bit for bit, device run
//! 114). The stored MLX source read for this (notes/cuda-kernels.md, eighteenth
//! session) takes 16 values a lane for sub-byte codes and keeps those partial sums
//! in T, updated with a packed fused multiply-add; whether the 0.32.4 wheel does is
//! what this probe measures. Variants of the probe kernel:
//! - `EPT`: values a lane a step, 8 or 16;
//! - `TACC`: 1 = the partial sums in T (`fma(x, w, acc)` rounded to T each step),
//!   0 = in f32 (exact products, as the 8-bit path);
//! - `QDEQ`: 2 = `q * scale + bias` rounded once to T, 0 = product and sum each
//!   rounded.
//!
//! For each shape (o_proj 2048 x 4096, the merged q/k/v 5120 x 2048 of
//! Qwen3-30B-A3B, and smaller ones), dtype (bf16, f16) and group size (32, 64, 128),
//! it prints how many outputs differ in bits from MLX's `quantized_matmul` for each
//! variant, and the time of each (median of 20, one call and a sync each).
//!
//! Usage: `qmv_probe` on MLX's CUDA backend.

use std::time::Instant;

use mlx::kernel::{CustomKernel, KernelBackend, KernelLaunch, KernelSource, TemplateArg};
use mlx::quantization::{quantize, quantized_matmul, QuantSpec};
use mlx::{ops, random, Device, Dtype, StreamOrDevice};

/// The probe kernel's body: warp `w` of block `b` computes output row `b * 8 + w`.
const BODY: &str = r#"
constexpr int GPR = K / GROUP;
const int lane = threadIdx.x & 31;
const int row = blockIdx.x * 8 + (threadIdx.x >> 5);
if (row < N) {
  const uint32_t* wr = w_in + static_cast<long long>(row) * (K / 8);
  const T* sr = s_in + static_cast<long long>(row) * GPR;
  const T* br = b_in + static_cast<long long>(row) * GPR;
  T acc_t[EPT];
  float acc_f[EPT];
#pragma unroll
  for (int i = 0; i < EPT; ++i) {
    acc_t[i] = zmlx::from_float<T>(0.f);
    acc_f[i] = 0.f;
  }
#pragma unroll 1
  for (int r = 0; r < K / (32 * EPT); ++r) {
    const int idx = r * 32 * EPT + lane * EPT;
    const T sc = sr[idx / GROUP];
    const T bi = br[idx / GROUP];
#pragma unroll
    for (int i = 0; i < EPT; ++i) {
      const uint32_t word = wr[(idx + i) / 8];
      const uint32_t q = (word >> (4 * ((idx + i) & 7))) & 15u;
      const T wq = zmlx::from_float<T>(static_cast<float>(q));
      const T wd = QDEQ == 2 ? __hfma(wq, sc, bi) : __hadd_rn(__hmul_rn(wq, sc), bi);
      const T xv = x_in[idx + i];
      if (TACC == 1) {
        acc_t[i] = __hfma(xv, wd, acc_t[i]);
      } else {
        acc_f[i] = __fmaf_rn(zmlx::to_float(xv), zmlx::to_float(wd), acc_f[i]);
      }
    }
  }
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < EPT; ++i) {
    sum = __fadd_rn(sum, TACC == 1 ? zmlx::to_float(acc_t[i]) : acc_f[i]);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    sum = __fadd_rn(sum, __shfl_xor_sync(0xffffffffu, sum, o));
  }
  if (lane == 0) {
    y_out[row] = zmlx::from_float<T>(sum);
  }
}
"#;

fn main() -> mlx::Result<()> {
    if !mlx::cuda_is_available()? {
        println!("qmv_probe: needs MLX's CUDA backend (skipped)");
        return Ok(());
    }
    let s = StreamOrDevice::Device(Device::gpu());
    let kernel = CustomKernel::new(
        KernelBackend::Cuda,
        &KernelSource {
            name: "zmlx_qmv_probe",
            input_names: &["x_in", "w_in", "s_in", "b_in"],
            output_names: &["y_out"],
            source: BODY,
            header: include_str!("../../shaders/cuda/prelude.cuh"),
            ensure_row_contiguous: true,
            atomic_outputs: false,
            shared_memory: 0,
        },
    )?;
    let shapes = [(2048, 4096), (5120, 2048), (512, 1024), (256, 512)];
    let mut seed = 100u64;
    for (n, k) in shapes {
        for dt in [Dtype::Bfloat16, Dtype::Float16] {
            for group in [32, 64, 128] {
                seed += 3;
                let key = random::key(seed)?;
                let w = random::normal(&[n, k], dt, 0.0, 0.02, Some(&key), s)?;
                let q = quantize(&w, QuantSpec::affine(group, 4), s)?;
                let Some(biases) = q.biases.as_ref() else {
                    return Err(mlx::Error::invalid("qmv_probe", "affine without biases"));
                };
                let key = random::key(seed + 1)?;
                let x = random::normal(&[1, k], dt, 0.0, 1.0, Some(&key), s)?;
                let reference = quantized_matmul(&x, &q, true, s)?;
                reference.eval()?;
                let want = bits(&reference)?;
                let mlx_us = median_us(|| {
                    let y = quantized_matmul(&x, &q, true, s)?;
                    y.eval()
                })?;
                let mut line = format!("{:?} N{n} K{k} g{group}: MLX {mlx_us:.1} us", dt);
                for (ept, tacc, qdeq) in [
                    (16, 1, 2),
                    (16, 1, 0),
                    (16, 0, 2),
                    (8, 1, 2),
                    (8, 0, 2),
                    (8, 0, 0),
                ] {
                    if k % (32 * ept) != 0 || group % ept != 0 {
                        continue;
                    }
                    let targs = [
                        ("T", TemplateArg::Dtype(dt)),
                        ("N", TemplateArg::Int(n)),
                        ("K", TemplateArg::Int(k)),
                        ("GROUP", TemplateArg::Int(group)),
                        ("EPT", TemplateArg::Int(ept)),
                        ("TACC", TemplateArg::Int(tacc)),
                        ("QDEQ", TemplateArg::Int(qdeq)),
                    ];
                    let call = || {
                        kernel.call(
                            &KernelLaunch {
                                inputs: &[&x, &q.weight, &q.scales, biases],
                                outputs: &[(&[1, n], dt)],
                                grid: [(n + 7) / 8 * 256, 1, 1],
                                threadgroup: [256, 1, 1],
                                template_args: &targs,
                                init_value: Some(f32::NAN),
                                verbose: false,
                            },
                            s,
                        )
                    };
                    let out = call()?;
                    let got = bits(&out[0])?;
                    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                    let us = median_us(|| call()?[0].eval())?;
                    line += &format!(
                        " | EPT {ept} TACC {tacc} QDEQ {qdeq}: {differ}/{n} differ, {us:.1} us"
                    );
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// The 16-bit patterns of a 16-bit float array, as u32.
fn bits(a: &mlx::Array) -> mlx::Result<Vec<u32>> {
    let s = StreamOrDevice::Device(Device::gpu());
    let u = ops::view(a, Dtype::Uint16, s)?;
    let u = ops::astype(&u, Dtype::Uint32, s)?;
    u.to_vec::<u32>()
}

/// The median over 20 runs of `f` (after 3 unmeasured), in microseconds.
fn median_us(mut f: impl FnMut() -> mlx::Result<()>) -> mlx::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut t = Vec::with_capacity(20);
    for _ in 0..20 {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}
