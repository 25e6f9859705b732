//! The key/value cache of attention layers, growing in steps as mlx-lm's `KVCache`.

use mlx::{ops, Array, StreamOrDevice};

use crate::error::Result;

/// The cache grows by this many positions at a time (as mlx-lm's).
pub const KV_STEP: i32 = 256;

/// Keys and values of one attention layer, `[batch, kv_heads, positions, head_dim]`.
///
/// A clone shares the buffers until its next update, which copies them (MLX's
/// `slice_update` of a shared buffer): a clone never hands out an in-place slot
/// ([`KvCache::writable`]), so that two caches never write one buffer.
#[derive(Debug, Default)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
    /// Whether `keys` and `values` are dense buffers that this cache may write in
    /// place (outputs of `slice_update` or `concatenate`; a fresh `zeros` is a
    /// broadcast). Clones start without it: only the original writes a shared
    /// buffer in place, at positions the clone has not cached (it writes its own
    /// before reading them, through a copying `slice_update`).
    dense: bool,
}

impl Clone for KvCache {
    fn clone(&self) -> Self {
        KvCache {
            keys: self.keys.clone(),
            values: self.values.clone(),
            offset: self.offset,
            dense: false,
        }
    }
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
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        // slice_update writes into a fresh buffer or into its donated dense input.
        self.dense = true;
        self.fetch_views(s)
    }

    /// For a step of `len` positions that a kernel writes straight into the cache
    /// (the fused q/k norm + RoPE of one-token decode steps): the key and value
    /// buffers `[batch, kv_heads, capacity, head_dim]`, when they are dense, not a
    /// clone's (see [`KvCache`]) and have room for `len` more positions at
    /// [`offset`]. `None`
    /// when the step must create or grow the cache: then use
    /// [`update_and_fetch`]. After the kernel is queued, [`commit_written`] advances
    /// the cache and returns the views to attend over.
    ///
    /// [`offset`]: KvCache::offset
    /// [`update_and_fetch`]: KvCache::update_and_fetch
    /// [`commit_written`]: KvCache::commit_written
    pub fn writable(&self, len: i32) -> Option<(&Array, &Array)> {
        let (k, v) = (self.keys.as_ref()?, self.values.as_ref()?);
        let room = k.shape()[2] - self.offset;
        (self.dense && len >= 1 && len <= room).then_some((k, v))
    }

    /// Counts `len` positions a kernel wrote at [`offset`](KvCache::offset) into the
    /// buffers [`writable`](KvCache::writable) gave, and returns every cached key
    /// and value, as [`update_and_fetch`](KvCache::update_and_fetch) does.
    ///
    /// # Errors
    /// When the buffers had no room for `len` positions (no `writable` slot), or
    /// MLX fails.
    pub fn commit_written(&mut self, len: i32, s: StreamOrDevice) -> Result<(Array, Array)> {
        if self.writable(len).is_none() {
            return Err(crate::error::Error::InvalidArgument(format!(
                "no room written for {len} positions at offset {} of the KV cache",
                self.offset
            )));
        }
        self.offset += len;
        self.fetch_views(s)
    }

    /// The cached positions as views of the buffers (the buffers themselves when
    /// they are full).
    fn fetch_views(&self, s: StreamOrDevice) -> Result<(Array, Array)> {
        let (k, v) = (
            self.keys.as_ref().expect("fetched after an update"),
            self.values.as_ref().expect("fetched after an update"),
        );
        let sh = k.shape();
        let (b, h, cap, d) = (sh[0], sh[1], sh[2], sh[3]);
        let vd = v.shape()[3];
        if self.offset < cap {
            Ok((
                ops::slice(k, &[0, 0, 0, 0], &[b, h, self.offset, d], &[1; 4], s)?,
                ops::slice(v, &[0, 0, 0, 0], &[b, h, self.offset, vd], &[1; 4], s)?,
            ))
        } else {
            Ok((k.clone(), v.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx::{Device, Dtype};

    fn cpu() -> StreamOrDevice {
        Device::cpu().into()
    }

    fn filled(len: i32, start: f32) -> Array {
        let n = (2 * len * 4) as usize;
        let v: Vec<f32> = (0..n).map(|i| start + i as f32).collect();
        Array::from_slice(&v, &[1, 2, len, 4]).expect("array")
    }

    /// The in-place slot exists only for a dense cache with room; commits advance the
    /// offset and fetch views over every written position; growth goes through
    /// `update_and_fetch` and keeps the cache dense.
    #[test]
    fn writable_slots_follow_room_and_density() {
        let s = cpu();
        let mut c = KvCache::new();
        assert!(c.writable(1).is_none(), "an empty cache has no buffer");
        assert!(c.commit_written(1, s).is_err());
        let (k, v) = c
            .update_and_fetch(&filled(3, 0.0), &filled(3, 100.0), s)
            .expect("update");
        assert_eq!(k.shape(), [1, 2, 3, 4]);
        assert_eq!(
            v.to_vec::<f32>().expect("read"),
            filled(3, 100.0).to_vec::<f32>().expect("read")
        );
        let (kb, vb) = c.writable(1).expect("room after the first update");
        assert_eq!(kb.shape(), [1, 2, KV_STEP, 4]);
        assert_eq!(vb.dtype(), Dtype::Float32);
        assert!(c.writable(KV_STEP - 3).is_some());
        assert!(c.writable(KV_STEP - 2).is_none(), "past the capacity");
        assert!(c.writable(0).is_none());
        let (k, _) = c.commit_written(1, s).expect("commit");
        assert_eq!((c.offset(), k.shape()[2]), (4, 4));
        let (k, v) = c.commit_written(KV_STEP - 4, s).expect("fill up");
        assert_eq!(c.offset(), KV_STEP);
        assert_eq!((k.shape()[2], v.shape()[2]), (KV_STEP, KV_STEP));
        assert!(c.writable(1).is_none(), "a full cache must grow first");
        assert!(c.commit_written(1, s).is_err());
        let (k, _) = c
            .update_and_fetch(&filled(1, 0.0), &filled(1, 0.0), s)
            .expect("grow");
        assert_eq!(k.shape()[2], KV_STEP + 1);
        assert!(c.writable(1).is_some(), "the grown cache is dense again");
        // A clone shares the buffers: only the original may write them in place.
        let mut twin = c.clone();
        assert!(twin.writable(1).is_none());
        assert!(c.writable(1).is_some());
        twin.update_and_fetch(&filled(1, 0.0), &filled(1, 0.0), s)
            .expect("update the clone");
        assert!(
            twin.writable(1).is_some(),
            "after its own update it has a buffer"
        );
    }
}
