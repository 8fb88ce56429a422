//! A small fork-join pool for the forward pass: `run(f)` calls `f(i)` on the caller (i = 0) and
//! on every worker that joins in time, and returns when all calls are done. Jobs share their
//! work through a counter, so a worker that the OS has not scheduled yet is simply not waited
//! for: the caller finishes the job alone. Workers spin briefly between jobs, because a step
//! issues a few hundred jobs a few microseconds apart, then sleep.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per job; workers run the job when they see a new value.
    generation: AtomicUsize,
    job: Mutex<Option<JobPtr>>,
    /// The generation workers may still join; 0 once the caller has closed it.
    open: AtomicUsize,
    /// Workers inside a job.
    active: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

#[derive(Clone, Copy)]
struct JobPtr(Job);
// SAFETY: the pointer is only dereferenced while `run` keeps the closure alive and waits.
unsafe impl Send for JobPtr {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes callers: one job at a time.
    running: Mutex<()>,
}

impl Pool {
    /// A pool of `threads` threads in all (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: Mutex::new(None),
            open: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::new();
        for i in 1..threads.max(1) {
            let s = Arc::clone(&shared);
            match std::thread::Builder::new().name(format!("model-{i}")).spawn(move || worker(s, i)) {
                Ok(h) => workers.push(h),
                Err(e) => {
                    tracing::warn!("cannot start model thread {i}: {e}; running with {} threads", workers.len() + 1);
                    break;
                }
            }
        }
        Self { shared, workers, running: Mutex::new(()) }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(0)` here and `f(i)` on the workers that join before it returns, then waits for
    /// them; `f` must share its work dynamically. A panic in any thread is raised again here.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        let _one = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let s = &*self.shared;
        // SAFETY: erase the closure's lifetime; workers only call it while the generation is
        // open or while counted in `active`, and we close it and wait for `active` below.
        let ptr: Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f as *const _) };
        *s.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(JobPtr(ptr));
        let generation = s.generation.load(Ordering::SeqCst) + 1;
        s.open.store(generation, Ordering::SeqCst);
        s.generation.store(generation, Ordering::SeqCst);
        {
            let _g = s.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        s.open.store(0, Ordering::SeqCst);
        let mut spins = 0u32;
        while s.active.load(Ordering::SeqCst) != 0 {
            spins += 1;
            if spins < 2000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let worker_panicked = s.panicked.swap(false, Ordering::SeqCst);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if worker_panicked {
            panic!("a model thread panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _g = self.shared.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(s: Arc<Shared>, index: usize) {
    // Jobs count from generation 0, which precedes every job (even one posted before this thread runs).
    let mut seen = 0;
    loop {
        // Wait for a new generation: spin first, then sleep.
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && started.elapsed() > SPIN {
                let guard = s.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
                if s.generation.load(Ordering::Acquire) == seen {
                    let _g = s.wake.wait_timeout(guard, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner());
                }
            } else {
                std::hint::spin_loop();
            }
        }
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        s.active.fetch_add(1, Ordering::SeqCst);
        if s.open.load(Ordering::SeqCst) == seen {
            let job = *s.job.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(JobPtr(ptr)) = job {
                // SAFETY: the job is open and we are counted in `active`, so `run` keeps the
                // closure alive until we leave.
                let f = unsafe { &*ptr };
                if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                    s.panicked.store(true, Ordering::SeqCst);
                }
            }
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn shared_work_is_done_exactly_once_by_whoever_joins() {
        let pool = Pool::new(3);
        for round in 0..2000usize {
            let next = AtomicUsize::new(0);
            let sum = AtomicU64::new(0);
            pool.run(&|_| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 100 {
                    break;
                }
                sum.fetch_add((i + round) as u64, Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), (0..100).map(|i| (i + round) as u64).sum::<u64>());
        }
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2);
        // The caller's own share panics; so may a worker's, if it joined.
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(&|_| panic!("boom"))));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert!((1..=2).contains(&n.load(Ordering::Relaxed)));
    }
}

/// An output buffer that the jobs of one [`Pool::run`] write in disjoint parts.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);
// SAFETY: every user writes only its own elements, and `run` returns after all jobs have ended.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

impl SharedOut {
    pub(crate) fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// The buffer's start (a method, so that closures capture the whole `Sync` wrapper).
    pub(crate) fn ptr(&self) -> *mut f32 {
        self.0
    }
}
