//! Unit tests of `loadtest/summary.rs`.

use super::*;
use crate::loadtest::api::Usage;
use crate::loadtest::client::{Answer, ErrorKind, Exchange, RequestError};
use crate::loadtest::schedule::{Gaps, Shape};
use crate::loadtest::recorder::{Measured, Recorder};
use std::time::Instant;

/// A run with fixed timings: 20 streamed answers and two failures, on a schedule.
fn fixed_report(open: bool) -> RunReport {
    let t0 = Instant::now();
    let mut rec = Recorder::new(t0);
    let slo = Slo { ttft_ms: Some(150.0), e2e_ms: Some(900.0), ..Slo::default() };
    for i in 0..20u64 {
        let intended = t0 + Duration::from_millis(100 * i);
        let sent = intended + Duration::from_micros(if open { 200 + 50 * i } else { 0 });
        let ttft = Duration::from_millis(80 + 5 * i);
        let tokens = 16;
        let ex = Exchange {
            sent,
            done: sent + ttft + Duration::from_millis(20) * (tokens as u32 - 1),
            result: Ok(Answer {
                usage: Usage { prompt_tokens: Some(32), completion_tokens: Some(tokens), cached_tokens: None },
                streamed_events: Some(tokens),
                first_token: Some(sent + ttft),
                token_gaps: vec![Duration::from_millis(20); tokens as usize - 1],
                text: None,
            }),
        };
        if open {
            rec.record_lag(intended, sent, false);
        }
        rec.record(Measured { exchange: &ex, intended, warmup: false, turn: None }, Some(&slo));
    }
    for (i, kind) in [ErrorKind::HttpStatus(503), ErrorKind::Timeout].into_iter().enumerate() {
        let sent = t0 + Duration::from_millis(50 + 100 * i as u64);
        let ex = Exchange { sent, done: sent, result: Err(RequestError { kind, message: "injected".into() }) };
        rec.record(Measured { exchange: &ex, intended: sent, warmup: false, turn: None }, Some(&slo));
    }
    let point = if open {
        Point::Open { shape: Shape::Rate(10.0), gaps: Gaps::Constant, max_concurrency: None }
    } else {
        Point::Closed { concurrency: 4 }
    };
    let ctx = RunContext {
        label: if open { "r10".into() } else { "c4".into() },
        target: Target { urls: vec!["http://127.0.0.1:8000/v1/completions".into()], api: "openai-completions".into(), model: Some("m".into()) },
        workload: Workload {
            mode: if open { "open".into() } else { "closed".into() },
            concurrency: (!open).then_some(4),
            rate: open.then_some(10.0),
            arrival: open.then(|| "constant".into()),
            max_concurrency: None,
            requests: Some(22),
            duration_s: None,
            warmup_requests: None,
            warmup_s: None,
            max_tokens: 16,
            stream: true,
            prompt_source: "prompt".into(),
            distinct_prompts: 1,
            seed: 0,
            timeout_s: 60.0,
            slo_ms: slo.as_map(),
            ..Workload::default()
        },
        environment: EnvironmentStamp::default(),
        slo: Some(slo),
        point,
        interrupted: false,
        cap_reached: false,
        sessions: false,
        shard: None,
    };
    let epoch = std::time::SystemTime::UNIX_EPOCH;
    build_report(ctx, &Outcome { recorder: rec, t0, wall_t0: epoch, started_at: epoch })
}

#[test]
fn summary_table_snapshot() {
    insta::assert_snapshot!("closed_loop_summary", render(&fixed_report(false)));
    insta::assert_snapshot!("open_loop_summary", render(&fixed_report(true)));
    insta::assert_snapshot!("sweep_summary", render_sweep(&[fixed_report(false), fixed_report(true)]));
}

#[test]
fn report_numbers_follow_the_definitions() {
    let r = fixed_report(true);
    assert_eq!(r.counts.ok, 20);
    assert_eq!(r.counts.errors.total(), 2);
    assert_eq!(r.counts.sent, 22);
    // Window: first intended send (t0) to the last completion.
    let last_done = 1.9 + 0.0002 + 0.05 * 19.0 * 0.001 + 0.080 + 0.095 + 0.3;
    assert!((r.window_s - last_done).abs() < 0.01, "{}", r.window_s);
    assert_eq!(r.throughput.total_output_tokens, 320);
    let ttft = r.latency_ms.ttft.as_ref().unwrap();
    assert!(ttft.min >= 80.0 && ttft.max <= 177.0, "{ttft:?}");
    let tpot = r.latency_ms.tpot.as_ref().unwrap();
    assert!((tpot.p50 - 20.0).abs() < 0.2, "{tpot:?}");
    // Goodput: ttft (from the intended time, lag included) <= 150 ms holds for i <= 13;
    // e2e <= 900 ms holds for all.
    let g = r.goodput.as_ref().unwrap();
    assert_eq!(g.requests, 14);
    assert!((g.fraction - 14.0 / 22.0).abs() < 1e-3);
    assert!(r.client.kept_up);
    assert_eq!(r.series.iter().map(|p| p.ok).sum::<u64>(), 20);
}

#[test]
fn server_metrics_line_snapshot() {
    use crate::report::{ReplicaMetrics, ServerMetrics, ServerMetricsSummary};
    let mut r = fixed_report(false);
    let summary = ServerMetricsSummary {
        samples: 12,
        scrape_errors: 1,
        kv_usage_mean: Some(0.4512),
        kv_usage_peak: Some(0.8125),
        waiting_mean: Some(2.5),
        waiting_peak: Some(7.0),
        running_mean: Some(20.0),
        running_peak: Some(24.0),
        preemptions: Some(3.0),
        prefix_cache_hit_rate: Some(0.25),
    };
    let replica = ReplicaMetrics {
        url: "http://127.0.0.1:8000/v1/completions".into(),
        scrape_url: "http://127.0.0.1:8000/metrics".into(),
        engine: "vllm".into(),
        series: Vec::new(),
        summary,
    };
    r.server_metrics = Some(ServerMetrics { interval_s: 1.0, replicas: vec![replica] });
    insta::assert_snapshot!("server_metrics_summary", render(&r));
}

#[test]
fn numbers_read_well() {
    assert_eq!(thousands(1234567.0), "1,234,567");
    assert_eq!(thousands(999.0), "999");
    assert_eq!(rate(12.345), "12.35");
    assert_eq!(rate(48123.4), "48,123");
}
