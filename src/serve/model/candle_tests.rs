use super::*;
use crate::serve::model::argmax;
use crate::serve::model::dummy::random_llama;

fn tiny(dtype: DType, interleaved: bool) -> Llama {
    let cfg = LlamaConfig {
        hidden: 64,
        intermediate: 128,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        vocab: 97,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        context: 512,
        rope_interleaved: interleaved,
        rope_freq_factors: None,
    };
    random_llama(cfg, true, dtype, &Device::Cpu).unwrap()
}

fn prompt(i: usize) -> Vec<u32> {
    (0..2 + i % 13).map(|j| ((i * 31 + j * 7) % 97) as u32).collect()
}

/// One forward step of `tokens[i]` for each cache; the argmax of each row.
fn step(m: &Llama, caches: &mut [SeqCache], tokens: &[Vec<u32>]) -> Vec<u32> {
    let mut inputs: Vec<CandleInput> =
        caches.iter_mut().zip(tokens).map(|(cache, t)| CandleInput { tokens: t, cache, want_logits: true }).collect();
    m.forward(&mut inputs).unwrap().iter().map(|r| argmax(r)).collect()
}

/// Greedy tokens of `prompts`, all in one batch: one prefill step, then `n - 1` decode steps.
fn greedy_batch(m: &Llama, prompts: &[Vec<u32>], n: usize) -> Vec<Vec<u32>> {
    let mut caches: Vec<SeqCache> = prompts.iter().map(|_| m.new_cache()).collect();
    let mut next = step(m, &mut caches, prompts);
    let mut out: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
    for _ in 1..n {
        let toks: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
        next = step(m, &mut caches, &toks);
        for (o, &t) in out.iter_mut().zip(&next) {
            o.push(t);
        }
    }
    out
}

#[test]
fn a_decode_step_issues_the_same_ops_at_batch_1_16_and_64() {
    let m = tiny(DType::F32, false);
    let mut counts = Vec::new();
    for batch in [1, 16, 64] {
        let prompts: Vec<Vec<u32>> = (0..batch).map(prompt).collect();
        let mut caches: Vec<SeqCache> = prompts.iter().map(|_| m.new_cache()).collect();
        let first = step(&m, &mut caches, &prompts);
        let toks: Vec<Vec<u32>> = first.iter().map(|&t| vec![t]).collect();
        let before = ops();
        step(&m, &mut caches, &toks);
        counts.push(ops() - before);
    }
    eprintln!("candle ops per decode step at batch 1, 16, 64: {counts:?}");
    assert_eq!(counts[0], counts[1], "ops per decode step at batch 1, 16, 64: {counts:?}");
    assert_eq!(counts[0], counts[2], "ops per decode step at batch 1, 16, 64: {counts:?}");
    // Per layer a fixed set; nothing per sequence.
    assert!(counts[0] < 40 * m.cfg.layers as u64, "{counts:?}");
}

#[test]
fn batched_decode_of_different_lengths_equals_each_alone() {
    for interleaved in [false, true] {
        let m = tiny(DType::F32, interleaved);
        let prompts: Vec<Vec<u32>> = (0..6).map(prompt).collect();
        let together = greedy_batch(&m, &prompts, 12);
        for (p, want) in prompts.iter().zip(&together) {
            assert_eq!(&greedy_batch(&m, std::slice::from_ref(p), 12)[0], want, "prompt {p:?}");
        }
    }
}

#[test]
fn a_step_mixing_decode_and_a_prompt_chunk_equals_separate_steps() {
    let m = tiny(DType::F32, false);
    let (a, b) = (prompt(3), prompt(9));
    let alone_a = greedy_batch(&m, std::slice::from_ref(&a), 3);
    let alone_b = greedy_batch(&m, std::slice::from_ref(&b), 1);
    let mut ca = m.new_cache();
    let first = step(&m, std::slice::from_mut(&mut ca), std::slice::from_ref(&a));
    let mut cb = m.new_cache();
    // a decodes while b's prompt runs in the same step, in two chunks.
    let mut inputs = [
        CandleInput { tokens: &b[..3], cache: &mut cb, want_logits: false },
        CandleInput { tokens: &[first[0]], cache: &mut ca, want_logits: true },
    ];
    let rows = m.forward(&mut inputs).unwrap();
    assert_eq!(rows.len(), 1);
    let second = argmax(&rows[0]);
    let mut inputs = [
        CandleInput { tokens: &[second], cache: &mut ca, want_logits: true },
        CandleInput { tokens: &b[3..], cache: &mut cb, want_logits: true },
    ];
    let rows: Vec<u32> = m.forward(&mut inputs).unwrap().iter().map(|r| argmax(r)).collect();
    assert_eq!(vec![first[0], second, rows[0]], alone_a[0]);
    assert_eq!(rows[1], alone_b[0][0]);
}

#[test]
fn bf16_weights_run_on_the_cpu_and_give_tokens() {
    let m = tiny(DType::BF16, false);
    assert_eq!(m.embed.dtype(), DType::BF16);
    assert_eq!(m.kv_bytes_per_token(), 2 * 2 * 2 * 16 * 2);
    let prompts: Vec<Vec<u32>> = (0..3).map(prompt).collect();
    let out = greedy_batch(&m, &prompts, 5);
    assert!(out.iter().all(|o| o.len() == 5 && o.iter().all(|&t| t < 97)), "{out:?}");
    let mut cache = m.new_cache();
    let rows = m.forward(&mut [CandleInput { tokens: &prompts[0], cache: &mut cache, want_logits: true }]).unwrap();
    assert!(rows[0].iter().all(|v| v.is_finite()) && rows[0].iter().any(|&v| v != 0.0));
}

#[test]
fn the_kv_pool_is_bounded_and_can_be_taken_whole() {
    let m = tiny(DType::F32, false);
    m.set_kv_capacity(64, true).unwrap();
    assert_eq!(m.pool.lock().blocks(), 4);
    let mut caches: Vec<SeqCache> = (0..4).map(|_| m.new_cache()).collect();
    let prompts: Vec<Vec<u32>> = (0..4).map(|_| vec![1; 16]).collect();
    step(&m, &mut caches, &prompts);
    let mut extra = m.new_cache();
    let err = m.forward(&mut [CandleInput { tokens: &[1], cache: &mut extra, want_logits: true }]).unwrap_err();
    assert!(err.to_string().contains("KV cache is full"), "{err}");
    drop(caches);
    m.forward(&mut [CandleInput { tokens: &[1], cache: &mut extra, want_logits: true }]).unwrap();
}
