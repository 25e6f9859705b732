//! Parallel plumbing: writing disjoint, non-contiguous parts of one output from many
//! rayon tasks, and sizing those tasks.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An output buffer shared by tasks that each write a disjoint set of elements.
///
/// The kernels partition their outputs by (row range x token set), which is not a set
/// of contiguous slices, so `chunks_mut` cannot express it; this wrapper hands out
/// element writes instead, bounds-checked, with disjointness guaranteed by the caller.
pub(crate) struct SharedOut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: the wrapper is only used to write disjoint elements from different threads
// (see `write`), which is what `&mut [T]: Send` allows for the whole slice.
unsafe impl<T: Send> Send for SharedOut<'_, T> {}
// SAFETY: as above; no element is read or written by two tasks.
unsafe impl<T: Send> Sync for SharedOut<'_, T> {}

impl<'a, T> SharedOut<'a, T> {
    /// Wraps an exclusive borrow for the duration of a parallel section.
    pub fn new(slice: &'a mut [T]) -> Self {
        Self {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: PhantomData,
        }
    }

    /// Writes element `i`.
    ///
    /// # Safety
    /// No other task reads or writes element `i` during the parallel section.
    #[inline(always)]
    pub unsafe fn write(&self, i: usize, v: T) {
        assert!(i < self.len, "SharedOut: index out of bounds");
        // SAFETY: in bounds (checked above); exclusive per the caller's contract.
        unsafe { self.ptr.add(i).write(v) }
    }
}

/// Splits `total` items into tasks of at least `min` items, aiming at about four tasks
/// per thread so that uneven tasks still balance; the result is a multiple of `align`.
pub(crate) fn task_size(total: usize, min: usize, align: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let target = total.div_ceil(threads * 4);
    let size = target.max(min).max(1);
    size.div_ceil(align) * align
}

/// Below this many multiply-adds a call runs its tasks in order on the calling thread.
/// Handing tasks to rayon's threads costs a wake-up, and afterwards the idle workers
/// spin with `sched_yield` before they sleep: on a 2-core machine they then take the
/// CPU from MLX's own stream thread. A profile of the tiny preset's patched decode
/// (every call under ~40k multiply-adds) had ~38% of its samples in the kernel's
/// scheduler, a third of them in those yields (notebook.md, 2026-11-26 20:40). The
/// Qwen3-30B-A3B decode calls are millions, far above it.
pub(crate) const PAR_MIN_WORK: usize = 1 << 18;

/// Calls `f(i)` for each task `i < tasks`: on every one of rayon's threads, each
/// taking the next task until none is left, when the call's `work` (multiply-adds) is
/// at least [`PAR_MIN_WORK`]; in order on the calling thread otherwise.
///
/// The threads are started with `broadcast`, which wakes each of them. A parallel
/// iterator started from a thread outside the pool (MLX's stream thread runs the
/// fused CPU ops) wakes one worker, and that worker's split tasks were then often
/// left to it alone: in `benches/moe_ops.rs` every task of an expert SwiGLU call ran
/// on one worker while the other slept, at half the speed (notebook.md, 2026-11-27
/// 03:40).
pub(crate) fn for_each_task(tasks: usize, work: usize, f: impl Fn(usize) + Sync + Send) {
    if work < PAR_MIN_WORK {
        (0..tasks).for_each(f);
    } else {
        let next = AtomicUsize::new(0);
        rayon::broadcast(|_| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= tasks {
                break;
            }
            f(i);
        });
    }
}
