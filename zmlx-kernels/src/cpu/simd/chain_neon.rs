//! aarch64 NEON kernel of MLX's sequential quantized-matmul chain for bf16 activations
//! (see `cpu/chain.rs`), with every rounding done by Veltkamp splitting in f32
//! arithmetic, as `chain_x86::chain16_bf16_split` does: `c = fl(v * 65537)`,
//! `c - (c - v)` rounds `v` to bf16 (nearest even) for zero and every normal `v` below
//! 2^111 in magnitude, and gives NaN from 2^112 up and for infinities and NaN.
//!
//! The lanes run different output rows side by side (4 per vector, `R` vectors at a
//! time so that `R` independent accumulator chains hide each other's latency). The
//! words of all lanes at one k are loaded one per row, as AVX2's gather does.
//!
//! Run under qemu only (`zmlx-kernels/check-aarch64.sh`), not yet on ARM hardware.

use core::arch::aarch64::*;

/// See `chain_x86::SPLIT_FACTOR`: `2^16 + 1`.
const SPLIT_FACTOR: f32 = 65537.0;

/// `T(v)` for bf16 by splitting: `c = fl(v * 65537)` (one multiply), `c - (c - v)`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn round_split(v: float32x4_t) -> float32x4_t {
    let c = vmulq_n_f32(v, SPLIT_FACTOR);
    vsubq_f32(c, vsubq_f32(c, v))
}

/// `T(a * b)` for bf16-valued `a`, `b` with `a65537 = a * 65537` (exact): `c = a65537 * b`
/// is the split's `fl(65537 v)` of the exact product `v = a * b`, `d = c - a * b` one
/// fused multiply-subtract, `c - d`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn round_product_split(a: float32x4_t, a65537: float32x4_t, b: float32x4_t) -> float32x4_t {
    let c = vmulq_f32(a65537, b);
    vsubq_f32(c, vfmsq_f32(c, a, b))
}

/// `R` blocks of 4 output rows against one activation row `x`: lane `l` of block `b`
/// runs row `rows[4 * b + l]` (the index of its first word in `packed`); results go to
/// `out[4 * b + l]`. `sb` holds, per block, the rows' scales then biases, lane-major
/// (`sb[b * 8 * groups + g * 4 + l]` the scale of group `g`, `+ 4 * groups` its bias).
///
/// Exact (MLX's bits) under the conditions of `chain_x86::chain16_bf16_split`: no f32
/// denormal anywhere in the chain (the caller's guard) and no intermediate of 2^111 or
/// more; otherwise an output may be NaN instead, which the caller detects and
/// recomputes.
///
/// # Safety
/// NEON available; `rows.len() == 4 * R`; every `rows[i] + groups * gs * BITS / 32` within
/// `packed`; `sb` holds `8 * groups * R` values; `x` holds `groups * gs` values; `gs` a
/// multiple of `32 / BITS`; `out.len() >= 4 * R`; BITS is 2, 4 or 8; the scales, biases
/// and `x` are bf16 values widened to f32.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn chain4_bf16_split<const BITS: u32, const R: usize>(
    packed: &[u32],
    rows: &[usize],
    sb: &[f32],
    groups: usize,
    gs: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let vpw = (32 / BITS) as usize;
    let wpg = gs / vpw;
    let mask = vdupq_n_u32((1u32 << BITS) - 1);
    let shift = vdupq_n_s32(-(BITS as i32));
    let pp = packed.as_ptr();
    let sp = sb.as_ptr();
    let blk = 8 * groups;
    let mut acc = [vdupq_n_f32(0.0); R];
    let mut k = 0usize;
    for g in 0..groups {
        let s: [float32x4_t; R] = core::array::from_fn(|b| vld1q_f32(sp.add(b * blk + g * 4)));
        let s65537: [float32x4_t; R] = core::array::from_fn(|b| vmulq_n_f32(s[b], SPLIT_FACTOR));
        let bias: [float32x4_t; R] =
            core::array::from_fn(|b| vld1q_f32(sp.add(b * blk + (groups + g) * 4)));
        for wi in 0..wpg {
            let at = g * wpg + wi;
            let mut word: [uint32x4_t; R] = core::array::from_fn(|b| {
                let w: [u32; 4] = core::array::from_fn(|l| *pp.add(rows[4 * b + l] + at));
                vld1q_u32(w.as_ptr())
            });
            for _ in 0..vpw {
                let xv = *x.get_unchecked(k);
                let (xs, x65537) = (vdupq_n_f32(xv), vdupq_n_f32(xv * SPLIT_FACTOR));
                for b in 0..R {
                    let q = vcvtq_f32_u32(vandq_u32(word[b], mask));
                    word[b] = vshlq_u32(word[b], shift);
                    // w = T(T(scale * q) + bias); p = T(x * w); acc = T(acc + p).
                    let sq = round_product_split(s[b], s65537[b], q);
                    let w = round_split(vaddq_f32(sq, bias[b]));
                    let p = round_product_split(xs, x65537, w);
                    acc[b] = round_split(vaddq_f32(acc[b], p));
                }
                k += 1;
            }
        }
    }
    for (b, a) in acc.iter().enumerate() {
        vst1q_f32(out.as_mut_ptr().add(4 * b), *a);
    }
}
