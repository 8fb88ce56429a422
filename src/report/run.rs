//! The run report: everything one load-test point measured, and how.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EnvironmentStamp, LatencySummary};

/// A report file: one run, or a sweep of several (`{"schema_version": 1, "runs": [...]}`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RunReportFile {
    Sweep(RunSet),
    Single(Box<RunReport>),
}

/// The runs of a sweep, one per concurrency or rate point, in the order they ran.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSet {
    pub schema_version: u32,
    pub runs: Vec<RunReport>,
    /// What `--sweep auto` found: its knee and whether it saw saturation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepSummary>,
}

/// The result of a sweep whose points gpubench chose (`--sweep auto`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SweepSummary {
    /// `auto`: a synchronous run, a throughput run, then open-loop rates between the two.
    pub kind: String,
    /// Requests per second of the synchronous run (one at a time) and of the throughput run.
    pub synchronous_rate: f64,
    pub throughput_rate: f64,
    /// The open-loop rates chosen, in order.
    pub rates: Vec<f64>,
    /// The highest rate before latency grew faster than throughput; absent when it never did.
    pub knee_rate: Option<f64>,
    pub knee_label: Option<String>,
    /// True when two points past the knee showed latency growing faster than throughput.
    pub saturated: bool,
    /// True when `--stop-on-saturation` ended the sweep before its last rate.
    pub stopped_early: bool,
    /// How the knee is found, in words.
    pub definition: String,
}

/// What one load-test point measured.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunReport {
    pub schema_version: u32,
    /// Name of this run in comparisons (`--label`; by default the mode and its level, e.g. `c8`).
    pub label: String,
    /// When the run started, RFC 3339 in UTC.
    pub started_at: String,
    pub target: Target,
    pub workload: Workload,
    pub environment: EnvironmentStamp,
    /// How each metric was measured, in words, so readers of the report know what the numbers mean.
    pub definitions: BTreeMap<String, String>,
    pub counts: Counts,
    /// Length of the measurement window in seconds (warm-up excluded).
    pub window_s: f64,
    pub throughput: Throughput,
    pub latency_ms: Latencies,
    /// Requests that met every SLO given with `--slo`; absent without SLOs.
    pub goodput: Option<Goodput>,
    /// How well the client kept to its own schedule.
    pub client: ClientCheck,
    /// HdrHistograms of the measured requests, in microseconds, so that runs can be merged.
    pub histograms: Histograms,
    /// Per-second series over the measurement window.
    pub series: Vec<SeriesPoint>,
    /// The serving engine's own metrics (its `/metrics`), scraped while the point ran; per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_metrics: Option<super::ServerMetrics>,
    /// Things a reader should know (token count mismatches, unknown counts...).
    pub warnings: Vec<String>,
    /// Multi-turn sessions: how many finished, and TTFT of first against later turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionSummary>,
    /// Prompt tokens the server reported as served from its prefix cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache: Option<PrefixCacheSummary>,
    /// True when the run was stopped by Ctrl-C and the report is partial.
    pub interrupted: bool,
    /// This run was one shard of several (`--shard I/N`): which one, and its clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// The shard reports this one was merged from (`gpubench report merge`), in shard order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<MergedInput>>,
}

/// One shard's part of a sharded run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ShardInfo {
    /// This shard's number, from 0, and how many shards the run has.
    pub index: u32,
    pub count: u32,
    /// Closed-loop workers this shard ran (its share of the concurrency); absent for an open loop.
    pub workers: Option<u32>,
    /// The common start time every shard waited for (`--start-at`), RFC 3339.
    pub start_at: Option<String>,
    /// The target's clock minus this shard's, in milliseconds, from the target's HTTP `Date`
    /// header, and the most that estimate may be off by; absent when the target sends no `Date`.
    pub clock_offset_ms: Option<f64>,
    pub clock_offset_error_ms: Option<f64>,
    /// Wall-clock time (this shard's clock, Unix milliseconds) of the window's start, and of
    /// second 0 of `series`: how shards' windows and series are aligned when merged.
    pub window_start_unix_ms: Option<f64>,
    pub series_start_unix_ms: Option<f64>,
}

/// One input of a merged report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MergedInput {
    /// The file as given to the merge.
    pub file: String,
    pub shard: Option<ShardInfo>,
    pub started_at: String,
    pub sent: u64,
    pub ok: u64,
    /// Whether this shard kept to its schedule.
    pub kept_up: bool,
    pub environment: EnvironmentStamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionSummary {
    /// Sessions whose every turn was answered.
    pub finished: u64,
    /// TTFT of the sessions' first turns, and of their later turns (where a prefix cache shows).
    pub ttft_first_turn_ms: Option<LatencySummary>,
    pub ttft_later_turns_ms: Option<LatencySummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PrefixCacheSummary {
    /// Answers that reported `usage.prompt_tokens_details.cached_tokens`.
    pub answers: u64,
    pub cached_tokens: u64,
    /// Prompt tokens of those answers.
    pub prompt_tokens: u64,
    /// cached_tokens / prompt_tokens.
    pub hit_share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Target {
    pub urls: Vec<String>,
    /// `generate`, `openai-completions` or `openai-chat`.
    pub api: String,
    pub model: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Workload {
    /// `closed` (N workers, each sends when its last request ended) or `open` (requests sent on a schedule).
    pub mode: String,
    pub concurrency: Option<u32>,
    /// Target request rate in requests per second (open loop).
    pub rate: Option<f64>,
    /// `constant` or `poisson` (open loop).
    pub arrival: Option<String>,
    pub max_concurrency: Option<u32>,
    /// Request limit of the measurement (warm-up not counted).
    pub requests: Option<u64>,
    /// Time limit of the measurement in seconds (warm-up not counted).
    pub duration_s: Option<f64>,
    pub warmup_requests: Option<u64>,
    pub warmup_s: Option<f64>,
    pub max_tokens: u32,
    pub stream: bool,
    /// Where prompts came from: `prompt`, `dataset:FILE` or `synthetic:MEAN:STDDEV`.
    pub prompt_source: String,
    pub distinct_prompts: u64,
    pub seed: u64,
    pub timeout_s: f64,
    /// SLOs in milliseconds by metric (`ttft`, `tpot`, `e2e`).
    pub slo_ms: BTreeMap<String, f64>,
    /// Shape of the gamma arrival process (`arrival: gamma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burstiness: Option<f64>,
    /// An open loop whose rate grows over the point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampSpec>,
    /// An open loop in stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageSpec>>,
    /// A replayed trace: its own rate and burstiness, next to what was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceSpec>,
    /// Multi-turn sessions at once (closed loop), and the pause between turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think_time_s: Option<f64>,
    /// Every prompt starts with one of `prefix_groups` shared prefixes of this many tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_prefix_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_groups: Option<u32>,
    /// A seeded spread of max_tokens, `MEAN:STDDEV`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<String>,
    /// Requests asked for exactly max_tokens (`ignore_eos`, `min_tokens`).
    #[serde(default)]
    pub ignore_eos: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Fields merged into every body (`--extra-body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_body: Option<serde_json::Map<String, serde_json::Value>>,
    /// The tokenizer prompts were measured with; absent when lengths are approximate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// `exact` (counted by `tokenizer`) or `approximate` (words); absent for given prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_lengths: Option<String>,
    /// `auto` when gpubench chose the sweep's points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RampSpec {
    /// `linear` or `exponential`.
    pub kind: String,
    pub start_rate: f64,
    pub end_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageSpec {
    pub duration_s: f64,
    pub rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TraceSpec {
    pub file: String,
    /// Requests in the trace and the time it spans, in its own clock.
    pub requests: u64,
    pub span_s: f64,
    /// The trace's own mean rate (requests per second) and burstiness (gamma shape 1/CV² of its gaps).
    pub rate: f64,
    pub burstiness: Option<f64>,
    /// Replay speed: offsets were divided by it.
    pub speed: f64,
    /// Tokens per block of `hash_ids`.
    pub block_tokens: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    /// Measured requests sent (warm-up excluded).
    pub sent: u64,
    /// Measured requests that completed successfully.
    pub ok: u64,
    /// Measured requests that failed, by kind.
    pub errors: ErrorCounts,
    /// Requests still in flight when the run stopped (drain timeout or Ctrl-C).
    pub unfinished: u64,
    /// Requests of the warm-up, not in any other number.
    pub warmup: u64,
    /// Failed requests by HTTP status code.
    pub http_status: BTreeMap<String, u64>,
    /// A few error messages, the first of each distinct kind and text.
    pub error_samples: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorCounts {
    /// No complete answer within `--timeout`.
    pub timeout: u64,
    /// Could not connect, or the connection was reset or closed early.
    pub connect: u64,
    /// The server answered with a non-2xx status.
    pub http_status: u64,
    /// The answer was not what the API promises (not JSON, missing fields, truncated stream).
    pub protocol: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.timeout + self.connect + self.http_status + self.protocol
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Throughput {
    pub requests_per_s: f64,
    pub requests_per_min: f64,
    /// Prompt tokens per second, from the server's counts; absent when the server gave none.
    pub input_tokens_per_s: Option<f64>,
    /// Output tokens per second; absent when neither the server nor the stream gave counts.
    pub output_tokens_per_s: Option<f64>,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
}

/// Latency summaries in milliseconds; a metric that was not measurable (TTFT without
/// streaming, say) is absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Latencies {
    pub e2e: Option<LatencySummary>,
    pub service: Option<LatencySummary>,
    pub ttft: Option<LatencySummary>,
    pub itl: Option<LatencySummary>,
    pub tpot: Option<LatencySummary>,
    pub queue: Option<LatencySummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Goodput {
    pub slo_ms: BTreeMap<String, f64>,
    /// Successful requests that met every SLO.
    pub requests: u64,
    pub requests_per_s: f64,
    /// Share of measured requests (sent) that met every SLO.
    pub fraction: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ClientCheck {
    /// Target send rate (open loop).
    pub target_rate: Option<f64>,
    /// Measured requests sent per second of the sending period.
    pub achieved_send_rate: f64,
    /// Delay between a request's intended send time and when the client got to it (open loop).
    pub schedule_lag_ms: Option<LatencySummary>,
    /// False when the client could not keep to its schedule: the run measured the client, not the server.
    pub kept_up: bool,
    pub notes: Vec<String>,
}

/// Base64 HdrHistogram V2 serializations, values in microseconds; empty string for an empty one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Histograms {
    pub unit: String,
    pub e2e: String,
    pub service: String,
    pub ttft: String,
    pub itl: String,
    pub tpot: String,
    pub queue: String,
    /// Open-loop schedule lag, and TTFT of sessions' first and later turns (absent in older reports).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schedule_lag: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ttft_first_turn: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ttft_later_turns: String,
}

/// One second of the measurement window, by completion time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SeriesPoint {
    /// Seconds since the start of the window.
    pub t_s: u64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub output_tokens: u64,
    pub e2e_mean_ms: Option<f64>,
    pub e2e_max_ms: Option<f64>,
}
