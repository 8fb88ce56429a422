//! Parity with llama.cpp on the default model (token ids, chat template, greedy text) and
//! batching invariance of the engine's forward pass. The model is provisioned as `serve` does.

use std::sync::OnceLock;

use gpubench::serve::model::{argmax, load_model, LoadedModel, ModelSource, StepInput};
use gpubench::serve::template::ChatMessage;
use serde_json::Value;

fn model() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| {
        let path = gpubench::models::ensure_default_model(true).expect("default model (see .ci/setup-serve.sh)");
        load_model(&ModelSource::Gguf(path), &candle_core::Device::Cpu).expect("load the default model")
    })
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/smollm2-llamacpp-reference.json")).unwrap()
}

#[test]
fn token_ids_match_llama_cpp() {
    let m = model();
    for case in fixture()["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(m.tokenizer.encode(text).unwrap(), want, "ids of {text:?}");
    }
}

#[test]
fn chat_template_matches_llama_cpp() {
    let m = model();
    for case in fixture()["chat_template"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let prompt = m.template.render(&messages).unwrap();
        assert_eq!(prompt, case["prompt"].as_str().unwrap());
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(m.tokenizer.encode(&prompt).unwrap(), want);
    }
}

/// Greedy decoding, one sequence; every step a single forward call.
fn greedy(m: &LoadedModel, prompt: &str, n: usize) -> Vec<u32> {
    let ids = m.tokenizer.encode(prompt).unwrap();
    let mut cache = m.model.new_cache();
    let mut out = Vec::new();
    let mut next = ids;
    for _ in 0..n {
        let logits = m.model.forward(&mut [StepInput { tokens: &next, cache: &mut cache, want_logits: true }]).unwrap();
        let t = argmax(&logits[0]);
        out.push(t);
        next = vec![t];
    }
    out
}

#[test]
fn greedy_capital_of_france_is_paris() {
    let m = model();
    let ids = greedy(m, "The capital of France is", 6);
    let text = m.tokenizer.decode(&ids);
    assert!(text.starts_with(" Paris"), "got {text:?}");
    let reference = fixture()["greedy"][2]["text"].as_str().unwrap().to_string();
    assert!(reference.starts_with(&text), "ours {text:?} vs llama.cpp {reference:?}");
}

#[test]
fn batched_greedy_equals_unbatched() {
    let m = model();
    let prompts = ["The capital of France is", "Once upon a time", "def add(a, b):"];
    let alone: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(m, p, 8)).collect();
    // All three in one batch; prompts of different lengths, positions differ per sequence.
    let mut caches: Vec<_> = prompts.iter().map(|_| m.model.new_cache()).collect();
    let mut next: Vec<Vec<u32>> = prompts.iter().map(|p| m.tokenizer.encode(p).unwrap()).collect();
    let mut outs = vec![Vec::new(); prompts.len()];
    for _ in 0..8 {
        let mut inputs: Vec<StepInput> = caches
            .iter_mut()
            .zip(&next)
            .map(|(cache, toks)| StepInput { tokens: toks, cache, want_logits: true })
            .collect();
        let logits = m.model.forward(&mut inputs).unwrap();
        for (i, row) in logits.iter().enumerate() {
            let t = argmax(row);
            outs[i].push(t);
            next[i] = vec![t];
        }
    }
    assert_eq!(outs, alone);
}

#[test]
fn chunked_prefill_matches_whole_prefill() {
    let m = model();
    let ids = m.tokenizer.encode("The capital of France is").unwrap();
    let mut cache = m.model.new_cache();
    m.model.forward(&mut [StepInput { tokens: &ids[..2], cache: &mut cache, want_logits: false }]).unwrap();
    let logits = m.model.forward(&mut [StepInput { tokens: &ids[2..], cache: &mut cache, want_logits: true }]).unwrap();
    assert_eq!(argmax(&logits[0]), greedy(m, "The capital of France is", 1)[0]);
}
