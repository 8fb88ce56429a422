//! `gpubench bench` end to end against local servers.

mod common;

use std::time::Duration;

use assert_cmd::Command;
use common::fake_llm::{FakeConfig, FakeServer};

#[test]
fn remote_targets_are_measured_and_compared() {
    let fast = FakeServer::start(FakeConfig { ttft: Duration::from_millis(5), ..FakeConfig::default() });
    let slow = FakeServer::start(FakeConfig { ttft: Duration::from_millis(60), ..FakeConfig::default() });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let output = Command::cargo_bin("gpubench")
        .unwrap()
        .args(["bench", "--phases", "none", "--concurrency", "1,2", "--point-duration", "1s", "--max-tokens", "8"])
        .args(["--target", &format!("fast={}", fast.url("/generate"))])
        .args(["--target", &format!("slow={}", slow.url("/generate"))])
        .arg("--out-dir")
        .arg(&out)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains(&format!("Report: {}", out.join("comparison.md").display())), "{stdout}");
    assert!(stdout.contains(&format!("Open: {}", out.join("comparison.html").display())), "{stdout}");
    for name in ["fast", "slow"] {
        let file = gpubench::report::RunReportFile::load(&out.join(format!("{name}.json"))).unwrap();
        let runs = file.runs();
        assert_eq!(runs.len(), 2, "one run per concurrency point");
        assert_eq!(runs[0].label, format!("{name}-c1"));
        assert!(runs.iter().all(|r| r.counts.ok > 0));
    }
    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert!(md.contains("fast") && md.contains("slow"), "{md}");
    assert!(fast.hits() > slow.hits(), "the faster server answered more in the same time");
}

#[test]
fn bench_needs_something_to_measure() {
    let output = Command::cargo_bin("gpubench").unwrap().args(["bench", "--phases", "none"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs at least one --target"));
    let output = Command::cargo_bin("gpubench").unwrap().args(["bench", "--target", "x"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("NAME=URL"));
}

#[test]
fn quick_bench_runs_every_local_phase_on_the_default_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let output = Command::cargo_bin("gpubench")
        .unwrap()
        .args(["bench", "--quick", "--concurrency", "1,2", "--point-duration", "2s", "--max-tokens", "6"])
        .args(["--sharing-servers", "2", "--out-dir"])
        .arg(&out)
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for phase in ["bare-metal", "sharing", "batched"] {
        let file = gpubench::report::RunReportFile::load(&out.join(format!("{phase}.json"))).unwrap();
        assert!(file.runs().iter().all(|r| r.counts.ok > 0), "{phase}: every point answered");
        assert_eq!(file.runs()[0].target.urls.len(), if phase == "sharing" { 2 } else { 1 });
        let csv = std::fs::read_to_string(out.join(format!("{phase}-metrics.csv"))).unwrap();
        assert!(csv.lines().count() > 2, "{phase}: utilization was sampled");
    }
    for file in ["comparison.md", "comparison.json", "comparison.csv", "throughput.png"] {
        assert!(out.join(file).exists(), "{file} written");
    }
    // The servers were stopped: nothing listens on their ports any more.
    for phase in ["bare-metal", "sharing", "batched"] {
        let file = gpubench::report::RunReportFile::load(&out.join(format!("{phase}.json"))).unwrap();
        for url in &file.runs()[0].target.urls {
            let addr = url.trim_start_matches("http://").split('/').next().unwrap();
            assert!(std::net::TcpStream::connect(addr).is_err(), "{phase} server at {addr} still answers");
        }
    }
}
