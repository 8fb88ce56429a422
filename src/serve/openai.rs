//! Request bodies of `/generate`, `/v1/completions` and `/v1/chat/completions`, their
//! validation into [`SamplingParams`], the OpenAI-style error body, and the answers (see
//! [`responses`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::limits::{MAX_STOP_BYTES, MAX_STOP_STRINGS};
use super::responses::{ErrorBody, ErrorDetail};
use super::sampling::SamplingParams;
use super::schema::OpenAiFields;
use super::template::ChatMessage;

/// An API error: status, message, the offending field and an OpenAI error type.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub kind: &'static str,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), param: Some(param.to_string()), kind: "invalid_request_error", retry_after: None }
    }
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, kind, retry_after: None }
    }
    /// The error body sent to the client.
    pub fn error_body(&self) -> ErrorBody {
        let code = match self.status {
            StatusCode::NOT_FOUND if self.param.as_deref() == Some("model") => Some("model_not_found"),
            StatusCode::TOO_MANY_REQUESTS => Some("rate_limit_exceeded"),
            _ => None,
        };
        ErrorBody { error: ErrorDetail { code, message: self.message.clone(), param: self.param.clone(), kind: self.kind } }
    }

    /// [`Self::error_body`] as a JSON value.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self.error_body()).unwrap_or(serde_json::Value::Null)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.error_body())).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = secs.to_string().parse() {
                resp.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Parses a JSON body, naming the field that is wrong.
pub fn parse_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad("body", "the request body is empty; send a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad("body", format!("the request body is not valid JSON: {inner}"));
        }
        let msg = inner.to_string();
        // serde names a missing field in its message, not in the path.
        let field = match msg.split('`').nth(1) {
            Some(f) if msg.starts_with("missing field") => {
                if path == "." { f.to_string() } else { format!("{path}.{f}") }
            }
            _ if path == "." => "body".to_string(),
            _ => path,
        };
        ApiError::bad(&field, format!("{field}: {msg}"))
    })
}

/// A string or a list of strings (`stop`, `prompt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Sampling fields shared by all three endpoints.
#[derive(Debug, Clone, Default)]
pub struct SamplingFields {
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub seed: Option<u64>,
    pub stop: Option<OneOrMany>,
    pub repetition_penalty: Option<f64>,
    pub n: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub openai: OpenAiFields,
}

/// Per-endpoint defaults.
pub struct Defaults {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
}

impl SamplingFields {
    pub fn validate(self, d: Defaults, max_tokens_limit: usize) -> Result<SamplingParams, ApiError> {
        let (field, max_tokens) = match (self.max_tokens, self.max_completion_tokens) {
            (Some(v), _) => ("max_tokens", Some(v)),
            (None, Some(v)) => ("max_completion_tokens", Some(v)),
            _ => ("max_tokens", None),
        };
        let max_tokens = match max_tokens {
            None => d.max_tokens.min(max_tokens_limit),
            Some(v) if v < 1 => return Err(ApiError::bad(field, format!("{field} must be at least 1 (got {v})"))),
            Some(v) if v as u64 > max_tokens_limit as u64 => {
                return Err(ApiError::bad(field, format!("{field} {v} is above this server's limit of {max_tokens_limit}")))
            }
            Some(v) => v as usize,
        };
        let temperature = match self.temperature {
            None => d.temperature,
            Some(t) if !(0.0..=100.0).contains(&t) => {
                return Err(ApiError::bad("temperature", format!("temperature must be between 0 and 100 (got {t})")))
            }
            Some(t) => t as f32,
        };
        let top_p = match self.top_p {
            None => d.top_p,
            Some(p) if !(p > 0.0 && p <= 1.0) => return Err(ApiError::bad("top_p", format!("top_p must be in (0, 1] (got {p})"))),
            Some(p) => p as f32,
        };
        let top_k = match self.top_k {
            None => 0,
            Some(k) if k < 0 => return Err(ApiError::bad("top_k", format!("top_k must be 0 (off) or more (got {k})"))),
            Some(k) => k as usize,
        };
        let repetition_penalty = match self.repetition_penalty {
            None => 1.0,
            Some(r) if !(r > 0.0 && r <= 10.0) => {
                return Err(ApiError::bad("repetition_penalty", format!("repetition_penalty must be in (0, 10] (got {r})")))
            }
            Some(r) => r as f32,
        };
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::bad("n", format!("only n=1 is supported (got {n})")));
            }
        }
        let stop = self.stop.map(OneOrMany::into_vec).unwrap_or_default();
        if stop.len() > MAX_STOP_STRINGS {
            return Err(ApiError::bad("stop", format!("at most {MAX_STOP_STRINGS} stop strings (got {})", stop.len())));
        }
        if stop.iter().any(|s| s.is_empty()) {
            return Err(ApiError::bad("stop", "stop strings must not be empty"));
        }
        if let Some(s) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::bad("stop", format!("a stop string may be at most {MAX_STOP_BYTES} bytes (got one of {})", s.len())));
        }
        self.openai.check()?;
        Ok(SamplingParams { temperature, top_p, top_k, seed: self.seed, repetition_penalty, stop, max_tokens, ignore_eos: self.ignore_eos.unwrap_or(false) })
    }
}

/// Declares a request body with the sampling fields inline (serde's `flatten` would lose the
/// field names in error messages).
macro_rules! body_with_sampling {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Deserialize)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            pub max_tokens: Option<i64>,
            pub max_completion_tokens: Option<i64>,
            pub temperature: Option<f64>,
            pub top_p: Option<f64>,
            pub top_k: Option<i64>,
            pub seed: Option<u64>,
            pub stop: Option<OneOrMany>,
            pub repetition_penalty: Option<f64>,
            pub n: Option<i64>,
            pub ignore_eos: Option<bool>,
            pub presence_penalty: Option<f64>,
            pub frequency_penalty: Option<f64>,
            pub logit_bias: Option<std::collections::HashMap<String, f64>>,
            /// Type-checked, not used.
            #[allow(dead_code)]
            pub user: Option<String>,
        }
        impl $name {
            pub fn sampling(&self) -> SamplingFields {
                SamplingFields {
                    max_tokens: self.max_tokens,
                    max_completion_tokens: self.max_completion_tokens,
                    temperature: self.temperature,
                    top_p: self.top_p,
                    top_k: self.top_k,
                    seed: self.seed,
                    stop: self.stop.clone(),
                    repetition_penalty: self.repetition_penalty,
                    n: self.n,
                    ignore_eos: self.ignore_eos,
                    openai: OpenAiFields {
                        presence_penalty: self.presence_penalty,
                        frequency_penalty: self.frequency_penalty,
                        logit_bias: self.logit_bias.as_ref().map_or(0, |m| m.len()),
                        ..self.extra_fields()
                    },
                }
            }
        }
    };
}

body_with_sampling! {
    /// `POST /generate`.
    pub struct GenerateBody {
        pub prompt: String,
    }
}

impl GenerateBody {
    fn extra_fields(&self) -> OpenAiFields {
        OpenAiFields::default()
    }
}

/// `POST /generate`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct GenerateResponse {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: String,
    pub latency_ms: f64,
    pub model: String,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub dummy_weights: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

body_with_sampling! {
    /// `POST /v1/completions`.
    pub struct CompletionBody {
        pub model: Option<String>,
        pub prompt: OneOrMany,
        #[serde(default)]
        pub stream: bool,
        pub stream_options: Option<StreamOptions>,
        pub logprobs: Option<u32>,
        pub echo: Option<bool>,
        pub best_of: Option<i64>,
        pub suffix: Option<String>,
    }
}

impl CompletionBody {
    fn extra_fields(&self) -> OpenAiFields {
        OpenAiFields {
            logprobs: self.logprobs.is_some_and(|n| n > 0),
            echo: self.echo.unwrap_or(false),
            best_of: self.best_of,
            suffix: self.suffix.as_ref().is_some_and(|s| !s.is_empty()),
            ..Default::default()
        }
    }

    pub fn prompt_text(&self) -> Result<String, ApiError> {
        match &self.prompt {
            OneOrMany::One(s) => Ok(s.clone()),
            OneOrMany::Many(v) if v.len() == 1 => Ok(v[0].clone()),
            OneOrMany::Many(_) => Err(ApiError::bad("prompt", "send one prompt per request (a string or a list of one string)")),
        }
    }
}

/// Message content: a string or a list of text parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of content parts ({\"type\": \"text\", \"text\": ...})")]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InMessage {
    pub role: String,
    pub content: Option<Content>,
}

body_with_sampling! {
    /// `POST /v1/chat/completions`.
    pub struct ChatBody {
        pub model: Option<String>,
        pub messages: Vec<InMessage>,
        #[serde(default)]
        pub stream: bool,
        pub stream_options: Option<StreamOptions>,
        pub logprobs: Option<bool>,
        pub top_logprobs: Option<u32>,
        pub response_format: Option<ResponseFormat>,
        pub tools: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
        #[allow(dead_code)]
        pub tool_choice: Option<serde_json::Value>,
        #[allow(dead_code)]
        pub parallel_tool_calls: Option<bool>,
        #[allow(dead_code)]
        pub store: Option<bool>,
        #[allow(dead_code)]
        pub metadata: Option<std::collections::HashMap<String, String>>,
    }
}

/// `response_format`: only `{"type": "text"}` is served.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
}

impl ChatBody {
    fn extra_fields(&self) -> OpenAiFields {
        OpenAiFields {
            logprobs: self.logprobs.unwrap_or(false) || self.top_logprobs.is_some_and(|n| n > 0),
            response_format: self.response_format.as_ref().map(|f| f.kind.clone()),
            tools: self.tools.as_ref().map_or(0, Vec::len),
            ..Default::default()
        }
    }

    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad("messages", "messages must hold at least one message"));
        }
        let mut out = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "developer" | "tool") {
                return Err(ApiError::bad(&format!("messages[{i}].role"), format!("unknown role `{}`", m.role)));
            }
            let content = match &m.content {
                None if m.role == "assistant" => String::new(),
                None => return Err(ApiError::bad(&format!("messages[{i}].content"), format!("messages[{i}].content is required for the role `{}`", m.role))),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            ("text", None) => {
                                return Err(ApiError::bad(&format!("messages[{i}].content[{j}].text"), format!("messages[{i}].content[{j}].text is required for a text part")))
                            }
                            _ => {
                                return Err(ApiError::bad(
                                    &format!("messages[{i}].content[{j}]"),
                                    format!("only text parts are supported (got type `{}`)", p.kind),
                                ))
                            }
                        }
                    }
                    s
                }
            };
            let role = if m.role == "developer" { "system".to_string() } else { m.role.clone() };
            out.push(ChatMessage { role, content });
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
