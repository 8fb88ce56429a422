//! The data contracts every command shares: the run report written by `load-test`
//! (and read by `compare`), the metric series, the comparison written by `compare`,
//! the environment stamp, and latency summaries.
//!
//! Everything here is versioned by [`SCHEMA_VERSION`]; the JSON Schema of a run report
//! file is committed at `schemas/run-report.schema.json` and checked by the tests.

mod comparison;
mod environment;
mod latency;
mod metrics;
mod run;
mod server_metrics;

pub use comparison::{ChartFile, Comparison, ComparisonRow, CostModel, PhaseSummary, PodUsage, SweepPoint};
pub use environment::{EnvironmentStamp, GpuInfo};
pub use latency::{decode_histogram, encode_histogram, LatencySummary};
pub use metrics::{MetricSample, MetricSummary};
pub use run::*;
pub use server_metrics::{ReplicaMetrics, ServerMetrics, ServerMetricsPoint, ServerMetricsSummary};

use std::path::{Path, PathBuf};

/// Version of the metric series and comparison formats. Bumped on any change that breaks readers.
pub const SCHEMA_VERSION: u32 = 1;

/// Version of the run report format written now. Version 2 added the workload's arrival
/// shapes, traces, sessions, shared prefixes and exact lengths, and the sweep summary.
pub const RUN_SCHEMA_VERSION: u32 = 2;
/// Run report versions this gpubench reads (every new field is optional).
pub const RUN_SCHEMA_VERSIONS_READ: std::ops::RangeInclusive<u64> = 1..=2;

/// Errors reading or writing report files.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read report {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write report {path}: {source}. Check that the folder exists and is writable")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a gpubench run report: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("{path} has schema_version {found}, this gpubench reads version {expected}: re-run the load test with this version")]
    Version { path: PathBuf, found: u64, expected: String },
}

impl crate::Failure for ReportError {
    fn exit_status(&self) -> crate::ExitStatus {
        match self {
            ReportError::Invalid { .. } | ReportError::Version { .. } => crate::ExitStatus::Usage,
            _ => crate::ExitStatus::Failure,
        }
    }
}

impl RunReportFile {
    /// All runs in the file: one for a single point, several for a sweep.
    pub fn runs(&self) -> &[RunReport] {
        match self {
            RunReportFile::Single(r) => std::slice::from_ref(r.as_ref()),
            RunReportFile::Sweep(s) => &s.runs,
        }
    }

    /// Wraps runs as a file: a bare report for one, a sweep for several.
    pub fn from_runs(mut runs: Vec<RunReport>) -> Self {
        if runs.len() == 1 {
            RunReportFile::Single(Box::new(runs.remove(0)))
        } else {
            RunReportFile::Sweep(RunSet { schema_version: RUN_SCHEMA_VERSION, runs, sweep: None })
        }
    }

    /// Reads a report file, checking its schema version first so that an old or foreign
    /// file gets an error that names it.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read { path: path.into(), source })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ReportError::Invalid { path: path.into(), detail: format!("not JSON ({e})") })?;
        let version = value
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| ReportError::Invalid { path: path.into(), detail: "no schema_version field".into() })?;
        if !RUN_SCHEMA_VERSIONS_READ.contains(&version) {
            let expected = format!("{} to {}", RUN_SCHEMA_VERSIONS_READ.start(), RUN_SCHEMA_VERSIONS_READ.end());
            return Err(ReportError::Version { path: path.into(), found: version, expected });
        }
        serde_json::from_value(value).map_err(|e| ReportError::Invalid { path: path.into(), detail: e.to_string() })
    }

    /// Writes the file as pretty JSON; a temporary file is renamed into place so a
    /// reader never sees half a report.
    pub fn save(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ReportError::Invalid { path: path.into(), detail: e.to_string() })?;
        crate::support::fs::write_atomically(path, text.as_bytes()).map_err(|source| ReportError::Write { path: path.into(), source })
    }

    /// The JSON Schema of a report file, as committed in `schemas/run-report.schema.json`.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(RunReportFile)).unwrap_or_default()
    }
}
