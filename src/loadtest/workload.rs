//! Prompts: one fixed prompt, a JSON Lines dataset, or synthetic prompts of a given length.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::Value;

use super::options::InputTokens;
use super::sessions::{Conversation, Turn};
use super::LoadTestError;

/// One chat message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// What one request asks: a raw prompt or a conversation, and optionally its own output length.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptItem {
    pub prompt: Prompt,
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Chat(Vec<Message>),
}

impl Prompt {
    /// The prompt as plain text (a conversation's contents joined), for completion APIs.
    pub fn as_text(&self) -> String {
        match self {
            Prompt::Text(t) => t.clone(),
            Prompt::Chat(msgs) => msgs.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"),
        }
    }

    /// The prompt as a conversation, for chat APIs.
    pub fn as_messages(&self) -> Vec<Message> {
        match self {
            Prompt::Text(t) => vec![Message { role: "user".into(), content: t.clone() }],
            Prompt::Chat(m) => m.clone(),
        }
    }
}

/// The default prompt when none is given.
pub const DEFAULT_PROMPT: &str = "Explain in a few sentences why GPUs are good at running large language models.";

/// Reads a JSON Lines dataset. Each line is an object with `prompt`, `text`, `messages`
/// (OpenAI chat) or `conversations` (ShareGPT: the first human turn), optionally `max_tokens`.
pub fn load_dataset(path: &Path) -> Result<Vec<PromptItem>, LoadTestError> {
    let bytes = std::fs::read(path).map_err(|e| LoadTestError::Input(format!("cannot read dataset {}: {e}", path.display())))?;
    let mut items = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = std::str::from_utf8(raw).map_err(|e| {
            LoadTestError::Input(format!(
                "dataset {} line {line_no} is not valid UTF-8 (at byte {}): convert the file to UTF-8",
                path.display(),
                e.valid_up_to()
            ))
        })?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            LoadTestError::Input(format!("dataset {} line {line_no} is not a JSON object: {e}", path.display()))
        })?;
        let item = parse_item(&value).map_err(|why| {
            LoadTestError::Input(format!("dataset {} line {line_no}: {why}", path.display()))
        })?;
        items.push(item);
    }
    if items.is_empty() {
        return Err(LoadTestError::Input(format!("dataset {} has no prompts: one JSON object per line, e.g. {{\"prompt\": \"Hello\"}}", path.display())));
    }
    Ok(items)
}

/// One prompt of a dataset or trace line: `prompt`, `text`, `messages` or `conversations`,
/// and its own output length (`max_tokens`, `output_tokens` or `output_length`).
pub(super) fn parse_item(v: &Value) -> Result<PromptItem, String> {
    let obj = v.as_object().ok_or("expected a JSON object such as {\"prompt\": \"...\"}")?;
    let max_tokens = match obj.get("max_tokens").or_else(|| obj.get("output_tokens")).or_else(|| obj.get("output_length")) {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.as_u64()
                .filter(|&n| n >= 1 && n <= u32::MAX as u64)
                .ok_or("\"max_tokens\" must be a positive integer")? as u32,
        ),
    };
    let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_string);
    let prompt = if let Some(t) = text("prompt").or_else(|| text("text")) {
        Prompt::Text(t)
    } else if let Some(msgs) = obj.get("messages").and_then(Value::as_array) {
        let mut out = Vec::new();
        for m in msgs {
            let role = m.get("role").and_then(Value::as_str).ok_or("each message needs a \"role\" string")?;
            let content = m.get("content").and_then(Value::as_str).ok_or("each message needs a \"content\" string")?;
            out.push(Message { role: role.into(), content: content.into() });
        }
        Prompt::Chat(out)
    } else if let Some(turns) = obj.get("conversations").and_then(Value::as_array) {
        let first_human = turns
            .iter()
            .find(|t| matches!(t.get("from").and_then(Value::as_str), Some("human" | "user")))
            .and_then(|t| t.get("value").and_then(Value::as_str))
            .ok_or("\"conversations\" has no human turn with a \"value\"")?;
        Prompt::Text(first_human.into())
    } else {
        return Err("no \"prompt\", \"text\", \"messages\" or \"conversations\" field".into());
    };
    let empty = match &prompt {
        Prompt::Text(t) => t.trim().is_empty(),
        Prompt::Chat(m) => m.is_empty(),
    };
    if empty {
        return Err("the prompt is empty".into());
    }
    Ok(PromptItem { prompt, max_tokens })
}

/// Common English words that most BPE tokenizers encode as one token each (with their leading space).
pub(super) const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "was", "for", "that", "on", "with", "as", "by", "at", "from", "his", "it",
    "an", "were", "are", "which", "this", "be", "or", "has", "had", "first", "one", "their", "its", "new", "after",
    "but", "who", "not", "they", "have", "her", "she", "two", "been", "other", "when", "there", "all", "during",
    "into", "school", "time", "may", "years", "more", "most", "only", "over", "city", "some", "world", "would",
    "where", "later", "up", "such", "used", "many", "can", "state", "about", "national", "out", "known", "university",
    "united", "then", "made", "three", "while", "number", "work", "part", "well", "season", "team", "people", "also",
    "game", "music", "water", "house", "light", "model", "data", "system", "power", "river", "north", "south", "west",
];

/// `n` seeded words from [`WORDS`], space-separated.
pub fn random_words(n: usize, rng: &mut StdRng) -> String {
    let mut text = String::with_capacity(n * 6);
    for k in 0..n {
        if k > 0 {
            text.push(' ');
        }
        text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    text
}

/// `groups` distinct shared prefixes of about `tokens` tokens each, seeded.
pub fn shared_prefixes(tokens: u32, groups: u32, seed: u64) -> Vec<String> {
    (0..groups.max(1))
        .map(|g| {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5a5a_0000_0000 ^ u64::from(g));
            format!("You are assistant {}. {}", g + 1, random_words(tokens.saturating_sub(4).max(1) as usize, &mut rng))
        })
        .collect()
}

/// Reads a dataset as multi-turn conversations: ShareGPT `conversations` (`from`
/// human/user, gpt/assistant, system) or OpenAI `messages`. The user turns are kept in order;
/// the dataset's own answers are not (the model's real answers replace them).
pub fn load_conversations(path: &Path) -> Result<Vec<Conversation>, LoadTestError> {
    let bytes = std::fs::read(path).map_err(|e| LoadTestError::Input(format!("cannot read dataset {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| LoadTestError::Input(format!("dataset {} is not valid UTF-8 (at byte {}): convert it to UTF-8", path.display(), e.utf8_error().valid_up_to())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |why: String| LoadTestError::Input(format!("dataset {} line {}: {why}", path.display(), i + 1));
        let value: Value = serde_json::from_str(line).map_err(|e| at(format!("not a JSON object: {e}")))?;
        let (list, role_key, text_key) = if let Some(c) = value.get("conversations").and_then(Value::as_array) {
            (c, "from", "value")
        } else if let Some(m) = value.get("messages").and_then(Value::as_array) {
            (m, "role", "content")
        } else {
            return Err(at("sessions need \"conversations\" (ShareGPT) or \"messages\" with user turns".into()));
        };
        let max_tokens = value.get("max_tokens").and_then(Value::as_u64).map(|n| n.clamp(1, u32::MAX as u64) as u32);
        let mut conv = Conversation { system: None, turns: Vec::new() };
        for (k, turn) in list.iter().enumerate() {
            let role = turn.get(role_key).and_then(Value::as_str).ok_or_else(|| at(format!("turn {} has no \"{role_key}\" string", k + 1)))?;
            let content = turn.get(text_key).and_then(Value::as_str).ok_or_else(|| at(format!("turn {} has no \"{text_key}\" string", k + 1)))?;
            match role {
                "system" => conv.system = Some(content.to_string()),
                "human" | "user" => conv.turns.push(Turn { user: content.to_string(), max_tokens }),
                _ => {}
            }
        }
        if conv.turns.is_empty() {
            return Err(at("the conversation has no user turn".into()));
        }
        out.push(conv);
    }
    if out.is_empty() {
        return Err(LoadTestError::Input(format!("dataset {} has no conversations", path.display())));
    }
    Ok(out)
}

/// Builds `count` distinct synthetic prompts of about `tokens.mean` tokens (normal, `tokens.stddev`), seeded.
pub fn synthetic(tokens: InputTokens, count: usize, seed: u64) -> Vec<PromptItem> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let normal = Normal::new(tokens.mean as f64, tokens.stddev as f64).ok();
    (0..count.max(1))
        .map(|_| {
            let n = match &normal {
                Some(d) if tokens.stddev > 0 => d.sample(&mut rng).round().max(1.0) as usize,
                _ => tokens.mean as usize,
            };
            PromptItem { prompt: Prompt::Text(random_words(n, &mut rng)), max_tokens: None }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dataset(bytes: &[u8]) -> (tempfile::NamedTempFile, Result<Vec<PromptItem>, LoadTestError>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let r = load_dataset(f.path());
        (f, r)
    }

    #[test]
    fn dataset_accepts_the_usual_shapes() {
        let (_f, items) = dataset(
            br#"{"prompt": "a", "max_tokens": 5}
{"text": "b"}

{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "c"}]}
{"conversations": [{"from": "human", "value": "d"}, {"from": "gpt", "value": "e"}]}
"#,
        );
        let items = items.unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], PromptItem { prompt: Prompt::Text("a".into()), max_tokens: Some(5) });
        assert_eq!(items[2].prompt.as_messages().len(), 2);
        assert_eq!(items[2].prompt.as_text(), "s\nc");
        assert_eq!(items[3].prompt, Prompt::Text("d".into()));
    }

    #[test]
    fn dataset_errors_name_the_line() {
        let (_f, r) = dataset(b"{\"prompt\": \"ok\"}\n\xff\xfe\n");
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("line 2 is not valid UTF-8"), "{msg}");
        let (_f, r) = dataset(b"{\"prompt\": \"ok\"}\n{\"question\": 1}\n");
        assert!(r.unwrap_err().to_string().contains("line 2: no \"prompt\""));
        let (_f, r) = dataset(b"not json\n");
        assert!(r.unwrap_err().to_string().contains("line 1 is not a JSON object"));
        let (_f, r) = dataset(b"\n\n");
        assert!(r.unwrap_err().to_string().contains("has no prompts"));
        let (_f, r) = dataset(b"{\"prompt\": \"x\", \"max_tokens\": 0}\n");
        assert!(r.unwrap_err().to_string().contains("max_tokens"));
    }

    #[test]
    fn conversations_keep_the_user_turns_in_order() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(br#"{"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"}, {"from": "human", "value": "q2"}]}
{"messages": [{"role": "user", "content": "m1"}]}
"#).unwrap();
        let c = load_conversations(f.path()).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].system.as_deref(), Some("s"));
        assert_eq!(c[0].turns.iter().map(|t| t.user.as_str()).collect::<Vec<_>>(), ["q1", "q2"]);
        let mut bad = tempfile::NamedTempFile::new().unwrap();
        bad.write_all(b"{\"conversations\": [{\"from\": \"gpt\", \"value\": \"a\"}]}\n").unwrap();
        assert!(load_conversations(bad.path()).unwrap_err().to_string().contains("line 1: the conversation has no user turn"));
    }

    #[test]
    fn synthetic_prompts_are_seeded_and_sized() {
        let a = synthetic(InputTokens { mean: 50, stddev: 0 }, 3, 7);
        let b = synthetic(InputTokens { mean: 50, stddev: 0 }, 3, 7);
        assert_eq!(a, b);
        assert_eq!(a[0].prompt.as_text().split(' ').count(), 50);
        assert_ne!(a[0], a[1]);
        let c = synthetic(InputTokens { mean: 50, stddev: 10 }, 20, 7);
        let lens: Vec<usize> = c.iter().map(|p| p.prompt.as_text().split(' ').count()).collect();
        assert!(lens.iter().any(|&l| l != 50));
    }
}
