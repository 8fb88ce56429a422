//! A fake LLM server on 127.0.0.1 (axum, on its own runtime thread) with configurable
//! latency, token pacing and failures, speaking `/generate`, `/v1/completions`,
//! `/v1/chat/completions` (plain and SSE) and `/v1/models`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use super::axum_thread::AxumThread;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    None,
    /// Every Nth request answers 500.
    Status500Every(u64),
    /// Answers an HTML page with 200.
    Html,
    /// Never answers.
    Stall,
    /// Streams a few chunks, then ends without `[DONE]`.
    TruncatedSse,
    /// Starts a chunked body, then drops the connection.
    ResetMidBody,
}

#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Time before the (first byte of the) answer.
    pub ttft: Duration,
    /// Time between streamed tokens (and added per token to non-streamed answers).
    pub token_gap: Duration,
    pub tokens: u32,
    pub fault: Fault,
    /// A pause: requests arriving between `at` and `at + len` after the first request wait until its end.
    pub pause: Option<(Duration, Duration)>,
    /// Report `usage` / token counts.
    pub usage: bool,
    /// `/generate` answers with the model name in this field.
    pub model: String,
    /// Report this many of the 4 prompt tokens as served from a prefix cache.
    pub cached_tokens: Option<u32>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            ttft: Duration::from_millis(5),
            token_gap: Duration::from_millis(1),
            tokens: 8,
            fault: Fault::None,
            pause: None,
            usage: true,
            model: "fake-model".into(),
            cached_tokens: None,
        }
    }
}

struct Shared {
    cfg: FakeConfig,
    hits: AtomicU64,
    first: Mutex<Option<Instant>>,
    /// Every POST body, with when it arrived.
    received: Mutex<Vec<(Instant, Value)>>,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: AxumThread,
}

impl FakeServer {
    pub fn start(cfg: FakeConfig) -> Self {
        let shared = Arc::new(Shared { cfg, hits: AtomicU64::new(0), first: Mutex::new(None), received: Mutex::new(Vec::new()) });
        let app = Router::new()
            .route("/generate", post(generate))
            .route("/v1/completions", post(completions))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let server = AxumThread::start(app);
        FakeServer { addr: server.addr, shared, _server: server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// The POST bodies received so far, in arrival order, with their arrival times.
    pub fn received(&self) -> Vec<(Instant, Value)> {
        self.shared.received.lock().unwrap().clone()
    }
}

/// Counts the hit, records the body and waits as configured (pause window); returns the hit number.
async fn arrive(s: &Shared, body: &Value) -> u64 {
    let now = Instant::now();
    let n = {
        let mut received = s.received.lock().unwrap();
        received.push((now, body.clone()));
        s.hits.fetch_add(1, Ordering::SeqCst) + 1
    };
    let first = *s.first.lock().unwrap().get_or_insert(now);
    if let Some((at, len)) = s.cfg.pause {
        let (start, end) = (first + at, first + at + len);
        if now >= start && now < end {
            tokio::time::sleep_until(end.into()).await;
        }
    }
    n
}

fn fault_response(s: &Shared, n: u64) -> Option<Response> {
    match s.cfg.fault {
        Fault::Status500Every(k) if n % k == 0 => {
            Some((StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"message": "injected failure"}}))).into_response())
        }
        Fault::Html => Some(
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], "<!DOCTYPE html><html><body>Welcome</body></html>")
                .into_response(),
        ),
        Fault::ResetMidBody => {
            let stream = futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"text\": \"par")),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset")),
            ]);
            Some(Response::builder().header(header::CONTENT_TYPE, "application/json").body(Body::from_stream(stream)).unwrap())
        }
        _ => None,
    }
}

async fn whole_answer(s: &Shared) -> Option<()> {
    if s.cfg.fault == Fault::Stall {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    tokio::time::sleep(s.cfg.ttft + s.cfg.token_gap * s.cfg.tokens.saturating_sub(1)).await;
    Some(())
}

/// The answer text of hit `n`: `tokens` words, the first naming the hit, so that each answer is its own.
fn answer_text(n: u64, tokens: usize) -> String {
    let mut text = format!("a{n} ");
    text.push_str(&"tok ".repeat(tokens.saturating_sub(1)));
    text
}

async fn generate(State(s): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let n = arrive(&s, &body).await;
    if let Some(r) = fault_response(&s, n) {
        return r;
    }
    whole_answer(&s).await;
    let tokens = body["max_tokens"].as_u64().unwrap_or(150).min(s.cfg.tokens as u64);
    let mut answer = json!({"text": answer_text(n, tokens as usize), "finish_reason": "length", "model": s.cfg.model});
    if s.cfg.usage {
        answer["prompt_tokens"] = json!(4);
        answer["completion_tokens"] = json!(tokens);
    }
    Json(answer).into_response()
}

async fn completions(state: State<Arc<Shared>>, body: Json<Value>) -> Response {
    openai(state, body, false).await
}

async fn chat(state: State<Arc<Shared>>, body: Json<Value>) -> Response {
    openai(state, body, true).await
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    Json(json!({"object": "list", "data": [{"id": s.cfg.model, "object": "model"}]})).into_response()
}

async fn openai(State(s): State<Arc<Shared>>, Json(body): Json<Value>, chat: bool) -> Response {
    let n = arrive(&s, &body).await;
    if let Some(r) = fault_response(&s, n) {
        return r;
    }
    if body["model"].as_str() != Some(s.cfg.model.as_str()) {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"message": "model not found"}}))).into_response();
    }
    let tokens = body["max_tokens"].as_u64().unwrap_or(16).min(s.cfg.tokens as u64) as u32;
    let mut usage = json!({"prompt_tokens": 4, "completion_tokens": tokens, "total_tokens": 4 + tokens});
    if let Some(c) = s.cfg.cached_tokens {
        usage["prompt_tokens_details"] = json!({ "cached_tokens": c });
    }
    if body["stream"].as_bool() != Some(true) {
        whole_answer(&s).await;
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": answer_text(n, tokens as usize)}, "finish_reason": "length"})
        } else {
            json!({"index": 0, "text": answer_text(n, tokens as usize), "finish_reason": "length"})
        };
        let mut answer = json!({"id": "x", "object": "completion", "choices": [choice]});
        if s.cfg.usage {
            answer["usage"] = usage;
        }
        return Json(answer).into_response();
    }
    let include_usage = s.cfg.usage && body["stream_options"]["include_usage"].as_bool() == Some(true);
    let cfg = s.cfg.clone();
    let stream = async_stream(cfg, n, tokens, chat, include_usage.then_some(usage));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn async_stream(
    cfg: FakeConfig,
    n: u64,
    tokens: u32,
    chat: bool,
    usage: Option<Value>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, Infallible>>(16);
    tokio::spawn(async move {
        if cfg.fault == Fault::Stall {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if chat {
            let role = json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]});
            let _ = tx.send(Ok(format!("data: {role}\n\n").into())).await;
        }
        tokio::time::sleep(cfg.ttft).await;
        let last = if cfg.fault == Fault::TruncatedSse { tokens.min(2) } else { tokens };
        for i in 0..last {
            if i > 0 {
                tokio::time::sleep(cfg.token_gap).await;
            }
            let finish = if i + 1 == tokens { json!("length") } else { Value::Null };
            let piece = if i == 0 { format!("a{n} ") } else { "tok ".to_string() };
            let choice = if chat {
                json!({"index": 0, "delta": {"content": piece}, "finish_reason": finish})
            } else {
                json!({"index": 0, "text": piece, "finish_reason": finish})
            };
            let chunk = json!({"choices": [choice]});
            if tx.send(Ok(format!("data: {chunk}\n\n").into())).await.is_err() {
                return;
            }
        }
        if cfg.fault == Fault::TruncatedSse {
            return;
        }
        if let Some(u) = usage {
            let _ = tx.send(Ok(format!("data: {}\n\n", json!({"choices": [], "usage": u})).into())).await;
        }
        let _ = tx.send(Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
