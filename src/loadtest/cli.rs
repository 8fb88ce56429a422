//! `gpubench load-test` on the command line: prepare, run with the live view or a progress
//! bar, print and save the reports, and the exit status.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::run::{run_all, Display};
use super::{prepare, render, render_sweep, shard, LoadTestArgs, LoadTestError};
use crate::report::{RunReportFile, RunSet, RUN_SCHEMA_VERSION};
use crate::support::cli::{print_line, print_out};
use crate::ExitStatus;

/// `gpubench load-test`: prepare, run with a progress bar, print and save the reports.
pub async fn run_cli(args: LoadTestArgs, quiet: bool) -> Result<ExitStatus, LoadTestError> {
    let plan = prepare(&args).await?;
    let cancel = CancellationToken::new();
    let ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            crate::support::cli::stop_signal().await;
            eprintln!("interrupted: stopping and writing the partial report");
            cancel.cancel();
        })
    };
    if let Some(at) = args.start_at {
        match at.duration_since(std::time::SystemTime::now()) {
            Ok(wait) if !quiet => eprintln!("waiting {:.1} s for --start-at {}", wait.as_secs_f64(), shard::rfc3339_ms(at)),
            Err(late) if late.duration() > Duration::from_secs(1) => {
                tracing::warn!("--start-at {} passed {:.1} s ago: starting now", shard::rfc3339_ms(at), late.duration().as_secs_f64())
            }
            _ => {}
        }
    }
    let (reports, sweep) = run_all(&plan, &cancel, Display::choose(quiet, args.no_live)).await?;
    ctrl_c.abort();
    let file = match sweep {
        Some(summary) => RunReportFile::Sweep(RunSet { schema_version: RUN_SCHEMA_VERSION, runs: reports, sweep: Some(summary) }),
        None => RunReportFile::from_runs(reports),
    };
    if let Some(out) = &args.out {
        file.save(out)?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&file).map_err(|e| LoadTestError::Failed(e.to_string()))?;
        print_line(&text);
    } else {
        let runs = file.runs();
        if runs.len() > 1 {
            print_out(&render_sweep(runs));
            if let RunReportFile::Sweep(RunSet { sweep: Some(s), .. }) = &file {
                print_line(&super::render::render_knee(s));
            }
        } else if let Some(r) = runs.first() {
            print_out(&render(r));
        }
        if let Some(out) = &args.out {
            print_line(&format!("report: {}", out.display()));
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
