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
}

impl Sampler {
    pub fn new(params: SamplingParams, prompt: &[u32], vocab: usize) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let mut s = Self { params, rng, seen: Vec::new(), seen_mask: Vec::new() };
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
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        let k = self.params.top_k;
        if k > 0 && k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(k);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        let t = self.params.temperature;
        let max = cand.first().map(|c| c.1).unwrap_or(0.0);
        let mut probs: Vec<f32> = cand.iter().map(|c| ((c.1 - max) / t).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.params.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            r -= p;
            if r <= 0.0 {
                return cand[i].0;
            }
        }
        cand[probs.len().saturating_sub(1)].0
    }
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
