//! Runs the real `gpubench serve` on 127.0.0.1 (port 0) against hostile or careless clients:
//! inputs that cost work per byte or token, control tokens typed in chat content, the API key on
//! /metrics, slow and half-open connections, a streaming client that stops reading.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::serve::{get, rt, Server};
use serde_json::{json, Value};

/// The tests time their answers: one server at a time, so that they do not slow each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn post_with(url: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    rt().block_on(async {
        let mut req = reqwest::Client::new().post(url).json(body).timeout(Duration::from_secs(120));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        match req.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    })
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    post_with(url, body, None)
}

fn get_with(url: &str, key: Option<&str>) -> u16 {
    rt().block_on(async {
        let mut req = reqwest::Client::new().get(url).timeout(Duration::from_secs(10));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    })
}

fn addr(srv: &Server) -> String {
    srv.base.trim_start_matches("http://").to_string()
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

fn bad_param(status: u16, body: &Value, param: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["param"], param, "{body}");
}

#[test]
fn inputs_that_cost_work_are_bounded_and_typed() {
    let _serial = serial();
    let srv = Server::start(&[], &[]);
    let chat = srv.url("/v1/chat/completions");

    // A stop string over 256 bytes; fields of the wrong type; a required field missing.
    let (s, r) = post(&srv.url("/v1/completions"), &json!({"prompt": "Hi", "max_tokens": 1, "stop": ["x".repeat(257)]}));
    bad_param(s, &r, "stop");
    let (s, r) = post(&chat, &json!({"messages": [{"role": "user", "content": "Hi"}], "stream": "yes"}));
    bad_param(s, &r, "stream");
    let (s, r) = post(&chat, &json!({"messages": [{"role": "user", "content": "Hi"}], "presence_penalty": "0"}));
    bad_param(s, &r, "presence_penalty");
    let (s, r) = post(&chat, &json!({"messages": [{"role": "user"}]}));
    bad_param(s, &r, "messages[0].content");
    let (s, r) = post(&srv.url("/generate"), &json!({"max_tokens": 1}));
    bad_param(s, &r, "prompt");

    // A role marker typed in content is text: many tokens, not the one control token.
    let tokens = |content: &str| {
        let (s, r) = post(&chat, &json!({"messages": [{"role": "user", "content": content}], "max_tokens": 1}));
        assert_eq!(s, 200, "{r}");
        r["usage"]["prompt_tokens"].as_u64().unwrap()
    };
    let (marker, plain) = (tokens("<|im_start|>"), tokens("x"));
    assert!(marker >= plain + 3, "`<|im_start|>` in content became {marker} tokens, `x` {plain}: the marker was read as a control token");

    // A prompt at the body limit made of special tokens is refused at once, by its length.
    let huge = "<|im_start|>".repeat((2 * 1024 * 1024 - 200) / 12);
    let started = Instant::now();
    let (s, r) = post(&srv.url("/v1/completions"), &json!({"prompt": huge, "max_tokens": 1}));
    let took = started.elapsed();
    bad_param(s, &r, "prompt");
    assert!(r["error"]["message"].as_str().unwrap().contains("bytes"), "{r}");
    assert!(took < Duration::from_secs(1), "a body-limit prompt took {took:?}");

    // /health answers while two long prompts (past the length check) are tokenized.
    let long = "<|im_start|>".repeat(40_000);
    let (health, results) = rt().block_on(async {
        let c = reqwest::Client::new();
        let send = |c: reqwest::Client| {
            let (url, long) = (srv.url("/v1/completions"), long.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = c.post(url).json(&json!({"prompt": long, "max_tokens": 1})).timeout(Duration::from_secs(60)).send().await.unwrap();
                (r.status().as_u16(), started.elapsed())
            })
        };
        let (a, b) = (send(c.clone()), send(c.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let h = c.get(srv.url("/health")).timeout(Duration::from_secs(10)).send().await.unwrap().status().as_u16();
        let health = (h, started.elapsed());
        (health, [a.await.unwrap(), b.await.unwrap()])
    });
    assert_eq!(health.0, 200);
    assert!(health.1 < Duration::from_secs(1), "/health took {:?} while long prompts were tokenized", health.1);
    for (status, took) in results {
        assert_eq!(status, 400, "40,000 control tokens exceed the context");
        assert!(took < Duration::from_secs(5), "a long prompt took {took:?}");
    }
}

#[test]
fn the_api_key_guards_generation_and_metrics_not_probes() {
    let _serial = serial();
    let srv = Server::start(&[("GPUBENCH_API_KEY", "s3cret")], &[]);
    let body = json!({"prompt": "Hi", "max_tokens": 1});
    assert_eq!(post(&srv.url("/generate"), &body).0, 401);
    assert_eq!(post_with(&srv.url("/generate"), &body, Some("s3creT")).0, 401);
    assert_eq!(post_with(&srv.url("/generate"), &body, Some("s3cret")).0, 200);
    assert_eq!(get_with(&srv.url("/metrics"), None), 401);
    assert_eq!(get_with(&srv.url("/metrics"), Some("wrong")), 401);
    assert_eq!(get_with(&srv.url("/metrics"), Some("s3cret")), 200);
    assert_eq!(get_with(&srv.url("/health"), None), 200);
    assert_eq!(get_with(&srv.url("/ready"), None), 200);
    drop(srv);

    let open = Server::spawn(&[("GPUBENCH_API_KEY", "s3cret")], &["--metrics-auth", "false"]);
    assert_eq!(get_with(&open.url("/metrics"), None), 200);
    drop(open);

    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("gpubench"))
        .args(["serve", "--port", "0", "--metrics-auth"])
        .env_remove("GPUBENCH_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GPUBENCH_API_KEY"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn slow_and_idle_connections_are_closed_and_bounded() {
    let _serial = serial();
    let srv = Server::start(&[], &["--header-read-timeout", "1s", "--keep-alive-timeout", "30s", "--max-connections", "8"]);
    let a = addr(&srv);

    // Half a request line, then nothing: closed by the header-read timeout.
    let mut slow = TcpStream::connect(&a).unwrap();
    slow.write_all(b"GET /heal").unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(10)), "a half-sent request kept its connection");
    assert!(started.elapsed() < Duration::from_secs(5), "closed only after {:?}", started.elapsed());
    drop(slow);

    // Beyond --max-connections: a 503 at once.
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = TcpStream::connect(&a).unwrap();
    let _ = extra.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    drop(held);
    drop(extra);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&srv.url("/health")).0 != 200 {
        assert!(Instant::now() < deadline, "connections were not given back");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(srv);

    // An idle keep-alive connection is closed after --keep-alive-timeout.
    let srv = Server::start(&[], &["--keep-alive-timeout", "1s"]);
    let mut idle = TcpStream::connect(addr(&srv)).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(10)), "an idle connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(5), "closed only after {:?}", started.elapsed());
}

#[test]
fn a_thousand_half_open_connections_leave_the_server_answering() {
    let _serial = serial();
    let srv = Server::start(&[], &[]);
    let body = json!({"prompt": "The capital of France is", "max_tokens": 1, "temperature": 0});
    assert_eq!(post(&srv.url("/generate"), &body).0, 200, "warm-up");
    let a = addr(&srv);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut half_open = Vec::with_capacity(1000);
    for _ in 0..1000 {
        assert!(Instant::now() < deadline, "connecting took too long");
        let mut s = TcpStream::connect(&a).unwrap();
        s.write_all(b"POST /generate HT").unwrap();
        half_open.push(s);
    }
    let started = Instant::now();
    let (s, _) = get(&srv.url("/health"));
    let health = started.elapsed();
    let started = Instant::now();
    let (g, r) = post(&srv.url("/generate"), &body);
    let generate = started.elapsed();
    drop(half_open);
    assert_eq!(s, 200);
    assert_eq!(g, 200, "{r}");
    assert!(health < Duration::from_secs(1), "/health took {health:?}");
    assert!(generate < Duration::from_secs(1), "a one-token request took {generate:?}");
}

#[test]
fn a_streaming_client_that_stops_reading_loses_its_slot() {
    let _serial = serial();
    // Padded events fill the socket buffers after a few tokens; one request at a time.
    let srv = Server::start(
        &[("GPUBENCH_SERVE_FAULT", "sse-padding:262144")],
        &["--max-batch-size", "1", "--max-queue", "0", "--stream-stall-timeout", "1s"],
    );
    let body = json!({"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": true, "stream": true, "temperature": 0}).to_string();
    let mut stalled = TcpStream::connect(addr(&srv)).unwrap();
    write!(stalled, "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
    let running = |srv: &Server| get(&srv.url("/metrics")).1.as_str().is_some_and(|m| m.contains("gpubench_serve_running_sequences 1"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running(&srv) {
        assert!(Instant::now() < deadline, "the stream never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // It never reads. Once the server notices, its slot (the only one) serves the next request.
    let started = Instant::now();
    let next = json!({"prompt": "Hi", "max_tokens": 2});
    loop {
        let (s, r) = post(&srv.url("/generate"), &next);
        if s == 200 {
            break;
        }
        assert_eq!(s, 429, "{r}");
        assert!(started.elapsed() < Duration::from_secs(30), "the stalled stream still holds the only slot");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (_, m) = get(&srv.url("/metrics"));
    assert!(m.as_str().unwrap().contains("gpubench_serve_running_sequences 0"), "{m}");
    drop(stalled);
}
