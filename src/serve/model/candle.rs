//! The llama forward on candle tensors (the CUDA path, and CPU with `GPUBENCH_CPU_BACKEND=candle`).
//!
//! One step runs the linear layers once over the tokens of all sequences. Attention of the
//! decoding sequences (one token each) is batched: the new keys and values of every token are
//! written into the paged cache by one scatter, the cache of every decoding sequence is read by one
//! gather into `[batch, kv_heads, longest, head_dim]` with a length mask, and QK^T, the masked
//! softmax and the product with V are one op each. So a decode step launches the same number of
//! candle ops at batch 1 and at batch 64 ([`ops`] counts them). Prompt chunks (several tokens of
//! one sequence) run their own causal attention per chunk.

use std::cell::Cell;
use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Result, Tensor};
use parking_lot::Mutex;

use super::kv::{KvPool, SeqCache, SharedPool};
use super::step::StepPlan;
use super::LlamaConfig;

thread_local! {
    static OPS: Cell<u64> = const { Cell::new(0) };
}

/// Candle ops (kernel launches and host-to-device copies) the forward issued on this thread.
pub fn ops() -> u64 {
    OPS.with(Cell::get)
}

/// Adds `n` ops to the count.
pub(super) fn count_op(n: u64) {
    OPS.with(|c| c.set(c.get() + n));
}

/// Counts one candle op.
macro_rules! op {
    ($e:expr) => {{
        OPS.with(|c| c.set(c.get() + 1));
        $e
    }};
}

/// One sequence's share of a forward step on candle.
pub struct CandleInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut SeqCache,
    pub want_logits: bool,
}

pub(crate) struct Layer {
    pub attn_norm: Tensor,
    pub wq: QMatMul,
    pub wk: QMatMul,
    pub wv: QMatMul,
    pub wo: QMatMul,
    pub ffn_norm: Tensor,
    pub w_gate: QMatMul,
    pub w_up: QMatMul,
    pub w_down: QMatMul,
}

/// Model weights, the rotary tables and the KV pool.
pub struct Llama {
    pub cfg: LlamaConfig,
    pub(crate) embed: Tensor,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: QMatMul,
    cos: Tensor,
    sin: Tensor,
    /// The activations' dtype (the weights' for float weights; f32 for quantized ones).
    pub dtype: DType,
    pool: SharedPool,
    pub device: Device,
}

impl Llama {
    pub(crate) fn new(
        cfg: LlamaConfig,
        embed: Tensor,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: QMatMul,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv: Vec<f32> = cfg.inv_freq();
        let inv = Tensor::from_vec(inv, (1, half), &device)?;
        let pos = Tensor::arange(0u32, cfg.context as u32, &device)?.to_dtype(DType::F32)?.reshape((cfg.context, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        let (cos, sin) = (freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?);
        let pool = KvPool::new(cfg.layers, cfg.kv_heads, cfg.head_dim, dtype, device.clone());
        Ok(Self { cos, sin, cfg, embed, layers, norm, lm_head, dtype, pool: Arc::new(Mutex::new(pool)), device })
    }

    /// Bytes the weights take on the device.
    pub fn weight_bytes(&self) -> usize {
        let t = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let q = |m: &QMatMul| match m {
            QMatMul::QTensor(q) => q.storage_size_in_bytes(),
            QMatMul::Tensor(w) | QMatMul::TensorF16(w) => t(w),
        };
        let layers: usize = self
            .layers
            .iter()
            .map(|l| t(&l.attn_norm) + t(&l.ffn_norm) + [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down].iter().map(|m| q(m)).sum::<usize>())
            .sum();
        let tied = matches!((&self.lm_head, &self.embed), (QMatMul::Tensor(w), e) if w.id() == e.id());
        t(&self.embed) + layers + t(&self.norm) + if tied { 0 } else { q(&self.lm_head) }
    }

    /// Bytes one cached token takes (K and V of every layer, in the cache's dtype).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.cfg.layers * self.cfg.kv_heads * self.cfg.head_dim * self.dtype.size_in_bytes()
    }

    /// Bounds the KV pool at `tokens` token slots; with `allocate`, takes them now.
    pub fn set_kv_capacity(&self, tokens: usize, allocate: bool) -> Result<()> {
        let blocks = tokens.div_ceil(super::kv::BLOCK);
        let mut pool = self.pool.lock();
        pool.set_max_blocks(blocks);
        if allocate {
            pool.grow_to(blocks)?;
        }
        Ok(())
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> SeqCache {
        SeqCache::new(self.pool.clone())
    }

    /// Runs one step over all `inputs`, appending their tokens to their caches. Returns one row
    /// of logits per input with `want_logits`, in order.
    pub fn forward(&self, inputs: &mut [CandleInput<'_>]) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        for inp in inputs.iter_mut() {
            let needed = inp.cache.len() + inp.tokens.len();
            if inp.tokens.is_empty() {
                candle_core::bail!("empty step input");
            }
            if needed > cfg.context {
                candle_core::bail!("sequence of {needed} tokens exceeds the context of {}", cfg.context);
            }
            inp.cache.reserve(needed)?;
        }
        let plan = StepPlan::new(inputs);
        let x = self.layers_forward(&plan)?;
        for inp in inputs.iter_mut() {
            let len = inp.cache.len() + inp.tokens.len();
            inp.cache.set_len(len);
        }
        if plan.logit_rows.is_empty() {
            return Ok(Vec::new());
        }
        let n = plan.logit_rows.len();
        let rows = op!(Tensor::from_vec(plan.logit_rows.clone(), (n,), &self.device)?);
        let last = op!(x.index_select(&rows, 0)?);
        let last = op!(candle_nn::ops::rms_norm(&last, &self.norm, cfg.rms_eps as f32)?);
        let logits = op!(op!(self.lm_head.forward(&last)?).to_dtype(DType::F32)?);
        op!(logits.to_vec2::<f32>())
    }

    /// Embedding and every layer over the plan's tokens; returns the hidden states, one row per token.
    fn layers_forward(&self, plan: &StepPlan) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let dev = &self.device;
        let t = plan.ids.len();
        let ids = op!(Tensor::from_vec(plan.ids.clone(), (t,), dev)?);
        let pos = op!(Tensor::from_vec(plan.pos.clone(), (t,), dev)?);
        // Rotary tables of every token by one gather each, as (token, 1, head_dim / 2).
        let cos = op!(self.cos.index_select(&pos, 0)?).reshape((t, 1, hd / 2))?;
        let sin = op!(self.sin.index_select(&pos, 0)?).reshape((t, 1, hd / 2))?;
        // Where each token's K/V row goes in the pool, as a (token, kv_heads, head_dim) index.
        let write = op!(Tensor::from_vec(plan.write_slots.clone(), (t, 1, 1), dev)?);
        let write = op!(write.broadcast_as((t, nkv, hd))?.contiguous()?);
        let dec = plan.decode_tensors(dev)?;
        let chunks = plan.chunk_tensors(dev)?;
        let mut x = op!(self.embed.index_select(&ids, 0)?);
        let pool = self.pool.lock();
        for (li, layer) in self.layers.iter().enumerate() {
            let h = op!(candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps as f32)?);
            let q = op!(layer.wq.forward(&h)?).reshape((t, nh, 1, hd))?;
            let k = op!(layer.wk.forward(&h)?).reshape((t, nkv, 1, hd))?;
            let v = op!(layer.wv.forward(&h)?).reshape((t, nkv, hd))?;
            let q = op!(self.rope(&q, &cos, &sin)?).reshape((t, nh, hd))?;
            let k = op!(self.rope(&k, &cos, &sin)?).reshape((t, nkv, hd))?;
            let (kc, vc) = pool.layer(li)?;
            op!(kc.scatter_set(&write, &k, 0)?);
            op!(vc.scatter_set(&write, &v, 0)?);
            let mut outs = Vec::with_capacity(1 + plan.chunks.len());
            if let Some(d) = &dec {
                outs.push(self.decode_attention(&q.narrow(0, 0, d.batch)?, kc, vc, d)?);
            }
            for (c, (idx, mask)) in plan.chunks.iter().zip(&chunks) {
                outs.push(self.chunk_attention(&q.narrow(0, c.row, c.n)?, kc, vc, idx, mask)?);
            }
            let attn = if outs.len() == 1 { outs.swap_remove(0) } else { op!(Tensor::cat(&outs, 0)?) };
            x = op!((x + op!(layer.wo.forward(&attn)?))?);
            let h = op!(candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps as f32)?);
            let gate = op!(op!(layer.w_gate.forward(&h)?).silu()?);
            let up = op!(layer.w_up.forward(&h)?);
            x = op!((x + op!(layer.w_down.forward(&op!((gate * up)?))?))?);
        }
        Ok(x)
    }

    /// Attention of `batch` decoding sequences, one query token each: q `(batch, heads, head_dim)`.
    fn decode_attention(&self, q: &Tensor, kc: &Tensor, vc: &Tensor, d: &super::step::DecodeTensors) -> Result<Tensor> {
        let (nh, nkv, hd) = (self.cfg.heads, self.cfg.kv_heads, self.cfg.head_dim);
        let (b, l) = (d.batch, d.longest);
        let q = q.reshape((b, nkv, nh / nkv, hd))?;
        let k = op!(kc.index_select(&d.slots, 0)?.reshape((b, l, nkv, hd))?.transpose(1, 2)?.contiguous()?);
        let v = op!(vc.index_select(&d.slots, 0)?.reshape((b, l, nkv, hd))?.transpose(1, 2)?.contiguous()?);
        let att = op!(op!(q.matmul(&k.t()?)?).to_dtype(DType::F32)?);
        let att = op!(op!((att * (1.0 / (hd as f64).sqrt()))?).broadcast_add(&d.mask)?);
        let att = op!(op!(candle_nn::ops::softmax_last_dim(&att)?).to_dtype(self.dtype)?);
        op!(att.matmul(&v)?).reshape((b, nh * hd))
    }

    /// Causal attention of one prompt chunk of `n` tokens: q `(n, heads, head_dim)`.
    fn chunk_attention(&self, q: &Tensor, kc: &Tensor, vc: &Tensor, idx: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (nh, nkv, hd) = (self.cfg.heads, self.cfg.kv_heads, self.cfg.head_dim);
        let (n, rep, l) = (q.dim(0)?, nh / nkv, idx.dim(0)?);
        let k = op!(kc.index_select(idx, 0)?.transpose(0, 1)?.contiguous()?);
        let v = op!(vc.index_select(idx, 0)?.transpose(0, 1)?.contiguous()?);
        let q = op!(q.transpose(0, 1)?.contiguous()?).reshape((nkv, rep * n, hd))?;
        let att = op!(op!(q.matmul(&k.t()?)?).to_dtype(DType::F32)?);
        let att = op!((att * (1.0 / (hd as f64).sqrt()))?).reshape((nkv, rep, n, l))?;
        let att = op!(att.broadcast_add(mask)?).reshape((nkv, rep * n, l))?;
        let att = op!(op!(candle_nn::ops::softmax_last_dim(&att)?).to_dtype(self.dtype)?);
        let o = op!(att.matmul(&v)?).reshape((nh, n, hd))?;
        op!(o.transpose(0, 1)?.contiguous()?).reshape((n, nh * hd))
    }

    /// Rotates `x` `(tokens, heads, 1, head_dim)` by each token's own position (`cos`, `sin`:
    /// `(tokens, 1, head_dim / 2)`).
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if self.cfg.rope_interleaved {
            candle_nn::rotary_emb::rope_i(x, cos, sin)
        } else {
            candle_nn::rotary_emb::rope(x, cos, sin)
        }
    }
}

#[cfg(test)]
#[path = "candle_tests.rs"]
mod tests;
