//! The `load-test` command line and the small parsers behind its flags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::support::cli::parse_duration;

/// Which API the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiChoice {
    /// From the URL path: /generate (gpubench's, or TGI's when GET /info says so), /generate_stream
    /// (TGI), /v1/completions, /v1/chat/completions, /api/generate or /api/chat (Ollama).
    Auto,
    /// The seed API: POST {"prompt", "max_tokens"} answered by JSON with the text.
    Generate,
    /// OpenAI /v1/completions.
    OpenaiCompletions,
    /// OpenAI /v1/chat/completions.
    OpenaiChat,
    /// Ollama /api/generate (NDJSON when streamed).
    OllamaGenerate,
    /// Ollama /api/chat (NDJSON when streamed).
    OllamaChat,
    /// Hugging Face TGI: /generate (one answer) or /generate_stream (server-sent events).
    Tgi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arrival {
    /// Exponential gaps from a seeded generator (a Poisson process).
    Poisson,
    /// Evenly spaced: request i at t0 + i/rate.
    Constant,
    /// Gamma-distributed gaps with shape --burstiness and mean 1/rate (1 = Poisson, < 1 burstier).
    Gamma,
}

/// How the rate of a ramp grows from its start rate to its end rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RampKind {
    Linear,
    Exponential,
}

/// Sweeps whose points gpubench chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SweepKind {
    /// A synchronous run (one at a time), a throughput run (--rate inf), then
    /// --sweep-points open-loop rates evenly between the two rates they measured.
    Auto,
}

/// The stages of `--stages`, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages(pub Vec<Stage>);

/// One stage of `--stages`: a rate held for a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub rate: f64,
}

/// Options of `gpubench load-test`.
#[derive(Debug, Clone, Args)]
pub struct LoadTestArgs {
    /// Endpoint to load, e.g. http://127.0.0.1:8000/generate. Repeat for several servers:
    /// requests are spread round-robin, like a Kubernetes Service.
    #[arg(long = "url", required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// API the endpoint speaks.
    #[arg(long, value_enum, default_value_t = ApiChoice::Auto)]
    pub api: ApiChoice,
    /// Model name for OpenAI APIs (default: the first id from GET /v1/models).
    #[arg(long)]
    pub model: Option<String>,
    /// Closed loop: N workers, each sends its next request when the last ended. A list (1,4,16) runs a sweep.
    #[arg(long, short = 'c', value_delimiter = ',', value_name = "N[,N...]", conflicts_with = "rate")]
    pub concurrency: Vec<u32>,
    /// Open loop: requests per second on a precomputed schedule. A list runs a sweep. `inf`
    /// sends as fast as --max-concurrency allows (a throughput run).
    #[arg(long, short = 'r', value_delimiter = ',', value_name = "R[,R...]", value_parser = parse_rate)]
    pub rate: Vec<f64>,
    /// Arrival process of the open loop.
    #[arg(long, value_enum, default_value_t = Arrival::Poisson)]
    pub arrival: Arrival,
    /// Shape of the gamma arrival process (vLLM's burstiness): 1 is Poisson, below 1 burstier.
    #[arg(long, value_name = "B", value_parser = parse_burstiness)]
    pub burstiness: Option<f64>,
    /// Open loop whose rate grows over the point (its --duration, else its --requests).
    #[arg(long, value_enum, requires_all = ["ramp_up_start_rate", "ramp_up_end_rate"], conflicts_with_all = ["rate", "concurrency", "stages", "trace"])]
    pub ramp_up: Option<RampKind>,
    /// Rate at the start of --ramp-up, requests per second.
    #[arg(long, value_name = "R0", requires = "ramp_up")]
    pub ramp_up_start_rate: Option<f64>,
    /// Rate at the end of --ramp-up, requests per second.
    #[arg(long, value_name = "R1", requires = "ramp_up")]
    pub ramp_up_end_rate: Option<f64>,
    /// Open loop in stages of DURATION@RATE, e.g. 30s@2,60s@8,30s@2; the point ends with the last stage.
    #[arg(long, value_name = "D@R[,D@R...]", value_parser = parse_stages, conflicts_with_all = ["rate", "concurrency", "trace"])]
    pub stages: Option<Stages>,
    /// A sweep whose points gpubench picks (see --sweep-points).
    #[arg(long, value_enum, conflicts_with_all = ["rate", "concurrency", "stages", "ramp_up", "trace"])]
    pub sweep: Option<SweepKind>,
    /// Open-loop rates of --sweep auto between the synchronous and the throughput rate.
    #[arg(long, value_name = "K", default_value_t = 8, requires = "sweep")]
    pub sweep_points: u32,
    /// End --sweep auto once two points past the knee have shown that latency grows faster than throughput.
    #[arg(long, requires = "sweep")]
    pub stop_on_saturation: bool,
    /// Open loop: at most N requests in flight; later ones wait, and the wait stays in their latency.
    /// Without it the open loop is capped at 4096 (the report notes when the cap was reached).
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Measured requests per point (warm-up not counted). Default 100 when no --duration is given.
    #[arg(long, short = 'n', value_name = "M")]
    pub requests: Option<u64>,
    /// Measurement time per point (warm-up not counted), e.g. 60s.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before measuring: a time (10s) or a number of requests (20). Excluded from every number.
    #[arg(long, value_parser = parse_warmup)]
    pub warmup: Option<Warmup>,
    /// The prompt of every request.
    #[arg(long, group = "prompts")]
    pub prompt: Option<String>,
    /// JSON Lines file of prompts: objects with "prompt", "text", "messages" (chat) or
    /// "conversations" (ShareGPT), optionally "max_tokens". Used in order, cycling.
    #[arg(long, group = "prompts", value_name = "FILE.jsonl")]
    pub dataset: Option<PathBuf>,
    /// Synthetic prompts of about MEAN tokens (normal with STDDEV), from a seeded generator;
    /// exactly MEAN tokens by --tokenizer when one is known.
    #[arg(long, group = "prompts", value_name = "MEAN[:STDDEV]", value_parser = parse_input_tokens)]
    pub input_tokens: Option<InputTokens>,
    /// Replay a trace (JSON Lines: "timestamp" in ms from its start, and "prompt"/"messages" or
    /// "input_length"/"output_length", optionally Mooncake "hash_ids"): each request at its offset.
    #[arg(long, group = "prompts", value_name = "FILE.jsonl", conflicts_with_all = ["rate", "concurrency"])]
    pub trace: Option<PathBuf>,
    /// Replay speed of --trace: 2 sends twice as fast.
    #[arg(long, default_value_t = 1.0, value_name = "F", requires = "trace")]
    pub trace_speed: f64,
    /// Tokens per block of the trace's "hash_ids".
    #[arg(long, default_value_t = 512, value_name = "N", requires = "trace")]
    pub trace_block_tokens: u32,
    /// Multi-turn sessions from --dataset (ShareGPT "conversations" or "messages" with several
    /// user turns): N sessions at once (closed loop), or --rate session starts per second.
    /// Turn k carries the whole history, the model's real answers included. --requests and a
    /// counted --warmup then count sessions.
    #[arg(long, value_name = "N", requires = "dataset")]
    pub sessions: Option<u32>,
    /// Pause between a turn's answer and the session's next turn.
    #[arg(long, value_parser = parse_duration, value_name = "D")]
    pub think_time: Option<Duration>,
    /// Every prompt starts with one of --prefix-groups shared system prompts of P tokens.
    #[arg(long, value_name = "P")]
    pub shared_prefix_tokens: Option<u32>,
    /// Number of distinct shared prefixes (request i uses prefix i mod G).
    #[arg(long, value_name = "G", default_value_t = 1, requires = "shared_prefix_tokens")]
    pub prefix_groups: u32,
    /// Maximum tokens to generate per request.
    #[arg(long, default_value_t = 150)]
    pub max_tokens: u32,
    /// A seeded spread of max_tokens per request (normal, at least 1), instead of --max-tokens.
    #[arg(long, value_name = "MEAN[:STDDEV]", value_parser = parse_input_tokens)]
    pub output_tokens: Option<InputTokens>,
    /// Generate exactly max_tokens: sends ignore_eos (vLLM, llama.cpp, gpubench serve) and min_tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Sampling temperature sent with every request.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold sent with every request.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// A JSON object merged into every request body, e.g. '{"seed": 1}'.
    #[arg(long, value_name = "JSON", value_parser = parse_extra_body)]
    pub extra_body: Option<serde_json::Map<String, serde_json::Value>>,
    /// Tokenizer for exact prompt lengths and for counting output without usage: a
    /// tokenizer.json, a GGUF file, or a repository in the Hugging Face cache.
    #[arg(long, value_name = "PATH|REPO")]
    pub tokenizer: Option<String>,
    /// Stream the answer (OpenAI APIs: SSE with usage in the last chunk); needed for TTFT, ITL and TPOT.
    #[arg(long)]
    pub stream: bool,
    /// Seed of the arrival process and of synthetic prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Per-request timeout; also how long in-flight requests may drain at the end.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Service-level objectives for goodput, e.g. ttft=500ms,tpot=50ms,e2e=5s.
    #[arg(long, value_parser = parse_slo)]
    pub slo: Option<Slo>,
    /// Name of the run in reports and comparisons (a sweep appends the point, e.g. NAME-c8).
    #[arg(long)]
    pub label: Option<String>,
    /// Extra HTTP header, 'Name: value' (repeatable), e.g. 'Authorization: Bearer KEY'.
    #[arg(long = "header", short = 'H', value_name = "'K: V'", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Write the report JSON here (a sweep writes {"schema_version":1,"runs":[...]}).
    #[arg(long, short = 'o', value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Write one CSV row per request here.
    #[arg(long, value_name = "FILE.csv")]
    pub csv: Option<PathBuf>,
    /// Print the report JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No live view while the load runs (it is drawn only when stdout and stderr are terminals).
    #[arg(long)]
    pub no_live: bool,
    /// Send one shard of the load, I/N (0 <= I < N): requests I, I+N, ... of the open-loop
    /// schedule, or concurrency/N of the closed loop's workers. N processes with the same
    /// flags send exactly what one would; merge their reports with `gpubench report merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The number of shards, this shard's index taken from JOB_COMPLETION_INDEX (set in each
    /// pod of a Kubernetes Indexed Job).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Start the run at this time, RFC 3339 (2026-12-02T10:00:00Z) or a delay (+30s), so
    /// that all shards begin together.
    #[arg(long, value_name = "TIME", value_parser = super::shard::parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,
    /// The serving engine's own Prometheus metrics, scraped while each point runs: `auto`
    /// (`/metrics` on each --url's host and port; one warning where there is none), one or
    /// more URLs (comma-separated), or `off`.
    #[arg(long, default_value = "auto", value_name = "auto|URL|off", value_parser = parse_server_metrics)]
    pub server_metrics: ServerMetricsSource,
    /// Time between scrapes of --server-metrics, e.g. 1s or 500ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "D")]
    pub server_metrics_interval: Duration,
}

/// Where the engine's own metrics are read (`--server-metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMetricsSource {
    /// `/metrics` on the host and port of each --url.
    Auto,
    Off,
    Urls(Vec<String>),
}

pub fn parse_server_metrics(text: &str) -> Result<ServerMetricsSource, String> {
    match text.trim() {
        "auto" => Ok(ServerMetricsSource::Auto),
        "off" | "none" => Ok(ServerMetricsSource::Off),
        t => {
            let urls: Vec<String> = t.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
            for u in &urls {
                let ok = reqwest::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some());
                if !ok {
                    return Err(format!("'{u}' is not an http:// URL: use auto, off, or e.g. http://127.0.0.1:8000/metrics"));
                }
            }
            if urls.is_empty() {
                return Err("empty value: use auto, off, or e.g. http://127.0.0.1:8000/metrics".into());
            }
            Ok(ServerMetricsSource::Urls(urls))
        }
    }
}

/// How the run warms up before measuring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Warmup {
    Requests(u64),
    Time(Duration),
}

/// Synthetic prompt lengths in tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputTokens {
    pub mean: u32,
    pub stddev: u32,
}

/// SLO thresholds in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

impl Slo {
    pub fn as_map(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for (k, v) in [("ttft", self.ttft_ms), ("tpot", self.tpot_ms), ("e2e", self.e2e_ms)] {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        }
        m
    }
}

pub fn parse_warmup(text: &str) -> Result<Warmup, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Warmup::Requests(n));
    }
    parse_duration(t)
        .map(Warmup::Time)
        .map_err(|_| format!("'{t}' is neither a number of requests (20) nor a time (10s)"))
}

pub fn parse_input_tokens(text: &str) -> Result<InputTokens, String> {
    let (mean, stddev) = match text.split_once(':') {
        Some((m, s)) => (m, s),
        None => (text, "0"),
    };
    let bad = || format!("'{text}' is not MEAN[:STDDEV] in tokens, e.g. 128 or 128:32");
    let mean: u32 = mean.trim().parse().map_err(|_| bad())?;
    let stddev: u32 = stddev.trim().parse().map_err(|_| bad())?;
    if mean == 0 {
        return Err("--input-tokens MEAN must be at least 1".into());
    }
    Ok(InputTokens { mean, stddev })
}

/// A rate in requests per second, or `inf`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("inf") {
        return Ok(f64::INFINITY);
    }
    match t.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("'{t}' is not a positive number of requests per second (or inf)")),
    }
}

pub fn parse_burstiness(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(b) if b.is_finite() && b > 0.0 => Ok(b),
        _ => Err(format!("burstiness '{text}' must be a positive number (1 is Poisson, below 1 burstier)")),
    }
}

/// `30s@2,60s@8`: stages of a time at a rate.
pub fn parse_stages(text: &str) -> Result<Stages, String> {
    let mut stages = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (d, r) = part.split_once('@').ok_or_else(|| format!("stage '{part}' is not DURATION@RATE, e.g. 30s@2"))?;
        let duration = parse_duration(d).map_err(|e| format!("stage '{part}': {e}"))?;
        if duration.is_zero() {
            return Err(format!("stage '{part}' lasts no time"));
        }
        let rate = r.trim().parse::<f64>().ok().filter(|r| r.is_finite() && *r > 0.0).ok_or_else(|| {
            format!("stage '{part}': the rate '{}' must be a positive number of requests per second", r.trim())
        })?;
        stages.push(Stage { duration, rate });
    }
    if stages.is_empty() {
        return Err("--stages needs at least one DURATION@RATE, e.g. 30s@2,60s@8".into());
    }
    Ok(Stages(stages))
}

pub fn parse_extra_body(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("--extra-body must be a JSON object, e.g. '{\"seed\": 1}'".into()),
        Err(e) => Err(format!("--extra-body is not JSON ({e}): give an object, e.g. '{{\"seed\": 1}}'")),
    }
}

pub fn parse_slo(text: &str) -> Result<Slo, String> {
    let mut slo = Slo::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("SLO '{part}' is not KEY=DURATION, e.g. ttft=500ms"))?;
        let d = parse_duration(value).map_err(|e| format!("SLO {key}: {e}"))?;
        let ms = d.as_secs_f64() * 1000.0;
        match key.trim() {
            "ttft" => slo.ttft_ms = Some(ms),
            "tpot" => slo.tpot_ms = Some(ms),
            "e2e" => slo.e2e_ms = Some(ms),
            other => return Err(format!("unknown SLO metric '{other}': use ttft, tpot or e2e")),
        }
    }
    if slo == Slo::default() {
        return Err("empty SLO: give e.g. ttft=500ms,tpot=50ms,e2e=5s".into());
    }
    Ok(slo)
}

pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once(':')
        .ok_or_else(|| format!("header '{text}' is not 'Name: value'"))?;
    let k = k.trim();
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b)) {
        return Err(format!("'{k}' is not a valid header name"));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
