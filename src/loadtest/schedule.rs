//! The intended send offsets of an open-loop point, lazily, from a seeded generator: a fixed
//! rate, a ramp, stages, or a trace's own timestamps; gaps constant, exponential (Poisson) or
//! gamma (shape = burstiness, as vLLM's `--burstiness`).

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp1, Gamma};

use super::options::{RampKind, Stage};

/// How the rate moves over a point.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// One rate throughout (requests per second).
    Rate(f64),
    /// From `start` to `end` over the point: over `span` seconds, or over `requests` requests
    /// when the point is limited by count only.
    Ramp { kind: RampKind, start: f64, end: f64, span: RampSpan },
    /// Rates held for times; the schedule ends with the last stage.
    Stages(Vec<Stage>),
    /// Offsets given by a trace (already divided by the replay speed).
    Trace(Arc<[Duration]>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RampSpan {
    Time(Duration),
    Requests(u64),
}

/// The spread of the gaps around their mean 1/rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gaps {
    Constant,
    Poisson,
    /// Gamma with this shape: coefficient of variation 1/sqrt(shape).
    Gamma(f64),
}

impl Gaps {
    pub fn name(self) -> &'static str {
        match self {
            Gaps::Constant => "constant",
            Gaps::Poisson => "poisson",
            Gaps::Gamma(_) => "gamma",
        }
    }
}

impl Shape {
    /// The rate at `t` seconds into the point, for request `index`.
    fn rate_at(&self, t: f64, index: u64) -> f64 {
        match self {
            Shape::Rate(r) => *r,
            Shape::Ramp { kind, start, end, span } => {
                let f = match span {
                    RampSpan::Time(d) => (t / d.as_secs_f64().max(1e-9)).clamp(0.0, 1.0),
                    RampSpan::Requests(n) => (index as f64 / (*n).max(1) as f64).clamp(0.0, 1.0),
                };
                match kind {
                    RampKind::Linear => start + (end - start) * f,
                    RampKind::Exponential => start * (end / start).powf(f),
                }
            }
            Shape::Stages(stages) => {
                let mut from = 0.0;
                for s in stages {
                    from += s.duration.as_secs_f64();
                    if t < from {
                        return s.rate;
                    }
                }
                stages.last().map_or(1.0, |s| s.rate)
            }
            Shape::Trace(_) => 1.0,
        }
    }

    /// Where the stage holding `t` ends (stages only).
    fn stage_end(&self, t: f64) -> Option<f64> {
        let Shape::Stages(stages) = self else { return None };
        let mut end = 0.0;
        for s in stages {
            end += s.duration.as_secs_f64();
            if t < end {
                return Some(end);
            }
        }
        Some(end)
    }

    /// The end of the schedule, if it has one of its own.
    fn total(&self) -> Option<f64> {
        match self {
            Shape::Stages(stages) => Some(stages.iter().map(|s| s.duration.as_secs_f64()).sum()),
            _ => None,
        }
    }
}

pub struct Schedule {
    shape: Shape,
    gaps: Gaps,
    gamma: Option<Gamma<f64>>,
    rng: StdRng,
    index: u64,
    offset: f64,
}

impl Schedule {
    pub fn new(shape: Shape, gaps: Gaps, seed: u64) -> Self {
        let gamma = match gaps {
            Gaps::Gamma(b) => Gamma::new(b, 1.0 / b).ok(),
            _ => None,
        };
        Schedule { shape, gaps, gamma, rng: StdRng::seed_from_u64(seed), index: 0, offset: 0.0 }
    }

    /// A gap of mean 1 in the chosen spread.
    fn unit_gap(&mut self) -> f64 {
        match (self.gaps, &self.gamma) {
            (Gaps::Constant, _) => 1.0,
            (Gaps::Poisson, _) => Exp1.sample(&mut self.rng),
            (Gaps::Gamma(_), Some(g)) => g.sample(&mut self.rng),
            (Gaps::Gamma(_), None) => Exp1.sample(&mut self.rng),
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        if let Shape::Trace(offsets) = &self.shape {
            let at = offsets.get(self.index as usize).copied();
            self.index += 1;
            return at;
        }
        if self.index > 0 {
            let mut t = self.offset;
            loop {
                let rate = self.shape.rate_at(t, self.index);
                let next = t + self.unit_gap() / rate;
                // A gap that crosses into the next stage starts again there at that stage's rate
                // (exact for Poisson, which has no memory).
                match self.shape.stage_end(t) {
                    Some(end) if next > end && self.shape.total().is_some_and(|total| end < total) => t = end,
                    _ => {
                        t = next;
                        break;
                    }
                }
            }
            self.offset = t;
        }
        if self.shape.total().is_some_and(|total| self.offset >= total) {
            return None;
        }
        self.index += 1;
        Some(Duration::from_secs_f64(self.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps_of(s: &[Duration]) -> Vec<f64> {
        s.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect()
    }

    fn cv(x: &[f64]) -> f64 {
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64;
        var.sqrt() / mean
    }

    #[test]
    fn constant_schedule_is_evenly_spaced() {
        let s: Vec<_> = Schedule::new(Shape::Rate(4.0), Gaps::Constant, 0).take(3).collect();
        assert_eq!(s, vec![Duration::ZERO, Duration::from_millis(250), Duration::from_millis(500)]);
    }

    #[test]
    fn poisson_schedule_is_seeded_and_has_the_right_rate() {
        let a: Vec<_> = Schedule::new(Shape::Rate(100.0), Gaps::Poisson, 42).take(10_000).collect();
        let b: Vec<_> = Schedule::new(Shape::Rate(100.0), Gaps::Poisson, 42).take(10_000).collect();
        assert_eq!(a, b);
        let rate = 9_999.0 / a[9_999].as_secs_f64();
        assert!((95.0..105.0).contains(&rate), "rate {rate}");
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert!((cv(&gaps_of(&a)) - 1.0).abs() < 0.05);
    }

    #[test]
    fn gamma_gaps_have_the_mean_and_the_burstiness_asked() {
        for b in [0.25, 1.0, 4.0] {
            let s: Vec<_> = Schedule::new(Shape::Rate(50.0), Gaps::Gamma(b), 7).take(20_000).collect();
            let g = gaps_of(&s);
            let mean = g.iter().sum::<f64>() / g.len() as f64;
            assert!((mean - 0.02).abs() < 0.001, "B={b}: mean gap {mean}");
            let want = 1.0 / b.sqrt();
            assert!((cv(&g) - want).abs() < 0.06 * want.max(1.0), "B={b}: cv {} want {want}", cv(&g));
        }
    }

    #[test]
    fn ramps_reach_their_end_rate() {
        for kind in [RampKind::Linear, RampKind::Exponential] {
            let shape = Shape::Ramp { kind, start: 2.0, end: 50.0, span: RampSpan::Time(Duration::from_secs(20)) };
            let s: Vec<_> = Schedule::new(shape, Gaps::Constant, 0).take_while(|d| d.as_secs_f64() < 20.0).collect();
            let last: Vec<_> = s.iter().filter(|d| d.as_secs_f64() >= 19.0).collect();
            assert!((45..=51).contains(&last.len()), "{kind:?}: {} requests in the last second", last.len());
            let first = s.iter().filter(|d| d.as_secs_f64() < 1.0).count();
            assert!(first <= 6, "{kind:?}: {first} in the first second");
        }
        let shape = Shape::Ramp { kind: RampKind::Linear, start: 1.0, end: 10.0, span: RampSpan::Requests(100) };
        let s: Vec<_> = Schedule::new(shape, Gaps::Constant, 0).take(101).collect();
        let end_gap = (s[100] - s[99]).as_secs_f64();
        assert!((end_gap - 0.1).abs() < 0.002, "{end_gap}");
    }

    #[test]
    fn stages_hold_their_rates_and_end() {
        let stages = vec![
            Stage { duration: Duration::from_secs(10), rate: 2.0 },
            Stage { duration: Duration::from_secs(10), rate: 20.0 },
        ];
        let s: Vec<_> = Schedule::new(Shape::Stages(stages), Gaps::Poisson, 3).collect();
        let first = s.iter().filter(|d| d.as_secs() < 10).count();
        let second = s.len() - first;
        assert!((10..=32).contains(&first), "{first}");
        assert!((160..=240).contains(&second), "{second}");
        assert!(s.last().unwrap().as_secs_f64() < 20.0);
    }

    #[test]
    fn traces_keep_their_offsets() {
        let offsets: Arc<[Duration]> = vec![Duration::ZERO, Duration::from_millis(5), Duration::from_millis(900)].into();
        let s: Vec<_> = Schedule::new(Shape::Trace(offsets.clone()), Gaps::Poisson, 0).collect();
        assert_eq!(&s[..], &offsets[..]);
    }
}
