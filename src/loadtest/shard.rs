//! Sharded load: N load-test processes (the pods of an Indexed Job, say) that together send
//! exactly the schedule one process would send. Every shard computes the whole plan from the
//! same flags and seed (request bodies, send times, warm-up) and sends its part of it:
//! requests (or sessions) I, I+N, I+2N, ... of the open-loop schedule, and of a closed loop
//! concurrency/N workers (the remainder spread over the first shards) drawing requests I,
//! I+N, ... Request i keeps its body and its replica (`--url`) whichever shard sends it.
//! `--start-at` makes all shards begin at one wall-clock time; each shard measures its clock
//! against the target's HTTP `Date` header so the merged report can state the skew.

use std::time::{Duration, Instant, SystemTime};

use crate::report::ShardInfo;
pub use crate::support::fmt::rfc3339_ms;
use crate::support::fmt::round3;

/// The environment variable Kubernetes sets in each pod of an Indexed Job.
pub const JOB_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// One shard of a run: this process is number `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl Shard {
    /// The whole run in one process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn is_whole(&self) -> bool {
        self.count <= 1
    }

    /// Whether request (or session) `global` of the whole schedule is this shard's.
    pub fn owns(&self, global: u64) -> bool {
        global % u64::from(self.count.max(1)) == u64::from(self.index)
    }

    /// The `local`-th request this shard sends, as an index of the whole run.
    pub fn global(&self, local: u64) -> u64 {
        local * u64::from(self.count.max(1)) + u64::from(self.index)
    }

    /// This shard's share of `concurrency` closed-loop workers: concurrency / N, plus one
    /// for each of the first concurrency mod N shards.
    pub fn workers(&self, concurrency: u32) -> u32 {
        let n = self.count.max(1);
        concurrency / n + u32::from(self.index < concurrency % n)
    }

    /// `I/N` (0 ≤ I < N).
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard '{text}' is not I/N with 0 <= I < N, e.g. 0/4 for the first of four shards");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The shard from `--shard I/N`, or from `--shards N` and the pod's `JOB_COMPLETION_INDEX`.
    pub fn resolve(shard: Option<&str>, shards: Option<u32>, job_index: Option<&str>) -> Result<Shard, String> {
        match (shard, shards) {
            (Some(text), shards) => {
                let s = Shard::parse(text)?;
                if shards.is_some_and(|n| n != s.count) {
                    return Err(format!("--shard {text} and --shards {} disagree on the number of shards: give one of them", shards.unwrap_or(0)));
                }
                Ok(s)
            }
            (None, Some(0)) => Err("--shards must be at least 1".into()),
            (None, Some(count)) => {
                let raw = job_index.ok_or_else(|| {
                    format!("--shards {count} takes this shard's index from {JOB_INDEX_ENV}, which an Indexed Job sets, and it is not set: give --shard I/{count} instead")
                })?;
                let index: u32 = raw.trim().parse().map_err(|_| format!("{JOB_INDEX_ENV}='{raw}' is not a shard index (0, 1, ...)"))?;
                if index >= count {
                    return Err(format!("{JOB_INDEX_ENV}={index} is not below --shards {count}: set the Job's completions to {count}"));
                }
                Ok(Shard { index, count })
            }
            (None, None) => Ok(Shard::WHOLE),
        }
    }
}

/// `--start-at`: an RFC 3339 time (`2026-12-02T10:00:00Z`) or a delay from now (`+30s`).
pub fn parse_start_at(text: &str) -> Result<SystemTime, String> {
    let t = text.trim();
    if let Some(delay) = t.strip_prefix('+') {
        let d = crate::support::cli::parse_duration(delay).map_err(|e| format!("--start-at '{t}': {e}"))?;
        return Ok(SystemTime::now() + d);
    }
    let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(|e| {
        format!("--start-at '{t}' is neither an RFC 3339 time (2026-12-02T10:00:00Z) nor a delay from now (+30s): {e}")
    })?;
    Ok(SystemTime::from(at))
}

/// The instant matching wall-clock time `at` on this machine (now when `at` has passed).
pub fn instant_of(at: SystemTime) -> Instant {
    let (now_i, now_w) = (Instant::now(), SystemTime::now());
    match at.duration_since(now_w) {
        Ok(ahead) => now_i + ahead,
        Err(_) => now_i,
    }
}

pub fn unix_ms(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        Err(_) => 0.0,
    }
}

/// The target's clock minus this machine's, in milliseconds, and how far off that estimate may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockOffset {
    pub offset_ms: f64,
    pub error_ms: f64,
}

/// One probe: local send and receive times, and the whole second the server's `Date` named.
#[derive(Debug, Clone, Copy)]
pub struct DateProbe {
    pub sent: SystemTime,
    pub received: SystemTime,
    pub server_s: u64,
}

/// Estimates the offset from probes in time order. `Date` has whole seconds, so the estimate
/// looks for the tick: between two probes whose seconds differ by one, the server's clock
/// passed second s+1. With no tick seen, the offset is known to ±0.5 s plus the round trip.
pub fn estimate_offset(probes: &[DateProbe]) -> Option<ClockOffset> {
    let ms = |t: SystemTime| unix_ms(t);
    for w in probes.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.server_s == a.server_s + 1 {
            // The tick fell after a's server time and before b's: between a.sent and b.received.
            let lo = ms(a.sent);
            let hi = ms(b.received);
            let tick = (b.server_s as f64) * 1000.0;
            let local = (lo + hi) / 2.0;
            return Some(ClockOffset { offset_ms: round3(tick - local), error_ms: round3((hi - lo) / 2.0) });
        }
    }
    let p = probes.last()?;
    let local = (ms(p.sent) + ms(p.received)) / 2.0;
    let server = p.server_s as f64 * 1000.0 + 500.0;
    Some(ClockOffset { offset_ms: round3(server - local), error_ms: round3(500.0 + (ms(p.received) - ms(p.sent)) / 2.0) })
}

/// Measures the offset of the target's clock against the `Date` header of `GET {base}/`,
/// probing every few milliseconds for up to about 1.2 s until the server's second ticks.
pub async fn measure_clock(base: &reqwest::Url) -> Option<ClockOffset> {
    let client = crate::support::http::client(Duration::from_secs(2)).ok()?;
    let mut url = base.clone();
    url.set_path("/");
    url.set_query(None);
    let mut probes: Vec<DateProbe> = Vec::new();
    let give_up = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < give_up && probes.len() < 400 {
        let sent = SystemTime::now();
        let response = client.get(url.clone()).send().await.ok()?;
        let received = SystemTime::now();
        let date = response.headers().get(reqwest::header::DATE)?.to_str().ok()?;
        let server = httpdate::parse_http_date(date).ok()?;
        let server_s = server.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        let ticked = probes.last().is_some_and(|p| server_s == p.server_s + 1);
        probes.push(DateProbe { sent, received, server_s });
        if ticked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    estimate_offset(&probes)
}

/// What a shard's report says about its part, before the run fills in the times.
pub fn info(shard: Shard, workers: Option<u32>, start_at: Option<SystemTime>, clock: Option<ClockOffset>) -> ShardInfo {
    ShardInfo {
        index: shard.index,
        count: shard.count,
        workers,
        start_at: start_at.map(rfc3339_ms),
        clock_offset_ms: clock.map(|c| c.offset_ms),
        clock_offset_error_ms: clock.map(|c| c.error_ms),
        window_start_unix_ms: None,
        series_start_unix_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_requests_and_workers_exactly() {
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        for g in 0..30u64 {
            assert_eq!(shards.iter().filter(|s| s.owns(g)).count(), 1, "request {g} has one owner");
        }
        assert_eq!(shards[1].global(0), 1);
        assert_eq!(shards[1].global(2), 7);
        assert!(shards[1].owns(shards[1].global(5)));
        let workers: Vec<u32> = shards.iter().map(|s| s.workers(10)).collect();
        assert_eq!(workers, vec![4, 3, 3]);
        assert_eq!(workers.iter().sum::<u32>(), 10);
        assert_eq!(Shard::WHOLE.workers(7), 7);
        assert!(Shard::WHOLE.owns(5));
    }

    #[test]
    fn shard_flags_parse_and_name_what_is_wrong() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert!(Shard::parse("4/4").unwrap_err().contains("0 <= I < N"));
        assert!(Shard::parse("1").is_err());
        assert!(Shard::parse("a/2").is_err());
        assert!(Shard::parse("0/0").is_err());
        assert_eq!(Shard::resolve(None, Some(4), Some("2")).unwrap(), Shard { index: 2, count: 4 });
        assert!(Shard::resolve(None, Some(4), None).unwrap_err().contains(JOB_INDEX_ENV));
        assert!(Shard::resolve(None, Some(4), Some("4")).unwrap_err().contains("completions"));
        assert!(Shard::resolve(None, Some(4), Some("x")).unwrap_err().contains("not a shard index"));
        assert!(Shard::resolve(Some("0/2"), Some(3), None).unwrap_err().contains("disagree"));
        assert_eq!(Shard::resolve(None, None, Some("3")).unwrap(), Shard::WHOLE);
    }

    #[test]
    fn start_at_takes_rfc3339_or_a_delay() {
        let at = parse_start_at("2026-12-02T10:00:00Z").unwrap();
        assert_eq!(unix_ms(at), 1_796_205_600_000.0);
        let soon = parse_start_at("+30s").unwrap();
        let ahead = soon.duration_since(SystemTime::now()).unwrap();
        assert!(ahead > Duration::from_secs(29) && ahead <= Duration::from_secs(30));
        assert!(parse_start_at("tomorrow").unwrap_err().contains("RFC 3339"));
        assert!(parse_start_at("+soon").unwrap_err().contains("--start-at"));
        assert_eq!(rfc3339_ms(at), "2026-12-02T10:00:00.000Z");
    }

    #[test]
    fn the_clock_offset_comes_from_the_tick_of_the_date_header() {
        let t = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        // The server's clock is 250 ms ahead: its second 101 starts at local 100.750 s.
        let probes = [
            DateProbe { sent: t(100_700), received: t(100_702), server_s: 100 },
            DateProbe { sent: t(100_740), received: t(100_742), server_s: 100 },
            DateProbe { sent: t(100_750), received: t(100_752), server_s: 101 },
        ];
        let c = estimate_offset(&probes).unwrap();
        assert!((c.offset_ms - 250.0).abs() <= c.error_ms && c.error_ms <= 6.0, "{c:?}");
        let untick = estimate_offset(&probes[..1]).unwrap();
        assert!(untick.error_ms >= 500.0);
        assert!(estimate_offset(&[]).is_none());
    }
}
