//! Runs the real `gpubench serve` on 127.0.0.1 (port 0) with injected faults
//! (`GPUBENCH_SERVE_FAULT`): a panic while serving one request fails that request alone with a
//! 500 and the server goes on; `/ready` answers 503 while the model loads and `/health` 200
//! throughout; a shutdown whose grace period runs out still exits 0.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::{get, post, post_stream, rt, Server};
use serde_json::{json, Value};

const FAULT: &str = "GPUBENCH_SERVE_FAULT";

async fn post_async(c: reqwest::Client, url: String, body: Value) -> (u16, Option<String>, Value) {
    let r = c.post(url).json(&body).timeout(Duration::from_secs(120)).send().await.unwrap();
    let s = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (s, retry, r.json().await.unwrap_or(Value::Null))
}

fn assert_server_error(status: u16, body: &Value) {
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("internal error")), "{body}");
}

fn metric(srv: &Server, line_prefix: &str) -> Option<f64> {
    let (_, m) = get(&srv.url("/metrics"));
    m.as_str()?.lines().find_map(|l| l.strip_prefix(line_prefix)).and_then(|v| v.trim().parse().ok())
}

fn paris(srv: &Server) {
    let (s, r) = post(&srv.url("/generate"), &json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}));
    assert_eq!(s, 200, "{r}");
    assert!(r["text"].as_str().unwrap().starts_with(" Paris"), "{r}");
}

#[test]
fn a_panic_in_one_request_fails_that_request_alone() {
    let mut srv = Server::start(&[(FAULT, "panic-on-prompt:BOOM;panic-in-handler:CRASH;panic-in-step:KABOOM")], &["--max-batch-size", "4"]);
    let url = srv.url("/v1/completions");

    // A healthy stream is running when a poisoned request joins its batch: the poisoned one gets a
    // 500, the healthy one all of its tokens.
    let (healthy, poisoned) = rt().block_on(async {
        let c = reqwest::Client::new();
        let long = tokio::spawn(post_async(c.clone(), url.clone(), json!({"prompt": "Once upon a time", "max_tokens": 32, "temperature": 0, "ignore_eos": true})));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = c.get(url.replace("/v1/completions", "/metrics")).send().await.unwrap().text().await.unwrap();
            let generated = m.lines().find_map(|l| l.strip_prefix("gpubench_serve_generated_tokens_total ")).unwrap_or("0");
            if m.contains("gpubench_serve_running_sequences 1") && generated != "0" {
                break;
            }
            assert!(Instant::now() < deadline, "the first request never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let poisoned = post_async(c.clone(), url.clone(), json!({"prompt": "Say BOOM", "max_tokens": 8})).await;
        (long.await.unwrap(), poisoned)
    });
    assert_server_error(poisoned.0, &poisoned.2);
    assert_eq!(healthy.0, 200, "{}", healthy.2);
    assert_eq!(healthy.2["usage"]["completion_tokens"], 32, "{}", healthy.2);

    // Streamed, the error arrives as an OpenAI error chunk and the stream still ends with [DONE].
    let (s, chunks) = post_stream(&url, &json!({"prompt": "BOOM again", "max_tokens": 4, "stream": true}));
    assert_eq!(s, 200);
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"), "{chunks:?}");
    let err: Value = serde_json::from_str(&chunks[chunks.len() - 2]).unwrap();
    assert_eq!(err["error"]["type"], "server_error", "{chunks:?}");

    // A panic inside the model step fails the requests of that step; the engine goes on.
    let (s, r) = post(&srv.url("/generate"), &json!({"prompt": "KABOOM", "max_tokens": 4}));
    assert_server_error(s, &r);
    paris(&srv);

    // A panic in the HTTP handler is a 500 for that request alone.
    let (s, r) = post(&srv.url("/generate"), &json!({"prompt": "CRASH", "max_tokens": 4}));
    assert_server_error(s, &r);
    let (s, r) = post(&url, &json!({"prompt": "CRASH", "max_tokens": 4, "stream": true}));
    assert_server_error(s, &r);

    // Later requests succeed, no slot or KV reservation leaked, and the failures were counted.
    paris(&srv);
    srv.assert_alive();
    assert_eq!(metric(&srv, "gpubench_serve_running_sequences "), Some(0.0));
    assert_eq!(metric(&srv, "gpubench_serve_kv_cache_tokens_used "), Some(0.0));
    assert_eq!(metric(&srv, "gpubench_serve_requests_total{route=\"/generate\",status=\"500\"} "), Some(2.0));
    assert_eq!(metric(&srv, "gpubench_serve_requests_total{route=\"/v1/completions\",status=\"500\"} "), Some(2.0));
    // The queue bound still admits as many requests as before: no slot was lost.
    let (s, r) = rt().block_on(async {
        let c = reqwest::Client::new();
        let futs = (0..4).map(|_| post_async(c.clone(), srv.url("/generate"), json!({"prompt": "Hi", "max_tokens": 2, "ignore_eos": true})));
        let all = futures_util::future::join_all(futs).await;
        (all.iter().map(|r| r.0).collect::<Vec<_>>(), all.into_iter().map(|r| r.2).collect::<Vec<_>>())
    });
    assert_eq!(s, vec![200; 4], "{r:?}");
}

#[test]
fn ready_is_503_while_loading_and_health_200_throughout() {
    let srv = Server::spawn(&[(FAULT, "load-delay:3s")], &[]);
    let (s, r) = get(&srv.url("/ready"));
    assert_eq!((s, r["status"].as_str()), (503, Some("loading")), "{r}");
    assert_eq!(get(&srv.url("/health")).0, 200);
    // Generation while loading: 503 with Retry-After, not a hang or a crash.
    let (s, retry, r) = rt().block_on(post_async(reqwest::Client::new(), srv.url("/generate"), json!({"prompt": "Hi", "max_tokens": 1})));
    assert_eq!(s, 503, "{r}");
    assert!(retry.is_some(), "Retry-After while loading");
    assert!(r["error"]["message"].as_str().unwrap().contains("/ready"), "{r}");
    // /v1/models answers while loading too.
    assert_eq!(get(&srv.url("/v1/models")).0, 200);

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert_eq!(get(&srv.url("/health")).0, 200, "/health stays 200 while loading");
        let (s, r) = get(&srv.url("/ready"));
        if s == 200 {
            assert_eq!(r["status"], "ready");
            break;
        }
        assert_eq!(s, 503, "{r}");
        assert!(Instant::now() < deadline, "model never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    paris(&srv);
}

#[cfg(unix)]
#[test]
fn shutdown_past_the_grace_period_cuts_requests_and_exits_0() {
    let mut srv = Server::start(&[], &["--shutdown-grace", "1s"]);
    let url = srv.url("/generate");
    let pid = srv.child.id().to_string();
    let started = Instant::now();
    let outcome = rt().block_on(async {
        // Far more tokens than can be generated within the grace period.
        let req = reqwest::Client::new().post(&url).json(&json!({"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true})).send();
        let req = tokio::spawn(req);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        req.await.unwrap()
    });
    // The cut request gets no success.
    if let Ok(r) = outcome {
        assert_ne!(r.status().as_u16(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = srv.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "server did not exit after SIGTERM and its grace period");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_malformed_fault_spec_is_a_usage_error() {
    let out = Command::new(assert_cmd::cargo::cargo_bin!("gpubench"))
        .args(["serve", "--port", "0", "--load-format", "dummy", "--arch", "smollm2-135m"])
        .env("GPUBENCH_SERVE_FAULT", "explode:now")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GPUBENCH_SERVE_FAULT"));
}

#[test]
fn a_queued_client_that_goes_away_frees_its_slot() {
    let srv = Server::start(&[], &["--max-batch-size", "1", "--max-queue", "1"]);
    let url = srv.url("/v1/completions");
    let stream_body = json!({"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": true, "stream": true});
    rt().block_on(async {
        use futures_util::StreamExt;
        let c = reqwest::Client::new();
        // A runs (the only batch slot), B waits in the queue (the only queue slot).
        let a = c.post(&url).json(&stream_body).send().await.unwrap();
        assert_eq!(a.status(), 200);
        let mut a = a.bytes_stream();
        let _ = a.next().await;
        let b = c.post(&url).json(&stream_body).send().await.unwrap();
        assert_eq!(b.status(), 200);
        let full = c.post(&url).json(&stream_body).send().await.unwrap();
        assert_eq!(full.status(), 429, "both slots are taken");
        // B's client goes away while B is still queued: its slot comes back.
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = c.post(&url).json(&stream_body).send().await.unwrap();
            if r.status() == 200 {
                break;
            }
            assert_eq!(r.status(), 429);
            assert!(Instant::now() < deadline, "the queue slot of a client that went away was not freed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(a);
    });
}

#[test]
fn metrics_cover_every_family_and_unknown_routes_are_openai_errors() {
    let srv = Server::start(&[], &[]);
    let (s, r) = get(&srv.url("/v2/nothing"));
    assert_eq!(s, 404);
    assert_eq!(r["error"]["type"], "not_found_error", "{r}");
    // Chat streamed with usage: the last chunk before [DONE] carries usage and no choices.
    let (s, chunks) = post_stream(
        &srv.url("/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(s, 200);
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&chunks[chunks.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3, "{usage}");
    assert_eq!(usage["choices"], json!([]), "{usage}");
    paris(&srv);
    let (_, m) = get(&srv.url("/metrics"));
    let m = m.as_str().unwrap().to_string();
    for family in [
        "gpubench_serve_requests_total{route=\"/v1/chat/completions\",status=\"200\"}",
        "gpubench_serve_queue_depth",
        "gpubench_serve_running_sequences",
        "gpubench_serve_prompt_tokens_total",
        "gpubench_serve_generated_tokens_total",
        "gpubench_serve_kv_cache_tokens_used",
        "gpubench_serve_kv_cache_tokens_limit",
        "gpubench_serve_process_resident_memory_bytes",
        "gpubench_serve_time_to_first_token_seconds_bucket",
        "gpubench_serve_inter_token_latency_seconds_bucket",
        "gpubench_serve_request_duration_seconds_bucket",
    ] {
        assert!(m.contains(family), "no {family} in /metrics:\n{m}");
    }
    assert!(metric(&srv, "gpubench_serve_generated_tokens_total ").unwrap() >= 6.0);
    assert!(metric(&srv, "gpubench_serve_process_resident_memory_bytes ").unwrap() > 1e6);
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_server_with_status_0() {
    let mut srv = Server::start(&[], &[]);
    paris(&srv);
    assert!(Command::new("kill").args(["-INT", &srv.child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = srv.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "server did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    }
}
