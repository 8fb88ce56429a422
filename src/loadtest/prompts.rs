//! The prompts of a run: the trace's, the dataset's, synthetic (exactly N tokens where a
//! tokenizer is known) or given, with shared prefixes and seeded output lengths.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::options::{InputTokens, LoadTestArgs};
use super::tokenizer::{exact_prompts, PromptTokenizer};
use super::trace;
use super::workload::{self, Message, Prompt, PromptItem};
use super::LoadTestError;

/// Every distinct prompt, in request order: the trace's, the dataset's, synthetic or given,
/// with shared prefixes and output lengths applied. Also says where they came from, and
/// whether their lengths are exact (counted by the tokenizer).
pub(super) fn prompt_items(
    args: &LoadTestArgs,
    trace: Option<&trace::Trace>,
    requests: Option<u64>,
    tokenizer: Option<&PromptTokenizer>,
) -> Result<(Vec<PromptItem>, String, bool), LoadTestError> {
    let mut exact = tokenizer.is_some();
    let (mut items, prompt_source) = match &trace {
        Some(t) => {
            exact = false;
            (t.items.clone(), format!("trace:{}", t.spec.file))
        }
        None => prompts(args, requests, tokenizer, &mut exact)?,
    };
    if let Some(p) = args.shared_prefix_tokens {
        let prefixes = match tokenizer.and_then(|tk| exact_prefixes(tk, p, args.prefix_groups, args.seed)) {
            Some(exact) => exact,
            None => {
                exact = false;
                workload::shared_prefixes(p, args.prefix_groups, args.seed)
            }
        };
        items = with_shared_prefixes(items, &prefixes);
    }
    if let Some(spread) = args.output_tokens {
        items = with_output_lengths(items, spread, requests, args.seed);
    }
    Ok((items, prompt_source, exact))
}

fn prompts(
    args: &LoadTestArgs,
    requests: Option<u64>,
    tokenizer: Option<&PromptTokenizer>,
    exact: &mut bool,
) -> Result<(Vec<PromptItem>, String), LoadTestError> {
    if let Some(path) = &args.dataset {
        return Ok((workload::load_dataset(path)?, format!("dataset:{}", path.display())));
    }
    if let Some(tokens) = args.input_tokens {
        let count = requests.unwrap_or(1000).clamp(1, 1000) as usize;
        if let Some(texts) = tokenizer.and_then(|tk| exact_prompts(tk, tokens.mean, tokens.stddev, count, args.seed)) {
            let items = texts.into_iter().map(|t| PromptItem { prompt: Prompt::Text(t), max_tokens: None }).collect();
            return Ok((items, format!("synthetic:{}:{}", tokens.mean, tokens.stddev)));
        }
        *exact = false;
        return Ok((
            workload::synthetic(tokens, count, args.seed),
            format!("synthetic:{}:{}", tokens.mean, tokens.stddev),
        ));
    }
    let text = args.prompt.clone().unwrap_or_else(|| workload::DEFAULT_PROMPT.to_string());
    if text.trim().is_empty() {
        return Err(LoadTestError::Usage("--prompt is empty".into()));
    }
    Ok((vec![PromptItem { prompt: Prompt::Text(text), max_tokens: None }], "prompt".into()))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `groups` shared prefixes of exactly `tokens` tokens by `tk`.
fn exact_prefixes(tk: &PromptTokenizer, tokens: u32, groups: u32, seed: u64) -> Option<Vec<String>> {
    (0..groups.max(1))
        .map(|g| tk.text_of(tokens as usize, &mut StdRng::seed_from_u64(seed ^ 0x5a5a_0000_0000 ^ u64::from(g))))
        .collect()
}

/// Request i starts with shared prefix i mod the number of prefixes (a system message),
/// followed by its own prompt. Enough bodies are built that every prompt meets every prefix.
fn with_shared_prefixes(items: Vec<PromptItem>, prefixes: &[String]) -> Vec<PromptItem> {
    let g = prefixes.len();
    let n = items.len() / gcd(items.len(), g) * g;
    (0..n)
        .map(|i| {
            let item = &items[i % items.len()];
            let prefix = &prefixes[i % g];
            let prompt = match &item.prompt {
                Prompt::Text(t) => Prompt::Chat(vec![
                    Message { role: "system".into(), content: prefix.clone() },
                    Message { role: "user".into(), content: t.clone() },
                ]),
                Prompt::Chat(msgs) => {
                    let mut with = vec![Message { role: "system".into(), content: prefix.clone() }];
                    with.extend(msgs.iter().cloned());
                    Prompt::Chat(with)
                }
            };
            PromptItem { prompt, max_tokens: item.max_tokens }
        })
        .collect()
}

/// Gives each request its own seeded max_tokens (normal, at least 1).
fn with_output_lengths(items: Vec<PromptItem>, spread: InputTokens, requests: Option<u64>, seed: u64) -> Vec<PromptItem> {
    let n = items.len().max(requests.unwrap_or(1000).clamp(1, 1000) as usize);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x51_7cc1_b727_220a);
    let normal = Normal::new(spread.mean as f64, spread.stddev as f64).ok();
    (0..n)
        .map(|i| {
            let mut item = items[i % items.len()].clone();
            let len = match &normal {
                Some(d) if spread.stddev > 0 => d.sample(&mut rng).round().clamp(1.0, u32::MAX as f64) as u32,
                _ => spread.mean,
            };
            item.max_tokens = Some(len);
            item
        })
        .collect()
}

#[cfg(test)]
#[path = "prompts_tests.rs"]
mod tests;
