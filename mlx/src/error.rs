//! The error type of every fallible call.

use std::panic::Location;

/// The result of every fallible call in this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong, with the caller's location where MLX raised it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// MLX rejected the call; `message` is MLX's own (usually prefixed `[op_name]`).
    #[error("{message} (called at {location})")]
    Mlx {
        /// MLX's message.
        message: String,
        /// Where the failing call was made from.
        location: &'static Location<'static>,
    },
    /// An argument failed a check made before calling MLX.
    #[error("[{op}] {message}")]
    InvalidArgument {
        /// The operation that was called.
        op: &'static str,
        /// What is wrong and what to do instead.
        message: String,
    },
    /// A host buffer's element type does not match the array's dtype.
    #[error(
        "[{op}] dtype mismatch: the array holds {actual:?}, the caller asked for {expected:?}"
    )]
    DtypeMismatch {
        /// The operation that was called.
        op: &'static str,
        /// The dtype the caller expected.
        expected: crate::Dtype,
        /// The dtype the array has.
        actual: crate::Dtype,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A custom CPU kernel returned an error or panicked.
    #[error("[{name}] kernel failed: {message}")]
    Kernel {
        /// The primitive's name.
        name: String,
        /// The kernel's message.
        message: String,
    },
}

impl Error {
    /// An [`Error::InvalidArgument`] for `op`.
    pub fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            message: message.into(),
        }
    }
}

/// Turns a shim status into a `Result`, reading MLX's last message for this thread.
#[track_caller]
pub(crate) fn check(status: std::os::raw::c_int) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to a thread-local NUL-terminated string that
    // stays valid until the next failing call on this thread; it is copied at once.
    let message = unsafe { std::ffi::CStr::from_ptr(mlx_sys::mlxs_last_error()) }
        .to_string_lossy()
        .into_owned();
    Err(Error::Mlx {
        message,
        location: Location::caller(),
    })
}
