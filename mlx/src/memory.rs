//! MLX's memory statistics and limits (bytes).
//!
//! ```
//! let before = mlx::memory::active_memory()?;
//! let a = mlx::ops::zeros(&[1024], mlx::Dtype::Float32, ())?;
//! a.eval()?;
//! assert!(mlx::memory::active_memory()? >= before);
//! # Ok::<(), mlx::Error>(())
//! ```

use mlx_sys as sys;

use crate::error::{check, Result};

macro_rules! getter {
    ($(#[$doc:meta] $name:ident => $f:ident;)*) => {$(
        #[$doc]
        pub fn $name() -> Result<usize> {
            let mut out = 0usize;
            // SAFETY: out-pointer to a local.
            check(unsafe { sys::$f(&mut out) })?;
            Ok(out)
        }
    )*};
}

getter! {
    /// Bytes held by live arrays.
    active_memory => mlxs_get_active_memory;
    /// The most bytes held by live arrays since the start or the last reset.
    peak_memory => mlxs_get_peak_memory;
    /// Bytes kept in MLX's buffer cache for reuse.
    cache_memory => mlxs_get_cache_memory;
}

/// Resets the peak to the current active memory.
pub fn reset_peak_memory() -> Result<()> {
    // SAFETY: no arguments.
    check(unsafe { sys::mlxs_reset_peak_memory() })
}

/// Frees MLX's buffer cache.
pub fn clear_cache() -> Result<()> {
    // SAFETY: no arguments.
    check(unsafe { sys::mlxs_clear_cache() })
}

/// Sets the memory limit; returns the previous one.
pub fn set_memory_limit(limit: usize) -> Result<usize> {
    let mut prev = 0usize;
    // SAFETY: out-pointer to a local.
    check(unsafe { sys::mlxs_set_memory_limit(limit, &mut prev) })?;
    Ok(prev)
}

/// Sets the cache limit; returns the previous one.
pub fn set_cache_limit(limit: usize) -> Result<usize> {
    let mut prev = 0usize;
    // SAFETY: out-pointer to a local.
    check(unsafe { sys::mlxs_set_cache_limit(limit, &mut prev) })?;
    Ok(prev)
}
