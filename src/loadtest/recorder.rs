//! Per-worker measurement state: HdrHistograms (microseconds, 3 significant figures),
//! counts and per-second buckets. Memory does not grow with the number of requests;
//! recorders are merged at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::client::{ErrorKind, Exchange};
use super::options::Slo;
use crate::report::ErrorCounts;

/// Highest latency a histogram holds: one hour.
const MAX_MICROS: u64 = 3_600_000_000;
/// Distinct error messages kept as samples.
const MAX_SAMPLES: usize = 5;

/// An empty histogram that grows to the values it sees (a full 1 µs..1 h one is ~380 KB,
/// too much to keep per worker and metric).
fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant figures are valid");
    h.auto(true);
    h
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, MAX_MICROS);
    // A growing histogram takes any value up to its limit; failure would only mean running out of memory.
    let _ = h.record(us);
}

#[derive(Debug, Clone, Default)]
pub struct Bucket {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub output_tokens: u64,
    pub e2e_sum_us: u64,
    pub e2e_max_us: u64,
}

/// One request as the recorder sees it.
pub struct Measured<'a> {
    pub exchange: &'a Exchange,
    /// When the request was meant to go out: the schedule's time (open loop) or the send time (closed loop).
    pub intended: Instant,
    pub warmup: bool,
    /// The turn of a multi-turn session (1 for the first).
    pub turn: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Recorder {
    pub t0: Instant,
    pub e2e: Histogram<u64>,
    pub service: Histogram<u64>,
    pub ttft: Histogram<u64>,
    pub itl: Histogram<u64>,
    pub tpot: Histogram<u64>,
    pub queue: Histogram<u64>,
    pub lag: Histogram<u64>,
    /// TTFT of sessions' first turns and of their later turns (where a prefix cache shows).
    pub ttft_first_turn: Histogram<u64>,
    pub ttft_later_turns: Histogram<u64>,
    pub sessions_finished: u64,
    /// Prompt tokens the server reported as taken from its cache, and the answers that said.
    pub cached_tokens: u64,
    pub answers_with_cached_count: u64,
    /// Prompt tokens of the answers that reported cached tokens.
    pub prompt_tokens_with_cached: u64,
    pub ok: u64,
    pub errors: ErrorCounts,
    pub http_status: BTreeMap<u16, u64>,
    pub samples: Vec<String>,
    pub unfinished: u64,
    pub warmup: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub answers_with_prompt_count: u64,
    pub answers_with_output_count: u64,
    pub count_mismatches: u64,
    pub goodput: u64,
    pub first_start: Option<Instant>,
    pub last_done: Option<Instant>,
    pub first_dispatch: Option<Instant>,
    pub last_dispatch: Option<Instant>,
    pub first_intended: Option<Instant>,
    pub last_intended: Option<Instant>,
    pub buckets: Vec<Bucket>,
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Recorder {
    pub fn new(t0: Instant) -> Self {
        Recorder {
            t0,
            e2e: histogram(),
            service: histogram(),
            ttft: histogram(),
            itl: histogram(),
            tpot: histogram(),
            queue: histogram(),
            lag: histogram(),
            ttft_first_turn: histogram(),
            ttft_later_turns: histogram(),
            sessions_finished: 0,
            cached_tokens: 0,
            answers_with_cached_count: 0,
            prompt_tokens_with_cached: 0,
            ok: 0,
            errors: ErrorCounts::default(),
            http_status: BTreeMap::new(),
            samples: Vec::new(),
            unfinished: 0,
            warmup: 0,
            input_tokens: 0,
            output_tokens: 0,
            answers_with_prompt_count: 0,
            answers_with_output_count: 0,
            count_mismatches: 0,
            goodput: 0,
            first_start: None,
            last_done: None,
            first_dispatch: None,
            last_dispatch: None,
            first_intended: None,
            last_intended: None,
            buckets: Vec::new(),
        }
    }

    fn bucket(&mut self, at: Instant) -> &mut Bucket {
        let i = at.saturating_duration_since(self.t0).as_secs() as usize;
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, Bucket::default());
        }
        &mut self.buckets[i]
    }

    /// Open loop: how late the client got to a request compared with its schedule.
    pub fn record_lag(&mut self, intended: Instant, dispatched: Instant, warmup: bool) {
        if warmup {
            return;
        }
        record(&mut self.lag, dispatched.saturating_duration_since(intended));
        self.first_dispatch = min_opt(self.first_dispatch, Some(dispatched));
        self.last_dispatch = max_opt(self.last_dispatch, Some(dispatched));
        self.first_intended = min_opt(self.first_intended, Some(intended));
        self.last_intended = max_opt(self.last_intended, Some(intended));
    }

    /// A request that was still in flight when the run stopped.
    pub fn record_unfinished(&mut self, warmup: bool) {
        if warmup {
            self.warmup += 1;
        } else {
            self.unfinished += 1;
        }
    }

    pub fn record(&mut self, m: Measured<'_>, slo: Option<&Slo>) {
        if m.warmup {
            self.warmup += 1;
            return;
        }
        let ex = m.exchange;
        self.first_start = min_opt(self.first_start, Some(m.intended));
        self.last_done = max_opt(self.last_done, Some(ex.done));
        let sent_bucket = self.bucket(ex.sent);
        sent_bucket.sent += 1;
        match &ex.result {
            Err(err) => {
                match err.kind {
                    ErrorKind::Timeout => self.errors.timeout += 1,
                    ErrorKind::Connect => self.errors.connect += 1,
                    ErrorKind::Protocol => self.errors.protocol += 1,
                    ErrorKind::HttpStatus(code) => {
                        self.errors.http_status += 1;
                        *self.http_status.entry(code).or_default() += 1;
                    }
                }
                if self.samples.len() < MAX_SAMPLES {
                    let sample = format!("{}: {}", err.kind.name(), err.message);
                    if !self.samples.contains(&sample) {
                        self.samples.push(sample);
                    }
                }
                self.bucket(ex.done).errors += 1;
            }
            Ok(answer) => {
                self.ok += 1;
                let e2e = ex.done.saturating_duration_since(m.intended);
                record(&mut self.e2e, e2e);
                record(&mut self.service, ex.done.saturating_duration_since(ex.sent));
                if m.intended < ex.sent {
                    record(&mut self.queue, ex.sent - m.intended);
                }
                let ttft = answer.first_token.map(|t| t.saturating_duration_since(m.intended));
                if let Some(t) = ttft {
                    record(&mut self.ttft, t);
                    match m.turn {
                        Some(1) => record(&mut self.ttft_first_turn, t),
                        Some(_) => record(&mut self.ttft_later_turns, t),
                        None => {}
                    }
                }
                if let Some(c) = answer.usage.cached_tokens {
                    self.cached_tokens += c;
                    self.answers_with_cached_count += 1;
                    self.prompt_tokens_with_cached += answer.usage.prompt_tokens.unwrap_or(0);
                }
                for gap in &answer.token_gaps {
                    record(&mut self.itl, *gap);
                }
                let out = answer.output_tokens();
                let tpot = answer.tpot(e2e, ttft);
                if let Some(tp) = tpot {
                    record(&mut self.tpot, tp);
                }
                if let Some(p) = answer.usage.prompt_tokens {
                    self.input_tokens += p;
                    self.answers_with_prompt_count += 1;
                }
                if let Some(n) = out {
                    self.output_tokens += n;
                    self.answers_with_output_count += 1;
                }
                if let (Some(server), Some(streamed)) = (answer.usage.completion_tokens, answer.streamed_events) {
                    if server != streamed {
                        self.count_mismatches += 1;
                    }
                }
                if let Some(slo) = slo {
                    let within = |limit: Option<f64>, value: Option<Duration>| match (limit, value) {
                        (None, _) => true,
                        (Some(l), Some(v)) => v.as_secs_f64() * 1000.0 <= l,
                        (Some(_), None) => false,
                    };
                    if within(slo.e2e_ms, Some(e2e)) && within(slo.ttft_ms, ttft) && within(slo.tpot_ms, tpot.or(ttft.map(|_| Duration::ZERO))) {
                        self.goodput += 1;
                    }
                }
                let us = e2e.as_micros() as u64;
                let b = self.bucket(ex.done);
                b.ok += 1;
                b.output_tokens += out.unwrap_or(0);
                b.e2e_sum_us += us;
                b.e2e_max_us = b.e2e_max_us.max(us);
            }
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (a, b) in [
            (&mut self.e2e, &other.e2e),
            (&mut self.service, &other.service),
            (&mut self.ttft, &other.ttft),
            (&mut self.itl, &other.itl),
            (&mut self.tpot, &other.tpot),
            (&mut self.queue, &other.queue),
            (&mut self.lag, &other.lag),
            (&mut self.ttft_first_turn, &other.ttft_first_turn),
            (&mut self.ttft_later_turns, &other.ttft_later_turns),
        ] {
            // Both histograms have the same bounds, so adding cannot fail.
            let _ = a.add(b);
        }
        self.ok += other.ok;
        self.errors.timeout += other.errors.timeout;
        self.errors.connect += other.errors.connect;
        self.errors.http_status += other.errors.http_status;
        self.errors.protocol += other.errors.protocol;
        for (code, n) in &other.http_status {
            *self.http_status.entry(*code).or_default() += n;
        }
        for s in &other.samples {
            if self.samples.len() < MAX_SAMPLES && !self.samples.contains(s) {
                self.samples.push(s.clone());
            }
        }
        self.unfinished += other.unfinished;
        self.warmup += other.warmup;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.answers_with_prompt_count += other.answers_with_prompt_count;
        self.answers_with_output_count += other.answers_with_output_count;
        self.count_mismatches += other.count_mismatches;
        self.goodput += other.goodput;
        self.sessions_finished += other.sessions_finished;
        self.cached_tokens += other.cached_tokens;
        self.answers_with_cached_count += other.answers_with_cached_count;
        self.prompt_tokens_with_cached += other.prompt_tokens_with_cached;
        self.first_start = min_opt(self.first_start, other.first_start);
        self.last_done = max_opt(self.last_done, other.last_done);
        self.first_dispatch = min_opt(self.first_dispatch, other.first_dispatch);
        self.last_dispatch = max_opt(self.last_dispatch, other.last_dispatch);
        self.first_intended = min_opt(self.first_intended, other.first_intended);
        self.last_intended = max_opt(self.last_intended, other.last_intended);
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), Bucket::default());
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            a.sent += b.sent;
            a.ok += b.ok;
            a.errors += b.errors;
            a.output_tokens += b.output_tokens;
            a.e2e_sum_us += b.e2e_sum_us;
            a.e2e_max_us = a.e2e_max_us.max(b.e2e_max_us);
        }
    }

    /// Measured requests that went out.
    pub fn sent(&self) -> u64 {
        self.ok + self.errors.total() + self.unfinished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::api::Usage;
    use crate::loadtest::client::{Answer, RequestError};

    fn ok(sent: Instant, ms: u64, first_ms: Option<u64>, tokens: u64) -> Exchange {
        Exchange {
            sent,
            done: sent + Duration::from_millis(ms),
            result: Ok(Answer {
                usage: Usage { prompt_tokens: Some(10), completion_tokens: Some(tokens), cached_tokens: None },
                streamed_events: first_ms.map(|_| tokens),
                first_token: first_ms.map(|f| sent + Duration::from_millis(f)),
                token_gaps: vec![Duration::from_millis(10); tokens.saturating_sub(1) as usize],
                text: None,
            }),
        }
    }

    #[test]
    fn latencies_count_from_the_intended_time() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        let intended = t0;
        let sent = t0 + Duration::from_millis(500);
        r.record(Measured { exchange: &ok(sent, 100, Some(20), 5), intended, warmup: false, turn: None }, None);
        let e2e = r.e2e.max() as f64 / 1000.0;
        assert!((599.0..=601.0).contains(&e2e), "e2e {e2e}");
        assert!((r.service.max() as f64 / 1000.0 - 100.0).abs() < 1.0);
        assert!((r.queue.max() as f64 / 1000.0 - 500.0).abs() < 1.0);
        assert!((r.ttft.max() as f64 / 1000.0 - 520.0).abs() < 1.0);
        // TPOT = (600 - 520) / (5 - 1) = 20 ms
        assert!((r.tpot.max() as f64 / 1000.0 - 20.0).abs() < 0.1);
        assert_eq!(r.itl.len(), 4);
        assert_eq!(r.output_tokens, 5);
    }

    #[test]
    fn warmup_errors_and_goodput() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        r.record(Measured { exchange: &ok(t0, 100, None, 5), intended: t0, warmup: true, turn: None }, None);
        assert_eq!((r.warmup, r.ok, r.e2e.len()), (1, 0, 0));
        let failed = Exchange {
            sent: t0,
            done: t0,
            result: Err(RequestError { kind: ErrorKind::HttpStatus(503), message: "busy".into() }),
        };
        let slo = Slo { e2e_ms: Some(150.0), ..Slo::default() };
        r.record(Measured { exchange: &failed, intended: t0, warmup: false, turn: None }, Some(&slo));
        r.record(Measured { exchange: &ok(t0, 100, None, 5), intended: t0, warmup: false, turn: None }, Some(&slo));
        r.record(Measured { exchange: &ok(t0, 200, None, 5), intended: t0, warmup: false, turn: None }, Some(&slo));
        assert_eq!(r.errors.http_status, 1);
        assert_eq!(r.http_status[&503], 1);
        assert_eq!(r.samples, vec!["http_status: busy".to_string()]);
        assert_eq!((r.ok, r.goodput, r.sent()), (2, 1, 3));
        let mut merged = Recorder::new(t0);
        merged.merge(&r);
        merged.merge(&r);
        assert_eq!((merged.ok, merged.errors.total(), merged.e2e.len()), (4, 2, 4));
        assert_eq!(merged.samples.len(), 1);
    }

    #[test]
    fn ttft_slo_fails_when_ttft_is_unknown() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        let slo = Slo { ttft_ms: Some(1000.0), ..Slo::default() };
        r.record(Measured { exchange: &ok(t0, 100, None, 5), intended: t0, warmup: false, turn: None }, Some(&slo));
        r.record(Measured { exchange: &ok(t0, 100, Some(50), 5), intended: t0, warmup: false, turn: None }, Some(&slo));
        assert_eq!(r.goodput, 1);
    }
}
