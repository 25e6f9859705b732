//! [`Array`]: a node of MLX's lazy graph, shared by reference.

use std::fmt;
use std::os::raw::c_int;

use mlx_sys as sys;

use crate::dtype::{Dtype, Element};
use crate::error::{check, Error, Result};

/// An MLX array: a shared handle to a node of the lazy graph.
///
/// Building ops does no work; [`Array::eval`] (or reading data) computes. `Clone`
/// shares the node (cheap); `Drop` releases this handle.
///
/// When an evaluation returns `Err`, drop the arrays of that graph: MLX reports a
/// failed step once, and later reads of dependent arrays do not fail again (outputs
/// of a failed custom CPU primitive read as NaN or -1).
///
/// Lazy arrays must be evaluated on the thread that built them (MLX's streams are
/// per thread); evaluated arrays can be sent and read anywhere.
///
/// ```
/// use mlx::Array;
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
/// let b = a.add(&a)?;
/// assert_eq!(b.to_vec::<f32>()?, vec![2.0, 4.0, 6.0, 8.0]);
/// assert_eq!(b.shape(), &[2, 2]);
/// # Ok::<(), mlx::Error>(())
/// ```
pub struct Array {
    raw: sys::mlxs_array,
}

// SAFETY: an MLX array handle is a reference-counted pointer to a graph node; moving
// the handle to another thread is safe. It is not Sync: MLX's graph nodes are not
// meant to be built on from several threads at once through the same handle.
// Note (MLX 0.32): streams belong to the thread that made them, so a lazy array built
// on one thread must be evaluated there; evaluated arrays can be read anywhere.
unsafe impl Send for Array {}

impl Array {
    /// Takes ownership of a raw handle returned by the shim.
    ///
    /// # Safety
    /// `raw` must be a valid handle not owned by anyone else.
    pub unsafe fn from_raw(raw: sys::mlxs_array) -> Array {
        Array { raw }
    }

    /// The raw handle, still owned by `self`.
    pub fn as_raw(&self) -> sys::mlxs_array {
        self.raw
    }

    /// Calls a shim function that writes one new array handle.
    #[track_caller]
    pub(crate) fn build(f: impl FnOnce(*mut sys::mlxs_array) -> c_int) -> Result<Array> {
        let mut raw: sys::mlxs_array = std::ptr::null_mut();
        check(f(&mut raw))?;
        Ok(Array { raw })
    }

    /// An array of `shape` holding a copy of `data` (row-major).
    ///
    /// # Errors
    /// When `data.len()` is not the product of `shape` or a dimension is negative.
    ///
    /// ```
    /// let a = mlx::Array::from_slice(&[half::bf16::from_f32(1.5); 6], &[2, 3])?;
    /// assert_eq!(a.dtype(), mlx::Dtype::Bfloat16);
    /// # Ok::<(), mlx::Error>(())
    /// ```
    #[track_caller]
    pub fn from_slice<T: Element>(data: &[T], shape: &[i32]) -> Result<Array> {
        let expected = shape_size("from_slice", shape)?;
        if expected != data.len() {
            return Err(Error::invalid(
                "from_slice",
                format!(
                    "shape {shape:?} holds {expected} elements but {} were given",
                    data.len()
                ),
            ));
        }
        Array::build(|out| unsafe {
            // SAFETY: data holds expected elements of T::DTYPE; the shim copies them.
            sys::mlxs_array_from_data(
                out,
                data.as_ptr().cast(),
                shape.as_ptr(),
                shape.len(),
                T::DTYPE.code(),
            )
        })
    }

    /// A 0-d array holding `value`.
    ///
    /// ```
    /// assert_eq!(mlx::Array::scalar(7i32)?.item::<i32>()?, 7);
    /// # Ok::<(), mlx::Error>(())
    /// ```
    #[track_caller]
    pub fn scalar<T: Element>(value: T) -> Result<Array> {
        Array::from_slice(&[value], &[])
    }

    /// A 0-d array of `dtype` holding `value` converted to it (like a Python scalar
    /// that takes the dtype of the array it meets).
    ///
    /// ```
    /// let s = mlx::Array::scalar_as(0.5, mlx::Dtype::Float16)?;
    /// assert_eq!(s.dtype(), mlx::Dtype::Float16);
    /// # Ok::<(), mlx::Error>(())
    /// ```
    #[track_caller]
    pub fn scalar_as(value: f64, dtype: Dtype) -> Result<Array> {
        // SAFETY: out-pointer; plain values.
        Array::build(|out| unsafe { sys::mlxs_array_from_f64(out, value, dtype.code()) })
    }

    /// The dimensions.
    pub fn shape(&self) -> &[i32] {
        // SAFETY: the shim returns a pointer to the array's shape, which lives and
        // does not change as long as this handle does.
        unsafe {
            let n = sys::mlxs_array_ndim(self.raw);
            if n == 0 {
                return &[];
            }
            std::slice::from_raw_parts(sys::mlxs_array_shape(self.raw), n)
        }
    }

    /// The strides in elements (meaningful once evaluated).
    pub fn strides(&self) -> &[i64] {
        // SAFETY: as for shape().
        unsafe {
            let n = sys::mlxs_array_ndim(self.raw);
            if n == 0 {
                return &[];
            }
            std::slice::from_raw_parts(sys::mlxs_array_strides(self.raw), n)
        }
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { sys::mlxs_array_ndim(self.raw) }
    }

    /// The number of elements.
    pub fn size(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { sys::mlxs_array_size(self.raw) }
    }

    /// The number of bytes of the elements.
    pub fn nbytes(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { sys::mlxs_array_nbytes(self.raw) }
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        // SAFETY: valid handle.
        let code = unsafe { sys::mlxs_array_dtype(self.raw) };
        Dtype::from_code(code).expect("MLX returned a dtype code this crate knows")
    }

    /// The size of dimension `axis` (negative counts from the end).
    ///
    /// # Errors
    /// When `axis` is out of range.
    pub fn dim(&self, axis: i32) -> Result<i32> {
        let ax = normalize_axis("dim", axis, self.ndim())?;
        Ok(self.shape()[ax])
    }

    /// Computes this array now.
    #[track_caller]
    pub fn eval(&self) -> Result<()> {
        crate::transforms::eval(&[self])
    }

    /// A copy of the elements in row-major order (evaluates the array).
    ///
    /// A row-contiguous array is read in place once evaluated (for an array that an
    /// [`crate::async_eval`] already queued this only waits for that array), so the
    /// host can go on while the device runs later work. On MLX's CPU backend, letting
    /// the host build and queue new graphs while the CPU stream still runs earlier
    /// ones has corrupted the heap now and then (zmlx's notebook, 2026-11-26): a
    /// pipelined loop on the CPU should synchronize the stream before reading, as
    /// `zmlx::generate` does.
    ///
    /// # Errors
    /// When `T` is not the array's element type, or evaluation fails.
    #[track_caller]
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DtypeMismatch {
                op: "to_vec",
                expected: T::DTYPE,
                actual: self.dtype(),
            });
        }
        let n = self.size();
        let mut out: Vec<T> = Vec::with_capacity(n);
        // SAFETY: the shim writes exactly n * size_of::<T>() bytes, checked against
        // the array's nbytes, then we set the length.
        check(unsafe {
            sys::mlxs_array_to_host(
                self.raw,
                out.as_mut_ptr().cast(),
                n * std::mem::size_of::<T>(),
            )
        })?;
        unsafe { out.set_len(n) };
        Ok(out)
    }

    /// The single element of a one-element array.
    ///
    /// # Errors
    /// When the array does not hold exactly one element or `T` is not its type.
    #[track_caller]
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(Error::invalid(
                "item",
                format!("the array holds {} elements, not one", self.size()),
            ));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// True when both handles refer to the same graph node.
    pub fn same_node(&self, other: &Array) -> bool {
        // SAFETY: valid handles.
        unsafe { sys::mlxs_array_same(self.raw, other.raw) }
    }
}

impl Clone for Array {
    fn clone(&self) -> Self {
        let mut raw: sys::mlxs_array = std::ptr::null_mut();
        // SAFETY: valid handle; the shim only allocates a new handle (fails only when
        // memory is exhausted, which Rust treats as fatal anyway).
        let status = unsafe { sys::mlxs_array_clone(&mut raw, self.raw) };
        assert_eq!(status, 0, "out of memory cloning an array handle");
        Array { raw }
    }
}

impl Drop for Array {
    fn drop(&mut self) {
        // SAFETY: we own the handle.
        unsafe { sys::mlxs_array_free(self.raw) }
    }
}

impl fmt::Display for Array {
    /// MLX's printed form (evaluates the array).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s: *mut std::os::raw::c_char = std::ptr::null_mut();
        // SAFETY: out-pointer; the string is copied and then freed by the shim.
        let status = unsafe { sys::mlxs_array_to_string(self.raw, &mut s) };
        if status != 0 {
            return write!(
                f,
                "array(<error: {}>, shape={:?}, dtype={:?})",
                crate::error::check(status)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
                self.shape(),
                self.dtype()
            );
        }
        let text = unsafe { std::ffi::CStr::from_ptr(s) }
            .to_string_lossy()
            .into_owned();
        unsafe { sys::mlxs_string_free(s) };
        f.write_str(&text)
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The number of elements of `shape`, rejecting negative dimensions.
pub(crate) fn shape_size(op: &'static str, shape: &[i32]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| Error::invalid(op, format!("invalid shape {shape:?}")))
    })
}

/// `axis` made non-negative, or an error naming `op`.
pub(crate) fn normalize_axis(op: &'static str, axis: i32, ndim: usize) -> Result<usize> {
    let n = ndim as i64;
    let a = axis as i64;
    let a = if a < 0 { a + n } else { a };
    if a < 0 || a >= n {
        return Err(Error::invalid(
            op,
            format!("axis {axis} is out of range for an array with {ndim} dimensions"),
        ));
    }
    Ok(a as usize)
}
