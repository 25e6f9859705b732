//! A safe Rust API over MLX's lazy array graph.
//!
//! MLX (Apple's array framework) runs on Apple silicon (Metal), on NVIDIA GPUs (CUDA)
//! and on CPUs. This crate wraps its C++ API through `mlx-sys`'s C ABI: every call
//! returns [`Result`], with MLX's own message in the [`Error`]; nothing panics or
//! aborts on bad input.
//!
//! ```
//! use mlx::{ops, Array, Dtype};
//! let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[1, 3])?;
//! let w = ops::ones(&[3, 2], Dtype::Float32, ())?;
//! let y = x.matmul(&w)?;           // lazy
//! assert_eq!(y.to_vec::<f32>()?, vec![6.0, 6.0]); // evaluates
//! # Ok::<(), mlx::Error>(())
//! ```
#![warn(missing_docs)]

mod array;
mod device;
mod dtype;
mod error;
pub mod fast;
pub mod io;
pub mod kernel;
pub mod memory;
pub mod ops;
pub mod primitive;
pub mod quantization;
pub mod random;
pub mod transforms;

pub use array::Array;
pub use device::{
    cuda_compute_capability, cuda_is_available, gpu_is_available, metal_is_available, synchronize,
    Device, DeviceType, Stream, StreamOrDevice,
};
pub use dtype::{Dtype, Element};
pub use error::{Error, Result};
pub use transforms::{async_eval, eval};

/// The version of the MLX library in use (it may differ from the one built
/// against when `LD_LIBRARY_PATH` points elsewhere).
///
/// ```
/// assert!(mlx::version().starts_with("0."));
/// ```
pub fn version() -> String {
    // SAFETY: MLX returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(mlx_sys::mlxs_version()) }
        .to_string_lossy()
        .into_owned()
}
