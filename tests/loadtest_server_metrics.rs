//! `load-test --server-metrics`: the engine's own `/metrics`, scraped while the point runs,
//! against fakes that serve the committed exposition samples of each engine.

mod common;

use std::time::Duration;

use common::fake_metrics::{FakeEngine, MetricsPage};
use common::load_test;
use serde_json::Value;

fn run(engine: &FakeEngine, extra: &[&str]) -> common::LoadTestRun {
    let url = engine.url("/v1/completions");
    let mut args = vec!["--url", url.as_str(), "--max-tokens", "4", "--server-metrics-interval", "40ms"];
    args.extend_from_slice(extra);
    let run = load_test(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run
}

fn server_warnings(r: &Value) -> Vec<String> {
    r["warnings"].as_array().unwrap().iter().filter_map(|w| w.as_str()).filter(|w| w.contains("server metrics")).map(String::from).collect()
}

#[test]
fn each_engine_is_recognised_with_its_peaks() {
    let cases = [
        ("vllm.prom", "vllm", Some(0.8125), Some(7.0), Some(24.0)),
        ("vllm-v0.prom", "vllm", Some(0.375), Some(2.0), Some(8.0)),
        ("tgi.prom", "tgi", None, Some(5.0), Some(12.0)),
        ("sglang.prom", "sglang", Some(0.56), Some(9.0), Some(32.0)),
        ("llamacpp.prom", "llama.cpp", Some(0.3125), Some(1.0), Some(4.0)),
        ("gpubench.prom", "gpubench", Some(0.25), Some(3.0), Some(4.0)),
    ];
    for (file, name, kv, waiting, running) in cases {
        let engine = FakeEngine::start(MetricsPage::Texts(vec![FakeEngine::fixture(file)]), Duration::from_millis(25));
        let run = run(&engine, &["-c", "2", "-n", "16"]);
        let r = run.r();
        assert!(server_warnings(r).is_empty(), "{file}: {:?}", r["warnings"]);
        let m = &r["server_metrics"];
        assert_eq!(m["interval_s"], 0.04, "{file}");
        let replica = &m["replicas"][0];
        assert_eq!(replica["engine"], name, "{file}");
        assert_eq!(replica["url"], engine.url("/v1/completions"), "{file}");
        assert_eq!(replica["scrape_url"], engine.url("/metrics"), "{file}");
        let s = &replica["summary"];
        assert_eq!(s["kv_usage_peak"].as_f64(), kv, "{file}");
        assert_eq!(s["waiting_peak"].as_f64(), waiting, "{file}");
        assert_eq!(s["running_peak"].as_f64(), running, "{file}");
        assert_eq!(s["scrape_errors"], 0, "{file}");
        let series = replica["series"].as_array().unwrap();
        assert!(series.len() >= 2, "{file}: a scrape at the start and one at the end: {series:?}");
        assert_eq!(s["samples"].as_u64().unwrap(), series.len() as u64, "{file}: no warm-up, so every scrape is in the series");
        assert!(engine.scrapes() as usize > series.len(), "{file}: the probe, then the scrapes");
        assert!(run.stdout.contains(&format!("server     ┆ {name}")), "{file}: {}", run.stdout);
    }
}

#[test]
fn a_target_without_metrics_gets_one_note_and_one_request() {
    for page in [MetricsPage::NotFound, MetricsPage::Html] {
        let engine = FakeEngine::start(page.clone(), Duration::from_millis(10));
        let run = run(&engine, &["-c", "1,2", "-n", "8"]);
        let reports = run.r()["runs"].as_array().unwrap();
        assert_eq!(reports.len(), 2);
        for r in reports {
            let notes = server_warnings(r);
            assert_eq!(notes.len(), 1, "{page:?}: {:?}", r["warnings"]);
            let expect = if matches!(page, MetricsPage::NotFound) { "HTTP 404" } else { "not Prometheus exposition text" };
            assert!(notes[0].contains(&engine.url("/metrics")) && notes[0].contains(expect), "{}", notes[0]);
            assert!(r.get("server_metrics").is_none(), "{r:#}");
        }
        assert_eq!(engine.scrapes(), 1, "{page:?}: tried once, never again");
    }
}

#[test]
fn off_never_asks() {
    let engine = FakeEngine::start(MetricsPage::Texts(vec![FakeEngine::fixture("vllm.prom")]), Duration::from_millis(5));
    let run = run(&engine, &["-c", "2", "-n", "8", "--server-metrics", "off"]);
    assert!(run.r().get("server_metrics").is_none());
    assert_eq!(engine.scrapes(), 0);
}

#[test]
fn a_given_url_is_scraped_instead() {
    let metrics = FakeEngine::start(MetricsPage::Texts(vec![FakeEngine::fixture("sglang.prom")]), Duration::ZERO);
    let engine = FakeEngine::start(MetricsPage::NotFound, Duration::from_millis(10));
    let given = metrics.url("/metrics");
    let run = run(&engine, &["-c", "2", "-n", "8", "--server-metrics", &given]);
    let r = run.r();
    assert!(server_warnings(r).is_empty(), "{:?}", r["warnings"]);
    assert_eq!(r["server_metrics"]["replicas"][0]["engine"], "sglang");
    assert_eq!(r["server_metrics"]["replicas"][0]["scrape_url"], given);
    assert_eq!(engine.scrapes(), 0, "the target's own /metrics is not asked");
}

/// A vLLM page with these values; `kv` and `waiting` as the exposition writes them.
fn vllm_page(preemptions: u32, kv: &str, waiting: &str) -> String {
    format!(
        "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{model_name=\"m\"}} 2.0\n\
         # TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name=\"m\"}} {waiting}\n\
         # TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{model_name=\"m\"}} {kv}\n\
         # TYPE vllm:num_preemptions_total counter\nvllm:num_preemptions_total{{model_name=\"m\"}} {preemptions}.0\n"
    )
}

#[test]
fn counter_resets_nan_and_infinity() {
    // The probe reads the first page; the scrapes of the run start at the second.
    let pages = vec![
        vllm_page(5, "0.1", "0"),
        vllm_page(8, "0.2", "0"),
        vllm_page(2, "NaN", "+Inf"),
        vllm_page(4, "0.7", "3"),
    ];
    let engine = FakeEngine::start(MetricsPage::Texts(pages), Duration::from_millis(40));
    let run = run(&engine, &["-c", "2", "-n", "20"]);
    let replica = &run.r()["server_metrics"]["replicas"][0];
    let s = &replica["summary"];
    // 8 -> 2 is a restart: 2 + (4 - 2) = 4 preemptions.
    assert_eq!(s["preemptions"], 4.0, "{replica:#}");
    assert_eq!(s["kv_usage_peak"], 0.7);
    assert_eq!(s["waiting_peak"], 3.0);
    let series = replica["series"].as_array().unwrap();
    let nan = &series[1];
    assert!(nan.get("kv_usage").is_none() && nan.get("waiting").is_none(), "NaN and +Inf are absent: {nan}");
    assert_eq!(nan["preemptions"], 2.0);
    assert_eq!(nan["running"], 2.0);
}

#[test]
fn gpubench_serve_reports_its_batch_and_kv_cache() {
    let srv = common::serve::Server::start(&[], &["--max-batch-size", "4"]);
    let url = srv.url("/v1/completions");
    let run = load_test(&["--url", &url, "-c", "4", "-n", "12", "--max-tokens", "24", "--ignore-eos", "--server-metrics-interval", "100ms"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.r();
    assert!(server_warnings(r).is_empty(), "{:?}", r["warnings"]);
    let replica = &r["server_metrics"]["replicas"][0];
    assert_eq!(replica["engine"], "gpubench", "{replica:#}");
    let s = &replica["summary"];
    assert!(s["running_peak"].as_f64().is_some_and(|p| (1.0..=4.0).contains(&p)), "a scrape saw the batch: {s}");
    assert!(s["kv_usage_peak"].as_f64().is_some_and(|k| k > 0.0 && k <= 1.0), "{s}");
    assert!(s["waiting_peak"].as_f64().is_some(), "{s}");
}
