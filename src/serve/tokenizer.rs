//! Text <-> token ids: built from a GGUF file's metadata, from a `tokenizer.json`, or a byte
//! tokenizer for dummy weights.

use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use aho_corasick::AhoCorasick;

use super::spm::SpmVocab;
use super::template::Part;
use super::ServeError;

/// Pre-tokenizer regexes of llama.cpp's `llama-bpe` and `qwen2`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

enum Inner {
    /// The tokenizer, and a copy that reads special tokens written in text as text.
    Hf(Box<Tokenizer>, Box<Tokenizer>),
    /// A SentencePiece vocabulary from a GGUF file.
    Spm(Box<SpmVocab>),
    /// One token per byte, offset by 3 (ids 0..3 are special): for dummy weights.
    Bytes,
}

/// A tokenizer with the ids the engine needs to know.
pub struct TextTokenizer {
    inner: Inner,
    /// Tokens that end generation.
    pub eos_ids: Vec<u32>,
    pub bos_id: Option<u32>,
    /// Prepend BOS to raw prompts.
    pub add_bos: bool,
    /// Finds control tokens written in text.
    specials: Option<AhoCorasick>,
    /// The longest token in bytes (at least), so that a text's length bounds its token count.
    pub max_token_bytes: usize,
}

fn bad(msg: impl Into<String>) -> ServeError {
    ServeError::Model(msg.into())
}

impl TextTokenizer {
    /// Builds the tokenizer a GGUF file describes (`tokenizer.ggml.*`): byte-level BPE
    /// (`tokenizer.ggml.model = gpt2`) with a known pre-tokenizer, or SentencePiece (`llama`);
    /// anything else is an error rather than a guess.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, ServeError> {
        let md = &content.metadata;
        let get_str = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
        let model = get_str("tokenizer.ggml.model").ok_or_else(|| bad("the GGUF has no tokenizer.ggml.model"))?;
        if model == "llama" {
            return Self::spm_from_gguf(content);
        }
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer.ggml.model `{model}` is not supported (byte-level BPE `gpt2` and SentencePiece `llama`); use the model's Hugging Face folder with tokenizer.json instead"
            )));
        }
        let pre = get_str("tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
        let pre_tokenizer = pre_tokenizer_for(&pre)?;
        let tokens = md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| bad("the GGUF has no tokenizer.ggml.tokens"))?;
        let tokens: Vec<String> = tokens.iter().map(|t| t.to_string().cloned().unwrap_or_default()).collect();
        let merges = md
            .get("tokenizer.ggml.merges")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| bad("the GGUF has no tokenizer.ggml.merges"))?;
        let mut merge_pairs = Vec::with_capacity(merges.len());
        for m in merges {
            let s = m.to_string().map_err(|_| bad("tokenizer.ggml.merges holds a non-string"))?;
            let (a, b) = s.split_once(' ').ok_or_else(|| bad(format!("malformed merge `{s}` in tokenizer.ggml.merges")))?;
            merge_pairs.push((a.to_string(), b.to_string()));
        }
        let types: Vec<i32> = md
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.iter().map(|t| t.to_i32().unwrap_or(1)).collect())
            .unwrap_or_default();
        check_types(types.len(), tokens.len())?;
        let vocab: ahash::AHashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merge_pairs)
            .build()
            .map_err(|e| bad(format!("cannot build the BPE tokenizer from the GGUF: {e}")))?;
        let mut tk = Tokenizer::new(bpe);
        tk.with_pre_tokenizer(Some(pre_tokenizer));
        tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
        // Control (3) and user-defined (4) tokens are matched whole in the input, as llama.cpp does.
        let specials: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == 3 || **t == 4)
            .map(|(i, t)| AddedToken::from(tokens[i].clone(), *t == 3))
            .collect();
        tk.add_special_tokens(specials).map_err(|e| bad(format!("cannot add the special tokens: {e}")))?;
        let get_u32 = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let eos = get_u32("tokenizer.ggml.eos_token_id");
        let mut eos_ids: Vec<u32> = eos.into_iter().collect();
        // Chat models end turns with these even when the GGUF names another EOS.
        for name in ["<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"] {
            if let Some(id) = tk.token_to_id(name) {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        let add_bos = md.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        Self::finish(Inner::Hf(Box::new(tk.clone()), Box::new(tk)), eos_ids, get_u32("tokenizer.ggml.bos_token_id"), add_bos)
    }

    /// A SentencePiece vocabulary (`tokenizer.ggml.model = llama`): pieces, scores and types.
    fn spm_from_gguf(content: &gguf_file::Content) -> Result<Self, ServeError> {
        let md = &content.metadata;
        let pieces: Vec<String> = md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| bad("the GGUF has no tokenizer.ggml.tokens"))?
            .iter()
            .map(|t| t.to_string().cloned().unwrap_or_default())
            .collect();
        let scores: Vec<f32> = md
            .get("tokenizer.ggml.scores")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| bad("the GGUF's SentencePiece vocabulary has no tokenizer.ggml.scores"))?
            .iter()
            .map(|v| v.to_f32().unwrap_or(0.0))
            .collect();
        let types: Vec<i32> = md
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.iter().map(|t| t.to_i32().unwrap_or(1)).collect())
            .unwrap_or_else(|| vec![1; pieces.len()]);
        check_types(types.len(), pieces.len())?;
        if scores.len() != pieces.len() || types.len() != pieces.len() {
            return Err(bad(format!(
                "tokenizer.ggml.scores ({}) and tokenizer.ggml.token_type ({}) must hold one entry per token of tokenizer.ggml.tokens ({}); the file is broken",
                scores.len(),
                types.len(),
                pieces.len()
            )));
        }
        let get_u32 = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let get_bool = |k: &str, d: bool| md.get(k).and_then(|v| v.to_bool().ok()).unwrap_or(d);
        let vocab = SpmVocab::new(pieces, scores, types, get_u32("tokenizer.ggml.unknown_token_id").unwrap_or(0), get_bool("tokenizer.ggml.add_space_prefix", true));
        let mut eos_ids: Vec<u32> = get_u32("tokenizer.ggml.eos_token_id").into_iter().collect();
        for name in ["<|im_end|>", "<|eot_id|>", "</s>"] {
            if let Some(id) = vocab.token_to_id(name) {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        let bos_id = get_u32("tokenizer.ggml.bos_token_id");
        Self::finish(Inner::Spm(Box::new(vocab)), eos_ids, bos_id, get_bool("tokenizer.ggml.add_bos_token", true))
    }

    /// Loads `tokenizer.json` of a Hugging Face folder; EOS ids come from `config.json`'s
    /// `eos_token_id` (number or list) and the usual end-of-turn tokens.
    pub fn from_hf_folder(dir: &Path, config: &serde_json::Value) -> Result<Self, ServeError> {
        let path = dir.join("tokenizer.json");
        let tk = Tokenizer::from_file(&path)
            .map_err(|e| bad(format!("cannot read {}: {e}; the folder needs the model's tokenizer.json", path.display())))?;
        let mut eos_ids: Vec<u32> = match &config["eos_token_id"] {
            serde_json::Value::Number(n) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_u64().map(|v| v as u32)).collect(),
            _ => vec![],
        };
        for name in ["<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>"] {
            if let Some(id) = tk.token_to_id(name) {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        let bos_id = config["bos_token_id"].as_u64().map(|v| v as u32);
        // tokenizer.json's post-processor adds BOS itself where the model wants it.
        Self::finish(Inner::Hf(Box::new(tk.clone()), Box::new(tk)), eos_ids, bos_id, false)
    }

    /// A byte tokenizer for dummy weights (the text is meaningless anyway).
    pub fn bytes() -> Self {
        Self { inner: Inner::Bytes, eos_ids: vec![2], bos_id: Some(1), add_bos: false, specials: None, max_token_bytes: 1 }
    }

    /// Adds what is derived from the vocabulary: the control-token matcher, the longest token.
    fn finish(mut inner: Inner, eos_ids: Vec<u32>, bos_id: Option<u32>, add_bos: bool) -> Result<Self, ServeError> {
        let (specials, longest): (Vec<String>, usize) = match &mut inner {
            Inner::Hf(tk, plain) => {
                plain.set_encode_special_tokens(true);
                let specials = tk.get_added_tokens_decoder().into_iter().filter_map(|(_, t)| (t.special && !t.content.is_empty()).then_some(t.content)).collect();
                (specials, tk.get_vocab(true).keys().map(String::len).max().unwrap_or(1))
            }
            Inner::Spm(v) => (v.specials().map(str::to_string).collect(), v.longest_piece()),
            Inner::Bytes => (Vec::new(), 1),
        };
        let specials = if specials.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&specials).map_err(|e| bad(format!("cannot index the special tokens: {e}")))?)
        };
        // An unknown-token piece may stand for a whole word: leave room for one.
        let max_token_bytes = longest.max(128);
        Ok(Self { inner, eos_ids, bos_id, add_bos, specials, max_token_bytes })
    }

    /// Whether `text` writes a control token (`<|im_start|>`).
    pub fn has_special(&self, text: &str) -> bool {
        self.specials.as_ref().is_some_and(|m| m.is_match(text))
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ServeError> {
        self.encode_parts(&[Part { text: text.to_string(), plain: false }])
    }

    /// Token ids of a prompt in parts: control tokens are recognised in the parts that are not
    /// `plain`; a plain part (a chat message's content) is text throughout.
    pub fn encode_parts(&self, parts: &[Part]) -> Result<Vec<u32>, ServeError> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        for (i, part) in parts.iter().enumerate() {
            let text = part.text.as_str();
            match &self.inner {
                Inner::Hf(tk, plain) => {
                    let tk = if part.plain { plain } else { tk };
                    let enc = tk.encode(text, i == 0).map_err(|e| ServeError::Internal(format!("tokenizer: {e}")))?;
                    ids.extend_from_slice(enc.get_ids());
                }
                Inner::Spm(v) if part.plain => v.encode_text(text, &mut ids),
                Inner::Spm(v) => v.encode(text, &mut ids),
                Inner::Bytes => ids.extend(text.bytes().map(|b| b as u32 + 3)),
            }
        }
        Ok(ids)
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.inner {
            Inner::Hf(tk, _) => tk.decode(ids, true).unwrap_or_default(),
            Inner::Spm(v) => v.decode(ids),
            Inner::Bytes => {
                let bytes: Vec<u8> = ids.iter().filter(|&&i| i >= 3).map(|&i| ((i - 3) % 256) as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }

    /// The id of a token written out (`<|im_end|>`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Hf(tk, _) => tk.token_to_id(token),
            Inner::Spm(v) => v.token_to_id(token),
            Inner::Bytes => None,
        }
    }
}

/// A token type for every token at most.
fn check_types(types: usize, tokens: usize) -> Result<(), ServeError> {
    if types > tokens {
        return Err(bad(format!(
            "tokenizer.ggml.token_type holds {types} entries for {tokens} tokens in tokenizer.ggml.tokens; the file is broken"
        )));
    }
    Ok(())
}

fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper, ServeError> {
    let byte_level = |regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
    let split = |re: &str| -> Result<PreTokenizerWrapper, ServeError> {
        let s = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| ServeError::Internal(format!("pre-tokenizer regex: {e}")))?;
        Ok(PreTokenizerWrapper::Split(s))
    };
    Ok(match pre {
        // llama.cpp's `smollm`: every digit alone, then GPT-2's byte-level split.
        "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level(true),
        ])),
        "gpt2" | "default" => byte_level(true),
        "llama-bpe" | "llama3" => PreTokenizerWrapper::Sequence(Sequence::new(vec![split(LLAMA3_REGEX)?, byte_level(false)])),
        "qwen2" => PreTokenizerWrapper::Sequence(Sequence::new(vec![split(QWEN2_REGEX)?, byte_level(false)])),
        other => {
            return Err(bad(format!(
                "the GGUF's pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported (known: smollm, gpt2, llama-bpe, qwen2); use the model's Hugging Face folder with tokenizer.json instead"
            )))
        }
    })
}

#[cfg(test)]
mod spm_tests {
    use super::*;

    /// A small SentencePiece vocabulary (byte fallback, scored pieces, control tokens) and the ids
    /// llama.cpp's `llama-tokenize` gives for it (`fixtures/spm-reference.json`).
    #[test]
    fn sentencepiece_gguf_matches_llama_cpp() {
        let bytes = include_bytes!("../../fixtures/spm-vocab.gguf");
        let content = gguf_file::Content::read(&mut std::io::Cursor::new(&bytes[..])).unwrap();
        let tk = TextTokenizer::from_gguf(&content).unwrap();
        let reference: serde_json::Value = serde_json::from_str(include_str!("../../fixtures/spm-reference.json")).unwrap();
        let cases = reference["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            let ids = tk.encode(text).unwrap();
            assert_eq!(ids, want, "ids of {text:?}");
            // Decoding gives the text back, with the space put in front of it.
            assert_eq!(tk.decode(&ids), format!(" {text}"), "text of {text:?}");
        }
        assert_eq!(tk.encode("<s>hello").unwrap(), tk.encode("hello").unwrap()[..1].iter().chain(&tk.encode("hello").unwrap()).copied().collect::<Vec<_>>());
        assert_eq!(tk.eos_ids, vec![2]);
    }

    #[test]
    fn more_token_types_than_tokens_is_an_error_naming_the_key() {
        use gguf_file::Value;
        let s = |t: &str| Value::String(t.into());
        for model in ["gpt2", "llama"] {
            let md = [
                ("tokenizer.ggml.model", s(model)),
                ("tokenizer.ggml.tokens", Value::Array(vec![s("a"), s("b")])),
                ("tokenizer.ggml.merges", Value::Array(vec![s("a b")])),
                ("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0), Value::F32(0.0)])),
                ("tokenizer.ggml.token_type", Value::Array(vec![Value::I32(1), Value::I32(1), Value::I32(3), Value::I32(3)])),
            ];
            let refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
            let mut out = std::io::Cursor::new(Vec::new());
            gguf_file::write(&mut out, &refs, &[]).unwrap();
            out.set_position(0);
            let content = gguf_file::Content::read(&mut out).unwrap();
            let err = TextTokenizer::from_gguf(&content).err().expect("refused").to_string();
            assert!(err.contains("tokenizer.ggml.token_type"), "{model}: {err}");
        }
    }

    /// A role marker typed inside message content stays text: its tokens, not the control id.
    #[test]
    fn control_tokens_in_plain_parts_are_text() {
        let bytes = include_bytes!("../../fixtures/spm-vocab.gguf");
        let content = gguf_file::Content::read(&mut std::io::Cursor::new(&bytes[..])).unwrap();
        let tk = TextTokenizer::from_gguf(&content).unwrap();
        let eos = tk.token_to_id("</s>").unwrap();
        assert!(tk.has_special("hi </s> there") && !tk.has_special("hi there"));
        let special = tk.encode_parts(&[Part { text: "</s>".into(), plain: false }]).unwrap();
        assert!(special.contains(&eos), "{special:?}");
        let plain = tk.encode_parts(&[Part { text: "</s>".into(), plain: true }]).unwrap();
        assert!(!plain.contains(&eos), "{plain:?}");
        assert!(plain.len() > 2, "{plain:?}");
        assert_eq!(tk.decode(&plain).trim(), "</s>");
    }
}
