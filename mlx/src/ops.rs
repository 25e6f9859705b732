//! Array operations. Each free function takes a final `s: impl Into<StreamOrDevice>`
//! (`()` for the default stream); [`Array`] has the same ops as methods on the
//! default stream.
//!
//! ```
//! use mlx::{ops, Array, Device};
//! let x = Array::from_slice(&[1.0f32, -2.0, 3.0], &[3])?;
//! let y = ops::abs(&x, Device::cpu())?;
//! assert_eq!(y.to_vec::<f32>()?, vec![1.0, 2.0, 3.0]);
//! # Ok::<(), mlx::Error>(())
//! ```

use mlx_sys as sys;

use crate::array::{normalize_axis, Array};
use crate::device::StreamOrDevice;
use crate::dtype::Dtype;
use crate::error::{check, Error, Result};

fn raws(arrays: &[&Array]) -> Vec<sys::mlxs_array> {
    arrays.iter().map(|a| a.as_raw()).collect()
}

/// Collects the arrays of a shim vector into `Vec<Array>`.
pub(crate) struct RawVec(pub(crate) sys::mlxs_vec);

impl RawVec {
    #[track_caller]
    pub(crate) fn new() -> Result<RawVec> {
        let mut v: sys::mlxs_vec = std::ptr::null_mut();
        // SAFETY: out-pointer.
        check(unsafe { sys::mlxs_vec_new(&mut v) })?;
        Ok(RawVec(v))
    }

    #[track_caller]
    pub(crate) fn into_arrays(self) -> Result<Vec<Array>> {
        // SAFETY: valid vector handle owned by self.
        let n = unsafe { sys::mlxs_vec_size(self.0) };
        (0..n)
            .map(|i| Array::build(|out| unsafe { sys::mlxs_vec_get(out, self.0, i) }))
            .collect()
    }
}

impl Drop for RawVec {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::mlxs_vec_free(self.0) }
    }
}

macro_rules! unary_ops {
    ($($name:ident => $code:ident, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            #[track_caller]
            pub fn $name(a: &Array, s: impl Into<StreamOrDevice>) -> Result<Array> {
                let s = s.into().raw();
                // SAFETY: valid handle, out-pointer.
                Array::build(|out| unsafe { sys::mlxs_unary(out, sys::$code as i32, a.as_raw(), s) })
            }
        )*
        impl Array {
            $(
                #[doc = $doc]
                #[track_caller]
                pub fn $name(&self) -> Result<Array> {
                    $name(self, ())
                }
            )*
        }
    };
}

unary_ops! {
    abs => MLXS_ABS, "Element-wise absolute value.";
    negative => MLXS_NEGATIVE, "Element-wise negation.";
    exp => MLXS_EXP, "Element-wise `e^x`.";
    log => MLXS_LOG, "Element-wise natural logarithm.";
    log1p => MLXS_LOG1P, "Element-wise `ln(1 + x)`.";
    sqrt => MLXS_SQRT, "Element-wise square root.";
    rsqrt => MLXS_RSQRT, "Element-wise `1 / sqrt(x)`.";
    square => MLXS_SQUARE, "Element-wise `x * x`.";
    sigmoid => MLXS_SIGMOID, "Element-wise logistic sigmoid.";
    tanh => MLXS_TANH, "Element-wise hyperbolic tangent.";
    sin => MLXS_SIN, "Element-wise sine.";
    cos => MLXS_COS, "Element-wise cosine.";
    floor => MLXS_FLOOR, "Element-wise floor.";
    ceil => MLXS_CEIL, "Element-wise ceiling.";
    erf => MLXS_ERF, "Element-wise error function.";
    reciprocal => MLXS_RECIPROCAL, "Element-wise `1 / x`.";
    logical_not => MLXS_LOGICAL_NOT, "Element-wise logical not.";
    stop_gradient => MLXS_STOP_GRADIENT, "The same values, with no gradient through them.";
    contiguous => MLXS_CONTIGUOUS, "A row-contiguous array with the same values (free when already so).";
    copy => MLXS_COPY, "A copy of the array.";
    sign => MLXS_SIGN, "Element-wise sign (-1, 0, 1).";
    isnan => MLXS_ISNAN, "Element-wise test for NaN.";
}

macro_rules! binary_ops {
    ($($name:ident => $code:ident, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            #[doc = ""]
            #[doc = "The inputs broadcast against each other and promote to a common dtype."]
            #[track_caller]
            pub fn $name(a: &Array, b: &Array, s: impl Into<StreamOrDevice>) -> Result<Array> {
                let s = s.into().raw();
                // SAFETY: valid handles, out-pointer.
                Array::build(|out| unsafe {
                    sys::mlxs_binary(out, sys::$code as i32, a.as_raw(), b.as_raw(), s)
                })
            }
        )*
        impl Array {
            $(
                #[doc = $doc]
                #[track_caller]
                pub fn $name(&self, other: &Array) -> Result<Array> {
                    $name(self, other, ())
                }
            )*
        }
    };
}

binary_ops! {
    add => MLXS_ADD, "Element-wise `a + b`.";
    subtract => MLXS_SUBTRACT, "Element-wise `a - b`.";
    multiply => MLXS_MULTIPLY, "Element-wise `a * b`.";
    divide => MLXS_DIVIDE, "Element-wise `a / b`.";
    maximum => MLXS_MAXIMUM, "Element-wise maximum.";
    minimum => MLXS_MINIMUM, "Element-wise minimum.";
    power => MLXS_POWER, "Element-wise `a ^ b`.";
    remainder => MLXS_REMAINDER, "Element-wise remainder of `a / b` (sign of `b`).";
    floor_divide => MLXS_FLOOR_DIVIDE, "Element-wise `floor(a / b)`.";
    equal => MLXS_EQUAL, "Element-wise `a == b` (bool).";
    not_equal => MLXS_NOT_EQUAL, "Element-wise `a != b` (bool).";
    less => MLXS_LESS, "Element-wise `a < b` (bool).";
    less_equal => MLXS_LESS_EQUAL, "Element-wise `a <= b` (bool).";
    greater => MLXS_GREATER, "Element-wise `a > b` (bool).";
    greater_equal => MLXS_GREATER_EQUAL, "Element-wise `a >= b` (bool).";
    logical_and => MLXS_LOGICAL_AND, "Element-wise logical and.";
    logical_or => MLXS_LOGICAL_OR, "Element-wise logical or.";
    matmul => MLXS_MATMUL, "Matrix product over the last two axes, batched over the others.";
}

macro_rules! reduce_ops {
    ($($name:ident, $all:ident => $code:ident, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            #[doc = ""]
            #[doc = "Reduces over `axes` (negative counts from the end)."]
            #[track_caller]
            pub fn $name(a: &Array, axes: &[i32], keepdims: bool, s: impl Into<StreamOrDevice>) -> Result<Array> {
                for &ax in axes {
                    normalize_axis(stringify!($name), ax, a.ndim())?;
                }
                let s = s.into().raw();
                // SAFETY: valid handle, axes pointer with its length.
                Array::build(|out| unsafe {
                    sys::mlxs_reduce(out, sys::$code as i32, a.as_raw(), axes.as_ptr(), axes.len() as i64, keepdims, s)
                })
            }

            #[doc = $doc]
            #[doc = ""]
            #[doc = "Reduces over every axis."]
            #[track_caller]
            pub fn $all(a: &Array, keepdims: bool, s: impl Into<StreamOrDevice>) -> Result<Array> {
                let s = s.into().raw();
                // SAFETY: valid handle; naxes < 0 means all axes.
                Array::build(|out| unsafe {
                    sys::mlxs_reduce(out, sys::$code as i32, a.as_raw(), std::ptr::null(), -1, keepdims, s)
                })
            }
        )*
    };
}

reduce_ops! {
    sum, sum_all => MLXS_SUM, "Sum.";
    mean, mean_all => MLXS_MEAN, "Arithmetic mean.";
    max, max_all => MLXS_MAX, "Maximum.";
    min, min_all => MLXS_MIN, "Minimum.";
    prod, prod_all => MLXS_PROD, "Product.";
    logsumexp, logsumexp_all => MLXS_LOGSUMEXP, "`log(sum(exp(a)))`, computed stably.";
    all, all_all => MLXS_ALL, "True where every element is true (non-zero).";
    any, any_all => MLXS_ANY, "True where some element is true (non-zero).";
}

/// Index of the maximum along `axis` (the first one on ties), as uint32.
#[track_caller]
pub fn argmax(a: &Array, axis: i32, keepdims: bool, s: impl Into<StreamOrDevice>) -> Result<Array> {
    normalize_axis("argmax", axis, a.ndim())?;
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_argmax(out, a.as_raw(), axis, keepdims, s) })
}

/// Index of the minimum along `axis` (the first one on ties), as uint32.
#[track_caller]
pub fn argmin(a: &Array, axis: i32, keepdims: bool, s: impl Into<StreamOrDevice>) -> Result<Array> {
    normalize_axis("argmin", axis, a.ndim())?;
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_argmin(out, a.as_raw(), axis, keepdims, s) })
}

/// Softmax over `axes`; `precise` computes in f32 for half-precision inputs (as
/// mlx-lm's MoE router does) and returns the input dtype.
#[track_caller]
pub fn softmax(
    a: &Array,
    axes: &[i32],
    precise: bool,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    for &ax in axes {
        normalize_axis("softmax", ax, a.ndim())?;
    }
    let s = s.into().raw();
    // SAFETY: valid handle, axes with length.
    Array::build(|out| unsafe {
        sys::mlxs_softmax(out, a.as_raw(), axes.as_ptr(), axes.len(), precise, s)
    })
}

/// Cumulative sum along `axis`.
#[track_caller]
pub fn cumsum(
    a: &Array,
    axis: i32,
    reverse: bool,
    inclusive: bool,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    normalize_axis("cumsum", axis, a.ndim())?;
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_cumsum(out, a.as_raw(), axis, reverse, inclusive, s) })
}

/// Indices that partition `a` along `axis` around its `kth` element: the `kth`
/// index holds the element a full sort would put there, smaller ones come before
/// (in no particular order) and larger ones after.
#[track_caller]
pub fn argpartition(a: &Array, kth: i32, axis: i32, s: impl Into<StreamOrDevice>) -> Result<Array> {
    let ax = normalize_axis("argpartition", axis, a.ndim())?;
    let n = a.shape()[ax];
    if kth < -n || kth >= n {
        return Err(Error::invalid(
            "argpartition",
            format!("kth {kth} is out of range for an axis of size {n}"),
        ));
    }
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_argpartition(out, a.as_raw(), kth, axis, s) })
}

/// Indices that sort `a` along `axis` (stable), as uint32.
#[track_caller]
pub fn argsort(a: &Array, axis: i32, s: impl Into<StreamOrDevice>) -> Result<Array> {
    normalize_axis("argsort", axis, a.ndim())?;
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_argsort(out, a.as_raw(), axis, s) })
}

/// `a` sorted along `axis`.
#[track_caller]
pub fn sort(a: &Array, axis: i32, s: impl Into<StreamOrDevice>) -> Result<Array> {
    normalize_axis("sort", axis, a.ndim())?;
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_sort(out, a.as_raw(), axis, s) })
}

/// The `k` largest values along `axis` (in no particular order).
#[track_caller]
pub fn topk(a: &Array, k: i32, axis: i32, s: impl Into<StreamOrDevice>) -> Result<Array> {
    let ax = normalize_axis("topk", axis, a.ndim())?;
    if k < 1 || k > a.shape()[ax] {
        return Err(Error::invalid(
            "topk",
            format!("k = {k} must be in 1..={}", a.shape()[ax]),
        ));
    }
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_topk(out, a.as_raw(), k, axis, s) })
}

/// Elements of `a` at `indices` along `axis`, or of the flattened `a` when `axis`
/// is `None`.
#[track_caller]
pub fn take(
    a: &Array,
    indices: &Array,
    axis: Option<i32>,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    if let Some(ax) = axis {
        normalize_axis("take", ax, a.ndim())?;
    }
    let s = s.into().raw();
    // SAFETY: valid handles, out-pointer.
    Array::build(|out| unsafe {
        sys::mlxs_take(
            out,
            a.as_raw(),
            indices.as_raw(),
            axis.is_some(),
            axis.unwrap_or(0),
            s,
        )
    })
}

/// Elements of `a` at `indices` along `axis`, where `indices` has `a`'s rank.
#[track_caller]
pub fn take_along_axis(
    a: &Array,
    indices: &Array,
    axis: i32,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    normalize_axis("take_along_axis", axis, a.ndim())?;
    if indices.ndim() != a.ndim() {
        return Err(Error::invalid(
            "take_along_axis",
            format!(
                "indices have {} dimensions, the array {}",
                indices.ndim(),
                a.ndim()
            ),
        ));
    }
    let s = s.into().raw();
    // SAFETY: valid handles, out-pointer.
    Array::build(|out| unsafe {
        sys::mlxs_take_along_axis(out, a.as_raw(), indices.as_raw(), axis, s)
    })
}

/// A copy of `a` with `values` written at `indices` along `axis`.
#[track_caller]
pub fn put_along_axis(
    a: &Array,
    indices: &Array,
    values: &Array,
    axis: i32,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    normalize_axis("put_along_axis", axis, a.ndim())?;
    let s = s.into().raw();
    // SAFETY: valid handles, out-pointer.
    Array::build(|out| unsafe {
        sys::mlxs_put_along_axis(out, a.as_raw(), indices.as_raw(), values.as_raw(), axis, s)
    })
}

/// `x` where `cond` is true, else `y` (broadcasting).
#[track_caller]
pub fn r#where(cond: &Array, x: &Array, y: &Array, s: impl Into<StreamOrDevice>) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handles, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_where(out, cond.as_raw(), x.as_raw(), y.as_raw(), s) })
}

/// The same elements with a new shape (one dimension may be -1).
#[track_caller]
pub fn reshape(a: &Array, shape: &[i32], s: impl Into<StreamOrDevice>) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handle, shape with length.
    Array::build(|out| unsafe {
        sys::mlxs_reshape(out, a.as_raw(), shape.as_ptr(), shape.len(), s)
    })
}

/// Permutes the axes (`&[]` reverses them).
#[track_caller]
pub fn transpose(a: &Array, axes: &[i32], s: impl Into<StreamOrDevice>) -> Result<Array> {
    if !axes.is_empty() && axes.len() != a.ndim() {
        return Err(Error::invalid(
            "transpose",
            format!(
                "{} axes given for an array with {} dimensions",
                axes.len(),
                a.ndim()
            ),
        ));
    }
    let s = s.into().raw();
    // SAFETY: valid handle, axes with length.
    Array::build(|out| unsafe {
        sys::mlxs_transpose(out, a.as_raw(), axes.as_ptr(), axes.len(), s)
    })
}

/// Swaps two axes.
#[track_caller]
pub fn swapaxes(a: &Array, axis1: i32, axis2: i32, s: impl Into<StreamOrDevice>) -> Result<Array> {
    normalize_axis("swapaxes", axis1, a.ndim())?;
    normalize_axis("swapaxes", axis2, a.ndim())?;
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_swapaxes(out, a.as_raw(), axis1, axis2, s) })
}

/// Inserts axes of size one at `axes` (positions in the result).
#[track_caller]
pub fn expand_dims(a: &Array, axes: &[i32], s: impl Into<StreamOrDevice>) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handle, axes with length.
    Array::build(|out| unsafe {
        sys::mlxs_expand_dims(out, a.as_raw(), axes.as_ptr(), axes.len(), s)
    })
}

/// Removes axes of size one (`&[]`: all of them).
#[track_caller]
pub fn squeeze(a: &Array, axes: &[i32], s: impl Into<StreamOrDevice>) -> Result<Array> {
    for &ax in axes {
        let i = normalize_axis("squeeze", ax, a.ndim())?;
        if a.shape()[i] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!("axis {ax} has size {}, not 1", a.shape()[i]),
            ));
        }
    }
    let s = s.into().raw();
    // SAFETY: valid handle, axes with length.
    Array::build(|out| unsafe { sys::mlxs_squeeze(out, a.as_raw(), axes.as_ptr(), axes.len(), s) })
}

/// Merges axes `start..=end` into one.
#[track_caller]
pub fn flatten(a: &Array, start: i32, end: i32, s: impl Into<StreamOrDevice>) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_flatten(out, a.as_raw(), start, end, s) })
}

/// `a` broadcast to `shape` (a view; no copy).
#[track_caller]
pub fn broadcast_to(a: &Array, shape: &[i32], s: impl Into<StreamOrDevice>) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handle, shape with length.
    Array::build(|out| unsafe {
        sys::mlxs_broadcast_to(out, a.as_raw(), shape.as_ptr(), shape.len(), s)
    })
}

fn check_slice_args(
    op: &'static str,
    a: &Array,
    start: &[i32],
    stop: &[i32],
    strides: &[i32],
) -> Result<()> {
    let n = a.ndim();
    if start.len() != n || stop.len() != n || strides.len() != n {
        return Err(Error::invalid(
            op,
            format!(
                "start, stop and strides need {n} entries each (one per dimension), got {}, {}, {}",
                start.len(),
                stop.len(),
                strides.len()
            ),
        ));
    }
    if strides.contains(&0) {
        return Err(Error::invalid(op, "a stride of 0 is not allowed"));
    }
    Ok(())
}

/// The sub-array `a[start..stop; strides]`, one entry per dimension.
#[track_caller]
pub fn slice(
    a: &Array,
    start: &[i32],
    stop: &[i32],
    strides: &[i32],
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    check_slice_args("slice", a, start, stop, strides)?;
    let s = s.into().raw();
    // SAFETY: valid handle; three arrays of ndim entries.
    Array::build(|out| unsafe {
        sys::mlxs_slice(
            out,
            a.as_raw(),
            start.as_ptr(),
            stop.as_ptr(),
            strides.as_ptr(),
            start.len(),
            s,
        )
    })
}

/// A copy of `src` with `src[start..stop; strides] = update`.
#[track_caller]
pub fn slice_update(
    src: &Array,
    update: &Array,
    start: &[i32],
    stop: &[i32],
    strides: &[i32],
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    check_slice_args("slice_update", src, start, stop, strides)?;
    let s = s.into().raw();
    // SAFETY: valid handles; three arrays of ndim entries.
    Array::build(|out| unsafe {
        sys::mlxs_slice_update(
            out,
            src.as_raw(),
            update.as_raw(),
            start.as_ptr(),
            stop.as_ptr(),
            strides.as_ptr(),
            start.len(),
            s,
        )
    })
}

/// Joins arrays along an existing `axis`.
#[track_caller]
pub fn concatenate(arrays: &[&Array], axis: i32, s: impl Into<StreamOrDevice>) -> Result<Array> {
    if arrays.is_empty() {
        return Err(Error::invalid("concatenate", "needs at least one array"));
    }
    let r = raws(arrays);
    let s = s.into().raw();
    // SAFETY: r holds valid handles.
    Array::build(|out| unsafe { sys::mlxs_concatenate(out, r.as_ptr(), r.len(), axis, s) })
}

/// Joins arrays of one shape along a new `axis`.
#[track_caller]
pub fn stack(arrays: &[&Array], axis: i32, s: impl Into<StreamOrDevice>) -> Result<Array> {
    if arrays.is_empty() {
        return Err(Error::invalid("stack", "needs at least one array"));
    }
    let r = raws(arrays);
    let s = s.into().raw();
    // SAFETY: r holds valid handles.
    Array::build(|out| unsafe { sys::mlxs_stack(out, r.as_ptr(), r.len(), axis, s) })
}

/// Splits `a` into `parts` equal pieces along `axis`.
#[track_caller]
pub fn split(a: &Array, parts: i32, axis: i32, s: impl Into<StreamOrDevice>) -> Result<Vec<Array>> {
    let ax = normalize_axis("split", axis, a.ndim())?;
    if parts < 1 || a.shape()[ax] % parts != 0 {
        return Err(Error::invalid(
            "split",
            format!(
                "cannot split an axis of size {} into {parts} equal parts",
                a.shape()[ax]
            ),
        ));
    }
    let v = RawVec::new()?;
    // SAFETY: valid handles.
    check(unsafe {
        sys::mlxs_split(
            v.0,
            a.as_raw(),
            parts,
            std::ptr::null(),
            0,
            axis,
            s.into().raw(),
        )
    })?;
    v.into_arrays()
}

/// Splits `a` along `axis` before each of `indices`.
#[track_caller]
pub fn split_at(
    a: &Array,
    indices: &[i32],
    axis: i32,
    s: impl Into<StreamOrDevice>,
) -> Result<Vec<Array>> {
    normalize_axis("split_at", axis, a.ndim())?;
    if indices.is_empty() {
        return Ok(vec![a.clone()]);
    }
    let v = RawVec::new()?;
    // SAFETY: valid handles, indices with length.
    check(unsafe {
        sys::mlxs_split(
            v.0,
            a.as_raw(),
            0,
            indices.as_ptr(),
            indices.len(),
            axis,
            s.into().raw(),
        )
    })?;
    v.into_arrays()
}

/// `a` converted to `dtype`.
#[track_caller]
pub fn astype(a: &Array, dtype: Dtype, s: impl Into<StreamOrDevice>) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_astype(out, a.as_raw(), dtype.code(), s) })
}

/// `a`'s bytes reinterpreted as `dtype`.
#[track_caller]
pub fn view(a: &Array, dtype: Dtype, s: impl Into<StreamOrDevice>) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handle, out-pointer.
    Array::build(|out| unsafe { sys::mlxs_view(out, a.as_raw(), dtype.code(), s) })
}

/// `start, start + step, ...` below `stop`, of `dtype`.
#[track_caller]
pub fn arange(
    start: f64,
    stop: f64,
    step: f64,
    dtype: Dtype,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    if step == 0.0 || !step.is_finite() {
        return Err(Error::invalid("arange", "step must be finite and non-zero"));
    }
    let s = s.into().raw();
    // SAFETY: out-pointer.
    Array::build(|out| unsafe { sys::mlxs_arange(out, start, stop, step, dtype.code(), s) })
}

/// An array of zeros.
#[track_caller]
pub fn zeros(shape: &[i32], dtype: Dtype, s: impl Into<StreamOrDevice>) -> Result<Array> {
    crate::array::shape_size("zeros", shape)?;
    let s = s.into().raw();
    // SAFETY: shape with length.
    Array::build(|out| unsafe {
        sys::mlxs_zeros(out, shape.as_ptr(), shape.len(), dtype.code(), s)
    })
}

/// An array of ones.
#[track_caller]
pub fn ones(shape: &[i32], dtype: Dtype, s: impl Into<StreamOrDevice>) -> Result<Array> {
    crate::array::shape_size("ones", shape)?;
    let s = s.into().raw();
    // SAFETY: shape with length.
    Array::build(|out| unsafe { sys::mlxs_ones(out, shape.as_ptr(), shape.len(), dtype.code(), s) })
}

/// An array of `shape` filled with `value` (broadcast), converted to `dtype`.
#[track_caller]
pub fn full(
    shape: &[i32],
    value: &Array,
    dtype: Dtype,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    crate::array::shape_size("full", shape)?;
    let s = s.into().raw();
    // SAFETY: valid handle, shape with length.
    Array::build(|out| unsafe {
        sys::mlxs_full(
            out,
            shape.as_ptr(),
            shape.len(),
            value.as_raw(),
            dtype.code(),
            s,
        )
    })
}

/// `x * sigmoid(x)`, the op sequence of mlx's `nn.silu`.
#[track_caller]
pub fn silu(x: &Array, s: impl Into<StreamOrDevice>) -> Result<Array> {
    let s = s.into();
    multiply(x, &sigmoid(x, s)?, s)
}

impl Array {
    /// `self + value`, with `value` taking this array's dtype (like a Python scalar).
    #[track_caller]
    pub fn add_scalar(&self, value: f64) -> Result<Array> {
        self.add(&Array::scalar_as(value, self.dtype())?)
    }

    /// `self * value`, with `value` taking this array's dtype (like a Python scalar).
    #[track_caller]
    pub fn mul_scalar(&self, value: f64) -> Result<Array> {
        self.multiply(&Array::scalar_as(value, self.dtype())?)
    }

    /// See [`reshape`].
    #[track_caller]
    pub fn reshape(&self, shape: &[i32]) -> Result<Array> {
        reshape(self, shape, ())
    }

    /// See [`transpose`].
    #[track_caller]
    pub fn transpose(&self, axes: &[i32]) -> Result<Array> {
        transpose(self, axes, ())
    }

    /// See [`swapaxes`].
    #[track_caller]
    pub fn swapaxes(&self, axis1: i32, axis2: i32) -> Result<Array> {
        swapaxes(self, axis1, axis2, ())
    }

    /// See [`expand_dims`].
    #[track_caller]
    pub fn expand_dims(&self, axes: &[i32]) -> Result<Array> {
        expand_dims(self, axes, ())
    }

    /// See [`squeeze`].
    #[track_caller]
    pub fn squeeze(&self, axes: &[i32]) -> Result<Array> {
        squeeze(self, axes, ())
    }

    /// See [`astype`].
    #[track_caller]
    pub fn astype(&self, dtype: Dtype) -> Result<Array> {
        astype(self, dtype, ())
    }

    /// See [`sum`].
    #[track_caller]
    pub fn sum(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        sum(self, axes, keepdims, ())
    }

    /// See [`mean`].
    #[track_caller]
    pub fn mean(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        mean(self, axes, keepdims, ())
    }

    /// See [`max`].
    #[track_caller]
    pub fn max(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        max(self, axes, keepdims, ())
    }

    /// See [`min`].
    #[track_caller]
    pub fn min(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        min(self, axes, keepdims, ())
    }

    /// See [`argmax`].
    #[track_caller]
    pub fn argmax(&self, axis: i32, keepdims: bool) -> Result<Array> {
        argmax(self, axis, keepdims, ())
    }

    /// See [`softmax`].
    #[track_caller]
    pub fn softmax(&self, axes: &[i32], precise: bool) -> Result<Array> {
        softmax(self, axes, precise, ())
    }

    /// See [`slice()`].
    #[track_caller]
    pub fn slice(&self, start: &[i32], stop: &[i32], strides: &[i32]) -> Result<Array> {
        slice(self, start, stop, strides, ())
    }

    /// See [`take`].
    #[track_caller]
    pub fn take(&self, indices: &Array, axis: Option<i32>) -> Result<Array> {
        take(self, indices, axis, ())
    }

    /// See [`take_along_axis`].
    #[track_caller]
    pub fn take_along_axis(&self, indices: &Array, axis: i32) -> Result<Array> {
        take_along_axis(self, indices, axis, ())
    }

    /// See [`broadcast_to`].
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[i32]) -> Result<Array> {
        broadcast_to(self, shape, ())
    }

    /// See [`silu`].
    #[track_caller]
    pub fn silu(&self) -> Result<Array> {
        silu(self, ())
    }
}
