//! Counters, gauges and histograms for `GET /metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new() -> Self {
        Self { counts: vec![0; LATENCY_BUCKETS.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", self.count, self.sum, self.count);
    }
}

/// Everything `/metrics` reports; shared by the HTTP layer and the engine.
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub queue_depth: AtomicU64,
    pub running: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub kv_tokens_used: AtomicU64,
    pub kv_tokens_limit: AtomicU64,
    pub steps: AtomicU64,
    ttft: Mutex<Histogram>,
    itl: Mutex<Histogram>,
    e2e: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            queue_depth: AtomicU64::new(0),
            running: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            kv_tokens_used: AtomicU64::new(0),
            kv_tokens_limit: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            ttft: Mutex::new(Histogram::new()),
            itl: Mutex::new(Histogram::new()),
            e2e: Mutex::new(Histogram::new()),
        }
    }
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        *self.requests.lock().entry((route.to_string(), status)).or_insert(0) += 1;
    }
    pub fn observe_ttft(&self, s: f64) {
        self.ttft.lock().observe(s);
    }
    pub fn observe_itl(&self, s: f64) {
        self.itl.lock().observe(s);
    }
    pub fn observe_e2e(&self, s: f64) {
        self.e2e.lock().observe(s);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP gpubench_serve_requests_total HTTP requests by route and status.\n# TYPE gpubench_serve_requests_total counter");
        for ((route, status), n) in self.requests.lock().iter() {
            let _ = writeln!(out, "gpubench_serve_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(&mut out, "gpubench_serve_queue_depth", "Requests waiting to join the batch.", "gauge", ld(&self.queue_depth));
        gauge(&mut out, "gpubench_serve_running_sequences", "Sequences in the running batch.", "gauge", ld(&self.running));
        gauge(&mut out, "gpubench_serve_prompt_tokens_total", "Prompt tokens processed.", "counter", ld(&self.prompt_tokens));
        gauge(&mut out, "gpubench_serve_generated_tokens_total", "Tokens generated.", "counter", ld(&self.generated_tokens));
        gauge(&mut out, "gpubench_serve_engine_steps_total", "Forward steps run.", "counter", ld(&self.steps));
        gauge(&mut out, "gpubench_serve_kv_cache_tokens_used", "KV-cache tokens reserved by running sequences.", "gauge", ld(&self.kv_tokens_used));
        gauge(&mut out, "gpubench_serve_kv_cache_tokens_limit", "KV-cache token budget.", "gauge", ld(&self.kv_tokens_limit));
        let (used, limit) = (ld(&self.kv_tokens_used), ld(&self.kv_tokens_limit));
        if limit > 0 {
            let ratio = used as f64 / limit as f64;
            let _ = writeln!(
                out,
                "# HELP gpubench_serve_kv_cache_usage_ratio Share of the KV-cache token budget in use (0 to 1).\n# TYPE gpubench_serve_kv_cache_usage_ratio gauge\ngpubench_serve_kv_cache_usage_ratio {ratio}"
            );
        }
        if let Some(rss) = process_rss_bytes() {
            gauge(&mut out, "gpubench_serve_process_resident_memory_bytes", "Resident memory of the server process.", "gauge", rss);
        }
        self.ttft.lock().render(&mut out, "gpubench_serve_time_to_first_token_seconds", "Time from request arrival to its first token.");
        self.itl.lock().render(&mut out, "gpubench_serve_inter_token_latency_seconds", "Time between consecutive tokens of a request.");
        self.e2e.lock().render(&mut out, "gpubench_serve_request_duration_seconds", "Time from request arrival to its last token.");
        out
    }
}

/// Resident set size from /proc (Linux); `None` elsewhere.
fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.count_request("/generate", 200);
        m.observe_ttft(0.2);
        let text = m.render();
        assert!(text.contains("gpubench_serve_requests_total{route=\"/generate\",status=\"200\"} 1"));
        assert!(text.contains("gpubench_serve_time_to_first_token_seconds_bucket{le=\"0.25\"} 1"));
        assert!(text.contains("gpubench_serve_time_to_first_token_seconds_count 1"));
        assert!(!text.contains("kv_cache_usage_ratio"), "no ratio without a budget");
        m.kv_tokens_limit.store(4096, Ordering::Relaxed);
        m.kv_tokens_used.store(1024, Ordering::Relaxed);
        assert!(m.render().contains("\ngpubench_serve_kv_cache_usage_ratio 0.25\n"));
    }
}
