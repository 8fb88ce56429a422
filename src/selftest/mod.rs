//! `gpubench self-test`: runs a few tensor operations on a device (random numbers, f32 and bf16
//! matmul, the custom kernels the server uses, quantized matmul) and compares them with the CPU.
//! The first thing to run on a new GPU machine: it shows that the kernels compiled into this binary
//! load and compute correctly there, before any model is served.

mod checks;

use std::time::Instant;

use clap::Args;
use comfy_table::{presets, Cell, CellAlignment, Table};
use serde::Serialize;

use crate::support::cli::print_line;

pub use checks::{all_checks, Check};

pub const AFTER_HELP: &str = "Examples:
  gpubench self-test                   # on cuda:0 (needs a build with --features cuda)
  gpubench self-test --device cpu      # the same operations on the CPU against themselves
  gpubench self-test --json            # one JSON object per line, for scripts

Exit status 3 when a result differs from the CPU beyond its tolerance.";

#[derive(Debug, Clone, Args)]
pub struct SelfTestArgs {
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// One JSON object per check on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SelfTestError {
    #[error(transparent)]
    Device(#[from] crate::serve::ServeError),
}

impl crate::Failure for SelfTestError {
    fn exit_status(&self) -> crate::ExitStatus {
        match self {
            SelfTestError::Device(e) => crate::Failure::exit_status(e),
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub check: &'static str,
    pub device: String,
    /// Largest |device - cpu| over the largest |cpu| (for statistics checks: the largest deviation).
    pub error: Option<f64>,
    pub tolerance: f64,
    pub passed: bool,
    pub millis: f64,
    /// Why the check could not run (an error from the device), if it did not.
    pub failure: Option<String>,
}

/// Runs every check on `device`, in order; a check that errors is a failed outcome, not an abort.
pub fn run_checks(device: &candle_core::Device, label: &str) -> Vec<Outcome> {
    all_checks()
        .into_iter()
        .map(|check| {
            let started = Instant::now();
            let result = (check.run)(device);
            let millis = started.elapsed().as_secs_f64() * 1e3;
            match result {
                Ok(error) => Outcome {
                    check: check.name,
                    device: label.to_string(),
                    error: Some(error),
                    tolerance: check.tolerance,
                    passed: error.is_finite() && error <= check.tolerance,
                    millis,
                    failure: None,
                },
                Err(e) => Outcome {
                    check: check.name,
                    device: label.to_string(),
                    error: None,
                    tolerance: check.tolerance,
                    passed: false,
                    millis,
                    failure: Some(e.to_string()),
                },
            }
        })
        .collect()
}

pub fn render_table(outcomes: &[Outcome]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.set_header(vec!["check", "error", "tolerance", "result", "ms"]);
    for o in outcomes {
        let error = match (&o.error, &o.failure) {
            (Some(e), _) => format!("{e:.2e}"),
            (None, Some(f)) => f.lines().next().unwrap_or("").chars().take(60).collect(),
            (None, None) => "-".into(),
        };
        table.add_row(vec![
            Cell::new(o.check),
            Cell::new(error).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.0e}", o.tolerance)).set_alignment(CellAlignment::Right),
            Cell::new(if o.passed { "PASS" } else { "FAIL" }),
            Cell::new(format!("{:.1}", o.millis)).set_alignment(CellAlignment::Right),
        ]);
    }
    table.to_string()
}

pub async fn run_cli(args: SelfTestArgs, _quiet: bool) -> Result<crate::ExitStatus, SelfTestError> {
    let label = args.device.trim().to_string();
    let opened = Instant::now();
    let device = crate::serve::parse_device(&label)?;
    let open_ms = opened.elapsed().as_secs_f64() * 1e3;
    let outcomes = tokio::task::spawn_blocking(move || run_checks(&device, &label))
        .await
        .unwrap_or_else(|e| vec![Outcome {
            check: "self-test",
            device: args.device.clone(),
            error: None,
            tolerance: 0.0,
            passed: false,
            millis: 0.0,
            failure: Some(format!("the checks panicked: {e}")),
        }]);
    if args.json {
        for o in &outcomes {
            print_line(&serde_json::to_string(o).unwrap_or_default());
        }
    } else {
        print_line(&render_table(&outcomes));
        let failed = outcomes.iter().filter(|o| !o.passed).count();
        print_line(&format!(
            "{}: {} of {} checks passed (device opened in {open_ms:.0} ms)",
            args.device.trim(),
            outcomes.len() - failed,
            outcomes.len()
        ));
    }
    Ok(if outcomes.iter().all(|o| o.passed) { crate::ExitStatus::Success } else { crate::ExitStatus::CheckFailed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_passes_on_the_cpu() {
        let outcomes = run_checks(&candle_core::Device::Cpu, "cpu");
        assert!(outcomes.len() >= 8);
        for o in &outcomes {
            assert!(o.passed, "{o:?}");
        }
    }

    #[test]
    fn a_failed_check_shows_its_reason() {
        let o = Outcome {
            check: "f32 matmul",
            device: "cuda".into(),
            error: None,
            tolerance: 1e-3,
            passed: false,
            millis: 1.0,
            failure: Some("DriverError(CUDA_ERROR_NO_BINARY_FOR_GPU)\nmore".into()),
        };
        let table = render_table(&[o]);
        assert!(table.contains("FAIL"), "{table}");
        assert!(table.contains("CUDA_ERROR_NO_BINARY_FOR_GPU"), "{table}");
        assert!(!table.contains("more"), "{table}");
    }
}
