//! The native APIs beside OpenAI's: Ollama (`/api/generate`, `/api/chat`; NDJSON streaming,
//! `eval_count`, `prompt_eval_count`) and TGI (`/generate`, `/generate_stream`; `inputs`,
//! `parameters.max_new_tokens`, `details`).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::api::{snippet, BodyOptions, LineBuffer, Usage};
use super::workload::PromptItem;

/// An Ollama body: `options.num_predict` bounds the output; `stream` is always explicit
/// because Ollama streams unless told not to.
pub fn ollama_body(chat: bool, model: Option<&str>, item: &PromptItem, opts: &BodyOptions, max_tokens: u32) -> Value {
    let mut options = Map::new();
    options.insert("num_predict".into(), json!(max_tokens));
    if let Some(t) = opts.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = opts.top_p {
        options.insert("top_p".into(), json!(p));
    }
    let mut body = if chat {
        let messages: Vec<_> =
            item.prompt.as_messages().into_iter().map(|m| json!({ "role": m.role, "content": m.content })).collect();
        json!({ "messages": messages })
    } else {
        json!({ "prompt": item.prompt.as_text() })
    };
    body["model"] = json!(model.unwrap_or_default());
    body["stream"] = json!(opts.stream);
    body["options"] = Value::Object(options);
    body
}

/// A TGI body: `inputs` and `parameters` (`details` on, so the answer carries its token count).
pub fn tgi_body(item: &PromptItem, opts: &BodyOptions, max_tokens: u32) -> Value {
    let mut parameters = Map::new();
    parameters.insert("max_new_tokens".into(), json!(max_tokens));
    parameters.insert("details".into(), json!(true));
    // TGI refuses temperature 0: greedy is its default when sampling is off.
    if let Some(t) = opts.temperature.filter(|t| *t > 0.0) {
        parameters.insert("temperature".into(), json!(t));
        parameters.insert("do_sample".into(), json!(true));
    }
    if let Some(p) = opts.top_p.filter(|p| *p > 0.0 && *p < 1.0) {
        parameters.insert("top_p".into(), json!(p));
    }
    json!({ "inputs": item.prompt.as_text(), "parameters": Value::Object(parameters) })
}

#[derive(Deserialize)]
struct OllamaWire {
    response: Option<String>,
    message: Option<OllamaMessage>,
    done: Option<bool>,
    eval_count: Option<u64>,
    prompt_eval_count: Option<u64>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct OllamaMessage {
    content: Option<String>,
}

impl OllamaWire {
    fn text(&self) -> &str {
        self.response.as_deref().or_else(|| self.message.as_ref().and_then(|m| m.content.as_deref())).unwrap_or("")
    }
}

/// A complete Ollama answer: token counts and text.
pub fn parse_ollama(body: &[u8]) -> Result<(Usage, String), String> {
    let w: OllamaWire = serde_json::from_slice(body).map_err(|e| format!("expected an Ollama JSON answer ({e}): {}", snippet(body)))?;
    if let Some(err) = w.error {
        return Err(format!("the server answered an error: {}", snippet(err.to_string().as_bytes())));
    }
    if w.response.is_none() && w.message.is_none() {
        return Err(format!("the answer has no \"response\" or \"message\": {}", snippet(body)));
    }
    let usage = Usage { prompt_tokens: w.prompt_eval_count, completion_tokens: w.eval_count, cached_tokens: None };
    Ok((usage, w.text().to_string()))
}

#[derive(Deserialize)]
struct TgiWire {
    generated_text: Option<String>,
    details: Option<TgiDetails>,
    token: Option<TgiToken>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct TgiDetails {
    generated_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct TgiToken {
    text: Option<String>,
    special: Option<bool>,
}

/// A complete TGI `/generate` answer (an object, or a one-element array as some versions send).
pub fn parse_tgi(body: &[u8]) -> Result<(Usage, String), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("expected a TGI JSON answer ({e}): {}", snippet(body)))?;
    let v = match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        other => other,
    };
    let w: TgiWire = serde_json::from_value(v).map_err(|e| format!("unexpected TGI answer ({e}): {}", snippet(body)))?;
    if let Some(err) = w.error {
        return Err(format!("the server answered an error: {}", snippet(err.to_string().as_bytes())));
    }
    let text = w.generated_text.ok_or_else(|| format!("the answer has no \"generated_text\": {}", snippet(body)))?;
    let usage = Usage { completion_tokens: w.details.and_then(|d| d.generated_tokens), ..Usage::default() };
    Ok((usage, text))
}

/// One TGI stream event: whether it carried a token, and the counts of the final event.
pub struct TgiEvent {
    pub content: bool,
    pub text: String,
    pub last: bool,
    pub generated_tokens: Option<u64>,
}

pub fn parse_tgi_event(data: &str) -> Result<TgiEvent, String> {
    let w: TgiWire = serde_json::from_str(data).map_err(|e| format!("stream event is not JSON ({e}): {}", snippet(data.as_bytes())))?;
    if let Some(err) = w.error {
        return Err(format!("the server sent an error in the stream: {}", snippet(err.to_string().as_bytes())));
    }
    let (content, text) = match &w.token {
        Some(t) if t.special != Some(true) => (true, t.text.clone().unwrap_or_default()),
        _ => (false, String::new()),
    };
    Ok(TgiEvent {
        content,
        text,
        last: w.generated_text.is_some() || w.details.is_some(),
        generated_tokens: w.details.and_then(|d| d.generated_tokens),
    })
}

/// Incremental reader of an Ollama NDJSON stream: one JSON object a line, the last with `"done": true`.
#[derive(Debug, Default)]
pub struct NdjsonStream {
    line: LineBuffer,
    pub done: bool,
    pub content_events: u64,
    pub usage: Usage,
    pub text: Option<String>,
}

impl NdjsonStream {
    pub fn new(capture_text: bool) -> Self {
        NdjsonStream { text: capture_text.then(String::new), ..NdjsonStream::default() }
    }

    /// Feeds bytes as they arrive; returns how many content lines they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<u64, String> {
        let mut events = 0;
        for &b in bytes {
            if self.line.push(b)? {
                events += self.dispatch()?;
            }
        }
        Ok(events)
    }

    pub fn finish(&mut self) -> Result<u64, String> {
        let events = self.dispatch()?;
        if !self.done {
            return Err(format!(
                "the stream ended before a line with \"done\": true after {} chunks (truncated answer)",
                self.content_events
            ));
        }
        Ok(events)
    }

    fn dispatch(&mut self) -> Result<u64, String> {
        let text = std::str::from_utf8(self.line.line()).map_err(|_| "stream line is not UTF-8".to_string())?.trim();
        if text.is_empty() {
            self.line.clear();
            return Ok(0);
        }
        let w: OllamaWire =
            serde_json::from_str(text).map_err(|e| format!("stream line is not JSON ({e}): {}", snippet(text.as_bytes())))?;
        self.line.clear();
        if let Some(err) = &w.error {
            return Err(format!("the server sent an error in the stream: {}", snippet(err.to_string().as_bytes())));
        }
        let piece = w.text();
        let content = u64::from(!piece.is_empty());
        if let Some(t) = self.text.as_mut() {
            t.push_str(piece);
        }
        if w.done == Some(true) {
            self.done = true;
            self.usage.completion_tokens = w.eval_count.or(self.usage.completion_tokens);
            self.usage.prompt_tokens = w.prompt_eval_count.or(self.usage.prompt_tokens);
        }
        self.content_events += content;
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::workload::Prompt;

    fn item() -> PromptItem {
        PromptItem { prompt: Prompt::Text("hi".into()), max_tokens: None }
    }

    #[test]
    fn bodies_speak_each_wire() {
        let opts = BodyOptions { max_tokens: 7, temperature: Some(0.0), ..BodyOptions::default() };
        let v = ollama_body(false, Some("llama3"), &item(), &opts, 7);
        assert_eq!(v, json!({"prompt": "hi", "model": "llama3", "stream": false, "options": {"num_predict": 7, "temperature": 0.0}}));
        let v = ollama_body(true, Some("llama3"), &item(), &BodyOptions { stream: true, ..opts.clone() }, 7);
        assert_eq!(v["messages"][0]["role"], "user");
        assert_eq!(v["stream"], true);
        let v = tgi_body(&item(), &opts, 7);
        assert_eq!(v, json!({"inputs": "hi", "parameters": {"max_new_tokens": 7, "details": true}}));
    }

    #[test]
    fn answers_give_counts_and_text() {
        let (u, t) = parse_ollama(br#"{"model":"m","response":"Hi!","done":true,"eval_count":3,"prompt_eval_count":9}"#).unwrap();
        assert_eq!((u.completion_tokens, u.prompt_tokens, t.as_str()), (Some(3), Some(9), "Hi!"));
        let (_, t) = parse_ollama(br#"{"message":{"role":"assistant","content":"yo"},"done":true}"#).unwrap();
        assert_eq!(t, "yo");
        assert!(parse_ollama(br#"{"error":"model not found"}"#).unwrap_err().contains("model not found"));
        let (u, t) = parse_tgi(br#"{"generated_text":" Paris","details":{"finish_reason":"length","generated_tokens":2}}"#).unwrap();
        assert_eq!((u.completion_tokens, t.as_str()), (Some(2), " Paris"));
        assert!(parse_tgi(br#"[{"generated_text":"x"}]"#).is_ok());
        assert!(parse_tgi(br#"{"error":"overloaded","error_type":"overloaded"}"#).unwrap_err().contains("overloaded"));
    }

    #[test]
    fn ndjson_streams_count_lines_and_end_at_done() {
        let stream = b"{\"response\":\"a\",\"done\":false}\n{\"response\":\"b\",\"done\":false}\n{\"response\":\"\",\"done\":true,\"eval_count\":2,\"prompt_eval_count\":5}\n";
        let mut s = NdjsonStream { text: Some(String::new()), ..NdjsonStream::default() };
        let mut events = 0;
        for piece in stream.chunks(5) {
            events += s.feed(piece).unwrap();
        }
        events += s.finish().unwrap();
        assert_eq!(events, 2);
        assert_eq!(s.usage.completion_tokens, Some(2));
        assert_eq!(s.text.as_deref(), Some("ab"));
        let mut t = NdjsonStream::default();
        t.feed(b"{\"response\":\"a\",\"done\":false}\n").unwrap();
        assert!(t.finish().unwrap_err().contains("truncated"));
    }

    #[test]
    fn tgi_stream_events() {
        let e = parse_tgi_event(r#"{"token":{"id":1,"text":" P","logprob":-0.1,"special":false},"generated_text":null,"details":null}"#).unwrap();
        assert!(e.content && !e.last && e.text == " P");
        let e = parse_tgi_event(r#"{"token":{"id":2,"text":"</s>","special":true},"generated_text":" P","details":{"generated_tokens":2}}"#).unwrap();
        assert!(!e.content && e.last && e.generated_tokens == Some(2));
    }
}
