//! `--trace FILE.jsonl`: replays recorded traffic. Each line has a `timestamp` (ms from the
//! trace's start) and either `prompt`/`messages` or `input_length`/`output_length`, with
//! optional `hash_ids` (the Mooncake format: prompts whose ids share a prefix share that many
//! blocks of `--trace-block-tokens` tokens of text, so a prefix cache sees what it saw).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

use super::workload::{parse_item, random_words, Prompt, PromptItem};
use super::LoadTestError;
use crate::report::TraceSpec;

/// A loaded trace: one prompt per line and when it is due.
#[derive(Debug, Clone)]
pub struct Trace {
    pub items: Vec<PromptItem>,
    /// Offsets from the first request, already divided by the replay speed.
    pub offsets: Arc<[Duration]>,
    pub spec: TraceSpec,
}

pub fn load(path: &Path, speed: f64, block_tokens: u32, seed: u64) -> Result<Trace, LoadTestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadTestError::Input(format!("cannot read trace {}: {e}", path.display())))?;
    let mut items = Vec::new();
    let mut stamps: Vec<(f64, usize)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |why: String| LoadTestError::Input(format!("trace {} line {line_no}: {why}", path.display()));
        let v: Value = serde_json::from_str(line).map_err(|e| at(format!("not a JSON object ({e})")))?;
        let ts = match v.get("timestamp") {
            None | Some(Value::Null) => return Err(at("no \"timestamp\" (milliseconds from the trace's start)".into())),
            Some(t) => t.as_f64().filter(|t| t.is_finite() && *t >= 0.0).ok_or_else(|| {
                at(format!("\"timestamp\" must be a number of milliseconds, at least 0 (found {t})"))
            })?,
        };
        if let Some(&(prev, prev_line)) = stamps.last() {
            if ts < prev {
                return Err(at(format!(
                    "timestamp {ts} is before line {prev_line}'s {prev}: a trace must be in time order (sort it by timestamp)"
                )));
            }
        }
        stamps.push((ts, line_no));
        items.push(item(&v, block_tokens, seed, line_no).map_err(at)?);
    }
    if items.is_empty() {
        return Err(LoadTestError::Input(format!(
            "trace {} has no requests: one JSON object per line, e.g. {{\"timestamp\": 0, \"input_length\": 128, \"output_length\": 64}}",
            path.display()
        )));
    }
    let first = stamps[0].0;
    let offsets: Arc<[Duration]> =
        stamps.iter().map(|(t, _)| Duration::from_secs_f64((t - first) / 1000.0 / speed)).collect::<Vec<_>>().into();
    let span_s = (stamps[stamps.len() - 1].0 - first) / 1000.0;
    let gaps: Vec<f64> = stamps.windows(2).map(|w| (w[1].0 - w[0].0) / 1000.0).collect();
    let spec = TraceSpec {
        file: path.display().to_string(),
        requests: items.len() as u64,
        span_s,
        rate: if span_s > 0.0 { (items.len() - 1) as f64 / span_s } else { 0.0 },
        burstiness: burstiness(&gaps),
        speed,
        block_tokens,
    };
    Ok(Trace { items, offsets, spec })
}

/// The gamma shape that fits the gaps: 1 / CV².
fn burstiness(gaps: &[f64]) -> Option<f64> {
    if gaps.len() < 2 {
        return None;
    }
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    (mean > 0.0 && var > 0.0).then(|| ((mean * mean / var) * 1000.0).round() / 1000.0)
}

fn item(v: &Value, block_tokens: u32, seed: u64, line_no: usize) -> Result<PromptItem, String> {
    if v.get("input_length").is_none() {
        if ["prompt", "text", "messages", "conversations"].iter().all(|k| v.get(*k).is_none()) {
            return Err("no \"input_length\", \"prompt\" or \"messages\"".into());
        }
        return parse_item(v);
    }
    let max_tokens = match v.get("output_length").or_else(|| v.get("max_tokens")) {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.as_u64()
                .filter(|&n| n >= 1 && n <= u32::MAX as u64)
                .ok_or("\"output_length\" must be a positive integer")? as u32,
        ),
    };
    let input = match v.get("input_length") {
        Some(n) => n.as_u64().filter(|&n| n >= 1).ok_or("\"input_length\" must be a positive integer")? as usize,
        None => return Err("no \"input_length\"".into()),
    };
    let text = match v.get("hash_ids") {
        None | Some(Value::Null) => random_words(input, &mut StdRng::seed_from_u64(seed ^ line_no as u64)),
        Some(ids) => {
            let ids = ids.as_array().ok_or("\"hash_ids\" must be an array of integers")?;
            let mut words: Vec<String> = Vec::with_capacity(input);
            for id in ids {
                let id = id.as_u64().ok_or("\"hash_ids\" must be an array of integers")?;
                if words.len() >= input {
                    break;
                }
                let block = random_words(block_tokens as usize, &mut StdRng::seed_from_u64(seed ^ 0xb10c ^ id.rotate_left(17)));
                words.extend(block.split(' ').map(str::to_string));
            }
            if words.len() < input {
                // Past the listed blocks the prompt is its own.
                let rest = random_words(input - words.len(), &mut StdRng::seed_from_u64(seed ^ line_no as u64));
                words.extend(rest.split(' ').map(str::to_string));
            }
            words.truncate(input);
            words.join(" ")
        }
    };
    Ok(PromptItem { prompt: Prompt::Text(text), max_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn trace(text: &str) -> Result<Trace, LoadTestError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        load(f.path(), 2.0, 4, 0)
    }

    #[test]
    fn offsets_lengths_and_shared_blocks() {
        let t = trace(
            r#"{"timestamp": 1000, "input_length": 10, "output_length": 5, "hash_ids": [1, 2, 3]}
{"timestamp": 1500, "input_length": 6, "output_length": 7, "hash_ids": [1, 9]}
{"timestamp": 3000, "prompt": "hello", "output_length": 2}
"#,
        )
        .unwrap();
        assert_eq!(&t.offsets[..], &[Duration::ZERO, Duration::from_millis(250), Duration::from_millis(1000)]);
        assert_eq!(t.items[0].max_tokens, Some(5));
        let a = t.items[0].prompt.as_text();
        let b = t.items[1].prompt.as_text();
        assert_eq!(a.split(' ').count(), 10);
        assert_eq!(b.split(' ').count(), 6);
        let wa: Vec<_> = a.split(' ').collect();
        let wb: Vec<_> = b.split(' ').collect();
        assert_eq!(wa[..4], wb[..4], "hash id 1 is the same block");
        assert_ne!(wa[4..6], wb[4..6]);
        assert_eq!(t.spec.requests, 3);
        assert!((t.spec.rate - 1.0).abs() < 1e-9);
        assert_eq!(t.spec.speed, 2.0);
    }

    #[test]
    fn bad_traces_name_the_line_and_field() {
        let e = trace("{\"timestamp\": 0, \"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n").unwrap_err().to_string();
        assert!(e.contains("line 2: no \"timestamp\""), "{e}");
        let e = trace("{\"timestamp\": 5, \"prompt\": \"a\"}\n{\"timestamp\": 2, \"prompt\": \"b\"}\n").unwrap_err().to_string();
        assert!(e.contains("line 2: timestamp 2 is before line 1's 5"), "{e}");
        let e = trace("{\"timestamp\": 0}\n").unwrap_err().to_string();
        assert!(e.contains("line 1: no \"input_length\", \"prompt\""), "{e}");
        let e = trace("{\"timestamp\": -1, \"prompt\": \"a\"}\n").unwrap_err().to_string();
        assert!(e.contains("at least 0"), "{e}");
    }
}
