//! One exporter per file format, behind one small trait.

use serde::Serialize;

use crate::report::Comparison;

use super::{markdown, CompareError, Format};

/// Turns a comparison into the bytes of one file.
pub trait Exporter {
    /// The file it writes in the output folder.
    fn file_name(&self) -> &'static str;
    fn render(&self, comparison: &Comparison) -> Result<Vec<u8>, CompareError>;
}

/// The exporter of a format; PNG charts (several files) and the HTML page (which needs
/// the charts and the run reports) are written apart and have none.
pub fn exporter_for(format: Format) -> Option<Box<dyn Exporter>> {
    match format {
        Format::Markdown => Some(Box::new(MarkdownExporter)),
        Format::Csv => Some(Box::new(CsvExporter)),
        Format::Json => Some(Box::new(JsonExporter)),
        Format::Png | Format::Html => None,
    }
}

/// `comparison.md`: verdict, table with winners, cost model, charts, sweeps, inputs.
pub struct MarkdownExporter;

impl Exporter for MarkdownExporter {
    fn file_name(&self) -> &'static str {
        "comparison.md"
    }
    fn render(&self, comparison: &Comparison) -> Result<Vec<u8>, CompareError> {
        Ok(markdown::document(comparison).into_bytes())
    }
}

/// `comparison.json`: the [`Comparison`] itself, the baseline format of the gate.
pub struct JsonExporter;

impl Exporter for JsonExporter {
    fn file_name(&self) -> &'static str {
        "comparison.json"
    }
    fn render(&self, comparison: &Comparison) -> Result<Vec<u8>, CompareError> {
        let mut text = serde_json::to_string_pretty(comparison)
            .map_err(|e| CompareError::Render { file: self.file_name().into(), detail: e.to_string() })?;
        text.push('\n');
        Ok(text.into_bytes())
    }
}

/// `comparison.csv`: one row per phase, for spreadsheets.
pub struct CsvExporter;

#[derive(Serialize)]
struct CsvRow<'a> {
    phase: &'a str,
    pods_per_gpu: u32,
    gpus: f64,
    operating_point: &'a str,
    meets_slo: bool,
    requests_per_min: f64,
    output_tokens_per_s: Option<f64>,
    latency_p50_ms: f64,
    latency_p95_ms: f64,
    latency_p99_ms: f64,
    ttft_p95_ms: Option<f64>,
    util_kind: Option<&'a str>,
    util_mean_pct: Option<f64>,
    util_p95_pct: Option<f64>,
    sm_activity_mean_pct: Option<f64>,
    goodput_fraction: Option<f64>,
    target_rpm: f64,
    gpus_needed: Option<u32>,
    yearly_cost: Option<f64>,
    cost_per_million_output_tokens: Option<f64>,
    gpu_hour_cost: f64,
    license_per_gpu_year: f64,
    report_file: &'a str,
    metrics_file: Option<&'a str>,
    /// What the phase ran on (`gpu` or `cpu`); the `gpu*` columns count that device.
    device_kind: &'a str,
}

impl Exporter for CsvExporter {
    fn file_name(&self) -> &'static str {
        "comparison.csv"
    }
    fn render(&self, c: &Comparison) -> Result<Vec<u8>, CompareError> {
        let err = |e: csv::Error| CompareError::Render { file: "comparison.csv".into(), detail: e.to_string() };
        let mut w = csv::Writer::from_writer(Vec::new());
        for p in &c.phases {
            w.serialize(CsvRow {
                phase: &p.label,
                pods_per_gpu: p.pods_per_gpu,
                gpus: p.gpus,
                operating_point: &p.operating_point,
                meets_slo: p.meets_slo,
                requests_per_min: p.requests_per_min,
                output_tokens_per_s: p.output_tokens_per_s,
                latency_p50_ms: p.latency_p50_ms,
                latency_p95_ms: p.latency_p95_ms,
                latency_p99_ms: p.latency_p99_ms,
                ttft_p95_ms: p.ttft_p95_ms,
                util_kind: p.util_kind.as_deref(),
                util_mean_pct: p.util_mean_pct,
                util_p95_pct: p.util_p95_pct,
                sm_activity_mean_pct: p.sm_activity_mean_pct,
                goodput_fraction: p.goodput_fraction,
                target_rpm: c.cost_model.target_rpm,
                gpus_needed: p.gpus_needed,
                yearly_cost: p.yearly_cost,
                cost_per_million_output_tokens: p.cost_per_million_output_tokens.map(|x| (x * 1e6).round() / 1e6),
                gpu_hour_cost: c.cost_model.gpu_hour_cost,
                license_per_gpu_year: c.cost_model.license_per_gpu_year,
                report_file: &p.report_file,
                metrics_file: p.metrics_file.as_deref(),
                device_kind: p.device_kind.as_deref().or(c.device_kind.as_deref()).unwrap_or("gpu"),
            })
            .map_err(err)?;
        }
        w.into_inner().map_err(|e| CompareError::Render { file: "comparison.csv".into(), detail: e.to_string() })
    }
}
