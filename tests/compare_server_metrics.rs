//! `gpubench compare` with the engines' own metrics in the run reports (KV-cache and
//! queueing rows, their chart) and per-pod rows in the metric series (the pod table).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use gpubench::report::Comparison;
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/compare")
}

/// Server metrics of one replica whose KV use climbs to `peak` and whose queue reaches `waiting`.
fn server_metrics(peak: f64, waiting: f64) -> Value {
    let series: Vec<Value> = (0..10)
        .map(|i| {
            let f = i as f64 / 9.0;
            json!({"t_s": i as f64, "running": 4.0, "waiting": (waiting * f).round(), "kv_usage": peak * f})
        })
        .collect();
    json!({
        "interval_s": 1.0,
        "replicas": [{
            "url": "http://10.0.0.5:8000/v1/completions",
            "scrape_url": "http://10.0.0.5:8000/metrics",
            "engine": "vllm",
            "series": series,
            "summary": {"samples": 10, "scrape_errors": 0, "kv_usage_mean": peak / 2.0, "kv_usage_peak": peak, "waiting_peak": waiting}
        }]
    })
}

/// A copy of a fixture report with server metrics in every run.
fn with_server_metrics(dir: &Path, name: &str, peak: f64, waiting: f64) -> PathBuf {
    let mut v: Value = serde_json::from_slice(&std::fs::read(fixtures().join(name)).unwrap()).unwrap();
    match v.get_mut("runs").and_then(Value::as_array_mut) {
        Some(runs) => runs.iter_mut().for_each(|r| r["server_metrics"] = server_metrics(peak, waiting)),
        None => v["server_metrics"] = server_metrics(peak, waiting),
    }
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    path
}

/// The sharing fixture's metric series with per-pod rows for two pods on GPU 0.
fn with_pod_rows(dir: &Path) -> PathBuf {
    let mut csv = std::fs::read_to_string(fixtures().join("sharing-gpu.csv")).unwrap();
    for (t, a, b) in [(1767607200.0, 30.0, 20.0), (1767607201.0, 50.0, 40.0)] {
        csv.push_str(&format!("{t},nvml,0,NVIDIA H100 80GB HBM3,,,,,,,,,,,,,101,llm/pod-a,16000.0,{a}\n"));
        csv.push_str(&format!("{t},nvml,0,NVIDIA H100 80GB HBM3,,,,,,,,,,,,,202,llm/pod-b,12000.0,{b}\n"));
    }
    let path = dir.join("sharing-gpu.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

#[test]
fn server_metric_rows_chart_pods_and_environments() {
    let dir = tempfile::tempdir().unwrap();
    let bare = with_server_metrics(dir.path(), "bare-metal.json", 0.9, 12.0);
    let kube = with_server_metrics(dir.path(), "kubernetes.json", 0.4, 2.0);
    let csv = with_pod_rows(dir.path());
    let out = dir.path().join("out");
    Command::cargo_bin("gpubench")
        .unwrap()
        .current_dir(fixtures())
        .env("NO_COLOR", "1")
        .arg("compare")
        .args(["--phase", &format!("bare-metal={}", bare.display())])
        .args(["--phase", &format!("kubernetes={}", kube.display())])
        .args(["--phase", &format!("sharing=sharing.json,metrics={},pods-per-gpu=2", csv.display())])
        .args(["--slo", "e2e=2s", "--out-dir"])
        .arg(&out)
        .assert()
        .success();

    let c = Comparison::load(&out.join("comparison.json")).unwrap();
    let raw: Value = serde_json::from_slice(&std::fs::read(out.join("comparison.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&Comparison::json_schema()).unwrap();
    assert!(validator.is_valid(&raw), "comparison.json does not match its schema");
    let row = |metric: &str| c.rows.iter().find(|r| r.metric == metric).unwrap_or_else(|| panic!("no row {metric}: {:?}", c.rows));
    assert_eq!(row("kv_usage_mean_pct").values, vec![Some(45.0), Some(20.0), None]);
    assert_eq!(row("kv_usage_peak_pct").values, vec![Some(90.0), Some(40.0), None]);
    let waiting = row("waiting_peak");
    assert_eq!(waiting.values, vec![Some(12.0), Some(2.0), None]);
    assert_eq!(waiting.winners, vec!["kubernetes"]);
    let at = |m: &str| c.rows.iter().position(|r| r.metric == m).unwrap();
    assert!(at("waiting_peak") < at("cost_per_million_output_tokens"), "before the cost rows");

    assert_eq!(c.pods.len(), 2, "{:?}", c.pods);
    assert_eq!((c.pods[0].pod.as_str(), c.pods[0].sm_util_mean_pct, c.pods[0].mem_peak_mib), ("llm/pod-a", Some(40.0), Some(16000.0)));
    assert!(c.pods.iter().all(|p| p.phase == "sharing" && p.device_id == "0" && p.samples == 2));
    assert!(c.phases.iter().all(|p| p.environment.as_ref().is_some_and(|e| e.hostname == "fixture-host")));

    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert!(md.contains("| KV-cache use, mean | 45.0% | 20.0% | - | - |"), "{md}");
    assert!(md.contains("| Requests waiting, peak | 12 | **2** | - | kubernetes |"), "{md}");
    assert!(md.contains("## Server metrics"));
    assert!(md.contains("| sharing | llm/pod-a | 0 | 2 | 40.0% | 50.0% | 16000 MiB |"), "{md}");
    assert!(md.contains("## Environments") && md.contains("| bare-metal | 0.1.0 | fixture-host |"), "{md}");
    assert!(md.contains("](server-metrics.png)"), "chart not embedded");
    let path = out.join("server-metrics.png");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1000, 600));
    // Both phases' colours are drawn (blue and orange lines).
    let bpp = info.line_size / info.width as usize;
    let has = |rgb: [u8; 3]| buf.chunks(bpp).any(|px| px[..3] == rgb);
    assert!(has([31, 119, 180]) && has([255, 127, 14]), "both phases' lines are drawn");
}

#[test]
fn without_server_metrics_there_are_no_such_rows_nor_chart() {
    let out = tempfile::tempdir().unwrap();
    Command::cargo_bin("gpubench")
        .unwrap()
        .current_dir(fixtures())
        .args(["compare", "--phase", "bare-metal=bare-metal.json", "--phase", "kubernetes=kubernetes.json", "--out-dir"])
        .arg(out.path())
        .assert()
        .success();
    let c = Comparison::load(&out.path().join("comparison.json")).unwrap();
    assert!(!c.rows.iter().any(|r| r.metric.starts_with("kv_usage") || r.metric == "waiting_peak"));
    assert!(c.pods.is_empty());
    assert!(!out.path().join("server-metrics.png").exists());
}
