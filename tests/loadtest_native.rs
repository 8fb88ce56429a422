//! `gpubench load-test` against Ollama's and TGI's own APIs: the real binary against an
//! in-process fake speaking their wire formats (NDJSON, TGI's events and answers).

mod common;

use std::time::Duration;

use common::fake_native::{NativeConfig, NativeFault, NativeServer};

/// `gpubench load-test ARGS --timeout 10s`.
fn load_test(args: &[&str]) -> common::LoadTestRun {
    let mut all = args.to_vec();
    all.extend(["--timeout", "10s"]);
    common::load_test(&all)
}
use serde_json::Value;

/// A run that must succeed; its report.
fn ok_run(args: &[&str]) -> Value {
    let run = load_test(args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.report.expect("a report")
}

fn ms(report: &Value, metric: &str, stat: &str) -> f64 {
    report["latency_ms"][metric][stat].as_f64().unwrap_or_else(|| panic!("no latency_ms.{metric}.{stat} in {report:#}"))
}

fn paced() -> NativeConfig {
    NativeConfig { ttft: Duration::from_millis(40), token_gap: Duration::from_millis(10), tokens: 12, ..NativeConfig::default() }
}

/// The streamed measures exist and are plausible for `paced()` with `tokens` per answer.
fn assert_streamed(r: &Value, requests: u64, tokens: u64) {
    assert_eq!(r["workload"]["stream"], true);
    let ttft = ms(r, "ttft", "p50");
    assert!((35.0..1000.0).contains(&ttft), "ttft {ttft}");
    assert_eq!(r["latency_ms"]["itl"]["count"], requests * (tokens - 1), "one gap between each two tokens");
    let itl = ms(r, "itl", "p50");
    assert!((5.0..500.0).contains(&itl), "itl {itl}");
    assert_eq!(common::other_warnings(r), Vec::<String>::new(), "the server's counts match the streamed chunks");
}

fn assert_not_streamed(r: &Value) {
    assert_eq!(r["workload"]["stream"], false);
    assert!(r["latency_ms"]["ttft"].is_null(), "no TTFT without streaming: {:#}", r["latency_ms"]);
    assert!(r["latency_ms"]["itl"].is_null() || r["latency_ms"]["itl"]["count"] == 0, "{:#}", r["latency_ms"]);
    assert_eq!(common::other_warnings(r), Vec::<String>::new(), "every answer reported its token count");
}

#[test]
fn ollama_generate_streamed_reads_ndjson_and_eval_counts() {
    let server = NativeServer::start(paced());
    let r = ok_run(&["--url", &server.url("/api/generate"), "--stream", "-c", "2", "-n", "6", "--max-tokens", "5", "--prompt", "Why is the sky blue?"]);
    assert_eq!(r["target"]["api"], "ollama-generate");
    assert_eq!(r["target"]["model"], "llama3.2:latest", "model learnt from the server");
    assert_eq!(r["counts"]["ok"], 6);
    assert_eq!(r["throughput"]["total_output_tokens"], 30, "eval_count of each done line");
    assert_eq!(r["throughput"]["total_input_tokens"], 66, "prompt_eval_count of each done line");
    assert_streamed(&r, 6, 5);
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 6);
    for b in &bodies {
        assert_eq!(b["model"], "llama3.2:latest");
        assert_eq!(b["prompt"], "Why is the sky blue?");
        assert_eq!(b["stream"], true);
        assert_eq!(b["options"]["num_predict"], 5);
        assert!(b.get("messages").is_none() && b.get("max_tokens").is_none(), "{b}");
    }
}

#[test]
fn ollama_generate_not_streamed_says_stream_false() {
    let server = NativeServer::start(paced());
    let r = ok_run(&["--url", &server.url("/api/generate"), "-c", "2", "-n", "4", "--max-tokens", "7", "--model", "llama3.2"]);
    assert_eq!(r["target"]["api"], "ollama-generate");
    assert_eq!(r["target"]["model"], "llama3.2");
    assert_eq!(r["counts"]["ok"], 4);
    assert_eq!(r["throughput"]["total_output_tokens"], 28);
    assert_eq!(r["throughput"]["total_input_tokens"], 44);
    assert_not_streamed(&r);
    for b in server.bodies() {
        // Ollama streams unless told not to: the field must be there, and false.
        assert_eq!(b["stream"], false, "{b}");
        assert_eq!(b["model"], "llama3.2");
        assert_eq!(b["options"]["num_predict"], 7);
    }
}

#[test]
fn ollama_chat_streamed_and_not() {
    let server = NativeServer::start(paced());
    let url = server.url("/api/chat");
    let r = ok_run(&["--url", &url, "--stream", "-c", "2", "-n", "4", "--max-tokens", "6", "--prompt", "hello there"]);
    assert_eq!(r["target"]["api"], "ollama-chat");
    assert_eq!(r["counts"]["ok"], 4);
    assert_eq!(r["throughput"]["total_output_tokens"], 24);
    assert_streamed(&r, 4, 6);
    let streamed = server.bodies();
    assert_eq!(streamed.len(), 4);
    for b in &streamed {
        assert_eq!(b["stream"], true);
        assert_eq!(b["model"], "llama3.2:latest");
        assert_eq!(b["options"]["num_predict"], 6);
        assert_eq!(b["messages"], serde_json::json!([{"role": "user", "content": "hello there"}]), "{b}");
        assert!(b.get("prompt").is_none(), "{b}");
    }

    let r = ok_run(&["--url", &url, "--api", "ollama-chat", "-n", "3", "--max-tokens", "4", "--prompt", "hello there"]);
    assert_eq!(r["target"]["api"], "ollama-chat");
    assert_eq!(r["counts"]["ok"], 3);
    assert_eq!(r["throughput"]["total_output_tokens"], 12);
    assert_not_streamed(&r);
    let plain = &server.bodies()[4..];
    assert_eq!(plain.len(), 3);
    for b in plain {
        assert_eq!(b["stream"], false);
        assert_eq!(b["options"]["num_predict"], 4);
        assert_eq!(b["messages"][0]["content"], "hello there");
    }
}

#[test]
fn a_truncated_ndjson_stream_is_a_protocol_error() {
    let server = NativeServer::start(NativeConfig { fault: NativeFault::TruncatedNdjson, ..NativeConfig::default() });
    let run = load_test(&["--url", &server.url("/api/generate"), "--stream", "-n", "3", "--model", "llama3.2"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = run.report.expect("the report is still written");
    assert_eq!(r["counts"]["ok"], 0);
    assert_eq!(r["counts"]["errors"]["protocol"], 3);
    let sample = r["counts"]["error_samples"][0].as_str().unwrap();
    assert!(sample.contains("\"done\": true") && sample.contains("truncated"), "{sample}");
}

#[test]
fn an_unknown_ollama_model_is_an_http_error() {
    let server = NativeServer::start(NativeConfig::default());
    let run = load_test(&["--url", &server.url("/api/chat"), "-n", "2", "--model", "mistral"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.report.unwrap()["counts"]["errors"]["http_status"], 2);
}

#[test]
fn tgi_generate_is_found_from_info_and_reads_details() {
    let server = NativeServer::start(paced());
    let r = ok_run(&["--url", &server.url("/generate"), "-c", "2", "-n", "4", "--max-tokens", "9", "--prompt", "What is Deep Learning?"]);
    assert_eq!(r["target"]["api"], "tgi-generate", "GET /info named a model_id");
    assert_eq!(r["counts"]["ok"], 4);
    assert_eq!(r["throughput"]["total_output_tokens"], 36, "details.generated_tokens");
    assert_not_streamed(&r);
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 4);
    for b in &bodies {
        assert_eq!(b["inputs"], "What is Deep Learning?");
        assert_eq!(b["parameters"]["max_new_tokens"], 9);
        assert_eq!(b["parameters"]["details"], true);
        for absent in ["prompt", "max_tokens", "stream", "model"] {
            assert!(b.get(absent).is_none(), "no {absent} in a TGI body: {b}");
        }
    }
    // TGI streams from /generate_stream only.
    let run = load_test(&["--url", &server.url("/generate"), "--stream", "-n", "1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("/generate_stream"), "{}", run.stderr);
}

#[test]
fn generate_without_info_stays_the_seed_api_unless_tgi_is_forced() {
    let server = NativeServer::start(NativeConfig { info: false, ..NativeConfig::default() });
    let url = server.url("/generate");
    let run = load_test(&["--url", &url, "-n", "2", "--max-tokens", "3"]);
    let r = run.report.expect("a report");
    assert_eq!(r["target"]["api"], "generate");
    let seed = server.bodies();
    assert_eq!(seed[0]["max_tokens"], 3, "a seed body: {}", seed[0]);
    assert!(seed[0].get("inputs").is_none());

    let r = ok_run(&["--url", &url, "--api", "tgi", "-n", "2", "--max-tokens", "3"]);
    assert_eq!(r["target"]["api"], "tgi-generate");
    assert_eq!(r["counts"]["ok"], 2);
    assert_eq!(r["throughput"]["total_output_tokens"], 6);
    let forced = &server.bodies()[2..];
    assert_eq!(forced[0]["parameters"]["max_new_tokens"], 3, "{}", forced[0]);
}

#[test]
fn tgi_generate_stream_reads_token_events_without_done() {
    let server = NativeServer::start(paced());
    let url = server.url("/generate_stream");
    // /generate_stream streams with or without --stream, found from the path or forced.
    for extra in [&[][..], &["--api", "tgi"][..]] {
        let mut args = vec!["--url", url.as_str(), "-c", "2", "-n", "4", "--max-tokens", "6", "--prompt", "What is Deep Learning?"];
        args.extend_from_slice(extra);
        let r = ok_run(&args);
        assert_eq!(r["target"]["api"], "tgi-generate-stream");
        assert_eq!(r["counts"]["ok"], 4);
        assert_eq!(r["throughput"]["total_output_tokens"], 24);
        assert_streamed(&r, 4, 6);
        assert!(ms(&r, "e2e", "max") < 5000.0, "the last event ends the answer, not the timeout");
    }
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 8);
    for b in &bodies {
        assert_eq!(b["inputs"], "What is Deep Learning?");
        assert_eq!(b["parameters"]["max_new_tokens"], 6);
        assert_eq!(b["parameters"]["details"], true);
        assert!(b.get("stream").is_none() && b.get("model").is_none(), "{b}");
    }
}

#[test]
fn the_fake_paces_and_records_arrivals() {
    // The recorded arrival times follow the client's schedule: an open loop at 20 req/s.
    let server = NativeServer::start(NativeConfig::default());
    ok_run(&["--url", &server.url("/generate_stream"), "--rate", "20", "--arrival", "constant", "-n", "5"]);
    let received = server.received();
    assert_eq!(received.len(), 5);
    assert!(received.iter().all(|(_, path, _)| path == "/generate_stream"));
    let span = received[4].0 - received[0].0;
    assert!(span >= Duration::from_millis(150), "5 requests at 20/s span 200 ms, got {span:?}");
}

#[test]
fn streamed_answers_count_the_tokens_the_server_reports() {
    // The server's eval_count / details.generated_tokens win over the number of streamed
    // chunks, with a warning that they differ.
    let server = NativeServer::start(NativeConfig { count_extra: 2, ..NativeConfig::default() });
    for (path, api) in [("/api/chat", "ollama-chat"), ("/api/generate", "ollama-generate"), ("/generate_stream", "tgi-generate-stream")] {
        let r = ok_run(&["--url", &server.url(path), "--stream", "-n", "3", "--max-tokens", "4"]);
        assert_eq!(r["target"]["api"], api);
        assert_eq!(r["throughput"]["total_output_tokens"], 18, "{api}: 4 streamed + 2 per answer");
        assert_eq!(r["latency_ms"]["itl"]["count"], 9, "{api}: 4 chunks per answer");
        let warnings = r["warnings"].to_string();
        assert!(warnings.contains("differs from the number of streamed chunks"), "{api}: {warnings}");
    }
    // Not streamed, the reported counts are all there is.
    let r = ok_run(&["--url", &server.url("/generate"), "-n", "2", "--max-tokens", "4"]);
    assert_eq!(r["throughput"]["total_output_tokens"], 12);
    assert_eq!(common::other_warnings(&r), Vec::<String>::new());
}
