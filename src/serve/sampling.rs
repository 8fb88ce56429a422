//! Per-request token choice: repetition penalty, temperature, top-k, top-p, seeded randomness;
//! and the text side of generation: incremental detokenization and stop strings.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How one request chooses its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 means no limit.
    pub top_k: usize,
    pub seed: Option<u64>,
    /// 1.0 means none; above 1 discourages tokens already in the prompt or output.
    pub repetition_penalty: f32,
    pub stop: Vec<String>,
    pub max_tokens: usize,
    /// Keep generating past end-of-sequence tokens (for fixed-length benchmarks).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_p: 1.0, top_k: 0, seed: None, repetition_penalty: 1.0, stop: vec![], max_tokens: 16, ignore_eos: false }
    }
}

/// A request's sampler: its parameters, random generator and the tokens seen so far.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    seen: Vec<u32>,
    seen_mask: Vec<bool>,
    /// Scratch for ordering candidates (kept between tokens).
    order: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, prompt: &[u32], vocab: usize) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let mut s = Self { params, rng, seen: Vec::new(), seen_mask: Vec::new(), order: Vec::new() };
        if s.params.repetition_penalty != 1.0 {
            s.seen_mask = vec![false; vocab];
            for &t in prompt {
                s.observe(t);
            }
        }
        s
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a generated token (for the repetition penalty).
    pub fn observe(&mut self, token: u32) {
        if let Some(m) = self.seen_mask.get_mut(token as usize) {
            if !*m {
                *m = true;
                self.seen.push(token);
            }
        }
    }

    /// Picks the next token from `logits` (modified in place).
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let rp = self.params.repetition_penalty;
        if rp != 1.0 {
            for &t in &self.seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / rp } else { *l * rp };
                }
            }
        }
        if self.params.temperature <= 1e-5 {
            return super::model::argmax(logits);
        }
        // The logits become unnormalized probabilities in place: O(vocabulary), no allocation.
        let total = softmax_weights(logits, self.params.temperature);
        let v = logits.len();
        let k = if self.params.top_k == 0 { v } else { self.params.top_k.min(v) };
        let top_p = self.params.top_p;
        if k == v && top_p >= 1.0 {
            let r = self.rng.random::<f32>() * total;
            return draw_all(logits, r);
        }
        // Top-k and nucleus: only the most likely candidates are ordered. They are looked for
        // among the tokens within a factor of 10^4 of the best when those hold all top-k or the
        // whole nucleus (almost always), else among all; there, among the best 64, 256, ...
        // until the nucleus is covered.
        let w = &*logits;
        let idx = &mut self.order;
        idx.clear();
        let mut likely_mass = 0f32;
        for (i, &x) in w.iter().enumerate() {
            if x >= 1e-4 {
                idx.push(i as u32);
                likely_mass += x;
            }
        }
        let limited = k < v;
        let covered = if limited { idx.len() >= k } else { likely_mass >= top_p * total };
        if !covered {
            idx.clear();
            idx.extend(0..v as u32);
        }
        let by_weight = |a: &u32, b: &u32| w[*b as usize].total_cmp(&w[*a as usize]);
        // Candidates worth ordering: the top k, or everything looked at.
        let most = if limited { k } else { idx.len() };
        let mut m = if limited { k } else { 64.min(most) };
        loop {
            if m < idx.len() {
                idx.select_nth_unstable_by(m - 1, by_weight);
            }
            idx[..m].sort_unstable_by(by_weight);
            // The distribution is over the top k (or all) tokens; the nucleus is its shortest
            // prefix holding top_p of that mass.
            let mass = if limited { idx[..k].iter().map(|&i| w[i as usize]).sum() } else { total };
            let mut acc = 0f32;
            let mut keep = None;
            for (n, &i) in idx[..m].iter().enumerate() {
                acc += w[i as usize];
                if top_p < 1.0 && acc >= top_p * mass {
                    keep = Some(n + 1);
                    break;
                }
            }
            let keep = match keep {
                Some(n) => n,
                None if m >= most => m,
                None => {
                    m = (m * 4).min(most);
                    continue;
                }
            };
            let nucleus = &idx[..keep];
            let r = self.rng.random::<f32>() * nucleus.iter().map(|&i| w[i as usize]).sum::<f32>();
            return draw(w, nucleus.iter().copied(), r);
        }
    }
}

/// `w[i] = exp((w[i] - max) / temperature)` in place; returns their sum.
fn softmax_weights(w: &mut [f32], temperature: f32) -> f32 {
    let max = w.get(super::model::argmax(w) as usize).copied().unwrap_or(0.0);
    let inv_t = 1.0 / temperature;
    for x in w.iter_mut() {
        *x = gpubench_cpu::math::exp_nonpositive((*x - max) * inv_t);
    }
    // Eight partial sums: vectorizes, and rounds less than one long sum.
    let mut parts = [0f32; 8];
    let mut chunks = w.chunks_exact(8);
    for c in &mut chunks {
        for (p, x) in parts.iter_mut().zip(c) {
            *p += x;
        }
    }
    parts.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// [`draw`] over the whole vocabulary in order, skipping eight weights at a time.
fn draw_all(w: &[f32], mut r: f32) -> u32 {
    let mut last = None;
    for (c, chunk) in w.chunks(8).enumerate() {
        let sum: f32 = chunk.iter().sum();
        if sum <= 0.0 {
            continue;
        }
        if r > sum {
            r -= sum;
            last = Some(c);
            continue;
        }
        return draw(&w[c * 8..], 0..chunk.len() as u32, r) + (c * 8) as u32;
    }
    // Rounding left `r` unreached: the last token with weight.
    last.map_or(0, |c| draw(&w[c * 8..], 0..w[c * 8..].len().min(8) as u32, f32::INFINITY) + (c * 8) as u32)
}

/// The token where the running sum of `w` over `order` passes `r` (the last one with weight
/// if rounding leaves `r` unreached).
fn draw(w: &[f32], order: impl Iterator<Item = u32>, mut r: f32) -> u32 {
    let mut last = 0;
    for i in order {
        let p = w[i as usize];
        if p > 0.0 {
            last = i;
            r -= p;
            if r <= 0.0 {
                return i;
            }
        }
    }
    last
}

/// Turns generated ids into text deltas without splitting UTF-8 characters, and enforces stop strings.
#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    /// All text generated so far (cut at a stop string once one is found).
    pub text: String,
    /// Bytes of `text` already handed out.
    sent: usize,
}

impl TextStream {
    /// Adds a token; returns (text now safe to send, whether a stop string ended generation).
    pub fn push(&mut self, id: u32, decode: impl Fn(&[u32]) -> String, stop: &[String]) -> (String, bool) {
        self.ids.push(id);
        let prefix = decode(&self.ids[self.prefix_offset..self.read_offset]);
        let full = decode(&self.ids[self.prefix_offset..]);
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            if let Some(delta) = full.get(prefix.len()..) {
                self.text.push_str(delta);
            }
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
        }
        // Earliest stop string in the unsent tail (a stop may straddle what was held back).
        let longest = stop.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut from = self.sent.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = stop.iter().filter(|s| !s.is_empty()).filter_map(|s| self.text[from..].find(s.as_str()).map(|p| from + p)).min();
        if let Some(pos) = hit {
            self.text.truncate(pos.max(self.sent));
            return (self.take_rest(), true);
        }
        // Hold back a tail that could still become a stop string.
        let mut hold = 0;
        for s in stop {
            for cut in (1..s.len()).rev() {
                if s.is_char_boundary(cut) && self.text.ends_with(&s[..cut]) {
                    hold = hold.max(cut);
                    break;
                }
            }
        }
        let end = self.text.len() - hold;
        let out = self.text.get(self.sent.min(end)..end).unwrap_or("").to_string();
        self.sent = self.sent.max(end);
        (out, false)
    }

    /// The text not handed out yet (at the end of generation).
    pub fn take_rest(&mut self) -> String {
        let out = self.text.get(self.sent..).unwrap_or("").to_string();
        self.sent = self.text.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(ids: &[u32]) -> String {
        ids.iter().map(|&i| char::from(b'a' + i as u8)).collect()
    }

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(SamplingParams::default(), &[], 4);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0, -1.0]), 1);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let p = SamplingParams { repetition_penalty: 10.0, ..Default::default() };
        let mut s = Sampler::new(p, &[1], 4);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0, -1.0]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_repeats() {
        let p = SamplingParams { temperature: 1.0, top_k: 1, ..Default::default() };
        let mut s = Sampler::new(p, &[], 4);
        for _ in 0..10 {
            assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0]), 1);
        }
        let p = SamplingParams { temperature: 1.5, seed: Some(7), ..Default::default() };
        let run = || {
            let mut s = Sampler::new(p.clone(), &[], 4);
            (0..20).map(|_| s.sample(&mut [0.1, 1.0, 0.9, 0.5])).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    /// How often each token is drawn in `n` samples of `logits`.
    fn frequencies(p: SamplingParams, logits: &[f32], n: usize) -> Vec<f64> {
        let mut s = Sampler::new(SamplingParams { seed: Some(11), ..p }, &[], logits.len());
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[s.sample(&mut logits.to_vec()) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    #[test]
    fn temperature_draws_follow_the_softmax() {
        let logits = [1.0f32, 2.0, 0.0, 2.5, -1.0];
        let t = 0.8;
        let e: Vec<f64> = logits.iter().map(|&l| ((l as f64) / t).exp()).collect();
        let sum: f64 = e.iter().sum();
        let got = frequencies(SamplingParams { temperature: t as f32, ..Default::default() }, &logits, 40_000);
        for (g, w) in got.iter().zip(&e) {
            assert!((g - w / sum).abs() < 0.01, "{got:?} vs {:?}", e.iter().map(|w| w / sum).collect::<Vec<_>>());
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_covering_p_and_renormalizes() {
        // Probabilities 0.5, 0.3, 0.2 (in vocabulary order 1, 0, 2): top_p 0.7 keeps tokens 1 and 0.
        let logits = [0.3f32.ln(), 0.5f32.ln(), 0.2f32.ln()];
        let got = frequencies(SamplingParams { temperature: 1.0, top_p: 0.7, ..Default::default() }, &logits, 20_000);
        assert_eq!(got[2], 0.0, "{got:?}");
        assert!((got[1] - 0.625).abs() < 0.015 && (got[0] - 0.375).abs() < 0.015, "{got:?}");
        // A large vocabulary whose nucleus is wider than the first candidates looked at.
        // A long tail of unlikely tokens counts in the mass the nucleus must cover: A (weight 1),
        // B (0.3) and 10^4 tokens of 5e-5 (0.5 in all); top_p 0.6 of 1.8 needs both A and B.
        let mut tail = vec![5e-5f32.ln(); 10_002];
        (tail[0], tail[1]) = (0.0, 0.3f32.ln());
        let got = frequencies(SamplingParams { temperature: 1.0, top_p: 0.6, ..Default::default() }, &tail, 2_000);
        assert!((got[1] - 0.3 / 1.3).abs() < 0.04 && got[0] + got[1] == 1.0, "{:?}", &got[..3]);
        // Weights exp(-i / 10^4) for i < 5000: half the mass lies below i = 10^4 ln(2 / (1 + e^-0.5)) = 2190.
        let wide: Vec<f32> = (0..5000).map(|i| -(i as f32) * 1e-4).collect();
        let got = frequencies(SamplingParams { temperature: 1.0, top_p: 0.5, ..Default::default() }, &wide, 3_000);
        let last = got.iter().rposition(|&f| f > 0.0).unwrap();
        assert!((2170..=2191).contains(&last), "the nucleus ends at token 2190, the last drawn was {last}");
    }

    #[test]
    fn top_k_draws_only_among_the_k_best() {
        let logits = [0.0f32, 3.0, 1.0, 2.9, 2.8];
        let got = frequencies(SamplingParams { temperature: 1.0, top_k: 2, ..Default::default() }, &logits, 10_000);
        assert!(got[0] == 0.0 && got[2] == 0.0 && got[4] == 0.0, "{got:?}");
        let want = 1.0 / (1.0 + (-0.1f64).exp());
        assert!((got[1] - want).abs() < 0.02, "{got:?}");
        // Top-k, then top-p over what top-k kept.
        let got = frequencies(SamplingParams { temperature: 1.0, top_k: 3, top_p: 0.3, ..Default::default() }, &logits, 2_000);
        assert_eq!(got[1], 1.0, "{got:?}");
    }

    #[test]
    fn stop_strings_cut_the_text_and_hold_back_prefixes() {
        let mut t = TextStream::default();
        let stop = vec!["cd".to_string()];
        assert_eq!(t.push(0, dec, &stop), ("a".into(), false)); // "a"
        assert_eq!(t.push(1, dec, &stop), ("b".into(), false)); // "ab"
        assert_eq!(t.push(2, dec, &stop), ("".into(), false)); // "abc": "c" held back
        assert_eq!(t.push(3, dec, &stop), ("".into(), true)); // "abcd": stop
        assert_eq!(t.text, "ab");
    }

    #[test]
    fn held_back_text_is_released_when_it_does_not_stop() {
        let mut t = TextStream::default();
        let stop = vec!["cd".to_string()];
        t.push(2, dec, &stop);
        assert_eq!(t.push(4, dec, &stop), ("ce".into(), false));
        assert_eq!(t.take_rest(), "");
    }
}
