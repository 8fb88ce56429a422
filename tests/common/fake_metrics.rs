//! A fake engine on 127.0.0.1: OpenAI `/v1/completions` and `/v1/models` with a fixed
//! delay, next to a `/metrics` that answers a sequence of exposition texts (the last one
//! repeated), or a 404, or an HTML page; it counts every `/metrics` request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::axum_thread::AxumThread;

/// What `/metrics` answers.
#[derive(Debug, Clone)]
pub enum MetricsPage {
    /// These texts in turn, then the last one again.
    Texts(Vec<String>),
    NotFound,
    Html,
}

struct Shared {
    page: MetricsPage,
    delay: Duration,
    scrapes: AtomicU64,
}

pub struct FakeEngine {
    shared: Arc<Shared>,
    server: AxumThread,
}

impl FakeEngine {
    pub fn start(page: MetricsPage, delay: Duration) -> Self {
        let shared = Arc::new(Shared { page, delay, scrapes: AtomicU64::new(0) });
        let app = Router::new()
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(models))
            .route("/metrics", get(metrics))
            .with_state(shared.clone());
        FakeEngine { shared, server: AxumThread::start(app) }
    }

    /// Reads a committed sample of `fixtures/exposition/`.
    pub fn fixture(name: &str) -> String {
        std::fs::read_to_string(super::repo_path(&format!("fixtures/exposition/{name}"))).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.addr, path)
    }

    /// Requests `/metrics` has had.
    pub fn scrapes(&self) -> u64 {
        self.shared.scrapes.load(Ordering::SeqCst)
    }
}

async fn completions(State(s): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    tokio::time::sleep(s.delay).await;
    let tokens = body["max_tokens"].as_u64().unwrap_or(4).min(4);
    Json(json!({
        "id": "cmpl-1", "object": "text_completion", "model": "fake-engine",
        "choices": [{"index": 0, "text": "one two three four", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": tokens, "total_tokens": 4 + tokens}
    }))
    .into_response()
}

async fn models() -> Response {
    Json(json!({"object": "list", "data": [{"id": "fake-engine", "object": "model"}]})).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let n = s.scrapes.fetch_add(1, Ordering::SeqCst) as usize;
    match &s.page {
        MetricsPage::Texts(texts) => {
            let text = texts[n.min(texts.len() - 1)].clone();
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        MetricsPage::NotFound => (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response(),
        MetricsPage::Html => {
            ([(header::CONTENT_TYPE, "text/html")], "<!DOCTYPE html><html><body>Welcome</body></html>").into_response()
        }
    }
}
