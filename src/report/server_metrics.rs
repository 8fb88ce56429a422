//! What the serving engine said about itself during a run: its own `/metrics`, scraped
//! by `load-test --server-metrics` while the point ran, per replica.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The engines' own metrics over one run, one entry per replica (`--url`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServerMetrics {
    /// Time between scrapes, in seconds (`--server-metrics-interval`).
    pub interval_s: f64,
    pub replicas: Vec<ReplicaMetrics>,
}

/// One replica's scrapes, kept apart from the others'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReplicaMetrics {
    /// The load-test URL this replica serves (the scrape URL itself when given with `--server-metrics URL`).
    pub url: String,
    pub scrape_url: String,
    /// `vllm`, `tgi`, `sglang`, `llama.cpp`, `gpubench` or `unknown` (from its metric names).
    pub engine: String,
    /// One point per scrape, in time order.
    pub series: Vec<ServerMetricsPoint>,
    pub summary: ServerMetricsSummary,
}

/// One scrape. A value the engine does not report, or reported as NaN or infinite, is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServerMetricsPoint {
    /// Seconds since the start of the measurement window (negative: the scrape before it).
    pub t_s: f64,
    /// Requests in the running batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<f64>,
    /// Requests queued, waiting to join the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<f64>,
    /// KV-cache use as a fraction, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_usage: Option<f64>,
    /// Preemptions since the first scrape (counter resets handled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptions: Option<f64>,
    /// Prefix-cache hit and queried tokens since the first scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_hits: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_queries: Option<f64>,
    /// The engine's own prefix-cache hit rate gauge (SGLang), 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_hit_rate: Option<f64>,
    /// Gauges and counters gpubench does not map, by series (`name` or `name{labels}`); null for NaN or infinite.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, Option<f64>>,
}

/// The run in a few numbers; absent where the engine does not report the metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServerMetricsSummary {
    /// Scrapes that answered, and those that failed (timeout, status, not exposition text).
    pub samples: u64,
    pub scrape_errors: u64,
    /// KV-cache use, fraction 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_usage_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_usage_peak: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_peak: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_peak: Option<f64>,
    /// Preemptions during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptions: Option<f64>,
    /// Prefix-cache hits over queries during the run (or the engine's own rate, averaged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hit_rate: Option<f64>,
}

impl ServerMetrics {
    /// Mean KV-cache use over the replicas that report it (each replica's own mean, averaged).
    pub fn kv_usage_mean(&self) -> Option<f64> {
        mean(self.replicas.iter().filter_map(|r| r.summary.kv_usage_mean))
    }

    /// Highest KV-cache use of any replica.
    pub fn kv_usage_peak(&self) -> Option<f64> {
        self.replicas.iter().filter_map(|r| r.summary.kv_usage_peak).reduce(f64::max)
    }

    /// Highest queue of any replica.
    pub fn waiting_peak(&self) -> Option<f64> {
        self.replicas.iter().filter_map(|r| r.summary.waiting_peak).reduce(f64::max)
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}
