//! `gpubench compare`: the phase comparison report. Reads run reports (and metric
//! series), computes one [`Comparison`] (rows, winners, cost model, verdict), draws the
//! charts and writes `comparison.html`, `.md`, `.csv` and `.json`; optionally gates
//! against an earlier comparison.
//!
//! Library entry point: [`compare`] with a [`CompareRequest`].

mod charts;
mod cost;
mod device;
mod export;
mod gate;
mod html;
mod inputs;
mod markdown;
mod options;
mod server;
mod server_chart;
mod plot;
mod table;
mod verdict;

use std::path::{Path, PathBuf};

pub use export::{exporter_for, CsvExporter, Exporter, JsonExporter, MarkdownExporter};
pub use gate::Regression;
pub use html::escape as html_escape;
pub use options::*;

use crate::report::{Comparison, ReportError};
use crate::support::cli::print_out;
use crate::ExitStatus;

/// Errors of `compare`; each names the file or flag at fault and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{0}")]
    Usage(String),
    #[error("{}: {detail}", path.display())]
    Input { path: PathBuf, detail: String },
    #[error("phase '{label}': {error}")]
    Report { label: String, error: ReportError },
    #[error("baseline: {0}")]
    Baseline(ReportError),
    #[error("cannot write {}: {error}. Check that the folder exists and is writable", path.display())]
    Write { path: PathBuf, error: std::io::Error },
    #[error("cannot render {file}: {detail}")]
    Render { file: String, detail: String },
    #[error("{}", gate::describe(.0, *.1))]
    Regressed(Vec<Regression>, f64),
}

impl CompareError {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CompareError::Usage(message.into())
    }
}

impl crate::Failure for CompareError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            CompareError::Usage(_) | CompareError::Input { .. } | CompareError::Report { .. } | CompareError::Baseline(_) => {
                ExitStatus::Usage
            }
            CompareError::Write { .. } | CompareError::Render { .. } => ExitStatus::Failure,
            CompareError::Regressed(..) => ExitStatus::CheckFailed,
        }
    }
}

/// What [`compare`] produced.
#[derive(Debug, Clone)]
pub struct CompareOutcome {
    pub comparison: Comparison,
    /// Files written, in the order they were written.
    pub written: Vec<PathBuf>,
    /// Metrics that regressed beyond the gate's limit (empty without a gate).
    pub regressions: Vec<Regression>,
}

/// Computes the comparison, writes the requested files into `request.out_dir` and checks
/// the gate. A regression is reported in the outcome, not as an error, so that callers
/// decide; the command line turns it into exit status 3.
pub fn compare(request: &CompareRequest) -> Result<CompareOutcome, CompareError> {
    validate_phases(&request.phases)?;
    let phases = request.phases.iter().map(inputs::load_phase).collect::<Result<Vec<_>, _>>()?;
    let baseline = match &request.gate {
        Some(g) => Some(Comparison::load(&g.baseline).map_err(|e| match e {
            ReportError::Invalid { path, detail } => CompareError::Input {
                path,
                detail: format!("not a comparison.json written by gpubench compare ({detail}); give --baseline the comparison.json of an earlier run"),
            },
            other => CompareError::Baseline(other),
        })?),
        None => None,
    };
    let mut comparison = table::build(&phases, request)?;
    let mut written = Vec::new();
    if let Some(dir) = &request.out_dir {
        std::fs::create_dir_all(dir).map_err(|error| CompareError::Write { path: dir.clone(), error })?;
        let png = request.formats.contains(&Format::Png);
        let html = request.formats.contains(&Format::Html);
        let mut drawn = Vec::new();
        if png || html {
            drawn = charts::draw_all(&comparison, &phases, dir, png, html, &mut written)?;
        }
        if png {
            comparison.charts = drawn.iter().map(|d| d.chart.clone()).collect();
        }
        for format in &request.formats {
            if let Some(exporter) = exporter_for(*format) {
                let path = dir.join(exporter.file_name());
                let bytes = exporter.render(&comparison)?;
                crate::support::fs::write_atomically(&path, &bytes).map_err(|error| CompareError::Write { path: path.clone(), error })?;
                written.push(path);
            }
        }
        if html {
            written.push(html::write(&html::Page { comparison: &comparison, charts: &drawn, phases: &phases, out_dir: dir })?);
        }
    }
    let regressions = match (&baseline, &request.gate) {
        (Some(old), Some(g)) => gate::check(old, &comparison, g.max_regression_pct, &g.baseline)?,
        _ => Vec::new(),
    };
    Ok(CompareOutcome { comparison, written, regressions })
}

/// What the command prints on stdout for `outcome`: the comparison as JSON with `json`, else
/// the table, the verdict and where the report files are.
pub fn render_outcome(outcome: &CompareOutcome, request: &CompareRequest, json: bool, quiet: bool) -> String {
    use std::fmt::Write;
    if json {
        return format!("{}\n", serde_json::to_string_pretty(&outcome.comparison).unwrap_or_default());
    }
    let mut out = String::new();
    let _ = writeln!(out, "{}", markdown::terminal_table(&outcome.comparison));
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", outcome.comparison.verdict);
    let html = outcome.written.iter().find(|p| p.extension().is_some_and(|e| e == "html"));
    let md = outcome.written.iter().find(|p| p.extension().is_some_and(|e| e == "md"));
    if html.is_some() || md.is_some() {
        let _ = writeln!(out);
    }
    if let Some(html) = html {
        let _ = writeln!(out, "Open: {}", html.display());
    }
    if let Some(md) = md {
        let _ = writeln!(out, "Report: {}", md.display());
    } else if html.is_none() && !quiet && !outcome.written.is_empty() {
        let dir = request.out_dir.as_deref().unwrap_or(Path::new("."));
        let _ = writeln!(out);
        let _ = writeln!(out, "Wrote {} file(s) in {}", outcome.written.len(), dir.display());
    }
    out
}

/// The command: resolve flags, compare, print the table (or JSON), gate.
pub fn run_cli(args: CompareArgs, quiet: bool) -> Result<ExitStatus, CompareError> {
    let request = args.resolve()?;
    let outcome = compare(&request)?;
    print_out(&render_outcome(&outcome, &request, args.json, quiet));
    if let Some(g) = &request.gate {
        if !outcome.regressions.is_empty() {
            return Err(CompareError::Regressed(outcome.regressions, g.max_regression_pct));
        }
        if !quiet {
            eprintln!(
                "gate: no metric regressed more than {}% against {}",
                g.max_regression_pct,
                g.baseline.display()
            );
        }
    }
    Ok(ExitStatus::Success)
}
