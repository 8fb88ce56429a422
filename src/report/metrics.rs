//! The metric series: what `metrics` samples (one CSV row per sample per device) and
//! its JSON summary, read by `compare`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One sample of one device (a GPU, a MIG instance, or the host CPU), one CSV row.
/// Fields a source cannot measure are empty in the CSV (`None`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricSample {
    /// Unix time in seconds (fractional).
    pub timestamp: f64,
    /// `nvml`, `cpu`, `prometheus` or `replay`.
    pub source: String,
    /// Device index or id as the source names it (`0`, a UUID, `cpu`).
    pub device_id: String,
    pub device_name: String,
    /// Kernel duty cycle in % (NVML utilization.gpu); for the CPU source, CPU busy %.
    pub gpu_util_pct: Option<f64>,
    pub mem_util_pct: Option<f64>,
    pub mem_used_mib: Option<f64>,
    pub mem_total_mib: Option<f64>,
    pub power_w: Option<f64>,
    /// Energy since the start of the series, in joules.
    pub energy_j: Option<f64>,
    pub temperature_c: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
    /// GPM (Hopper+) or DCGM profiling ratios, in %.
    pub sm_activity_pct: Option<f64>,
    pub sm_occupancy_pct: Option<f64>,
    pub tensor_activity_pct: Option<f64>,
    pub dram_activity_pct: Option<f64>,
    /// Process or pod this row is about, for per-process rows (empty for the whole device).
    pub pid: Option<u32>,
    pub pod: Option<String>,
    pub process_mem_mib: Option<f64>,
    pub process_sm_util_pct: Option<f64>,
    /// Active clock throttle reasons (NVML), `|`-separated: `sw_power_cap|hw_slowdown`.
    pub throttle_reasons: Option<String>,
}

/// Summary of a series for one device, written as JSON beside the CSV.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricSummary {
    pub schema_version: u32,
    pub source: String,
    pub device_id: String,
    pub device_name: String,
    pub samples: u64,
    pub duration_s: f64,
    pub interval_s: f64,
    pub util_mean_pct: Option<f64>,
    pub util_p50_pct: Option<f64>,
    /// 95th percentile of this device's utilization, read from 0.1% bins (the comparison's
    /// `util_p95_pct` is exact, over the samples of all devices of a phase). Written as
    /// `util_p95_pct` before; that name is still read.
    #[serde(alias = "util_p95_pct")]
    pub util_p95_binned_pct: Option<f64>,
    /// Share of samples with utilization under 5%.
    pub idle_fraction: Option<f64>,
    pub mem_peak_mib: Option<f64>,
    pub energy_j: Option<f64>,
    pub sm_activity_mean_pct: Option<f64>,
    /// What the utilization number means for this source, in words.
    pub note: String,
}
