//! The router and the handlers of the HTTP API (axum); streamed answers are in `sse`, the API
//! key in `auth`, admission in `limits`.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::auth::require_key;
use super::engine::{Event, GenRequest};
use super::limits::admit;
use super::openai::{parse_body, ApiError, ChatBody, CompletionBody, Defaults, GenerateBody, GenerateResponse};
use super::responses::{
    ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatDelta, ChatMessageOut, Completion, CompletionChoice,
    CompletionChunk, ModelCard, ModelList, Usage,
};
use super::prompt::{self, PromptInput};
use super::sampling::SamplingParams;
use super::sse::sse;
use super::state::{AppState, Loaded};

pub fn build_router(state: AppState) -> Router {
    let api = Router::new()
        .route("/generate", post(generate))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    // Probes stay open; /metrics takes the key with --metrics-auth.
    let mut metrics_route = Router::new().route("/metrics", get(metrics));
    if state.0.metrics_auth {
        metrics_route = metrics_route.route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    }
    Router::new()
        .merge(api)
        .merge(metrics_route)
        .route("/health", get(|| async { Json(Probe::status("ok")) }))
        .route("/ready", get(ready))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found_error", "no such route; see /v1/models, /generate, /v1/completions, /v1/chat/completions") })
        .layer(axum::extract::DefaultBodyLimit::max(super::limits::MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts requests by route and status, tags them with a request id, and turns a panic in a
/// handler into a 500 for that request alone.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("req-{}", state.0.next_id.fetch_add(1, Ordering::Relaxed)));
    let mut req = req;
    req.extensions_mut().insert(RequestId(id.clone()));
    tracing::debug!(request_id = %id, route = %route, "request");
    let mut resp = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(request_id = %id, "handler panicked; answered 500");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error while handling this request").into_response()
        }
    };
    state.0.metrics.count_request(&route, resp.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

#[derive(Clone)]
struct RequestId(String);

/// The body of `/health` and `/ready` (fields in alphabetical order, as always sent).
#[derive(Serialize)]
struct Probe {
    #[serde(skip_serializing_if = "Option::is_none")]
    dummy_weights: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    status: &'static str,
}

impl Probe {
    fn status(status: &'static str) -> Self {
        Self { dummy_weights: None, model: None, status }
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.0.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(Probe::status("shutting down"))).into_response();
    }
    match state.0.loaded.get() {
        Some(l) => Json(Probe { dummy_weights: Some(l.model.dummy), model: Some(state.0.name.clone()), status: "ready" }).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(Probe::status("loading"))).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.0.metrics.render()).into_response()
}

async fn models(State(state): State<AppState>) -> Response {
    let loaded = state.0.loaded.get();
    let card = ModelCard {
        created: now_secs(),
        dummy_weights: loaded.is_some_and(|l| l.model.dummy),
        id: state.0.name.clone(),
        max_model_len: loaded.map(|l| l.model.model.cfg.context),
        object: "model",
        owned_by: "gpubench",
    };
    Json(ModelList { data: vec![card], object: "list" }).into_response()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Tokenizes (off the async workers) and checks the prompt.
async fn prepare(state: &AppState, loaded: &Loaded, input: PromptInput, field: &'static str) -> Result<Vec<u32>, ApiError> {
    prompt::tokenize(&state.0.prep, Arc::clone(&loaded.model), input, field).await
}

/// Checks lengths and hands the request to the engine.
fn submit(state: &AppState, loaded: &Loaded, ids: Vec<u32>, prompt_field: &str, params: SamplingParams, id: String) -> Result<(UnboundedReceiver<Event>, usize), ApiError> {
    let ctx = loaded.model.model.cfg.context;
    if ids.len() >= ctx {
        return Err(ApiError::bad(prompt_field, format!("{prompt_field} is {} tokens; this model's context is {ctx}", ids.len())));
    }
    let kv = state.0.limits.lock().max_kv_tokens;
    if ids.len() + params.max_tokens > ctx.min(kv) {
        let limit = ctx.min(kv);
        return Err(ApiError::bad(
            "max_tokens",
            format!("prompt ({} tokens) + max_tokens ({}) exceeds the {limit} tokens a request may use; lower max_tokens", ids.len(), params.max_tokens),
        ));
    }
    let n = ids.len();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let req = GenRequest { id, prompt: ids, params, events: tx, arrived: Instant::now() };
    if !loaded.engine.submit(req) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the engine has stopped"));
    }
    Ok((rx, n))
}

/// Collects a whole generation (non-streamed answers).
async fn collect(mut rx: UnboundedReceiver<Event>) -> Result<(String, String, usize, usize), ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done { finish_reason, prompt_tokens, completion_tokens } => {
                return Ok((text, finish_reason.as_str().to_string(), prompt_tokens, completion_tokens))
            }
            Event::Error(e) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e)),
        }
    }
    Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the engine dropped the request"))
}

async fn generate(State(state): State<AppState>, axum::Extension(rid): axum::Extension<RequestId>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body: GenerateBody = parse_body(&body)?;
    let (_slot, loaded) = admit(&state, None)?;
    let params = body.sampling().validate(Defaults { max_tokens: 150, temperature: 0.7, top_p: 0.9 }, state.0.max_tokens_limit)?;
    let ids = prepare(&state, loaded, PromptInput::Text(body.prompt), "prompt").await?;
    let (rx, _) = submit(&state, loaded, ids, "prompt", params, rid.0)?;
    let (text, finish_reason, prompt_tokens, completion_tokens) = collect(rx).await?;
    Ok(Json(GenerateResponse {
        text,
        prompt_tokens,
        completion_tokens,
        finish_reason,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        model: state.0.name.clone(),
        dummy_weights: loaded.model.dummy,
    })
    .into_response())
}

async fn completions(State(state): State<AppState>, axum::Extension(rid): axum::Extension<RequestId>, body: Bytes) -> Result<Response, ApiError> {
    let body: CompletionBody = parse_body(&body)?;
    let (slot, loaded) = admit(&state, body.model.as_deref())?;
    let prompt = body.prompt_text()?;
    let params = body.sampling().validate(Defaults { max_tokens: 16, temperature: 1.0, top_p: 1.0 }, state.0.max_tokens_limit)?;
    let id = format!("cmpl-{}", rid.0);
    let ids = prepare(&state, loaded, PromptInput::Text(prompt), "prompt").await?;
    let (rx, _) = submit(&state, loaded, ids, "prompt", params, rid.0)?;
    let (created, model, dummy) = (now_secs(), state.0.name.clone(), loaded.model.dummy);
    if body.stream {
        let include_usage = body.stream_options.map(|o| o.include_usage).unwrap_or(false);
        let base = CompletionChunk { choices: Vec::new(), created, id, model, object: "text_completion", usage: None };
        let b2 = base.clone();
        let chunk = move |text: &str, finish: Option<&str>| CompletionChunk {
            choices: vec![CompletionChoice { finish_reason: finish.map(str::to_string), index: 0, logprobs: None, text: text.to_string() }],
            ..b2.clone()
        };
        let usage_chunk = move |p, c| CompletionChunk { usage: Some(Usage::new(p, c)), ..base.clone() };
        return Ok(sse(rx, slot, chunk, None, include_usage, usage_chunk));
    }
    let (text, finish, p, c) = collect(rx).await?;
    drop(slot);
    Ok(Json(Completion {
        choices: vec![CompletionChoice { finish_reason: Some(finish), index: 0, logprobs: None, text }],
        created,
        dummy_weights: dummy,
        id,
        model,
        object: "text_completion",
        usage: Usage::new(p, c),
    })
    .into_response())
}

async fn chat(State(state): State<AppState>, axum::Extension(rid): axum::Extension<RequestId>, body: Bytes) -> Result<Response, ApiError> {
    let body: ChatBody = parse_body(&body)?;
    let (slot, loaded) = admit(&state, body.model.as_deref())?;
    let messages = body.chat_messages()?;
    let params = body.sampling().validate(Defaults { max_tokens: 512, temperature: 1.0, top_p: 1.0 }, state.0.max_tokens_limit)?;
    let id = format!("chatcmpl-{}", rid.0);
    let ids = prepare(&state, loaded, PromptInput::Chat(messages), "messages").await?;
    let (rx, _) = submit(&state, loaded, ids, "messages", params, rid.0)?;
    let (created, model, dummy) = (now_secs(), state.0.name.clone(), loaded.model.dummy);
    if body.stream {
        let include_usage = body.stream_options.map(|o| o.include_usage).unwrap_or(false);
        let base = ChatCompletionChunk { choices: Vec::new(), created, id, model, object: "chat.completion.chunk", usage: None };
        let one = |delta: ChatDelta, finish: Option<&str>| vec![ChatChunkChoice { delta, finish_reason: finish.map(str::to_string), index: 0, logprobs: None }];
        let first = ChatCompletionChunk {
            choices: one(ChatDelta { content: Some(String::new()), role: Some("assistant") }, None),
            ..base.clone()
        };
        let b2 = base.clone();
        let chunk = move |text: &str, finish: Option<&str>| {
            let delta = if finish.is_some() && text.is_empty() { ChatDelta::default() } else { ChatDelta { content: Some(text.to_string()), role: None } };
            ChatCompletionChunk { choices: one(delta, finish), ..b2.clone() }
        };
        let usage_chunk = move |p, c| ChatCompletionChunk { usage: Some(Usage::new(p, c)), ..base.clone() };
        return Ok(sse(rx, slot, chunk, Some(first), include_usage, usage_chunk));
    }
    let (text, finish, p, c) = collect(rx).await?;
    drop(slot);
    Ok(Json(ChatCompletion {
        choices: vec![ChatChoice { finish_reason: Some(finish), index: 0, logprobs: None, message: ChatMessageOut { content: text, role: "assistant" } }],
        created,
        dummy_weights: dummy,
        id,
        model,
        object: "chat.completion",
        usage: Usage::new(p, c),
    })
    .into_response())
}
