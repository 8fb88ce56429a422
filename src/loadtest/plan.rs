//! From flags to a validated plan: the points to run, every request body, the limits and
//! what the report will say about the workload.

use std::sync::Arc;

use super::api::{build_body, ApiKind, BodyOptions};
use super::client::Target;
use super::discovery::{check_reachable, describe_server, first_model, is_tgi, resolve_api};
use super::driver::{Limits, Point};
use super::options::{Arrival, LoadTestArgs, RampKind, Slo, Warmup};
use super::requests_csv::RequestLog;
use super::schedule::{Gaps, RampSpan, Shape};
use super::server_metrics::{probe, ServerMetricsPlan};
use super::sessions::SessionSet;
use super::shard::{Shard, JOB_INDEX_ENV};
use super::prompts::prompt_items;
use super::tokenizer::PromptTokenizer;
use super::trace;
use super::workload;
use super::{LoadTestError, DEFAULT_REQUESTS};
use crate::report::{self, EnvironmentStamp, RampSpec, StageSpec};

/// In-flight requests of a throughput run (`--rate inf`) without `--max-concurrency`.
pub const DEFAULT_THROUGHPUT_CONCURRENCY: u32 = 512;

/// The points of a run: given by the flags, or chosen as the sweep goes (`--sweep auto`).
#[derive(Debug, Clone)]
pub enum Points {
    Fixed(Vec<Point>),
    Auto { rates: u32, stop_on_saturation: bool, gaps: Gaps, max_concurrency: Option<u32> },
}

/// A validated load test, ready to run: request bodies built, server checked.
pub struct Plan {
    pub(super) target: Arc<Target>,
    pub(super) target_desc: report::Target,
    pub(super) points: Points,
    pub(super) limits: Limits,
    pub(super) workload: report::Workload,
    pub(super) label: Option<String>,
    pub(super) slo: Option<Slo>,
    pub(super) environment: EnvironmentStamp,
    pub(super) csv: Option<std::path::PathBuf>,
    pub(super) sessions: Option<Arc<SessionSet>>,
    /// What the report says of this shard (absent for a whole run).
    pub(super) shard: Option<report::ShardInfo>,
    /// The replicas whose own metrics are scraped while each point runs.
    pub(super) server_metrics: ServerMetricsPlan,
}

impl Plan {
    /// The points known before the run (the first two of an automatic sweep).
    pub fn points(&self) -> Vec<Point> {
        match &self.points {
            Points::Fixed(p) => p.clone(),
            Points::Auto { max_concurrency, .. } => vec![
                Point::Closed { concurrency: 1 },
                Point::Throughput { concurrency: max_concurrency.unwrap_or(DEFAULT_THROUGHPUT_CONCURRENCY) },
            ],
        }
    }

    pub(super) fn open_log(&self) -> Result<Option<Arc<RequestLog>>, LoadTestError> {
        match &self.csv {
            Some(path) => Ok(Some(Arc::new(RequestLog::create(path)?))),
            None => Ok(None),
        }
    }
}

fn usage(msg: impl Into<String>) -> LoadTestError {
    LoadTestError::Usage(msg.into())
}

fn parse_urls(raw: &[String]) -> Result<Vec<reqwest::Url>, LoadTestError> {
    let mut urls = Vec::new();
    for raw in raw {
        let url = reqwest::Url::parse(raw)
            .map_err(|e| usage(format!("--url '{raw}' is not a URL ({e}): use e.g. http://127.0.0.1:8000/generate")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(usage(format!("--url '{raw}' must be an http:// or https:// URL with a host")));
        }
        urls.push(url);
    }
    Ok(urls)
}

fn check_flags(args: &LoadTestArgs, api: ApiKind) -> Result<(), LoadTestError> {
    if args.stream && !api.streams() {
        return Err(usage(
            "--stream needs an OpenAI API, or another that streams: this one answers in one piece (use a /v1/completions, /v1/chat/completions, /api/generate, /api/chat or /generate_stream URL)",
        ));
    }
    let positive = [
        (args.max_tokens == 0, "--max-tokens must be at least 1"),
        (args.requests == Some(0), "--requests must be at least 1"),
        (args.duration.is_some_and(|d| d.is_zero()), "--duration must be longer than 0"),
        (args.timeout.is_zero(), "--timeout must be longer than 0"),
        (args.server_metrics_interval.is_zero(), "--server-metrics-interval must be longer than 0"),
        (args.max_concurrency == Some(0), "--max-concurrency must be at least 1"),
        (args.sessions == Some(0), "--sessions must be at least 1"),
        (args.sweep.is_some() && args.sweep_points == 0, "--sweep-points must be at least 1"),
        (args.shared_prefix_tokens == Some(0), "--shared-prefix-tokens must be at least 1"),
        (args.prefix_groups == 0, "--prefix-groups must be at least 1"),
        (args.concurrency.contains(&0), "--concurrency must be at least 1"),
    ];
    if let Some((_, msg)) = positive.iter().find(|(bad, _)| *bad) {
        return Err(usage(*msg));
    }
    if args.burstiness.is_some() && args.arrival != Arrival::Gamma {
        return Err(usage("--burstiness is the shape of --arrival gamma: add --arrival gamma"));
    }
    if !(args.trace_speed.is_finite() && args.trace_speed > 0.0) {
        return Err(usage(format!("--trace-speed {} must be a positive number (2 replays twice as fast)", args.trace_speed)));
    }
    for (flag, v) in [("--ramp-up-start-rate", args.ramp_up_start_rate), ("--ramp-up-end-rate", args.ramp_up_end_rate)] {
        if v.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(usage(format!("{flag} must be a positive number of requests per second")));
        }
    }
    for (flag, v, max) in [("--temperature", args.temperature, 2.0), ("--top-p", args.top_p, 1.0)] {
        if v.is_some_and(|t| !(t.is_finite() && (0.0..=max).contains(&t))) {
            return Err(usage(format!("{flag} must be between 0 and {max}")));
        }
    }
    if args.sessions.is_some() && args.concurrency.len() > 1 {
        return Err(usage("--sessions sets how many sessions run at once: drop --concurrency"));
    }
    Ok(())
}

/// Validates the flags, loads prompts, builds every request body and checks that each
/// server accepts connections.
pub async fn prepare(args: &LoadTestArgs) -> Result<Plan, LoadTestError> {
    let urls = parse_urls(&args.urls)?;
    let mut api = resolve_api(args.api, &urls)?;
    check_flags(args, api)?;
    if api == ApiKind::TgiGenerate && args.stream {
        return Err(usage("TGI streams from /generate_stream: use that URL for --stream"));
    }
    // TGI's /generate_stream always streams.
    let stream = args.stream || api == ApiKind::TgiStream;
    let gaps = match args.arrival {
        Arrival::Constant => Gaps::Constant,
        Arrival::Poisson => Gaps::Poisson,
        Arrival::Gamma => Gaps::Gamma(args.burstiness.unwrap_or(1.0)),
    };
    // Read the inputs before touching the network: a bad file is a usage error either way.
    let trace = match &args.trace {
        Some(path) => Some(trace::load(path, args.trace_speed, args.trace_block_tokens, args.seed)?),
        None => None,
    };
    let conversations = match (&args.dataset, args.sessions) {
        (Some(path), Some(_)) => Some(workload::load_conversations(path)?),
        _ => None,
    };
    for url in &urls {
        check_reachable(url).await?;
    }
    let shard = Shard::resolve(args.shard.as_deref(), args.shards, std::env::var(JOB_INDEX_ENV).ok().as_deref()).map_err(usage)?;
    let server_metrics = server_metrics_plan(args, shard, &urls).await;
    if api == ApiKind::Generate && args.api == super::options::ApiChoice::Auto && is_tgi(&urls[0]).await {
        api = ApiKind::TgiGenerate;
    }
    let (environment, model) = describe(args, api, &urls[0]).await?;
    let tokenizer = match &args.tokenizer {
        Some(spec) => Some(Arc::new(PromptTokenizer::load(spec)?)),
        None if args.input_tokens.is_some() || args.shared_prefix_tokens.is_some() => {
            model.as_deref().and_then(PromptTokenizer::discover).map(Arc::new)
        }
        None => None,
    };

    let self_ending = trace.is_some() || args.stages.is_some();
    let requests = match (args.requests, args.duration) {
        (None, None) if self_ending => None,
        (None, None) => Some(DEFAULT_REQUESTS),
        (r, _) => r,
    };
    let body_opts = BodyOptions {
        max_tokens: args.max_tokens,
        stream,
        ignore_eos: args.ignore_eos,
        temperature: args.temperature,
        top_p: args.top_p,
        extra: args.extra_body.clone().unwrap_or_default(),
    };
    let (items, prompt_source, exact) = prompt_items(args, trace.as_ref(), requests, tokenizer.as_deref())?;
    let bodies: Vec<_> = items.iter().map(|item| build_body(api, model.as_deref(), item, &body_opts)).collect();
    let sessions = conversations.map(|conversations| {
        Arc::new(SessionSet {
            conversations,
            think_time: args.think_time.unwrap_or_default(),
            api,
            model: model.clone(),
            body: body_opts.clone(),
        })
    });

    let points = points(args, gaps, trace.as_ref().map(|t| t.offsets.clone()), requests)?;
    let workers = check_shard(shard, &points)?;
    let max_in_flight = match &points {
        Points::Fixed(p) => p.iter().map(in_flight).max().unwrap_or(1),
        Points::Auto { max_concurrency, .. } => max_concurrency.unwrap_or(DEFAULT_THROUGHPUT_CONCURRENCY) as usize,
    };
    let counter = tokenizer.clone();
    let target = Target::new(urls.clone(), api, stream, &args.headers, bodies, args.timeout, max_in_flight, sessions.is_some(), counter).await?;
    let limits = Limits {
        requests,
        duration: args.duration,
        warmup: args.warmup,
        seed: args.seed,
        slo: args.slo.clone(),
        drain: args.timeout,
        shard,
        start_at: args.start_at,
    };
    let shard_info = if shard.is_whole() {
        None
    } else {
        Some(super::shard::info(shard, workers, args.start_at, super::shard::measure_clock(&urls[0]).await))
    };
    let mut workload = workload_report(args, requests, prompt_source, items.len(), trace.as_ref().map(|t| t.spec.clone()));
    workload.stream = stream;
    workload.tokenizer = tokenizer.as_ref().map(|t| t.source.clone());
    if workload.prompt_lengths.is_some() && exact {
        workload.prompt_lengths = Some("exact".into());
    }
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
        sessions,
        shard: shard_info,
        server_metrics,
    })
}

/// What `--server-metrics` reads during the run. The shards of a run load the same servers:
/// by default only the first scrapes them.
async fn server_metrics_plan(args: &LoadTestArgs, shard: Shard, urls: &[reqwest::Url]) -> ServerMetricsPlan {
    let source = match &args.server_metrics {
        super::options::ServerMetricsSource::Auto if shard.index > 0 => super::options::ServerMetricsSource::Off,
        other => other.clone(),
    };
    probe(&source, urls, args.server_metrics_interval).await
}

/// This machine's stamp with what the server says of itself, and the model to ask for
/// (`--model`, else the server's first, where the API needs one).
async fn describe(args: &LoadTestArgs, api: ApiKind, url: &reqwest::Url) -> Result<(EnvironmentStamp, Option<String>), LoadTestError> {
    let mut environment = EnvironmentStamp::collect();
    let mut server = describe_server(url, "/v1/models").await;
    if server.is_none() && api.ndjson() {
        // Ollama's own model list: older versions have no /v1/models.
        server = describe_server(url, "/api/tags").await;
    }
    let model = match (&args.model, api.needs_model()) {
        (Some(m), _) => Some(m.clone()),
        (None, true) => Some(first_model(url, server.as_ref())?),
        (None, false) => None,
    };
    environment.server = server;
    Ok((environment, model))
}

/// A sharded run has one point, and every shard gets at least one closed-loop worker.
/// Returns this shard's workers (closed loop).
fn check_shard(shard: Shard, points: &Points) -> Result<Option<u32>, LoadTestError> {
    if shard.is_whole() {
        return Ok(None);
    }
    let point = match points {
        Points::Fixed(p) if p.len() == 1 => &p[0],
        _ => {
            return Err(usage(format!(
                "a sharded run (--shard {}/{n}) measures one point: give one --concurrency or --rate, not a list or --sweep, and run a sharded Job per point",
                shard.index,
                n = shard.count
            )))
        }
    };
    match point {
        Point::Closed { concurrency } | Point::Throughput { concurrency } => {
            if *concurrency < shard.count {
                return Err(usage(format!(
                    "{concurrency} workers cannot be split over {} shards: each shard needs at least one; raise the concurrency or use fewer shards",
                    shard.count
                )));
            }
            Ok(Some(shard.workers(*concurrency)))
        }
        Point::Open { .. } => Ok(None),
    }
}

fn in_flight(p: &Point) -> usize {
    match p {
        Point::Closed { concurrency } | Point::Throughput { concurrency } => *concurrency as usize,
        Point::Open { max_concurrency: Some(m), .. } => *m as usize,
        Point::Open { .. } => 1024,
    }
}

fn points(args: &LoadTestArgs, gaps: Gaps, trace: Option<Arc<[std::time::Duration]>>, requests: Option<u64>) -> Result<Points, LoadTestError> {
    let max_concurrency = args.max_concurrency;
    if args.sweep.is_some() {
        return Ok(Points::Auto { rates: args.sweep_points, stop_on_saturation: args.stop_on_saturation, gaps, max_concurrency });
    }
    let open = |shape| Point::Open { shape, gaps, max_concurrency };
    if let Some(offsets) = trace {
        return Ok(Points::Fixed(vec![open(Shape::Trace(offsets))]));
    }
    if let Some(stages) = &args.stages {
        return Ok(Points::Fixed(vec![open(Shape::Stages(stages.0.clone()))]));
    }
    if let (Some(kind), Some(start), Some(end)) = (args.ramp_up, args.ramp_up_start_rate, args.ramp_up_end_rate) {
        let warm = match args.warmup {
            Some(Warmup::Requests(n)) => n,
            _ => 0,
        };
        let span = match (args.duration, requests) {
            (Some(d), _) => RampSpan::Time(d),
            (None, Some(n)) => RampSpan::Requests(n + warm),
            (None, None) => return Err(usage("--ramp-up needs --duration or --requests to ramp over")),
        };
        return Ok(Points::Fixed(vec![open(Shape::Ramp { kind, start, end, span })]));
    }
    if !args.rate.is_empty() {
        let points = args
            .rate
            .iter()
            .map(|&rate| {
                if rate.is_infinite() {
                    Point::Throughput { concurrency: max_concurrency.unwrap_or(DEFAULT_THROUGHPUT_CONCURRENCY) }
                } else {
                    open(Shape::Rate(rate))
                }
            })
            .collect();
        return Ok(Points::Fixed(points));
    }
    if let Some(n) = args.sessions {
        return Ok(Points::Fixed(vec![Point::Closed { concurrency: n }]));
    }
    let levels = if args.concurrency.is_empty() { vec![1] } else { args.concurrency.clone() };
    Ok(Points::Fixed(levels.into_iter().map(|c| Point::Closed { concurrency: c }).collect()))
}

fn workload_report(
    args: &LoadTestArgs,
    requests: Option<u64>,
    prompt_source: String,
    distinct: usize,
    trace: Option<report::TraceSpec>,
) -> report::Workload {
    let synthetic = args.input_tokens.is_some() || args.shared_prefix_tokens.is_some() || trace.is_some();
    report::Workload {
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
        distinct_prompts: distinct as u64,
        seed: args.seed,
        timeout_s: args.timeout.as_secs_f64(),
        slo_ms: args.slo.as_ref().map(Slo::as_map).unwrap_or_default(),
        burstiness: (args.arrival == Arrival::Gamma).then(|| args.burstiness.unwrap_or(1.0)),
        ramp: match (args.ramp_up, args.ramp_up_start_rate, args.ramp_up_end_rate) {
            (Some(kind), Some(start_rate), Some(end_rate)) => Some(RampSpec {
                kind: match kind {
                    RampKind::Linear => "linear".into(),
                    RampKind::Exponential => "exponential".into(),
                },
                start_rate,
                end_rate,
            }),
            _ => None,
        },
        stages: args
            .stages
            .as_ref()
            
            .map(|s| s.0.iter().map(|s| StageSpec { duration_s: s.duration.as_secs_f64(), rate: s.rate }).collect()),
        trace,
        sessions: args.sessions,
        think_time_s: args.think_time.map(|d| d.as_secs_f64()),
        shared_prefix_tokens: args.shared_prefix_tokens,
        prefix_groups: args.shared_prefix_tokens.map(|_| args.prefix_groups),
        output_tokens: args.output_tokens.map(|o| format!("{}:{}", o.mean, o.stddev)),
        ignore_eos: args.ignore_eos,
        temperature: args.temperature,
        top_p: args.top_p,
        extra_body: args.extra_body.clone(),
        tokenizer: None,
        prompt_lengths: synthetic.then(|| "approximate".to_string()),
        sweep: args.sweep.map(|_| "auto".to_string()),
        ..report::Workload::default()
    }
}
