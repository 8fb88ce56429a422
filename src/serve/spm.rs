//! SentencePiece vocabularies of GGUF files (`tokenizer.ggml.model = llama`: Llama 2, Mistral),
//! encoded as llama.cpp does: spaces become `▁`, a space is put before the text and after every
//! special token, characters are merged pairwise by the highest-scoring piece (leftmost first),
//! and what no piece covers falls back to byte tokens `<0xXX>`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Token types of GGUF vocabularies.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

pub struct SpmVocab {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    ids: HashMap<String, u32>,
    bytes: [Option<u32>; 256],
    unk: u32,
    add_space_prefix: bool,
    /// Control and user-defined tokens, matched whole in the text.
    specials: Vec<(String, u32)>,
    /// Finds them all in one pass (leftmost, longest at the same place).
    matcher: Option<AhoCorasick>,
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Highest score first; on a tie the leftmost.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}

impl SpmVocab {
    pub fn new(pieces: Vec<String>, scores: Vec<f32>, types: Vec<i32>, unk: u32, add_space_prefix: bool) -> Self {
        let ids = pieces.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        let mut bytes = [None; 256];
        for (i, p) in pieces.iter().enumerate() {
            if types.get(i) == Some(&BYTE) {
                if let Some(b) = p.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    bytes[b as usize] = Some(i as u32);
                }
            }
        }
        let mut specials: Vec<(String, u32)> = pieces
            .iter()
            .enumerate()
            .filter(|(i, p)| matches!(types.get(*i), Some(&CONTROL) | Some(&USER_DEFINED)) && !p.is_empty())
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        specials.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let matcher = AhoCorasickBuilder::new().match_kind(MatchKind::LeftmostLongest).build(specials.iter().map(|(p, _)| p)).ok();
        Self { pieces, scores, types, ids, bytes, unk, add_space_prefix, specials, matcher }
    }

    /// The control and user-defined tokens.
    pub fn specials(&self) -> impl Iterator<Item = &str> {
        self.specials.iter().map(|(p, _)| p.as_str())
    }

    /// The longest piece in bytes.
    pub fn longest_piece(&self) -> usize {
        self.pieces.iter().map(String::len).max().unwrap_or(1)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Token ids of `text` (no BOS), special tokens written in the text recognised (in one pass
    /// over the text: the earliest match, the longest at the same place).
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        // Raw text always starts the input or follows a special token, so each piece of it gets
        // the space prefix.
        let Some(matcher) = &self.matcher else {
            return self.encode_text(text, out);
        };
        let mut at = 0;
        for m in matcher.find_iter(text) {
            if m.start() > at {
                self.encode_raw(&text[at..m.start()], out);
            }
            out.push(self.specials[m.pattern().as_usize()].1);
            at = m.end();
        }
        if at < text.len() {
            self.encode_raw(&text[at..], out);
        }
    }

    /// Token ids of `text` as text throughout: a special token written in it is not recognised.
    pub fn encode_text(&self, text: &str, out: &mut Vec<u32>) {
        if !text.is_empty() {
            self.encode_raw(text, out);
        }
    }

    fn encode_raw(&self, raw: &str, out: &mut Vec<u32>) {
        let mut text = String::with_capacity(raw.len() + 3);
        if self.add_space_prefix {
            text.push('▁');
        }
        text.push_str(&raw.replace(' ', "▁"));
        // Symbols: (start, len) into `text`, linked by prev/next; len 0 once merged away.
        let mut sym: Vec<(usize, usize)> = text.char_indices().map(|(i, c)| (i, c.len_utf8())).collect();
        let n = sym.len();
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut next: Vec<Option<usize>> = (0..n).map(|i| if i + 1 < n { Some(i + 1) } else { None }).collect();
        let mut queue = BinaryHeap::new();
        let bigram = |sym: &[(usize, usize)], l: usize, r: usize, q: &mut BinaryHeap<Bigram>| {
            let (start, len) = (sym[l].0, sym[l].1 + sym[r].1);
            if let Some(&id) = self.ids.get(&text[start..start + len]) {
                q.push(Bigram { score: self.scores.get(id as usize).copied().unwrap_or(0.0), left: l, right: r, len });
            }
        };
        for i in 1..n {
            bigram(&sym, i - 1, i, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (b.left, b.right);
            // Stale: one side was merged since this pair was queued.
            if sym[l].1 == 0 || sym[r].1 == 0 || sym[l].1 + sym[r].1 != b.len || next[l] != Some(r) {
                continue;
            }
            sym[l].1 += sym[r].1;
            sym[r].1 = 0;
            next[l] = next[r];
            if let Some(nr) = next[r] {
                prev[nr] = Some(l);
            }
            if let Some(pl) = prev[l] {
                bigram(&sym, pl, l, &mut queue);
            }
            if let Some(nl) = next[l] {
                bigram(&sym, l, nl, &mut queue);
            }
        }
        let mut i = Some(0).filter(|_| n > 0);
        while let Some(k) = i {
            let (start, len) = sym[k];
            let piece = &text[start..start + len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().map(|b| self.bytes[b as usize].unwrap_or(self.unk))),
            }
            i = next[k];
        }
    }

    /// Text of `ids`: `▁` read as a space, byte tokens as bytes, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let i = id as usize;
            let Some(piece) = self.pieces.get(i) else { continue };
            match self.types.get(i).copied() {
                Some(CONTROL) => {}
                Some(BYTE) => bytes.extend(self.bytes.iter().position(|b| *b == Some(id)).map(|b| b as u8)),
                _ => bytes.extend_from_slice(piece.replace('▁', " ").as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Special tokens are found in one pass: a long text of them is quick, not quadratic.
    #[test]
    fn a_long_text_of_special_tokens_is_encoded_quickly() {
        let mut pieces: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        for i in 0..64 {
            pieces.push(format!("<|special_{i}|>"));
            types.push(3);
        }
        pieces.extend(["▁".to_string(), "a".to_string()]);
        types.extend([1, 1]);
        let scores = vec![0.0; pieces.len()];
        let v = SpmVocab::new(pieces, scores, types, 0, true);
        let text = "</s><s>".repeat(150_000) + "a";
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        v.encode(&text, &mut out);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
        assert_eq!(out.len(), 300_002);
        assert_eq!(&out[..2], &[2, 1]);
        // The longest special token at a place wins, as before.
        let v = SpmVocab::new(vec!["<a>".into(), "<a>b".into(), "x".into()], vec![0.0; 3], vec![3, 3, 1], 2, false);
        let mut out = Vec::new();
        v.encode("<a>b<a>x", &mut out);
        assert_eq!(out, vec![1, 0, 2]);
    }
}
