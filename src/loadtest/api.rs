//! The APIs load-test speaks: request bodies and what the answers say (token counts,
//! streamed chunks). Bodies are built before the run starts; parsing reads only the
//! fields the measurement needs.

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::json;

use super::workload::PromptItem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Generate,
    OpenaiCompletions,
    OpenaiChat,
}

impl ApiKind {
    pub fn name(self) -> &'static str {
        match self {
            ApiKind::Generate => "generate",
            ApiKind::OpenaiCompletions => "openai-completions",
            ApiKind::OpenaiChat => "openai-chat",
        }
    }

    /// Guesses the API from a URL path.
    pub fn from_path(path: &str) -> Option<Self> {
        let p = path.trim_end_matches('/');
        if p.ends_with("/chat/completions") {
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
        !matches!(self, ApiKind::Generate)
    }
}

/// Builds the JSON body of one request.
pub fn build_body(api: ApiKind, model: Option<&str>, item: &PromptItem, max_tokens: u32, stream: bool) -> Bytes {
    let max_tokens = item.max_tokens.unwrap_or(max_tokens);
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
    };
    if api.is_openai() {
        if let Some(m) = model {
            body["model"] = json!(m);
        }
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({ "include_usage": true });
        }
    }
    Bytes::from(body.to_string())
}

/// Token counts an answer reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct UsageWire {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
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
            })
        }
        ApiKind::OpenaiCompletions | ApiKind::OpenaiChat => {
            let w: CompletionWire = serde_json::from_slice(body).map_err(not_json)?;
            match w.choices {
                Some(c) if !c.is_empty() => {}
                _ => return Err(format!("the answer has no \"choices\": {}", snippet(body))),
            }
            Ok(Usage {
                prompt_tokens: w.usage.as_ref().and_then(|u| u.prompt_tokens),
                completion_tokens: w.usage.as_ref().and_then(|u| u.completion_tokens),
            })
        }
    }
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
    line: Vec<u8>,
    data: String,
    pub done: bool,
    pub finished: bool,
    /// Events that carried generated text: the streamed token count.
    pub content_events: u64,
    pub usage: Usage,
}

impl SseStream {
    /// Feeds bytes as they arrive; returns how many content events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<u64, String> {
        let mut events = 0;
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            if self.line.is_empty() {
                events += self.dispatch()?;
            } else {
                let line = std::str::from_utf8(&self.line).map_err(|_| "stream line is not UTF-8".to_string())?;
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
        let chunk: ChunkWire = serde_json::from_str(&data)
            .map_err(|e| format!("stream event is not JSON ({e}): {}", snippet(data.as_bytes())))?;
        if let Some(err) = chunk.error {
            return Err(format!("the server sent an error in the stream: {}", snippet(err.to_string().as_bytes())));
        }
        if let Some(u) = chunk.usage {
            self.usage.prompt_tokens = u.prompt_tokens.or(self.usage.prompt_tokens);
            self.usage.completion_tokens = u.completion_tokens.or(self.usage.completion_tokens);
        }
        let mut content = 0;
        for c in chunk.choices.unwrap_or_default() {
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
mod tests {
    use super::*;
    use crate::loadtest::workload::Prompt;

    fn item(text: &str) -> PromptItem {
        PromptItem { prompt: Prompt::Text(text.into()), max_tokens: None }
    }

    #[test]
    fn api_from_path() {
        assert_eq!(ApiKind::from_path("/generate"), Some(ApiKind::Generate));
        assert_eq!(ApiKind::from_path("/v1/completions"), Some(ApiKind::OpenaiCompletions));
        assert_eq!(ApiKind::from_path("/v1/chat/completions/"), Some(ApiKind::OpenaiChat));
        assert_eq!(ApiKind::from_path("/"), None);
    }

    #[test]
    fn bodies_follow_each_api() {
        let b = build_body(ApiKind::Generate, Some("m"), &item("hi"), 7, true);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, json!({"prompt": "hi", "max_tokens": 7}));
        let b = build_body(ApiKind::OpenaiChat, Some("m"), &item("hi"), 7, true);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["messages"][0]["content"], "hi");
        assert_eq!(v["model"], "m");
        assert_eq!(v["stream_options"]["include_usage"], true);
        let mut it = item("x");
        it.max_tokens = Some(3);
        let v: serde_json::Value =
            serde_json::from_slice(&build_body(ApiKind::OpenaiCompletions, None, &it, 7, false)).unwrap();
        assert_eq!(v["max_tokens"], 3);
        assert!(v.get("stream").is_none());
    }

    #[test]
    fn answers_give_token_counts() {
        let u = parse_answer(ApiKind::Generate, "application/json", br#"{"text":"a","prompt_tokens":3,"completion_tokens":9}"#).unwrap();
        assert_eq!(u, Usage { prompt_tokens: Some(3), completion_tokens: Some(9) });
        let u = parse_answer(ApiKind::Generate, "", br#"{"generated_text":"a"}"#).unwrap();
        assert_eq!(u, Usage::default());
        let e = parse_answer(ApiKind::Generate, "text/html; charset=utf-8", b"<!DOCTYPE html><html>").unwrap_err();
        assert!(e.contains("expected a JSON answer, got text/html"), "{e}");
        let e = parse_answer(ApiKind::Generate, "application/json", br#"{"ok":1}"#).unwrap_err();
        assert!(e.contains("no \"text\""), "{e}");
        let u = parse_answer(ApiKind::OpenaiChat, "application/json", br#"{"choices":[{}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#).unwrap();
        assert_eq!(u.completion_tokens, Some(2));
        assert!(parse_answer(ApiKind::OpenaiChat, "application/json", br#"{"choices":[]}"#).is_err());
    }

    #[test]
    fn sse_counts_content_and_usage_across_split_chunks() {
        let stream = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n\
                      : keep-alive\n\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n\
                      data: [DONE]\n\n";
        let mut s = SseStream::default();
        let mut events = 0;
        for piece in stream.as_bytes().chunks(7) {
            events += s.feed(piece).unwrap();
        }
        events += s.finish().unwrap();
        assert_eq!(events, 2);
        assert_eq!(s.content_events, 2);
        assert_eq!(s.usage, Usage { prompt_tokens: Some(4), completion_tokens: Some(2) });
        assert!(s.done);
    }

    #[test]
    fn truncated_or_broken_streams_are_protocol_errors() {
        let mut s = SseStream::default();
        s.feed(b"data: {\"choices\":[{\"text\":\"a\"}]}\n\n").unwrap();
        assert!(s.finish().unwrap_err().contains("ended before"));
        let mut s = SseStream::default();
        assert!(s.feed(b"data: {oops\n\n").unwrap_err().contains("not JSON"));
        let mut s = SseStream::default();
        assert!(s.feed(b"data: {\"error\":{\"message\":\"boom\"}}\n\n").unwrap_err().contains("boom"));
    }
}
