//! Building the CPU model (the `gpubench-cpu` crate) from GGUF tensors, Hugging Face tensors, or
//! random weights.
//!
//! Q4_1 and Q8_0 stay as they are (the GGUF blocks, unchanged); F32, F16 and BF16 become f32;
//! other GGUF formats are dequantized and requantized to Q8_0 (a rounding change only).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use gpubench_cpu::quant::{quantize_q8_0, BlockQ4_1, BlockQ8_0, Linear, Weights, QK};
pub use gpubench_cpu::{set_threads, CpuLayer, CpuLlama, KvCache, LlamaConfig, Span};

use super::names::Naming;

/// Whether the CPU kernels serve CPU models (`GPUBENCH_CPU_BACKEND=candle` selects candle's
/// generic CPU path instead, for comparisons).
pub fn enabled() -> bool {
    std::env::var("GPUBENCH_CPU_BACKEND").map(|v| v != "candle").unwrap_or(true)
}

/// Building the CPU model: errors are messages naming the tensor.
type BuildResult<T> = Result<T, String>;

/// A GGUF matrix (rows = outputs) in the CPU kernels' format.
pub fn linear_from_qtensor(qt: &QTensor, name: &str) -> BuildResult<Linear> {
    let dims = qt.shape().dims();
    let &[rows, cols] = dims else { return Err(format!("{name}: expected a matrix, got shape {dims:?}")) };
    let err = |e: candle_core::Error| format!("{name}: {e}");
    let w = match qt.dtype() {
        GgmlDType::Q4_1 => {
            let data = qt.data().map_err(err)?;
            if data.len() != rows * cols / QK * 20 {
                return Err(format!("{name}: {} bytes of Q4_1 data for {rows}x{cols}", data.len()));
            }
            Weights::Q4_1(
                data.chunks_exact(20)
                    .map(|b| {
                        let mut qs = [0u8; 16];
                        qs.copy_from_slice(&b[4..20]);
                        BlockQ4_1 { d: u16::from_le_bytes([b[0], b[1]]), m: u16::from_le_bytes([b[2], b[3]]), qs }
                    })
                    .collect(),
            )
        }
        GgmlDType::Q8_0 => {
            let data = qt.data().map_err(err)?;
            if data.len() != rows * cols / QK * 34 {
                return Err(format!("{name}: {} bytes of Q8_0 data for {rows}x{cols}", data.len()));
            }
            Weights::Q8_0(
                data.chunks_exact(34)
                    .map(|b| {
                        let mut qs = [0i8; 32];
                        for (q, &x) in qs.iter_mut().zip(&b[2..34]) {
                            *q = x as i8;
                        }
                        BlockQ8_0 { d: u16::from_le_bytes([b[0], b[1]]), qs }
                    })
                    .collect(),
            )
        }
        dt => {
            let values = qt.dequantize(&Device::Cpu).and_then(|t| t.flatten_all()?.to_vec1::<f32>()).map_err(err)?;
            if matches!(dt, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) || cols % QK != 0 {
                Weights::F32(values)
            } else {
                Weights::Q8_0(quantize_q8_0(&values))
            }
        }
    };
    Ok(Linear { rows, cols, w })
}

/// A Hugging Face matrix as f32.
pub fn linear_from_tensor(t: &Tensor, name: &str) -> BuildResult<Linear> {
    let &[rows, cols] = t.dims() else { return Err(format!("{name}: expected a matrix, got shape {:?}", t.dims())) };
    let values = t.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()).map_err(|e| format!("{name}: {e}"))?;
    Ok(Linear { rows, cols, w: Weights::F32(values) })
}

/// Stacks projections that share their input; mixed formats are brought to Q8_0 first.
fn fuse(parts: Vec<Linear>, name: &str) -> BuildResult<Linear> {
    let same = parts.windows(2).all(|w| w[0].format() == w[1].format());
    let parts = if same {
        parts
    } else {
        parts
            .into_iter()
            .map(|p| {
                if p.cols % QK != 0 {
                    return Err(format!("{name}: mixed formats with {} columns cannot be fused", p.cols));
                }
                let mut values = vec![0f32; p.rows * p.cols];
                for r in 0..p.rows {
                    p.row_f32(r, &mut values[r * p.cols..(r + 1) * p.cols]);
                }
                Ok(Linear { rows: p.rows, cols: p.cols, w: Weights::Q8_0(quantize_q8_0(&values)) })
            })
            .collect::<BuildResult<Vec<_>>>()?
    };
    Linear::stack(parts).ok_or_else(|| format!("{name}: projections of different widths"))
}

fn check(l: &Linear, rows: usize, cols: usize, name: &str) -> BuildResult<()> {
    if (l.rows, l.cols) != (rows, cols) {
        return Err(format!("{name}: shape {}x{} where the config says {rows}x{cols}", l.rows, l.cols));
    }
    Ok(())
}

/// Matrices of one layer, by role.
pub struct LayerParts {
    pub attn_norm: Vec<f32>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Vec<f32>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// Assembles the model, checking every shape against the config.
pub fn assemble(cfg: LlamaConfig, embed: Linear, parts: Vec<LayerParts>, norm: Vec<f32>, lm_head: Option<Linear>) -> BuildResult<CpuLlama> {
    let (h, i) = (cfg.hidden, cfg.intermediate);
    let (qd, kvd) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
    check(&embed, cfg.vocab, h, "token embedding")?;
    if let Some(head) = &lm_head {
        check(head, cfg.vocab, h, "output")?;
    }
    if norm.len() != h {
        return Err(format!("output norm has {} values for a hidden size of {h}", norm.len()));
    }
    let mut layers = Vec::with_capacity(parts.len());
    for (n, p) in parts.into_iter().enumerate() {
        check(&p.q, qd, h, &format!("layer {n} q"))?;
        check(&p.k, kvd, h, &format!("layer {n} k"))?;
        check(&p.v, kvd, h, &format!("layer {n} v"))?;
        check(&p.o, h, qd, &format!("layer {n} o"))?;
        check(&p.gate, i, h, &format!("layer {n} gate"))?;
        check(&p.up, i, h, &format!("layer {n} up"))?;
        check(&p.down, h, i, &format!("layer {n} down"))?;
        if p.attn_norm.len() != h || p.ffn_norm.len() != h {
            return Err(format!("layer {n}: norm weights do not match the hidden size {h}"));
        }
        layers.push(CpuLayer {
            attn_norm: p.attn_norm,
            qkv: fuse(vec![p.q, p.k, p.v], &format!("layer {n} q/k/v"))?,
            wo: p.o,
            ffn_norm: p.ffn_norm,
            gate_up: fuse(vec![p.gate, p.up], &format!("layer {n} gate/up"))?,
            down: p.down,
        });
    }
    Ok(CpuLlama::new(cfg, embed, layers, norm, lm_head))
}

/// Builds the model from a GGUF file's tensors (`read` returns one by name).
pub fn from_gguf(cfg: LlamaConfig, read: &mut dyn FnMut(&str) -> BuildResult<QTensor>, has_output: bool) -> BuildResult<CpuLlama> {
    let vector = |qt: QTensor, name: &str| -> BuildResult<Vec<f32>> {
        qt.dequantize(&Device::Cpu).and_then(|t| t.flatten_all()?.to_vec1::<f32>()).map_err(|e| format!("{name}: {e}"))
    };
    let names = Naming::Gguf;
    let embed = linear_from_qtensor(&read(names.embed())?, names.embed())?;
    let mut parts = Vec::with_capacity(cfg.layers);
    for i in 0..cfg.layers {
        let n = names.layer(i);
        let mut lin = |name: &str| -> BuildResult<Linear> { linear_from_qtensor(&read(name)?, name) };
        let (q, k, v, o) = (lin(&n.q)?, lin(&n.k)?, lin(&n.v)?, lin(&n.o)?);
        let (gate, up, down) = (lin(&n.gate)?, lin(&n.up)?, lin(&n.down)?);
        let attn_norm = vector(read(&n.attn_norm)?, &n.attn_norm)?;
        let ffn_norm = vector(read(&n.ffn_norm)?, &n.ffn_norm)?;
        parts.push(LayerParts { attn_norm, q, k, v, o, ffn_norm, gate, up, down });
    }
    let norm = vector(read(names.norm())?, names.norm())?;
    let lm_head = if has_output { Some(linear_from_qtensor(&read(names.lm_head())?, names.lm_head())?) } else { None };
    assemble(cfg, embed, parts, norm, lm_head)
}

/// Builds the model from Hugging Face tensors (`get` returns one by name, any float dtype).
pub fn from_hf(cfg: LlamaConfig, get: &dyn Fn(&str) -> BuildResult<Tensor>, tied: bool) -> BuildResult<CpuLlama> {
    let lin = |name: &str| linear_from_tensor(&get(name)?, name);
    let vector = |name: &str| -> BuildResult<Vec<f32>> {
        get(name)?.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()).map_err(|e| format!("{name}: {e}"))
    };
    let names = Naming::HuggingFace;
    let embed = lin(names.embed())?;
    let mut parts = Vec::with_capacity(cfg.layers);
    for i in 0..cfg.layers {
        let n = names.layer(i);
        parts.push(LayerParts {
            attn_norm: vector(&n.attn_norm)?,
            q: lin(&n.q)?,
            k: lin(&n.k)?,
            v: lin(&n.v)?,
            o: lin(&n.o)?,
            ffn_norm: vector(&n.ffn_norm)?,
            gate: lin(&n.gate)?,
            up: lin(&n.up)?,
            down: lin(&n.down)?,
        });
    }
    let norm = vector(names.norm())?;
    let lm_head = if tied { None } else { Some(lin(names.lm_head())?) };
    assemble(cfg, embed, parts, norm, lm_head)
}

/// Random weights in the default model's formats (Q4_1 layers, Q8_0 embedding), for speed
/// measurements of an architecture whose weights are not at hand.
pub fn random(cfg: LlamaConfig, tied: bool) -> BuildResult<CpuLlama> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut q4 = |rows: usize, cols: usize| -> Linear {
        let blocks = (0..rows * cols / QK)
            .map(|_| {
                let (a, b) = (next(), next());
                let mut qs = [0u8; 16];
                qs[..8].copy_from_slice(&a.to_le_bytes());
                qs[8..].copy_from_slice(&b.to_le_bytes());
                BlockQ4_1::new(0.004, -0.03, qs)
            })
            .collect();
        Linear { rows, cols, w: Weights::Q4_1(blocks) }
    };
    let (h, i) = (cfg.hidden, cfg.intermediate);
    let (qd, kvd) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
    let mut parts = Vec::with_capacity(cfg.layers);
    for _ in 0..cfg.layers {
        parts.push(LayerParts {
            attn_norm: vec![1.0; h],
            q: q4(qd, h),
            k: q4(kvd, h),
            v: q4(kvd, h),
            o: q4(h, qd),
            ffn_norm: vec![1.0; h],
            gate: q4(i, h),
            up: q4(i, h),
            down: q4(h, i),
        });
    }
    let q8 = |rows: usize, cols: usize| -> Linear {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let blocks = (0..rows * cols / QK)
            .map(|_| {
                let mut qs = [0i8; 32];
                for q in qs.iter_mut() {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    *q = (s >> 56) as i8;
                }
                BlockQ8_0::new(0.0002, qs)
            })
            .collect();
        Linear { rows, cols, w: Weights::Q8_0(blocks) }
    };
    let embed = q8(cfg.vocab, h);
    let lm_head = if tied { None } else { Some(q8(cfg.vocab, h)) };
    assemble(cfg, embed, parts, vec![1.0; h], lm_head)
}
