//! `gpubench bench`: the main job. Starts the local phases on this machine (bare metal:
//! one server answering one request at a time; sharing: several servers on the same
//! device with the load spread across them; batched: one server with continuous batching),
//! samples utilization during each, runs a concurrency sweep of load tests against each
//! (and against any remote `--target`), then writes the comparison report.
//!
//! Every command it uses is a gpubench command: servers and samplers run as child
//! processes of this binary and are always stopped by their pid; load tests run in-process.

mod servers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::compare::{self, CompareRequest, PhaseInput};
use crate::loadtest::{self, LoadTestArgs};
use crate::support::cli::print_out;
use crate::report::RunReportFile;
use crate::ExitStatus;
use servers::{wait_listening, wait_ready, ChildProcess};

pub const AFTER_HELP: &str = "\
Examples:
  gpubench bench                      # all local phases on the default model, CPU
  gpubench bench --quick              # the same, shorter (under 2 minutes on 2 cores)
  gpubench bench --phases none --target kubernetes=http://10.0.0.5:8000/generate \\
                 --target runai=http://10.0.0.6:8000/generate
Writes DIR/<phase>.json (load-test sweeps), DIR/<phase>-metrics.csv, DIR/logs/ and the
comparison (DIR/comparison.html, the page to open first, and DIR/comparison.md with charts)
and prints where they are.";

/// A local deployment phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// One server, one request at a time (the classic single-process server).
    BareMetal,
    /// Several servers on the same device, the load spread round-robin (like pods sharing a GPU).
    Sharing,
    /// One server with continuous batching.
    Batched,
    /// No local phase (remote --target only).
    None,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::BareMetal => "bare-metal",
            Phase::Sharing => "sharing",
            Phase::Batched => "batched",
            Phase::None => "none",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A short run: two concurrency points, short points, few tokens (under 2 minutes on 2 cores).
    #[arg(long)]
    pub quick: bool,
    /// No live view during the load tests (it is drawn only when stdout and stderr are terminals).
    #[arg(long)]
    pub no_live: bool,
    /// Model for the local servers (default: the default model, provisioned once).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Serve random weights of this architecture instead of a model file (serve --load-format
    /// dummy --arch NAME; in the serving dtype, bf16 on CUDA): for speed on a machine without the model.
    #[arg(long, value_enum, conflicts_with = "model")]
    pub dummy_arch: Option<crate::serve::model::Arch>,
    /// Device of the local servers: cpu, cuda or cuda:N [default: cpu].
    #[arg(long)]
    pub device: Option<String>,
    /// Local phases to run, in order [default: bare-metal,sharing,batched].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub phases: Vec<Phase>,
    /// Servers started by the sharing phase [default: 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub sharing_servers: Option<u32>,
    /// A remote deployment to add to the comparison, NAME=URL (repeatable), e.g. kubernetes=http://10.0.0.5:8000/generate.
    #[arg(long = "target", value_name = "NAME=URL", value_parser = parse_target)]
    pub targets: Vec<(String, String)>,
    /// Concurrency points of each sweep (default: 1,2,4,8; --quick: 1,4).
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<u32>,
    /// Measurement time of each point (default 15s; --quick 5s).
    #[arg(long, value_parser = crate::support::cli::parse_duration)]
    pub point_duration: Option<Duration>,
    /// Tokens generated per request (default 32; --quick 16).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Price of one GPU hour for the cost model [default: 2.0].
    #[arg(long)]
    pub gpu_hour_cost: Option<f64>,
    /// Where the runs and the comparison go (default: reports/bench-YYYYMMDD-HHMMSS).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// A TOML file with any of these settings (flags given on the command line win), e.g.
    /// `phases = ["bare-metal", "batched"]`, `concurrency = [1, 4]`, `point_duration = "10s"`,
    /// and `[[target]]` tables with `name` and `url`. Paths are relative to the file.
    #[arg(long, value_name = "bench.toml")]
    pub config: Option<PathBuf>,
}

impl BenchArgs {
    fn device(&self) -> &str {
        self.device.as_deref().unwrap_or("cpu")
    }

    fn sharing_servers(&self) -> u32 {
        self.sharing_servers.unwrap_or(3)
    }

    /// Fills what the command line left open from `--config`.
    fn merge_config(&mut self) -> Result<(), BenchError> {
        let Some(path) = self.config.clone() else { return Ok(()) };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| BenchError::Usage(format!("cannot read --config {}: {e}", path.display())))?;
        let cfg: BenchConfig = toml::from_str(&text)
            .map_err(|e| BenchError::Usage(format!("--config {}: {}", path.display(), e.to_string().trim())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let bad = |field: &str, why: String| BenchError::Usage(format!("--config {}: {field}: {why}", path.display()));
        self.quick |= cfg.quick.unwrap_or(false);
        if self.model.is_none() {
            self.model = cfg.model.map(|m| base.join(m));
        }
        if self.device.is_none() {
            self.device = cfg.device;
        }
        if self.phases.is_empty() {
            for name in cfg.phases.unwrap_or_default() {
                self.phases.push(Phase::from_str(&name, true).map_err(|_| {
                    bad("phases", format!("unknown phase '{name}': use bare-metal, sharing, batched or none"))
                })?);
            }
        }
        if self.sharing_servers.is_none() {
            if let Some(n) = cfg.sharing_servers {
                if !(2..=16).contains(&n) {
                    return Err(bad("sharing_servers", format!("{n} is not in 2..=16")));
                }
                self.sharing_servers = Some(n);
            }
        }
        if self.concurrency.is_empty() {
            self.concurrency = cfg.concurrency.unwrap_or_default();
        }
        if self.point_duration.is_none() {
            if let Some(d) = cfg.point_duration {
                self.point_duration = Some(crate::support::cli::parse_duration(&d).map_err(|e| bad("point_duration", e))?);
            }
        }
        if self.max_tokens.is_none() {
            self.max_tokens = cfg.max_tokens;
        }
        if self.gpu_hour_cost.is_none() {
            self.gpu_hour_cost = cfg.gpu_hour_cost;
        }
        if self.out_dir.is_none() {
            self.out_dir = cfg.out_dir.map(|d| base.join(d));
        }
        for t in cfg.target {
            self.targets.push(parse_target(&format!("{}={}", t.name, t.url)).map_err(|e| bad("target", e))?);
        }
        Ok(())
    }
}

/// `bench --config FILE`: the same settings as the flags.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BenchConfig {
    quick: Option<bool>,
    model: Option<PathBuf>,
    device: Option<String>,
    phases: Option<Vec<String>>,
    sharing_servers: Option<u32>,
    concurrency: Option<Vec<u32>>,
    point_duration: Option<String>,
    max_tokens: Option<u32>,
    gpu_hour_cost: Option<f64>,
    out_dir: Option<PathBuf>,
    #[serde(default)]
    target: Vec<TargetConfig>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetConfig {
    name: String,
    url: String,
}

fn parse_target(text: &str) -> Result<(String, String), String> {
    let (name, url) = text.split_once('=').ok_or_else(|| format!("'{text}' is not NAME=URL"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("target name '{name}' must be letters, digits, '-' or '_'"));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("target URL '{url}' must start with http:// or https://"));
    }
    Ok((name.to_string(), url.trim().to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    #[error("interrupted: the servers were stopped; runs finished so far are in {0}")]
    Interrupted(PathBuf),
    #[error(transparent)]
    LoadTest(#[from] loadtest::LoadTestError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error(transparent)]
    Process(#[from] crate::support::process::ProcessError),
}

impl crate::Failure for BenchError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            BenchError::Usage(_) => ExitStatus::Usage,
            BenchError::LoadTest(e) => e.exit_status(),
            _ => ExitStatus::Failure,
        }
    }
}

/// The settings of one bench run after defaults.
struct Settings {
    /// What the load tests show while they run (the live view on a terminal).
    display: loadtest::Display,
    concurrency: Vec<u32>,
    point: Duration,
    max_tokens: u32,
    out_dir: PathBuf,
    exe: PathBuf,
}

/// One measured deployment, as compare will read it.
struct Measured {
    name: String,
    report: PathBuf,
    metrics: Option<PathBuf>,
    servers_per_device: u32,
}

pub async fn run_cli(mut args: BenchArgs, quiet: bool) -> Result<ExitStatus, BenchError> {
    args.merge_config()?;
    if args.phases.is_empty() {
        args.phases = vec![Phase::BareMetal, Phase::Sharing, Phase::Batched];
    }
    let phases: Vec<Phase> = args.phases.iter().copied().filter(|p| *p != Phase::None).collect();
    if phases.is_empty() && args.targets.is_empty() {
        return Err(BenchError::Usage("nothing to measure: --phases none needs at least one --target NAME=URL".into()));
    }
    let settings = Settings {
        display: loadtest::Display::choose(quiet, args.no_live),
        concurrency: if !args.concurrency.is_empty() {
            args.concurrency.clone()
        } else if args.quick {
            vec![1, 4]
        } else {
            vec![1, 2, 4, 8]
        },
        point: args.point_duration.unwrap_or(if args.quick { Duration::from_secs(5) } else { Duration::from_secs(15) }),
        max_tokens: args.max_tokens.unwrap_or(if args.quick { 16 } else { 32 }),
        out_dir: args.out_dir.clone().unwrap_or_else(default_out_dir),
        exe: std::env::current_exe().map_err(|e| BenchError::Failed(format!("cannot find the gpubench binary: {e}")))?,
    };
    if settings.concurrency.contains(&0) {
        return Err(BenchError::Usage("--concurrency values must be at least 1".into()));
    }
    std::fs::create_dir_all(settings.out_dir.join("logs"))
        .map_err(|e| BenchError::Failed(format!("cannot create {}: {e}", settings.out_dir.display())))?;

    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            crate::support::cli::stop_signal().await;
            eprintln!("interrupted: stopping the servers");
            cancel.cancel();
        });
    }

    let total = phases.len() + args.targets.len();
    let mut measured = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        say(quiet, &format!("[{}/{total}] {}: starting", i + 1, phase.name()));
        measured.push(run_phase(*phase, &args, &settings, &cancel, quiet).await?);
        if cancel.is_cancelled() {
            return Err(BenchError::Interrupted(settings.out_dir.clone()));
        }
    }
    for (k, (name, url)) in args.targets.iter().enumerate() {
        say(quiet, &format!("[{}/{total}] {name}: load test against {url}", phases.len() + k + 1));
        let report = settings.out_dir.join(format!("{name}.json"));
        sweep(std::slice::from_ref(url), name, &report, &settings, &cancel, quiet).await?;
        measured.push(Measured { name: name.clone(), report, metrics: None, servers_per_device: 1 });
        if cancel.is_cancelled() {
            return Err(BenchError::Interrupted(settings.out_dir.clone()));
        }
    }
    // compare prints the table, the verdict and where the report is.
    compare(&measured, &args, &settings, quiet)?;
    Ok(ExitStatus::Success)
}

fn say(quiet: bool, text: &str) {
    if !quiet {
        eprintln!("{text}");
    }
}

fn default_out_dir() -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(&time::macros::format_description!("[year][month][day]-[hour][minute][second]"))
        .unwrap_or_else(|_| "latest".into());
    PathBuf::from("reports").join(format!("bench-{stamp}"))
}

async fn run_phase(
    phase: Phase,
    args: &BenchArgs,
    settings: &Settings,
    cancel: &CancellationToken,
    quiet: bool,
) -> Result<Measured, BenchError> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (count, batch, threads) = match phase {
        Phase::BareMetal => (1, 1, cores),
        Phase::Sharing => (args.sharing_servers(), 1, (cores / args.sharing_servers() as usize).max(1)),
        _ => (1, 16, cores),
    };
    let name = phase.name();
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for k in 0..count {
        // Port 0: the server picks a free port and says which, so no other listener is measured.
        let serve_args = crate::serve::child::ServeChild {
            device: args.device().to_string(),
            threads,
            max_batch_size: batch,
            model: args.model.clone(),
            dummy_arch: args.dummy_arch,
            gpu_memory_fraction: (phase == Phase::Sharing && args.device().starts_with("cuda")).then(|| 0.95 / count as f64),
        }
        .args();
        let log = settings.out_dir.join("logs").join(format!("{name}-serve-{k}.log"));
        let mut server = ChildProcess::start(&format!("{name} server {k}"), &settings.exe, &serve_args, &log)?;
        // Servers start one after the other so that only the first provisions the model.
        let base = tokio::select! {
            r = wait_listening(&mut server, Duration::from_secs(600)) => r?,
            _ = cancel.cancelled() => return Err(BenchError::Interrupted(settings.out_dir.clone())),
        };
        let ready = format!("{base}/ready");
        tokio::select! {
            r = wait_ready(&mut server, &ready, Duration::from_secs(600)) => r?,
            _ = cancel.cancelled() => return Err(BenchError::Interrupted(settings.out_dir.clone())),
        }
        urls.push(format!("{base}/generate"));
        servers.push(server);
    }
    say(quiet, &format!("    {count} server(s) ready: {}", urls.join(" ")));

    let metrics_csv = settings.out_dir.join(format!("{name}-metrics.csv"));
    let metrics_args = crate::metrics::child::MetricsChild {
        source: if args.device().starts_with("cuda") { "nvml" } else { "cpu" }.into(),
        interval: Duration::from_millis(500),
        duration: Duration::from_secs(6 * 3600),
        out: metrics_csv.clone(),
    }
    .args();
    let log = settings.out_dir.join("logs").join(format!("{name}-metrics.log"));
    let mut sampler = ChildProcess::start(&format!("{name} sampler"), &settings.exe, &metrics_args, &log)?;

    let report = settings.out_dir.join(format!("{name}.json"));
    let result = sweep(&urls, name, &report, settings, cancel, quiet).await;
    sampler.stop(Duration::from_secs(3));
    for mut s in servers {
        s.stop(Duration::from_secs(10));
    }
    result?;
    let metrics = metrics_csv.exists().then_some(metrics_csv);
    Ok(Measured { name: name.into(), report, metrics, servers_per_device: count })
}

async fn sweep(
    urls: &[String],
    label: &str,
    out: &Path,
    settings: &Settings,
    cancel: &CancellationToken,
    quiet: bool,
) -> Result<(), BenchError> {
    let mut args = LoadTestArgs::for_urls(urls)?;
    args.concurrency = settings.concurrency.clone();
    args.duration = Some(settings.point);
    args.warmup = Some(loadtest::Warmup::Requests(1));
    args.max_tokens = settings.max_tokens;
    args.timeout = Duration::from_secs(180);
    args.label = Some(label.into());
    let plan = loadtest::prepare(&args).await?;
    let reports = loadtest::run_all(&plan, cancel, settings.display).await?.0;
    if !quiet {
        eprint!("{}", loadtest::render_sweep(&reports));
    }
    let ok: u64 = reports.iter().map(|r| r.counts.ok).sum();
    RunReportFile::from_runs(reports).save(out)?;
    if ok == 0 && !cancel.is_cancelled() {
        return Err(BenchError::Failed(format!("no request to {label} succeeded: see {}", out.display())));
    }
    Ok(())
}

fn compare(measured: &[Measured], args: &BenchArgs, settings: &Settings, quiet: bool) -> Result<(), BenchError> {
    let phases = measured
        .iter()
        .map(|m| PhaseInput {
            label: m.name.clone(),
            metrics: m.metrics.clone(),
            pods_per_gpu: m.servers_per_device,
            ..PhaseInput::from_file(&m.report)
        })
        .collect();
    let mut request = CompareRequest::new(phases, Some(settings.out_dir.clone()));
    request.gpu_hour_cost = match args.gpu_hour_cost {
        Some(cost) if !(cost.is_finite() && cost >= 0.0) => {
            return Err(BenchError::Usage(format!("--gpu-hour-cost must be a number >= 0, not {cost}")))
        }
        cost => cost.unwrap_or(compare::DEFAULT_GPU_HOUR_COST),
    };
    say(quiet, "comparing the phases");
    let failed = |e: compare::CompareError| {
        BenchError::Failed(format!("gpubench compare failed ({e}); the runs are in {}", settings.out_dir.display()))
    };
    compare::validate_phases(&request.phases).map_err(failed)?;
    let outcome = compare::compare(&request).map_err(failed)?;
    print_out(&compare::render_outcome(&outcome, &request, false, false));
    Ok(())
}

#[cfg(test)]
#[path = "bench_tests.rs"]
mod tests;
