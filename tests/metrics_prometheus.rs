//! `gpubench metrics --source prometheus` against a real Prometheus (the Debian package),
//! started here on a free loopback port with a temporary config. It scrapes a small
//! in-process exporter serving recorded dcgm-exporter and Run:AI text:
//! - node 1's exporter is scraped the way Kubernetes service discovery does it, with the
//!   exporter's own `pod`/`namespace` as target labels, so Prometheus stores the GPU
//!   user's labels as `exported_pod`/`exported_namespace`;
//! - node 2's exporter is scraped with `honor_labels`, so `pod`/`namespace` stay;
//! - Run:AI's per-pod series come through the first spelling.
//!
//! Skipped (with a message) where the `prometheus` binary is missing; CI installs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use axum::routing::get;
use gpubench::report::MetricSample;
use gpubench::support::process::{free_port, stop_child};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/metrics").join(name)
}

fn prometheus_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("prometheus")).find(|p| p.is_file())
}

/// The Prometheus we started: stopped by its pid (TERM, then KILL) when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
    }
}

fn start_prometheus(bin: &Path, dir: &Path, exporter: &str) -> Prometheus {
    let port = free_port().expect("a free loopback port");
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: dcgm-node-1
    metrics_path: /node-1/metrics
    static_configs:
      - targets: ['{exporter}']
        labels: {{pod: nvidia-dcgm-exporter-x7k2p, namespace: gpu-operator, container: nvidia-dcgm-exporter}}
  - job_name: dcgm-node-2
    honor_labels: true
    metrics_path: /node-2/metrics
    static_configs:
      - targets: ['{exporter}']
  - job_name: runai
    metrics_path: /runai/metrics
    static_configs:
      - targets: ['{exporter}']
        labels: {{pod: runai-exporter-5d8f9, namespace: runai}}
"#
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.join("prometheus.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = StdCommand::new(bin)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    Prometheus { child, url: format!("http://127.0.0.1:{port}"), log }
}

/// Asks Prometheus until `check` is happy with the answer to `query`, for at most 30 s.
fn wait_for(rt: &tokio::runtime::Runtime, prom: &mut Prometheus, query: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(Some(status)) = prom.child.try_wait() {
            let log = std::fs::read_to_string(&prom.log).unwrap_or_default();
            panic!("Prometheus exited ({status}); its log:\n{log}");
        }
        let url = format!("{}/api/v1/query", prom.url);
        let answer = rt.block_on(async { client.get(&url).query(&[("query", query)]).send().await?.json::<serde_json::Value>().await });
        if answer.as_ref().is_ok_and(&check) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&prom.log).unwrap_or_default();
    panic!("Prometheus never answered {query} as expected; its log:\n{log}");
}

#[test]
fn dcgm_and_runai_series_come_back_from_a_real_prometheus_in_both_label_spellings() {
    let Some(bin) = prometheus_binary() else {
        eprintln!("SKIPPED: no `prometheus` binary on PATH (install the Debian package `prometheus`, as .ci/setup-metrics.sh does)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let node1 = std::fs::read_to_string(fixture("dcgm-exporter-node-1.prom")).unwrap();
    let node2 = std::fs::read_to_string(fixture("dcgm-exporter-node-2.prom")).unwrap();
    let runai = std::fs::read_to_string(fixture("runai.prom")).unwrap();
    let app = axum::Router::new()
        .route("/node-1/metrics", get(move || std::future::ready(node1.clone())))
        .route("/node-2/metrics", get(move || std::future::ready(node2.clone())))
        .route("/runai/metrics", get(move || std::future::ready(runai.clone())));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let exporter = listener.local_addr().unwrap().to_string();
    rt.spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let mut prom = start_prometheus(&bin, dir.path(), &exporter);
    // All three targets up, and both spellings stored.
    wait_for(&rt, &mut prom, "count(up == 1)", |v| v["data"]["result"][0]["value"][1] == "3");
    wait_for(&rt, &mut prom, "count(DCGM_FI_DEV_GPU_UTIL{exported_pod=\"llm-0\"}) + count(DCGM_FI_DEV_GPU_UTIL{pod=\"llm-1\"})", |v| {
        v["data"]["result"][0]["value"][1] == "2"
    });

    let out = dir.path().join("k8s.csv");
    let o = Command::cargo_bin("gpubench")
        .unwrap()
        .args(["metrics", "--source", "prometheus", "--prometheus-url", &prom.url])
        .args(["--selector", r#"namespace="llm",pod=~"llm-.*""#, "--interval", "1s", "--duration", "3s", "--out"])
        .arg(&out)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    std::io::stderr().write_all(stderr.as_bytes()).unwrap();

    let rows: Vec<MetricSample> = csv::Reader::from_path(&out).unwrap().deserialize().map(|r| r.unwrap()).collect();
    assert!(!rows.is_empty(), "no rows");
    assert!(rows.iter().all(|r| r.source == "prometheus"));
    let devices: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.device_id.as_str()).collect();
    assert_eq!(devices.into_iter().collect::<Vec<_>>(), ["node-1:0", "node-2:0"], "the selector keeps the llm pods' GPUs only");
    assert!(rows.iter().filter(|r| r.pod.is_some()).all(|r| r.pod.as_deref() == Some("llm/llm-0")), "{rows:#?}");

    let node1 = rows.iter().find(|r| r.device_id == "node-1:0" && r.gpu_util_pct.is_some()).expect("node-1 through exported_pod");
    assert_eq!(node1.pod, None, "a device row is about the whole GPU");
    assert_eq!(node1.device_name, "NVIDIA H100 80GB HBM3");
    assert_eq!(node1.gpu_util_pct, Some(87.0));
    assert_eq!(node1.mem_used_mib, Some(17920.0));
    assert_eq!(node1.mem_total_mib, Some(81559.0));
    assert_eq!(node1.power_w, Some(512.418));
    assert_eq!(node1.temperature_c, Some(48.0));
    assert_eq!(node1.sm_activity_pct, Some(81.0), "GR_ENGINE_ACTIVE stands in for SM activity");
    assert_eq!(node1.tensor_activity_pct, Some(55.0));
    assert_eq!(node1.energy_j, Some(0.0), "energy counts from the first point read");

    let node2 = rows.iter().find(|r| r.device_id == "node-2:0").expect("node-2 through pod");
    assert_eq!(node2.gpu_util_pct, Some(12.0));

    let runai = rows.iter().find(|r| r.process_sm_util_pct.is_some()).expect("a Run:AI per-pod row");
    assert_eq!((runai.device_id.as_str(), runai.pod.as_deref()), ("node-1:0", Some("llm/llm-0")), "the GPU user's pod, not the exporter's");
    assert_eq!(runai.process_sm_util_pct, Some(61.0));
    assert_eq!(runai.process_mem_mib, Some(17280.0));

    // One device row per device per tick: 3 s at 1 s gives 3 or 4 ticks.
    let ticks = rows.iter().filter(|r| r.device_id == "node-1:0" && r.gpu_util_pct.is_some()).count();
    assert!((2..=5).contains(&ticks), "{ticks} ticks");

    let summary: Vec<gpubench::report::MetricSummary> = serde_json::from_str(&std::fs::read_to_string(out.with_extension("summary.json")).unwrap()).unwrap();
    let s1 = summary.iter().find(|s| s.device_id == "node-1:0").unwrap();
    assert_eq!(s1.util_mean_pct, Some(87.0));
    assert_eq!(s1.idle_fraction, Some(0.0));
    assert!(s1.note.contains("DCGM_FI_DEV_GPU_UTIL"));
}

#[test]
fn a_selector_prometheus_rejects_is_a_usage_error() {
    let Some(bin) = prometheus_binary() else {
        eprintln!("SKIPPED: no `prometheus` binary on PATH");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut prom = start_prometheus(&bin, dir.path(), "127.0.0.1:9");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    wait_for(&rt, &mut prom, "vector(1)", |v| v["status"] == "success");
    let o = Command::cargo_bin("gpubench")
        .unwrap()
        .args(["metrics", "--source", "prometheus", "--prometheus-url", &prom.url, "--selector", r#"pod=~"(""#, "--duration", "1s"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Prometheus rejected the query"));
}
