//! Per-thread overrides of process-wide kernel choices (SIMD level, bf16 kernel form,
//! CUDA variants): one scoped setter that every such choice uses.

use std::cell::Cell;
use std::thread::LocalKey;

/// What `slot` holds on this thread, else `fallback()` (the process-wide choice).
pub(crate) fn current<T: Copy + 'static>(
    slot: &'static LocalKey<Cell<Option<T>>>,
    fallback: impl FnOnce() -> T,
) -> T {
    slot.with(Cell::get).unwrap_or_else(fallback)
}

/// Runs `f` with `slot` (a thread-local override) holding `value`, then restores what
/// it held before, also if `f` panics.
pub(crate) fn with_override<T: Copy + 'static, R>(
    slot: &'static LocalKey<Cell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static> {
        slot: &'static LocalKey<Cell<Option<T>>>,
        previous: Option<T>,
    }
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.slot.with(|c| c.set(self.previous));
        }
    }
    let _restore = Restore {
        slot,
        previous: slot.with(|c| c.replace(Some(value))),
    };
    f()
}
