//! Sends one request and times it: the hot path. Only `Instant`s are taken per request;
//! bodies are prebuilt and shared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use super::api::{answer_text, parse_answer, snippet, ApiKind, SseStream, Usage, MAX_BODY_BYTES};
use super::native::NdjsonStream;
use super::tokenizer::PromptTokenizer;
use super::http1::Http1Pool;
use super::LoadTestError;

/// Everything a request needs, built before the run starts.
pub struct Target {
    transport: Transport,
    pub urls: Vec<reqwest::Url>,
    pub api: ApiKind,
    pub stream: bool,
    pub bodies: Vec<Bytes>,
    pub timeout: Duration,
    /// Keep the generated text of each answer (multi-turn sessions, counting by tokenizer).
    pub capture_text: bool,
    /// Counts output tokens where the server sends no usage.
    pub counter: Option<Arc<PromptTokenizer>>,
}

/// Plain-HTTP endpoints get the lean HTTP/1 pool; HTTPS goes through reqwest.
enum Transport {
    Http1 { pools: Vec<Http1Pool>, headers: HeaderMap },
    Reqwest { client: reqwest::Client, headers: HeaderMap, max_in_flight: usize },
}

fn reqwest_client(headers: &HeaderMap, max_in_flight: usize, timeout: Duration) -> Result<reqwest::Client, LoadTestError> {
    let mut headers = headers.clone();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(max_in_flight.max(1))
        .tcp_nodelay(true)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| LoadTestError::Failed(format!("cannot build the HTTP client: {e}")))
}

/// Why a request failed, as counted in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Timeout,
    Connect,
    HttpStatus(u16),
    Protocol,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::HttpStatus(_) => "http_status",
            ErrorKind::Protocol => "protocol",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub message: String,
}

/// A successful answer: token counts and, when streamed, when tokens arrived.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub usage: Usage,
    /// Content events of a stream (None when not streamed).
    pub streamed_events: Option<u64>,
    pub first_token: Option<Instant>,
    /// Gaps between token arrivals after the first.
    pub token_gaps: Vec<Duration>,
    /// The generated text, when the target keeps it.
    pub text: Option<String>,
}

impl Answer {
    /// Output tokens: the server's count, else the streamed events.
    pub fn output_tokens(&self) -> Option<u64> {
        self.usage.completion_tokens.or(self.streamed_events)
    }

    /// Time per output token after the first: (e2e - ttft) / (output tokens - 1), given both
    /// measured from the same start; `None` when not streamed or with one token.
    pub fn tpot(&self, e2e: Duration, ttft: Option<Duration>) -> Option<Duration> {
        match (ttft, self.output_tokens()) {
            (Some(t), Some(n)) if n > 1 => Some(e2e.saturating_sub(t) / u32::try_from(n - 1).unwrap_or(u32::MAX)),
            _ => None,
        }
    }
}

/// One finished exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub sent: Instant,
    pub done: Instant,
    pub result: Result<Answer, RequestError>,
}

impl Target {
    /// Builds the client for `urls` (resolving each host once) with the extra headers.
    pub async fn new(
        urls: Vec<reqwest::Url>,
        api: ApiKind,
        stream: bool,
        headers: &[(String, String)],
        bodies: Vec<Bytes>,
        timeout: Duration,
        max_in_flight: usize,
        capture_text: bool,
        counter: Option<Arc<PromptTokenizer>>,
    ) -> Result<Arc<Self>, LoadTestError> {
        let capture_text = capture_text || counter.is_some();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| LoadTestError::Usage(format!("'{k}' is not a valid header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| LoadTestError::Usage(format!("the value of header '{k}' has characters HTTP does not allow")))?;
            map.insert(name, value);
        }
        let transport = if urls.iter().all(|u| u.scheme() == "http") {
            let mut pools = Vec::with_capacity(urls.len());
            for url in &urls {
                let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
                let port = url.port_or_known_default().unwrap_or(80);
                let addr = tokio::net::lookup_host((host, port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| LoadTestError::Unreachable(format!("cannot resolve {host} (--url {url})")))?;
                pools.push(Http1Pool::new(addr, url).map_err(LoadTestError::Usage)?);
            }
            Transport::Http1 { pools, headers: map }
        } else {
            Transport::Reqwest { client: reqwest_client(&map, max_in_flight, timeout)?, headers: map, max_in_flight }
        };
        Ok(Arc::new(Target { transport, urls, api, stream, bodies, timeout, capture_text, counter }))
    }

    /// The same target with connections of its own (for another runtime).
    pub fn fork(&self) -> Arc<Self> {
        let transport = match &self.transport {
            Transport::Http1 { pools, headers } => {
                Transport::Http1 { pools: pools.iter().map(Http1Pool::fork).collect(), headers: headers.clone() }
            }
            // A client of its own: reqwest's connections live on the runtime that made them.
            Transport::Reqwest { client, headers, max_in_flight } => Transport::Reqwest {
                client: reqwest_client(headers, *max_in_flight, self.timeout).unwrap_or_else(|_| client.clone()),
                headers: headers.clone(),
                max_in_flight: *max_in_flight,
            },
        };
        Arc::new(Target {
            transport,
            urls: self.urls.clone(),
            api: self.api,
            stream: self.stream,
            bodies: self.bodies.clone(),
            timeout: self.timeout,
            capture_text: self.capture_text,
            counter: self.counter.clone(),
        })
    }

    /// Sends request `index` (its URL and body chosen round-robin) and waits for the whole answer.
    pub async fn send(&self, index: u64) -> Exchange {
        let body = self.bodies[(index % self.bodies.len() as u64) as usize].clone();
        self.send_body(index, body).await
    }

    /// Sends `body` as request `index` (its URL chosen round-robin) and waits for the whole answer.
    pub async fn send_body(&self, index: u64, body: Bytes) -> Exchange {
        let sent = Instant::now();
        let mut result = match tokio::time::timeout(self.timeout, self.exchange(index, body)).await {
            Ok(r) => r,
            Err(_) => Err(RequestError {
                kind: ErrorKind::Timeout,
                message: format!("no complete answer within {:?} (--timeout)", self.timeout),
            }),
        };
        let done = Instant::now();
        // Counted after the clock stopped, so tokenizing is not in the latency.
        if let (Ok(answer), Some(tk)) = (&mut result, &self.counter) {
            if let (None, Some(text)) = (answer.usage.completion_tokens, &answer.text) {
                answer.usage.completion_tokens = Some(tk.count(text) as u64);
            }
        }
        Exchange { sent, done, result }
    }

    async fn exchange(&self, index: u64, body: Bytes) -> Result<Answer, RequestError> {
        let u = (index % self.urls.len() as u64) as usize;
        match &self.transport {
            Transport::Http1 { pools, headers } => {
                let pool = &pools[u];
                let mut response = pool.post(headers, body).await.map_err(connect_error)?;
                if !response.status.is_success() {
                    let body = response.bytes(pool, 64 << 10).await.ok().flatten().unwrap_or_default();
                    return Err(status_error(response.status, &body));
                }
                if !self.stream {
                    let body = response.bytes(pool, MAX_BODY_BYTES).await.map_err(connect_error)?.ok_or_else(too_long)?;
                    return self.whole(&response.content_type, &body);
                }
                let mut reader = StreamReader::new(self.api, self.capture_text);
                while let Some(chunk) = response.next_chunk(pool).await.map_err(connect_error)? {
                    // Stop at `[DONE]`: a server that keeps the stream open must not turn a success into a timeout.
                    if reader.push(&chunk)? {
                        break;
                    }
                }
                reader.finish()
            }
            // Boxed: reqwest's future is large and would make every request's state machine large.
            Transport::Reqwest { client, .. } => Box::pin(self.exchange_reqwest(client, u, body)).await,
        }
    }

    async fn exchange_reqwest(&self, client: &reqwest::Client, u: usize, body: Bytes) -> Result<Answer, RequestError> {
        let mut response = client.post(self.urls[u].clone()).body(body).send().await.map_err(transport_error)?;
        let status = response.status();
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(status_error(status, &body));
        }
        if !self.stream {
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(too_long());
                }
                body.extend_from_slice(&chunk);
            }
            return self.whole(&content_type, &body);
        }
        let mut reader = StreamReader::new(self.api, self.capture_text);
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if reader.push(&chunk)? {
                break;
            }
        }
        reader.finish()
    }

    fn whole(&self, content_type: &str, body: &[u8]) -> Result<Answer, RequestError> {
        let usage = parse_answer(self.api, content_type, body)
            .map_err(|message| RequestError { kind: ErrorKind::Protocol, message })?;
        let text = if self.capture_text { Some(answer_text(self.api, body)) } else { None };
        Ok(Answer { usage, text, ..Answer::default() })
    }
}

/// The framing of a streamed answer.
enum Wire {
    Sse(SseStream),
    Ndjson(NdjsonStream),
}

/// Reads a streamed answer, noting when each token arrived.
struct StreamReader {
    wire: Wire,
    answer: Answer,
    last: Option<Instant>,
    bytes: usize,
}

impl StreamReader {
    fn new(api: ApiKind, capture_text: bool) -> Self {
        let wire = if api.ndjson() {
            Wire::Ndjson(NdjsonStream::new(capture_text))
        } else {
            Wire::Sse(SseStream::new(capture_text, api == ApiKind::TgiStream))
        };
        StreamReader { wire, answer: Answer::default(), last: None, bytes: 0 }
    }

    /// Feeds one piece of the body; true once the stream said `[DONE]`.
    fn push(&mut self, chunk: &[u8]) -> Result<bool, RequestError> {
        let now = Instant::now();
        self.bytes += chunk.len();
        if self.bytes > MAX_BODY_BYTES {
            return Err(too_long());
        }
        let (events, done) = match &mut self.wire {
            Wire::Sse(s) => (s.feed(chunk), s.done),
            Wire::Ndjson(s) => (s.feed(chunk), s.done),
        };
        let events = events.map_err(protocol_error)?;
        record_arrivals(&mut self.answer, &mut self.last, now, events);
        Ok(done)
    }

    fn finish(mut self) -> Result<Answer, RequestError> {
        let (events, usage, content, text) = match &mut self.wire {
            Wire::Sse(s) => (s.finish(), s.usage, s.content_events, s.text.take()),
            Wire::Ndjson(s) => (s.finish(), s.usage, s.content_events, s.text.take()),
        };
        let events = events.map_err(protocol_error)?;
        record_arrivals(&mut self.answer, &mut self.last, Instant::now(), events);
        self.answer.usage = usage;
        self.answer.streamed_events = Some(content);
        self.answer.text = text;
        Ok(self.answer)
    }
}

fn too_long() -> RequestError {
    protocol_error(format!("the answer is longer than {} MiB: refusing to read more", MAX_BODY_BYTES >> 20))
}

fn protocol_error(message: String) -> RequestError {
    RequestError { kind: ErrorKind::Protocol, message }
}

fn connect_error(message: String) -> RequestError {
    RequestError { kind: ErrorKind::Connect, message }
}

fn status_error(status: http::StatusCode, body: &[u8]) -> RequestError {
    RequestError { kind: ErrorKind::HttpStatus(status.as_u16()), message: format!("HTTP {status}: {}", snippet(body)) }
}

fn record_arrivals(answer: &mut Answer, last: &mut Option<Instant>, now: Instant, events: u64) {
    for k in 0..events {
        match *last {
            None => answer.first_token = Some(now),
            Some(prev) => answer.token_gaps.push(if k == 0 { now - prev } else { Duration::ZERO }),
        }
        *last = Some(now);
    }
}

fn transport_error(e: reqwest::Error) -> RequestError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    let kind = if e.is_timeout() { ErrorKind::Timeout } else { ErrorKind::Connect };
    RequestError { kind, message }
}
