//! Quantization: quantize, dequantize and the quantized matrix products.
//!
//! Affine mode stores `w = scale * q + bias` per group of `group_size` along the last
//! axis, with `q` packed into uint32 words, low bits first.

use std::ffi::CString;

use mlx_sys as sys;

use crate::array::Array;
use crate::device::StreamOrDevice;
use crate::dtype::Dtype;
use crate::error::{check, Error, Result};
use crate::ops::RawVec;

/// How weights are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantMode {
    /// `scale * q + bias`, any group size and bit width MLX supports.
    Affine,
    /// Microscaling FP4 (group 32, shared exponent scales, no biases).
    Mxfp4,
    /// Microscaling FP8 (group 32, no biases).
    Mxfp8,
    /// NVIDIA FP4 (group 16, no biases).
    Nvfp4,
}

impl QuantMode {
    /// The name MLX uses.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantMode::Affine => "affine",
            QuantMode::Mxfp4 => "mxfp4",
            QuantMode::Mxfp8 => "mxfp8",
            QuantMode::Nvfp4 => "nvfp4",
        }
    }

    /// Parses MLX's name of a mode.
    ///
    /// # Errors
    /// For an unknown name.
    pub fn parse(name: &str) -> Result<QuantMode> {
        match name {
            "affine" => Ok(QuantMode::Affine),
            "mxfp4" => Ok(QuantMode::Mxfp4),
            "mxfp8" => Ok(QuantMode::Mxfp8),
            "nvfp4" => Ok(QuantMode::Nvfp4),
            _ => Err(Error::invalid(
                "quantization",
                format!("unknown mode {name:?}: use affine, mxfp4, mxfp8 or nvfp4"),
            )),
        }
    }

    fn c_name(self) -> CString {
        CString::new(self.as_str()).expect("no NUL")
    }

    /// True when the mode stores biases.
    pub fn has_biases(self) -> bool {
        self == QuantMode::Affine
    }
}

/// The settings of a quantized weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantSpec {
    /// Elements per group sharing one scale (and bias).
    pub group_size: i32,
    /// Bits per element.
    pub bits: i32,
    /// The format.
    pub mode: QuantMode,
}

impl QuantSpec {
    /// Affine quantization with the given group size and bits.
    pub const fn affine(group_size: i32, bits: i32) -> QuantSpec {
        QuantSpec {
            group_size,
            bits,
            mode: QuantMode::Affine,
        }
    }
}

/// A quantized weight: packed values, scales and (affine) biases.
#[derive(Clone, Debug)]
pub struct QuantizedWeight {
    /// Packed values, uint32.
    pub weight: Array,
    /// One scale per group.
    pub scales: Array,
    /// One bias per group (affine mode only).
    pub biases: Option<Array>,
    /// How it was quantized.
    pub spec: QuantSpec,
}

/// Quantizes `w` along its last axis.
///
/// ```
/// use mlx::{ops, quantization::{quantize, dequantize, QuantSpec}, Dtype};
/// let w = ops::ones(&[4, 64], Dtype::Float32, ())?;
/// let q = quantize(&w, QuantSpec::affine(64, 4), ())?;
/// let back = dequantize(&q, None, ())?;
/// assert_eq!(back.to_vec::<f32>()?, vec![1.0; 256]);
/// # Ok::<(), mlx::Error>(())
/// ```
#[track_caller]
pub fn quantize(
    w: &Array,
    spec: QuantSpec,
    s: impl Into<StreamOrDevice>,
) -> Result<QuantizedWeight> {
    let v = RawVec::new()?;
    let mode = spec.mode.c_name();
    // SAFETY: valid handles, NUL-terminated mode.
    check(unsafe {
        sys::mlxs_quantize(
            v.0,
            w.as_raw(),
            spec.group_size,
            spec.bits,
            mode.as_ptr(),
            s.into().raw(),
        )
    })?;
    let mut parts = v.into_arrays()?.into_iter();
    let weight = parts
        .next()
        .ok_or_else(|| Error::invalid("quantize", "MLX returned no weight"))?;
    let scales = parts
        .next()
        .ok_or_else(|| Error::invalid("quantize", "MLX returned no scales"))?;
    Ok(QuantizedWeight {
        weight,
        scales,
        biases: parts.next(),
        spec,
    })
}

fn biases_raw(q: &QuantizedWeight) -> Result<sys::mlxs_array> {
    match (&q.biases, q.spec.mode.has_biases()) {
        (Some(b), true) => Ok(b.as_raw()),
        (None, false) => Ok(std::ptr::null_mut()),
        (None, true) => Err(Error::invalid("quantization", "affine mode needs biases")),
        (Some(_), false) => Err(Error::invalid(
            "quantization",
            format!("mode {} takes no biases", q.spec.mode.as_str()),
        )),
    }
}

/// The float weight of `q` (in `dtype`, or the scales' dtype when `None`).
#[track_caller]
pub fn dequantize(
    q: &QuantizedWeight,
    dtype: Option<Dtype>,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    let b = biases_raw(q)?;
    let mode = q.spec.mode.c_name();
    let s = s.into().raw();
    // SAFETY: valid handles.
    Array::build(|out| unsafe {
        sys::mlxs_dequantize(
            out,
            q.weight.as_raw(),
            q.scales.as_raw(),
            b,
            q.spec.group_size,
            q.spec.bits,
            mode.as_ptr(),
            dtype.map_or(-1, Dtype::code),
            s,
        )
    })
}

/// `x @ w.T` (`transpose = true`) or `x @ w` for a quantized `w`.
#[track_caller]
pub fn quantized_matmul(
    x: &Array,
    q: &QuantizedWeight,
    transpose: bool,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    let b = biases_raw(q)?;
    let mode = q.spec.mode.c_name();
    let s = s.into().raw();
    // SAFETY: valid handles.
    Array::build(|out| unsafe {
        sys::mlxs_quantized_matmul(
            out,
            x.as_raw(),
            q.weight.as_raw(),
            q.scales.as_raw(),
            b,
            transpose,
            q.spec.group_size,
            q.spec.bits,
            mode.as_ptr(),
            s,
        )
    })
}

/// Batched `x[lhs] @ w[rhs].T` for a stack of quantized matrices `w`
/// (`[experts, out, in]`): the expert matmul of MoE layers.
#[track_caller]
pub fn gather_qmm(
    x: &Array,
    q: &QuantizedWeight,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    transpose: bool,
    sorted_indices: bool,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    let b = biases_raw(q)?;
    let mode = q.spec.mode.c_name();
    let s = s.into().raw();
    let l = lhs_indices.map_or(std::ptr::null_mut(), |a| a.as_raw());
    let r = rhs_indices.map_or(std::ptr::null_mut(), |a| a.as_raw());
    // SAFETY: valid handles or null.
    Array::build(|out| unsafe {
        sys::mlxs_gather_qmm(
            out,
            x.as_raw(),
            q.weight.as_raw(),
            q.scales.as_raw(),
            b,
            l,
            r,
            transpose,
            q.spec.group_size,
            q.spec.bits,
            mode.as_ptr(),
            sorted_indices,
            s,
        )
    })
}

/// Batched `a[lhs] @ b[rhs]` for float matrices.
#[track_caller]
pub fn gather_mm(
    a: &Array,
    b: &Array,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    sorted_indices: bool,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    let s = s.into().raw();
    let l = lhs_indices.map_or(std::ptr::null_mut(), |a| a.as_raw());
    let r = rhs_indices.map_or(std::ptr::null_mut(), |a| a.as_raw());
    // SAFETY: valid handles or null.
    Array::build(|out| unsafe {
        sys::mlxs_gather_mm(out, a.as_raw(), b.as_raw(), l, r, sorted_indices, s)
    })
}
