//! The open loop: a dedicated scheduler thread hands each request to the runtime at its
//! time on the schedule; latency counts from that intended time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use super::super::recorder::{Measured, Recorder};
use super::super::schedule::{Gaps, Schedule, Shape};
use super::super::sessions;
use super::{Shared, DEFAULT_OPEN_LOOP_CAP};

pub(super) async fn open_loop(shared: Arc<Shared>, shape: Shape, gaps: Gaps, max_concurrency: Option<u32>) -> Recorder {
    const SHARDS: usize = 16;
    let shards: Arc<Vec<Arc<Mutex<Recorder>>>> = Arc::new((0..SHARDS).map(|_| Arc::new(Mutex::new(Recorder::new(shared.t0)))).collect());
    for rec in shards.iter() {
        shared.live.register(rec);
    }
    let in_flight = Arc::new(AtomicUsize::new(0));
    let idle = Arc::new(Notify::new());
    // A shard holds its share of the run's cap on requests in flight.
    let max_concurrency = max_concurrency.map(|m| shared.limits.shard.workers(m).max(1));
    let capped_by_default = max_concurrency.is_none();
    let permits = Arc::new(Semaphore::new(max_concurrency.unwrap_or(DEFAULT_OPEN_LOOP_CAP).max(1) as usize));
    let handle = tokio::runtime::Handle::current();

    let scheduler = {
        let shared = shared.clone();
        let shards = shards.clone();
        let in_flight = in_flight.clone();
        let idle = idle.clone();
        std::thread::Builder::new().name("gpubench-schedule".into()).spawn(move || {
            // With sessions, the schedule starts sessions and the limit counts them.
            let total = shared.limits.total_requests();
            let first_measured = shared.limits.warmup_requests();
            let mut measure_from = shared.limits.measure_start_offset();
            for (index, offset) in Schedule::new(shape, gaps, shared.limits.seed).enumerate() {
                let index = index as u64;
                if index == first_measured && measure_from.is_none() {
                    measure_from = Some(offset);
                }
                let past_deadline = match (shared.limits.duration, measure_from) {
                    (Some(d), Some(from)) => offset >= from + d,
                    _ => false,
                };
                if total.is_some_and(|t| index >= t) || past_deadline {
                    break;
                }
                if !shared.limits.shard.owns(index) {
                    continue;
                }
                let intended = shared.t0 + offset;
                // Sleep in short slices so that Ctrl-C is seen even between distant requests.
                loop {
                    let now = Instant::now();
                    if intended <= now || shared.cancel.is_cancelled() {
                        break;
                    }
                    std::thread::sleep((intended - now).min(Duration::from_millis(50)));
                }
                if shared.cancel.is_cancelled() {
                    break;
                }
                in_flight.fetch_add(1, Ordering::AcqRel);
                let guard = InFlight { count: in_flight.clone(), idle: idle.clone() };
                let shared = shared.clone();
                let shards = shards.clone();
                let permits = permits.clone();
                handle.spawn(async move {
                    let _guard = guard;
                    let dispatched = Instant::now();
                    let warmup = shared.limits.is_warmup(index, offset);
                    shards[index as usize % SHARDS].lock().record_lag(intended, dispatched, warmup);
                    if capped_by_default && permits.available_permits() == 0 {
                        shared.live.cap_reached.store(true, Ordering::Relaxed);
                    }
                    let _permit = tokio::select! {
                        biased;
                        _ = shared.cancel.cancelled() => None,
                        permit = permits.clone().acquire_owned() => permit.ok(),
                    };
                    if shared.sessions.is_some() {
                        let rec = &shards[index as usize % SHARDS];
                        sessions::run(&shared, index, Some(intended), rec).await;
                        return;
                    }
                    let ex = if shared.cancel.is_cancelled() { None } else { shared.send(index).await };
                    shared.log(index, intended, warmup, ex.as_ref(), None);
                    let mut rec = shards[index as usize % SHARDS].lock();
                    match ex {
                        Some(ex) => rec.record(Measured { exchange: &ex, intended, warmup, turn: None }, shared.limits.slo.as_ref()),
                        None => rec.record_unfinished(warmup),
                    }
                });
            }
        })
    };
    let scheduler = match scheduler {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start the scheduler thread: {e}");
            return Recorder::new(shared.t0);
        }
    };
    // Wait for the scheduler without blocking the runtime, then drain.
    let join = tokio::task::spawn_blocking(move || scheduler.join());
    let _ = join.await;
    drain(&shared, &in_flight, &idle).await;
    let mut merged = Recorder::new(shared.t0);
    for s in shards.iter() {
        merged.merge(&s.lock());
    }
    merged
}

/// Waits until no request is in flight, cancelling what is left once the drain time has passed.
async fn drain(shared: &Shared, in_flight: &AtomicUsize, idle: &Notify) {
    let drain_deadline = Instant::now() + shared.limits.drain;
    loop {
        let notified = idle.notified();
        if in_flight.load(Ordering::Acquire) == 0 {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(drain_deadline.into()) => {
                shared.cancel.cancel();
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

struct InFlight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}
