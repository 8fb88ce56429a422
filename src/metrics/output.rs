//! Where a series goes: the CSV (flushed after every sample, so a killed run loses at
//! most one), the JSON summary, and a live one-line display on a terminal.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::sampling::Outcome;
use super::summary::{human_line, is_device_row, SeriesSummary};
use super::{MetricsArgs, MetricsError};
use crate::report::MetricSample;
use crate::support::fs::write_atomically;

/// The CSV header line of a metric series (the `MetricSample` fields, in order).
pub fn csv_header() -> Vec<String> {
    let mut w = csv::WriterBuilder::new().has_headers(true).from_writer(Vec::new());
    if w.serialize(MetricSample::default()).is_err() {
        return Vec::new();
    }
    let bytes = w.into_inner().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    text.lines().next().unwrap_or("").split(',').map(str::to_string).collect()
}

pub(crate) use crate::support::cli::print_line as print_stdout;

/// Where the summary of `--out FILE.csv` goes: `FILE.summary.json`.
pub fn summary_path(out: &Path) -> PathBuf {
    out.with_extension("summary.json")
}

type CsvOut = csv::Writer<Box<dyn Write + Send>>;

pub(super) struct Outputs {
    csv: Option<(CsvOut, String)>,
    summary: SeriesSummary,
    live: Option<ProgressBar>,
    out_path: Option<PathBuf>,
    json: bool,
    quiet: bool,
    ticks: u64,
}

impl Outputs {
    pub(super) fn open(args: &MetricsArgs, quiet: bool, source: &str) -> Result<Self, MetricsError> {
        let csv = match &args.out {
            Some(path) => {
                let write_err = |source| MetricsError::Write { path: path.display().to_string(), source };
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(write_err)?;
                }
                let file = std::fs::File::create(path).map_err(write_err)?;
                Some((Box::new(file) as Box<dyn Write + Send>, path.display().to_string()))
            }
            None if args.command.is_empty() && !args.json => Some((Box::new(std::io::stdout()) as Box<dyn Write + Send>, "stdout".to_string())),
            None => {
                if !quiet && !args.command.is_empty() {
                    eprintln!("note: the series is not kept; add --out FILE.csv to keep it");
                }
                None
            }
        };
        let csv = match csv {
            Some((sink, name)) => {
                let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(sink);
                w.write_record(csv_header()).and_then(|_| w.flush().map_err(csv::Error::from)).map_err(|e| MetricsError::Write {
                    path: name.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                Some((w, name))
            }
            None => None,
        };
        // A command's own output (and progress bar) shares the terminal: no live line then.
        let live = (!quiet && args.command.is_empty() && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
            bar.set_message(format!("{source}: waiting for the first sample"));
            bar
        });
        Ok(Outputs { csv, summary: SeriesSummary::default(), live, out_path: args.out.clone(), json: args.json, quiet, ticks: 0 })
    }

    /// Writes one tick's rows and flushes them.
    pub(super) fn push(&mut self, rows: &[MetricSample]) -> Result<(), MetricsError> {
        if let Some((w, name)) = &mut self.csv {
            let err = |e: String, name: &str| MetricsError::Write { path: name.to_string(), source: std::io::Error::other(e) };
            for r in rows {
                w.serialize(r).map_err(|e| err(e.to_string(), name))?;
            }
            w.flush().map_err(|e| MetricsError::Write { path: name.clone(), source: e })?;
        }
        for r in rows {
            self.summary.add(r);
        }
        self.ticks += 1;
        if let Some(bar) = &self.live {
            bar.set_message(live_line(rows, self.ticks));
            bar.tick();
        }
        Ok(())
    }

    /// Writes the summary beside `--out` and on stdout with `--json`; tells people on stderr.
    pub(super) fn finish(&mut self, note: &str, interval_s: Option<f64>, outcome: &Outcome) -> Result<(), MetricsError> {
        if let Some(bar) = self.live.take() {
            bar.finish_and_clear();
        }
        let summaries = self.summary.finish(interval_s, note);
        let text = serde_json::to_string_pretty(&summaries).unwrap_or_else(|_| "[]".into());
        if let Some(out) = &self.out_path {
            let path = summary_path(out);
            write_atomically(&path, text.as_bytes()).map_err(|source| MetricsError::Write { path: path.display().to_string(), source })?;
        }
        if self.json {
            print_stdout(&text);
        }
        if !self.quiet {
            for s in &summaries {
                eprintln!("{}", human_line(s));
            }
            if outcome.gaps > 0 {
                eprintln!(
                    "warning: {} tick(s) had no sample (last: {})",
                    outcome.gaps,
                    outcome.last_gap.as_deref().unwrap_or("unknown")
                );
            }
            if let Some(out) = &self.out_path {
                eprintln!("wrote {} and {}", out.display(), summary_path(out).display());
            }
        }
        Ok(())
    }
}

fn live_line(rows: &[MetricSample], ticks: u64) -> String {
    let parts: Vec<String> = rows
        .iter()
        .filter(|r| is_device_row(r))
        .map(|r| {
            let mut s = format!("{} {}: util {}", r.source, r.device_id, r.gpu_util_pct.map(|u| format!("{u:.0}%")).unwrap_or_else(|| "-".into()));
            if let (Some(u), Some(t)) = (r.mem_used_mib, r.mem_total_mib) {
                s.push_str(&format!(" mem {:.1}/{:.1} GiB", u / 1024.0, t / 1024.0));
            }
            if let Some(p) = r.power_w {
                s.push_str(&format!(" {p:.0} W"));
            }
            if let Some(t) = r.temperature_c {
                s.push_str(&format!(" {t:.0}°C"));
            }
            s
        })
        .collect();
    format!("{} | {ticks} samples", parts.join("  "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_lists_every_column_in_order() {
        let h = csv_header();
        assert_eq!(h.first().map(String::as_str), Some("timestamp"));
        assert_eq!(h.last().map(String::as_str), Some("throttle_reasons"));
        assert!(h.contains(&"gpu_util_pct".to_string()));
        assert_eq!(h.len(), 21);
    }

    #[test]
    fn the_summary_sits_beside_the_csv() {
        assert_eq!(summary_path(Path::new("reports/p1-gpu.csv")), PathBuf::from("reports/p1-gpu.summary.json"));
    }

    #[test]
    fn the_live_line_shows_device_rows() {
        let r = MetricSample {
            source: "nvml".into(),
            device_id: "0".into(),
            gpu_util_pct: Some(87.0),
            mem_used_mib: Some(18432.0),
            mem_total_mib: Some(81559.0),
            power_w: Some(512.0),
            ..Default::default()
        };
        let line = live_line(&[r], 3);
        assert_eq!(line, "nvml 0: util 87% mem 18.0/79.6 GiB 512 W | 3 samples");
    }
}
