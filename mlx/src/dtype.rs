//! Element types of arrays and their Rust counterparts.

use half::{bf16, f16};

/// The element type of an [`Array`](crate::Array); the same set and order as MLX's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Dtype {
    /// `bool`, one byte.
    Bool = 0,
    /// `u8`.
    Uint8,
    /// `u16`.
    Uint16,
    /// `u32`.
    Uint32,
    /// `u64`.
    Uint64,
    /// `i8`.
    Int8,
    /// `i16`.
    Int16,
    /// `i32`.
    Int32,
    /// `i64`.
    Int64,
    /// IEEE half precision ([`half::f16`]).
    Float16,
    /// `f32`.
    Float32,
    /// `f64` (CPU only in MLX).
    Float64,
    /// bfloat16 ([`half::bf16`]).
    Bfloat16,
    /// Two `f32`s.
    Complex64,
}

impl Dtype {
    /// Every dtype, in MLX's order.
    pub const ALL: [Dtype; 14] = [
        Dtype::Bool,
        Dtype::Uint8,
        Dtype::Uint16,
        Dtype::Uint32,
        Dtype::Uint64,
        Dtype::Int8,
        Dtype::Int16,
        Dtype::Int32,
        Dtype::Int64,
        Dtype::Float16,
        Dtype::Float32,
        Dtype::Float64,
        Dtype::Bfloat16,
        Dtype::Complex64,
    ];

    /// Bytes per element.
    ///
    /// ```
    /// assert_eq!(mlx::Dtype::Bfloat16.size(), 2);
    /// ```
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::Uint8 | Dtype::Int8 => 1,
            Dtype::Uint16 | Dtype::Int16 | Dtype::Float16 | Dtype::Bfloat16 => 2,
            Dtype::Uint32 | Dtype::Int32 | Dtype::Float32 => 4,
            Dtype::Uint64 | Dtype::Int64 | Dtype::Float64 | Dtype::Complex64 => 8,
        }
    }

    /// True for the floating-point dtypes (f16, bf16, f32, f64).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 | Dtype::Float64
        )
    }

    /// The dtype with MLX code `code`, if any.
    pub fn from_code(code: i32) -> Option<Dtype> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Dtype::ALL.get(i).copied())
    }

    /// MLX's code of this dtype.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// A Rust type that is the element type of some [`Dtype`].
///
/// # Safety
/// `DTYPE.size()` must equal `size_of::<Self>()` and every bit pattern MLX writes
/// for that dtype must be a valid `Self`.
pub unsafe trait Element: Copy + Send + Sync + 'static {
    /// The matching dtype.
    const DTYPE: Dtype;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        // SAFETY: sizes match MLX's and every bit pattern is a valid value.
        unsafe impl Element for $t {
            const DTYPE: Dtype = Dtype::$d;
        }
    )*};
}

element!(
    u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64,
    f16 => Float16, f32 => Float32, f64 => Float64, bf16 => Bfloat16,
);

// SAFETY: MLX stores bool as one byte holding 0 or 1, the only values it writes.
unsafe impl Element for bool {
    const DTYPE: Dtype = Dtype::Bool;
}
