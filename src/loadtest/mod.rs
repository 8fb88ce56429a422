//! `gpubench load-test`: drives concurrent load at an LLM endpoint and measures it.
//!
//! Closed loop (`--concurrency N`): N workers, each sends its next request when its last
//! one ended. Open loop (`--rate R`): send times are precomputed (constant or seeded
//! Poisson) and latency is measured from the intended send time, so a stalled server shows
//! up in the percentiles instead of silently lowering the load (coordinated omission).
//!
//! The library entry points are [`prepare`] (validate flags, build request bodies, check
//! the server) and [`run`] (one report per point); [`run_cli`] adds the console and files.

mod api;
mod cli;
mod client;
mod discovery;
mod driver;
mod engine_metrics;
mod http1;
mod live;
mod native;
mod options;
mod plan;
mod prompts;
mod recorder;
mod render;
mod requests_csv;
mod run;
mod schedule;
mod server_metrics;
mod sessions;
pub mod shard;
mod summary;
mod tokenizer;
mod sweep;
mod trace;
pub mod workload;


pub use api::ApiKind;
pub use cli::run_cli;
pub use driver::Point;
pub use options::*;
pub use run::{run, run_all, Display};
pub use plan::{prepare, Plan, DEFAULT_THROUGHPUT_CONCURRENCY};
pub use schedule::{Gaps, Shape};
pub use render::{render, render_sweep};

use crate::report;
use crate::ExitStatus;

pub const AFTER_HELP: &str = "\
Examples:
  gpubench load-test --url http://127.0.0.1:8000/generate --concurrency 5 --requests 50 --out p1.json
  gpubench load-test --url http://127.0.0.1:8000/v1/chat/completions --stream --rate 2,4,8 --duration 60s --warmup 10s
  gpubench load-test --url http://10.0.0.5:8000/v1/completions --url http://10.0.0.6:8000/v1/completions -c 16 -n 500

A sweep (a list of N or R, or --sweep auto) writes one file: {\"schema_version\": 2, \"runs\": [one report per point]}.
Without --requests or --duration a point sends 100 requests. Exit codes: 0 ok, 1 failure (e.g. every
request failed, or Ctrl-C), 2 usage error.";

/// How many requests a point sends when neither --requests nor --duration is given.
pub const DEFAULT_REQUESTS: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Report(#[from] report::ReportError),
}

impl crate::Failure for LoadTestError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            LoadTestError::Usage(_) | LoadTestError::Input(_) => ExitStatus::Usage,
            _ => ExitStatus::Failure,
        }
    }
}

impl LoadTestArgs {
    /// The defaults of every flag, loading `urls`: a typed request that programs driving load
    /// tests (bench) then adjust field by field.
    pub fn for_urls(urls: &[String]) -> Result<Self, LoadTestError> {
        let flags: Vec<String> = urls.iter().flat_map(|u| ["--url".to_string(), u.clone()]).collect();
        Self::from_flags(flags)
    }

    /// Builds the options from command-line flags (without the `load-test` word), for
    /// programs that drive load tests, e.g. `["--url", url, "--concurrency", "4"]`.
    pub fn from_flags<I, S>(flags: I) -> Result<Self, LoadTestError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let flags: Vec<String> = flags.into_iter().map(Into::into).collect();
        crate::support::cli::parse_flags("load-test", &flags).map_err(|e| LoadTestError::Usage(e.to_string().trim().to_string()))
    }
}
