//! The sampling loop: one tick per interval on a [`Clock`], until the duration is over,
//! the clock is told to stop, or a replay runs out. A tick whose sample fails is a gap
//! in the series, and sampling goes on.

use std::time::Duration;

use crate::device::{Clock, SampleError, Sampler, Wake};
use crate::report::MetricSample;

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub interval: Duration,
    /// Stop after this long; `None` runs until stopped.
    pub duration: Option<Duration>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Ticks that produced rows.
    pub samples: u64,
    /// Ticks that could not be sampled.
    pub gaps: u64,
    /// What the last gap said, for the final message.
    pub last_gap: Option<String>,
    /// Ended by a stop request (command exited, Ctrl-C) rather than by the duration.
    pub stopped: bool,
}

/// Runs the loop, handing each tick's rows to `on_rows` (which writes them out).
pub fn run<E>(
    sampler: &mut dyn Sampler,
    clock: &mut dyn Clock,
    plan: Plan,
    mut on_rows: impl FnMut(&[MetricSample]) -> Result<(), E>,
) -> Result<Outcome, E> {
    let interval = plan.interval.max(Duration::from_micros(100));
    let mut out = Outcome::default();
    let mut in_gap = false;
    let mut last_sample_at: Option<Duration> = None;
    let mut tick: u64 = 1;
    loop {
        let at = interval.saturating_mul(tick.min(u32::MAX as u64) as u32);
        if plan.duration.is_some_and(|d| at > d) {
            break;
        }
        if clock.sleep_until(at) == Wake::Stop {
            out.stopped = true;
            // The command ended between ticks: one last sample covers its end, unless
            // the previous one was taken just now.
            let since_last = last_sample_at.map(|t| clock.elapsed().saturating_sub(t));
            if since_last.is_none_or(|d| d >= interval / 10) {
                let _ = take(sampler, clock, &mut out, &mut in_gap, &mut on_rows)?;
            }
            break;
        }
        let more = take(sampler, clock, &mut out, &mut in_gap, &mut on_rows)?;
        last_sample_at = Some(clock.elapsed());
        if !more {
            break;
        }
        // A slow sample skips the ticks it overran instead of bunching them up.
        let due = (clock.elapsed().as_nanos() / interval.as_nanos().max(1)) as u64 + 1;
        tick = (tick + 1).max(due);
    }
    Ok(out)
}

/// Takes one sample; `false` when the source has no more.
fn take<E>(
    sampler: &mut dyn Sampler,
    clock: &mut dyn Clock,
    out: &mut Outcome,
    in_gap: &mut bool,
    on_rows: &mut impl FnMut(&[MetricSample]) -> Result<(), E>,
) -> Result<bool, E> {
    match sampler.sample(clock.unix_now()) {
        Ok(rows) => {
            if *in_gap {
                tracing::warn!("sampling resumed");
                *in_gap = false;
            }
            if !rows.is_empty() {
                out.samples += 1;
                on_rows(&rows)?;
            }
            Ok(true)
        }
        Err(SampleError::Exhausted) => Ok(false),
        Err(SampleError::Unavailable(msg)) => {
            if !*in_gap {
                tracing::warn!("no sample: {msg} (the series has a gap; sampling goes on)");
                *in_gap = true;
            }
            out.gaps += 1;
            out.last_gap = Some(msg);
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::clock::testing::ManualClock;
    use crate::device::{NvmlSampler, RecordedGpus, ReplaySampler};

    fn recorded_nvml() -> NvmlSampler {
        let gpus = RecordedGpus::from_fixture_text(include_str!("../../fixtures/gpu/h100-recording.json")).unwrap();
        NvmlSampler::new(Box::new(gpus), None, None).unwrap()
    }

    #[test]
    fn ticks_follow_the_interval_until_the_duration_without_sleeping() {
        let mut clock = ManualClock::new(1_700_000_000.0);
        let mut s = recorded_nvml();
        let mut stamps = Vec::new();
        let plan = Plan { interval: Duration::from_millis(100), duration: Some(Duration::from_secs(1)) };
        let out = run(&mut s, &mut clock, plan, |rows| {
            stamps.push(rows[0].timestamp);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(clock.waits.len(), 10);
        assert_eq!(clock.waits[0], Duration::from_millis(100));
        assert_eq!(clock.waits[9], Duration::from_secs(1));
        assert_eq!(out.gaps, 1, "the recording loses the GPU once");
        assert_eq!(out.samples, 9);
        assert!(!out.stopped);
        assert!((stamps[0] - 1_700_000_000.1).abs() < 1e-6);
    }

    #[test]
    fn a_stop_takes_one_last_sample_and_ends() {
        let mut clock = ManualClock::new(0.0);
        clock.stop_after_waits = Some(2);
        let mut s = recorded_nvml();
        let mut n = 0;
        let plan = Plan { interval: Duration::from_secs(1), duration: None };
        let out = run(&mut s, &mut clock, plan, |_| {
            n += 1;
            Ok::<_, ()>(())
        })
        .unwrap();
        assert!(out.stopped);
        // Two ticks, then the stop: the last sample was taken "just now", so no extra one.
        assert_eq!(n, 2);
    }

    #[test]
    fn a_stop_before_any_tick_still_samples_once() {
        let mut clock = ManualClock::new(0.0);
        clock.stop_after_waits = Some(0);
        let mut s = recorded_nvml();
        let plan = Plan { interval: Duration::from_secs(1), duration: None };
        let out = run(&mut s, &mut clock, plan, |_| Ok::<_, ()>(())).unwrap();
        assert_eq!(out.samples, 1);
    }

    #[test]
    fn a_replay_ends_when_the_recording_does() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/metrics/h100-nvml.csv");
        let mut s = ReplaySampler::load(&path, None).unwrap();
        let mut clock = ManualClock::new(0.0);
        let plan = Plan { interval: Duration::from_millis(1), duration: None };
        let out = run(&mut s, &mut clock, plan, |_| Ok::<_, ()>(())).unwrap();
        assert_eq!(out.samples, 12);
        assert!(!out.stopped);
    }

    #[test]
    fn a_write_error_stops_the_loop() {
        let mut clock = ManualClock::new(0.0);
        let mut s = recorded_nvml();
        let plan = Plan { interval: Duration::from_secs(1), duration: None };
        let err = run(&mut s, &mut clock, plan, |_| Err("disk full")).unwrap_err();
        assert_eq!(err, "disk full");
    }
}
