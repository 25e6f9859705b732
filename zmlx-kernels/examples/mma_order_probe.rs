//! Device probe (CUDA only): does `mma.sync.m16n8k16` (bf16 in, f32 accumulators) give
//! the same bits when the 16 values of K inside each block are assigned to the
//! fragment slots in another order (the same permutation for both operands)?
//!
//! Why it matters: zmlx's expert kernels must reproduce MLX's `qmm_sm80` bit for bit,
//! so they issue the same instruction on the same values block by block. If the
//! tensor core's block sum does not depend on where each product sits, lane t could
//! take k = t, t + 4 (t + 8, t + 12) instead of k = 2t, 2t + 1 (2t + 8, 2t + 9), and a
//! 4-bit weight pair would then come out of one LOP3 of the packed word (see
//! notes/cuda-kernels.md, ninth session). This probe answers that question; no
//! kernel relies on it yet.
//!
//! Each case is one warp: 16 weight rows in A, the activation in every column of B
//! (as the 16-row tiles do), K values in blocks of 16 chained in order; the chain
//! runs once with the standard slots and once permuted, and, as a control that the
//! data can tell orders apart at all, once with the blocks in reverse order. Values
//! are bf16 with exponents spread over 2^-24..2^24 (and a share of exact
//! cancellations), so that alignment and truncation inside the block sum are
//! exercised. It prints how many of the outputs differ in bits.
//!
//! Usage: `mma_order_probe` on MLX's CUDA backend: 4096 cases each with K = 16, 128
//! and 2048 (1, 8 and 128 blocks).

use mlx::kernel::{CustomKernel, KernelBackend, KernelLaunch, KernelSource};
use mlx::{Array, Device, Dtype, StreamOrDevice};

/// One case a warp: `out_std[case, row]` with the standard slots, `out_perm` with
/// k permuted inside each block.
const BODY: &str = r#"
const int lane = threadIdx.x & 31;
const int cs = blockIdx.x;
const int g = lane >> 2;
const int t = lane & 3;
const int K = static_cast<int>(dims_in[0]);
const unsigned short* W = reinterpret_cast<const unsigned short*>(w_in) + static_cast<long long>(cs) * 16 * K;
const unsigned short* X = reinterpret_cast<const unsigned short*>(x_in) + static_cast<long long>(cs) * K;
float cs0[4] = {0.f, 0.f, 0.f, 0.f};
float cs1[4] = {0.f, 0.f, 0.f, 0.f};
float cs2[4] = {0.f, 0.f, 0.f, 0.f};
auto pk = [](const unsigned short* p, int i, int j) -> uint32_t {
  return static_cast<uint32_t>(p[i]) | (static_cast<uint32_t>(p[j]) << 16);
};
for (int b = 0; b < K / 16; ++b) {
  const int o = b * 16;
  const unsigned short* r0 = W + g * K + o;
  const unsigned short* r8 = W + (g + 8) * K + o;
  const unsigned short* x = X + o;
  // Standard slots: k = 2t, 2t + 1 and 2t + 8, 2t + 9.
  uint32_t a0 = pk(r0, 2 * t, 2 * t + 1), a1 = pk(r8, 2 * t, 2 * t + 1);
  uint32_t a2 = pk(r0, 2 * t + 8, 2 * t + 9), a3 = pk(r8, 2 * t + 8, 2 * t + 9);
  uint32_t b0 = pk(x, 2 * t, 2 * t + 1), b1 = pk(x, 2 * t + 8, 2 * t + 9);
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(cs0[0]), "+f"(cs0[1]), "+f"(cs0[2]), "+f"(cs0[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  // Permuted slots: k = t, t + 4 and t + 8, t + 12 (the same products).
  a0 = pk(r0, t, t + 4); a1 = pk(r8, t, t + 4);
  a2 = pk(r0, t + 8, t + 12); a3 = pk(r8, t + 8, t + 12);
  b0 = pk(x, t, t + 4); b1 = pk(x, t + 8, t + 12);
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(cs1[0]), "+f"(cs1[1]), "+f"(cs1[2]), "+f"(cs1[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Control: the standard slots with the blocks in reverse order, which changes the
// rounding between blocks and so should change some bits (else the data is too tame).
for (int b = K / 16 - 1; b >= 0; --b) {
  const int o = b * 16;
  const unsigned short* r0 = W + g * K + o;
  const unsigned short* r8 = W + (g + 8) * K + o;
  const unsigned short* x = X + o;
  const uint32_t a0 = pk(r0, 2 * t, 2 * t + 1), a1 = pk(r8, 2 * t, 2 * t + 1);
  const uint32_t a2 = pk(r0, 2 * t + 8, 2 * t + 9), a3 = pk(r8, 2 * t + 8, 2 * t + 9);
  const uint32_t b0 = pk(x, 2 * t, 2 * t + 1), b1 = pk(x, 2 * t + 8, 2 * t + 9);
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(cs2[0]), "+f"(cs2[1]), "+f"(cs2[2]), "+f"(cs2[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
if (t == 0) {
  out_std[cs * 16 + g] = cs0[0];
  out_std[cs * 16 + g + 8] = cs0[2];
  out_perm[cs * 16 + g] = cs1[0];
  out_perm[cs * 16 + g + 8] = cs1[2];
  out_ctrl[cs * 16 + g] = cs2[0];
  out_ctrl[cs * 16 + g + 8] = cs2[2];
}
"#;

/// A bf16 value with a random sign, mantissa and exponent in 2^-24..2^24; one value
/// in eight is the negation of the value before it (exact cancellations).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out: Vec<f32> = Vec::with_capacity(n);
    for i in 0..n {
        let r = next();
        if i > 0 && r % 8 == 0 {
            let prev = out[i - 1];
            out.push(-prev);
            continue;
        }
        let mant = 1.0 + (r >> 40) as f32 / (1u64 << 24) as f32;
        let exp = ((r >> 8) % 49) as i32 - 24;
        let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
        out.push(half::bf16::from_f32(sign * mant * 2f32.powi(exp)).to_f32());
    }
    out
}

fn main() -> mlx::Result<()> {
    if !mlx::cuda_is_available()? {
        println!("mma_order_probe: needs MLX's CUDA backend (skipped)");
        return Ok(());
    }
    let s = StreamOrDevice::Device(Device::gpu());
    let kernel = CustomKernel::new(
        KernelBackend::Cuda,
        &KernelSource {
            name: "zmlx_mma_order_probe",
            input_names: &["w_in", "x_in", "dims_in"],
            output_names: &["out_std", "out_perm", "out_ctrl"],
            source: BODY,
            header: "",
            ensure_row_contiguous: true,
            atomic_outputs: false,
            shared_memory: 0,
        },
    )?;
    let cases = 4096;
    for blocks in [1usize, 8, 128] {
        let k = 16 * blocks;
        let w = Array::from_slice(&values(cases * 16 * k, 7), &[(cases * 16 * k) as i32])?;
        let x = Array::from_slice(&values(cases * k, 11), &[(cases * k) as i32])?;
        let w = mlx::ops::astype(&w, Dtype::Bfloat16, s)?;
        let x = mlx::ops::astype(&x, Dtype::Bfloat16, s)?;
        let dims = Array::from_slice(&[k as u32], &[1])?;
        let shape = [(cases * 16) as i32];
        let outs = kernel.call(
            &KernelLaunch {
                inputs: &[&w, &x, &dims],
                outputs: &[
                    (&shape, Dtype::Float32),
                    (&shape, Dtype::Float32),
                    (&shape, Dtype::Float32),
                ],
                grid: [(cases * 32) as i32, 1, 1],
                threadgroup: [32, 1, 1],
                template_args: &[],
                init_value: None,
                verbose: false,
            },
            s,
        )?;
        let a = outs[0].to_vec::<f32>()?;
        let b = outs[1].to_vec::<f32>()?;
        let c = outs[2].to_vec::<f32>()?;
        let count = |u: &[f32], v: &[f32]| {
            u.iter()
                .zip(v)
                .filter(|(p, q)| p.to_bits() != q.to_bits())
                .count()
        };
        let differ = count(&a, &b);
        let control = count(&a, &c);
        let example = a
            .iter()
            .zip(&b)
            .find(|(p, q)| p.to_bits() != q.to_bits())
            .map(|(p, q)| format!("; first: {p:e} vs {q:e}"))
            .unwrap_or_default();
        println!(
            "mma_order_probe: {cases} cases x 16 rows, K = {k} ({blocks} blocks): {differ}/{} outputs differ in bits between the standard and the permuted k slots{example}; control (blocks in reverse order): {control}/{} differ",
            a.len(),
            a.len()
        );
    }
    Ok(())
}
