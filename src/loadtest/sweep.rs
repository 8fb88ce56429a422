//! `--sweep auto`, as GuideLLM's sweep: a synchronous run (one request at a time), a
//! throughput run (`--rate inf`), then K open-loop rates evenly between the two rates they
//! measured. The knee is the highest rate before latency grows faster than throughput.

use crate::report::{RunReport, SweepSummary};
use crate::support::fmt::round;

pub const KNEE_DEFINITION: &str = "points in order of rate (the synchronous run first, the throughput run left out); \
a step from one point to the next shows saturation when e2e p50 grows by a larger factor than achieved requests/s; \
the knee is the point before the first two such steps in a row (or before the only one), and the sweep is saturated \
when two steps in a row showed it";

/// The open-loop rates between the synchronous and the throughput rate: K evenly spaced,
/// the throughput rate last (the synchronous rate was measured already).
pub fn rates(synchronous: f64, throughput: f64, k: u32) -> Vec<f64> {
    let k = k.max(1);
    let (lo, hi) = if throughput > synchronous { (synchronous, throughput) } else { (throughput * 0.5, synchronous) };
    (1..=k).map(|i| round(lo + (hi - lo) * f64::from(i) / f64::from(k), 3)).filter(|r| *r > 0.0).collect()
}

/// One point as the knee sees it: achieved requests/s and e2e p50 in ms.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub rate: f64,
    pub throughput: f64,
    pub latency_ms: f64,
}

impl Step {
    pub fn of(rate: f64, r: &RunReport) -> Option<Step> {
        let latency_ms = r.latency_ms.e2e.as_ref()?.p50;
        Some(Step { rate, throughput: r.throughput.requests_per_s, latency_ms })
    }
}

/// Whether latency grew faster than throughput from `a` to `b`.
fn saturates(a: &Step, b: &Step) -> bool {
    if a.throughput <= 0.0 || a.latency_ms <= 0.0 {
        return false;
    }
    b.latency_ms / a.latency_ms > b.throughput / a.throughput
}

/// The knee's index in `steps`, and whether two steps in a row past it showed saturation.
pub fn knee(steps: &[Step]) -> (Option<usize>, bool) {
    let flagged: Vec<bool> = steps.windows(2).map(|w| saturates(&w[0], &w[1])).collect();
    if let Some(i) = flagged.windows(2).position(|w| w[0] && w[1]) {
        return (Some(i), true);
    }
    (flagged.iter().position(|&f| f), false)
}

/// The sweep's summary from its steps (the synchronous run first, then the open-loop rates).
pub fn summary(synchronous: f64, throughput: f64, rates: Vec<f64>, steps: &[Step], labels: &[String], stopped_early: bool) -> SweepSummary {
    let (k, saturated) = knee(steps);
    SweepSummary {
        kind: "auto".into(),
        synchronous_rate: synchronous,
        throughput_rate: throughput,
        rates,
        knee_rate: k.map(|i| steps[i].rate),
        knee_label: k.and_then(|i| labels.get(i).cloned()),
        saturated,
        stopped_early,
        definition: KNEE_DEFINITION.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, throughput: f64, latency_ms: f64) -> Step {
        Step { rate, throughput, latency_ms }
    }

    #[test]
    fn rates_lie_evenly_between_the_two_measured() {
        assert_eq!(rates(1.0, 9.0, 4), vec![3.0, 5.0, 7.0, 9.0]);
        assert_eq!(rates(2.0, 2.0, 2).len(), 2);
        assert!(rates(2.0, 1.0, 3).iter().all(|r| *r > 0.0));
    }

    #[test]
    fn the_knee_is_before_two_saturating_steps() {
        // Throughput follows the rate up to 4 req/s, then flattens while latency explodes.
        let steps = [
            step(1.0, 1.0, 100.0),
            step(2.0, 2.0, 102.0),
            step(4.0, 3.9, 110.0),
            step(6.0, 4.1, 400.0),
            step(8.0, 4.1, 1500.0),
        ];
        assert_eq!(knee(&steps), (Some(2), true));
        // One noisy step alone is not saturation.
        let noisy = [step(1.0, 1.0, 100.0), step(2.0, 1.9, 210.0), step(3.0, 2.9, 215.0)];
        assert_eq!(knee(&noisy), (Some(0), false));
        let linear = [step(1.0, 1.0, 100.0), step(2.0, 2.0, 100.0), step(3.0, 3.0, 101.0)];
        assert_eq!(knee(&linear), (None, false));
    }
}
