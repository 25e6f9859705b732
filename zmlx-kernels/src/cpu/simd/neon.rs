//! NEON kernels for aarch64 (4 f32 lanes). NEON is part of the aarch64 baseline.
//!
//! Run under qemu (`zmlx-kernels/check-aarch64.sh`: the CPU tests compare every
//! available level against the naive reference), not yet on ARM hardware.

use core::arch::aarch64::*;

use crate::cpu::dtype::Element;

/// Widens 16 bytes to four f32x4 (bytes 0-3, 4-7, 8-11, 12-15).
#[inline(always)]
unsafe fn bytes_to_f32(v: uint8x16_t) -> [float32x4_t; 4] {
    let lo = vmovl_u8(vget_low_u8(v));
    let hi = vmovl_u8(vget_high_u8(v));
    [
        vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))),
        vcvtq_f32_u32(vmovl_u16(vget_high_u16(lo))),
        vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))),
        vcvtq_f32_u32(vmovl_u16(vget_high_u16(hi))),
    ]
}

/// See [`super::scalar::q4_dot`].
///
/// # Safety
/// `words.len() == scales.len() * gs / 8`, `xp.len() == scales.len() * gs`,
/// `xsum`/`biases` as long as `scales`, `GS % 32 == 0` (the group size as a constant, so the
/// per-group loop is fully unrolled).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn q4_dot<T: Element, const GS: usize>(
    words: &[u32],
    xp: &[f32],
    xsum: &[f32],
    scales: &[T],
    biases: &[T],
) -> f32 {
    let gs = GS;
    let mask = vdupq_n_u8(0x0f);
    let bp = words.as_ptr().cast::<u8>();
    let xpp = xp.as_ptr();
    let mut total = vdupq_n_f32(0.0);
    let mut bias_acc = 0.0f32;
    for g in 0..scales.len() {
        let mut a = [vdupq_n_f32(0.0); 4];
        for blk in 0..gs / 32 {
            let v = vld1q_u8(bp.add(g * gs / 2 + blk * 16));
            let x = xpp.add(g * gs + blk * 32);
            let lo = bytes_to_f32(vandq_u8(v, mask));
            let hi = bytes_to_f32(vshrq_n_u8::<4>(v));
            for c in 0..4 {
                a[c] = vfmaq_f32(a[c], lo[c], vld1q_f32(x.add(4 * c)));
                a[c] = vfmaq_f32(a[c], hi[c], vld1q_f32(x.add(16 + 4 * c)));
            }
        }
        let sum = vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3]));
        total = vfmaq_n_f32(total, sum, scales.get_unchecked(g).to_f32());
        bias_acc += biases.get_unchecked(g).to_f32() * xsum.get_unchecked(g);
    }
    vaddvq_f32(total) + bias_acc
}

/// See [`super::scalar::q8_dot`].
///
/// # Safety
/// `words.len() == scales.len() * gs / 4`, `x.len() == scales.len() * gs`,
/// `xsum`/`biases` as long as `scales`, `GS % 32 == 0` (the group size as a constant, so the
/// per-group loop is fully unrolled).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn q8_dot<T: Element, const GS: usize>(
    words: &[u32],
    x: &[f32],
    xsum: &[f32],
    scales: &[T],
    biases: &[T],
) -> f32 {
    let gs = GS;
    let bp = words.as_ptr().cast::<u8>();
    let xp = x.as_ptr();
    let mut total = vdupq_n_f32(0.0);
    let mut bias_acc = 0.0f32;
    for g in 0..scales.len() {
        let mut a = [vdupq_n_f32(0.0); 4];
        let mut i = g * gs;
        let end = i + gs;
        while i < end {
            let q = bytes_to_f32(vld1q_u8(bp.add(i)));
            for c in 0..4 {
                a[c] = vfmaq_f32(a[c], q[c], vld1q_f32(xp.add(i + 4 * c)));
            }
            i += 16;
        }
        let sum = vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3]));
        total = vfmaq_n_f32(total, sum, scales.get_unchecked(g).to_f32());
        bias_acc += biases.get_unchecked(g).to_f32() * xsum.get_unchecked(g);
    }
    vaddvq_f32(total) + bias_acc
}

/// f32 weight row dot product.
///
/// # Safety
/// `w.len() == x.len()`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = vdupq_n_f32(0.0);
    let mut a1 = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 8 <= n {
        a0 = vfmaq_f32(a0, vld1q_f32(wp.add(i)), vld1q_f32(xp.add(i)));
        a1 = vfmaq_f32(a1, vld1q_f32(wp.add(i + 4)), vld1q_f32(xp.add(i + 4)));
        i += 8;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += w.get_unchecked(i) * x.get_unchecked(i);
        i += 1;
    }
    vaddvq_f32(vaddq_f32(a0, a1)) + tail
}

/// bf16 weight row dot product: bf16 -> f32 is a 16-bit left shift.
///
/// # Safety
/// `w.len() == x.len()`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_bf16(w: &[half::bf16], x: &[f32]) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr().cast::<u16>(), x.as_ptr());
    let mut a0 = vdupq_n_f32(0.0);
    let mut a1 = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 8 <= n {
        let raw = vld1q_u16(wp.add(i));
        let w0 = vreinterpretq_f32_u32(vshlq_n_u32::<16>(vmovl_u16(vget_low_u16(raw))));
        let w1 = vreinterpretq_f32_u32(vshlq_n_u32::<16>(vmovl_u16(vget_high_u16(raw))));
        a0 = vfmaq_f32(a0, w0, vld1q_f32(xp.add(i)));
        a1 = vfmaq_f32(a1, w1, vld1q_f32(xp.add(i + 4)));
        i += 8;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += w.get_unchecked(i).to_f32() * x.get_unchecked(i);
        i += 1;
    }
    vaddvq_f32(vaddq_f32(a0, a1)) + tail
}

/// `M` activation rows against four weight rows; `out[r][c]` = row `r` of `x` dot row
/// `c` of `w`.
///
/// # Safety
/// All slices have the same length.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_mx4<const M: usize>(x: [&[f32]; M], w: [&[f32]; 4]) -> [[f32; 4]; M] {
    let n = w[0].len();
    let mut acc = [[vdupq_n_f32(0.0); 4]; M];
    let mut i = 0;
    while i + 4 <= n {
        let xv: [float32x4_t; M] = core::array::from_fn(|r| vld1q_f32(x[r].as_ptr().add(i)));
        for c in 0..4 {
            let wv = vld1q_f32(w[c].as_ptr().add(i));
            for (ar, xr) in acc.iter_mut().zip(&xv) {
                ar[c] = vfmaq_f32(ar[c], *xr, wv);
            }
        }
        i += 4;
    }
    core::array::from_fn(|r| {
        core::array::from_fn(|c| {
            let tail: f32 = (i..n)
                .map(|j| x[r].get_unchecked(j) * w[c].get_unchecked(j))
                .sum();
            vaddvq_f32(acc[r][c]) + tail
        })
    })
}
