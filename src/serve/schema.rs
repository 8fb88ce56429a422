//! OpenAI request fields this server type-checks but does not implement: a request that asks
//! for one of them (a non-default value) gets a 400 naming it instead of an answer that quietly
//! ignores it.

use super::openai::ApiError;

/// The OpenAI fields beyond sampling, as far as they matter for the answer.
#[derive(Debug, Clone, Default)]
pub struct OpenAiFields {
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Entries in `logit_bias`.
    pub logit_bias: usize,
    /// `logprobs` (or `top_logprobs`) asked for.
    pub logprobs: bool,
    pub echo: bool,
    pub best_of: Option<i64>,
    /// A non-empty `suffix`.
    pub suffix: bool,
    /// `response_format.type`.
    pub response_format: Option<String>,
    /// Entries in `tools`.
    pub tools: usize,
}

impl OpenAiFields {
    /// Refuses what the server cannot honour.
    pub fn check(&self) -> Result<(), ApiError> {
        for (field, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            match v {
                Some(p) if !(-2.0..=2.0).contains(&p) => return Err(ApiError::bad(field, format!("{field} must be between -2 and 2 (got {p})"))),
                Some(p) if p != 0.0 => {
                    return Err(ApiError::bad(field, format!("{field} is not supported by this server (only 0); use repetition_penalty")))
                }
                _ => {}
            }
        }
        let unsupported = |field: &str, what: &str| Err(ApiError::bad(field, format!("{field}: {what} is not supported by this server; leave it out")));
        if self.logit_bias > 0 {
            return unsupported("logit_bias", "a logit bias");
        }
        if self.logprobs {
            return unsupported("logprobs", "returning log probabilities");
        }
        if self.echo {
            return unsupported("echo", "echoing the prompt");
        }
        match self.best_of {
            Some(n) if n < 1 => return Err(ApiError::bad("best_of", format!("best_of must be at least 1 (got {n})"))),
            Some(n) if n > 1 => return unsupported("best_of", "more than one candidate"),
            _ => {}
        }
        if self.suffix {
            return unsupported("suffix", "a suffix (insertion)");
        }
        if let Some(kind) = self.response_format.as_deref().filter(|k| *k != "text") {
            return Err(ApiError::bad("response_format", format!("response_format `{kind}` is not supported by this server (only `text`)")));
        }
        if self.tools > 0 {
            return unsupported("tools", "tool calling");
        }
        Ok(())
    }
}
