//! One sequence's KV cache: per layer a K and a V tensor (kv_heads, capacity, head_dim) written in
//! place; capacity grows in blocks, so decode steps do not reallocate.

use candle_core::{Device, Result, Tensor};

/// Capacity grows in multiples of this many tokens.
const BLOCK: usize = 64;

pub struct SeqCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

impl SeqCache {
    pub fn new(layers: usize) -> Self {
        Self { layers: (0..layers).map(|_| None).collect(), len: 0, capacity: 0 }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Token slots allocated.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// Makes room for `needed` tokens (growing by doubling, in whole blocks).
    pub(crate) fn reserve(&mut self, needed: usize, kv_heads: usize, head_dim: usize, device: &Device) -> Result<()> {
        if needed <= self.capacity {
            return Ok(());
        }
        let cap = needed.max(self.capacity * 2).div_ceil(BLOCK) * BLOCK;
        for slot in self.layers.iter_mut() {
            let k = Tensor::zeros((kv_heads, cap, head_dim), candle_core::DType::F32, device)?;
            let v = Tensor::zeros((kv_heads, cap, head_dim), candle_core::DType::F32, device)?;
            if let Some((ok, ov)) = slot.take() {
                if self.len > 0 {
                    k.slice_set(&ok.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                    v.slice_set(&ov.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
            }
            *slot = Some((k, v));
        }
        self.capacity = cap;
        Ok(())
    }

    /// Writes `k`, `v` (kv_heads, n, head_dim) at token offset `at` of layer `layer`.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor, at: usize) -> Result<()> {
        let Some(Some((kc, vc))) = self.layers.get(layer) else { candle_core::bail!("kv cache not reserved") };
        kc.slice_set(k, 1, at)?;
        vc.slice_set(v, 1, at)?;
        Ok(())
    }

    /// The first `len` tokens of layer `layer`.
    pub(crate) fn view(&self, layer: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let Some(Some((kc, vc))) = self.layers.get(layer) else { candle_core::bail!("kv cache not reserved") };
        Ok((kc.narrow(1, 0, len)?, vc.narrow(1, 0, len)?))
    }
}
