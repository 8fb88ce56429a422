//! A Hugging Face folder (config.json, tokenizer.json, model.safetensors) loads with the same model
//! code; a tiny random llama is written here so the test needs no download.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use gpubench::serve::model::{argmax, load_model, ModelSource, StepInput};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::Tokenizer;

fn write_tiny_llama(dir: &std::path::Path) {
    let words = ["<unk>", "</s>", "hello", "world", "the", "cat", "sat", "on", "mat"];
    let vocab: ahash::AHashMap<String, u32> = words.iter().enumerate().map(|(i, w)| (w.to_string(), i as u32)).collect();
    let model = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().unwrap();
    let mut tk = Tokenizer::new(model);
    tk.with_pre_tokenizer(Some(Whitespace {}));
    tk.save(dir.join("tokenizer.json"), false).unwrap();
    let (v, h, i, layers, heads, kv) = (words.len(), 32, 64, 2, 4, 2);
    let hd = h / heads;
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": h, "intermediate_size": i, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": v, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 64, "tie_word_embeddings": true, "eos_token_id": 1,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let dev = Device::Cpu;
    let r = |rows: usize, cols: usize| Tensor::randn(0f32, 0.5, (rows, cols), &dev).unwrap().to_dtype(DType::BF16).unwrap();
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), r(v, h));
    t.insert("model.norm.weight".into(), Tensor::ones(h, DType::BF16, &dev).unwrap());
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        t.insert(format!("{p}.input_layernorm.weight"), Tensor::ones(h, DType::BF16, &dev).unwrap());
        t.insert(format!("{p}.post_attention_layernorm.weight"), Tensor::ones(h, DType::BF16, &dev).unwrap());
        t.insert(format!("{p}.self_attn.q_proj.weight"), r(heads * hd, h));
        t.insert(format!("{p}.self_attn.k_proj.weight"), r(kv * hd, h));
        t.insert(format!("{p}.self_attn.v_proj.weight"), r(kv * hd, h));
        t.insert(format!("{p}.self_attn.o_proj.weight"), r(h, heads * hd));
        t.insert(format!("{p}.mlp.gate_proj.weight"), r(i, h));
        t.insert(format!("{p}.mlp.up_proj.weight"), r(i, h));
        t.insert(format!("{p}.mlp.down_proj.weight"), r(h, i));
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

#[test]
fn hf_folder_loads_and_batches_like_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path());
    let m = load_model(&ModelSource::HfFolder(dir.path().to_path_buf()), &Device::Cpu).unwrap();
    assert!(!m.dummy);
    assert_eq!(m.model.cfg.vocab, 9);
    assert!(!m.model.cfg.rope_interleaved, "Hugging Face weights rotate halves");
    assert_eq!(m.tokenizer.encode("hello world").unwrap(), vec![2, 3]);
    assert!(m.tokenizer.eos_ids.contains(&1));
    // ChatML fallback: the folder has no tokenizer_config.json.
    let prompt = m.template.render(&[gpubench::serve::template::ChatMessage { role: "user".into(), content: "hi".into() }]).unwrap();
    assert!(prompt.starts_with("<|im_start|>user\nhi"));

    let run = |prompts: &[Vec<u32>]| -> Vec<Vec<u32>> {
        let mut caches: Vec<_> = prompts.iter().map(|_| m.model.new_cache()).collect();
        let mut next = prompts.to_vec();
        let mut out = vec![Vec::new(); prompts.len()];
        for _ in 0..5 {
            let mut inputs: Vec<StepInput> =
                caches.iter_mut().zip(&next).map(|(cache, t)| StepInput { tokens: t, cache, want_logits: true }).collect();
            let logits = m.model.forward(&mut inputs).unwrap();
            for (k, row) in logits.iter().enumerate() {
                assert_eq!(row.len(), 9);
                assert!(row.iter().all(|x| x.is_finite()));
                let t = argmax(row);
                out[k].push(t);
                next[k] = vec![t];
            }
        }
        out
    };
    let a = vec![2, 3, 4, 5];
    let b = vec![6, 7];
    let together = run(&[a.clone(), b.clone()]);
    assert_eq!(together, vec![run(&[a])[0].clone(), run(&[b])[0].clone()]);
}

/// The same folder on candle in bf16 (weights and activations) and in f32: both run, batched
/// like alone, and the bf16 logits stay near the f32 ones.
#[test]
fn hf_folder_runs_on_candle_in_bf16_and_f32() {
    use gpubench::serve::model::{load_model_with, BackendChoice, LoadOptions, WeightDtype};
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path());
    let load = |dtype| {
        let opts = LoadOptions { dtype, backend: BackendChoice::Candle };
        load_model_with(&ModelSource::HfFolder(dir.path().to_path_buf()), &Device::Cpu, &opts).unwrap()
    };
    let (bf16, f32m) = (load(WeightDtype::Bf16), load(WeightDtype::F32));
    assert!(bf16.model.describe().contains("BF16"), "{}", bf16.model.describe());
    assert!(f32m.model.describe().contains("F32"), "{}", f32m.model.describe());
    let first = |m: &gpubench::serve::model::LoadedModel| {
        let mut cache = m.model.new_cache();
        m.model.forward(&mut [StepInput { tokens: &[2, 3, 4, 5], cache: &mut cache, want_logits: true }]).unwrap().remove(0)
    };
    let (a, b) = (first(&bf16), first(&f32m));
    assert!(a.iter().all(|x| x.is_finite()));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = b.iter().map(|x| x.abs()).fold(0f32, f32::max);
    assert!(worst <= 0.05 * scale.max(1.0), "bf16 vs f32 logits differ by {worst} (scale {scale})");
}
