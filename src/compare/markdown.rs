//! The human renderings: `comparison.md` and the table printed on the terminal.

use std::fmt::Write as _;

use comfy_table::{presets, CellAlignment, Table};

use crate::report::{Comparison, ComparisonRow, PhaseSummary, SweepPoint};
use crate::support::fmt::human_ms;

use crate::support::fmt::{format_count, group_thousands};
use super::verdict::money;

/// A value of a row, formatted for its metric.
pub fn value(metric: &str, v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    match metric {
        "util_mean_pct" | "util_p95_pct" | "sm_activity_mean_pct" => format!("{v:.1}%"),
        "goodput_fraction" => format!("{:.1}%", v * 100.0),
        "pods_per_gpu" | "gpus" | "gpus_needed" => format_count(v),
        "requests_per_min" | "output_tokens_per_s" => group_thousands(&format!("{v:.1}")),
        "latency_p50_ms" | "latency_p95_ms" | "latency_p99_ms" | "ttft_p95_ms" => human_ms(v),
        "yearly_cost" => money(v),
        "cost_per_million_output_tokens" => per_million(v),
        m if m.ends_with("_pct") => format!("{v:.1}%"),
        _ => format!("{v}"),
    }
}

fn per_million(v: f64) -> String {
    if v >= 100.0 {
        money(v)
    } else if v >= 0.01 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

pub(super) fn winner_cell(row: &ComparisonRow) -> String {
    match (row.better.as_str(), row.winners.len()) {
        ("none", _) => "-".into(),
        (_, 0) if row.values.iter().filter(|v| v.is_some()).count() >= 2 => "tie".into(),
        (_, 0) => "-".into(),
        _ => row.winners.join(", "),
    }
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The whole `comparison.md`.
pub fn document(c: &Comparison) -> String {
    let mut md = String::new();
    let labels: Vec<&str> = c.phases.iter().map(|p| p.label.as_str()).collect();
    let _ = writeln!(md, "# Phase comparison: {}\n", escape(&labels.join(" vs ")));
    let _ = writeln!(md, "{}\n", c.verdict);

    let _ = writeln!(md, "## Summary\n");
    let _ = write!(md, "| Metric |");
    for l in &labels {
        let _ = write!(md, " {} |", escape(l));
    }
    let _ = writeln!(md, " Winner |");
    let _ = write!(md, "|---|");
    for _ in &labels {
        let _ = write!(md, "---:|");
    }
    let _ = writeln!(md, "---|");
    for row in &c.rows {
        let _ = write!(md, "| {} |", escape(&row.title));
        for (i, v) in row.values.iter().enumerate() {
            let text = value(&row.metric, *v);
            if row.winners.iter().any(|w| w == labels[i]) {
                let _ = write!(md, " **{text}** |");
            } else {
                let _ = write!(md, " {text} |");
            }
        }
        let _ = writeln!(md, " {} |", escape(&winner_cell(row)));
    }
    let _ = writeln!(
        md,
        "\nEach phase is shown at its operating point: its fastest load-test point{}. Latency is end to end (request sent to last byte).\n",
        if c.cost_model.slo_ms.is_empty() { "" } else { " within the SLO" }
    );
    let kinds: Vec<&str> = c.phases.iter().filter_map(|p| p.util_kind.as_deref()).collect();
    if kinds.contains(&"gpu") {
        let _ = writeln!(
            md,
            "GPU utilization is NVML's duty cycle: the share of time any kernel ran, not how busy the SMs were{}.\n",
            if c.phases.iter().any(|p| p.sm_activity_mean_pct.is_some()) { " (SM activity says that)" } else { "" }
        );
    }
    if kinds.contains(&"cpu") {
        let _ = writeln!(md, "CPU utilization is the host's CPU busy share while the phase ran.\n");
    }

    cost_section(&mut md, c);

    if !c.charts.is_empty() {
        let _ = writeln!(md, "## Charts\n");
        for chart in &c.charts {
            let _ = writeln!(md, "![{}]({})\n", chart.title, chart.file);
        }
    }

    if c.phases.iter().any(|p| p.points.len() > 1) {
        let _ = writeln!(md, "## Sweeps\n");
        let _ = writeln!(md, "Throughput against latency at each load level; where throughput stops rising while latency climbs, the deployment is saturated.\n");
        for p in c.phases.iter().filter(|p| p.points.len() > 1) {
            sweep_table(&mut md, p);
        }
    }

    let _ = writeln!(md, "## Inputs\n");
    let dev = super::device::noun(c);
    let _ = writeln!(md, "| Phase | Run report | Metric series | Pods per {dev} | {}s | Operating point |", super::device::capitalized(dev));
    let _ = writeln!(md, "|---|---|---|---:|---:|---|");
    for p in &c.phases {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {}{} |",
            escape(&p.label),
            p.report_file,
            p.metrics_file.as_ref().map(|m| format!("`{m}`")).unwrap_or_else(|| "-".into()),
            p.pods_per_gpu,
            format_count(p.gpus),
            escape(&p.operating_point),
            if p.meets_slo { "" } else { " (misses the SLO)" }
        );
    }
    md.push('\n');
    if !c.notes.is_empty() {
        let _ = writeln!(md, "## Notes\n");
        for n in &c.notes {
            let _ = writeln!(md, "- {n}");
        }
        md.push('\n');
    }
    super::server::sections(&mut md, c);
    md
}

fn cost_section(md: &mut String, c: &Comparison) {
    let _ = writeln!(md, "## Cost model\n");
    for line in cost_lines(c) {
        let _ = writeln!(md, "- {line}");
    }
    md.push('\n');
}

/// The cost model in sentences, one per list item (plain text: each format escapes its own).
pub(super) fn cost_lines(c: &Comparison) -> Vec<String> {
    let m = &c.cost_model;
    let dev = super::device::noun(c);
    let mut lines = vec![format!(
        "Target: {} req/min{}",
        format_count(m.target_rpm),
        if m.target_rpm_is_default { " (the best measured phase's rate; set it with --target-rpm)" } else { "" }
    )];
    if m.slo_ms.is_empty() {
        lines.push("SLO: none (every load-test point counts; set one with --slo e2e=2s)".into());
    } else {
        let parts: Vec<String> = m.slo_ms.iter().map(|(k, v)| format!("{k} p95 ≤ {}", human_ms(*v))).collect();
        lines.push(format!("SLO: {}", parts.join(", ")));
    }
    let device = super::device::capitalized(dev);
    lines.push(format!(
        "{device} hour: ${:.2}; licence per {dev} and year: {}; {} hours a year",
        m.gpu_hour_cost,
        money(m.license_per_gpu_year),
        group_thousands(&format!("{:.0}", m.hours_per_year))
    ));
    lines.push(format!("{device}s needed = ceil(target / (req/min at the operating point / {dev}s used))"));
    lines.push(format!("Yearly cost = {dev}s needed × ({dev} hour × hours a year + licence)"));
    lines.push(format!("Cost per 1M output tokens = {dev}s used × hourly cost / (output tokens/s × 3600 / 1,000,000)"));
    if dev == "CPU" {
        lines.push(format!("The phases ran on the CPU: one CPU is the whole host CPU a phase ran on, priced at the {dev} hour"));
    }
    lines
}

fn sweep_table(md: &mut String, p: &PhaseSummary) {
    let _ = writeln!(md, "### {}\n", escape(&p.label));
    let _ = writeln!(md, "| Point | Load | req/min | Output tok/s | p50 | p95 | p99 | TTFT p95 | Errors | Within SLO |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for pt in &p.points {
        let _ = writeln!(
            md,
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            escape(&pt.label),
            if pt.label == p.operating_point { " (operating point)" } else { "" },
            load(pt),
            value("requests_per_min", Some(pt.requests_per_min)),
            value("output_tokens_per_s", pt.output_tokens_per_s),
            value("latency_p50_ms", pt.latency_p50_ms),
            value("latency_p95_ms", pt.latency_p95_ms),
            value("latency_p99_ms", pt.latency_p99_ms),
            value("ttft_p95_ms", pt.ttft_p95_ms),
            pt.errors,
            if pt.meets_slo { "yes" } else { "no" }
        );
    }
    md.push('\n');
}

/// The load level of a point: `c8` (closed loop, 8 workers) or `2.5 req/s` (open loop).
pub fn load(pt: &SweepPoint) -> String {
    match (pt.concurrency, pt.rate) {
        (_, Some(r)) => format!("{} req/s", format_count(r)),
        (Some(c), None) => format!("c{c}"),
        (None, None) => "-".into(),
    }
}

/// The table printed on the terminal.
pub fn terminal_table(c: &Comparison) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    let mut header = vec!["Metric".to_string()];
    header.extend(c.phases.iter().map(|p| p.label.clone()));
    header.push("Winner".into());
    t.set_header(header);
    for row in &c.rows {
        let mut cells = vec![row.title.clone()];
        cells.extend(row.values.iter().map(|v| value(&row.metric, *v)));
        cells.push(winner_cell(row));
        t.add_row(cells);
    }
    for i in 1..=c.phases.len() {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_for_their_metric() {
        assert_eq!(value("util_mean_pct", Some(72.04)), "72.0%");
        assert_eq!(value("goodput_fraction", Some(0.953)), "95.3%");
        assert_eq!(value("latency_p95_ms", Some(812.0)), "812 ms");
        assert_eq!(value("yearly_cost", Some(43800.0)), "$43,800");
        assert_eq!(value("cost_per_million_output_tokens", Some(1.234)), "$1.23");
        assert_eq!(value("cost_per_million_output_tokens", Some(0.001234)), "$0.0012");
        assert_eq!(value("requests_per_min", Some(1800.04)), "1,800.0");
        assert_eq!(value("ttft_p95_ms", None), "-");
    }
}
