//! The APIs load-test speaks: request bodies and what the answers say (token counts,
//! streamed chunks). Bodies are built before the run starts; parsing reads only the
//! fields the measurement needs.

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::json;

use super::native;
use super::workload::PromptItem;

/// The most of one answer load-test reads (a whole body, or a stream in all); past it the
/// request fails as a protocol error.
pub const MAX_BODY_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Generate,
    OpenaiCompletions,
    OpenaiChat,
    OllamaGenerate,
    OllamaChat,
    /// TGI `/generate`: one JSON answer.
    TgiGenerate,
    /// TGI `/generate_stream`: server-sent events of tokens.
    TgiStream,
}

impl ApiKind {
    pub fn name(self) -> &'static str {
        match self {
            ApiKind::Generate => "generate",
            ApiKind::OpenaiCompletions => "openai-completions",
            ApiKind::OpenaiChat => "openai-chat",
            ApiKind::OllamaGenerate => "ollama-generate",
            ApiKind::OllamaChat => "ollama-chat",
            ApiKind::TgiGenerate => "tgi-generate",
            ApiKind::TgiStream => "tgi-generate-stream",
        }
    }

    /// Guesses the API from a URL path.
    pub fn from_path(path: &str) -> Option<Self> {
        let p = path.trim_end_matches('/');
        if p.ends_with("/api/generate") {
            Some(ApiKind::OllamaGenerate)
        } else if p.ends_with("/api/chat") {
            Some(ApiKind::OllamaChat)
        } else if p.ends_with("/generate_stream") {
            Some(ApiKind::TgiStream)
        } else if p.ends_with("/chat/completions") {
            Some(ApiKind::OpenaiChat)
        } else if p.ends_with("/completions") {
            Some(ApiKind::OpenaiCompletions)
        } else if p.ends_with("/generate") {
            Some(ApiKind::Generate)
        } else {
            None
        }
    }

    pub fn is_openai(self) -> bool {
        matches!(self, ApiKind::OpenaiCompletions | ApiKind::OpenaiChat)
    }

    /// Whether the API can stream its answer.
    pub fn streams(self) -> bool {
        matches!(self, ApiKind::OpenaiCompletions | ApiKind::OpenaiChat | ApiKind::OllamaGenerate | ApiKind::OllamaChat | ApiKind::TgiStream)
    }

    /// Whether a streamed answer comes as NDJSON lines (Ollama) rather than server-sent events.
    pub fn ndjson(self) -> bool {
        matches!(self, ApiKind::OllamaGenerate | ApiKind::OllamaChat)
    }

    /// Whether requests must name the model.
    pub fn needs_model(self) -> bool {
        matches!(self, ApiKind::OpenaiCompletions | ApiKind::OpenaiChat | ApiKind::OllamaGenerate | ApiKind::OllamaChat)
    }
}

/// What every request body carries besides its prompt.
#[derive(Debug, Clone, Default)]
pub struct BodyOptions {
    /// `max_tokens` of requests whose prompt does not set its own.
    pub max_tokens: u32,
    pub stream: bool,
    /// Ask for exactly `max_tokens`: `ignore_eos` (vLLM, llama.cpp, gpubench serve) and
    /// `min_tokens` (vLLM) on the OpenAI and seed APIs.
    pub ignore_eos: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Merged into every body last, so it can set or override any field.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Builds the JSON body of one request.
pub fn build_body(api: ApiKind, model: Option<&str>, item: &PromptItem, opts: &BodyOptions) -> Bytes {
    let max_tokens = item.max_tokens.unwrap_or(opts.max_tokens);
    let mut body = match api {
        ApiKind::Generate => json!({ "prompt": item.prompt.as_text(), "max_tokens": max_tokens }),
        ApiKind::OpenaiCompletions => json!({ "prompt": item.prompt.as_text(), "max_tokens": max_tokens }),
        ApiKind::OpenaiChat => {
            let messages: Vec<_> = item
                .prompt
                .as_messages()
                .into_iter()
                .map(|m| json!({ "role": m.role, "content": m.content }))
                .collect();
            json!({ "messages": messages, "max_tokens": max_tokens })
        }
        ApiKind::OllamaGenerate | ApiKind::OllamaChat => {
            let mut body = native::ollama_body(api == ApiKind::OllamaChat, model, item, opts, max_tokens);
            merge(&mut body, &opts.extra);
            return Bytes::from(body.to_string());
        }
        ApiKind::TgiGenerate | ApiKind::TgiStream => {
            let mut body = native::tgi_body(item, opts, max_tokens);
            merge(&mut body, &opts.extra);
            return Bytes::from(body.to_string());
        }
    };
    if api.is_openai() {
        if let Some(m) = model {
            body["model"] = json!(m);
        }
        if opts.stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({ "include_usage": true });
        }
        if opts.ignore_eos {
            body["min_tokens"] = json!(max_tokens);
        }
    }
    if opts.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    if let Some(t) = opts.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = opts.top_p {
        body["top_p"] = json!(p);
    }
    merge(&mut body, &opts.extra);
    Bytes::from(body.to_string())
}

fn merge(body: &mut serde_json::Value, extra: &serde_json::Map<String, serde_json::Value>) {
    for (k, v) in extra {
        body[k.as_str()] = v.clone();
    }
}

/// Token counts an answer reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Prompt tokens the server took from its prefix cache (`usage.prompt_tokens_details.cached_tokens`).
    pub cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct UsageWire {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetailsWire>,
}

#[derive(Deserialize)]
struct PromptDetailsWire {
    cached_tokens: Option<u64>,
}

impl UsageWire {
    fn cached(&self) -> Option<u64> {
        self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens)
    }
}

#[derive(Deserialize)]
struct GenerateWire {
    text: Option<IgnoredAny>,
    generated_text: Option<IgnoredAny>,
    response: Option<IgnoredAny>,
    completion_tokens: Option<u64>,
    tokens_generated: Option<u64>,
    eval_count: Option<u64>,
    prompt_tokens: Option<u64>,
    prompt_eval_count: Option<u64>,
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
struct CompletionWire {
    choices: Option<Vec<IgnoredAny>>,
    usage: Option<UsageWire>,
}

/// Reads a complete (non-streamed) answer.
pub fn parse_answer(api: ApiKind, content_type: &str, body: &[u8]) -> Result<Usage, String> {
    let not_json = |e: serde_json::Error| {
        format!("expected a JSON answer, got {} ({e}): {}", describe_type(content_type), snippet(body))
    };
    match api {
        ApiKind::Generate => {
            let w: GenerateWire = serde_json::from_slice(body).map_err(not_json)?;
            if w.text.is_none() && w.generated_text.is_none() && w.response.is_none() {
                return Err(format!("the answer has no \"text\" field: {}", snippet(body)));
            }
            let usage = w.usage.as_ref();
            Ok(Usage {
                prompt_tokens: w.prompt_tokens.or(w.prompt_eval_count).or(usage.and_then(|u| u.prompt_tokens)),
                completion_tokens: w
                    .completion_tokens
                    .or(w.tokens_generated)
                    .or(w.eval_count)
                    .or(usage.and_then(|u| u.completion_tokens)),
                cached_tokens: usage.and_then(UsageWire::cached),
            })
        }
        ApiKind::OllamaGenerate | ApiKind::OllamaChat => native::parse_ollama(body).map(|(u, _)| u),
        ApiKind::TgiGenerate | ApiKind::TgiStream => native::parse_tgi(body).map(|(u, _)| u),
        ApiKind::OpenaiCompletions | ApiKind::OpenaiChat => {
            let w: CompletionWire = serde_json::from_slice(body).map_err(not_json)?;
            match w.choices {
                Some(c) if !c.is_empty() => {}
                _ => return Err(format!("the answer has no \"choices\": {}", snippet(body))),
            }
            Ok(Usage {
                prompt_tokens: w.usage.as_ref().and_then(|u| u.prompt_tokens),
                completion_tokens: w.usage.as_ref().and_then(|u| u.completion_tokens),
                cached_tokens: w.usage.as_ref().and_then(UsageWire::cached),
            })
        }
    }
}

/// The generated text of a complete answer (empty when it has none).
pub fn answer_text(api: ApiKind, body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return String::new() };
    let text = match api {
        ApiKind::Generate => ["text", "generated_text", "response"].iter().find_map(|k| v.get(*k)).cloned(),
        ApiKind::OpenaiCompletions => v.pointer("/choices/0/text").cloned(),
        ApiKind::OpenaiChat => v.pointer("/choices/0/message/content").cloned(),
        ApiKind::OllamaGenerate | ApiKind::OllamaChat => return native::parse_ollama(body).map(|(_, t)| t).unwrap_or_default(),
        ApiKind::TgiGenerate | ApiKind::TgiStream => return native::parse_tgi(body).map(|(_, t)| t).unwrap_or_default(),
    };
    text.and_then(|t| t.as_str().map(str::to_string)).unwrap_or_default()
}

fn describe_type(content_type: &str) -> String {
    if content_type.is_empty() {
        "no content type".into()
    } else {
        content_type.split(';').next().unwrap_or(content_type).trim().to_string()
    }
}

/// The first bytes of a body, printable, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if body.len() > 120 {
        format!("'{}…'", one_line.trim())
    } else {
        format!("'{}'", one_line.trim())
    }
}

#[derive(Deserialize)]
struct ChunkWire {
    choices: Option<Vec<ChunkChoice>>,
    usage: Option<UsageWire>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    text: Option<String>,
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
}

/// Incremental reader of an OpenAI server-sent-event stream.
#[derive(Debug, Default)]
pub struct SseStream {
    line: LineBuffer,
    data: String,
    pub done: bool,
    pub finished: bool,
    /// Events that carried generated text: the streamed token count.
    pub content_events: u64,
    pub usage: Usage,
    /// The generated text, gathered when this is `Some` at the start.
    pub text: Option<String>,
    /// TGI's events (`token`, and `details` in the last one) instead of OpenAI's chunks.
    pub tgi: bool,
}

/// The longest line of a streamed answer load-test takes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The line of a streamed answer being read (server-sent events or NDJSON), refused past
/// [`MAX_LINE_BYTES`]; its buffer is reused from line to line.
#[derive(Debug, Default)]
pub struct LineBuffer(Vec<u8>);

impl LineBuffer {
    /// Adds one byte; true when it ended the line (the `\n` is not kept).
    pub fn push(&mut self, b: u8) -> Result<bool, String> {
        if b == b'\n' {
            return Ok(true);
        }
        if self.0.len() >= MAX_LINE_BYTES {
            return Err(format!("a stream line is longer than {} MiB: refusing to read more", MAX_LINE_BYTES >> 20));
        }
        self.0.push(b);
        Ok(false)
    }

    /// The line so far, without a trailing `\r`.
    pub fn line(&self) -> &[u8] {
        self.0.strip_suffix(b"\r").unwrap_or(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

impl SseStream {
    /// A reader that keeps the text when `capture_text`, of TGI's events when `tgi`.
    pub fn new(capture_text: bool, tgi: bool) -> Self {
        SseStream { text: capture_text.then(String::new), tgi, ..SseStream::default() }
    }

    /// Feeds bytes as they arrive; returns how many content events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<u64, String> {
        let mut events = 0;
        for &b in bytes {
            if !self.line.push(b)? {
                continue;
            }
            if self.line.line().is_empty() {
                self.line.clear();
                events += self.dispatch()?;
            } else {
                let line = std::str::from_utf8(self.line.line()).map_err(|_| "stream line is not UTF-8".to_string())?;
                if let Some(rest) = line.strip_prefix("data:") {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                }
                self.line.clear();
            }
        }
        Ok(events)
    }

    /// Called at the end of the body: a stream must end with `data: [DONE]` or a finish reason.
    pub fn finish(&mut self) -> Result<u64, String> {
        let mut events = 0;
        if !self.line.is_empty() {
            events += self.feed(b"\n")?;
        }
        if !self.data.is_empty() {
            events += self.dispatch()?;
        }
        if !self.done && !self.finished {
            return Err(format!(
                "the stream ended before \"data: [DONE]\" after {} chunks (truncated answer)",
                self.content_events
            ));
        }
        Ok(events)
    }

    fn dispatch(&mut self) -> Result<u64, String> {
        if self.data.is_empty() {
            return Ok(0);
        }
        let data = std::mem::take(&mut self.data);
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(0);
        }
        if self.tgi {
            let event = native::parse_tgi_event(&data)?;
            if let Some(t) = self.text.as_mut() {
                t.push_str(&event.text);
            }
            if event.last {
                // TGI sends no [DONE]: its last event carries the details.
                self.done = true;
                self.finished = true;
                self.usage.completion_tokens = event.generated_tokens.or(self.usage.completion_tokens);
            }
            let content = u64::from(event.content);
            self.content_events += content;
            return Ok(content);
        }
        let chunk: ChunkWire = serde_json::from_str(&data)
            .map_err(|e| format!("stream event is not JSON ({e}): {}", snippet(data.as_bytes())))?;
        if let Some(err) = chunk.error {
            return Err(format!("the server sent an error in the stream: {}", snippet(err.to_string().as_bytes())));
        }
        if let Some(u) = chunk.usage {
            self.usage.prompt_tokens = u.prompt_tokens.or(self.usage.prompt_tokens);
            self.usage.completion_tokens = u.completion_tokens.or(self.usage.completion_tokens);
            self.usage.cached_tokens = u.cached().or(self.usage.cached_tokens);
        }
        let mut content = 0;
        for c in chunk.choices.unwrap_or_default() {
            if let Some(text) = self.text.as_mut() {
                for piece in [c.text.as_deref(), c.delta.as_ref().and_then(|d| d.content.as_deref())].into_iter().flatten() {
                    text.push_str(piece);
                }
            }
            let text_len = c.text.as_deref().map_or(0, str::len)
                + c.delta.as_ref().map_or(0, |d| {
                    d.content.as_deref().map_or(0, str::len) + d.reasoning_content.as_deref().map_or(0, str::len)
                });
            if text_len > 0 {
                content = 1;
            }
            if c.finish_reason.is_some() {
                self.finished = true;
            }
        }
        self.content_events += content;
        Ok(content)
    }
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
