//! The console summary of a run report, and of a sweep.

use comfy_table::{presets, Cell, CellAlignment, Table};

use crate::report::{LatencySummary, RunReport};
use crate::support::fmt::{human_ms, thousands};

pub(super) fn rate(x: f64) -> String {
    if x >= 100.0 {
        thousands(x)
    } else {
        format!("{x:.2}")
    }
}

fn mode(report: &RunReport) -> String {
    let w = &report.workload;
    match (w.mode.as_str(), w.concurrency, w.rate) {
        ("closed", Some(c), _) => format!("closed loop, {c} workers"),
        ("open", _, Some(r)) => {
            let cap = w.max_concurrency.map(|m| format!(", at most {m} in flight")).unwrap_or_default();
            format!("open loop, {r} req/s {}{cap}", w.arrival.as_deref().unwrap_or(""))
        }
        (m, _, _) => m.to_string(),
    }
}

/// The console summary of one run.
pub fn render(report: &RunReport) -> String {
    let c = &report.counts;
    let t = &report.throughput;
    let mut out = format!(
        "{} → {} ({}, {}{})\n",
        report.label,
        report.target.urls.join(", "),
        report.target.api,
        mode(report),
        if report.workload.stream { ", streamed" } else { "" }
    );
    let mut overview = Table::new();
    overview.load_preset(presets::UTF8_FULL_CONDENSED);
    let mut requests = format!("{} ok · {} failed", c.ok, c.errors.total());
    if c.unfinished > 0 {
        requests.push_str(&format!(" · {} unfinished", c.unfinished));
    }
    if c.warmup > 0 {
        requests.push_str(&format!(" · {} warm-up (excluded)", c.warmup));
    }
    overview.add_row(vec!["requests".to_string(), requests]);
    overview.add_row(vec!["window".to_string(), format!("{:.2} s", report.window_s)]);
    overview.add_row(vec![
        "throughput".to_string(),
        format!("{} req/s · {} req/min", rate(t.requests_per_s), rate(t.requests_per_min)),
    ]);
    let tokens = match (t.output_tokens_per_s, t.input_tokens_per_s) {
        (None, None) => "unknown (no token counts)".to_string(),
        (o, i) => format!(
            "{} out tok/s · {} in tok/s",
            o.map_or("?".into(), rate),
            i.map_or("?".into(), rate)
        ),
    };
    overview.add_row(vec!["tokens".to_string(), tokens]);
    if let Some(g) = &report.goodput {
        let slo: Vec<String> = g.slo_ms.iter().map(|(k, v)| format!("{k}≤{}", human_ms(*v))).collect();
        overview.add_row(vec![
            "goodput".to_string(),
            format!("{} req/s · {:.1}% of requests met {}", rate(g.requests_per_s), g.fraction * 100.0, slo.join(", ")),
        ]);
    }
    let client = match (&report.client.schedule_lag_ms, report.client.kept_up) {
        (Some(l), true) => format!("kept to schedule (lag p99 {})", human_ms(l.p99)),
        (Some(l), false) => format!("FELL BEHIND schedule (lag p99 {}): results measure the client", human_ms(l.p99)),
        (None, _) => format!("{} req/s sent", rate(report.client.achieved_send_rate)),
    };
    overview.add_row(vec!["client".to_string(), client]);
    if let Some(m) = &report.server_metrics {
        for r in &m.replicas {
            let name = if m.replicas.len() > 1 { format!("server {}", r.url) } else { "server".to_string() };
            overview.add_row(vec![name, server_line(r)]);
        }
    }
    out.push_str(&overview.to_string());
    out.push('\n');

    let l = &report.latency_ms;
    let rows: Vec<(&str, &Option<LatencySummary>)> = vec![
        ("e2e", &l.e2e),
        ("ttft", &l.ttft),
        ("itl", &l.itl),
        ("tpot", &l.tpot),
        ("queue", &l.queue),
        ("service", &l.service),
    ];
    if rows.iter().any(|(_, s)| s.is_some()) {
        let mut lat = Table::new();
        lat.load_preset(presets::UTF8_FULL_CONDENSED);
        lat.set_header(vec!["latency", "mean", "p50", "p90", "p95", "p99", "p99.9", "max"]);
        for (name, s) in rows {
            if let Some(s) = s {
                let mut row = vec![Cell::new(name)];
                for v in [s.mean, s.p50, s.p90, s.p95, s.p99, s.p99_9, s.max] {
                    row.push(Cell::new(human_ms(v)).set_alignment(CellAlignment::Right));
                }
                lat.add_row(row);
            }
        }
        out.push_str(&lat.to_string());
        out.push('\n');
    }
    if c.errors.total() > 0 {
        let e = &c.errors;
        out.push_str(&format!(
            "errors: timeout {} · connect {} · http_status {} · protocol {}\n",
            e.timeout, e.connect, e.http_status, e.protocol
        ));
        for s in &c.error_samples {
            out.push_str(&format!("  e.g. {s}\n"));
        }
    }
    for n in report.client.notes.iter().filter(|_| !report.client.kept_up) {
        out.push_str(&format!("warning: {n}\n"));
    }
    for w in &report.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

/// One replica's own metrics in a line: `vllm · KV cache mean 45% · peak 81% · waiting peak 7 ...`.
pub fn server_line(r: &crate::report::ReplicaMetrics) -> String {
    let s = &r.summary;
    let pct = |v: f64| format!("{:.0}%", v * 100.0);
    let mut parts = vec![r.engine.clone()];
    if let (Some(mean), Some(peak)) = (s.kv_usage_mean, s.kv_usage_peak) {
        parts.push(format!("KV cache mean {} · peak {}", pct(mean), pct(peak)));
    }
    if let Some(w) = s.waiting_peak {
        parts.push(format!("waiting peak {w}"));
    }
    if let Some(n) = s.running_peak {
        parts.push(format!("running peak {n}"));
    }
    if let Some(p) = s.preemptions.filter(|p| *p > 0.0) {
        parts.push(format!("{p} preemptions"));
    }
    if let Some(h) = s.prefix_cache_hit_rate {
        parts.push(format!("prefix cache hits {}", pct(h)));
    }
    parts.push(format!("{} scrapes", s.samples));
    if s.scrape_errors > 0 {
        parts.push(format!("{} failed", s.scrape_errors));
    }
    parts.join(" · ")
}

/// The console summary of a sweep: one row per point.
pub fn render_sweep(reports: &[RunReport]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.set_header(vec!["point", "ok", "failed", "req/s", "out tok/s", "e2e p50", "e2e p99", "ttft p95", "client"]);
    for r in reports {
        let ms = |s: &Option<LatencySummary>, f: fn(&LatencySummary) -> f64| s.as_ref().map_or("-".into(), |s| human_ms(f(s)));
        table.add_row(vec![
            Cell::new(&r.label),
            Cell::new(r.counts.ok).set_alignment(CellAlignment::Right),
            Cell::new(r.counts.errors.total() + r.counts.unfinished).set_alignment(CellAlignment::Right),
            Cell::new(rate(r.throughput.requests_per_s)).set_alignment(CellAlignment::Right),
            Cell::new(r.throughput.output_tokens_per_s.map_or("?".into(), rate)).set_alignment(CellAlignment::Right),
            Cell::new(ms(&r.latency_ms.e2e, |s| s.p50)).set_alignment(CellAlignment::Right),
            Cell::new(ms(&r.latency_ms.e2e, |s| s.p99)).set_alignment(CellAlignment::Right),
            Cell::new(ms(&r.latency_ms.ttft, |s| s.p95)).set_alignment(CellAlignment::Right),
            Cell::new(if r.client.kept_up { "ok" } else { "fell behind" }),
        ]);
    }
    format!("{table}\n")
}

/// One line on what an automatic sweep found.
pub fn render_knee(s: &crate::report::SweepSummary) -> String {
    let rates = format!(
        "synchronous {:.2} req/s, throughput {:.2} req/s",
        s.synchronous_rate, s.throughput_rate
    );
    match (&s.knee_label, s.knee_rate, s.saturated) {
        (Some(label), Some(rate), true) => format!(
            "knee: {label} ({rate:.2} req/s): past it latency grew faster than throughput twice in a row ({rates}){}",
            if s.stopped_early { "; the sweep stopped there (--stop-on-saturation)" } else { "" }
        ),
        (Some(label), Some(rate), false) => {
            format!("knee: {label} ({rate:.2} req/s), one step past it showed latency growing faster than throughput ({rates})")
        }
        _ => format!("no knee: latency never grew faster than throughput ({rates})"),
    }
}
