//! The committed JSON Schema of run reports must match the code. Regenerate with
//! `UPDATE_SCHEMA=1 cargo test --test schema`.

mod common;

use gpubench::report::RunReportFile;

#[test]
fn committed_schema_matches_the_report_types() {
    let path = common::repo_path("schemas/run-report.schema.json");
    let generated = serde_json::to_string_pretty(&RunReportFile::json_schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/run-report.schema.json is out of date: run `UPDATE_SCHEMA=1 cargo test --test schema` and commit it"
    );
}
