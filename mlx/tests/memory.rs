//! No leaks: creating and dropping 100,000 arrays (evaluated small arrays, lazy op
//! results never evaluated, evaluated op results) returns MLX's active memory to
//! where it was, and the process's resident memory stays flat (which catches leaked
//! handles and graph nodes, which MLX's counters do not see).
//!
//! This file holds a single test so no other test allocates concurrently (the
//! counters are process-wide).

use mlx::{memory, ops, Array, Dtype};

const N: usize = 100_000;

fn churn() {
    let w = ops::ones(&[4], Dtype::Float32, ()).unwrap();
    w.eval().unwrap();
    for i in 0..N {
        let a = Array::from_slice(&[i as f32, 1.0, 2.0, 3.0], &[4]).unwrap();
        match i % 3 {
            // An evaluated small array.
            0 => a.eval().unwrap(),
            // A lazy graph that is never evaluated.
            1 => {
                let b = a.add(&w).unwrap().multiply(&a).unwrap().exp().unwrap();
                drop(b);
            }
            // An evaluated op result, read back.
            _ => {
                let b = a.add(&w).unwrap().sum(&[0], false).unwrap();
                assert_eq!(b.item::<f32>().unwrap(), i as f32 + 10.0);
            }
        }
    }
}

/// Resident set size in bytes (Linux), or None elsewhere.
fn rss() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn no_leak_over_100k_arrays() {
    // Warm up: MLX's thread pools, caches and the allocator's arenas settle.
    churn();
    memory::clear_cache().unwrap();
    let active = memory::active_memory().unwrap();
    let rss0 = rss();

    churn();
    mlx::synchronize().unwrap();
    memory::clear_cache().unwrap();
    assert_eq!(
        memory::active_memory().unwrap(),
        active,
        "MLX buffers leaked"
    );
    assert_eq!(memory::cache_memory().unwrap(), 0);

    if let (Some(before), Some(after)) = (rss0, rss()) {
        // A leaked handle (16 bytes plus an MLX array of ~200 bytes) per array
        // would add ~20 MB; allow 4 MB of allocator noise.
        let grown = after.saturating_sub(before);
        assert!(
            grown < 4 << 20,
            "resident memory grew by {grown} bytes over {N} arrays"
        );
    }

    // Peak tracking works and sees a big allocation.
    memory::reset_peak_memory().unwrap();
    let big = ops::zeros(&[1 << 20], Dtype::Float32, ()).unwrap();
    big.eval().unwrap();
    assert!(memory::peak_memory().unwrap() >= active + (4 << 20));
    drop(big);
    memory::clear_cache().unwrap();
    assert_eq!(memory::active_memory().unwrap(), active);
}
