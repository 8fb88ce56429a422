//! Unit tests of `merge/combine.rs`.

use super::*;
use crate::report::{EnvironmentStamp, ShardInfo, Target, Workload};

/// A report of the requests `e2e_us` (latencies in µs) as shard `index` of `count`.
pub fn shard_report(e2e_us: &[u64], index: u32, count: u32) -> RunReport {
    let mut h = Histogram::<u64>::new(3).unwrap();
    h.auto(true);
    for &v in e2e_us {
        h.record(v).unwrap();
    }
    let start = 1_000_000.0 + f64::from(index);
    RunReport {
        schema_version: RUN_SCHEMA_VERSION,
        label: "r8".into(),
        started_at: format!("2026-12-02T10:00:0{index}Z"),
        target: Target { urls: vec!["http://127.0.0.1:9/v1/completions".into()], api: "openai-completions".into(), model: Some("m".into()) },
        workload: Workload { mode: "open".into(), rate: Some(8.0), max_tokens: 16, ..Workload::default() },
        environment: EnvironmentStamp { hostname: format!("pod-{index}"), ..EnvironmentStamp::default() },
        definitions: BTreeMap::new(),
        counts: Counts { sent: e2e_us.len() as u64, ok: e2e_us.len() as u64, ..Counts::default() },
        window_s: 10.0,
        throughput: Throughput { total_output_tokens: 16 * e2e_us.len() as u64, output_tokens_per_s: Some(1.0), ..Throughput::default() },
        latency_ms: Latencies { e2e: LatencySummary::from_micros(&h), ..Latencies::default() },
        goodput: None,
        client: ClientCheck { target_rate: Some(8.0 / f64::from(count)), achieved_send_rate: 8.0 / f64::from(count), kept_up: true, ..ClientCheck::default() },
        histograms: Histograms { unit: "microseconds".into(), e2e: encode_histogram(&h), ..Histograms::default() },
        series: (0..10).map(|t| SeriesPoint { t_s: t, sent: 1, ok: 1, e2e_mean_ms: Some(2.0), e2e_max_ms: Some(3.0), ..SeriesPoint::default() }).collect(),
        warnings: vec![],
        sessions: None,
        prefix_cache: None,
        interrupted: false,
        server_metrics: None,
        shard: Some(ShardInfo {
            index,
            count,
            workers: None,
            start_at: None,
            clock_offset_ms: Some(0.5),
            clock_offset_error_ms: Some(1.0),
            window_start_unix_ms: Some(start),
            series_start_unix_ms: Some(start - 500.0),
        }),
        merged_from: None,
    }
}

#[test]
fn merging_shards_of_a_sample_gives_the_histogram_of_the_whole_sample() {
    // A skewed sample: shard 1 holds the slow tail.
    let all: Vec<u64> = (1..=3000u64).map(|i| i * i % 97_001 + 500).collect();
    let parts: Vec<Vec<u64>> = (0..3).map(|k| all.iter().copied().skip(k).step_by(3).collect()).collect();
    let inputs: Vec<(PathBuf, RunReport)> =
        parts.iter().enumerate().map(|(i, p)| (PathBuf::from(format!("s{i}.json")), shard_report(p, i as u32, 3))).rev().collect();
    let merged = combine(&inputs);
    let whole = shard_report(&all, 0, 1);
    assert_eq!(merged.latency_ms.e2e, whole.latency_ms.e2e, "percentiles of the merge = percentiles of the whole");
    let recorded = |text: &str| {
        let h = decode_histogram(text).unwrap();
        h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect::<Vec<_>>()
    };
    assert_eq!(recorded(&merged.histograms.e2e), recorded(&whole.histograms.e2e), "the same histogram, bucket by bucket");
    // Not the average of the shards' percentiles.
    let mean_p99: f64 = inputs.iter().map(|(_, r)| r.latency_ms.e2e.as_ref().unwrap().p99).sum::<f64>() / 3.0;
    assert_ne!(merged.latency_ms.e2e.as_ref().unwrap().p99, mean_p99);
    assert_eq!(merged.counts.sent, 3000);
    assert_eq!(merged.counts.ok, 3000);
    assert_eq!(merged.throughput.total_output_tokens, 16 * 3000);
    // Windows 1.000, 1.001, 1.002 ks + 10 s: 10.002 s in all.
    assert!((merged.window_s - 10.002).abs() < 1e-9, "{}", merged.window_s);
    assert_eq!(merged.client.target_rate, Some(8.0));
    assert!(merged.client.kept_up);
    // Series origins within the same second: summed second by second.
    assert_eq!(merged.series.len(), 10);
    assert!(merged.series.iter().all(|p| p.sent == 3 && p.e2e_mean_ms == Some(2.0)));
    let from = merged.merged_from.as_ref().unwrap();
    assert_eq!(from.iter().map(|m| m.shard.as_ref().unwrap().index).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(from[2].environment.hostname, "pod-2");
    assert!(merged.shard.is_none());
    assert_eq!(merged.started_at, "2026-12-02T10:00:00Z");
}

#[test]
fn one_shard_that_fell_behind_makes_the_run_fall_behind_and_series_align_by_wall_clock() {
    let mut a = shard_report(&[1000, 2000], 0, 2);
    let mut b = shard_report(&[3000], 1, 2);
    b.client.kept_up = false;
    b.client.notes = vec!["the client fell behind its schedule".into()];
    // b began two seconds after a.
    if let (Some(sa), Some(sb)) = (a.shard.as_mut(), b.shard.as_mut()) {
        sb.series_start_unix_ms = sa.series_start_unix_ms.map(|t| t + 2000.0);
        sb.clock_offset_ms = Some(400.0);
    }
    a.warnings = vec!["w".into()];
    let merged = combine(&[("a.json".into(), a), ("b.json".into(), b)]);
    assert!(!merged.client.kept_up);
    assert!(merged.client.notes.iter().any(|n| n.contains("shard 1/2 did not keep up")));
    assert_eq!(merged.series.len(), 12);
    assert_eq!(merged.series[0].sent, 1);
    assert_eq!(merged.series[2].sent, 2);
    assert_eq!(merged.series[11].sent, 1);
    assert!(merged.warnings.iter().any(|w| w == "shard 0/2: w"));
    assert!(merged.warnings.iter().any(|w| w.contains("clocks differ by about 400 ms")));
}
