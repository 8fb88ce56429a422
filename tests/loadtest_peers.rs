//! `gpubench load-test` against servers nobody here wrote: a raw-TCP server that routes only
//! origin-form request lines, and llama.cpp's `llama-server` (skipped where it is not built).

mod common;


use common::llama_server::LlamaServer;
use common::load_test;
use common::origin_only::OriginOnlyServer;

#[test]
fn request_lines_are_origin_form() {
    let server = OriginOnlyServer::start();
    let run = load_test(&["--url", &server.url("/v1/completions"), "-c", "2", "-n", "6", "--max-tokens", "4"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.r();
    assert_eq!(r["counts"]["ok"], 6, "{r:#}");
    assert_eq!(r["target"]["model"], "origin-model", "the /v1/models probe reached the server");
    let lines = server.lines.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l == "GET /v1/models HTTP/1.1"), "{lines:?}");
    let posts: Vec<_> = lines.iter().filter(|l| l.starts_with("POST")).collect();
    assert_eq!(posts.len(), 6, "{lines:?}");
    assert!(posts.iter().all(|l| *l == "POST /v1/completions HTTP/1.1"), "{lines:?}");
}

#[test]
fn streamed_chat_and_completions_against_llama_server() {
    let Some(server) = LlamaServer::start(&[]) else { return };
    for path in ["/v1/chat/completions", "/v1/completions"] {
        let run = load_test(&["--url", &server.url(path), "--stream", "-c", "2", "-n", "4", "--max-tokens", "8", "--temperature", "0"]);
        assert_eq!(run.code, 0, "{path}: {}", run.stderr);
        let r = run.r();
        assert_eq!(r["counts"]["ok"], 4, "{path}: {r:#}");
        assert_eq!(r["counts"]["errors"]["http_status"], 0, "{path}");
        assert!(r["latency_ms"]["ttft"]["p50"].as_f64().unwrap() > 0.0, "{path}");
        assert!(r["throughput"]["total_output_tokens"].as_u64().unwrap() > 0, "{path}");
    }
}

#[test]
fn ignore_eos_gives_exact_lengths_on_llama_server() {
    let Some(server) = LlamaServer::start(&[]) else { return };
    let run = load_test(&[
        "--url",
        &server.url("/v1/chat/completions"),
        "--stream",
        "-c",
        "2",
        "-n",
        "4",
        "--max-tokens",
        "24",
        "--ignore-eos",
        "--prompt",
        "Say yes.",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.r();
    assert_eq!(r["counts"]["ok"], 4, "{r:#}");
    assert_eq!(r["throughput"]["total_output_tokens"], 96, "4 answers of exactly 24 tokens: {r:#}");
}

#[test]
fn server_metrics_of_llama_server() {
    let Some(server) = LlamaServer::start(&["--metrics"]) else { return };
    let run = load_test(&["--url", &server.url("/v1/completions"), "-c", "2", "-n", "6", "--max-tokens", "8", "--server-metrics-interval", "200ms"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.r();
    let warnings: Vec<&str> = r["warnings"].as_array().unwrap().iter().filter_map(|w| w.as_str()).collect();
    assert!(!warnings.iter().any(|w| w.contains("server metrics")), "{warnings:?}");
    let replica = &r["server_metrics"]["replicas"][0];
    assert_eq!(replica["engine"], "llama.cpp", "{replica:#}");
    assert_eq!(replica["scrape_url"], server.url("/metrics"));
    assert!(!replica["series"].as_array().unwrap().is_empty());
    let s = &replica["summary"];
    assert!(s["samples"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["scrape_errors"], 0);
    // Two workers on four slots: llama-server reports them as processing.
    assert!(s["running_peak"].as_f64().is_some_and(|p| (0.0..=4.0).contains(&p)), "{s}");
}

#[test]
fn two_shards_against_llama_server_merge_into_one_run() {
    let Some(server) = LlamaServer::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("/v1/completions");
    // Both shards start at once (spawned together, each waits 3 s) and run concurrently.
    let children: Vec<_> = (0..2)
        .map(|i| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("gpubench"))
                .args(["load-test", "--url", &url, "--rate", "4", "--requests", "6", "--max-tokens", "8", "-q"])
                .args(["--shard", &format!("{i}/2"), "--start-at", "+3s", "--out"])
                .arg(dir.path().join(format!("s{i}.json")))
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let merged = dir.path().join("merged.json");
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("gpubench"))
        .args(["report", "merge"])
        .arg(dir.path().join("s*.json"))
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    common::assert_valid_report(&m);
    assert_eq!(m["counts"]["sent"], 6, "{m:#}");
    assert_eq!(m["counts"]["ok"], 6, "{m:#}");
    assert_eq!(m["latency_ms"]["e2e"]["count"], 6);
    for s in m["merged_from"].as_array().unwrap() {
        assert_eq!(s["sent"], 3, "each shard sent its half: {s:#}");
        // The offset comes from llama-server's own Date header, where it sends one.
        if let Some(o) = s["shard"]["clock_offset_ms"].as_f64() {
            assert!(o.abs() < 1000.0, "{s:#}");
        }
    }
}
