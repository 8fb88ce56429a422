//! The command line and the config file of `compare`, resolved into one [`CompareRequest`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use super::CompareError;

/// Text shown under `gpubench compare --help`.
pub const AFTER_HELP: &str = "\
Phases: a positional RUN.json is a phase named after its file (p1.json -> p1).
--phase names it and adds what the report cannot know, e.g.
  --phase sharing=p3.json,metrics=p3-gpu.csv,pods-per-gpu=3,gpus=1
A sweep file (several runs) is one phase; its operating point is its fastest point within the SLOs.

Cost model:
  GPUs needed = ceil(target req/min / (req/min at the operating point / GPUs used))
  yearly cost = GPUs needed x (gpu-hour-cost x 8760 + license-per-gpu-year)
  cost per million output tokens = GPUs used x hourly cost / (output tokens/s x 3600 / 1e6)

Examples:
  gpubench compare reports/p1.json reports/p2.json reports/p3.json --out-dir reports/compare
  gpubench compare --phase bare-metal=p1.json,metrics=p1.csv \\
      --phase sharing=p3.json,pods-per-gpu=3 --target-rpm 180 --gpu-hour-cost 2 --slo e2e=2s
  gpubench compare --config compare.toml --baseline old/comparison.json --max-regression 5%";

/// `gpubench compare`: the phase comparison report (tables, charts, cost, verdict, gate).
#[derive(Debug, Clone, Default, Args)]
pub struct CompareArgs {
    /// Run report files (load-test --out), one phase each, named after the file.
    #[arg(value_name = "RUN.json")]
    pub reports: Vec<PathBuf>,
    /// A named phase: NAME=RUN.json[,metrics=FILE.csv][,pods-per-gpu=N][,gpus=N][,license-per-gpu-year=X]. Repeatable.
    #[arg(long = "phase", value_name = "SPEC")]
    pub phases: Vec<String>,
    /// TOML file with the phases and any of the options below (flags given here win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Price of one GPU hour [default: 2.00]
    #[arg(long, value_name = "PRICE")]
    pub gpu_hour_cost: Option<f64>,
    /// Licence or support cost per GPU and year [default: 0]
    #[arg(long, value_name = "PRICE")]
    pub license_per_gpu_year: Option<f64>,
    /// Request rate to cost, in requests per minute [default: the best measured phase's]
    #[arg(long, value_name = "RPM")]
    pub target_rpm: Option<f64>,
    /// Latency objective a point must meet at p95, e.g. e2e=2s, ttft=500ms (e2e, ttft, tpot, itl). Repeatable.
    #[arg(long, value_name = "METRIC=TIME", value_delimiter = ',')]
    pub slo: Vec<String>,
    /// Folder for comparison.html, .md, .csv, .json and the charts [default: reports/compare]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// What to write: any of md, csv, json, png, html [default: md,csv,json,png,html]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub format: Vec<String>,
    /// A comparison.json of an earlier run to gate against (exit 3 on a regression).
    #[arg(long, value_name = "OLD.json")]
    pub baseline: Option<PathBuf>,
    /// Largest allowed worsening of any gated metric against --baseline, e.g. 5% [default: 5%]
    #[arg(long, value_name = "PERCENT")]
    pub max_regression: Option<String>,
    /// Print the comparison as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    Markdown,
    Csv,
    Json,
    Png,
    /// `comparison.html`: one self-contained page with the charts inline as SVG.
    Html,
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Markdown, Format::Csv, Format::Json, Format::Png, Format::Html];

    fn parse(text: &str) -> Result<Self, CompareError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "md" | "markdown" => Ok(Format::Markdown),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "png" => Ok(Format::Png),
            "html" => Ok(Format::Html),
            other => Err(CompareError::usage(format!("--format: unknown format '{other}': use any of md, csv, json, png, html"))),
        }
    }
}

/// One phase to compare: a run report file and what it cannot know by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseInput {
    pub label: String,
    pub report: PathBuf,
    pub metrics: Option<PathBuf>,
    pub pods_per_gpu: u32,
    pub gpus: f64,
    /// Overrides the request's licence cost for this phase.
    pub license_per_gpu_year: Option<f64>,
}

impl PhaseInput {
    /// A phase named after its report file.
    pub fn from_file(report: impl Into<PathBuf>) -> Self {
        let report = report.into();
        let label = report.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "phase".into());
        PhaseInput { label, report, metrics: None, pods_per_gpu: 1, gpus: 1.0, license_per_gpu_year: None }
    }
}

/// A regression gate against an earlier comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSpec {
    pub baseline: PathBuf,
    /// Largest allowed worsening, in percent.
    pub max_regression_pct: f64,
}

/// Everything `compare` needs: the library entry point [`super::compare`] takes this.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRequest {
    pub phases: Vec<PhaseInput>,
    pub gpu_hour_cost: f64,
    pub license_per_gpu_year: f64,
    /// `None`: the best measured phase's rate at the SLOs.
    pub target_rpm: Option<f64>,
    /// SLOs in milliseconds by metric.
    pub slo_ms: BTreeMap<String, f64>,
    /// Where to write the files; `None` writes nothing.
    pub out_dir: Option<PathBuf>,
    pub formats: Vec<Format>,
    pub gate: Option<GateSpec>,
}

impl CompareRequest {
    /// The defaults of the command line for these phases, writing to `out_dir`.
    pub fn new(phases: Vec<PhaseInput>, out_dir: Option<PathBuf>) -> Self {
        CompareRequest {
            phases,
            gpu_hour_cost: DEFAULT_GPU_HOUR_COST,
            license_per_gpu_year: 0.0,
            target_rpm: None,
            slo_ms: BTreeMap::new(),
            out_dir,
            formats: Format::ALL.to_vec(),
            gate: None,
        }
    }
}

pub const DEFAULT_GPU_HOUR_COST: f64 = 2.0;
pub const DEFAULT_OUT_DIR: &str = "reports/compare";
pub const DEFAULT_MAX_REGRESSION_PCT: f64 = 5.0;

/// `compare.toml`: the same options as the flags, and the phases as `[[phase]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    gpu_hour_cost: Option<f64>,
    license_per_gpu_year: Option<f64>,
    target_rpm: Option<f64>,
    #[serde(default)]
    slo: BTreeMap<String, String>,
    out_dir: Option<PathBuf>,
    format: Option<Vec<String>>,
    baseline: Option<PathBuf>,
    max_regression: Option<String>,
    #[serde(default)]
    phase: Vec<ConfigPhase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPhase {
    name: String,
    report: PathBuf,
    metrics: Option<PathBuf>,
    pods_per_gpu: Option<u32>,
    gpus: Option<f64>,
    license_per_gpu_year: Option<f64>,
}

impl CompareArgs {
    /// Merges the flags with the config file (flags win) and checks every value.
    pub fn resolve(&self) -> Result<CompareRequest, CompareError> {
        let config = match &self.config {
            Some(path) => Some((load_config(path)?, path.parent().map(Path::to_path_buf).unwrap_or_default())),
            None => None,
        };
        let mut phases = Vec::new();
        if let Some((cfg, dir)) = &config {
            for p in &cfg.phase {
                phases.push(PhaseInput {
                    label: p.name.clone(),
                    report: dir.join(&p.report),
                    metrics: p.metrics.as_ref().map(|m| dir.join(m)),
                    pods_per_gpu: p.pods_per_gpu.unwrap_or(1),
                    gpus: p.gpus.unwrap_or(1.0),
                    license_per_gpu_year: p.license_per_gpu_year,
                });
            }
        }
        phases.extend(self.reports.iter().map(PhaseInput::from_file));
        for spec in &self.phases {
            phases.push(parse_phase_spec(spec)?);
        }
        let cfg = config.as_ref().map(|(c, _)| c);
        let cfg_dir = config.as_ref().map(|(_, d)| d.clone()).unwrap_or_default();

        let mut slo_ms = BTreeMap::new();
        if let Some(c) = cfg {
            for (metric, time) in &c.slo {
                let (m, ms) = parse_slo(&format!("{metric}={time}"))?;
                slo_ms.insert(m, ms);
            }
        }
        for spec in &self.slo {
            let (m, ms) = parse_slo(spec)?;
            slo_ms.insert(m, ms);
        }

        let format_list: Vec<String> = if !self.format.is_empty() {
            self.format.clone()
        } else {
            cfg.and_then(|c| c.format.clone()).unwrap_or_default()
        };
        let mut formats = Vec::new();
        for f in &format_list {
            let f = Format::parse(f)?;
            if !formats.contains(&f) {
                formats.push(f);
            }
        }
        if formats.is_empty() {
            formats = Format::ALL.to_vec();
        }
        formats.sort();

        let gpu_hour_cost = non_negative("--gpu-hour-cost", self.gpu_hour_cost.or(cfg.and_then(|c| c.gpu_hour_cost)))?
            .unwrap_or(DEFAULT_GPU_HOUR_COST);
        let license_per_gpu_year =
            non_negative("--license-per-gpu-year", self.license_per_gpu_year.or(cfg.and_then(|c| c.license_per_gpu_year)))?
                .unwrap_or(0.0);
        let target_rpm = non_negative("--target-rpm", self.target_rpm.or(cfg.and_then(|c| c.target_rpm)))?;
        if target_rpm == Some(0.0) {
            return Err(CompareError::usage("--target-rpm must be above 0: give the request rate to cost, e.g. 180"));
        }
        let out_dir = self
            .out_dir
            .clone()
            .or_else(|| cfg.and_then(|c| c.out_dir.as_ref().map(|d| cfg_dir.join(d))))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_OUT_DIR));

        let baseline = self.baseline.clone().or_else(|| cfg.and_then(|c| c.baseline.as_ref().map(|b| cfg_dir.join(b))));
        let max_regression = self.max_regression.clone().or_else(|| cfg.and_then(|c| c.max_regression.clone()));
        let gate = match (baseline, max_regression) {
            (Some(baseline), m) => Some(GateSpec {
                baseline,
                max_regression_pct: m.as_deref().map(parse_percent).transpose()?.unwrap_or(DEFAULT_MAX_REGRESSION_PCT),
            }),
            (None, Some(_)) => {
                return Err(CompareError::usage("--max-regression needs --baseline OLD.json (a comparison.json of an earlier run)"))
            }
            (None, None) => None,
        };

        let request = CompareRequest {
            phases,
            gpu_hour_cost,
            license_per_gpu_year,
            target_rpm,
            slo_ms,
            out_dir: Some(out_dir),
            formats,
            gate,
        };
        validate_phases(&request.phases)?;
        Ok(request)
    }
}

/// Checks the phase list: at least one, unique labels, sane counts.
pub fn validate_phases(phases: &[PhaseInput]) -> Result<(), CompareError> {
    if phases.is_empty() {
        return Err(CompareError::usage(
            "nothing to compare: give run reports (gpubench compare p1.json p2.json), --phase NAME=RUN.json or --config compare.toml",
        ));
    }
    for (i, p) in phases.iter().enumerate() {
        if p.label.trim().is_empty() {
            return Err(CompareError::usage(format!("phase for {} has an empty name: name it with --phase NAME=FILE", p.report.display())));
        }
        if phases[..i].iter().any(|q| q.label == p.label) {
            return Err(CompareError::usage(format!(
                "two phases are named '{}': name them apart with --phase NAME=FILE",
                p.label
            )));
        }
        if p.pods_per_gpu == 0 {
            return Err(CompareError::usage(format!("phase '{}': pods-per-gpu must be at least 1", p.label)));
        }
        if !(p.gpus.is_finite() && p.gpus > 0.0) {
            return Err(CompareError::usage(format!("phase '{}': gpus must be above 0 (e.g. gpus=1)", p.label)));
        }
    }
    Ok(())
}

fn load_config(path: &Path) -> Result<ConfigFile, CompareError> {
    let text = std::fs::read_to_string(path).map_err(|e| CompareError::Input {
        path: path.into(),
        detail: format!("cannot read the config file ({e})"),
    })?;
    toml::from_str(&text).map_err(|e| CompareError::Input {
        path: path.into(),
        detail: format!("not a valid compare config: {}", e.message().trim()),
    })
}

/// Parses `NAME=RUN.json[,metrics=FILE.csv][,pods-per-gpu=N][,gpus=N][,license-per-gpu-year=X]`.
pub fn parse_phase_spec(spec: &str) -> Result<PhaseInput, CompareError> {
    let bad = |why: String| {
        CompareError::usage(format!(
            "--phase '{spec}': {why}. Expected NAME=RUN.json[,metrics=FILE.csv][,pods-per-gpu=N][,gpus=N]"
        ))
    };
    let mut parts = spec.split(',');
    let head = parts.next().unwrap_or_default();
    let (name, file) = head.split_once('=').ok_or_else(|| bad("no NAME=RUN.json at the start".into()))?;
    let (name, file) = (name.trim(), file.trim());
    if name.is_empty() || file.is_empty() {
        return Err(bad("the name and the file must not be empty".into()));
    }
    let mut phase = PhaseInput::from_file(file);
    phase.label = name.to_string();
    for part in parts {
        let (key, value) = part.split_once('=').ok_or_else(|| bad(format!("'{part}' is not KEY=VALUE")))?;
        let value = value.trim();
        match key.trim() {
            "metrics" => phase.metrics = Some(PathBuf::from(value)),
            "pods-per-gpu" | "pods_per_gpu" => {
                phase.pods_per_gpu =
                    value.parse().ok().filter(|n| *n >= 1).ok_or_else(|| bad(format!("pods-per-gpu '{value}' is not a whole number >= 1")))?
            }
            "gpus" => {
                phase.gpus = value
                    .parse()
                    .ok()
                    .filter(|g: &f64| g.is_finite() && *g > 0.0)
                    .ok_or_else(|| bad(format!("gpus '{value}' is not a number above 0")))?
            }
            "license-per-gpu-year" | "license_per_gpu_year" => {
                phase.license_per_gpu_year = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|g: &f64| g.is_finite() && *g >= 0.0)
                        .ok_or_else(|| bad(format!("license-per-gpu-year '{value}' is not a price >= 0")))?,
                )
            }
            other => return Err(bad(format!("unknown key '{other}'"))),
        }
    }
    Ok(phase)
}

/// Parses `e2e=2s` into (`e2e`, 2000.0).
pub fn parse_slo(spec: &str) -> Result<(String, f64), CompareError> {
    let (metric, time) = spec
        .split_once('=')
        .ok_or_else(|| CompareError::usage(format!("--slo '{spec}': expected METRIC=TIME, e.g. e2e=2s or ttft=500ms")))?;
    let metric = metric.trim().to_ascii_lowercase();
    if !SLO_METRICS.contains(&metric.as_str()) {
        return Err(CompareError::usage(format!("--slo '{spec}': unknown metric '{metric}': use one of e2e, ttft, tpot, itl")));
    }
    let d = crate::support::cli::parse_duration(time).map_err(|e| CompareError::usage(format!("--slo '{spec}': {e}")))?;
    if d.is_zero() {
        return Err(CompareError::usage(format!("--slo '{spec}': the limit must be above 0")));
    }
    Ok((metric, d.as_secs_f64() * 1000.0))
}

pub const SLO_METRICS: [&str; 4] = ["e2e", "ttft", "tpot", "itl"];

/// Parses `5%`, `5` or `2.5 %` as percent.
pub fn parse_percent(text: &str) -> Result<f64, CompareError> {
    let t = text.trim().trim_end_matches('%').trim();
    t.parse::<f64>()
        .ok()
        .filter(|p| p.is_finite() && *p >= 0.0)
        .ok_or_else(|| CompareError::usage(format!("--max-regression '{text}': expected a percentage such as 5%")))
}

fn non_negative(flag: &str, value: Option<f64>) -> Result<Option<f64>, CompareError> {
    match value {
        Some(v) if !(v.is_finite() && v >= 0.0) => Err(CompareError::usage(format!("{flag} must be a number >= 0, not {v}"))),
        v => Ok(v),
    }
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
