//! An OpenAI-compatible streaming server on loopback that sends tokens at a fixed, known gap,
//! for `scripts/bench-loadgen --itl` (the inter-token-latency accuracy of load clients).
//!
//! Usage: cargo run --release --example paced_sse_server -- [--port 0] [--gap-ms 20] [--tokens 64]
//!        [--ttft-ms 0] [--threads N]
//!
//! Serves `POST /v1/chat/completions` and `POST /v1/completions` (SSE when `"stream": true`, one
//! content chunk per token in OpenAI's chunk format, a usage chunk when
//! `stream_options.include_usage` is set, then `data: [DONE]`; a plain JSON answer otherwise) and
//! `GET /v1/models` (one model, `paced`). Every stream sends `--tokens` tokens whatever
//! `max_tokens` asks: the first after `--ttft-ms`, then one every `--gap-ms` on absolute deadlines
//! (`tokio::time::interval`, missed ticks burst to catch up), so the intended gaps are exact.
//!
//! The server records when it actually hands each chunk to the connection. `GET /stats` answers
//! their distribution in ms: `gap` (one sample per token after the first), `request_mean_gap`
//! (one sample per stream: (last - first) / (tokens - 1)), plus stream and token counts;
//! `POST /stats/reset` clears them. Prints `listening on http://127.0.0.1:PORT`, then serves
//! until killed or until stdin closes (when stdin is a pipe).

use std::convert::Infallible;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::{interval_at, MissedTickBehavior};

#[derive(Clone, Copy)]
struct Config {
    gap: Duration,
    ttft: Duration,
    tokens: u32,
}

struct Stats {
    /// Actual gaps between consecutive chunks of one stream, in ns.
    gap: Histogram<u64>,
    /// Per stream: (last - first) / (tokens - 1), in ns.
    request_mean_gap: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

impl Stats {
    fn new() -> Self {
        Stats { gap: histogram(), request_mean_gap: histogram() }
    }
}

struct Shared {
    cfg: Config,
    stats: Mutex<Stats>,
    started: AtomicU64,
    completed: AtomicU64,
    tokens_sent: AtomicU64,
    active: AtomicU64,
    max_active: AtomicU64,
    next_id: AtomicU64,
}

impl Shared {
    fn new(cfg: Config) -> Arc<Self> {
        Arc::new(Shared {
            cfg,
            stats: Mutex::new(Stats::new()),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            tokens_sent: AtomicU64::new(0),
            active: AtomicU64::new(0),
            max_active: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Completions,
}

/// One stream's send times; merged into the shared histograms when the stream ends or is dropped
/// (a client that hangs up early still counts the gaps it was sent).
struct Tracker {
    shared: Arc<Shared>,
    sends: Vec<Instant>,
    done: bool,
}

impl Tracker {
    fn sent(&mut self, at: Instant) {
        self.sends.push(at);
        self.shared.tokens_sent.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if self.done {
            self.shared.completed.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
        if self.sends.len() < 2 {
            return;
        }
        let mut stats = self.shared.stats.lock();
        for w in self.sends.windows(2) {
            let _ = stats.gap.record((w[1] - w[0]).as_nanos().max(1) as u64);
        }
        let span = *self.sends.last().unwrap() - self.sends[0];
        let mean = span.as_nanos() as u64 / (self.sends.len() as u64 - 1);
        let _ = stats.request_mean_gap.record(mean.max(1));
    }
}

fn created() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn token_chunk(api: Api, id: &str, created: u64, i: u32) -> Value {
    let text = if i == 0 { "tok" } else { " tok" };
    match api {
        Api::Chat => json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": "paced",
            "choices": [{"index": 0, "delta": if i == 0 { json!({"role": "assistant", "content": text}) } else { json!({"content": text}) },
                         "logprobs": null, "finish_reason": null}]}),
        Api::Completions => json!({"id": id, "object": "text_completion", "created": created, "model": "paced",
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": null}]}),
    }
}

fn tail_chunks(api: Api, id: &str, created: u64, tokens: u32, prompt_tokens: u64, usage: bool) -> Bytes {
    let object = if api == Api::Chat { "chat.completion.chunk" } else { "text_completion" };
    let finish = match api {
        Api::Chat => json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"}),
        Api::Completions => json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "length"}),
    };
    let mut out = Vec::new();
    out.extend_from_slice(&sse(&json!({"id": id, "object": object, "created": created, "model": "paced", "choices": [finish]})));
    if usage {
        out.extend_from_slice(&sse(&json!({"id": id, "object": object, "created": created, "model": "paced", "choices": [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens as u64}})));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Bytes::from(out)
}

/// Rough prompt length for `usage`: whitespace-separated words of the prompt or messages.
fn prompt_tokens(req: &Value) -> u64 {
    let mut n = 0u64;
    let mut count = |s: &str| n += s.split_whitespace().count() as u64;
    if let Some(p) = req.get("prompt") {
        match p {
            Value::String(s) => count(s),
            Value::Array(a) => a.iter().filter_map(Value::as_str).for_each(&mut count),
            _ => {}
        }
    }
    if let Some(Value::Array(msgs)) = req.get("messages") {
        for m in msgs {
            match m.get("content") {
                Some(Value::String(s)) => count(s),
                Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).for_each(&mut count),
                _ => {}
            }
        }
    }
    n
}

async fn generate(shared: Arc<Shared>, api: Api, body: Bytes) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": {"message": format!("bad JSON: {e}")}}))).into_response(),
    };
    let cfg = shared.cfg;
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let usage = req.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let ptoks = prompt_tokens(&req);
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n}", if api == Api::Chat { "chatcmpl" } else { "cmpl" });
    let created = created();
    shared.started.fetch_add(1, Ordering::Relaxed);
    let active = shared.active.fetch_add(1, Ordering::Relaxed) + 1;
    shared.max_active.fetch_max(active, Ordering::Relaxed);
    let tracker = Tracker { shared: shared.clone(), sends: Vec::with_capacity(cfg.tokens as usize), done: false };

    if !stream {
        let mut tracker = tracker;
        if cfg.tokens > 0 {
            tokio::time::sleep(cfg.ttft + cfg.gap * (cfg.tokens - 1)).await;
        }
        shared.tokens_sent.fetch_add(cfg.tokens as u64, Ordering::Relaxed);
        tracker.done = true;
        let text = (0..cfg.tokens).map(|i| if i == 0 { "tok" } else { " tok" }).collect::<String>();
        let choice = match api {
            Api::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}),
            Api::Completions => json!({"index": 0, "text": text, "finish_reason": "length"}),
        };
        let object = if api == Api::Chat { "chat.completion" } else { "text_completion" };
        return Json(json!({"id": id, "object": object, "created": created, "model": "paced", "choices": [choice],
            "usage": {"prompt_tokens": ptoks, "completion_tokens": cfg.tokens, "total_tokens": ptoks + cfg.tokens as u64}}))
        .into_response();
    }

    // State: (tracker, ticker, next token index, finished).
    let start = tokio::time::Instant::now() + cfg.ttft;
    let mut ticker = interval_at(start, cfg.gap.max(Duration::from_micros(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let body = futures_util::stream::unfold((tracker, ticker, 0u32, false), move |(mut tracker, mut ticker, i, end)| {
        let id = id.clone();
        async move {
            if end {
                return None;
            }
            if i == cfg.tokens {
                tracker.done = true;
                let tail = tail_chunks(api, &id, created, cfg.tokens, ptoks, usage);
                return Some((Ok::<_, Infallible>(tail), (tracker, ticker, i, true)));
            }
            ticker.tick().await;
            let chunk = sse(&token_chunk(api, &id, created, i));
            tracker.sent(Instant::now());
            Some((Ok(chunk), (tracker, ticker, i + 1, false)))
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("response")
}

fn summary(h: &Histogram<u64>) -> Value {
    let ms = |ns: u64| ns as f64 / 1e6;
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "mean_ms": h.mean() / 1e6,
        "stdev_ms": h.stdev() / 1e6,
        "min_ms": ms(h.min()),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let (gap, mean) = {
        let s = shared.stats.lock();
        (summary(&s.gap), summary(&s.request_mean_gap))
    };
    Json(json!({
        "config": {"gap_ms": shared.cfg.gap.as_secs_f64() * 1e3, "ttft_ms": shared.cfg.ttft.as_secs_f64() * 1e3, "tokens": shared.cfg.tokens},
        "streams_started": shared.started.load(Ordering::Relaxed),
        "streams_completed": shared.completed.load(Ordering::Relaxed),
        "active": shared.active.load(Ordering::Relaxed),
        "max_active": shared.max_active.load(Ordering::Relaxed),
        "tokens_sent": shared.tokens_sent.load(Ordering::Relaxed),
        "gap": gap,
        "request_mean_gap": mean,
    }))
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    *shared.stats.lock() = Stats::new();
    for c in [&shared.started, &shared.completed, &shared.tokens_sent, &shared.max_active] {
        c.store(0, Ordering::Relaxed);
    }
    shared.max_active.store(shared.active.load(Ordering::Relaxed), Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/models", get(|| async { Json(json!({"object": "list", "data": [{"id": "paced", "object": "model", "created": 0, "owned_by": "gpubench"}]})) }))
        .route("/v1/chat/completions", post(|State(s): State<Arc<Shared>>, body: Bytes| generate(s, Api::Chat, body)))
        .route("/v1/completions", post(|State(s): State<Arc<Shared>>, body: Bytes| generate(s, Api::Completions, body)))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset))
        .route("/health", get(|| async { "ok" }))
        .with_state(shared)
}

fn parse_args() -> Result<(u16, Config, Option<usize>), String> {
    let mut port = 0u16;
    let mut cfg = Config { gap: Duration::from_millis(20), ttft: Duration::ZERO, tokens: 64 };
    let mut threads = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let ms = |s: String| s.parse::<f64>().map_err(|e| format!("{s}: {e}")).map(|v| Duration::from_secs_f64(v / 1e3));
        match a.as_str() {
            "--port" => port = val("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
            "--gap-ms" => cfg.gap = ms(val("--gap-ms")?)?,
            "--ttft-ms" => cfg.ttft = ms(val("--ttft-ms")?)?,
            "--tokens" => cfg.tokens = val("--tokens")?.parse().map_err(|e| format!("--tokens: {e}"))?,
            "--threads" => threads = Some(val("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?),
            "-h" | "--help" => {
                println!("usage: paced_sse_server [--port 0] [--gap-ms 20] [--tokens 64] [--ttft-ms 0] [--threads N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((port, cfg, threads))
}

fn stdin_is_pipe() -> bool {
    // SAFETY: fstat on fd 0 into a zeroed stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(0, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
    }
}

fn main() {
    let (port, cfg, threads) = parse_args().unwrap_or_else(|e| {
        eprintln!("paced_sse_server: {e}");
        std::process::exit(2);
    });
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        rt.worker_threads(t);
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    let shared = Shared::new(cfg);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        println!("listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // With stdin a pipe, its end (the parent went away) stops the server.
        if stdin_is_pipe() {
            std::thread::spawn(|| {
                let mut sink = [0u8; 256];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                std::process::exit(0);
            });
        }
        axum::serve(listener, router(shared)).await.expect("serve");
    });
}

#[cfg(test)]
mod tests {
    //! `cargo test --example paced_sse_server`
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn streams_paced_tokens_and_reports_its_gaps() {
        let cfg = Config { gap: Duration::from_millis(5), ttft: Duration::ZERO, tokens: 6 };
        let shared = Shared::new(cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(shared)).await.unwrap() });

        let models = request(addr, "GET", "/v1/models", "").await;
        assert!(models.contains(r#""id":"paced""#), "{models}");

        let t0 = Instant::now();
        let body = r#"{"model":"paced","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b c"}]}"#;
        let sse = request(addr, "POST", "/v1/chat/completions", body).await;
        assert!(t0.elapsed() >= Duration::from_millis(25), "5 gaps of 5 ms");
        let data: Vec<&str> = sse.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        assert_eq!(data.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        let content = chunks.iter().filter(|c| c.pointer("/choices/0/delta/content").is_some()).count();
        assert_eq!(content, 6);
        let usage = chunks.last().unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 6);
        assert_eq!(usage["usage"]["prompt_tokens"], 3);

        let done = request(addr, "POST", "/v1/completions", r#"{"prompt":"x","stream":true}"#).await;
        assert!(done.contains(r#""text":" tok""#) && done.contains("[DONE]") && !done.contains("usage"));

        let stats = request(addr, "GET", "/stats", "").await;
        let stats: Value = serde_json::from_str(stats.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(stats["streams_completed"], 2);
        assert_eq!(stats["tokens_sent"], 12);
        assert_eq!(stats["gap"]["count"], 10);
        let p50 = stats["gap"]["p50_ms"].as_f64().unwrap();
        assert!((4.0..8.0).contains(&p50), "gap p50 {p50} ms");

        request(addr, "POST", "/stats/reset", "").await;
        let stats = request(addr, "GET", "/stats", "").await;
        assert!(stats.contains(r#""tokens_sent":0"#), "{stats}");
    }
}
