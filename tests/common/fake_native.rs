//! A fake Ollama and TGI server on 127.0.0.1 (axum, on its own runtime thread) speaking their
//! own wire formats: Ollama's `/api/generate`, `/api/chat` (NDJSON lines, the last with
//! `"done": true` and the token counts; one JSON object with `"stream": false`) and
//! `/api/tags`; TGI's `/generate` (`generated_text` and `details`), `/generate_stream`
//! (server-sent `data:` events, the last carrying `generated_text` and `details`, no
//! `[DONE]`) and `/info`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use super::axum_thread::AxumThread;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NativeFault {
    None,
    /// Ollama streams a few lines, then ends the body without the `"done": true` line.
    TruncatedNdjson,
}

#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// Time before the first token (and before a non-streamed answer).
    pub ttft: Duration,
    /// Time between streamed tokens (and added per token to non-streamed answers).
    pub token_gap: Duration,
    /// The most tokens an answer has; `num_predict` / `max_new_tokens` lower it.
    pub tokens: u32,
    /// The model Ollama serves (`/api/tags`; other names answer 404) and TGI's `model_id`.
    pub model: String,
    /// Tokens Ollama reports for the prompt (`prompt_eval_count`).
    pub prompt_tokens: u32,
    /// Whether `GET /info` answers (TGI does; without it `/generate` is just a path).
    pub info: bool,
    /// Added to the token counts the answers report (`eval_count`, `generated_tokens`), as a
    /// server whose streamed chunks are not one token each would.
    pub count_extra: u32,
    pub fault: NativeFault,
}

impl Default for NativeConfig {
    fn default() -> Self {
        NativeConfig {
            ttft: Duration::from_millis(5),
            token_gap: Duration::from_millis(1),
            tokens: 8,
            model: "llama3.2:latest".into(),
            prompt_tokens: 11,
            info: true,
            count_extra: 0,
            fault: NativeFault::None,
        }
    }
}

struct Shared {
    cfg: NativeConfig,
    /// Every POST body with its path, and when it arrived.
    received: Mutex<Vec<(Instant, String, Value)>>,
}

pub struct NativeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: AxumThread,
}

impl NativeServer {
    pub fn start(cfg: NativeConfig) -> Self {
        let shared = Arc::new(Shared { cfg, received: Mutex::new(Vec::new()) });
        let app = Router::new()
            .route("/api/generate", post(ollama_generate))
            .route("/api/chat", post(ollama_chat))
            .route("/api/tags", get(ollama_tags))
            .route("/generate", post(tgi_generate))
            .route("/generate_stream", post(tgi_generate_stream))
            .route("/info", get(tgi_info))
            .with_state(shared.clone());
        let server = AxumThread::start(app);
        NativeServer { addr: server.addr, shared, _server: server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The POST bodies received so far, in arrival order, with their arrival times and paths.
    pub fn received(&self) -> Vec<(Instant, String, Value)> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The POST bodies received so far, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.received().into_iter().map(|(_, _, b)| b).collect()
    }
}

/// Records the body (as JSON, or as a string when it is not JSON) and returns it parsed.
fn arrive(s: &Shared, path: &str, body: &Bytes) -> Result<Value, Response> {
    let parsed = serde_json::from_slice::<Value>(body);
    let recorded = parsed.as_ref().cloned().unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    s.received.lock().unwrap().push((Instant::now(), path.to_string(), recorded));
    parsed.map_err(|e| (StatusCode::BAD_REQUEST, Json(json!({"error": format!("invalid JSON: {e}")}))).into_response())
}

/// The `i`th token's text; answers read "tok0 tok1 …".
fn piece(i: u32) -> String {
    format!("tok{i} ")
}

fn whole_text(tokens: u32) -> String {
    (0..tokens).map(piece).collect()
}

async fn whole_wait(cfg: &NativeConfig, tokens: u32) {
    tokio::time::sleep(cfg.ttft + cfg.token_gap * tokens.saturating_sub(1)).await;
}

fn created_at() -> &'static str {
    "2024-07-22T20:31:34.129836Z"
}

/// Sends `lines` (each one frame of the answer) with the configured pacing: `ttft` before
/// the first, `token_gap` between the next ones.
fn paced(cfg: NativeConfig, lines: Vec<String>, content_type: &'static str) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        tokio::time::sleep(cfg.ttft).await;
        for (i, line) in lines.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(cfg.token_gap).await;
            }
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Response::builder().header(header::CONTENT_TYPE, content_type).body(Body::from_stream(stream)).unwrap()
}

// --- Ollama ---

async fn ollama_generate(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    ollama(s, body, false).await
}

async fn ollama_chat(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    ollama(s, body, true).await
}

async fn ollama_tags(State(s): State<Arc<Shared>>) -> Response {
    Json(json!({"models": [{
        "name": s.cfg.model,
        "model": s.cfg.model,
        "modified_at": "2024-07-22T20:31:34.129836Z",
        "size": 2019393189u64,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"], "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}
    }]}))
    .into_response()
}

async fn ollama(s: Arc<Shared>, body: Bytes, chat: bool) -> Response {
    let path = if chat { "/api/chat" } else { "/api/generate" };
    let body = match arrive(&s, path, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(model) = body["model"].as_str() else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "model is required"}))).into_response();
    };
    if model != s.cfg.model && format!("{model}:latest") != s.cfg.model {
        let error = format!("model \"{model}\" not found, try pulling it first");
        return (StatusCode::NOT_FOUND, Json(json!({"error": error}))).into_response();
    }
    if chat && !body["messages"].is_array() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "messages must be an array"}))).into_response();
    }
    // num_predict: -1 (or absent) means no limit but the model's.
    let tokens = match body["options"]["num_predict"].as_i64() {
        Some(n) if n >= 0 => (n as u32).min(s.cfg.tokens),
        _ => s.cfg.tokens,
    };
    let model = model.to_string();
    let prompt_tokens = s.cfg.prompt_tokens;
    let stats = |v: &mut Value| {
        v["done_reason"] = json!(if tokens < s.cfg.tokens { "length" } else { "stop" });
        v["total_duration"] = json!(4_935_886_791u64);
        v["load_duration"] = json!(534_986_708u64);
        v["prompt_eval_count"] = json!(prompt_tokens);
        v["prompt_eval_duration"] = json!(107_345_000u64);
        v["eval_count"] = json!(tokens + s.cfg.count_extra);
        v["eval_duration"] = json!(4_289_432_000u64);
    };
    let frame = |text: &str, done: bool| {
        if chat {
            json!({"model": model, "created_at": created_at(), "message": {"role": "assistant", "content": text}, "done": done})
        } else {
            json!({"model": model, "created_at": created_at(), "response": text, "done": done})
        }
    };
    // Ollama streams unless the body says `"stream": false`.
    if body["stream"].as_bool() == Some(false) {
        whole_wait(&s.cfg, tokens).await;
        let mut answer = frame(&whole_text(tokens), true);
        stats(&mut answer);
        if !chat {
            answer["context"] = json!([1, 2, 3]);
        }
        return Json(answer).into_response();
    }
    let mut lines: Vec<String> = (0..tokens).map(|i| format!("{}\n", frame(&piece(i), false))).collect();
    if s.cfg.fault == NativeFault::TruncatedNdjson {
        lines.truncate(2);
    } else {
        let mut last = frame("", true);
        stats(&mut last);
        if !chat {
            last["context"] = json!([1, 2, 3]);
        }
        lines.push(format!("{last}\n"));
    }
    paced(s.cfg.clone(), lines, "application/x-ndjson")
}

// --- TGI ---

async fn tgi_info(State(s): State<Arc<Shared>>) -> Response {
    if !s.cfg.info {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(json!({
        "model_id": s.cfg.model,
        "model_sha": null,
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": 128,
        "max_best_of": 2,
        "max_stop_sequences": 4,
        "max_input_tokens": 4095,
        "max_total_tokens": 4096,
        "validation_workers": 2,
        "max_client_batch_size": 4,
        "router": "text-generation-router",
        "version": "3.0.1",
        "sha": null,
        "docker_label": null
    }))
    .into_response()
}

/// Checks a TGI body; returns its token count and whether it asked for `details`.
fn tgi_request(s: &Shared, body: &Value) -> Result<(u32, bool), Response> {
    let validation = |msg: &str| (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": msg, "error_type": "validation"}))).into_response();
    if !body["inputs"].is_string() {
        return Err(validation("Failed to deserialize the JSON body into the target type: missing field `inputs`"));
    }
    let params = &body["parameters"];
    if params["temperature"].as_f64().is_some_and(|t| t <= 0.0) {
        return Err(validation("Input validation error: `temperature` must be strictly positive"));
    }
    // TGI's own default when `max_new_tokens` is absent.
    let max_new = params["max_new_tokens"].as_u64().unwrap_or(100);
    if max_new == 0 {
        return Err(validation("Input validation error: `max_new_tokens` must be strictly positive"));
    }
    Ok(((max_new as u32).min(s.cfg.tokens), params["details"].as_bool() == Some(true)))
}

fn finish_reason(s: &Shared, tokens: u32) -> &'static str {
    if tokens < s.cfg.tokens {
        "length"
    } else {
        "eos_token"
    }
}

async fn tgi_generate(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match arrive(&s, "/generate", &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (tokens, details) = match tgi_request(&s, &body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    whole_wait(&s.cfg, tokens).await;
    let mut answer = json!({"generated_text": whole_text(tokens)});
    if details {
        let toks: Vec<Value> =
            (0..tokens).map(|i| json!({"id": 100 + i, "text": piece(i), "logprob": -0.25, "special": false})).collect();
        answer["details"] = json!({
            "finish_reason": finish_reason(&s, tokens),
            "generated_tokens": tokens + s.cfg.count_extra,
            "seed": null,
            "prefill": [],
            "tokens": toks,
            "top_tokens": [],
            "best_of_sequences": null
        });
    }
    Json(answer).into_response()
}

async fn tgi_generate_stream(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match arrive(&s, "/generate_stream", &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (tokens, details) = match tgi_request(&s, &body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let events: Vec<String> = (0..tokens)
        .map(|i| {
            let last = i + 1 == tokens;
            let event = json!({
                "index": i + 1,
                "token": {"id": 100 + i, "text": piece(i), "logprob": -0.25, "special": false},
                "top_tokens": null,
                "generated_text": if last { json!(whole_text(tokens)) } else { Value::Null },
                "details": if last && details {
                    json!({"finish_reason": finish_reason(&s, tokens), "generated_tokens": tokens + s.cfg.count_extra, "seed": null, "input_length": 7})
                } else {
                    Value::Null
                },
            });
            // TGI writes `data:` with no space and no `[DONE]` after the last event.
            format!("data:{event}\n\n")
        })
        .collect();
    paced(s.cfg.clone(), events, "text/event-stream")
}
