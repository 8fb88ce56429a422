//! The llama forward on candle tensors (the CUDA path, and CPU with `GPUBENCH_CPU_BACKEND=candle`):
//! per-sequence KV caches and positions, linear layers batched across all sequences of a step.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Result, Tensor};

use super::kv::SeqCache;
use super::LlamaConfig;

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

/// Model weights plus the rotary tables.
pub struct Llama {
    pub cfg: LlamaConfig,
    pub(crate) embed: Tensor,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: QMatMul,
    cos: Tensor,
    sin: Tensor,
    pub device: Device,
}

impl Llama {
    pub(crate) fn new(
        cfg: LlamaConfig,
        embed: Tensor,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: QMatMul,
        device: Device,
    ) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv: Vec<f32> = cfg.inv_freq();
        let inv = Tensor::from_vec(inv, (1, half), &device)?;
        let pos = Tensor::arange(0u32, cfg.context as u32, &device)?.to_dtype(DType::F32)?.reshape((cfg.context, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Self { cos: freqs.cos()?, sin: freqs.sin()?, cfg, embed, layers, norm, lm_head, device })
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
        t(&self.embed) + layers + t(&self.norm) + q(&self.lm_head)
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> SeqCache {
        SeqCache::new(self.cfg.layers)
    }

    /// Runs one step over all `inputs`, appending their tokens to their caches. Returns one row
    /// of logits per input with `want_logits`, in order.
    pub fn forward(&self, inputs: &mut [CandleInput<'_>]) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let rep = nh / nkv;
        let mut ids = Vec::new();
        let mut pos = Vec::new();
        let mut spans = Vec::with_capacity(inputs.len());
        let mut last_rows = Vec::new();
        for inp in inputs.iter_mut() {
            let start = inp.cache.len();
            let n = inp.tokens.len();
            if n == 0 {
                candle_core::bail!("empty step input");
            }
            if start + n > cfg.context {
                candle_core::bail!("sequence of {} tokens exceeds the context of {}", start + n, cfg.context);
            }
            spans.push((ids.len(), n, start));
            ids.extend_from_slice(inp.tokens);
            pos.extend((start..start + n).map(|p| p as u32));
            if inp.want_logits {
                last_rows.push((ids.len() - 1) as u32);
            }
            inp.cache.reserve(start + n, nkv, hd, &self.device)?;
        }
        let t = ids.len();
        let ids = Tensor::from_vec(ids, (t,), &self.device)?;
        let pos = Tensor::from_vec(pos, (t,), &self.device)?;
        let cos = self.cos.index_select(&pos, 0)?;
        let sin = self.sin.index_select(&pos, 0)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let masks: Vec<Option<Tensor>> =
            spans.iter().map(|&(_, n, start)| causal_mask(n, start, &self.device)).collect::<Result<_>>()?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps as f32)?;
            let q = layer.wq.forward(&h)?;
            let k = layer.wk.forward(&h)?;
            let v = layer.wv.forward(&h)?;
            let q = self.rope(&q.reshape((t, nh, hd))?.transpose(0, 1)?.contiguous()?, &cos, &sin)?;
            let k = self.rope(&k.reshape((t, nkv, hd))?.transpose(0, 1)?.contiguous()?, &cos, &sin)?;
            let v = v.reshape((t, nkv, hd))?.transpose(0, 1)?.contiguous()?;
            let mut outs = Vec::with_capacity(spans.len());
            for (si, &(off, n, start)) in spans.iter().enumerate() {
                let cache = &mut inputs[si].cache;
                cache.append(li, &k.narrow(1, off, n)?.contiguous()?, &v.narrow(1, off, n)?.contiguous()?, start)?;
                let (kc, vc) = cache.view(li, start + n)?;
                let qs = q.narrow(1, off, n)?.contiguous()?.reshape((nkv, rep * n, hd))?;
                let mut att = (qs.matmul(&kc.t()?)? * scale)?;
                if let Some(mask) = &masks[si] {
                    let l = start + n;
                    att = att.reshape((nkv, rep, n, l))?.broadcast_add(mask)?.reshape((nkv, rep * n, l))?;
                }
                let att = candle_nn::ops::softmax_last_dim(&att)?;
                let o = att.matmul(&vc)?.reshape((nh, n, hd))?.transpose(0, 1)?.reshape((n, nh * hd))?;
                outs.push(o);
            }
            let attn = if outs.len() == 1 { outs.swap_remove(0) } else { Tensor::cat(&outs, 0)? };
            x = (x + layer.wo.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps as f32)?;
            let gate = layer.w_gate.forward(&h)?.silu()?;
            let up = layer.w_up.forward(&h)?;
            x = (x + layer.w_down.forward(&(gate * up)?)?)?;
        }
        for (inp, &(_, n, start)) in inputs.iter_mut().zip(&spans) {
            inp.cache.set_len(start + n);
        }
        if last_rows.is_empty() {
            return Ok(Vec::new());
        }
        let rows = Tensor::from_vec(last_rows.clone(), (last_rows.len(),), &self.device)?;
        let last = x.index_select(&rows, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, cfg.rms_eps as f32)?;
        let logits = self.lm_head.forward(&last)?.to_dtype(DType::F32)?;
        logits.to_vec2::<f32>()
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x = x.unsqueeze(0)?;
        let y = if self.cfg.rope_interleaved {
            candle_nn::rotary_emb::rope_i(&x, cos, sin)?
        } else {
            candle_nn::rotary_emb::rope(&x, cos, sin)?
        };
        y.squeeze(0)
    }
}

/// Additive mask (n, start + n) letting chunk token i see cache positions up to start + i.
fn causal_mask(n: usize, start: usize, device: &Device) -> Result<Option<Tensor>> {
    if n == 1 {
        return Ok(None);
    }
    let l = start + n;
    let data: Vec<f32> =
        (0..n).flat_map(|i| (0..l).map(move |j| if j > start + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Some(Tensor::from_vec(data, (n, l), device)?))
}

