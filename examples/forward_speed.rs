//! Speed of the model's forward pass without HTTP: single-stream decode, prefill of a 128-token
//! prompt, and batched decode at several batch sizes, on the default model (or `--model`); and
//! the cost of choosing a token from the logits with and without temperature.
//!
//! cargo run --release --example forward_speed -- [--model FILE.gguf] [--tokens 64] [--batches 1,4,16] [--prefill-runs 3]
//! Environment: GPUBENCH_CPU_ISA=scalar|avx2|vnni, GPUBENCH_CPU_BACKEND=candle, --threads N.

use std::time::Instant;

use gpubench::serve::model::{argmax, load_model, ModelSource, StepInput};
use gpubench::serve::sampling::{Sampler, SamplingParams};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let tokens: usize = flag("--tokens").map(|v| v.parse()).transpose()?.unwrap_or(64);
    let prefill_runs: usize = flag("--prefill-runs").map(|v| v.parse()).transpose()?.unwrap_or(3);
    let batches: Vec<usize> =
        flag("--batches").unwrap_or_else(|| "1,4,16".into()).split(',').map(|v| v.parse()).collect::<Result<_, _>>()?;
    if let Some(n) = flag("--threads") {
        gpubench::serve::model::cpu::set_threads(n.parse()?);
    }
    let path = match flag("--model") {
        Some(p) => p.into(),
        None => gpubench::default_model::ensure_default_model(true)?,
    };
    let t0 = Instant::now();
    let m = load_model(&ModelSource::Gguf(path), &candle_core::Device::Cpu)?;
    println!("loaded in {:.2}s: {}", t0.elapsed().as_secs_f64(), m.model.describe());

    // Prefill: a 128-token prompt in one step.
    let long: Vec<u32> = m.tokenizer.encode(&"The quick brown fox jumps over the lazy dog. ".repeat(13))?;
    let long = &long[..long.len().min(128)];
    let mut best_prefill = 0f64;
    for _ in 0..prefill_runs {
        let mut cache = m.model.new_cache();
        let t = Instant::now();
        m.model.forward(&mut [StepInput { tokens: long, cache: &mut cache, want_logits: true }])?;
        best_prefill = best_prefill.max(long.len() as f64 / t.elapsed().as_secs_f64());
    }
    println!("prefill {} tokens: {:.1} tok/s", long.len(), best_prefill);

    let prompt = m.tokenizer.encode("Once upon a time")?;

    // Token choice on real logits: greedy, temperature 1, and temperature with top-p.
    let mut cache = m.model.new_cache();
    let logits = m.model.forward(&mut [StepInput { tokens: &prompt, cache: &mut cache, want_logits: true }])?.remove(0);
    for (name, params) in [
        ("greedy", SamplingParams::default()),
        ("temperature 1", SamplingParams { temperature: 1.0, seed: Some(1), ..Default::default() }),
        ("temperature 1, top_p 0.95", SamplingParams { temperature: 1.0, top_p: 0.95, seed: Some(1), ..Default::default() }),
    ] {
        let mut sampler = Sampler::new(params, &prompt, logits.len());
        let mut row = logits.clone();
        let runs = 200;
        let t = Instant::now();
        for _ in 0..runs {
            row.copy_from_slice(&logits);
            std::hint::black_box(sampler.sample(&mut row));
        }
        println!("sampling, {name}: {:.1} us per token ({} logits)", t.elapsed().as_secs_f64() * 1e6 / runs as f64, logits.len());
    }
    for &b in &batches {
        let mut caches: Vec<_> = (0..b).map(|_| m.model.new_cache()).collect();
        let mut next: Vec<u32> = vec![0; b];
        for c in caches.iter_mut() {
            let l = m.model.forward(&mut [StepInput { tokens: &prompt, cache: c, want_logits: true }])?;
            next[0] = argmax(&l[0]);
        }
        let last = next[0];
        next.iter_mut().for_each(|t| *t = last);
        let t = Instant::now();
        for _ in 0..tokens {
            let toks: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
            let mut inputs: Vec<StepInput> =
                caches.iter_mut().zip(&toks).map(|(cache, tk)| StepInput { tokens: tk, cache, want_logits: true }).collect();
            let logits = m.model.forward(&mut inputs)?;
            for (n, row) in next.iter_mut().zip(&logits) {
                *n = argmax(row);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "decode batch {b:>2}: {:.1} tok/s aggregate, {:.1} ms per step",
            (b * tokens) as f64 / secs,
            secs * 1000.0 / tokens as f64
        );
    }
    Ok(())
}
