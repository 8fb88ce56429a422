//! The `load-test` command line and the small parsers behind its flags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::util::parse_duration;

/// Which API the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiChoice {
    /// From the URL path: /generate, /v1/completions or /v1/chat/completions.
    Auto,
    /// The seed API: POST {"prompt", "max_tokens"} answered by JSON with the text.
    Generate,
    /// OpenAI /v1/completions.
    OpenaiCompletions,
    /// OpenAI /v1/chat/completions.
    OpenaiChat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arrival {
    /// Exponential gaps from a seeded generator (a Poisson process).
    Poisson,
    /// Evenly spaced: request i at t0 + i/rate.
    Constant,
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
    /// Open loop: requests per second on a precomputed schedule. A list runs a sweep.
    #[arg(long, short = 'r', value_delimiter = ',', value_name = "R[,R...]")]
    pub rate: Vec<f64>,
    /// Arrival process of the open loop.
    #[arg(long, value_enum, default_value_t = Arrival::Poisson, requires = "rate")]
    pub arrival: Arrival,
    /// Open loop: at most N requests in flight; later ones wait, and the wait stays in their latency.
    #[arg(long, value_name = "N", requires = "rate")]
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
    /// Synthetic prompts of about MEAN tokens (normal with STDDEV), from a seeded generator.
    #[arg(long, group = "prompts", value_name = "MEAN[:STDDEV]", value_parser = parse_input_tokens)]
    pub input_tokens: Option<InputTokens>,
    /// Maximum tokens to generate per request.
    #[arg(long, default_value_t = 150)]
    pub max_tokens: u32,
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
mod tests {
    use super::*;

    #[test]
    fn slo_parses_and_rejects_nonsense() {
        let s = parse_slo("ttft=500ms, tpot=50ms,e2e=5s").unwrap();
        assert_eq!(s.ttft_ms, Some(500.0));
        assert_eq!(s.tpot_ms, Some(50.0));
        assert_eq!(s.e2e_ms, Some(5000.0));
        assert!(parse_slo("ttft").unwrap_err().contains("KEY=DURATION"));
        assert!(parse_slo("latency=5s").unwrap_err().contains("unknown SLO metric 'latency'"));
        assert!(parse_slo("ttft=fast").unwrap_err().contains("SLO ttft"));
        assert!(parse_slo(",").unwrap_err().contains("empty SLO"));
    }

    #[test]
    fn warmup_is_a_count_or_a_time() {
        assert_eq!(parse_warmup("20").unwrap(), Warmup::Requests(20));
        assert_eq!(parse_warmup("10s").unwrap(), Warmup::Time(Duration::from_secs(10)));
        assert!(parse_warmup("soon").is_err());
    }

    #[test]
    fn input_tokens_and_headers() {
        assert_eq!(parse_input_tokens("128:32").unwrap(), InputTokens { mean: 128, stddev: 32 });
        assert_eq!(parse_input_tokens("64").unwrap(), InputTokens { mean: 64, stddev: 0 });
        assert!(parse_input_tokens("0").is_err());
        assert!(parse_input_tokens("x:1").is_err());
        assert_eq!(parse_header("Authorization: Bearer x").unwrap(), ("Authorization".into(), "Bearer x".into()));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: v").is_err());
    }
}
