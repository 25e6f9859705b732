//! Helpers shared by the CUDA test files (`cuda_vs_reference.rs`,
//! `cuda_norm_vs_reference.rs`).

use mlx::{Device, StreamOrDevice};

/// Whether MLX runs its CUDA backend; prints "skipped: no CUDA" when not (CI has no
/// GPU; the device runs are recorded in notes/cuda-kernels.md).
pub fn cuda() -> bool {
    if mlx::cuda_is_available().unwrap_or(false) {
        true
    } else {
        println!("skipped: no CUDA");
        false
    }
}

/// The GPU's default stream.
pub fn gpu_stream() -> StreamOrDevice {
    StreamOrDevice::Device(Device::gpu())
}

/// Unwraps, printing MLX's message in full (NVRTC logs included) before failing.
pub fn ok<T>(r: mlx::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{what}: MLX error:\n{e}");
            panic!("{what} failed: {e}");
        }
    }
}
