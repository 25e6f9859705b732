//! MLX's fused "fast" ops: RMS and layer norms, rotary embeddings, attention.

use std::ffi::CString;

use mlx_sys as sys;

use crate::array::Array;
use crate::device::StreamOrDevice;
use crate::error::{Error, Result};

fn raw_or_null(a: Option<&Array>) -> sys::mlxs_array {
    a.map_or(std::ptr::null_mut(), |a| a.as_raw())
}

/// RMS norm over the last axis: `x / sqrt(mean(x^2) + eps) * weight`.
///
/// ```
/// use mlx::{fast, Array};
/// let x = Array::from_slice(&[3.0f32, 4.0], &[1, 2])?;
/// let y = fast::rms_norm(&x, None, 0.0, ())?;
/// let v = y.to_vec::<f32>()?;
/// assert!((v[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6);
/// # Ok::<(), mlx::Error>(())
/// ```
#[track_caller]
pub fn rms_norm(
    x: &Array,
    weight: Option<&Array>,
    eps: f32,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    if let Some(w) = weight {
        let last = x.shape().last().copied().unwrap_or(0);
        if w.ndim() != 1 || w.shape()[0] != last {
            return Err(Error::invalid(
                "rms_norm",
                format!(
                    "weight has shape {:?}, expected [{last}] (the last axis of x)",
                    w.shape()
                ),
            ));
        }
    }
    let s = s.into().raw();
    // SAFETY: valid handles or null.
    Array::build(|out| unsafe {
        sys::mlxs_fast_rms_norm(out, x.as_raw(), raw_or_null(weight), eps, s)
    })
}

/// Layer norm over the last axis, with optional weight and bias.
#[track_caller]
pub fn layer_norm(
    x: &Array,
    weight: Option<&Array>,
    bias: Option<&Array>,
    eps: f32,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handles or null.
    Array::build(|out| unsafe {
        sys::mlxs_fast_layer_norm(
            out,
            x.as_raw(),
            raw_or_null(weight),
            raw_or_null(bias),
            eps,
            s,
        )
    })
}

/// Rotary position embedding of the first `dims` features of the last axis, for
/// positions `offset, offset + 1, ...` along the second-to-last axis.
/// `traditional` rotates adjacent pairs; otherwise the two halves (as Qwen3 does).
#[track_caller]
pub fn rope(
    x: &Array,
    dims: i32,
    traditional: bool,
    base: f32,
    scale: f32,
    offset: i32,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    if dims <= 0 || dims % 2 != 0 {
        return Err(Error::invalid(
            "rope",
            format!("dims = {dims} must be positive and even"),
        ));
    }
    let s = s.into().raw();
    // SAFETY: valid handle; no freqs.
    Array::build(|out| unsafe {
        sys::mlxs_fast_rope(
            out,
            x.as_raw(),
            dims,
            traditional,
            true,
            base,
            scale,
            offset,
            std::ptr::null_mut(),
            s,
        )
    })
}

/// The attention mask of [`scaled_dot_product_attention`].
#[derive(Clone, Copy, Debug)]
pub enum AttentionMask<'a> {
    /// No mask.
    None,
    /// Causal: query `i` sees keys up to its own position (aligned to the end of
    /// the keys, as MLX does when keys include a cache).
    Causal,
    /// An explicit additive or boolean mask, broadcastable to the scores.
    Array(&'a Array),
}

/// `softmax(q @ k.T * scale + mask) @ v` over `[batch, heads, seq, head_dim]`;
/// `k` and `v` may have fewer heads than `q` (grouped-query attention).
#[track_caller]
pub fn scaled_dot_product_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: AttentionMask<'_>,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    if q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4 {
        return Err(Error::invalid(
            "scaled_dot_product_attention",
            "q, k and v must be [batch, heads, seq, head_dim]",
        ));
    }
    let (mode, arr) = match mask {
        AttentionMask::None => ("", None),
        AttentionMask::Causal => ("causal", None),
        AttentionMask::Array(a) => ("", Some(a)),
    };
    let mode = CString::new(mode).expect("no NUL");
    let s = s.into().raw();
    // SAFETY: valid handles, NUL-terminated mode.
    Array::build(|out| unsafe {
        sys::mlxs_fast_sdpa(
            out,
            q.as_raw(),
            k.as_raw(),
            v.as_raw(),
            scale,
            mode.as_ptr(),
            raw_or_null(arr),
            s,
        )
    })
}
