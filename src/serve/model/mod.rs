//! The llama-family forward pass, written for continuous batching: every sequence keeps its own
//! KV cache and positions, and the linear layers run once per step over the tokens of all
//! sequences in the step.
//!
//! Two backends: on the CPU our own kernels (`cpu`), on CUDA candle's tensors (`candle`).

mod candle;
mod dummy;
mod gguf_check;
pub mod cpu;
mod kv;
mod load;
mod names;
mod step;

pub use candle::ops as candle_ops;
pub use kv::BLOCK as KV_BLOCK;
pub use load::{load_model, load_model_with, Arch, Backend as BackendChoice, LoadOptions, LoadedModel, ModelSource, WeightDtype};

pub use gpubench_cpu::LlamaConfig;

enum Backend {
    Cpu(Box<cpu::CpuLlama>),
    Candle(candle::Llama),
}

/// A loaded model, on whichever backend serves its device.
pub struct Model {
    /// The shape; `context` may be lowered after loading (`--max-model-len`).
    pub cfg: LlamaConfig,
    backend: Backend,
}

/// One sequence's KV cache, of the backend that made it.
pub enum SeqCache {
    Cpu(cpu::KvCache),
    Candle(kv::SeqCache),
}

impl SeqCache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        match self {
            SeqCache::Cpu(c) => c.len(),
            SeqCache::Candle(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One sequence's share of a forward step: the new tokens (a prefill chunk or one decode token).
pub struct StepInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut SeqCache,
    /// Whether the caller needs logits for the last token (the end of a prompt, or decode).
    pub want_logits: bool,
}

impl Model {
    pub(crate) fn cpu(m: cpu::CpuLlama, cfg: LlamaConfig) -> Self {
        Self { cfg, backend: Backend::Cpu(Box::new(m)) }
    }

    pub(crate) fn candle(m: candle::Llama) -> Self {
        Self { cfg: m.cfg.clone(), backend: Backend::Candle(m) }
    }

    /// Bytes the weights take in memory.
    pub fn weight_bytes(&self) -> usize {
        match &self.backend {
            Backend::Cpu(m) => m.weight_bytes(),
            Backend::Candle(m) => m.weight_bytes(),
        }
    }

    /// Which code runs the forward pass (for logs).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Cpu(m) => m.describe(),
            Backend::Candle(m) => format!("candle on {:?}, {:?}", m.device, m.dtype),
        }
    }

    /// Bytes of KV cache one token takes.
    pub fn kv_bytes_per_token(&self) -> usize {
        match &self.backend {
            Backend::Cpu(_) => self.cfg.kv_bytes_per_token(),
            Backend::Candle(m) => m.kv_bytes_per_token(),
        }
    }

    /// Bounds the KV cache at `tokens` slots; with `allocate`, the candle backend takes them now
    /// (the CPU kernels' caches grow per sequence, inside the same bound kept by the engine).
    pub fn set_kv_capacity(&self, tokens: usize, allocate: bool) -> candle_core::Result<()> {
        match &self.backend {
            Backend::Cpu(_) => Ok(()),
            Backend::Candle(m) => m.set_kv_capacity(tokens, allocate),
        }
    }

    /// Whether the forward runs on candle.
    pub fn is_candle(&self) -> bool {
        matches!(self.backend, Backend::Candle(_))
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> SeqCache {
        match &self.backend {
            Backend::Cpu(m) => SeqCache::Cpu(m.new_cache()),
            Backend::Candle(m) => SeqCache::Candle(m.new_cache()),
        }
    }

    /// Runs one step over all `inputs`, appending their tokens to their caches. Returns one row
    /// of logits per input with `want_logits`, in order.
    pub fn forward(&self, inputs: &mut [StepInput<'_>]) -> candle_core::Result<Vec<Vec<f32>>> {
        for inp in inputs.iter() {
            if inp.cache.len() + inp.tokens.len() > self.cfg.context {
                candle_core::bail!("sequence of {} tokens exceeds the context of {}", inp.cache.len() + inp.tokens.len(), self.cfg.context);
            }
        }
        match &self.backend {
            Backend::Cpu(m) => {
                let mut spans = Vec::with_capacity(inputs.len());
                for inp in inputs.iter_mut() {
                    let SeqCache::Cpu(cache) = &mut *inp.cache else { candle_core::bail!("a candle cache given to the CPU model") };
                    spans.push(cpu::Span { tokens: inp.tokens, cache, want_logits: inp.want_logits });
                }
                m.forward(&mut spans).map_err(candle_core::Error::msg)
            }
            Backend::Candle(m) => {
                let mut cin = Vec::with_capacity(inputs.len());
                for inp in inputs.iter_mut() {
                    let SeqCache::Candle(cache) = &mut *inp.cache else { candle_core::bail!("a CPU cache given to the candle model") };
                    cin.push(candle::CandleInput { tokens: inp.tokens, cache, want_logits: inp.want_logits });
                }
                m.forward(&mut cin)
            }
        }
    }
}

/// Index of the largest value (greedy decoding).
pub fn argmax(logits: &[f32]) -> u32 {
    // The largest value in eight lanes (this vectorizes), then its first position.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = logits.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            if v > *l {
                *l = v;
            }
        }
    }
    let max = lanes.iter().chain(chunks.remainder()).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    logits.iter().position(|&v| v == max).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_is_the_first_largest_anywhere_in_the_row() {
        let mut v = vec![0.5f32; 21];
        assert_eq!(argmax(&v), 0);
        v[19] = 2.0; // in the remainder after whole chunks of eight
        assert_eq!(argmax(&v), 19);
        v[3] = 2.0; // a tie: the first wins
        assert_eq!(argmax(&v), 3);
        v[0] = f32::NAN; // NaN never wins
        assert_eq!(argmax(&v), 3);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
        assert_eq!(argmax(&[]), 0);
    }
}
