//! `--tokenizer PATH|REPO`: exact prompt lengths, and output counts where a server sends no
//! usage. A `tokenizer.json`, a GGUF file (its `tokenizer.ggml.*` vocabulary, as `serve`
//! reads it), a folder holding `tokenizer.json`, or a repository in the Hugging Face cache.

use std::path::{Path, PathBuf};


use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::workload::WORDS;
use super::LoadTestError;
use crate::hub::layout::CacheRepo;
use crate::hub::names::RepoType;
use crate::hub::settings::{cache_dir, ProcessEnv};
use crate::serve::tokenizer::TextTokenizer;

/// A tokenizer that counts text as a server's model would.
pub struct PromptTokenizer {
    inner: Counter,
    /// Where it came from, for the report.
    pub source: String,
    /// Words of [`WORDS`] that are one token each after a space: prompts of exact lengths.
    single: Vec<&'static str>,
}

enum Counter {
    Hf(Box<tokenizers::Tokenizer>),
    /// A GGUF vocabulary, read as `serve` reads it.
    Gguf(TextTokenizer),
}

fn input(msg: String) -> LoadTestError {
    LoadTestError::Input(msg)
}

impl PromptTokenizer {
    /// Loads `spec`: a file or folder path, else a repository id found in the Hugging Face cache.
    pub fn load(spec: &str) -> Result<Self, LoadTestError> {
        let path = Path::new(spec);
        if path.exists() {
            return Self::from_path(path, spec.to_string());
        }
        match find_in_cache(spec) {
            Some(file) => Self::from_path(&file, format!("{spec} ({})", file.display())),
            None => Err(input(format!(
                "--tokenizer '{spec}' is neither a file or folder here nor a repository in the Hugging Face cache ({}): give a tokenizer.json, a .gguf file, or run `gpubench download {spec} --include tokenizer.json` first",
                cache_dir(None, &ProcessEnv).display()
            ))),
        }
    }

    /// The served model's tokenizer from the Hugging Face cache, when it is there.
    pub fn discover(model: &str) -> Option<Self> {
        let file = find_in_cache(model)?;
        Self::from_path(&file, format!("{model} ({})", file.display())).ok()
    }

    fn from_path(path: &Path, source: String) -> Result<Self, LoadTestError> {
        let named = |e: String| input(format!("--tokenizer {}: {e}", path.display()));
        let inner = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            let mut file = std::fs::File::open(path).map_err(|e| named(e.to_string()))?;
            let content = candle_core::quantized::gguf_file::Content::read(&mut file)
                .map_err(|e| named(format!("not a readable GGUF file ({e})")))?;
            Counter::Gguf(TextTokenizer::from_gguf(&content).map_err(|e| named(e.to_string()))?)
        } else {
            let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
            if !file.is_file() {
                return Err(named("the folder has no tokenizer.json".into()));
            }
            let tk = tokenizers::Tokenizer::from_file(&file)
                .map_err(|e| named(format!("not a readable tokenizer.json ({e})")))?;
            Counter::Hf(Box::new(tk))
        };
        let mut t = PromptTokenizer { inner, source, single: Vec::new() };
        t.single = WORDS.iter().copied().filter(|w| t.count(&format!(" {w}")) == 1 && t.count(w) == 1).collect();
        Ok(t)
    }

    /// Tokens of `text`, without the special tokens a raw prompt would get (BOS).
    pub fn count(&self, text: &str) -> usize {
        match &self.inner {
            Counter::Hf(tk) => tk.encode(text, false).map(|e| e.get_ids().len()).unwrap_or(0),
            Counter::Gguf(tk) => {
                let ids = tk.encode(text).unwrap_or_default();
                let bos = usize::from(tk.add_bos && tk.bos_id.is_some() && !ids.is_empty());
                ids.len() - bos
            }
        }
    }

    /// A seeded text of exactly `n` tokens by this tokenizer (checked), or None when its
    /// vocabulary has too few single-token words to build one.
    pub fn text_of(&self, n: usize, rng: &mut StdRng) -> Option<String> {
        if self.single.len() < 8 {
            return None;
        }
        let mut words: Vec<&str> = (0..n).map(|_| self.single[rng.random_range(0..self.single.len())]).collect();
        // Words that merge across a space would change the count: trim or pad until it is exact.
        for _ in 0..8 {
            let text = words.join(" ");
            let have = self.count(&text);
            if have == n {
                return Some(text);
            }
            if have > n {
                words.truncate(words.len().saturating_sub(have - n).max(1));
            } else {
                for _ in 0..(n - have) {
                    words.push(self.single[rng.random_range(0..self.single.len())]);
                }
            }
        }
        None
    }
}

/// `DIR/tokenizer.json` of a repository in the Hugging Face cache (its `main` revision, else
/// any snapshot that has one).
fn find_in_cache(repo: &str) -> Option<PathBuf> {
    if repo.split('/').count() != 2 || repo.contains("..") {
        return None;
    }
    let cache = CacheRepo::new(&cache_dir(None, &ProcessEnv), RepoType::Model, repo);
    if let Some(commit) = cache.read_ref("main") {
        let p = cache.pointer(&commit, "tokenizer.json");
        if p.is_file() {
            return Some(p);
        }
    }
    let snapshots = std::fs::read_dir(cache.folder.join("snapshots")).ok()?;
    snapshots.flatten().map(|e| e.path().join("tokenizer.json")).find(|p| p.is_file())
}

/// Synthetic prompts of exactly the lengths asked (normal around `mean`), seeded.
pub fn exact_prompts(tk: &PromptTokenizer, mean: u32, stddev: u32, count: usize, seed: u64) -> Option<Vec<String>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let normal = rand_distr::Normal::new(mean as f64, stddev as f64).ok();
    (0..count.max(1))
        .map(|_| {
            let n = match &normal {
                Some(d) if stddev > 0 => rand_distr::Distribution::sample(d, &mut rng).round().max(1.0) as usize,
                _ => mean as usize,
            };
            tk.text_of(n, &mut rng)
        })
        .collect()
}
