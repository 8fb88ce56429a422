//! `comparison.html`: the whole report in one file that needs no network. Charts are
//! inline SVG with a hover title on every point, styles and the small sorting script are
//! inline, and every text from the inputs is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::report::{Comparison, EnvironmentStamp, PhaseSummary};

use super::charts::Drawn;
use super::inputs::PhaseData;
use super::markdown::{load, value, winner_cell};
use crate::support::fmt::format_count;
use super::{device, CompareError};

const STYLE: &str = include_str!("html/style.css");
const SCRIPT: &str = include_str!("html/script.js");

pub const FILE_NAME: &str = "comparison.html";

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page shows beyond the comparison itself: the charts, the run reports
/// (environment stamps, definitions) and the folder it is written to (for the links).
pub struct Page<'a> {
    pub comparison: &'a Comparison,
    pub charts: &'a [Drawn],
    pub phases: &'a [PhaseData],
    pub out_dir: &'a Path,
}

/// Renders and writes `comparison.html` into the output folder.
pub fn write(page: &Page<'_>) -> Result<PathBuf, CompareError> {
    let path = page.out_dir.join(FILE_NAME);
    crate::support::fs::write_atomically(&path, document(page).as_bytes()).map_err(|error| CompareError::Write { path: path.clone(), error })?;
    Ok(path)
}

pub fn document(page: &Page<'_>) -> String {
    let c = page.comparison;
    let labels: Vec<&str> = c.phases.iter().map(|p| p.label.as_str()).collect();
    let title = format!("Phase comparison: {}", labels.join(" vs "));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>\n<p class=\"verdict\">{}</p>\n",
        escape(&title),
        escape(&title),
        escape(&c.verdict)
    );
    summary(&mut h, c);
    cost_model(&mut h, c);
    if page.charts.iter().any(|d| d.svg.is_some()) {
        h.push_str("<h2>Charts</h2>\n<p class=\"muted\">Hover a point for its value.</p>\n");
        for (i, d) in page.charts.iter().enumerate() {
            let Some(svg) = &d.svg else { continue };
            let kind = d.chart.file.trim_end_matches(".png");
            let _ = write!(
                h,
                "<figure class=\"chart\" id=\"chart-{i}\" data-chart=\"{}\">\n{}<figcaption>{}</figcaption>\n</figure>\n",
                escape(kind),
                strip_xml_declaration(svg),
                escape(&d.chart.title)
            );
        }
    }
    if c.phases.iter().any(|p| p.points.len() > 1) {
        h.push_str("<h2>Sweeps</h2>\n<p>Throughput against latency at each load level; where throughput stops rising while latency climbs, the deployment is saturated.</p>\n");
        for p in c.phases.iter().filter(|p| p.points.len() > 1) {
            sweep(&mut h, p);
        }
    }
    inputs(&mut h, c, page.out_dir);
    environments(&mut h, page.phases);
    definitions(&mut h, page.phases);
    if !c.notes.is_empty() {
        h.push_str("<h2>Notes</h2>\n<ul>\n");
        for n in &c.notes {
            let _ = writeln!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>\n");
    }
    let _ = write!(h, "<p class=\"muted\">Written by gpubench {}.</p>\n</main>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n", env!("CARGO_PKG_VERSION"));
    h
}

fn strip_xml_declaration(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

/// A numeric cell: the formatted text, with the exact number in `data-value`.
fn num_cell(h: &mut String, metric: &str, v: Option<f64>, extra: &str) {
    match v {
        Some(x) => {
            let _ = write!(h, "<td class=\"num{extra}\" data-value=\"{x}\">{}</td>", escape(&value(metric, Some(x))));
        }
        None => {
            let _ = write!(h, "<td class=\"num{extra}\">-</td>");
        }
    }
}

fn summary(h: &mut String, c: &Comparison) {
    h.push_str("<h2>Summary</h2>\n<div class=\"scroll\"><table class=\"sortable\" id=\"summary\">\n<thead><tr><th>Metric</th>");
    for p in &c.phases {
        let _ = write!(h, "<th>{}</th>", escape(&p.label));
    }
    h.push_str("<th>Winner</th></tr></thead>\n<tbody>\n");
    for row in &c.rows {
        let _ = write!(h, "<tr data-metric=\"{}\"><td>{}</td>", escape(&row.metric), escape(&row.title));
        for (p, v) in c.phases.iter().zip(&row.values) {
            let win = if row.winners.contains(&p.label) { " win" } else { "" };
            let _ = write!(h, "<td class=\"num{win}\" data-metric=\"{}\" data-phase=\"{}\"", escape(&row.metric), escape(&p.label));
            match v {
                Some(x) => {
                    let _ = write!(h, " data-value=\"{x}\">{}</td>", escape(&value(&row.metric, Some(*x))));
                }
                None => h.push_str(">-</td>"),
            }
        }
        let _ = writeln!(h, "<td>{}</td></tr>", escape(&winner_cell(row)));
    }
    h.push_str("</tbody></table></div>\n");
    let _ = writeln!(
        h,
        "<p>Each phase is shown at its operating point: its fastest load-test point{}. Latency is end to end (request sent to last byte). Winners are highlighted.</p>",
        if c.cost_model.slo_ms.is_empty() { "" } else { " within the SLO" }
    );
    let kinds: Vec<&str> = c.phases.iter().filter_map(|p| p.util_kind.as_deref()).collect();
    if kinds.contains(&"gpu") {
        let _ = writeln!(
            h,
            "<p>GPU utilization is NVML's duty cycle: the share of time any kernel ran, not how busy the SMs were{}.</p>",
            if c.phases.iter().any(|p| p.sm_activity_mean_pct.is_some()) { " (SM activity says that)" } else { "" }
        );
    }
    if kinds.contains(&"cpu") {
        h.push_str("<p>CPU utilization is the host's CPU busy share while the phase ran.</p>\n");
    }
}

fn cost_model(h: &mut String, c: &Comparison) {
    h.push_str("<h2>Cost model</h2>\n<ul>\n");
    for line in super::markdown::cost_lines(c) {
        let _ = writeln!(h, "<li>{}</li>", escape(&line));
    }
    h.push_str("</ul>\n");
}

fn sweep(h: &mut String, p: &PhaseSummary) {
    let _ = write!(
        h,
        "<h3>{}</h3>\n<div class=\"scroll\"><table class=\"sortable sweep\" data-phase=\"{}\">\n<thead><tr><th>Point</th><th>Load</th><th>req/min</th><th>Output tok/s</th><th>p50</th><th>p95</th><th>p99</th><th>TTFT p95</th><th>Errors</th><th>Within SLO</th></tr></thead>\n<tbody>\n",
        escape(&p.label),
        escape(&p.label)
    );
    for pt in &p.points {
        let op = if pt.label == p.operating_point { " (operating point)" } else { "" };
        let load_value = pt.rate.or(pt.concurrency.map(f64::from));
        let _ = write!(h, "<tr><td>{}{op}</td>", escape(&pt.label));
        match load_value {
            Some(x) => {
                let _ = write!(h, "<td class=\"num\" data-value=\"{x}\">{}</td>", escape(&load(pt)));
            }
            None => h.push_str("<td class=\"num\">-</td>"),
        }
        num_cell(h, "requests_per_min", Some(pt.requests_per_min), "");
        num_cell(h, "output_tokens_per_s", pt.output_tokens_per_s, "");
        num_cell(h, "latency_p50_ms", pt.latency_p50_ms, "");
        num_cell(h, "latency_p95_ms", pt.latency_p95_ms, "");
        num_cell(h, "latency_p99_ms", pt.latency_p99_ms, "");
        num_cell(h, "ttft_p95_ms", pt.ttft_p95_ms, "");
        let _ = writeln!(
            h,
            "<td class=\"num\" data-value=\"{}\">{}</td><td>{}</td></tr>",
            pt.errors,
            pt.errors,
            if pt.meets_slo { "yes" } else { "no" }
        );
    }
    h.push_str("</tbody></table></div>\n");
}

fn inputs(h: &mut String, c: &Comparison, out_dir: &Path) {
    let dev = device::noun(c);
    let _ = write!(
        h,
        "<h2>Inputs</h2>\n<div class=\"scroll\"><table class=\"sortable\" id=\"inputs\">\n<thead><tr><th>Phase</th><th>Device</th><th>Run report</th><th>Metric series</th><th>Pods per {dev}</th><th>{}s</th><th>Operating point</th></tr></thead>\n<tbody>\n",
        device::capitalized(dev)
    );
    let link = |file: &str| {
        let href = relative_href(Path::new(file), out_dir);
        format!("<a href=\"{}\"><code>{}</code></a>", escape(&href), escape(file))
    };
    for p in &c.phases {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\" data-value=\"{}\">{}</td><td class=\"num\" data-value=\"{}\">{}</td><td>{}{}</td></tr>",
            escape(&p.label),
            p.device_kind.as_deref().map(|k| device::noun_of(Some(k))).unwrap_or("not recorded"),
            link(&p.report_file),
            p.metrics_file.as_deref().map(link).unwrap_or_else(|| "-".into()),
            p.pods_per_gpu,
            p.pods_per_gpu,
            p.gpus,
            format_count(p.gpus),
            escape(&p.operating_point),
            if p.meets_slo { "" } else { " (misses the SLO)" }
        );
    }
    h.push_str("</tbody></table></div>\n");
}

fn environments(h: &mut String, phases: &[PhaseData]) {
    h.push_str("<h2>Environment</h2>\n<p>What ran each phase's load test, from its run report.</p>\n<div class=\"envs\">\n");
    for p in phases {
        let Some(run) = p.runs.first() else { continue };
        let e: &EnvironmentStamp = &run.environment;
        let _ = write!(h, "<div><h3>{}</h3>\n<table class=\"env\">\n", escape(&p.input.label));
        let gpus = if e.gpus.is_empty() {
            "none".to_string()
        } else {
            e.gpus
                .iter()
                .map(|g| format!("{}: {} ({}, driver {})", g.index, g.name, gib(g.memory_total_bytes), g.driver_version))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let model = e
            .server
            .as_ref()
            .and_then(|s| s.pointer("/data/0/id"))
            .and_then(|v| v.as_str())
            .map(String::from)
            .or_else(|| run.target.model.clone())
            .unwrap_or_else(|| "-".into());
        let hosts: std::collections::BTreeSet<&str> = p.runs.iter().map(|r| r.environment.hostname.as_str()).collect();
        let rows = [
            ("gpubench", e.gpubench_version.clone()),
            ("Host", hosts.into_iter().collect::<Vec<_>>().join(", ")),
            ("OS", format!("{} ({})", e.os, e.arch)),
            ("CPU", format!("{}, {} cores", e.cpu_model, e.cpu_cores)),
            ("Memory", gib(e.memory_total_bytes)),
            ("Accelerators", gpus),
            ("Server", run.target.urls.join(", ")),
            ("Model", model),
            ("Started", run.started_at.clone()),
        ];
        for (k, v) in rows {
            let _ = writeln!(h, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
        }
        h.push_str("</table></div>\n");
    }
    h.push_str("</div>\n");
}

fn definitions(h: &mut String, phases: &[PhaseData]) {
    let mut defs: BTreeMap<&str, &str> = BTreeMap::new();
    for run in phases.iter().flat_map(|p| p.runs.iter()) {
        for (k, v) in &run.definitions {
            defs.entry(k.as_str()).or_insert(v.as_str());
        }
    }
    if defs.is_empty() {
        return;
    }
    h.push_str("<h2>Definitions</h2>\n<p>How each metric was measured, from the run reports.</p>\n<dl class=\"defs\">\n");
    for (k, v) in defs {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
    }
    h.push_str("</dl>\n");
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The link from a page in `base` to `target`: relative when both resolve on disk (so the
/// folder can be moved whole), percent-encoded where a file name needs it.
pub fn relative_href(target: &Path, base: &Path) -> String {
    let rel = match (target.canonicalize(), base.canonicalize()) {
        (Ok(t), Ok(b)) => relative_path(&t, &b).unwrap_or(t),
        _ => target.to_path_buf(),
    };
    if rel.is_absolute() {
        if let Ok(url) = url::Url::from_file_path(&rel) {
            return url.to_string();
        }
    }
    let text = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/");
    percent_encode(&text)
}

fn relative_path(target: &Path, base: &Path) -> Option<PathBuf> {
    let t: Vec<Component> = target.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    Some(out)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape("a<b>&\"c\"'d'"), "a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39;");
        assert_eq!(escape("<script>alert(1)</script>"), "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert_eq!(escape("plain ≤ text"), "plain ≤ text");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn links_are_relative_to_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(dir.path().join("p 1#.json"), "{}").unwrap();
        std::fs::write(out.join("p2.json"), "{}").unwrap();
        assert_eq!(relative_href(&dir.path().join("p 1#.json"), &out), "../p%201%23.json");
        assert_eq!(relative_href(&out.join("p2.json"), &out), "p2.json");
        // A file that is not there keeps its path as given.
        assert_eq!(relative_href(Path::new("gone/p3.json"), &out), "gone/p3.json");
    }
}
