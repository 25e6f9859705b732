//! Evaluation and compilation of graphs.

use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlx_sys as sys;

use crate::array::Array;
use crate::error::{check, Result};
use crate::ops::RawVec;

/// Computes all `arrays` (sharing the work of common subgraphs).
///
/// ```
/// let a = mlx::Array::from_slice(&[1.0f32], &[1])?;
/// let b = a.exp()?;
/// mlx::eval(&[&a, &b])?;
/// # Ok::<(), mlx::Error>(())
/// ```
#[track_caller]
pub fn eval(arrays: &[&Array]) -> Result<()> {
    let raw: Vec<sys::mlxs_array> = arrays.iter().map(|a| a.as_raw()).collect();
    // SAFETY: raw holds valid handles.
    check(unsafe { sys::mlxs_eval(raw.as_ptr(), raw.len()) })
}

/// Starts computing `arrays` and returns at once; a later [`eval`] or read waits.
/// Decoding uses it to queue the next step before reading the current token.
#[track_caller]
pub fn async_eval(arrays: &[&Array]) -> Result<()> {
    let raw: Vec<sys::mlxs_array> = arrays.iter().map(|a| a.as_raw()).collect();
    // SAFETY: raw holds valid handles.
    check(unsafe { sys::mlxs_async_eval(raw.as_ptr(), raw.len()) })
}

/// Writes `msg` into a C buffer of `len` bytes, NUL-terminated and truncated.
pub(crate) fn write_c_message(buf: *mut c_char, len: usize, msg: &str) {
    if buf.is_null() || len == 0 {
        return;
    }
    let bytes = msg.as_bytes();
    let n = bytes.len().min(len - 1);
    // SAFETY: the caller provides len writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}

/// A panic's payload as text.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

type GraphFn = dyn Fn(&[Array]) -> Result<Vec<Array>> + 'static;

/// A function compiled by MLX: its graph is traced once per input shape (or once
/// for all shapes when `shapeless`) and element-wise chains are fused.
pub struct Compiled {
    raw: sys::mlxs_closure,
}

/// Compiles `f`.
///
/// ```
/// use mlx::{transforms::compile, Array};
/// let f = compile(|xs: &[Array]| Ok(vec![xs[0].multiply(&xs[0])?.add(&xs[0])?]), false)?;
/// let x = Array::from_slice(&[2.0f32], &[1])?;
/// assert_eq!(f.call(&[&x])?[0].to_vec::<f32>()?, vec![6.0]);
/// # Ok::<(), mlx::Error>(())
/// ```
pub fn compile<F>(f: F, shapeless: bool) -> Result<Compiled>
where
    F: Fn(&[Array]) -> Result<Vec<Array>> + 'static,
{
    let boxed: Box<Box<GraphFn>> = Box::new(Box::new(f));
    let ctx = Box::into_raw(boxed).cast::<c_void>();
    let mut raw: sys::mlxs_closure = std::ptr::null_mut();
    // SAFETY: ctx is released by drop_graph_fn exactly once, by the shim.
    check(unsafe {
        sys::mlxs_compile(
            &mut raw,
            Some(call_graph_fn),
            ctx,
            Some(drop_graph_fn),
            shapeless,
        )
    })?;
    Ok(Compiled { raw })
}

impl Compiled {
    /// Runs the compiled function (lazily, like any op).
    #[track_caller]
    pub fn call(&self, inputs: &[&Array]) -> Result<Vec<Array>> {
        let raw: Vec<sys::mlxs_array> = inputs.iter().map(|a| a.as_raw()).collect();
        let out = RawVec::new()?;
        // SAFETY: valid closure and handles.
        check(unsafe { sys::mlxs_closure_call(out.0, self.raw, raw.as_ptr(), raw.len()) })?;
        out.into_arrays()
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::mlxs_closure_free(self.raw) }
    }
}

unsafe extern "C" fn call_graph_fn(
    ctx: *mut c_void,
    inputs: *const sys::mlxs_array,
    n: usize,
    out: sys::mlxs_vec,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        // SAFETY: ctx is the Box<GraphFn> made in compile; inputs holds n handles
        // owned by the caller, so each is cloned into a handle of our own.
        let f = unsafe { &*ctx.cast::<Box<GraphFn>>() };
        let handles = if n == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(inputs, n) }
        };
        let args = handles
            .iter()
            .map(|&h| Array::build(|o| unsafe { sys::mlxs_array_clone(o, h) }))
            .collect::<Result<Vec<_>>>()?;
        for a in f(&args)? {
            // SAFETY: valid vector and handle; the vector copies the array.
            check(unsafe { sys::mlxs_vec_push(out, a.as_raw()) })?;
        }
        Ok(())
    }));
    match result {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            write_c_message(err, err_len, &e.to_string());
            1
        }
        Err(p) => {
            write_c_message(err, err_len, &panic_message(p.as_ref()));
            1
        }
    }
}

unsafe extern "C" fn drop_graph_fn(ctx: *mut c_void) {
    // SAFETY: ctx came from Box::into_raw in compile and is dropped once.
    drop(unsafe { Box::from_raw(ctx.cast::<Box<GraphFn>>()) });
}
