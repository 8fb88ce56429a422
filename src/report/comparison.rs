//! The comparison: what `compare` computes from run reports and metric series, per
//! phase, with the winner of each row and the cost model inputs it used.
//! Written as `comparison.json`; read back as the baseline of a regression gate.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EnvironmentStamp, ReportError, SCHEMA_VERSION};

/// The comparison of several deployments ("phases") of the same model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Comparison {
    pub schema_version: u32,
    /// The inputs of the cost model, echoed so that the numbers can be checked by hand.
    pub cost_model: CostModel,
    /// One entry per phase, in the order they were given.
    pub phases: Vec<PhaseSummary>,
    /// The rows of the table, each with its values per phase and its winner(s).
    pub rows: Vec<ComparisonRow>,
    /// One paragraph, generated from the numbers.
    pub verdict: String,
    /// Chart files written beside the comparison (relative file names).
    pub charts: Vec<ChartFile>,
    /// Things a reader should know (skipped sweep points, missing metrics...).
    pub notes: Vec<String>,
    /// Each pod's share of its GPU, from the per-pod rows of the phases' metric series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodUsage>,
    /// What the phases ran on: `gpu`, `cpu` or `mixed`; the rows' titles name it ("CPUs used").
    /// Absent in comparisons written before it was recorded (read as `gpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_kind: Option<String>,
}

/// One pod (or process in a pod) on one GPU during a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PodUsage {
    pub phase: String,
    /// `namespace/name`, the pod's name, or `uid:<pod uid>`, as the metric series has it.
    pub pod: String,
    /// The GPU it ran on.
    pub device_id: String,
    pub samples: u64,
    /// SM utilization of the pod's processes (NVML per-process, or Run:AI per pod), in %.
    pub sm_util_mean_pct: Option<f64>,
    pub sm_util_p95_pct: Option<f64>,
    /// Highest GPU memory the pod used, in MiB.
    pub mem_peak_mib: Option<f64>,
}

/// What the cost numbers assume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CostModel {
    /// Price of one GPU for one hour.
    pub gpu_hour_cost: f64,
    /// Licence or support cost per GPU and year, added to the yearly cost.
    pub license_per_gpu_year: f64,
    pub hours_per_year: f64,
    /// Request rate the deployment must serve, in requests per minute.
    pub target_rpm: f64,
    /// True when the target was not given and defaults to the best measured phase.
    pub target_rpm_is_default: bool,
    /// SLOs in milliseconds by metric (`e2e`, `ttft`, `tpot`, `itl`); a sweep point meets
    /// them when the p95 of each metric is within its limit.
    pub slo_ms: BTreeMap<String, f64>,
}

/// One phase: a deployment measured by one run report file (a single run or a sweep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PhaseSummary {
    pub label: String,
    /// The run report file it was read from.
    pub report_file: String,
    /// The metric series file its utilization was read from, if any.
    pub metrics_file: Option<String>,
    /// Servers (pods, processes) sharing each GPU.
    pub pods_per_gpu: u32,
    /// GPUs the measured deployment used.
    pub gpus: f64,
    /// Label of the run chosen as the phase's operating point: the highest throughput
    /// among the points that meet the SLOs (every point when no SLO is given).
    pub operating_point: String,
    /// False when no point met the SLOs; the numbers are then those of the best point.
    pub meets_slo: bool,
    pub requests_per_min: f64,
    pub output_tokens_per_s: Option<f64>,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    pub ttft_p95_ms: Option<f64>,
    /// Where utilization came from: `gpu` or `cpu` (the metric series' source), if measured.
    pub util_kind: Option<String>,
    pub util_mean_pct: Option<f64>,
    pub util_p95_pct: Option<f64>,
    /// Mean SM activity in % (Hopper GPM or DCGM profiling): how busy the SMs really were,
    /// where the metric series has it.
    pub sm_activity_mean_pct: Option<f64>,
    /// Share of measured requests that met every SLO of the load test, if it had any.
    pub goodput_fraction: Option<f64>,
    /// Whole GPUs needed to serve the target rate within the SLOs; absent when no point met them.
    pub gpus_needed: Option<u32>,
    pub yearly_cost: Option<f64>,
    /// Cost of a million output tokens at the operating point, GPUs fully booked.
    pub cost_per_million_output_tokens: Option<f64>,
    /// Every point of the file, in the order they ran.
    pub points: Vec<SweepPoint>,
    /// KV-cache use at the operating point in % (the engine's own metrics, mean of replicas'
    /// means, and highest of any replica), where the run report has server metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_usage_mean_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_usage_peak_pct: Option<f64>,
    /// Most requests waiting in any replica's queue at the operating point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_peak: Option<f64>,
    /// What ran the operating point's measurement (the run report's environment stamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentStamp>,
    /// What this phase ran on (`gpu` or `cpu`), where its inputs tell: the metric series'
    /// source, or a server on loopback of a machine without GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_kind: Option<String>,
}

/// One load-test point of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SweepPoint {
    pub label: String,
    pub concurrency: Option<u32>,
    /// Offered rate in requests per second (open loop).
    pub rate: Option<f64>,
    pub requests_per_min: f64,
    pub output_tokens_per_s: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    pub errors: u64,
    pub meets_slo: bool,
}

/// One row of the comparison table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComparisonRow {
    /// Stable key (`requests_per_min`, `latency_p95_ms`...), the field of [`PhaseSummary`].
    pub metric: String,
    /// What the row says, for people.
    pub title: String,
    /// `higher`, `lower` or `none` (no winner).
    pub better: String,
    /// Values per phase, in phase order; absent where not measured.
    pub values: Vec<Option<f64>>,
    /// Labels of the best phase(s); empty when there is no winner.
    pub winners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChartFile {
    pub title: String,
    pub file: String,
}

impl Comparison {
    /// Reads a `comparison.json`, checking its schema version first.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read { path: path.into(), source })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ReportError::Invalid { path: path.into(), detail: format!("not JSON ({e})") })?;
        let version = value.get("schema_version").and_then(|v| v.as_u64()).ok_or_else(|| ReportError::Invalid {
            path: path.into(),
            detail: "no schema_version field (is it a comparison.json written by gpubench compare?)".into(),
        })?;
        if version != SCHEMA_VERSION as u64 {
            return Err(ReportError::Version { path: path.into(), found: version, expected: SCHEMA_VERSION.to_string() });
        }
        serde_json::from_value(value).map_err(|e| ReportError::Invalid { path: path.into(), detail: e.to_string() })
    }

    /// The JSON Schema of `comparison.json`.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Comparison)).unwrap_or_default()
    }

    /// The phase of that label, if compared.
    pub fn phase(&self, label: &str) -> Option<&PhaseSummary> {
        self.phases.iter().find(|p| p.label == label)
    }
}
