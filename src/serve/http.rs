//! The HTTP API (axum): routes, admission (queue bound, API key), streaming, shutdown.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::FutureExt;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use super::engine::{self, EngineHandle, EngineLimits, Event, GenRequest};
use super::auth::require_key;
use super::metrics::Metrics;
use super::model::{self, load_model_with, LoadOptions, LoadedModel, ModelSource};
use super::prompt::{self, PromptInput};
use super::sse::sse;
use super::openai::{parse_body, ApiError, ChatBody, CompletionBody, Defaults, GenerateBody, GenerateResponse};
use super::sampling::SamplingParams;
use super::{ServeArgs, ServeError};

/// The loaded model and its engine.
pub struct Loaded {
    pub model: Arc<LoadedModel>,
    pub engine: EngineHandle,
}

struct Inner {
    name: String,
    api_key: Option<String>,
    metrics_auth: bool,
    limits: parking_lot::Mutex<EngineLimits>,
    max_tokens_limit: usize,
    max_model_len: Option<usize>,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    next_id: AtomicU64,
    loaded: OnceLock<Loaded>,
    /// The KV cache chosen at load, for the startup line.
    capacity: OnceLock<String>,
    draining: AtomicBool,
    shutdown: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// Bounds the prompts rendered and tokenized at once (CPU work on the blocking pool).
    prep: tokio::sync::Semaphore,
}

/// Shared server state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(name: String, args: &ServeArgs) -> Self {
        let limits = EngineLimits {
            max_batch_size: args.max_batch_size as usize,
            max_batched_tokens: args.max_batched_tokens as usize,
            max_kv_tokens: args.max_kv_tokens.map_or(super::DEFAULT_KV_TOKENS, |n| n as usize),
        };
        let (shutdown, _) = watch::channel(false);
        Self(Arc::new(Inner {
            name,
            api_key: args.api_key.clone().filter(|k| !k.is_empty()),
            metrics_auth: args.metrics_auth(),
            limits: parking_lot::Mutex::new(limits),
            max_tokens_limit: args.max_tokens_limit as usize,
            max_model_len: args.max_model_len,
            max_in_flight: args.max_batch_size as usize + args.max_queue as usize,
            in_flight: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            loaded: OnceLock::new(),
            capacity: OnceLock::new(),
            draining: AtomicBool::new(false),
            shutdown,
            metrics: Arc::new(Metrics::default()),
            prep: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }))
    }

    /// Installs a loaded model and starts its engine.
    pub fn install(&self, mut model: LoadedModel) {
        if let Some(n) = self.0.max_model_len {
            model.model.cfg.context = model.model.cfg.context.min(n.max(2));
        }
        let model = Arc::new(model);
        let engine = engine::start(Arc::clone(&model), *self.0.limits.lock(), Arc::clone(&self.0.metrics));
        let _ = self.0.loaded.set(Loaded { model, engine });
    }

    /// The API key, when one is set.
    pub fn api_key(&self) -> Option<&str> {
        self.0.api_key.as_deref()
    }

    /// The KV cache chosen at load (empty before).
    pub fn capacity_line(&self) -> &str {
        self.0.capacity.get().map_or("", String::as_str)
    }

    fn set_kv_limit(&self, tokens: usize) {
        self.0.limits.lock().max_kv_tokens = tokens;
    }

    /// Resolves once shutdown has been asked for.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.0.shutdown.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Starts a graceful shutdown (as SIGTERM does).
    pub fn request_shutdown(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
        self.0.shutdown.send_replace(true);
    }
}

/// Loads the model (blocking) and installs it.
pub fn load_into(state: &AppState, source: &ModelSource, device: &candle_core::Device, args: &ServeArgs) -> Result<(), ServeError> {
    if let Some(delay) = super::fault::get().load_delay {
        std::thread::sleep(delay);
    }
    let started = Instant::now();
    let opts = LoadOptions { dtype: args.dtype, ..LoadOptions::default() };
    let mut model = load_model_with(source, device, &opts)?;
    model.model.cfg.context = model.model.cfg.context.min(32_768);
    let (kv_tokens, note) = super::memory::kv_limit(&model, device, args)?;
    state.set_kv_limit(kv_tokens);
    // The pool holds the engine's bound plus a block of rounding per running sequence; with a
    // memory share on CUDA it is taken whole now.
    let slots = kv_tokens + args.max_batch_size as usize * model::KV_BLOCK;
    let allocate = args.gpu_memory_fraction.is_some() && device.is_cuda();
    model.model.set_kv_capacity(slots, allocate).map_err(|e| ServeError::Model(format!("cannot allocate the KV cache of {slots} tokens: {e}")))?;
    let kv_gib = (slots * model.model.kv_bytes_per_token()) as f64 / (1u64 << 30) as f64;
    let line = format!("KV cache {kv_tokens} tokens, {kv_gib:.2} GiB{}{note}", if allocate { " allocated" } else { " at most" });
    tracing::info!("{line}");
    let _ = state.0.capacity.set(line);
    if model.dummy {
        tracing::warn!("serving RANDOM weights (--load-format dummy): the text is meaningless, the speed is real");
    }
    tracing::info!("model loaded in {:.1}s ({})", started.elapsed().as_secs_f64(), model.model.describe());
    state.install(model);
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C (or [`AppState::request_shutdown`]), then lets axum drain.
pub async fn shutdown_signal(state: AppState) {
    let requested = state.shutdown_requested();
    tokio::select! {
        _ = crate::support::cli::stop_signal() => {},
        _ = requested => {},
    }
    eprintln!("gpubench serve: shutting down (no new requests; in-flight ones may finish)");
    state.request_shutdown();
}

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
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
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

async fn ready(State(state): State<AppState>) -> Response {
    if state.0.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting down"}))).into_response();
    }
    match state.0.loaded.get() {
        Some(l) => Json(json!({"status": "ready", "model": state.0.name, "dummy_weights": l.model.dummy})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.0.metrics.render()).into_response()
}

async fn models(State(state): State<AppState>) -> Response {
    let loaded = state.0.loaded.get();
    let mut m = json!({"id": state.0.name, "object": "model", "created": now_secs(), "owned_by": "gpubench"});
    if let Some(l) = loaded {
        m["max_model_len"] = json!(l.model.model.cfg.context);
        if l.model.dummy {
            m["dummy_weights"] = json!(true);
        }
    }
    Json(json!({"object": "list", "data": [m]})).into_response()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A slot in the bounded queue, given back when dropped (also when a client goes away).
pub(super) struct Slot(AppState);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0 .0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks readiness and the queue bound, validates the model name.
fn admit<'a>(state: &'a AppState, model: Option<&str>) -> Result<(Slot, &'a Loaded), ApiError> {
    if state.0.draining.load(Ordering::SeqCst) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the server is shutting down"));
    }
    let Some(loaded) = state.0.loaded.get() else {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the model is still loading; retry when GET /ready answers 200");
        e.retry_after = Some(2);
        return Err(e);
    };
    if let Some(m) = model {
        if m != state.0.name {
            let mut e = ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("model `{m}` is not served here; this server serves `{}`", state.0.name));
            e.param = Some("model".into());
            return Err(e);
        }
    }
    let prev = state.0.in_flight.fetch_add(1, Ordering::SeqCst);
    let slot = Slot(state.clone());
    if prev >= state.0.max_in_flight {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("the server is at capacity ({} running or queued); retry later", state.0.max_in_flight),
        );
        e.retry_after = Some(1);
        return Err(e);
    }
    Ok((slot, loaded))
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

fn usage(p: usize, c: usize) -> serde_json::Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
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
        let base = json!({"id": id, "object": "text_completion", "created": created, "model": model});
        let chunk = move |text: &str, finish: Option<&str>| {
            let mut c = base.clone();
            c["choices"] = json!([{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}]);
            c
        };
        let usage_chunk = {
            let base = json!({"id": id, "object": "text_completion", "created": created, "model": model});
            move |p, c| {
                let mut u = base.clone();
                u["choices"] = json!([]);
                u["usage"] = usage(p, c);
                u
            }
        };
        return Ok(sse(rx, slot, chunk, None, include_usage, usage_chunk));
    }
    let (text, finish, p, c) = collect(rx).await?;
    drop(slot);
    let mut out = json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}],
        "usage": usage(p, c),
    });
    if dummy {
        out["dummy_weights"] = json!(true);
    }
    Ok(Json(out).into_response())
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
        let base = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model});
        let first = {
            let mut c = base.clone();
            c["choices"] = json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null, "logprobs": null}]);
            c
        };
        let b2 = base.clone();
        let chunk = move |text: &str, finish: Option<&str>| {
            let mut c = b2.clone();
            let delta = if finish.is_some() && text.is_empty() { json!({}) } else { json!({"content": text}) };
            c["choices"] = json!([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]);
            c
        };
        let usage_chunk = move |p, c| {
            let mut u = base.clone();
            u["choices"] = json!([]);
            u["usage"] = usage(p, c);
            u
        };
        return Ok(sse(rx, slot, chunk, Some(first), include_usage, usage_chunk));
    }
    let (text, finish, p, c) = collect(rx).await?;
    drop(slot);
    let mut out = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": null}],
        "usage": usage(p, c),
    });
    if dummy {
        out["dummy_weights"] = json!(true);
    }
    Ok(Json(out).into_response())
}
