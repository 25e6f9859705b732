//! NEON kernels for aarch64 (4 f32 lanes). NEON is part of the aarch64 baseline.
//!
//! Run under qemu (`zmlx-kernels/check-aarch64.sh`: the CPU tests compare every
//! available level against the naive reference), not yet on ARM hardware.

use core::arch::aarch64::*;

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

/// Two activation rows against four weight rows.
///
/// # Safety
/// All six slices have the same length.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_2x4(x: [&[f32]; 2], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let n = x[0].len();
    let xp = [x[0].as_ptr(), x[1].as_ptr()];
    let wp = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr()];
    let mut acc = [[vdupq_n_f32(0.0); 4]; 2];
    let mut i = 0;
    while i + 4 <= n {
        let x0 = vld1q_f32(xp[0].add(i));
        let x1 = vld1q_f32(xp[1].add(i));
        for c in 0..4 {
            let wv = vld1q_f32(wp[c].add(i));
            acc[0][c] = vfmaq_f32(acc[0][c], x0, wv);
            acc[1][c] = vfmaq_f32(acc[1][c], x1, wv);
        }
        i += 4;
    }
    let mut out = [[0.0f32; 4]; 2];
    for r in 0..2 {
        for c in 0..4 {
            let mut tail = 0.0f32;
            for j in i..n {
                tail += x[r].get_unchecked(j) * w[c].get_unchecked(j);
            }
            out[r][c] = vaddvq_f32(acc[r][c]) + tail;
        }
    }
    out
}

/// One activation row against four weight rows.
///
/// # Safety
/// All five slices have the same length.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_1x4(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    let n = x.len();
    let xp = x.as_ptr();
    let wp = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr()];
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 4 <= n {
        let x0 = vld1q_f32(xp.add(i));
        for c in 0..4 {
            acc[c] = vfmaq_f32(acc[c], x0, vld1q_f32(wp[c].add(i)));
        }
        i += 4;
    }
    let mut out = [0.0f32; 4];
    for c in 0..4 {
        let mut tail = 0.0f32;
        for j in i..n {
            tail += x.get_unchecked(j) * w[c].get_unchecked(j);
        }
        out[c] = vaddvq_f32(acc[c]) + tail;
    }
    out
}
