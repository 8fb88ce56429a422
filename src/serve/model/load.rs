//! Building a [`Llama`] from a GGUF file, a Hugging Face safetensors folder, or dummy weights.

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Tensor};

use super::candle::{Layer, Llama};
pub use super::dummy::{Arch, WeightDtype};
use super::names::Naming;
use super::{cpu, LlamaConfig, Model};
use crate::serve::template::ChatTemplate;
use crate::serve::tokenizer::TextTokenizer;
use crate::serve::ServeError;

/// Where the weights come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Gguf(PathBuf),
    HfFolder(PathBuf),
    Dummy(Arch),
}

/// Everything the engine needs about a model.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: TextTokenizer,
    pub template: ChatTemplate,
    /// Whether the weights are random (`--load-format dummy`).
    pub dummy: bool,
}

/// Which code serves a CPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Our CPU kernels for f32 on the CPU (unless `GPUBENCH_CPU_BACKEND=candle`), candle elsewhere.
    #[default]
    Auto,
    /// candle's kernels, on any device.
    Candle,
}

/// How a model is loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub dtype: WeightDtype,
    pub backend: Backend,
}

impl LoadOptions {
    /// Whether our CPU kernels serve this model: on the CPU, in f32, unless candle is asked for.
    pub(super) fn cpu_kernels(&self, device: &Device, dtype: DType) -> bool {
        self.backend == Backend::Auto && dtype == DType::F32 && device.is_cpu() && cpu::enabled()
    }
}

pub(super) fn bad(msg: impl Into<String>) -> ServeError {
    ServeError::Model(msg.into())
}

/// Turns a candle error into a model error naming what was being read or built.
pub(super) fn candle_error(context: &str) -> impl Fn(candle_core::Error) -> ServeError + '_ {
    move |e| ServeError::Model(format!("{context}: {e}"))
}

/// Loads a model onto `device`.
pub fn load_model(source: &ModelSource, device: &Device) -> Result<LoadedModel, ServeError> {
    load_model_with(source, device, &LoadOptions::default())
}

/// Loads a model onto `device` with `opts`.
pub fn load_model_with(source: &ModelSource, device: &Device, opts: &LoadOptions) -> Result<LoadedModel, ServeError> {
    match source {
        ModelSource::Gguf(path) => load_gguf(path, device, opts),
        ModelSource::HfFolder(dir) => load_hf(dir, device, opts),
        ModelSource::Dummy(arch) => super::dummy::load_dummy(*arch, device, opts),
    }
}

fn load_gguf(path: &Path, device: &Device, opts: &LoadOptions) -> Result<LoadedModel, ServeError> {
    if !matches!(opts.dtype, WeightDtype::Auto | WeightDtype::F32) {
        return Err(bad(format!(
            "--dtype {} applies to safetensors and dummy weights; a GGUF keeps its quantized weights and runs f32 activations: drop --dtype",
            opts.dtype.name()
        )));
    }
    let mut file = std::fs::File::open(path)
        .map_err(|e| bad(format!("cannot open {}: {e}; check --model", path.display())))?;
    super::gguf_check::check_header(&mut file).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    std::io::Seek::rewind(&mut file).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| bad(format!("{} is not a readable GGUF file: {e}", path.display())))?;
    let md = &content.metadata;
    let arch = md.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    if arch != "llama" {
        return Err(bad(format!(
            "GGUF architecture `{arch}` is not supported (only `llama`: Llama, SmolLM, Mistral); pick a llama-family model"
        )));
    }
    let get = |k: &str| -> Result<u32, ServeError> {
        md.get(&format!("llama.{k}"))
            .and_then(|v| v.to_u32().ok())
            .ok_or_else(|| bad(format!("the GGUF lacks llama.{k}")))
    };
    let getf = |k: &str, d: f32| md.get(&format!("llama.{k}")).and_then(|v| v.to_f32().ok()).unwrap_or(d);
    let hidden = get("embedding_length")? as usize;
    let heads = get("attention.head_count")? as usize;
    let kv_heads = get("attention.head_count_kv").map(|v| v as usize).unwrap_or(heads);
    for (key, n) in [("llama.attention.head_count", heads), ("llama.attention.head_count_kv", kv_heads)] {
        if n == 0 {
            return Err(bad(format!("{key} is 0 in the GGUF; a model needs at least one attention head (the file is broken)")));
        }
    }
    let head_dim = get("rope.dimension_count").map(|v| v as usize).unwrap_or(hidden / heads);
    if head_dim * heads != hidden || !heads.is_multiple_of(kv_heads) {
        return Err(bad("the GGUF's head counts do not divide its embedding size; the file is not a plain llama"));
    }
    let tokenizer = TextTokenizer::from_gguf(&content)?;
    let template_src = md.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
    let tokens = md.get("tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok());
    let token_str = |id: Option<u32>| -> String {
        match (tokens, id) {
            (Some(t), Some(i)) => t.get(i as usize).and_then(|v| v.to_string().ok()).cloned().unwrap_or_default(),
            _ => String::new(),
        }
    };
    let bos = token_str(tokenizer.bos_id);
    let eos = token_str(tokenizer.eos_ids.first().copied());
    let template = ChatTemplate::new(template_src.as_deref(), &bos, &eos)?;
    let layers_n = get("block_count")? as usize;
    let mut read = |name: &str| content.tensor(&mut file, name, device).map_err(candle_error(name));
    let embed_q = read(Naming::Gguf.embed())?;
    let vocab = embed_q.shape().dims().first().copied().unwrap_or(0);
    if let Some(n) = tokens.map(Vec::len).filter(|&n| n > vocab) {
        return Err(bad(format!("tokenizer.ggml.tokens holds {n} tokens, more than the {vocab} rows of token_embd.weight (the file is broken)")));
    }
    let cfg = LlamaConfig {
        hidden,
        intermediate: get("feed_forward_length")? as usize,
        layers: layers_n,
        heads,
        kv_heads,
        head_dim,
        vocab,
        rope_theta: getf("rope.freq_base", 10_000.0),
        rms_eps: getf("attention.layer_norm_rms_epsilon", 1e-5) as f64,
        context: get("context_length").map(|v| v as usize).unwrap_or(4096),
        rope_interleaved: true,
        rope_freq_factors: None,
    };
    let mut cfg = cfg;
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        let t = content.tensor(&mut file, "rope_freqs.weight", &Device::Cpu).map_err(candle_error("rope_freqs.weight"))?;
        let k = t.dequantize(&Device::Cpu).and_then(|t| t.flatten_all()?.to_vec1::<f32>()).map_err(candle_error("rope_freqs.weight"))?;
        if k.len() != cfg.head_dim / 2 {
            return Err(bad(format!("rope_freqs.weight has {} values for a head size of {}", k.len(), cfg.head_dim)));
        }
        cfg.rope_freq_factors = Some(k);
    }
    if opts.cpu_kernels(device, DType::F32) {
        drop(embed_q);
        let has_output = content.tensor_infos.contains_key(Naming::Gguf.lm_head());
        let mut read = |name: &str| content.tensor(&mut file, name, &Device::Cpu).map_err(|e| format!("{name}: {e}"));
        let m = cpu::from_gguf(cfg.clone(), &mut read, has_output).map_err(bad)?;
        return Ok(LoadedModel { model: Model::cpu(m, cfg), tokenizer, template, dummy: false });
    }
    let mut read = |name: &str| content.tensor(&mut file, name, device).map_err(candle_error(name));
    let embed = embed_q.dequantize(device).map_err(candle_error(Naming::Gguf.embed()))?;
    let mut layers = Vec::with_capacity(layers_n);
    for i in 0..layers_n {
        let n = Naming::Gguf.layer(i);
        let mut q = |name: &str| -> Result<QMatMul, ServeError> { QMatMul::from_qtensor(read(name)?).map_err(candle_error(name)) };
        let (wq, wk, wv, wo) = (q(&n.q)?, q(&n.k)?, q(&n.v)?, q(&n.o)?);
        let (w_gate, w_up, w_down) = (q(&n.gate)?, q(&n.up)?, q(&n.down)?);
        let mut norm = |name: &str| -> Result<Tensor, ServeError> { read(name)?.dequantize(device).map_err(candle_error(name)) };
        let (attn_norm, ffn_norm) = (norm(&n.attn_norm)?, norm(&n.ffn_norm)?);
        layers.push(Layer { attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down });
    }
    let norm = read(Naming::Gguf.norm())?.dequantize(device).map_err(candle_error(Naming::Gguf.norm()))?;
    let lm_head = if content.tensor_infos.contains_key(Naming::Gguf.lm_head()) {
        QMatMul::from_qtensor(read(Naming::Gguf.lm_head())?).map_err(candle_error(Naming::Gguf.lm_head()))?
    } else {
        QMatMul::from_qtensor(embed_q).map_err(candle_error(Naming::Gguf.embed()))?
    };
    let model = Model::candle(Llama::new(cfg, embed, layers, norm, lm_head, DType::F32, device.clone()).map_err(candle_error("rotary tables"))?);
    Ok(LoadedModel { model, tokenizer, template, dummy: false })
}

fn load_hf(dir: &Path, device: &Device, opts: &LoadOptions) -> Result<LoadedModel, ServeError> {
    let dtype = opts.dtype.resolve(device);
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| bad(format!("cannot read {}: {e}; --model must be a GGUF file or a folder with config.json", cfg_path.display())))?;
    let c: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("{} is not valid JSON: {e}", cfg_path.display())))?;
    let arch = c["model_type"].as_str().unwrap_or("");
    if !matches!(arch, "llama" | "mistral") {
        return Err(bad(format!("model_type `{arch}` in config.json is not supported (llama, mistral)")));
    }
    let num = |k: &str| c[k].as_u64().map(|v| v as usize).ok_or_else(|| bad(format!("config.json lacks `{k}`")));
    let hidden = num("hidden_size")?;
    let heads = num("num_attention_heads")?;
    let cfg = LlamaConfig {
        hidden,
        intermediate: num("intermediate_size")?,
        layers: num("num_hidden_layers")?,
        heads,
        kv_heads: num("num_key_value_heads").unwrap_or(heads),
        head_dim: num("head_dim").unwrap_or(hidden / heads),
        vocab: num("vocab_size")?,
        rope_theta: c["rope_theta"].as_f64().unwrap_or(10_000.0) as f32,
        rms_eps: c["rms_norm_eps"].as_f64().unwrap_or(1e-5),
        context: num("max_position_embeddings").unwrap_or(4096).min(32_768),
        rope_interleaved: false,
        rope_freq_factors: None,
    };
    let mut cfg = cfg;
    cfg.rope_freq_factors = rope_scaling(&c, &cfg)?;
    let tied = c["tie_word_embeddings"].as_bool().unwrap_or(false);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(bad(format!("{} holds no *.safetensors files", dir.display())));
    }
    // SAFETY: the files are memory-mapped read-only; they must not change while we load them.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(candle_error("safetensors"))?;
    let get = |name: &str| -> Result<Tensor, ServeError> {
        st.load(name, device).and_then(|t| t.to_dtype(dtype)).map_err(candle_error(name))
    };
    let tokenizer = TextTokenizer::from_hf_folder(dir, &c)?;
    let tc: serde_json::Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let token_text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).unwrap_or("").to_string(),
        _ => String::new(),
    };
    let template = ChatTemplate::new(tc["chat_template"].as_str(), &token_text(&tc["bos_token"]), &token_text(&tc["eos_token"]))?;
    if opts.cpu_kernels(device, dtype) {
        let raw = |name: &str| st.load(name, &Device::Cpu).map_err(|e| format!("{name}: {e}"));
        let m = cpu::from_hf(cfg.clone(), &raw, tied).map_err(bad)?;
        return Ok(LoadedModel { model: Model::cpu(m, cfg), tokenizer, template, dummy: false });
    }
    let lin = |name: &str| -> Result<QMatMul, ServeError> { Ok(QMatMul::Tensor(get(name)?)) };
    let embed = get(Naming::HuggingFace.embed())?;
    let mut layers = Vec::with_capacity(cfg.layers);
    for i in 0..cfg.layers {
        let n = Naming::HuggingFace.layer(i);
        layers.push(Layer {
            attn_norm: get(&n.attn_norm)?,
            wq: lin(&n.q)?,
            wk: lin(&n.k)?,
            wv: lin(&n.v)?,
            wo: lin(&n.o)?,
            ffn_norm: get(&n.ffn_norm)?,
            w_gate: lin(&n.gate)?,
            w_up: lin(&n.up)?,
            w_down: lin(&n.down)?,
        });
    }
    let norm = get(Naming::HuggingFace.norm())?;
    let lm_head = if tied { QMatMul::Tensor(embed.clone()) } else { lin(Naming::HuggingFace.lm_head())? };
    let model = Model::candle(Llama::new(cfg, embed, layers, norm, lm_head, dtype, device.clone()).map_err(candle_error("rotary tables"))?);
    Ok(LoadedModel { model, tokenizer, template, dummy: false })
}

/// Frequency divisors from config.json's `rope_scaling` (`llama3` and `linear`); other kinds are
/// refused rather than run wrong.
fn rope_scaling(c: &serde_json::Value, cfg: &LlamaConfig) -> Result<Option<Vec<f32>>, ServeError> {
    let rs = &c["rope_scaling"];
    if rs.is_null() {
        return Ok(None);
    }
    let kind = rs["rope_type"].as_str().or_else(|| rs["type"].as_str()).unwrap_or("");
    let f = |k: &str| rs[k].as_f64().map(|v| v as f32).ok_or_else(|| bad(format!("config.json rope_scaling lacks `{k}`")));
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(vec![f("factor")?; cfg.head_dim / 2])),
        "llama3" => Ok(Some(gpubench_cpu::llama3_freq_factors(
            cfg.rope_theta,
            cfg.head_dim,
            f("factor")?,
            f("low_freq_factor")?,
            f("high_freq_factor")?,
            f("original_max_position_embeddings")?,
        ))),
        other => Err(bad(format!("config.json rope_scaling `{other}` is not supported (llama3, linear); pick a model without it"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::Value;

    /// A GGUF file of metadata alone, on disk.
    fn gguf_file(md: &[(&str, Value)]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(f.as_file_mut(), &refs, &[]).unwrap();
        f
    }

    fn load_err(md: &[(&str, Value)]) -> String {
        let f = gguf_file(md);
        match load_model(&ModelSource::Gguf(f.path().to_path_buf()), &Device::Cpu) {
            Ok(_) => panic!("a broken GGUF loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn hostile_gguf_metadata_is_an_error_naming_the_key() {
        let base = |heads: u32, kv: u32| {
            vec![
                ("general.architecture", Value::String("llama".into())),
                ("llama.embedding_length", Value::U32(64)),
                ("llama.attention.head_count", Value::U32(heads)),
                ("llama.attention.head_count_kv", Value::U32(kv)),
            ]
        };
        let err = load_err(&base(0, 0));
        assert!(err.contains("llama.attention.head_count "), "{err}");
        let err = load_err(&base(4, 0));
        assert!(err.contains("llama.attention.head_count_kv"), "{err}");
        let mut md = base(4, 4);
        md.push(("general.alignment", Value::U32(0)));
        let err = load_err(&md);
        assert!(err.contains("general.alignment"), "{err}");
    }

    #[test]
    fn rope_scaling_from_config_json() {
        let (cfg, _) = Arch::Llama32_1b.config();
        let none = serde_json::json!({});
        assert_eq!(rope_scaling(&none, &cfg).unwrap(), None);
        let llama3 = serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let k = rope_scaling(&llama3, &cfg).unwrap().unwrap();
        assert_eq!(k.len(), cfg.head_dim / 2);
        assert!((k[0] - 1.0).abs() < 1e-6 && (k[k.len() - 1] - 32.0).abs() < 1e-3);
        let linear = serde_json::json!({"rope_scaling": {"type": "linear", "factor": 2.0}});
        assert_eq!(rope_scaling(&linear, &cfg).unwrap(), Some(vec![2.0; cfg.head_dim / 2]));
        let yarn = serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
        let err = rope_scaling(&yarn, &cfg).unwrap_err().to_string();
        assert!(err.contains("yarn") && err.contains("not supported"), "{err}");
        let broken = serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}});
        assert!(rope_scaling(&broken, &cfg).unwrap_err().to_string().contains("low_freq_factor"));
    }
}
