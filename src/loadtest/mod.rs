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
mod client;
mod driver;
mod http1;
mod options;
mod recorder;
mod requests_csv;
mod summary;
pub mod workload;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

pub use api::ApiKind;
pub use driver::Point;
pub use options::*;
pub use summary::{render, render_sweep};

use crate::report::{self, EnvironmentStamp, RunReport, RunReportFile};
use crate::ExitStatus;
use client::Target;
use driver::{Limits, Live};
use requests_csv::RequestLog;
use workload::PromptItem;

pub const AFTER_HELP: &str = "\
Examples:
  gpubench load-test --url http://127.0.0.1:8000/generate --concurrency 5 --requests 50 --out p1.json
  gpubench load-test --url http://127.0.0.1:8000/v1/chat/completions --stream --rate 2,4,8 --duration 60s --warmup 10s
  gpubench load-test --url http://10.0.0.5:8000/v1/completions --url http://10.0.0.6:8000/v1/completions -c 16 -n 500

A sweep (a list of N or R) writes one file: {\"schema_version\": 1, \"runs\": [one report per point]}.
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

#[derive(Parser)]
struct FlagsOnly {
    #[command(flatten)]
    args: LoadTestArgs,
}

impl LoadTestArgs {
    /// Builds the options from command-line flags (without the `load-test` word), for
    /// programs that drive load tests, e.g. `["--url", url, "--concurrency", "4"]`.
    pub fn from_flags<I, S>(flags: I) -> Result<Self, LoadTestError>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("load-test")).chain(flags.into_iter().map(Into::into));
        FlagsOnly::try_parse_from(argv)
            .map(|f| f.args)
            .map_err(|e| LoadTestError::Usage(e.to_string().trim().to_string()))
    }
}

/// A validated load test, ready to run: request bodies built, server checked.
pub struct Plan {
    target: Arc<Target>,
    target_desc: report::Target,
    points: Vec<Point>,
    limits: Limits,
    workload: report::Workload,
    label: Option<String>,
    slo: Option<Slo>,
    environment: EnvironmentStamp,
    csv: Option<std::path::PathBuf>,
}

impl Plan {
    pub fn points(&self) -> &[Point] {
        &self.points
    }
}

/// Validates the flags, loads prompts, builds every request body and checks that each
/// server accepts connections.
pub async fn prepare(args: &LoadTestArgs) -> Result<Plan, LoadTestError> {
    let mut urls = Vec::new();
    for raw in &args.urls {
        let url = reqwest::Url::parse(raw).map_err(|e| {
            LoadTestError::Usage(format!("--url '{raw}' is not a URL ({e}): use e.g. http://127.0.0.1:8000/generate"))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(LoadTestError::Usage(format!("--url '{raw}' must be an http:// or https:// URL with a host")));
        }
        urls.push(url);
    }
    let api = resolve_api(args.api, &urls)?;
    if args.stream && api == ApiKind::Generate {
        return Err(LoadTestError::Usage(
            "--stream needs an OpenAI API: the generate API answers in one piece (use a /v1/completions or /v1/chat/completions URL)".into(),
        ));
    }
    if args.max_tokens == 0 {
        return Err(LoadTestError::Usage("--max-tokens must be at least 1".into()));
    }
    let points = points(args)?;
    if args.requests == Some(0) {
        return Err(LoadTestError::Usage("--requests must be at least 1".into()));
    }
    if args.duration.is_some_and(|d| d.is_zero()) {
        return Err(LoadTestError::Usage("--duration must be longer than 0".into()));
    }
    if args.timeout.is_zero() {
        return Err(LoadTestError::Usage("--timeout must be longer than 0".into()));
    }
    for url in &urls {
        check_reachable(url).await?;
    }
    let mut environment = EnvironmentStamp::collect();
    let server = describe_server(&urls[0]).await;
    let model = match (&args.model, api.is_openai()) {
        (Some(m), _) => Some(m.clone()),
        (None, true) => Some(first_model(&urls[0], server.as_ref())?),
        (None, false) => None,
    };
    environment.server = server;

    let requests = match (args.requests, args.duration) {
        (None, None) => Some(DEFAULT_REQUESTS),
        (r, _) => r,
    };
    let (items, prompt_source) = prompts(args, requests)?;
    let bodies = items
        .iter()
        .map(|item| api::build_body(api, model.as_deref(), item, args.max_tokens, args.stream))
        .collect();
    let max_in_flight = points
        .iter()
        .map(|p| match p {
            Point::Closed { concurrency } => *concurrency as usize,
            Point::Open { max_concurrency: Some(m), .. } => *m as usize,
            Point::Open { .. } => 1024,
        })
        .max()
        .unwrap_or(1);
    let target = Target::new(urls.clone(), api, args.stream, &args.headers, bodies, args.timeout, max_in_flight).await?;
    let limits = Limits {
        requests,
        duration: args.duration,
        warmup: args.warmup,
        seed: args.seed,
        slo: args.slo.clone(),
        drain: args.timeout,
    };
    let workload = report::Workload {
        mode: String::new(),
        concurrency: None,
        rate: None,
        arrival: None,
        max_concurrency: None,
        requests,
        duration_s: args.duration.map(|d| d.as_secs_f64()),
        warmup_requests: match args.warmup {
            Some(Warmup::Requests(n)) => Some(n),
            _ => None,
        },
        warmup_s: match args.warmup {
            Some(Warmup::Time(d)) => Some(d.as_secs_f64()),
            _ => None,
        },
        max_tokens: args.max_tokens,
        stream: args.stream,
        prompt_source,
        distinct_prompts: items.len() as u64,
        seed: args.seed,
        timeout_s: args.timeout.as_secs_f64(),
        slo_ms: args.slo.as_ref().map(Slo::as_map).unwrap_or_default(),
    };
    Ok(Plan {
        target,
        target_desc: report::Target { urls: args.urls.clone(), api: api.name().into(), model },
        points,
        limits,
        workload,
        label: args.label.clone(),
        slo: args.slo.clone(),
        environment,
        csv: args.csv.clone(),
    })
}

fn resolve_api(choice: ApiChoice, urls: &[reqwest::Url]) -> Result<ApiKind, LoadTestError> {
    let explicit = match choice {
        ApiChoice::Generate => Some(ApiKind::Generate),
        ApiChoice::OpenaiCompletions => Some(ApiKind::OpenaiCompletions),
        ApiChoice::OpenaiChat => Some(ApiKind::OpenaiChat),
        ApiChoice::Auto => None,
    };
    if let Some(api) = explicit {
        return Ok(api);
    }
    let mut found = None;
    for url in urls {
        let api = ApiKind::from_path(url.path()).ok_or_else(|| {
            LoadTestError::Usage(format!(
                "cannot tell the API from the path of {url}: end the URL with /generate, /v1/completions or /v1/chat/completions, or pass --api"
            ))
        })?;
        if found.is_some_and(|f| f != api) {
            return Err(LoadTestError::Usage("all --url values must speak the same API".into()));
        }
        found = Some(api);
    }
    found.ok_or_else(|| LoadTestError::Usage("give at least one --url".into()))
}

fn points(args: &LoadTestArgs) -> Result<Vec<Point>, LoadTestError> {
    if !args.rate.is_empty() {
        let mut points = Vec::new();
        for &rate in &args.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(LoadTestError::Usage(format!("--rate {rate} must be a positive number of requests per second")));
            }
            if args.max_concurrency == Some(0) {
                return Err(LoadTestError::Usage("--max-concurrency must be at least 1".into()));
            }
            points.push(Point::Open { rate, arrival: args.arrival, max_concurrency: args.max_concurrency });
        }
        return Ok(points);
    }
    let levels = if args.concurrency.is_empty() { vec![1] } else { args.concurrency.clone() };
    levels
        .into_iter()
        .map(|c| {
            if c == 0 {
                Err(LoadTestError::Usage("--concurrency must be at least 1".into()))
            } else {
                Ok(Point::Closed { concurrency: c })
            }
        })
        .collect()
}

fn prompts(args: &LoadTestArgs, requests: Option<u64>) -> Result<(Vec<PromptItem>, String), LoadTestError> {
    if let Some(path) = &args.dataset {
        return Ok((workload::load_dataset(path)?, format!("dataset:{}", path.display())));
    }
    if let Some(tokens) = args.input_tokens {
        let count = requests.unwrap_or(1000).clamp(1, 1000) as usize;
        return Ok((
            workload::synthetic(tokens, count, args.seed),
            format!("synthetic:{}:{}", tokens.mean, tokens.stddev),
        ));
    }
    let text = args.prompt.clone().unwrap_or_else(|| workload::DEFAULT_PROMPT.to_string());
    if text.trim().is_empty() {
        return Err(LoadTestError::Usage("--prompt is empty".into()));
    }
    Ok((vec![PromptItem { prompt: workload::Prompt::Text(text), max_tokens: None }], "prompt".into()))
}

async fn check_reachable(url: &reqwest::Url) -> Result<(), LoadTestError> {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(LoadTestError::Unreachable(format!(
            "cannot connect to {host}:{port} (--url {url}): {e}. Is the server running and listening there?"
        ))),
        Err(_) => Err(LoadTestError::Unreachable(format!(
            "no answer from {host}:{port} (--url {url}) within 5 s: check the address and any firewall"
        ))),
    }
}

/// The server's base URL: everything before `/v1/` or the last path segment.
fn base_url(url: &reqwest::Url) -> reqwest::Url {
    let mut base = url.clone();
    let path = url.path();
    let cut = path.find("/v1/").unwrap_or_else(|| path.rfind('/').unwrap_or(0));
    base.set_path(&path[..cut]);
    base.set_query(None);
    base
}

/// Asks the server for `/v1/models` (best effort): the report's self-description.
async fn describe_server(url: &reqwest::Url) -> Option<serde_json::Value> {
    let mut models = base_url(url);
    let path = format!("{}/v1/models", models.path().trim_end_matches('/'));
    models.set_path(&path);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    let resp = client.get(models).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json::<serde_json::Value>().await.ok()
}

fn first_model(url: &reqwest::Url, models: Option<&serde_json::Value>) -> Result<String, LoadTestError> {
    models
        .and_then(|m| m.get("data"))
        .and_then(|d| d.as_array())
        .and_then(|d| d.first())
        .and_then(|m| m.get("id"))
        .and_then(|id| id.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            LoadTestError::Failed(format!(
                "could not learn the model name from {}/v1/models: pass --model NAME",
                base_url(url).as_str().trim_end_matches('/')
            ))
        })
}

fn point_label(base: Option<&str>, point: &Point, sweep: bool) -> String {
    let own = match point {
        Point::Closed { concurrency } => format!("c{concurrency}"),
        Point::Open { rate, .. } => format!("r{rate}"),
    };
    match (base, sweep) {
        (Some(b), false) => b.to_string(),
        (Some(b), true) => format!("{b}-{own}"),
        (None, _) => own,
    }
}

/// Runs every point of the plan in order. Stops early (with partial reports) when
/// `cancel` fires. `progress` draws a bar per point on stderr when it is a terminal.
pub async fn run(plan: &Plan, cancel: &CancellationToken, progress: bool) -> Result<Vec<RunReport>, LoadTestError> {
    let log = match &plan.csv {
        Some(path) => Some(Arc::new(RequestLog::create(path)?)),
        None => None,
    };
    let mut reports = Vec::new();
    let sweep = plan.points.len() > 1;
    for point in &plan.points {
        if cancel.is_cancelled() {
            break;
        }
        let label = point_label(plan.label.as_deref(), point, sweep);
        let live = Arc::new(Live::default());
        let bar = progress_bar(progress, &plan.limits, &label);
        let ticker = bar.clone().map(|bar| {
            let live = live.clone();
            tokio::spawn(async move {
                loop {
                    let done = live.done.load(Ordering::Relaxed);
                    let failed = live.failed.load(Ordering::Relaxed);
                    bar.set_position(done);
                    bar.set_message(format!("{failed} failed"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        });
        let point_cancel = cancel.child_token();
        let outcome = driver::drive(*point, plan.target.clone(), plan.limits.clone(), live, log.clone(), point_cancel).await;
        if let Some(t) = ticker {
            t.abort();
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let mut workload = plan.workload.clone();
        match *point {
            Point::Closed { concurrency } => {
                workload.mode = "closed".into();
                workload.concurrency = Some(concurrency);
            }
            Point::Open { rate, arrival, max_concurrency } => {
                workload.mode = "open".into();
                workload.rate = Some(rate);
                workload.arrival = Some(match arrival {
                    Arrival::Poisson => "poisson".into(),
                    Arrival::Constant => "constant".into(),
                });
                workload.max_concurrency = max_concurrency;
            }
        }
        let ctx = summary::RunContext {
            label,
            target: plan.target_desc.clone(),
            workload,
            environment: plan.environment.clone(),
            slo: plan.slo.clone(),
            point: *point,
            interrupted: cancel.is_cancelled(),
        };
        reports.push(summary::build_report(ctx, &outcome));
    }
    if let Some(log) = log {
        log.finish()?;
    }
    Ok(reports)
}

fn progress_bar(enabled: bool, limits: &Limits, label: &str) -> Option<ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = match limits.requests {
        Some(n) if limits.duration.is_none() => {
            let warm = match limits.warmup {
                Some(Warmup::Requests(w)) => w,
                _ => 0,
            };
            ProgressBar::with_draw_target(Some(n + warm), ProgressDrawTarget::stderr())
        }
        _ => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let style = ProgressStyle::with_template("{prefix} {spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} requests, {msg}")
        .or_else(|_| ProgressStyle::with_template("{prefix} {pos} requests"))
        .ok()?;
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

/// `gpubench load-test`: prepare, run with a progress bar, print and save the reports.
pub async fn run_cli(args: LoadTestArgs, quiet: bool) -> Result<ExitStatus, LoadTestError> {
    let plan = prepare(&args).await?;
    let cancel = CancellationToken::new();
    let ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping and writing the partial report");
                cancel.cancel();
            }
        })
    };
    let reports = run(&plan, &cancel, !quiet).await?;
    ctrl_c.abort();
    let file = RunReportFile::from_runs(reports);
    if let Some(out) = &args.out {
        file.save(out)?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&file).map_err(|e| LoadTestError::Failed(e.to_string()))?;
        println!("{text}");
    } else {
        let runs = file.runs();
        if runs.len() > 1 {
            print!("{}", render_sweep(runs));
        } else if let Some(r) = runs.first() {
            print!("{}", render(r));
        }
        if let Some(out) = &args.out {
            println!("report: {}", out.display());
        }
    }
    let runs = file.runs();
    if runs.iter().any(|r| r.interrupted) {
        return Ok(ExitStatus::Failure);
    }
    let ok: u64 = runs.iter().map(|r| r.counts.ok).sum();
    let failed: u64 = runs.iter().map(|r| r.counts.errors.total() + r.counts.unfinished).sum();
    if ok == 0 && failed > 0 {
        let sample = runs.iter().flat_map(|r| r.counts.error_samples.first()).next().cloned().unwrap_or_default();
        return Err(LoadTestError::Failed(format!("every request failed ({failed}); first error: {sample}")));
    }
    Ok(ExitStatus::Success)
}
