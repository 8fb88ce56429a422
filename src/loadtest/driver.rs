//! Drives the load: closed loop (N workers) or open loop (a precomputed schedule, one task
//! per request, sent by a dedicated scheduler thread so that timer granularity does not
//! become schedule lag).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::client::{Exchange, Target};
use super::options::{Slo, Warmup};
use super::recorder::{Measured, Recorder};
use super::requests_csv::RequestLog;
use super::schedule::{Gaps, Shape};
use super::sessions::{self, SessionSet};
use super::shard::{self, Shard};

/// In-flight requests of an open loop given no --max-concurrency: well below the usual
/// open-file limit, so a stalled server cannot exhaust the client's file handles.
pub const DEFAULT_OPEN_LOOP_CAP: u32 = 4096;

/// One point of a run: how the load is offered.
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    /// N workers, each sends its next request when its last one ended.
    Closed { concurrency: u32 },
    /// Requests due on a schedule, latency from the intended send time.
    Open { shape: Shape, gaps: Gaps, max_concurrency: Option<u32> },
    /// `--rate inf`: as fast as `concurrency` requests in flight allow (GuideLLM's throughput profile).
    Throughput { concurrency: u32 },
}

/// Limits and measurement settings of one point.
#[derive(Debug, Clone)]
pub struct Limits {
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    pub warmup: Option<Warmup>,
    pub seed: u64,
    pub slo: Option<Slo>,
    /// How long in-flight requests may finish after the last one was sent.
    pub drain: Duration,
    /// The part of the run this process sends (all of it by default).
    pub shard: Shard,
    /// The wall-clock time the point starts at (`--start-at`): the schedule's time zero.
    pub start_at: Option<SystemTime>,
}

impl Limits {
    pub fn warmup_requests(&self) -> u64 {
        match self.warmup {
            Some(Warmup::Requests(n)) => n,
            _ => 0,
        }
    }

    pub(super) fn warmup_time(&self) -> Duration {
        match self.warmup {
            Some(Warmup::Time(d)) => d,
            _ => Duration::ZERO,
        }
    }

    /// Total requests to send, warm-up included, when count-limited.
    pub(super) fn total_requests(&self) -> Option<u64> {
        self.requests.map(|n| n + self.warmup_requests())
    }

    /// When measuring starts, if that is known before the run: after a timed warm-up (or at
    /// once); a counted warm-up ends when its last request has been sent.
    fn measure_start_offset(&self) -> Option<Duration> {
        (self.warmup_requests() == 0).then(|| self.warmup_time())
    }

    pub(super) fn is_warmup(&self, index: u64, offset: Duration) -> bool {
        index < self.warmup_requests() || offset < self.warmup_time()
    }
}

/// Live counters the progress display reads.
#[derive(Debug, Default)]
pub struct Live {
    /// Requests handed to the connection pool, and those that ended (any outcome).
    pub sent: AtomicU64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    /// The open loop had as many requests in flight as its default cap allows.
    pub cap_reached: std::sync::atomic::AtomicBool,
    /// The point's recorders, so that a live view can read them (a lock once a second).
    recorders: Mutex<Vec<Arc<Mutex<Recorder>>>>,
}

impl Live {
    fn register(&self, rec: &Arc<Mutex<Recorder>>) {
        self.recorders.lock().push(rec.clone());
    }

    /// The measurements so far, merged (`None` before the point has started).
    pub fn snapshot(&self) -> Option<Recorder> {
        let recorders = self.recorders.lock().clone();
        let mut it = recorders.iter();
        let mut merged = it.next()?.lock().clone();
        for r in it {
            merged.merge(&r.lock());
        }
        Some(merged)
    }
}

/// What a point left behind.
pub struct Outcome {
    pub recorder: Recorder,
    pub t0: Instant,
    /// The wall-clock time of `t0`.
    pub wall_t0: SystemTime,
    pub started_at: SystemTime,
}

pub(super) struct Shared {
    pub(super) target: Arc<Target>,
    /// When the measurement (and so `--duration`) starts.
    pub(super) measure_start: Arc<std::sync::OnceLock<Instant>>,
    pub(super) limits: Limits,
    live: Arc<Live>,
    log: Option<Arc<RequestLog>>,
    pub(super) cancel: CancellationToken,
    pub(super) t0: Instant,
    /// Multi-turn sessions instead of single requests, and the count of requests (turns) so far.
    pub(super) sessions: Option<Arc<SessionSet>>,
    pub(super) requests: Arc<AtomicU64>,
}

impl Shared {
    /// When no more requests may be sent (time-limited runs), once the measurement has started.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let duration = self.limits.duration?;
        self.measure_start.get().map(|start| *start + duration)
    }

    /// Sends one request unless cancelled; `None` when cancelled before it finished.
    async fn send(&self, index: u64) -> Option<Exchange> {
        self.send_with(index, None).await
    }

    /// Sends request `index` with its prebuilt body, or with `body`.
    pub(super) async fn send_with(&self, index: u64, body: Option<bytes::Bytes>) -> Option<Exchange> {
        self.live.sent.fetch_add(1, Ordering::Relaxed);
        let ex = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            ex = async {
                match body {
                    Some(b) => self.target.send_body(index, b).await,
                    None => self.target.send(index).await,
                }
            } => Some(ex),
        };
        match &ex {
            Some(e) if e.result.is_err() => {
                self.live.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.live.done.fetch_add(1, Ordering::Relaxed);
        ex
    }

    pub(super) fn log(&self, index: u64, intended: Instant, warmup: bool, ex: Option<&Exchange>, turn: Option<(u64, u32)>) {
        if let Some(log) = &self.log {
            log.write(index, self.t0, intended, warmup, ex, turn);
        }
    }

    /// The same settings with connections of its own (for another runtime).
    fn fork(&self) -> Shared {
        Shared {
            target: self.target.fork(),
            measure_start: self.measure_start.clone(),
            limits: self.limits.clone(),
            live: self.live.clone(),
            log: self.log.clone(),
            cancel: self.cancel.clone(),
            t0: self.t0,
            sessions: self.sessions.clone(),
            requests: self.requests.clone(),
        }
    }
}

/// Runs one point to completion (or cancellation) and returns the merged recorder.
pub async fn drive(
    point: Point,
    target: Arc<Target>,
    limits: Limits,
    live: Arc<Live>,
    log: Option<Arc<RequestLog>>,
    sessions: Option<Arc<SessionSet>>,
    cancel: CancellationToken,
) -> Outcome {
    // A short head start so the first requests are not late because of set-up; with
    // --start-at, time zero is that time (every shard of a run waits for it).
    let head_start = Duration::from_millis(5);
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    let (t0, wall_t0) = match limits.start_at {
        Some(at) if at > wall_now + head_start => (shard::instant_of(at), at),
        _ => (now + head_start, wall_now + head_start),
    };
    let started_at = wall_t0;
    let measure_start = Arc::new(std::sync::OnceLock::new());
    if let Some(offset) = limits.measure_start_offset() {
        let _ = measure_start.set(t0 + offset);
    }
    let requests = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Shared { target, measure_start, limits, live, log, cancel, t0, sessions, requests });
    let recorder = match point {
        Point::Closed { concurrency } | Point::Throughput { concurrency } => closed_loop(shared, concurrency).await,
        Point::Open { shape, gaps, max_concurrency } => open_loop(shared, shape, gaps, max_concurrency).await,
    };
    Outcome { recorder, t0, wall_t0, started_at }
}

/// Closed loop: the workers are spread over one single-threaded runtime per core, each
/// with its own connections, so a request's tasks (worker and connection) never hop threads.
async fn closed_loop(shared: Arc<Shared>, concurrency: u32) -> Recorder {
    let concurrency = shared.limits.shard.workers(concurrency.max(1)).max(1);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = (concurrency as usize).min(cores).max(1);
    let next = Arc::new(AtomicU64::new(0));
    let drain_guard = spawn_drain_watchdog(&shared);
    let mut handles = Vec::with_capacity(threads);
    for k in 0..threads {
        let workers = (concurrency as usize + threads - 1 - k) / threads;
        let shared = Arc::new(shared.fork());
        let next = next.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new().name(format!("gpubench-load-{k}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("cannot start a load runtime: {e}");
                    let _ = tx.send(Recorder::new(shared.t0));
                    return;
                }
            };
            let rec = rt.block_on(async move {
                // Until time zero (a --start-at may be minutes away); Ctrl-C ends the wait.
                tokio::select! {
                    _ = tokio::time::sleep_until(shared.t0.into()) => {}
                    _ = shared.cancel.cancelled() => {}
                }
                // The workers of one thread share its recorder: memory stays flat whatever the concurrency.
                let rec = Arc::new(Mutex::new(Recorder::new(shared.t0)));
                shared.live.register(&rec);
                let tasks: Vec<_> =
                    (0..workers).map(|_| tokio::spawn(worker(shared.clone(), next.clone(), rec.clone()))).collect();
                for t in tasks {
                    let _ = t.await;
                }
                let merged = rec.lock().clone();
                merged
            });
            let _ = tx.send(rec);
        });
        match spawned {
            Ok(_) => handles.push(rx),
            Err(e) => tracing::error!("cannot start a load thread: {e}"),
        }
    }
    let mut merged = Recorder::new(shared.t0);
    for rx in handles {
        if let Ok(rec) = rx.await {
            merged.merge(&rec);
        }
    }
    drain_guard.cancel();
    merged
}

/// One closed-loop worker: sends the next request when its last one ended (or runs the
/// next session when its last one ended).
async fn worker(shared: Arc<Shared>, next: Arc<AtomicU64>, rec: Arc<Mutex<Recorder>>) {
    if shared.sessions.is_some() {
        loop {
            let session = shared.limits.shard.global(next.fetch_add(1, Ordering::Relaxed));
            if !sessions::run(&shared, session, None, &rec).await {
                break;
            }
        }
        return;
    }
    let total = shared.limits.total_requests();
    let first_measured = shared.limits.warmup_requests();
    loop {
        if shared.cancel.is_cancelled() || shared.deadline().is_some_and(|s| Instant::now() >= s) {
            break;
        }
        let index = shared.limits.shard.global(next.fetch_add(1, Ordering::Relaxed));
        if total.is_some_and(|t| index >= t) {
            break;
        }
        let start = Instant::now();
        if index >= first_measured && shared.measure_start.get().is_none() {
            let _ = shared.measure_start.set(start);
        }
        let warmup = shared.limits.is_warmup(index, start.saturating_duration_since(shared.t0));
        let ex = shared.send(index).await;
        shared.log(index, start, warmup, ex.as_ref(), None);
        match ex {
            Some(ex) => rec.lock().record(Measured { exchange: &ex, intended: ex.sent, warmup, turn: None }, shared.limits.slo.as_ref()),
            None => {
                rec.lock().record_unfinished(warmup);
                break;
            }
        }
    }
}

/// After the last send, cancels whatever is still in flight once the drain time has passed.
fn spawn_drain_watchdog(shared: &Arc<Shared>) -> CancellationToken {
    let done = CancellationToken::new();
    if shared.limits.duration.is_some() {
        let shared = shared.clone();
        let done2 = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = done2.cancelled() => return,
                }
                if shared.deadline().is_some_and(|d| Instant::now() >= d + shared.limits.drain) {
                    shared.cancel.cancel();
                    return;
                }
            }
        });
    }
    done
}

#[path = "open_loop.rs"]
mod open_loop;
use open_loop::open_loop;
