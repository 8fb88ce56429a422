use std::time::Duration;

use super::*;
use crate::device::exposition::parse;

fn fixture(name: &str) -> Exposition {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/exposition").join(name);
    parse(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[test]
fn each_engine_is_recognised_and_mapped() {
    let cases = [
        ("vllm.prom", Engine::Vllm, Some(24.0), Some(7.0), Some(0.8125)),
        ("vllm-v0.prom", Engine::Vllm, Some(8.0), Some(2.0), Some(0.375)),
        ("tgi.prom", Engine::Tgi, Some(12.0), Some(5.0), None),
        ("sglang.prom", Engine::Sglang, Some(32.0), Some(9.0), Some(0.56)),
        ("llamacpp.prom", Engine::LlamaCpp, Some(4.0), Some(1.0), Some(0.3125)),
        ("gpubench.prom", Engine::Gpubench, Some(4.0), Some(3.0), Some(0.25)),
    ];
    for (file, engine, running, waiting, kv) in cases {
        let e = fixture(file);
        assert_eq!(Engine::detect(&e), engine, "{file}");
        let r = Reading::of(&e);
        assert_eq!((r.running, r.waiting, r.kv_usage), (running, waiting, kv), "{file}");
    }
    let v = Reading::of(&fixture("vllm.prom"));
    assert_eq!((v.preemptions_total, v.prefix_hits_total, v.prefix_queries_total), (Some(3.0), Some(12000.0), Some(48000.0)));
    let old = Reading::of(&fixture("vllm-v0.prom"));
    assert_eq!((old.prefix_hits_total, old.prefix_queries_total, old.prefix_hit_rate), (Some(1000.0), Some(4000.0), Some(0.25)));
    let l = Reading::of(&fixture("llamacpp.prom"));
    assert_eq!((l.prefix_hits_total, l.prefix_queries_total), (Some(1024.0), Some(4096.0)));
    assert_eq!(Reading::of(&fixture("sglang.prom")).prefix_hit_rate, Some(0.42));
    assert_eq!(Engine::detect(&parse("up 1\n")), Engine::Unknown);
}

#[test]
fn raw_keeps_unmapped_small_families_only() {
    let r = Reading::of(&fixture("vllm.prom"));
    assert_eq!(r.raw.get("process_resident_memory_bytes"), Some(&Some(3_512_553_472.0)));
    assert_eq!(r.raw.get("vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"Qwen/Qwen2.5-7B-Instruct\"}"), Some(&Some(180.0)));
    assert!(!r.raw.keys().any(|k| k.starts_with("vllm:num_requests_running")), "mapped names are not raw");
    assert!(!r.raw.keys().any(|k| k.contains("time_to_first_token")), "histograms are not raw");
    assert!(!r.raw.keys().any(|k| k.contains("_created")));
    let many: String = (0..10).map(|i| format!("wide{{i=\"{i}\"}} 1\n")).chain((0..100).map(|i| format!("g{i} {i}\n"))).collect();
    let r = Reading::of(&parse(&many));
    assert!(!r.raw.keys().any(|k| k.starts_with("wide")));
    assert_eq!(r.raw.len(), MAX_RAW_SERIES);
}

#[test]
fn nan_and_infinity_become_absent() {
    let e = parse("vllm:num_requests_running NaN\nvllm:num_requests_waiting +Inf\nvllm:kv_cache_usage_perc -Inf\nodd NaN\n");
    let r = Reading::of(&e);
    assert_eq!((r.running, r.waiting, r.kv_usage), (None, None, None));
    assert_eq!(r.raw.get("odd"), Some(&None));
    let json = serde_json::to_string(&summarize(collected(vec![r]), None)).unwrap();
    assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
}

fn collected(readings: Vec<Reading>) -> Collected {
    let t0 = Instant::now();
    Collected {
        url: "u".into(),
        scrape_url: "s".into(),
        engine: "vllm".into(),
        readings: readings.into_iter().enumerate().map(|(i, r)| (t0 + Duration::from_millis(100 * i as u64), r)).collect(),
        errors: 1,
    }
}

#[test]
fn counters_that_reset_still_add_up() {
    let reading = |p: f64, hits: f64, q: f64, kv: f64, waiting: f64| Reading {
        preemptions_total: Some(p),
        prefix_hits_total: Some(hits),
        prefix_queries_total: Some(q),
        kv_usage: Some(kv),
        waiting: Some(waiting),
        ..Reading::default()
    };
    let c = collected(vec![
        reading(5.0, 100.0, 200.0, 0.1, 0.0),
        reading(8.0, 150.0, 300.0, 0.5, 4.0),
        reading(2.0, 10.0, 20.0, 0.9, 2.0),
        reading(4.0, 30.0, 60.0, 0.3, 0.0),
    ]);
    let start = c.readings[0].0;
    let m = summarize(c, Some(start));
    let pre: Vec<Option<f64>> = m.series.iter().map(|p| p.preemptions).collect();
    assert_eq!(pre, vec![Some(0.0), Some(3.0), Some(5.0), Some(7.0)]);
    let s = &m.summary;
    assert_eq!(s.preemptions, Some(7.0));
    // hits 50 + 10 + 20 = 80 of queries 100 + 20 + 40 = 160
    assert_eq!(s.prefix_cache_hit_rate, Some(0.5));
    assert_eq!((s.kv_usage_mean, s.kv_usage_peak), (Some(0.45), Some(0.9)));
    assert_eq!((s.waiting_mean, s.waiting_peak), (Some(1.5), Some(4.0)));
    assert_eq!((s.samples, s.scrape_errors), (4, 1));
}

#[test]
fn the_window_starts_at_the_last_scrape_before_it() {
    let c = collected((0..5).map(|i| Reading { waiting: Some(i as f64 * 10.0), ..Reading::default() }).collect());
    let start = c.readings[2].0 + Duration::from_millis(50);
    let m = summarize(c, Some(start));
    let t: Vec<f64> = m.series.iter().map(|p| p.t_s).collect();
    assert_eq!(t, vec![-0.05, 0.05, 0.15]);
    assert_eq!(m.summary.waiting_mean, Some(35.0), "the anchor scrape is not averaged");
    assert_eq!(m.summary.samples, 5);
}
