//! The candle KV cache, paged: per layer one K and one V tensor `[slots, kv_heads, head_dim]` shared by
//! all sequences, in blocks of [`BLOCK`] token slots. A sequence owns a list of blocks (its block
//! table); a step writes the new tokens of every sequence with one scatter per tensor and reads the
//! cache of all decoding sequences with one gather, whatever the batch.
//!
//! The pool grows by doubling up to its block limit (set from the KV budget), or is allocated whole
//! at start (`--gpu-memory-fraction` on CUDA), so a decode step never reallocates.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use parking_lot::Mutex;

/// Token slots per block.
pub const BLOCK: usize = 16;

/// Blocks allocated the first time the pool grows.
const FIRST_BLOCKS: usize = 64;

pub struct KvPool {
    /// Per layer (K, V), each `[blocks * BLOCK, kv_heads, head_dim]`.
    layers: Vec<(Tensor, Tensor)>,
    n_layers: usize,
    blocks: usize,
    max_blocks: usize,
    free: Vec<u32>,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    device: Device,
}

pub type SharedPool = Arc<Mutex<KvPool>>;

impl KvPool {
    pub fn new(n_layers: usize, kv_heads: usize, head_dim: usize, dtype: DType, device: Device) -> Self {
        Self { layers: Vec::new(), n_layers, blocks: 0, max_blocks: usize::MAX / BLOCK, free: Vec::new(), kv_heads, head_dim, dtype, device }
    }

    /// Blocks allocated.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// The most blocks the pool may hold.
    pub fn max_blocks(&self) -> usize {
        self.max_blocks
    }

    /// Caps the pool at `max_blocks` (never below what is allocated).
    pub fn set_max_blocks(&mut self, max_blocks: usize) {
        self.max_blocks = max_blocks.max(self.blocks).max(1);
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// K and V of layer `layer`.
    pub fn layer(&self, layer: usize) -> Result<&(Tensor, Tensor)> {
        self.layers.get(layer).ok_or_else(|| candle_core::Error::msg("the KV cache holds no blocks yet"))
    }

    /// Grows the pool to at least `blocks` blocks (at most `max_blocks`), keeping what it holds.
    pub fn grow_to(&mut self, blocks: usize) -> Result<()> {
        let blocks = blocks.min(self.max_blocks);
        if blocks <= self.blocks {
            return Ok(());
        }
        let shape = (blocks * BLOCK, self.kv_heads, self.head_dim);
        let mut layers = Vec::with_capacity(self.n_layers);
        for li in 0..self.n_layers {
            let k = Tensor::zeros(shape, self.dtype, &self.device)?;
            let v = Tensor::zeros(shape, self.dtype, &self.device)?;
            if let Some((ok, ov)) = self.layers.get(li) {
                k.slice_set(ok, 0, 0)?;
                v.slice_set(ov, 0, 0)?;
            }
            layers.push((k, v));
        }
        self.layers = layers;
        // Lowest blocks first: the free list pops from its end.
        self.free.extend((self.blocks as u32..blocks as u32).rev());
        self.blocks = blocks;
        Ok(())
    }

    fn take_block(&mut self) -> Result<u32> {
        if self.free.is_empty() {
            let want = (self.blocks * 2).max(FIRST_BLOCKS);
            if self.blocks >= self.max_blocks {
                candle_core::bail!(
                    "the KV cache is full ({} blocks of {BLOCK} tokens); lower --max-batch-size or raise --max-kv-tokens / --gpu-memory-fraction",
                    self.blocks
                );
            }
            self.grow_to(want)?;
        }
        self.free.pop().ok_or_else(|| candle_core::Error::msg("the KV cache has no free block"))
    }
}

/// One sequence's share of the pool: its blocks and the tokens it holds.
pub struct SeqCache {
    pool: SharedPool,
    blocks: Vec<u32>,
    len: usize,
}

impl SeqCache {
    pub fn new(pool: SharedPool) -> Self {
        Self { pool, blocks: Vec::new(), len: 0 }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Token slots owned.
    pub fn capacity(&self) -> usize {
        self.blocks.len() * BLOCK
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// Makes room for `needed` tokens (whole blocks from the pool).
    pub(crate) fn reserve(&mut self, needed: usize) -> Result<()> {
        if needed <= self.capacity() {
            return Ok(());
        }
        let mut pool = self.pool.lock();
        while self.capacity() < needed {
            let b = pool.take_block()?;
            self.blocks.push(b);
        }
        Ok(())
    }

    /// The pool slot of token position `pos` (which must be reserved).
    pub(crate) fn slot(&self, pos: usize) -> u32 {
        self.blocks[pos / BLOCK] * BLOCK as u32 + (pos % BLOCK) as u32
    }
}

impl Drop for SeqCache {
    fn drop(&mut self) {
        self.pool.lock().free.append(&mut self.blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_blocks: usize) -> SharedPool {
        let mut p = KvPool::new(2, 1, 4, DType::F32, Device::Cpu);
        p.set_max_blocks(max_blocks);
        Arc::new(Mutex::new(p))
    }

    #[test]
    fn blocks_are_shared_out_and_come_back_when_a_sequence_ends() {
        let p = pool(100);
        let mut a = SeqCache::new(p.clone());
        a.reserve(BLOCK + 1).unwrap();
        assert_eq!(a.capacity(), 2 * BLOCK);
        assert_eq!(p.lock().blocks(), FIRST_BLOCKS);
        assert_eq!((a.slot(0), a.slot(BLOCK - 1), a.slot(BLOCK)), (0, BLOCK as u32 - 1, BLOCK as u32));
        let mut b = SeqCache::new(p.clone());
        b.reserve(1).unwrap();
        assert_eq!(b.slot(3), 2 * BLOCK as u32 + 3);
        drop(a);
        assert_eq!(p.lock().free.len(), FIRST_BLOCKS - 1);
        drop(b);
        assert_eq!(p.lock().free.len(), FIRST_BLOCKS);
    }

    #[test]
    fn a_full_pool_is_an_error_naming_the_flags() {
        let p = pool(2);
        let mut a = SeqCache::new(p.clone());
        a.reserve(2 * BLOCK).unwrap();
        let err = a.reserve(2 * BLOCK + 1).unwrap_err().to_string();
        assert!(err.contains("KV cache is full") && err.contains("--max-kv-tokens"), "{err}");
    }

    #[test]
    fn growing_keeps_what_the_pool_holds() {
        let p = pool(1000);
        p.lock().grow_to(1).unwrap();
        let k = Tensor::ones((BLOCK, 1, 4), DType::F32, &Device::Cpu).unwrap();
        p.lock().layer(1).unwrap().0.slice_set(&k, 0, 0).unwrap();
        p.lock().grow_to(3).unwrap();
        let guard = p.lock();
        let sum: f32 = guard.layer(1).unwrap().0.sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(sum, (BLOCK * 4) as f32);
        assert_eq!(guard.blocks(), 3);
    }
}
