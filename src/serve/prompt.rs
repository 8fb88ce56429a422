//! From a request's prompt to token ids, off the async workers: rendering the chat template and
//! tokenizing are CPU work, so they run on the blocking pool, a bounded number at a time; a text
//! too long for the context is refused by its length before any of that.

use std::sync::Arc;

use axum::http::StatusCode;
use tokio::sync::Semaphore;

use super::model::LoadedModel;
use super::openai::ApiError;
use super::template::{ChatMessage, Part};
use super::ServeError;

/// What a request asks to continue.
pub enum PromptInput {
    /// A raw prompt (`/generate`, `/v1/completions`): control tokens written in it count.
    Text(String),
    /// Chat messages, rendered by the model's template; their content is text throughout.
    Chat(Vec<ChatMessage>),
}

/// Renders and tokenizes on the blocking pool, at most `permits.available_permits()` at once.
pub async fn tokenize(permits: &Semaphore, model: Arc<LoadedModel>, input: PromptInput, field: &'static str) -> Result<Vec<u32>, ApiError> {
    let fault = &super::fault::get().panic_in_handler;
    match &input {
        PromptInput::Text(t) => {
            if t.is_empty() {
                return Err(ApiError::bad(field, format!("{field} must not be empty")));
            }
            check_length(&model, t.len(), field)?;
            if super::fault::triggers(fault, t) {
                panic!("injected fault (panic-in-handler)");
            }
        }
        PromptInput::Chat(m) => {
            if m.iter().any(|m| super::fault::triggers(fault, &m.content)) {
                panic!("injected fault (panic-in-handler)");
            }
        }
    }
    let _permit = permits.acquire().await.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the server is shutting down"))?;
    let ids = tokio::task::spawn_blocking(move || tokenize_now(&model, &input, field))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error while handling this request"))??;
    if ids.is_empty() {
        return Err(ApiError::bad(field, format!("{field} has no tokens")));
    }
    Ok(ids)
}

/// Refuses a text that has more bytes than the context could hold tokens of any length.
fn check_length(model: &LoadedModel, bytes: usize, field: &str) -> Result<(), ApiError> {
    let ctx = model.model.cfg.context;
    let most = ctx.saturating_mul(model.tokenizer.max_token_bytes);
    if bytes > most {
        return Err(ApiError::bad(
            field,
            format!("{field} is {bytes} bytes, more than fit in this model's context of {ctx} tokens (at most {most} bytes); shorten it"),
        ));
    }
    Ok(())
}

fn tokenize_now(model: &LoadedModel, input: &PromptInput, field: &str) -> Result<Vec<u32>, ApiError> {
    let internal = |e: ServeError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.to_string());
    match input {
        PromptInput::Text(t) => model.tokenizer.encode(t).map_err(internal),
        PromptInput::Chat(messages) => {
            let parts: Vec<Part> = model.template.render_parts(messages, |c| model.tokenizer.has_special(c)).map_err(|e| match e {
                ServeError::BadRequest { field, message } => ApiError::bad(&field, message),
                e => internal(e),
            })?;
            check_length(model, parts.iter().map(|p| p.text.len()).sum(), field)?;
            model.tokenizer.encode_parts(&parts).map_err(internal)
        }
    }
}
