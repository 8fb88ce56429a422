//! The clock the sampling loop runs on: the real one sleeps and can be woken early to
//! stop; tests use a clock that jumps to each deadline without sleeping.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The deadline came.
    Deadline,
    /// Someone asked the loop to stop (the command exited, Ctrl-C).
    Stop,
}

pub trait Clock: Send {
    /// Wall-clock time in Unix seconds, for timestamps.
    fn unix_now(&self) -> f64;
    /// Monotonic time since the clock started.
    fn elapsed(&self) -> Duration;
    /// Waits until `elapsed() >= at` or until asked to stop.
    fn sleep_until(&mut self, at: Duration) -> Wake;
}

/// The real clock: `Instant` for pacing, `SystemTime` for timestamps, and a channel
/// whose message (or hang-up) ends the wait early.
pub struct SystemClock {
    start: Instant,
    unix_start: f64,
    stop: Option<Receiver<()>>,
}

impl SystemClock {
    /// A clock that only stops at deadlines.
    pub fn new() -> Self {
        SystemClock { start: Instant::now(), unix_start: unix_seconds(SystemTime::now()), stop: None }
    }

    /// A clock whose waits end when `stop` receives a message or its sender is dropped.
    pub fn with_stop(stop: Receiver<()>) -> Self {
        SystemClock { stop: Some(stop), ..Self::new() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn unix_now(&self) -> f64 {
        self.unix_start + self.start.elapsed().as_secs_f64()
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn sleep_until(&mut self, at: Duration) -> Wake {
        let deadline = self.start + at;
        match &self.stop {
            Some(rx) => loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // A stop that arrived while sampling still wins over a due tick.
                    return match rx.try_recv() {
                        Ok(()) | Err(std::sync::mpsc::TryRecvError::Disconnected) => Wake::Stop,
                        Err(std::sync::mpsc::TryRecvError::Empty) => Wake::Deadline,
                    };
                }
                match rx.recv_timeout(left) {
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return Wake::Stop,
                    Err(RecvTimeoutError::Timeout) => continue,
                }
            },
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    std::thread::sleep(left);
                }
                Wake::Deadline
            }
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A clock that jumps to each deadline at once, and stops after a set number of waits.
    pub struct ManualClock {
        pub now: Duration,
        pub unix_start: f64,
        pub stop_after_waits: Option<usize>,
        pub waits: Vec<Duration>,
    }

    impl ManualClock {
        pub fn new(unix_start: f64) -> Self {
            ManualClock { now: Duration::ZERO, unix_start, stop_after_waits: None, waits: Vec::new() }
        }
    }

    impl Clock for ManualClock {
        fn unix_now(&self) -> f64 {
            self.unix_start + self.now.as_secs_f64()
        }
        fn elapsed(&self) -> Duration {
            self.now
        }
        fn sleep_until(&mut self, at: Duration) -> Wake {
            if self.stop_after_waits.is_some_and(|n| self.waits.len() >= n) {
                return Wake::Stop;
            }
            self.waits.push(at);
            if at > self.now {
                self.now = at;
            }
            Wake::Deadline
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_ends_a_wait_early() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut clock = SystemClock::with_stop(rx);
        tx.send(()).unwrap();
        assert_eq!(clock.sleep_until(Duration::from_secs(3600)), Wake::Stop);
    }

    #[test]
    fn a_dropped_sender_means_stop() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut clock = SystemClock::with_stop(rx);
        drop(tx);
        assert_eq!(clock.sleep_until(Duration::from_secs(3600)), Wake::Stop);
    }

    #[test]
    fn past_deadlines_return_at_once() {
        let mut clock = SystemClock::new();
        assert_eq!(clock.sleep_until(Duration::ZERO), Wake::Deadline);
        assert!(clock.unix_now() > 1.0e9);
    }
}
