//! The answers of the OpenAI API and the seed API, typed. Fields are declared in
//! alphabetical order: that is the order the server has always sent them in (serde_json's
//! maps sort their keys), so the bytes stay the same.

use serde::Serialize;

/// `{"error": {...}}`, the body of every error answer.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    /// `model_not_found`, `rate_limit_exceeded` or null.
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// Token counts of a finished generation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub completion_tokens: usize,
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self { completion_tokens, prompt_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

/// A choice of `/v1/completions`, whole or streamed.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub finish_reason: Option<String>,
    pub index: u32,
    /// Always null: log probabilities are refused at validation.
    pub logprobs: Option<()>,
    pub text: String,
}

/// The assistant's message of a whole chat answer.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessageOut {
    pub content: String,
    pub role: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub finish_reason: Option<String>,
    pub index: u32,
    /// Always null: log probabilities are refused at validation.
    pub logprobs: Option<()>,
    pub message: ChatMessageOut,
}

/// What a chat chunk adds: the role (first chunk), text, or nothing (the finish chunk).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChunkChoice {
    pub delta: ChatDelta,
    pub finish_reason: Option<String>,
    pub index: u32,
    pub logprobs: Option<()>,
}

/// An entry of `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub created: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dummy_weights: bool,
    pub id: String,
    /// The context length, once the model is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<usize>,
    pub object: &'static str,
    pub owned_by: &'static str,
}

/// `GET /v1/models`'s answer (`object: "list"`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    pub data: Vec<ModelCard>,
    pub object: &'static str,
}

/// A whole answer of `/v1/completions` (`object: "text_completion"`, choices of
/// [`CompletionChoice`]) or `/v1/chat/completions` (`object: "chat.completion"`, choices of
/// [`ChatChoice`]).
#[derive(Debug, Clone, Serialize)]
pub struct Answer<C> {
    pub choices: Vec<C>,
    pub created: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dummy_weights: bool,
    pub id: String,
    pub model: String,
    pub object: &'static str,
    pub usage: Usage,
}

pub type Completion = Answer<CompletionChoice>;
pub type ChatCompletion = Answer<ChatChoice>;

/// A streamed chunk of either API (choices of [`CompletionChoice`] or [`ChatChunkChoice`]);
/// the usage chunk has no choices and the usage.
#[derive(Debug, Clone, Serialize)]
pub struct Chunk<C> {
    pub choices: Vec<C>,
    pub created: u64,
    pub id: String,
    pub model: String,
    pub object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

pub type CompletionChunk = Chunk<CompletionChoice>;
pub type ChatCompletionChunk = Chunk<ChatChunkChoice>;
