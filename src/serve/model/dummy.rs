//! Dummy weights (`--load-format dummy`): the architectures they can take, and the random model on
//! either backend. Also the weight dtype choice (`--dtype`).

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use super::candle::{Layer, Llama};
use super::load::{bad, candle_error, LoadOptions};
use super::{cpu, LlamaConfig, LoadedModel, Model};
use crate::serve::template::ChatTemplate;
use crate::serve::tokenizer::TextTokenizer;
use crate::serve::ServeError;

/// The dtype of float weights and activations (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WeightDtype {
    /// bf16 on CUDA, f32 on the CPU; quantized GGUF weights always run with f32 activations.
    #[default]
    Auto,
    Bf16,
    F16,
    F32,
}

impl WeightDtype {
    /// The dtype on `device`.
    pub fn resolve(self, device: &Device) -> DType {
        match self {
            WeightDtype::Auto if device.is_cuda() => DType::BF16,
            WeightDtype::Auto | WeightDtype::F32 => DType::F32,
            WeightDtype::Bf16 => DType::BF16,
            WeightDtype::F16 => DType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::Auto => "auto",
            WeightDtype::Bf16 => "bf16",
            WeightDtype::F16 => "f16",
            WeightDtype::F32 => "f32",
        }
    }
}

/// Architectures `--load-format dummy` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "smollm2-135m")]
    Smollm2_135m,
    #[value(name = "llama-3.2-1b")]
    Llama32_1b,
    #[value(name = "llama-3.2-3b")]
    Llama32_3b,
    #[value(name = "llama-3.1-8b")]
    Llama31_8b,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Smollm2_135m => "smollm2-135m",
            Arch::Llama32_1b => "llama-3.2-1b",
            Arch::Llama32_3b => "llama-3.2-3b",
            Arch::Llama31_8b => "llama-3.1-8b",
        }
    }

    /// The architecture's shape, and whether the output layer shares the embedding.
    pub fn config(self) -> (LlamaConfig, bool) {
        let llama3 = |hidden, intermediate, layers, heads, tied| {
            (
                LlamaConfig {
                    hidden,
                    intermediate,
                    layers,
                    heads,
                    kv_heads: 8,
                    head_dim: hidden / heads,
                    vocab: 128_256,
                    rope_theta: 500_000.0,
                    rms_eps: 1e-5,
                    context: 8192,
                    rope_interleaved: false,
                    rope_freq_factors: None,
                },
                tied,
            )
        };
        match self {
            Arch::Smollm2_135m => (
                LlamaConfig {
                    hidden: 576,
                    intermediate: 1536,
                    layers: 30,
                    heads: 9,
                    kv_heads: 3,
                    head_dim: 64,
                    vocab: 49_152,
                    rope_theta: 100_000.0,
                    rms_eps: 1e-5,
                    context: 8192,
                    rope_interleaved: false,
                    rope_freq_factors: None,
                },
                true,
            ),
            Arch::Llama32_1b => llama3(2048, 8192, 16, 32, true),
            Arch::Llama32_3b => llama3(3072, 8192, 28, 24, true),
            Arch::Llama31_8b => llama3(4096, 14336, 32, 32, false),
        }
    }
}

pub(super) fn load_dummy(arch: Arch, device: &Device, opts: &LoadOptions) -> Result<LoadedModel, ServeError> {
    let (cfg, tied) = arch.config();
    let tokenizer = TextTokenizer::bytes();
    let template = ChatTemplate::new(None, "", "")?;
    let dtype = opts.dtype.resolve(device);
    if opts.cpu_kernels(device, dtype) {
        let m = cpu::random(cfg.clone(), tied).map_err(bad)?;
        return Ok(LoadedModel { model: Model::cpu(m, cfg), tokenizer, template, dummy: true });
    }
    let model = Model::candle(random_llama(cfg, tied, dtype, device)?);
    Ok(LoadedModel { model, tokenizer, template, dummy: true })
}

/// A llama of shape `cfg` with random weights in `dtype` on candle.
pub(crate) fn random_llama(cfg: LlamaConfig, tied: bool, dtype: DType, device: &Device) -> Result<Llama, ServeError> {
    let rnd = |rows: usize, cols: usize| -> Result<Tensor, ServeError> {
        Tensor::randn(0f32, 0.02, (rows, cols), device).and_then(|t| t.to_dtype(dtype)).map_err(candle_error("random weights"))
    };
    let ones = |n: usize| Tensor::ones(n, dtype, device).map_err(candle_error("random weights"));
    let (h, i, qd, kd) = (cfg.hidden, cfg.intermediate, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
    let embed = rnd(cfg.vocab, h)?;
    let mut layers = Vec::with_capacity(cfg.layers);
    for _ in 0..cfg.layers {
        layers.push(Layer {
            attn_norm: ones(h)?,
            wq: QMatMul::Tensor(rnd(qd, h)?),
            wk: QMatMul::Tensor(rnd(kd, h)?),
            wv: QMatMul::Tensor(rnd(kd, h)?),
            wo: QMatMul::Tensor(rnd(h, qd)?),
            ffn_norm: ones(h)?,
            w_gate: QMatMul::Tensor(rnd(i, h)?),
            w_up: QMatMul::Tensor(rnd(i, h)?),
            w_down: QMatMul::Tensor(rnd(h, i)?),
        });
    }
    let lm_head = if tied { QMatMul::Tensor(embed.clone()) } else { QMatMul::Tensor(rnd(cfg.vocab, h)?) };
    let norm = ones(h)?;
    Llama::new(cfg, embed, layers, norm, lm_head, dtype, device.clone()).map_err(candle_error("rotary tables"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_bf16_on_cuda_and_f32_on_the_cpu() {
        assert_eq!(WeightDtype::Auto.resolve(&Device::Cpu), DType::F32);
        assert_eq!(WeightDtype::Bf16.resolve(&Device::Cpu), DType::BF16);
        assert_eq!(WeightDtype::F16.resolve(&Device::Cpu), DType::F16);
        assert_eq!(WeightDtype::F32.resolve(&Device::Cpu), DType::F32);
    }
}
