//! The key/value cache of attention layers, growing in steps as mlx-lm's `KVCache`.

use mlx::{ops, Array, StreamOrDevice};

use crate::error::Result;

/// The cache grows by this many positions at a time (as mlx-lm's).
pub const KV_STEP: i32 = 256;

/// Keys and values of one attention layer, `[batch, kv_heads, positions, head_dim]`.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// The number of cached positions.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// The cache buffers (for evaluation after prefill).
    pub fn state(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).collect()
    }

    /// Appends `keys` and `values` (`[b, h, l, d]`) and returns all cached ones.
    pub fn update_and_fetch(
        &mut self,
        keys: &Array,
        values: &Array,
        s: StreamOrDevice,
    ) -> Result<(Array, Array)> {
        let prev = self.offset;
        let (b, h, l, d) = (
            keys.shape()[0],
            keys.shape()[1],
            keys.shape()[2],
            keys.shape()[3],
        );
        let vd = values.shape()[3];
        let capacity = self.keys.as_ref().map_or(0, |k| k.shape()[2]);
        if self.keys.is_none() || prev + l > capacity {
            let n_steps = (KV_STEP + l - 1) / KV_STEP;
            let new_k = ops::zeros(&[b, h, n_steps * KV_STEP, d], keys.dtype(), s)?;
            let new_v = ops::zeros(&[b, h, n_steps * KV_STEP, vd], values.dtype(), s)?;
            match (self.keys.take(), self.values.take()) {
                (Some(mut k), Some(mut v)) => {
                    if prev % KV_STEP != 0 {
                        k = ops::slice(&k, &[0, 0, 0, 0], &[b, h, prev, d], &[1; 4], s)?;
                        v = ops::slice(&v, &[0, 0, 0, 0], &[b, h, prev, vd], &[1; 4], s)?;
                    }
                    self.keys = Some(ops::concatenate(&[&k, &new_k], 2, s)?);
                    self.values = Some(ops::concatenate(&[&v, &new_v], 2, s)?);
                }
                _ => {
                    self.keys = Some(new_k);
                    self.values = Some(new_v);
                }
            }
        }
        self.offset += l;
        let (k, v) = (
            self.keys.as_ref().expect("set above"),
            self.values.as_ref().expect("set above"),
        );
        let k = ops::slice_update(
            k,
            keys,
            &[0, 0, prev, 0],
            &[b, h, self.offset, d],
            &[1; 4],
            s,
        )?;
        let v = ops::slice_update(
            v,
            values,
            &[0, 0, prev, 0],
            &[b, h, self.offset, vd],
            &[1; 4],
            s,
        )?;
        let cap = k.shape()[2];
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        if self.offset < cap {
            Ok((
                ops::slice(&k, &[0, 0, 0, 0], &[b, h, self.offset, d], &[1; 4], s)?,
                ops::slice(&v, &[0, 0, 0, 0], &[b, h, self.offset, vd], &[1; 4], s)?,
            ))
        } else {
            Ok((k, v))
        }
    }
}
