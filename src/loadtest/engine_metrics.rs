//! From a serving engine's `/metrics` to the common fields of the report: which engine
//! it is, requests running and waiting, KV-cache use, preemptions and prefix-cache
//! counters; and from the scrapes of a run to its series and summary.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::device::exposition::{Exposition, MetricType};
use crate::report::{ReplicaMetrics, ServerMetricsPoint, ServerMetricsSummary};
use crate::support::fmt::round;

/// Families of more series than this are left out of `raw`.
const MAX_RAW_SERIES_PER_FAMILY: usize = 4;
/// At most this many raw series per scrape.
const MAX_RAW_SERIES: usize = 48;

/// The engines whose metric names gpubench knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Vllm,
    Tgi,
    Sglang,
    LlamaCpp,
    Gpubench,
    Unknown,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Tgi => "tgi",
            Engine::Sglang => "sglang",
            Engine::LlamaCpp => "llama.cpp",
            Engine::Gpubench => "gpubench",
            Engine::Unknown => "unknown",
        }
    }

    /// The engine whose prefix most families carry.
    pub fn detect(e: &Exposition) -> Engine {
        let prefixes = [
            ("vllm:", Engine::Vllm),
            ("tgi_", Engine::Tgi),
            ("sglang:", Engine::Sglang),
            ("llamacpp:", Engine::LlamaCpp),
            ("gpubench_serve_", Engine::Gpubench),
        ];
        prefixes
            .iter()
            .map(|(p, engine)| (e.families.values().filter(|f| !f.samples.is_empty() && f.name.starts_with(p)).count(), *engine))
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, _)| *n)
            .map_or(Engine::Unknown, |(_, engine)| engine)
    }
}

// Sample names per common field, every engine's together (their prefixes keep them apart);
// the first name present wins.
const RUNNING: &[&str] = &["vllm:num_requests_running", "tgi_batch_current_size", "sglang:num_running_reqs", "llamacpp:requests_processing", "gpubench_serve_running_sequences"];
const WAITING: &[&str] = &["vllm:num_requests_waiting", "tgi_queue_size", "sglang:num_queue_reqs", "llamacpp:requests_deferred", "gpubench_serve_queue_depth"];
const KV_USAGE: &[&str] = &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage", "llamacpp:kv_cache_usage_ratio", "gpubench_serve_kv_cache_usage_ratio"];
const PREEMPTIONS: &[&str] = &["vllm:num_preemptions_total", "vllm:num_preemptions"];
const PREFIX_HITS: &[&str] = &["vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits", "llamacpp:prompt_tokens_cached_total"];
const PREFIX_QUERIES: &[&str] = &["vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries"];
const HIT_RATE: &[&str] = &["sglang:cache_hit_rate", "vllm:gpu_prefix_cache_hit_rate"];
/// llama.cpp counts the prompt tokens it computed apart from those it took from the cache.
const LLAMACPP_COMPUTED: &str = "llamacpp:prompt_tokens_total";
const GPUBENCH_KV: (&str, &str) = ("gpubench_serve_kv_cache_tokens_used", "gpubench_serve_kv_cache_tokens_limit");

/// One scrape, reduced to the common fields. Counters are as the engine reported them
/// (cumulative); a missing, NaN or infinite value is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    pub kv_usage: Option<f64>,
    pub preemptions_total: Option<f64>,
    pub prefix_hits_total: Option<f64>,
    pub prefix_queries_total: Option<f64>,
    pub prefix_hit_rate: Option<f64>,
    pub raw: BTreeMap<String, Option<f64>>,
}

/// Finite values of the first present name: their sum, or their mean.
fn values(e: &Exposition, names: &[&str]) -> Option<Vec<f64>> {
    names.iter().find_map(|n| {
        let v: Vec<f64> = e.samples_named(n).map(|s| s.value).collect();
        (!v.is_empty()).then_some(v)
    })
}

fn sum(e: &Exposition, names: &[&str]) -> Option<f64> {
    let v = values(e, names)?;
    v.iter().all(|x| x.is_finite()).then(|| v.iter().sum())
}

fn mean(e: &Exposition, names: &[&str]) -> Option<f64> {
    sum(e, names).zip(values(e, names)).map(|(s, v)| s / v.len() as f64)
}

impl Reading {
    pub fn of(e: &Exposition) -> Reading {
        let mut r = Reading {
            running: sum(e, RUNNING),
            waiting: sum(e, WAITING),
            kv_usage: mean(e, KV_USAGE),
            preemptions_total: sum(e, PREEMPTIONS),
            prefix_hits_total: sum(e, PREFIX_HITS),
            prefix_queries_total: sum(e, PREFIX_QUERIES),
            prefix_hit_rate: mean(e, HIT_RATE),
            raw: BTreeMap::new(),
        };
        if r.kv_usage.is_none() {
            if let (Some(used), Some(limit)) = (sum(e, &[GPUBENCH_KV.0]), sum(e, &[GPUBENCH_KV.1])) {
                r.kv_usage = (limit > 0.0).then(|| used / limit);
            }
        }
        if r.prefix_queries_total.is_none() && e.family("llamacpp:prompt_tokens_cached_total").is_some() {
            r.prefix_queries_total = r.prefix_hits_total.zip(sum(e, &[LLAMACPP_COMPUTED])).map(|(h, c)| h + c);
        }
        r.raw = raw(e);
        r
    }
}

fn mapped(name: &str) -> bool {
    [RUNNING, WAITING, KV_USAGE, PREEMPTIONS, PREFIX_HITS, PREFIX_QUERIES, HIT_RATE].iter().any(|names| names.contains(&name))
        || name == GPUBENCH_KV.0
        || name == GPUBENCH_KV.1
}

/// Gauges and counters the mapping does not use, by series, bounded.
fn raw(e: &Exposition) -> BTreeMap<String, Option<f64>> {
    let mut out = BTreeMap::new();
    for f in e.families.values() {
        if matches!(f.kind, MetricType::Histogram | MetricType::Summary) || f.samples.len() > MAX_RAW_SERIES_PER_FAMILY {
            continue;
        }
        for s in &f.samples {
            if mapped(&s.name) || s.name.ends_with("_created") || out.len() >= MAX_RAW_SERIES {
                continue;
            }
            let key = if s.labels.is_empty() {
                s.name.clone()
            } else {
                let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))).collect();
                format!("{}{{{}}}", s.name, labels.join(","))
            };
            out.insert(key, s.value.is_finite().then_some(s.value));
        }
    }
    out
}

/// A counter's increase since the first value, counting a drop as a restart from zero.
#[derive(Default)]
struct Increase {
    last: Option<f64>,
    total: f64,
}

impl Increase {
    fn push(&mut self, v: Option<f64>) -> Option<f64> {
        let v = v?;
        match self.last {
            Some(last) if v >= last => self.total += v - last,
            Some(_) => self.total += v,
            None => {}
        }
        self.last = Some(v);
        Some(self.total)
    }
}

/// What one replica's scraper collected over a point.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub url: String,
    pub scrape_url: String,
    pub engine: String,
    pub readings: Vec<(Instant, Reading)>,
    pub errors: u64,
}

/// The replica's series (from the last scrape before `window_start` on) and its summary.
pub fn summarize(c: Collected, window_start: Option<Instant>) -> ReplicaMetrics {
    let origin = window_start.or_else(|| c.readings.first().map(|r| r.0));
    let skip = match window_start {
        Some(w) => c.readings.iter().filter(|(at, _)| *at <= w).count().saturating_sub(1),
        None => 0,
    };
    let (mut pre, mut hits, mut queries) = (Increase::default(), Increase::default(), Increase::default());
    let series: Vec<ServerMetricsPoint> = c.readings[skip..]
        .iter()
        .map(|(at, r)| {
            let t_s = match origin {
                Some(o) if *at >= o => at.duration_since(o).as_secs_f64(),
                Some(o) => -o.duration_since(*at).as_secs_f64(),
                None => 0.0,
            };
            ServerMetricsPoint {
                t_s: (t_s * 1000.0).round() / 1000.0,
                running: r.running,
                waiting: r.waiting,
                kv_usage: r.kv_usage.map(|x| round(x, 4)),
                preemptions: pre.push(r.preemptions_total),
                prefix_hits: hits.push(r.prefix_hits_total),
                prefix_queries: queries.push(r.prefix_queries_total),
                prefix_hit_rate: r.prefix_hit_rate.map(|x| round(x, 4)),
                raw: r.raw.clone(),
            }
        })
        .collect();
    let summary = summary_of(&series, c.readings.len() as u64, c.errors);
    ReplicaMetrics { url: c.url, scrape_url: c.scrape_url, engine: c.engine, series, summary }
}

fn summary_of(series: &[ServerMetricsPoint], samples: u64, errors: u64) -> ServerMetricsSummary {
    // Means and peaks over the window; the scrape before it only anchors the counters.
    let inside: Vec<&ServerMetricsPoint> = series.iter().filter(|p| p.t_s >= 0.0).collect();
    let points: Vec<&ServerMetricsPoint> = if inside.is_empty() { series.iter().collect() } else { inside };
    let stat = |get: fn(&ServerMetricsPoint) -> Option<f64>| {
        let v: Vec<f64> = points.iter().filter_map(|p| get(p)).collect();
        let mean = (!v.is_empty()).then(|| round(v.iter().sum::<f64>() / v.len() as f64, 4));
        (mean, v.into_iter().reduce(f64::max).map(|x| round(x, 4)))
    };
    let (kv_usage_mean, kv_usage_peak) = stat(|p| p.kv_usage);
    let (waiting_mean, waiting_peak) = stat(|p| p.waiting);
    let (running_mean, running_peak) = stat(|p| p.running);
    let (rate_mean, _) = stat(|p| p.prefix_hit_rate);
    let last = |get: fn(&ServerMetricsPoint) -> Option<f64>| series.iter().rev().find_map(get);
    let prefix_cache_hit_rate = match (last(|p| p.prefix_hits), last(|p| p.prefix_queries)) {
        (Some(h), Some(q)) if q > 0.0 => Some(round(h / q, 4)),
        _ => rate_mean,
    };
    ServerMetricsSummary {
        samples,
        scrape_errors: errors,
        kv_usage_mean,
        kv_usage_peak,
        waiting_mean,
        waiting_peak,
        running_mean,
        running_peak,
        preemptions: last(|p| p.preemptions),
        prefix_cache_hit_rate,
    }
}

#[cfg(test)]
#[path = "engine_metrics_tests.rs"]
mod tests;
