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
    assert!(stdout.contains(&format!("report: {}", out.join("comparison.md").display())), "{stdout}");
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
