//! `gpubench metrics` run for real: the CPU source on this machine, the NVML failure
//! (NVML pointed at a library that does not exist), a recorded NVML series replayed,
//! and a command sampled while it runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use gpubench::report::{MetricSample, MetricSummary};

const COLUMNS: &str = "timestamp,source,device_id,device_name,gpu_util_pct,mem_util_pct,mem_used_mib,mem_total_mib,power_w,energy_j,\
temperature_c,sm_clock_mhz,sm_activity_pct,sm_occupancy_pct,tensor_activity_pct,dram_activity_pct,pid,pod,process_mem_mib,\
process_sm_util_pct,throttle_reasons";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

fn gpubench() -> Command {
    let mut cmd = Command::cargo_bin("gpubench").unwrap();
    cmd.env("GPUBENCH_NVML_LIB", "/nonexistent/libnvidia-ml.so.1").arg("metrics");
    cmd
}

fn read_rows(path: &Path) -> Vec<MetricSample> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.deserialize().map(|x| x.unwrap()).collect()
}

fn read_summary(csv: &Path) -> Vec<MetricSummary> {
    let text = std::fs::read_to_string(csv.with_extension("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_cpu_source_writes_a_csv_and_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs/cpu.csv");
    let o = gpubench().args(["--source", "cpu", "--interval", "50ms", "--duration", "500ms", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().next().unwrap(), COLUMNS);
    let rows = read_rows(&out);
    // One row per 50 ms tick over 500 ms; a loaded machine may skip a late tick, never add one.
    assert!((6..=10).contains(&rows.len()), "{} rows", rows.len());
    assert!(rows.iter().all(|r| r.source == "cpu" && r.device_id == "cpu"));
    assert!(rows.windows(2).all(|w| w[1].timestamp > w[0].timestamp));
    let s = read_summary(&out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].samples as usize, rows.len());
    assert_eq!(s[0].interval_s, 0.05);
    assert!(s[0].util_mean_pct.is_some() && s[0].mem_peak_mib.unwrap() > 0.0);
    assert!(s[0].note.contains("CPU busy %"), "{}", s[0].note);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("cpu cpu ("), "a summary line for people: {stderr}");
}

#[test]
fn nvml_missing_is_a_clear_error_with_the_fix() {
    let o = gpubench().args(["--source", "nvml", "--duration", "1s"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NVML not available: /nonexistent/libnvidia-ml.so.1 could not be loaded"), "{err}");
    assert!(err.contains("Fix: run on a machine with an NVIDIA GPU"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn auto_falls_back_to_the_cpu_and_says_so() {
    let o = gpubench().args(["--interval", "20ms", "--duration", "100ms"]).output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sampling the CPU instead"), "{err}");
    // Without --out or --json, the CSV goes to stdout.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().next().unwrap(), COLUMNS);
    let lines = stdout.lines().count();
    assert!((3..=6).contains(&lines), "a header and up to 5 rows: {lines}");
}

#[test]
fn a_recorded_nvml_series_replays_with_its_summary() {
    let o = gpubench().arg("--source").arg(format!("replay:{}", fixture("metrics/h100-nvml.csv").display())).args(["--interval", "1ms", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Vec<MetricSummary> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert_eq!((s.source.as_str(), s.device_id.as_str(), s.samples), ("replay", "0", 12));
    assert_eq!(s.util_mean_pct, Some(58.25));
    assert_eq!(s.util_p50_pct, Some(62.0));
    assert_eq!(s.util_p95_binned_pct, Some(100.0));
    assert_eq!(s.idle_fraction, Some(0.333));
    assert_eq!(s.mem_peak_mib, Some(17920.0));
    assert_eq!(s.interval_s, 1.0, "read from the recording's timestamps");
    assert_eq!(s.duration_s, 12.0);
    assert_eq!(s.energy_j, Some(4693.6), "the last energy counter value");
    assert!(s.note.contains("replay of") && s.note.contains("recorded from the nvml source"), "{}", s.note);
}

#[test]
fn a_replay_to_a_file_keeps_process_rows_and_labels_them_replay() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("replayed.csv");
    let o = gpubench()
        .arg(format!("--source=replay:{}", fixture("metrics/h100-nvml.csv").display()))
        .args(["--interval", "1ms", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 22);
    assert!(rows.iter().all(|r| r.source == "replay"));
    let procs: Vec<_> = rows.iter().filter(|r| r.pid == Some(4242)).collect();
    assert_eq!(procs.len(), 10);
    assert_eq!(procs[0].process_mem_mib, Some(17280.0));
}

#[test]
fn a_command_is_sampled_its_output_passes_and_its_exit_status_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmd.csv");
    let o = gpubench()
        .args(["--source", "cpu", "--interval", "50ms", "--out"])
        .arg(&out)
        .args(["--", "sh", "-c", "echo hello from the command; sleep 0.4; exit 7"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello from the command"));
    let rows = read_rows(&out);
    let host = rows.iter().filter(|r| r.pid.is_none()).count();
    assert!((3..=10).contains(&host), "about 8 ticks in 0.4 s, got {host}");
    assert!(rows.iter().any(|r| r.pid.is_some()), "the command's process is followed");
    assert_eq!(read_summary(&out)[0].samples as usize, host);
}

#[test]
fn a_command_that_succeeds_exits_zero_and_one_that_cannot_start_fails() {
    let ok = gpubench().args(["--source", "cpu", "--interval", "20ms", "--", "true"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let missing = gpubench().args(["--source", "cpu", "--", "gpubench-no-such-command"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot run 'gpubench-no-such-command'"));
}

#[test]
fn bad_input_is_a_usage_error() {
    for args in [
        vec!["--source", "gpu"],
        vec!["--interval", "0s"],
        vec!["--source", "prometheus"],
        vec!["--source", "prometheus", "--prometheus-url", "http://127.0.0.1:9", "--selector", "pod=llm"],
        vec!["--source", "replay:/nonexistent.csv"],
        vec!["--duration", "1s", "--", "true"],
    ] {
        let o = gpubench().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
}

#[test]
fn an_unreachable_prometheus_fails_with_the_fix() {
    let o = gpubench().args(["--source", "prometheus", "--prometheus-url", "http://127.0.0.1:9", "--duration", "1s"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did not answer") && err.contains("Fix: start Prometheus"), "{err}");
}

/// Runs the binary in the background, as a plain std process we can signal.
fn spawn_background(out: &Path) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("gpubench"))
        .args(["metrics", "--source", "cpu", "--interval", "50ms", "--out"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_rows(out: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string(out).map(|t| t.lines().count() > n).unwrap_or(false) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {n} rows in {} after 10 s", out.display());
}

#[test]
fn a_killed_run_keeps_every_sample_written_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("killed.csv");
    let mut child = spawn_background(&out);
    wait_for_rows(&out, 5);
    child.kill().unwrap(); // SIGKILL: no chance to flush anything more
    child.wait().unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'), "no half row");
    assert!(read_rows(&out).len() >= 5);
}

#[test]
fn ctrl_c_ends_the_run_with_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("interrupted.csv");
    let child = spawn_background(&out);
    wait_for_rows(&out, 3);
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_summary(&out);
    assert!(s[0].samples >= 3);
    assert_eq!(s[0].samples as usize, read_rows(&out).len());
}

#[test]
fn sigterm_reaches_the_command_and_the_summary_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("terminated.csv");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("gpubench"))
        .env("GPUBENCH_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
        .args(["metrics", "--source", "cpu", "--interval", "50ms", "--out"])
        .arg(&out)
        .args(["--", "sh", "-c", "trap 'exit 42' TERM; sleep 8 & wait"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_rows(&out, 6); // 3 ticks: a host row and a command row each
    let started = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut child = child;
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42), "the command's own exit status");
    assert!(started.elapsed() < Duration::from_secs(6), "the command ended on SIGTERM, not after its 8 s sleep");
    assert!(read_summary(&out)[0].samples >= 3);
}
