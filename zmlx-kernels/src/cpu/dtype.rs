//! Activation dtypes and the dtype-tagged slices the kernels take.
//!
//! The kernels are generic over [`Element`] internally; the public entry points take
//! [`Floats`] / [`FloatsMut`] so that a caller holding an untyped MLX buffer picks the
//! variant once and the dtype travels with the data.

use half::{bf16, f16};

/// A floating-point element type the kernels accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (8 exponent bits, 8 significant bits).
    Bf16,
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        };
        f.write_str(name)
    }
}

/// A scalar type the kernels compute on: converted to `f32` for arithmetic and rounded
/// back (round to nearest even) when a result is stored.
pub trait Element: Copy + Send + Sync + 'static + std::fmt::Debug {
    /// The tag of this type.
    const DTYPE: Dtype;
    /// Widens to `f32` (exact for all three types).
    fn to_f32(self) -> f32;
    /// Rounds an `f32` to this type (round to nearest, ties to even).
    fn from_f32(v: f32) -> Self;
    /// Rounds `v` to this type and widens it back: what storing `v` in this dtype does.
    #[inline(always)]
    fn round(v: f32) -> f32 {
        Self::from_f32(v).to_f32()
    }
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for f16 {
    const DTYPE: Dtype = Dtype::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Element for bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // bf16 is the top half of an f32: widening is a shift (cheaper than half's
        // generic path, and exact).
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// A read-only slice tagged with its dtype.
#[derive(Debug, Clone, Copy)]
pub enum Floats<'a> {
    /// `f32` elements.
    F32(&'a [f32]),
    /// `f16` elements.
    F16(&'a [f16]),
    /// `bf16` elements.
    Bf16(&'a [bf16]),
}

impl Floats<'_> {
    /// The dtype of the elements.
    pub fn dtype(&self) -> Dtype {
        match self {
            Floats::F32(_) => Dtype::F32,
            Floats::F16(_) => Dtype::F16,
            Floats::Bf16(_) => Dtype::Bf16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Floats::F32(s) => s.len(),
            Floats::F16(s) => s.len(),
            Floats::Bf16(s) => s.len(),
        }
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> From<&'a [f32]> for Floats<'a> {
    fn from(s: &'a [f32]) -> Self {
        Floats::F32(s)
    }
}
impl<'a> From<&'a [f16]> for Floats<'a> {
    fn from(s: &'a [f16]) -> Self {
        Floats::F16(s)
    }
}
impl<'a> From<&'a [bf16]> for Floats<'a> {
    fn from(s: &'a [bf16]) -> Self {
        Floats::Bf16(s)
    }
}

/// A mutable slice tagged with its dtype (kernel outputs).
#[derive(Debug)]
pub enum FloatsMut<'a> {
    /// `f32` elements.
    F32(&'a mut [f32]),
    /// `f16` elements.
    F16(&'a mut [f16]),
    /// `bf16` elements.
    Bf16(&'a mut [bf16]),
}

impl FloatsMut<'_> {
    /// The dtype of the elements.
    pub fn dtype(&self) -> Dtype {
        match self {
            FloatsMut::F32(_) => Dtype::F32,
            FloatsMut::F16(_) => Dtype::F16,
            FloatsMut::Bf16(_) => Dtype::Bf16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            FloatsMut::F32(s) => s.len(),
            FloatsMut::F16(s) => s.len(),
            FloatsMut::Bf16(s) => s.len(),
        }
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> From<&'a mut [f32]> for FloatsMut<'a> {
    fn from(s: &'a mut [f32]) -> Self {
        FloatsMut::F32(s)
    }
}
impl<'a> From<&'a mut [f16]> for FloatsMut<'a> {
    fn from(s: &'a mut [f16]) -> Self {
        FloatsMut::F16(s)
    }
}
impl<'a> From<&'a mut [bf16]> for FloatsMut<'a> {
    fn from(s: &'a mut [bf16]) -> Self {
        FloatsMut::Bf16(s)
    }
}
