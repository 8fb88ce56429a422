//! Runs the real `gpubench serve` on 127.0.0.1 (port 0) and checks the HTTP API: shapes of the
//! seed and OpenAI endpoints (streamed and not), bad input, the queue bound, cancellation,
//! graceful shutdown. Uses the default model, provisioned as `serve` does.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::{post, post_stream, rt, Server};
use serde_json::{json, Value};

fn http_get(url: &str) -> Result<(u16, String), reqwest::Error> {
    rt().block_on(async {
        let r = reqwest::get(url).await?;
        let s = r.status().as_u16();
        Ok((s, r.text().await?))
    })
}

#[test]
fn api_shapes_and_bad_input() {
    let srv = Server::start(&[], &["--max-batch-size", "4", "--max-tokens-limit", "64"]);
    let greedy = json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0});

    // Seed API.
    let (s, r) = post(&srv.url("/generate"), &greedy);
    assert_eq!(s, 200, "{r}");
    for k in ["text", "prompt_tokens", "completion_tokens", "finish_reason", "latency_ms", "model"] {
        assert!(r.get(k).is_some(), "missing {k} in {r}");
    }
    assert!(r["text"].as_str().unwrap().starts_with(" Paris"), "{r}");
    assert_eq!(r["prompt_tokens"], 5);
    assert_eq!(r["completion_tokens"], 3);
    assert_eq!(r["finish_reason"], "length");
    let model = r["model"].as_str().unwrap().to_string();

    // Completions, not streamed and streamed (with usage in the last chunk).
    let (s, r) = post(&srv.url("/v1/completions"), &json!({"model": model, "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    assert!(r["choices"][0]["text"].as_str().unwrap().starts_with(" Paris"));
    assert_eq!(r["usage"]["total_tokens"], 8);
    let (s, chunks) = post_stream(
        &srv.url("/v1/completions"),
        &json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(s, 200);
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"));
    let parsed: Vec<Value> = chunks[..chunks.len() - 1].iter().map(|c| serde_json::from_str(c).unwrap()).collect();
    let text: String = parsed.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert!(text.starts_with(" Paris"), "{text:?}");
    let usage = &parsed.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 3, "{parsed:?}");
    assert!(parsed.iter().any(|c| c["choices"][0]["finish_reason"] == "length"));

    // Chat, not streamed and streamed.
    let chat = json!({"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}], "max_tokens": 4, "temperature": 0});
    let (s, r) = post(&srv.url("/v1/chat/completions"), &chat);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    let content = r["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(!content.is_empty());
    let mut chat_stream = chat.clone();
    chat_stream["stream"] = json!(true);
    let (s, chunks) = post_stream(&srv.url("/v1/chat/completions"), &chat_stream);
    assert_eq!(s, 200);
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str::<Value>(c).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, content, "greedy streamed text equals the non-streamed text");
    let first: Value = serde_json::from_str(&chunks[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");

    // Models, health, ready, metrics.
    let (s, body) = http_get(&srv.url("/v1/models")).unwrap();
    assert_eq!(s, 200);
    let models: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(models["data"][0]["id"], model.as_str());
    assert_eq!(http_get(&srv.url("/health")).unwrap().0, 200);
    let (s, metrics) = http_get(&srv.url("/metrics")).unwrap();
    assert_eq!(s, 200);
    assert!(metrics.contains("gpubench_serve_requests_total{route=\"/generate\",status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("gpubench_serve_time_to_first_token_seconds_count"));

    // Bad input: 4xx with an OpenAI error naming the field.
    let bad = |path: &str, body: Value, status: u16, param: &str| {
        let (s, r) = post(&srv.url(path), &body);
        assert_eq!(s, status, "{path} {body} -> {r}");
        assert_eq!(r["error"]["param"], param, "{path} {body} -> {r}");
        assert!(r["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    bad("/generate", json!({"prompt": ""}), 400, "prompt");
    bad("/generate", json!({"max_tokens": 3}), 400, "prompt");
    bad("/generate", json!({"prompt": "x", "max_tokens": 0}), 400, "max_tokens");
    bad("/generate", json!({"prompt": "x", "max_tokens": 65}), 400, "max_tokens");
    bad("/generate", json!({"prompt": "x", "max_tokens": "ten"}), 400, "max_tokens");
    bad("/generate", json!({"prompt": "x", "temperature": -1}), 400, "temperature");
    bad("/generate", json!({"prompt": "x", "top_p": 2}), 400, "top_p");
    bad("/v1/completions", json!({"model": "gpt-4", "prompt": "x"}), 404, "model");
    bad("/v1/chat/completions", json!({"messages": []}), 400, "messages");
    bad("/v1/chat/completions", json!({"messages": [{"role": "wizard", "content": "x"}]}), 400, "messages[0].role");
    let long = "word ".repeat(9000);
    bad("/generate", json!({"prompt": long, "max_tokens": 1}), 400, "prompt");
    let (s, body) = rt().block_on(async {
        let r = reqwest::Client::new().post(srv.url("/generate")).body("{not json").send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    assert_eq!((s, body["error"]["param"].as_str()), (400, Some("body")));

    // Concurrent greedy requests (batched) give the same text as alone.
    let prompts = ["The capital of France is", "Once upon a time", "def add(a, b):"];
    let alone: Vec<Value> = prompts
        .iter()
        .map(|p| post(&srv.url("/generate"), &json!({"prompt": p, "max_tokens": 6, "temperature": 0})).1["text"].clone())
        .collect();
    let together: Vec<Value> = rt().block_on(async {
        let c = reqwest::Client::new();
        let futs = prompts.iter().map(|p| {
            let c = c.clone();
            let url = srv.url("/generate");
            async move { c.post(url).json(&json!({"prompt": p, "max_tokens": 6, "temperature": 0})).send().await.unwrap().json::<Value>().await.unwrap()["text"].clone() }
        });
        futures_util::future::join_all(futs).await
    });
    assert_eq!(together, alone);

    // Stop strings end generation with finish_reason "stop" and are not returned.
    let (_, r) = post(&srv.url("/generate"), &json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0, "stop": ["."]}));
    assert_eq!(r["finish_reason"], "stop", "{r}");
    assert!(!r["text"].as_str().unwrap().contains('.'), "{r}");

    // A client that goes away frees its slot.
    let generated = |m: &str| -> u64 {
        m.lines().find_map(|l| l.strip_prefix("gpubench_serve_generated_tokens_total ")).unwrap().parse().unwrap()
    };
    let before = generated(&http_get(&srv.url("/metrics")).unwrap().1);
    rt().block_on(async {
        let r = reqwest::Client::new()
            .post(srv.url("/v1/completions"))
            .json(&json!({"prompt": "Once upon a time", "max_tokens": 60, "stream": true, "ignore_eos": true}))
            .send()
            .await
            .unwrap();
        let mut stream = r.bytes_stream();
        use futures_util::StreamExt;
        let _ = stream.next().await;
        drop(stream);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = http_get(&srv.url("/metrics")).unwrap();
        if m.contains("gpubench_serve_running_sequences 0") {
            let spent = generated(&m) - before;
            assert!(spent < 30, "the cancelled request ran on ({spent} of its 60 tokens generated)");
            break;
        }
        assert!(Instant::now() < deadline, "cancelled request still running");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn queue_bound_gives_429_with_retry_after() {
    let srv = Server::start(&[], &["--max-batch-size", "1", "--max-queue", "0"]);
    let url = srv.url("/generate");
    let (first, second) = rt().block_on(async {
        let c = reqwest::Client::new();
        let long = c.post(&url).json(&json!({"prompt": "Once upon a time", "max_tokens": 40})).send();
        let long = tokio::spawn(long);
        // Wait until the first request occupies the only slot.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = c.get(url.replace("/generate", "/metrics")).send().await.unwrap().text().await.unwrap();
            if m.contains("gpubench_serve_running_sequences 1") {
                break;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = c.post(&url).json(&json!({"prompt": "Hi", "max_tokens": 1})).send().await.unwrap();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let second = (r.status().as_u16(), retry, r.json::<Value>().await.unwrap());
        let first = long.await.unwrap().unwrap().status().as_u16();
        (first, second)
    });
    assert_eq!(first, 200);
    assert_eq!(second.0, 429, "{:?}", second.2);
    assert!(second.1.is_some(), "Retry-After header");
    assert_eq!(second.2["error"]["code"], "rate_limit_exceeded");
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let mut srv = Server::start(&[], &["--shutdown-grace", "30s", "--api-key", "k"]);
    let url = srv.url("/generate");
    let pid = srv.child.id().to_string();
    let (unauth, resp) = rt().block_on(async {
        let c = reqwest::Client::new();
        let unauth = c.post(&url).json(&json!({"prompt": "Hi"})).send().await.unwrap().status().as_u16();
        let req = c.post(&url).bearer_auth("k").json(&json!({"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0})).send();
        let req = tokio::spawn(req);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let r = req.await.unwrap().unwrap();
        (unauth, (r.status().as_u16(), r.json::<Value>().await.unwrap()))
    });
    assert_eq!(unauth, 401);
    assert_eq!(resp.0, 200, "{}", resp.1);
    assert_eq!(resp.1["completion_tokens"], 12);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = srv.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dummy_weights_serve_and_say_so() {
    let srv = Server::start(&[], &["--load-format", "dummy", "--arch", "smollm2-135m"]);
    let (s, r) = post(&srv.url("/generate"), &json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0, "ignore_eos": true}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["dummy_weights"], true);
    assert_eq!(r["completion_tokens"], 3);
    assert_eq!(r["model"], "dummy-smollm2-135m");
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = Command::new(assert_cmd::cargo::cargo_bin!("gpubench")).args(["serve", "--load-format", "dummy"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--arch"));
    let out = Command::new(assert_cmd::cargo::cargo_bin!("gpubench")).args(["serve", "--model", "/nonexistent/x.gguf"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}
