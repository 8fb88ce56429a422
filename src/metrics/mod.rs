//! `gpubench metrics`: samples GPUs (NVML), the CPU, a Prometheus server or a recording,
//! for a duration or while a command runs, into a CSV series and a JSON summary.

pub mod child;
mod output;
pub mod sampling;
pub mod summary;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::device::{self, Sampler, SystemClock};
use crate::support::cli::parse_duration;
use crate::ExitStatus;

pub(crate) use output::print_stdout;
pub use output::{csv_header, summary_path};

pub const AFTER_HELP: &str = "\
Examples:
  gpubench metrics --duration 5m --out p1-gpu.csv
  gpubench metrics --interval 100ms --out gpu.csv -- gpubench load-test ...
  gpubench metrics --prometheus-url http://localhost:9090 --selector 'pod=~\"llm-.*\"'
  gpubench metrics --source replay:p1-gpu.csv --interval 10ms --json

Output: the CSV (one row per sample per device, plus one per process or pod) goes to --out, flushed after every sample, or to stdout when there is no --out, --json or command. The summary (utilization mean, p50, p95, idle fraction under 5%, peak memory, energy) goes beside --out as FILE.summary.json, and to stdout with --json. With `-- COMMAND`, the command's output passes through and gpubench exits with its exit status.";

#[derive(Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Where samples come from: auto (NVML where it loads, else cpu), nvml, cpu, prometheus, replay:FILE.
    #[arg(long, default_value = "auto", value_parser = parse_source)]
    pub source: Source,
    /// Time between samples (e.g. 100ms, 1s).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Sample for this long (e.g. 30s, 5m); without it, until the command ends or Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Only this GPU (NVML index; the `gpu` label for Prometheus; the device_id for a replay).
    #[arg(long)]
    pub device: Option<u32>,
    /// Per-process rows for this process only (NVML), or follow it (cpu). Defaults to the command's pid for cpu.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Prometheus server holding dcgm-exporter or Run:AI series (implies --source prometheus).
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// Label matchers for the GPU series, e.g. 'namespace="llm",pod=~"llm-.*"' (pod/namespace also match exported_pod/exported_namespace).
    #[arg(long, default_value = "")]
    pub selector: String,
    /// Write the CSV series here (and the summary beside it, as FILE.summary.json).
    #[arg(long, value_name = "FILE.csv")]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON on stdout (an array, one object per device).
    #[arg(long)]
    pub json: bool,
    /// Command to run while sampling (after `--`); its output passes through.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Auto,
    Nvml,
    Cpu,
    Prometheus,
    Replay(PathBuf),
}

fn parse_source(s: &str) -> Result<Source, String> {
    match s {
        "auto" => Ok(Source::Auto),
        "nvml" => Ok(Source::Nvml),
        "cpu" => Ok(Source::Cpu),
        "prometheus" => Ok(Source::Prometheus),
        _ => match s.strip_prefix("replay:") {
            Some(path) if !path.is_empty() => Ok(Source::Replay(PathBuf::from(path))),
            _ => Err(format!("unknown source '{s}': use auto, nvml, cpu, prometheus or replay:FILE.csv")),
        },
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("interval '{s}' is too short: use 1ms or more (e.g. 100ms, 1s)"));
    }
    Ok(d)
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{0}")]
    Usage(String),
    #[error("{problem}. Fix: {fix}")]
    Source { problem: String, fix: String },
    #[error("cannot write {path}: {source}. Check that the folder exists and is writable")]
    Write { path: String, source: std::io::Error },
    #[error("cannot run '{command}': {source}. Check the command name and that it is on PATH")]
    Spawn { command: String, source: std::io::Error },
    #[error("no sample could be taken ({0})")]
    NoSamples(String),
    #[error("the sampling thread failed: {0}")]
    Internal(String),
}

impl crate::Failure for MetricsError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            MetricsError::Usage(_) => ExitStatus::Usage,
            _ => ExitStatus::Failure,
        }
    }
}

/// Runs the command line. With a command, exits with the command's exit status.
pub async fn run_cli(args: MetricsArgs, quiet: bool) -> Result<ExitStatus, MetricsError> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let signalled = stop_tx.clone();
    // The command's pid once it runs, so that a SIGTERM reaches it too.
    let child_pid = Arc::new(AtomicU32::new(0));
    let pid_for_signals = child_pid.clone();
    let watcher = tokio::spawn(async move {
        // Ctrl-C reaches the command through the terminal's process group; SIGTERM (a CI
        // timeout, a pod being stopped) is passed on. Either way the summary is written.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {
                let pid = pid_for_signals.load(Ordering::SeqCst);
                if pid != 0 {
                    // SAFETY: kill(2) on a pid we started; it has no memory effects here.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
            }
        }
        let _ = signalled.send(());
    });
    let result = tokio::task::spawn_blocking(move || run_blocking(args, quiet, stop_tx, stop_rx, child_pid))
        .await
        .map_err(|e| MetricsError::Internal(e.to_string()))?;
    watcher.abort();
    let code = result?;
    let _ = std::io::stdout().flush();
    Ok(match code {
        0 => ExitStatus::Success,
        1 => ExitStatus::Failure,
        2 => ExitStatus::Usage,
        3 => ExitStatus::CheckFailed,
        other => {
            let _ = std::io::stderr().flush();
            std::process::exit(other)
        }
    })
}

/// Builds the sampler the arguments ask for. `Auto` falls back to the CPU where NVML is missing.
fn open_sampler(args: &MetricsArgs, quiet: bool) -> Result<Box<dyn Sampler>, MetricsError> {
    let nvml = |args: &MetricsArgs| -> Result<Box<dyn Sampler>, MetricsError> {
        let gpus = device::open_nvml().map_err(|e| MetricsError::Source { problem: e.problem, fix: e.fix })?;
        let sampler = device::NvmlSampler::new(Box::new(gpus), args.device, args.pid).map_err(|e| MetricsError::Source {
            problem: e,
            fix: "pick a GPU from `gpubench gpu-check`, or use --source cpu".into(),
        })?;
        Ok(Box::new(sampler))
    };
    match &args.source {
        Source::Nvml => nvml(args),
        Source::Cpu => Ok(Box::new(device::CpuSampler::new(args.pid))),
        Source::Auto => match nvml(args) {
            Ok(s) => Ok(s),
            Err(e) => {
                if !quiet {
                    eprintln!("note: {e}\nnote: sampling the CPU instead (--source cpu)");
                }
                Ok(Box::new(device::CpuSampler::new(args.pid)))
            }
        },
        Source::Prometheus => {
            let url = args.prometheus_url.as_deref().ok_or_else(|| {
                MetricsError::Usage("--source prometheus needs --prometheus-url URL (e.g. http://localhost:9090)".into())
            })?;
            let selector = device::PrometheusSelector::parse(&args.selector).map_err(|e| MetricsError::Usage(format!("--selector: {e}")))?;
            let s = device::PrometheusSampler::connect(url, &selector, args.interval, args.device).map_err(|e| match e {
                device::PrometheusError::Usage(m) => MetricsError::Usage(m),
                device::PrometheusError::Unreachable(m) => MetricsError::Source {
                    problem: m,
                    fix: "start Prometheus or port-forward it (kubectl port-forward svc/prometheus 9090) and pass its URL".into(),
                },
            })?;
            Ok(Box::new(s))
        }
        Source::Replay(path) => {
            let device = args.device.map(|d| d.to_string());
            let s = device::ReplaySampler::load(path, device.as_deref()).map_err(MetricsError::Usage)?;
            Ok(Box::new(s))
        }
    }
}

fn run_blocking(
    args: MetricsArgs,
    quiet: bool,
    stop_tx: std::sync::mpsc::Sender<()>,
    stop_rx: std::sync::mpsc::Receiver<()>,
    child_pid: Arc<AtomicU32>,
) -> Result<i32, MetricsError> {
    if args.duration.is_some() && !args.command.is_empty() {
        return Err(MetricsError::Usage("give either --duration or a command after --, not both".into()));
    }
    let mut args = args;
    if args.prometheus_url.is_some() && args.source == Source::Auto {
        // A Prometheus URL says where the samples are.
        args.source = Source::Prometheus;
    }
    let mut sampler = open_sampler(&args, quiet)?;
    let mut out = output::Outputs::open(&args, quiet, sampler.source())?;

    // The command, if any: its output passes through; its end stops the loop.
    let mut child_waiter = None;
    if let Some((program, rest)) = args.command.split_first() {
        let child = std::process::Command::new(program)
            .args(rest)
            .spawn()
            .map_err(|source| MetricsError::Spawn { command: program.clone(), source })?;
        let pid = child.id();
        child_pid.store(pid, Ordering::SeqCst);
        if args.pid.is_none() && device::DeviceKind::of_source(sampler.source()) == device::DeviceKind::Cpu {
            // Follow the command's process too.
            sampler = Box::new({
                let mut cpu = device::CpuSampler::new(None);
                cpu.follow(pid);
                cpu
            });
        }
        let tx = stop_tx.clone();
        child_waiter = Some(std::thread::spawn(move || {
            let mut child = child;
            let status = child.wait();
            let _ = tx.send(());
            status
        }));
    }
    // Without a command or duration, only Ctrl-C stops; keep a sender alive for it.
    let _keep = stop_tx;

    let mut clock = SystemClock::with_stop(stop_rx);
    let plan = sampling::Plan { interval: args.interval, duration: args.duration };
    let outcome = sampling::run(sampler.as_mut(), &mut clock, plan, |rows| out.push(rows))?;

    let code = match child_waiter {
        Some(handle) => match handle.join() {
            Ok(Ok(status)) => exit_code_of(status),
            Ok(Err(e)) => {
                eprintln!("error: waiting for the command failed: {e}");
                1
            }
            Err(_) => 1,
        },
        None => 0,
    };
    let interval = (sampler.source() != "replay").then_some(args.interval.as_secs_f64());
    out.finish(&sampler.note(), interval, &outcome)?;
    if outcome.samples == 0 && args.command.is_empty() {
        return Err(MetricsError::NoSamples(outcome.last_gap.unwrap_or_else(|| "the source returned nothing".into())));
    }
    Ok(code)
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_clear_errors() {
        assert_eq!(parse_source("cpu").unwrap(), Source::Cpu);
        assert_eq!(parse_source("replay:a.csv").unwrap(), Source::Replay("a.csv".into()));
        assert!(parse_source("replay:").unwrap_err().contains("replay:FILE.csv"));
        assert!(parse_source("gpu").unwrap_err().contains("unknown source 'gpu'"));
        assert!(parse_interval("0s").unwrap_err().contains("too short"));
        assert_eq!(parse_interval("100ms").unwrap(), Duration::from_millis(100));
    }
}
