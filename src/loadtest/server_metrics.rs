//! `--server-metrics`: the serving engine's own `/metrics`, tried once before the run and
//! then scraped in the background while each point runs. A scrape has its own client and
//! a short timeout, so it never holds up the load; a target without metrics gets one
//! warning and is never asked again.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::engine_metrics::{summarize, Collected, Engine, Reading};
use super::options::ServerMetricsSource;
use crate::device::exposition::{self, Exposition};
use crate::report::ServerMetrics;

/// Longest wait for one scrape (shorter when the interval is).
const MAX_SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Answers larger than this are not exposition text gpubench reads.
const MAX_BODY_BYTES: usize = 8 << 20;

/// A replica whose metrics answered the probe.
#[derive(Debug, Clone)]
pub struct ScrapeTarget {
    /// The load-test URL it serves (the scrape URL itself when given by hand).
    pub url: String,
    pub scrape_url: reqwest::Url,
    pub engine: Engine,
}

/// What the probe found: the replicas to scrape, and a warning for those it could not.
#[derive(Debug, Clone, Default)]
pub struct ServerMetricsPlan {
    pub targets: Vec<ScrapeTarget>,
    pub interval: Duration,
    /// At most one warning, for every replica without metrics together.
    pub note: Option<String>,
}

/// `/metrics` on the URL's scheme, host and port.
fn metrics_url(url: &reqwest::Url) -> reqwest::Url {
    let mut u = url.clone();
    u.set_path("/metrics");
    u.set_query(None);
    u.set_fragment(None);
    u
}

fn client(timeout: Duration) -> Option<reqwest::Client> {
    reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).pool_max_idle_per_host(1).build().ok()
}

/// One GET of the exposition; the reason in words when it is not one.
async fn fetch(client: &reqwest::Client, url: &reqwest::Url) -> Result<Exposition, String> {
    let resp = client.get(url.clone()).send().await.map_err(|e| {
        if e.is_timeout() {
            "no answer in time".to_string()
        } else if e.is_connect() {
            "connection refused".to_string()
        } else {
            e.to_string()
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let body = resp.bytes().await.map_err(|e| format!("the answer broke off ({e})"))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("the answer is larger than {} MiB", MAX_BODY_BYTES >> 20));
    }
    let e = exposition::parse(&String::from_utf8_lossy(&body));
    if e.sample_count() == 0 {
        return Err("not Prometheus exposition text".into());
    }
    Ok(e)
}

/// Tries each replica's metrics once.
pub async fn probe(source: &ServerMetricsSource, urls: &[reqwest::Url], interval: Duration) -> ServerMetricsPlan {
    let candidates: Vec<(String, reqwest::Url)> = match source {
        ServerMetricsSource::Off => return ServerMetricsPlan { interval, ..Default::default() },
        ServerMetricsSource::Auto => urls.iter().map(|u| (u.to_string(), metrics_url(u))).collect(),
        ServerMetricsSource::Urls(given) => given.iter().filter_map(|u| reqwest::Url::parse(u).ok()).map(|u| (u.to_string(), u)).collect(),
    };
    let mut targets: Vec<ScrapeTarget> = Vec::new();
    let mut missing = Vec::new();
    let Some(client) = client(MAX_SCRAPE_TIMEOUT) else {
        return ServerMetricsPlan { interval, note: Some("server metrics: cannot build an HTTP client; none were recorded".into()), ..Default::default() };
    };
    for (url, scrape_url) in candidates {
        if targets.iter().any(|t| t.scrape_url == scrape_url) {
            continue;
        }
        match fetch(&client, &scrape_url).await {
            Ok(e) => targets.push(ScrapeTarget { url, scrape_url, engine: Engine::detect(&e) }),
            Err(why) => missing.push(format!("{scrape_url} ({why})")),
        }
    }
    let note = (!missing.is_empty()).then(|| {
        let fix = match source {
            ServerMetricsSource::Auto => "pass --server-metrics URL where the engine serves them elsewhere, or --server-metrics off",
            _ => "check the URL given to --server-metrics, or use --server-metrics off",
        };
        format!("server metrics: no Prometheus metrics at {}; the report has none for it: {fix}", missing.join(", "))
    });
    ServerMetricsPlan { targets, interval, note }
}

/// The background scrapers of one point.
pub struct Scraper {
    stop: CancellationToken,
    interval: Duration,
    tasks: Vec<JoinHandle<Collected>>,
    latest: Latest,
}

/// The last reading of each replica, for the live view.
#[derive(Debug, Clone, Default)]
pub struct LatestReading {
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    pub kv_usage: Option<f64>,
}

pub type Latest = std::sync::Arc<parking_lot::Mutex<Vec<LatestReading>>>;

impl Scraper {
    /// Starts one scraper per target: a scrape now, then one per interval.
    pub fn start(plan: &ServerMetricsPlan) -> Option<Scraper> {
        if plan.targets.is_empty() {
            return None;
        }
        let interval = plan.interval.max(Duration::from_millis(10));
        let timeout = interval.min(MAX_SCRAPE_TIMEOUT).max(Duration::from_millis(100));
        let client = client(timeout)?;
        let stop = CancellationToken::new();
        let latest: Latest = std::sync::Arc::new(parking_lot::Mutex::new(
            plan.targets.iter().map(|_| LatestReading::default()).collect(),
        ));
        let tasks = plan
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| tokio::spawn(scrape_loop(client.clone(), t.clone(), interval, stop.clone(), (latest.clone(), i))))
            .collect();
        Some(Scraper { stop, interval, tasks, latest })
    }

    /// Each replica's last reading, as the scrapes go.
    pub fn latest(&self) -> Latest {
        self.latest.clone()
    }

    /// Stops the scrapers (each takes one last scrape) and builds the report's part.
    pub async fn finish(self, window_start: Option<Instant>) -> ServerMetrics {
        self.stop.cancel();
        let mut replicas = Vec::new();
        for task in self.tasks {
            if let Ok(c) = task.await {
                replicas.push(summarize(c, window_start));
            }
        }
        ServerMetrics { interval_s: self.interval.as_secs_f64(), replicas }
    }
}

async fn scrape_loop(
    client: reqwest::Client,
    target: ScrapeTarget,
    interval: Duration,
    stop: CancellationToken,
    (latest, slot): (Latest, usize),
) -> Collected {
    let mut c = Collected {
        url: target.url.clone(),
        scrape_url: target.scrape_url.to_string(),
        engine: target.engine.name().to_string(),
        ..Default::default()
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = ticks.tick() => false,
        };
        let at = Instant::now();
        match fetch(&client, &target.scrape_url).await {
            Ok(e) => {
                let reading = Reading::of(&e);
                if let Some(l) = latest.lock().get_mut(slot) {
                    (l.running, l.waiting, l.kv_usage) = (reading.running, reading.waiting, reading.kv_usage);
                }
                c.readings.push((at, reading));
            }
            Err(_) => c.errors += 1,
        }
        if stopped {
            return c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auto_url_is_metrics_on_the_same_host_and_port() {
        let u = reqwest::Url::parse("http://10.0.0.5:8000/v1/chat/completions?x=1").unwrap();
        assert_eq!(metrics_url(&u).as_str(), "http://10.0.0.5:8000/metrics");
    }

    #[tokio::test]
    async fn a_refused_connection_is_one_note_and_no_target() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let urls = vec![reqwest::Url::parse(&format!("http://127.0.0.1:{port}/generate")).unwrap()];
        let plan = probe(&ServerMetricsSource::Auto, &urls, Duration::from_secs(1)).await;
        assert!(plan.targets.is_empty());
        let note = plan.note.unwrap();
        assert!(note.contains("connection refused") && note.contains("--server-metrics"), "{note}");
        let off = probe(&ServerMetricsSource::Off, &urls, Duration::from_secs(1)).await;
        assert!(off.targets.is_empty() && off.note.is_none());
    }
}
