//! `gpubench load-test` end to end: the real binary against in-process fake servers.

mod common;

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use common::fake_llm::{Fault, FakeConfig, FakeServer};
use common::load_test;
use serde_json::Value;

fn ms(report: &Value, metric: &str, stat: &str) -> f64 {
    report["latency_ms"][metric][stat].as_f64().unwrap_or_else(|| panic!("no latency_ms.{metric}.{stat} in {report:#}"))
}

#[test]
fn closed_loop_against_the_generate_api() {
    let server = FakeServer::start(FakeConfig { tokens: 12, ..FakeConfig::default() });
    let run = load_test(&["--url", &server.url("/generate"), "--concurrency", "4", "--requests", "40", "--max-tokens", "10"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.report.unwrap();
    assert_eq!(r["schema_version"], 2);
    assert_eq!(r["label"], "c4");
    assert_eq!(r["target"]["api"], "generate");
    assert_eq!(r["workload"]["mode"], "closed");
    assert_eq!(r["counts"]["ok"], 40);
    assert_eq!(r["counts"]["sent"], 40);
    assert_eq!(r["throughput"]["total_output_tokens"], 400);
    assert_eq!(r["throughput"]["total_input_tokens"], 160);
    assert!(r["throughput"]["requests_per_s"].as_f64().unwrap() > 0.0);
    let rpm = r["throughput"]["requests_per_min"].as_f64().unwrap();
    assert!((rpm - 60.0 * r["throughput"]["requests_per_s"].as_f64().unwrap()).abs() < 0.1);
    assert!(ms(&r, "e2e", "p50") >= 5.0);
    assert!(r["latency_ms"]["ttft"].is_null(), "no TTFT without streaming");
    assert!(!r["histograms"]["e2e"].as_str().unwrap().is_empty());
    assert_eq!(server.hits(), 40);
    assert!(run.stdout.contains("c4 → http://127.0.0.1"), "{}", run.stdout);
    assert!(run.stdout.contains("40 ok · 0 failed"), "{}", run.stdout);
    // The histograms decode and hold every measured request.
    let h = gpubench::report::decode_histogram(r["histograms"]["e2e"].as_str().unwrap()).unwrap();
    assert_eq!(h.len(), 40);
}

#[test]
fn streamed_chat_measures_ttft_itl_and_tpot() {
    let server = FakeServer::start(FakeConfig {
        ttft: Duration::from_millis(60),
        token_gap: Duration::from_millis(15),
        tokens: 6,
        ..FakeConfig::default()
    });
    let run = load_test(&["--url", &server.url("/v1/chat/completions"), "--stream", "-c", "2", "-n", "6"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.report.unwrap();
    assert_eq!(r["target"]["model"], "fake-model", "model learnt from /v1/models");
    assert_eq!(r["environment"]["server"]["data"][0]["id"], "fake-model");
    assert_eq!(r["counts"]["ok"], 6);
    assert_eq!(r["throughput"]["total_output_tokens"], 36);
    let ttft = ms(&r, "ttft", "p50");
    assert!((55.0..200.0).contains(&ttft), "ttft {ttft}");
    let tpot = ms(&r, "tpot", "p50");
    assert!((12.0..60.0).contains(&tpot), "tpot {tpot}");
    assert_eq!(r["latency_ms"]["itl"]["count"], 30, "5 gaps per request");
    assert!(ms(&r, "e2e", "p50") >= ttft + 4.0 * 12.0);
    assert!(common::other_warnings(&r).is_empty(), "{:#}", r["warnings"]);
}

#[test]
fn open_loop_counts_a_server_pause_in_the_tail() {
    // 20 req/s for 3 s; the server stops answering for 2 s after 1 s. Measured from the
    // intended send time, the requests that should have gone out during the pause wait
    // for it, so p99 reaches 2 s.
    let cfg = FakeConfig {
        ttft: Duration::from_millis(5),
        pause: Some((Duration::from_millis(1000), Duration::from_millis(2000))),
        ..FakeConfig::default()
    };
    let server = FakeServer::start(cfg.clone());
    let run = load_test(&["--url", &server.url("/generate"), "--rate", "20", "--arrival", "constant", "-n", "60"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.report.unwrap();
    assert_eq!(r["workload"]["mode"], "open");
    assert_eq!(r["counts"]["ok"], 60);
    let p99 = ms(&r, "e2e", "p99");
    assert!(p99 >= 1950.0, "open-loop p99 {p99} must show the 2 s pause");
    assert!(ms(&r, "e2e", "p50") < 1000.0);
    // The client checks itself (whether it kept up depends on the machine's load, so only
    // the presence of the check is asserted here; scripts/bench-loadgen measures it).
    assert_eq!(r["client"]["target_rate"], 20.0);
    assert_eq!(r["client"]["schedule_lag_ms"]["count"], 60);

    // The same pause with one closed-loop worker: only one request sees it, the rest of the
    // pause is simply not measured. That is why open loop is the default for latency.
    let server = FakeServer::start(cfg);
    let run = load_test(&["--url", &server.url("/generate"), "-c", "1", "--duration", "3s"]);
    let closed = run.report.unwrap();
    assert!(ms(&closed, "e2e", "max") >= 1900.0);
    assert!(ms(&closed, "e2e", "p90") < 500.0);
}

#[test]
fn max_concurrency_waits_stay_in_the_latency() {
    let server = FakeServer::start(FakeConfig { ttft: Duration::from_millis(100), ..FakeConfig::default() });
    // 40 req/s with one request in flight at a time and 100 ms each: requests queue.
    let run = load_test(&[
        "--url", &server.url("/generate"), "--rate", "40", "--arrival", "constant", "--max-concurrency", "1", "-n", "10",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.report.unwrap();
    assert!(ms(&r, "queue", "max") > 500.0, "queued time is measured");
    assert!(ms(&r, "e2e", "max") > ms(&r, "service", "max") + 400.0);
}

#[test]
fn closed_loop_does_not_lose_requests_in_flight_at_the_deadline() {
    let server = FakeServer::start(FakeConfig {
        pause: Some((Duration::from_millis(300), Duration::from_secs(30))),
        ..FakeConfig::default()
    });
    let run = load_test(&["--url", &server.url("/generate"), "-c", "2", "--duration", "1s", "--timeout", "1s"]);
    let r = run.report.unwrap();
    let c = &r["counts"];
    let errors = c["errors"]["timeout"].as_u64().unwrap() + c["errors"]["connect"].as_u64().unwrap();
    let stuck = errors + c["unfinished"].as_u64().unwrap();
    assert!(stuck >= 2, "both stalled workers' requests are counted: {c:#}");
    assert_eq!(
        c["sent"].as_u64().unwrap(),
        c["ok"].as_u64().unwrap() + c["errors"]["timeout"].as_u64().unwrap() + c["errors"]["connect"].as_u64().unwrap()
            + c["errors"]["http_status"].as_u64().unwrap() + c["errors"]["protocol"].as_u64().unwrap()
            + c["unfinished"].as_u64().unwrap()
    );
}

#[test]
fn error_kinds_are_counted_apart() {
    let server = FakeServer::start(FakeConfig { fault: Fault::Status500Every(3), ..FakeConfig::default() });
    let run = load_test(&["--url", &server.url("/generate"), "-c", "1", "-n", "9"]);
    assert_eq!(run.code, 0, "partial failure is still a run");
    let r = run.report.unwrap();
    assert_eq!(r["counts"]["ok"], 6);
    assert_eq!(r["counts"]["errors"]["http_status"], 3);
    assert_eq!(r["counts"]["http_status"]["500"], 3);
    assert!(r["counts"]["error_samples"][0].as_str().unwrap().contains("HTTP 500"));
    assert!(run.stdout.contains("http_status 3"), "{}", run.stdout);

    let server = FakeServer::start(FakeConfig { fault: Fault::Stall, ..FakeConfig::default() });
    let run = load_test(&["--url", &server.url("/generate"), "-c", "2", "-n", "2", "--timeout", "300ms"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.report.unwrap()["counts"]["errors"]["timeout"], 2);

    let server = FakeServer::start(FakeConfig { fault: Fault::ResetMidBody, ..FakeConfig::default() });
    let run = load_test(&["--url", &server.url("/generate"), "-n", "2"]);
    assert_eq!(run.report.unwrap()["counts"]["errors"]["connect"], 2);

    let server = FakeServer::start(FakeConfig { fault: Fault::TruncatedSse, ..FakeConfig::default() });
    let run = load_test(&["--url", &server.url("/v1/completions"), "--stream", "-n", "2"]);
    let r = run.report.unwrap();
    assert_eq!(r["counts"]["errors"]["protocol"], 2);
    assert!(r["counts"]["error_samples"][0].as_str().unwrap().contains("ended before"));
}

#[test]
fn a_server_answering_html_is_a_clear_failure() {
    let server = FakeServer::start(FakeConfig { fault: Fault::Html, ..FakeConfig::default() });
    let run = load_test(&["--url", &server.url("/generate"), "-n", "3"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("every request failed"), "{}", run.stderr);
    assert!(run.stderr.contains("expected a JSON answer, got text/html"), "{}", run.stderr);
    assert_eq!(run.report.expect("the report is still written")["counts"]["errors"]["protocol"], 3);
}

#[test]
fn warmup_is_excluded_and_sweeps_give_one_report_per_point() {
    let server = FakeServer::start(FakeConfig::default());
    let run = load_test(&[
        "--url", &server.url("/generate"), "--concurrency", "1,3", "-n", "6", "--warmup", "2", "--label", "p1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.report.unwrap();
    let runs = r["runs"].as_array().expect("a sweep writes {runs: [...]}");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["label"], "p1-c1");
    assert_eq!(runs[1]["label"], "p1-c3");
    for run in runs {
        assert_eq!(run["counts"]["ok"], 6);
        assert_eq!(run["counts"]["warmup"], 2);
        assert_eq!(gpubench::report::decode_histogram(run["histograms"]["e2e"].as_str().unwrap()).unwrap().len(), 6);
    }
    assert_eq!(server.hits(), 16);
    assert!(run.stdout.contains("p1-c3"));
}

#[test]
fn requests_spread_round_robin_over_urls() {
    let a = FakeServer::start(FakeConfig::default());
    let b = FakeServer::start(FakeConfig::default());
    let run = load_test(&["--url", &a.url("/generate"), "--url", &b.url("/generate"), "-c", "2", "-n", "10"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[test]
fn goodput_json_output_and_request_csv() {
    let server = FakeServer::start(FakeConfig {
        ttft: Duration::from_millis(20),
        token_gap: Duration::from_millis(40),
        tokens: 4,
        ..FakeConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("requests.csv");
    let output = Command::cargo_bin("gpubench")
        .unwrap()
        .args(["load-test", "--url", &server.url("/v1/completions"), "--stream", "-n", "5", "--warmup", "1", "--json"])
        .args(["--slo", "ttft=1s,tpot=10ms", "--csv"])
        .arg(&csv)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let r: Value = serde_json::from_slice(&output.stdout).expect("--json prints the report");
    common::assert_valid_report(&r);
    // TPOT is about 40 ms, over the 10 ms SLO: no request meets it.
    assert_eq!(r["goodput"]["requests"], 0);
    assert_eq!(r["goodput"]["slo_ms"]["ttft"], 1000.0);
    let rows = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines.len(), 1 + 6, "header + warm-up + measured:\n{rows}");
    assert!(lines[0].starts_with("index,warmup,intended_s"));
    assert_eq!(lines.iter().filter(|l| l.contains(",true,")).count(), 1);
}

fn usage_error(args: &[&str], expect: &str) {
    let output = Command::cargo_bin("gpubench").unwrap().arg("load-test").args(args).timeout(Duration::from_secs(30)).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(expect), "expected '{expect}' in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let server = FakeServer::start(FakeConfig::default());
    let url = server.url("/generate");
    usage_error(&["--url", &url, "--slo", "latency=5s"], "unknown SLO metric 'latency'");
    usage_error(&["--url", &url, "--slo", "ttft"], "not KEY=DURATION");
    usage_error(&["--url", "not a url"], "is not a URL");
    usage_error(&["--url", &server.url("/")], "cannot tell the API");
    usage_error(&["--url", &url, "--stream"], "--stream needs an OpenAI API");
    usage_error(&["--url", &url, "--concurrency", "0"], "at least 1");
    usage_error(&["--url", &url, "--rate", "-3"], "");
    usage_error(&["--url", &url, "--header", "nocolon"], "not 'Name: value'");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prompts.jsonl");
    std::fs::write(&data, b"{\"prompt\": \"fine\"}\n{\"prompt\": \"caf\xe9\"}\n").unwrap();
    usage_error(&["--url", &url, "--dataset", data.to_str().unwrap()], "line 2 is not valid UTF-8");
    assert_eq!(server.hits(), 0, "nothing is sent on bad input");
}

#[test]
fn an_unreachable_server_is_named() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = Command::cargo_bin("gpubench")
        .unwrap()
        .args(["load-test", "--url", &format!("http://127.0.0.1:{port}/generate")])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("Is the server running"), "{stderr}");
}

#[test]
fn ctrl_c_writes_a_partial_report() {
    let server = FakeServer::start(FakeConfig { ttft: Duration::from_millis(20), ..FakeConfig::default() });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("partial.json");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("gpubench"))
        .args(["load-test", "--url", &server.url("/generate"), "-c", "2", "--duration", "30s", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("load-test did not stop after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("partial report written")).unwrap();
    common::assert_valid_report(&report);
    assert_eq!(report["interrupted"], true);
    assert!(report["counts"]["ok"].as_u64().unwrap() > 5);
}

#[test]
fn the_report_loads_back_through_the_contract() {
    let server = FakeServer::start(FakeConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    Command::cargo_bin("gpubench")
        .unwrap()
        .args(["load-test", "--url", &server.url("/generate"), "-n", "3", "--out"])
        .arg(&out)
        .assert()
        .success();
    let file = gpubench::report::RunReportFile::load(Path::new(&out)).unwrap();
    assert_eq!(file.runs().len(), 1);
    assert_eq!(file.runs()[0].counts.ok, 3);
}

#[test]
fn duration_counts_from_the_end_of_a_counted_warmup() {
    // Each request takes about 300 ms; 3 warm-up requests take about 0.9 s, then 1.2 s are measured.
    let server = FakeServer::start(FakeConfig { ttft: Duration::from_millis(300), tokens: 1, ..FakeConfig::default() });
    let run = load_test(&["--url", &server.url("/generate"), "-c", "1", "--warmup", "3", "--duration", "1200ms"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.report.unwrap();
    assert_eq!(r["counts"]["warmup"], 3);
    let ok = r["counts"]["ok"].as_u64().unwrap();
    assert!(ok >= 3, "the measurement gets its full duration after the warm-up: {ok} ok");
}
