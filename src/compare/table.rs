//! From phases to the [`Comparison`]: operating points, cost, rows and winners.

use crate::report::{Comparison, ComparisonRow, CostModel, LatencySummary, PhaseSummary, RunReport, SweepPoint, SCHEMA_VERSION};

use super::cost::{self, HOURS_PER_YEAR};
use super::inputs::PhaseData;
use super::{device, verdict, CompareError, CompareRequest};
use crate::support::fmt::format_count;
use crate::support::fmt::round;

pub fn build(phases: &[PhaseData], request: &CompareRequest) -> Result<Comparison, CompareError> {
    let mut notes = Vec::new();
    let mut summaries = phases.iter().map(|p| summarize(p, request, &mut notes)).collect::<Result<Vec<_>, _>>()?;
    let device_kind = device::overall_for(phases);
    let noun = device::noun_of(Some(device_kind));

    let (target_rpm, target_rpm_is_default) = match request.target_rpm {
        Some(t) => (t, false),
        None => {
            let best = summaries.iter().filter(|s| s.meets_slo).map(|s| s.requests_per_min).fold(0.0, f64::max);
            let best = if best > 0.0 { best } else { summaries.iter().map(|s| s.requests_per_min).fold(0.0, f64::max) };
            // Rounded down to a tenth, so the best phase needs exactly its own GPUs.
            (((best * 10.0).floor() / 10.0).max(0.1), true)
        }
    };
    for (s, p) in summaries.iter_mut().zip(phases) {
        let licence = p.input.license_per_gpu_year.unwrap_or(request.license_per_gpu_year);
        if s.meets_slo {
            s.gpus_needed = cost::gpus_needed(target_rpm, s.requests_per_min, s.gpus);
            s.yearly_cost = s.gpus_needed.map(|g| cost::yearly_cost(g as f64, request.gpu_hour_cost, licence));
        } else {
            notes.push(format!(
                "{}: no point met the SLOs; its numbers are those of its fastest point and it gets no {noun} count or yearly cost",
                s.label
            ));
        }
        s.cost_per_million_output_tokens = s
            .output_tokens_per_s
            .and_then(|t| cost::cost_per_million_tokens(t, s.gpus, request.gpu_hour_cost, licence));
        if p.input.license_per_gpu_year.is_some() {
            // The cost model echoes the global licence; a phase's own is noted.
            notes.push(format!("{}: licence cost {} per GPU and year", s.label, licence));
        }
    }

    let cost_model = CostModel {
        gpu_hour_cost: request.gpu_hour_cost,
        license_per_gpu_year: request.license_per_gpu_year,
        hours_per_year: HOURS_PER_YEAR,
        target_rpm,
        target_rpm_is_default,
        slo_ms: request.slo_ms.clone(),
    };
    let mut rows = rows(&summaries, &cost_model, noun);
    super::server::insert_rows(&mut rows, &summaries);
    let mut comparison = Comparison {
        schema_version: SCHEMA_VERSION,
        cost_model,
        phases: summaries,
        rows,
        verdict: String::new(),
        charts: Vec::new(),
        notes,
        pods: super::server::pods(phases)?,
        device_kind: Some(device_kind.into()),
    };
    comparison.verdict = verdict::write(&comparison);
    Ok(comparison)
}

fn summarize(phase: &PhaseData, request: &CompareRequest, notes: &mut Vec<String>) -> Result<PhaseSummary, CompareError> {
    let input = &phase.input;
    let mut points = Vec::new();
    let mut usable: Vec<(usize, &RunReport)> = Vec::new();
    for run in &phase.runs {
        let e2e = run.latency_ms.e2e.as_ref();
        let has_data = run.counts.ok > 0 && e2e.is_some();
        let mut meets = has_data;
        if has_data {
            for (metric, limit) in &request.slo_ms {
                let summary = latency(run, metric).ok_or_else(|| CompareError::Input {
                    path: input.report.clone(),
                    detail: format!(
                        "run '{}' has no latency_ms.{metric}, so --slo {metric} cannot be checked: {}",
                        run.label,
                        if metric == "ttft" || metric == "itl" || metric == "tpot" {
                            "re-run the load test with streaming on, or drop this SLO"
                        } else {
                            "re-run the load test, or drop this SLO"
                        }
                    ),
                })?;
                if summary.p95 > *limit {
                    meets = false;
                }
            }
            usable.push((points.len(), run));
        } else {
            notes.push(format!("{}: point '{}' has no successful requests and is left out", input.label, run.label));
        }
        points.push(SweepPoint {
            label: run.label.clone(),
            concurrency: run.workload.concurrency,
            rate: run.workload.rate,
            requests_per_min: run.throughput.requests_per_min,
            output_tokens_per_s: run.throughput.output_tokens_per_s,
            latency_p50_ms: e2e.map(|l| l.p50),
            latency_p95_ms: e2e.map(|l| l.p95),
            latency_p99_ms: e2e.map(|l| l.p99),
            ttft_p95_ms: run.latency_ms.ttft.as_ref().map(|l| l.p95),
            errors: run.counts.errors.total(),
            meets_slo: meets,
        });
    }
    let Some(fastest) = fastest_of(usable.iter()) else {
        return Err(CompareError::Input {
            path: input.report.clone(),
            detail: format!(
                "phase '{}' has no data: no run has successful requests (counts.ok is 0 or latency_ms.e2e is missing). Check the server and re-run the load test",
                input.label
            ),
        });
    };
    let within = fastest_of(usable.iter().filter(|(i, _)| points[*i].meets_slo));
    let meets_slo = within.is_some();
    let (_, run) = within.unwrap_or(fastest);
    let e2e = run.latency_ms.e2e.clone().unwrap_or_else(empty_summary);
    let (kv_usage_mean_pct, kv_usage_peak_pct, waiting_peak) = super::server::server_numbers(run);
    Ok(PhaseSummary {
        label: input.label.clone(),
        report_file: input.report.display().to_string(),
        metrics_file: input.metrics.as_ref().map(|m| m.display().to_string()),
        pods_per_gpu: input.pods_per_gpu,
        gpus: input.gpus,
        operating_point: run.label.clone(),
        meets_slo,
        requests_per_min: run.throughput.requests_per_min,
        output_tokens_per_s: run.throughput.output_tokens_per_s,
        latency_p50_ms: e2e.p50,
        latency_p95_ms: e2e.p95,
        latency_p99_ms: e2e.p99,
        ttft_p95_ms: run.latency_ms.ttft.as_ref().map(|l| l.p95),
        util_kind: phase.util.as_ref().map(|u| u.kind.as_str().to_string()),
        util_mean_pct: phase.util.as_ref().map(|u| round(u.mean, 2)),
        util_p95_pct: phase.util.as_ref().map(|u| round(u.p95, 2)),
        sm_activity_mean_pct: phase.util.as_ref().and_then(|u| u.sm_activity_mean).map(|a| round(a, 2)),
        goodput_fraction: run.goodput.as_ref().map(|g| g.fraction),
        gpus_needed: None,
        yearly_cost: None,
        cost_per_million_output_tokens: None,
        points,
        kv_usage_mean_pct,
        kv_usage_peak_pct,
        waiting_peak,
        environment: Some(run.environment.clone()),
        device_kind: device::phase_kind(phase).map(String::from),
    })
}

/// The point with the most requests per minute; the first of equals.
fn fastest_of<'a, 'r: 'a>(candidates: impl Iterator<Item = &'a (usize, &'r RunReport)>) -> Option<(usize, &'r RunReport)> {
    candidates.fold(None, |best: Option<(usize, &'r RunReport)>, &(i, r)| match best {
        Some((_, b)) if b.throughput.requests_per_min >= r.throughput.requests_per_min => best,
        _ => Some((i, r)),
    })
}

fn empty_summary() -> LatencySummary {
    LatencySummary { count: 0, mean: 0.0, min: 0.0, max: 0.0, p50: 0.0, p90: 0.0, p95: 0.0, p99: 0.0, p99_9: 0.0 }
}

fn latency<'a>(run: &'a RunReport, metric: &str) -> Option<&'a LatencySummary> {
    let l = &run.latency_ms;
    match metric {
        "e2e" => l.e2e.as_ref(),
        "ttft" => l.ttft.as_ref(),
        "tpot" => l.tpot.as_ref(),
        "itl" => l.itl.as_ref(),
        _ => None,
    }
}

/// The util row's name: what the metric series measured.
pub fn util_name(phases: &[PhaseSummary]) -> &'static str {
    let kinds: std::collections::BTreeSet<&str> = phases.iter().filter_map(|p| p.util_kind.as_deref()).collect();
    match (kinds.contains("gpu"), kinds.contains("cpu")) {
        (false, true) => "CPU utilization",
        (true, true) => "Utilization (GPU or CPU)",
        _ => "GPU utilization",
    }
}

fn rows(phases: &[PhaseSummary], cost: &CostModel, noun: &str) -> Vec<ComparisonRow> {
    let util = util_name(phases);
    let target = format_count(cost.target_rpm);
    type Getter = fn(&PhaseSummary) -> Option<f64>;
    let defs: [(&str, String, &str, Getter); 15] = [
        ("util_mean_pct", format!("{util}, mean"), "higher", |p| p.util_mean_pct),
        ("util_p95_pct", format!("{util}, p95"), "higher", |p| p.util_p95_pct),
        ("sm_activity_mean_pct", "SM activity, mean".into(), "higher", |p| p.sm_activity_mean_pct),
        ("pods_per_gpu", format!("Pods per {noun}"), "higher", |p| Some(p.pods_per_gpu as f64)),
        ("gpus", format!("{}s used", device::capitalized(noun)), "none", |p| Some(p.gpus)),
        ("requests_per_min", "Throughput (req/min)".into(), "higher", |p| Some(p.requests_per_min)),
        ("output_tokens_per_s", "Output tokens/s".into(), "higher", |p| p.output_tokens_per_s),
        ("latency_p50_ms", "Latency p50".into(), "lower", |p| Some(p.latency_p50_ms)),
        ("latency_p95_ms", "Latency p95".into(), "lower", |p| Some(p.latency_p95_ms)),
        ("latency_p99_ms", "Latency p99".into(), "lower", |p| Some(p.latency_p99_ms)),
        ("ttft_p95_ms", "TTFT p95".into(), "lower", |p| p.ttft_p95_ms),
        ("goodput_fraction", "Goodput (share within SLO)".into(), "higher", |p| p.goodput_fraction),
        ("gpus_needed", format!("{}s for {target} req/min", device::capitalized(noun)), "lower", |p| p.gpus_needed.map(f64::from)),
        ("yearly_cost", format!("Yearly cost for {target} req/min"), "lower", |p| p.yearly_cost),
        ("cost_per_million_output_tokens", "Cost per 1M output tokens".into(), "lower", |p| p.cost_per_million_output_tokens),
    ];
    defs.into_iter()
        .filter_map(|(metric, title, better, get)| {
            let values: Vec<Option<f64>> = phases.iter().map(get).collect();
            if values.iter().all(Option::is_none) {
                return None;
            }
            let winners = winners(phases, &values, better);
            Some(ComparisonRow { metric: metric.into(), title, better: better.into(), values, winners })
        })
        .collect()
}

/// The best phase(s) of a row: none when fewer than two phases have a value or all tie.
pub fn winners(phases: &[PhaseSummary], values: &[Option<f64>], better: &str) -> Vec<String> {
    let present: Vec<(usize, f64)> = values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v))).collect();
    if present.len() < 2 || better == "none" {
        return Vec::new();
    }
    let best = match better {
        "higher" => present.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
        _ => present.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
    };
    let same = |v: f64| (v - best).abs() <= 1e-9 * best.abs().max(1.0);
    if present.iter().all(|p| same(p.1)) {
        return Vec::new();
    }
    present.iter().filter(|p| same(p.1)).map(|p| phases[p.0].label.clone()).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A phase with no numbers, for the tests of this module and its neighbours.
    pub(in crate::compare) fn phase(label: &str) -> PhaseSummary {
        PhaseSummary {
            label: label.into(),
            report_file: String::new(),
            metrics_file: None,
            pods_per_gpu: 1,
            gpus: 1.0,
            operating_point: String::new(),
            meets_slo: true,
            requests_per_min: 0.0,
            output_tokens_per_s: None,
            latency_p50_ms: 0.0,
            latency_p95_ms: 0.0,
            latency_p99_ms: 0.0,
            ttft_p95_ms: None,
            util_kind: None,
            util_mean_pct: None,
            util_p95_pct: None,
            sm_activity_mean_pct: None,
            goodput_fraction: None,
            gpus_needed: None,
            yearly_cost: None,
            cost_per_million_output_tokens: None,
            points: Vec::new(),
            kv_usage_mean_pct: None,
            kv_usage_peak_pct: None,
            waiting_peak: None,
            environment: None,
            device_kind: None,
        }
    }

    #[test]
    fn winners_follow_the_direction_and_share_ties() {
        let ps = vec![phase("a"), phase("b"), phase("c")];
        assert_eq!(winners(&ps, &[Some(1.0), Some(3.0), Some(2.0)], "higher"), vec!["b"]);
        assert_eq!(winners(&ps, &[Some(1.0), Some(3.0), Some(1.0)], "lower"), vec!["a", "c"]);
        assert!(winners(&ps, &[Some(1.0), Some(1.0), Some(1.0)], "lower").is_empty());
        assert!(winners(&ps, &[Some(1.0), None, None], "lower").is_empty());
        assert!(winners(&ps, &[Some(1.0), Some(2.0), None], "none").is_empty());
        assert_eq!(winners(&ps, &[None, Some(5.0), Some(2.0)], "lower"), vec!["c"]);
    }

    #[test]
    fn util_row_is_named_for_its_source() {
        let mut a = phase("a");
        a.util_kind = Some("cpu".into());
        assert_eq!(util_name(&[a.clone()]), "CPU utilization");
        let mut b = phase("b");
        b.util_kind = Some("gpu".into());
        assert_eq!(util_name(&[a, b.clone()]), "Utilization (GPU or CPU)");
        assert_eq!(util_name(&[b]), "GPU utilization");
    }
}
