//! Custom CPU primitives written in Rust.
//!
//! A [`CpuKernel`] becomes a node of MLX's graph: MLX evaluates it on its CPU stream
//! (through the stream's command encoder, in order with the other ops) and the
//! kernel reads row-contiguous inputs and fills freshly allocated outputs. Strided
//! and broadcast inputs are made contiguous when the graph is built. A kernel error
//! or panic becomes an MLX error at evaluation, never an abort.
//!
//! ```
//! use std::sync::Arc;
//! use mlx::{primitive::{cpu_primitive, CpuKernel, Input, Output, OutputSpec}, Array, Device, Dtype};
//!
//! struct AddOne;
//! impl CpuKernel for AddOne {
//!     fn name(&self) -> &str { "add_one" }
//!     fn params(&self) -> Vec<u8> { Vec::new() }
//!     fn eval(&self, inputs: &[Input], outputs: &mut [Output]) -> Result<(), mlx::primitive::KernelError> {
//!         let x = inputs[0].as_slice::<f32>()?;
//!         for (o, v) in outputs[0].as_mut_slice::<f32>()?.iter_mut().zip(x) { *o = v + 1.0; }
//!         Ok(())
//!     }
//! }
//! let x = Array::from_slice(&[1.0f32, 2.0], &[2])?;
//! let y = cpu_primitive(Arc::new(AddOne), &[&x], &[OutputSpec::new(&[2], Dtype::Float32)], Device::cpu())?;
//! assert_eq!(y[0].to_vec::<f32>()?, vec![2.0, 3.0]);
//! # Ok::<(), mlx::Error>(())
//! ```

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use mlx_sys as sys;

use crate::array::Array;
use crate::device::StreamOrDevice;
use crate::dtype::{Dtype, Element};
use crate::error::{check, Error, Result};
use crate::ops::RawVec;
use crate::transforms::{panic_message, write_c_message};

/// The error a kernel returns; its text becomes MLX's error message.
pub type KernelError = Box<dyn std::error::Error + Send + Sync>;

/// A CPU kernel that MLX can call as a graph node.
pub trait CpuKernel: Send + Sync + 'static {
    /// The primitive's name, as MLX prints it in graphs and errors.
    fn name(&self) -> &str;

    /// The parameters that, with the name, decide equality: two nodes with equal
    /// names and params on equal inputs compute the same thing, so MLX may merge them.
    fn params(&self) -> Vec<u8>;

    /// Fills `outputs` from `inputs` (both row-contiguous).
    ///
    /// # Errors
    /// Any error; it is reported by the `eval` that ran the graph.
    fn eval(
        &self,
        inputs: &[Input],
        outputs: &mut [Output],
    ) -> std::result::Result<(), KernelError>;
}

/// A row-contiguous input buffer during evaluation.
#[repr(transparent)]
pub struct Input(sys::mlxs_buffer);

/// An output buffer during evaluation (row-contiguous, uninitialised: write every element).
#[repr(transparent)]
pub struct Output(sys::mlxs_buffer);

fn shape_of(b: &sys::mlxs_buffer) -> &[i32] {
    if b.ndim == 0 {
        &[]
    } else {
        // SAFETY: MLX keeps the shape alive during the kernel call.
        unsafe { std::slice::from_raw_parts(b.shape, b.ndim) }
    }
}

fn dtype_of(b: &sys::mlxs_buffer) -> Dtype {
    Dtype::from_code(b.dtype).expect("MLX passes known dtype codes")
}

fn typed<T: Element>(b: &sys::mlxs_buffer) -> std::result::Result<*mut T, KernelError> {
    let d = dtype_of(b);
    if d != T::DTYPE {
        return Err(format!("buffer holds {d:?}, the kernel asked for {:?}", T::DTYPE).into());
    }
    if b.size > 0 && !(b.data as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err("buffer is not aligned for its element type".into());
    }
    Ok(b.data.cast::<T>())
}

impl Input {
    /// The dimensions.
    pub fn shape(&self) -> &[i32] {
        shape_of(&self.0)
    }
    /// The element type.
    pub fn dtype(&self) -> Dtype {
        dtype_of(&self.0)
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.0.size
    }
    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.0.size == 0
    }
    /// The elements as `T`.
    ///
    /// # Errors
    /// When `T` is not the buffer's element type.
    pub fn as_slice<T: Element>(&self) -> std::result::Result<&[T], KernelError> {
        let p = typed::<T>(&self.0)?;
        if self.0.size == 0 {
            return Ok(&[]);
        }
        // SAFETY: MLX holds size elements of T at p for the duration of the call.
        Ok(unsafe { std::slice::from_raw_parts(p, self.0.size) })
    }
}

impl Output {
    /// The dimensions.
    pub fn shape(&self) -> &[i32] {
        shape_of(&self.0)
    }
    /// The element type.
    pub fn dtype(&self) -> Dtype {
        dtype_of(&self.0)
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.0.size
    }
    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.0.size == 0
    }
    /// The elements as `T`, to be written.
    ///
    /// # Errors
    /// When `T` is not the buffer's element type.
    pub fn as_mut_slice<T: Element>(&mut self) -> std::result::Result<&mut [T], KernelError> {
        let p = typed::<T>(&self.0)?;
        if self.0.size == 0 {
            return Ok(&mut []);
        }
        // SAFETY: MLX allocated size elements for this output, used by no one else
        // during the call; every bit pattern is a valid T (Element's contract).
        Ok(unsafe { std::slice::from_raw_parts_mut(p, self.0.size) })
    }
}

/// The shape and dtype of one output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    /// Dimensions.
    pub shape: Vec<i32>,
    /// Element type.
    pub dtype: Dtype,
}

impl OutputSpec {
    /// An output of `shape` and `dtype`.
    pub fn new(shape: &[i32], dtype: Dtype) -> OutputSpec {
        OutputSpec {
            shape: shape.to_vec(),
            dtype,
        }
    }
}

/// Adds `kernel` to the graph with `inputs` and returns its outputs (lazy).
///
/// # Errors
/// When there is no output, a shape is invalid, or the name holds a NUL byte.
/// Errors of the kernel itself surface when the outputs are evaluated.
#[track_caller]
pub fn cpu_primitive<K: CpuKernel>(
    kernel: Arc<K>,
    inputs: &[&Array],
    outputs: &[OutputSpec],
    s: impl Into<StreamOrDevice>,
) -> Result<Vec<Array>> {
    if outputs.is_empty() {
        return Err(Error::invalid(
            "cpu_primitive",
            "a primitive needs at least one output",
        ));
    }
    for o in outputs {
        crate::array::shape_size("cpu_primitive", &o.shape)?;
    }
    let name = CString::new(kernel.name())
        .map_err(|_| Error::invalid("cpu_primitive", "the kernel name contains a NUL byte"))?;
    let params = kernel.params();
    let raw_inputs: Vec<_> = inputs.iter().map(|a| a.as_raw()).collect();
    let shapes: Vec<i32> = outputs
        .iter()
        .flat_map(|o| o.shape.iter().copied())
        .collect();
    let ndims: Vec<usize> = outputs.iter().map(|o| o.shape.len()).collect();
    let dtypes: Vec<i32> = outputs.iter().map(|o| o.dtype.code()).collect();
    let ctx = Box::into_raw(Box::new(kernel)).cast::<c_void>();
    let out = RawVec::new()?;
    // SAFETY: the shim takes ownership of ctx at once and releases it with
    // drop_kernel::<K> exactly once, also when the call fails.
    check(unsafe {
        sys::mlxs_cpu_primitive(
            out.0,
            name.as_ptr(),
            params.as_ptr(),
            params.len(),
            Some(call_kernel::<K>),
            ctx,
            Some(drop_kernel::<K>),
            raw_inputs.as_ptr(),
            raw_inputs.len(),
            shapes.as_ptr(),
            ndims.as_ptr(),
            dtypes.as_ptr(),
            dtypes.len(),
            s.into().raw(),
        )
    })?;
    out.into_arrays()
}

unsafe extern "C" fn call_kernel<K: CpuKernel>(
    ctx: *mut c_void,
    inputs: *const sys::mlxs_buffer,
    n_inputs: usize,
    outputs: *mut sys::mlxs_buffer,
    n_outputs: usize,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the Box<Arc<K>> made in cpu_primitive; the buffers are
        // n_inputs / n_outputs descriptors that Input / Output wrap transparently.
        let kernel = unsafe { &*ctx.cast::<Arc<K>>() };
        let ins: &[Input] = if n_inputs == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(inputs.cast::<Input>(), n_inputs) }
        };
        let outs: &mut [Output] =
            unsafe { std::slice::from_raw_parts_mut(outputs.cast::<Output>(), n_outputs) };
        kernel.eval(ins, outs)
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

unsafe extern "C" fn drop_kernel<K: CpuKernel>(ctx: *mut c_void) {
    // SAFETY: ctx came from Box::into_raw in cpu_primitive and is dropped once.
    drop(unsafe { Box::from_raw(ctx.cast::<Arc<K>>()) });
}
