//! Random numbers: keys, seeding and samplers.

use mlx_sys as sys;

use crate::array::{shape_size, Array};
use crate::device::StreamOrDevice;
use crate::dtype::Dtype;
use crate::error::{check, Result};

fn key_raw(key: Option<&Array>) -> sys::mlxs_array {
    key.map_or(std::ptr::null_mut(), |k| k.as_raw())
}

/// Seeds the global generator (used when no key is given).
pub fn seed(seed: u64) -> Result<()> {
    // SAFETY: plain value.
    check(unsafe { sys::mlxs_random_seed(seed) })
}

/// A PRNG key from `seed`.
///
/// ```
/// let k = mlx::random::key(0)?;
/// let a = mlx::random::normal(&[3], mlx::Dtype::Float32, 0.0, 1.0, Some(&k), ())?;
/// let b = mlx::random::normal(&[3], mlx::Dtype::Float32, 0.0, 1.0, Some(&k), ())?;
/// assert_eq!(a.to_vec::<f32>()?, b.to_vec::<f32>()?);
/// # Ok::<(), mlx::Error>(())
/// ```
#[track_caller]
pub fn key(seed: u64) -> Result<Array> {
    // SAFETY: out-pointer.
    Array::build(|out| unsafe { sys::mlxs_random_key(out, seed) })
}

/// `num` new keys split from `key`, stacked on axis 0.
#[track_caller]
pub fn split(key: &Array, num: i32, s: impl Into<StreamOrDevice>) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handle.
    Array::build(|out| unsafe { sys::mlxs_random_split(out, key.as_raw(), num, s) })
}

/// Normal samples with mean `loc` and standard deviation `scale`.
#[track_caller]
pub fn normal(
    shape: &[i32],
    dtype: Dtype,
    loc: f32,
    scale: f32,
    key: Option<&Array>,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    shape_size("normal", shape)?;
    let s = s.into().raw();
    // SAFETY: shape with length, valid key or null.
    Array::build(|out| unsafe {
        sys::mlxs_random_normal(
            out,
            shape.as_ptr(),
            shape.len(),
            dtype.code(),
            loc,
            scale,
            key_raw(key),
            s,
        )
    })
}

/// Uniform samples in `[low, high)`.
#[track_caller]
pub fn uniform(
    low: f32,
    high: f32,
    shape: &[i32],
    dtype: Dtype,
    key: Option<&Array>,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    shape_size("uniform", shape)?;
    let lo = Array::scalar(low)?;
    let hi = Array::scalar(high)?;
    let s = s.into().raw();
    // SAFETY: valid handles, shape with length.
    Array::build(|out| unsafe {
        sys::mlxs_random_uniform(
            out,
            lo.as_raw(),
            hi.as_raw(),
            shape.as_ptr(),
            shape.len(),
            dtype.code(),
            key_raw(key),
            s,
        )
    })
}

/// Integer samples in `[low, high)`.
#[track_caller]
pub fn randint(
    low: i32,
    high: i32,
    shape: &[i32],
    dtype: Dtype,
    key: Option<&Array>,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    shape_size("randint", shape)?;
    let lo = Array::scalar(low)?;
    let hi = Array::scalar(high)?;
    let s = s.into().raw();
    // SAFETY: valid handles, shape with length.
    Array::build(|out| unsafe {
        sys::mlxs_random_randint(
            out,
            lo.as_raw(),
            hi.as_raw(),
            shape.as_ptr(),
            shape.len(),
            dtype.code(),
            key_raw(key),
            s,
        )
    })
}

/// Samples an index along `axis` with probabilities `softmax(logits)`.
#[track_caller]
pub fn categorical(
    logits: &Array,
    axis: i32,
    key: Option<&Array>,
    s: impl Into<StreamOrDevice>,
) -> Result<Array> {
    let s = s.into().raw();
    // SAFETY: valid handles.
    Array::build(|out| unsafe {
        sys::mlxs_random_categorical(out, logits.as_raw(), axis, key_raw(key), s)
    })
}
