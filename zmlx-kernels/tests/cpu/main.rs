//! Property tests of the CPU kernels against naive references.
//!
//! Every kernel call is repeated at every SIMD level the CPU supports (always including
//! the portable one) and each result is checked against the reference on its own.
//! Inputs are row-contiguous by construction: strided MLX arrays are made contiguous by
//! the caller before reaching these kernels, so strides are not a kernel concern.

mod data;
mod dispatch;
mod down;
mod errors;
mod gating;
mod naive;
mod qmm;
mod swiglu;
mod tol;
