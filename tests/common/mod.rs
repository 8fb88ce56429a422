//! Test helpers: in-process fake LLM servers speaking the seed, OpenAI, Ollama and TGI APIs, the real
//! `gpubench serve` as a child process, and the committed report schema.
#![allow(dead_code)]

pub mod axum_thread;
pub mod fake_llm;
pub mod fake_metrics;
pub mod fake_native;
pub mod llama_server;
pub mod origin_only;
pub mod serve;

use std::path::{Path, PathBuf};

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Validates a report file (single or sweep) against the committed JSON Schema.
pub fn assert_valid_report(value: &serde_json::Value) {
    let schema_text = std::fs::read_to_string(repo_path("schemas/run-report.schema.json")).expect("committed schema");
    let schema: serde_json::Value = serde_json::from_str(&schema_text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "report does not match schemas/run-report.schema.json:\n{}", errors.join("\n"));
}
pub mod fake_hub;

/// The report's warnings other than the note that the target has no `/metrics` (which every
/// fake without one gets from `--server-metrics auto`).
pub fn other_warnings(r: &serde_json::Value) -> Vec<String> {
    r["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(|w| w.as_str()).filter(|w| !w.starts_with("server metrics:")).map(String::from).collect())
        .unwrap_or_default()
}

/// What one run of `gpubench load-test` left: its exit code, output and report.
pub struct LoadTestRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: Option<serde_json::Value>,
}

static NULL: serde_json::Value = serde_json::Value::Null;

impl LoadTestRun {
    /// The report, or null where none was written.
    pub fn r(&self) -> &serde_json::Value {
        self.report.as_ref().unwrap_or(&NULL)
    }
}

/// Runs the real `gpubench load-test ARGS --out FILE` (at most 240 s) and checks the report
/// it wrote against the committed schema.
pub fn load_test(args: &[&str]) -> LoadTestRun {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let output = assert_cmd::Command::cargo_bin("gpubench")
        .unwrap()
        .arg("load-test")
        .args(args)
        .arg("--out")
        .arg(&out)
        .timeout(std::time::Duration::from_secs(240))
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&out).ok().map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap());
    if let Some(r) = &report {
        assert_valid_report(r);
    }
    LoadTestRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        report,
    }
}
