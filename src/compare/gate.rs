//! The regression gate: measured metrics of each phase against an earlier comparison.

use std::path::Path;

use serde::Serialize;

use crate::report::{Comparison, PhaseSummary};

use super::CompareError;

/// One metric of one phase that got worse than allowed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    pub phase: String,
    pub metric: String,
    pub old: f64,
    pub new: f64,
    /// How much worse, in percent (always positive).
    pub worse_pct: f64,
}

type Getter = fn(&PhaseSummary) -> Option<f64>;

/// The gated metrics: measured numbers only (cost depends on the cost model's inputs).
const GATED: [(&str, bool, Getter); 7] = [
    ("requests_per_min", true, |p| Some(p.requests_per_min)),
    ("output_tokens_per_s", true, |p| p.output_tokens_per_s),
    ("latency_p50_ms", false, |p| Some(p.latency_p50_ms)),
    ("latency_p95_ms", false, |p| Some(p.latency_p95_ms)),
    ("latency_p99_ms", false, |p| Some(p.latency_p99_ms)),
    ("ttft_p95_ms", false, |p| p.ttft_p95_ms),
    ("goodput_fraction", true, |p| p.goodput_fraction),
];

/// Compares every phase present in both; a baseline sharing no phase is an input error.
pub fn check(old: &Comparison, new: &Comparison, max_pct: f64, baseline: &Path) -> Result<Vec<Regression>, CompareError> {
    let common: Vec<(&PhaseSummary, &PhaseSummary)> =
        new.phases.iter().filter_map(|n| old.phase(&n.label).map(|o| (o, n))).collect();
    if common.is_empty() {
        let labels = |c: &Comparison| c.phases.iter().map(|p| p.label.as_str()).collect::<Vec<_>>().join(", ");
        return Err(CompareError::Input {
            path: baseline.into(),
            detail: format!(
                "phases: the baseline has no phase of this comparison (baseline: {}; now: {}). Name the phases the same way",
                labels(old),
                labels(new)
            ),
        });
    }
    let mut out = Vec::new();
    for (o, n) in common {
        for (metric, higher_is_better, get) in GATED {
            let (Some(a), Some(b)) = (get(o), get(n)) else { continue };
            if a <= 0.0 || !a.is_finite() || !b.is_finite() {
                continue;
            }
            let worse_pct = if higher_is_better { (a - b) / a * 100.0 } else { (b - a) / a * 100.0 };
            if worse_pct > max_pct + 1e-9 {
                out.push(Regression { phase: n.label.clone(), metric: metric.into(), old: a, new: b, worse_pct });
            }
        }
    }
    Ok(out)
}

/// The error message of a failed gate: every regressed metric, by name.
pub fn describe(regressions: &[Regression], max_pct: f64) -> String {
    let items: Vec<String> = regressions
        .iter()
        .map(|r| format!("{} {} {:.1}% worse ({} -> {})", r.phase, r.metric, r.worse_pct, short(r.old), short(r.new)))
        .collect();
    format!("regression over the allowed {max_pct}%: {}", items.join("; "))
}

fn short(x: f64) -> String {
    let t = format!("{x:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_phase_metric_and_change() {
        let r = Regression { phase: "p1".into(), metric: "latency_p95_ms".into(), old: 800.0, new: 900.0, worse_pct: 12.5 };
        assert_eq!(describe(&[r], 5.0), "regression over the allowed 5%: p1 latency_p95_ms 12.5% worse (800 -> 900)");
    }
}
