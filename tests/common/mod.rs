//! Test helpers: in-process fake LLM servers speaking the seed, OpenAI, Ollama and TGI APIs, the real
//! `gpubench serve` as a child process, and the committed report schema.
#![allow(dead_code)]

pub mod fake_llm;
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
