//! The arithmetic of a merge: histograms added, counts summed, series aligned by wall clock.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hdrhistogram::Histogram;
use crate::support::fmt::round;

use crate::report::{
    decode_histogram, encode_histogram, ClientCheck, Counts, Goodput, Histograms, Latencies, LatencySummary, MergedInput,
    PrefixCacheSummary, RunReport, SeriesPoint, SessionSummary, Throughput, RUN_SCHEMA_VERSION,
};

/// Distinct error messages kept in the merged counts.
const MAX_SAMPLES: usize = 10;
/// Clock offsets between shards above which the merged report warns.
const SKEW_WARN_MS: f64 = 50.0;

/// The sum of the encoded histograms (an empty string is an empty histogram).
fn added(encoded: &[&str]) -> Histogram<u64> {
    let mut sum = Histogram::<u64>::new(3).expect("3 significant figures are valid");
    sum.auto(true);
    for text in encoded.iter().filter(|t| !t.is_empty()) {
        if let Ok(h) = decode_histogram(text) {
            let _ = sum.add(&h);
        }
    }
    sum
}

fn encoded_or_empty(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        String::new()
    } else {
        encode_histogram(h)
    }
}

/// Merges shard reports already checked to be the shards of one run, in any order.
pub fn combine(inputs: &[(PathBuf, RunReport)]) -> RunReport {
    let mut inputs: Vec<&(PathBuf, RunReport)> = inputs.iter().collect();
    inputs.sort_by_key(|(_, r)| r.shard.as_ref().map_or(0, |s| s.index));
    let runs: Vec<&RunReport> = inputs.iter().map(|(_, r)| r).collect();
    let first = runs[0];
    let hist = |pick: fn(&Histograms) -> &String| {
        let parts: Vec<&str> = runs.iter().map(|r| pick(&r.histograms).as_str()).collect();
        added(&parts)
    };
    let e2e = hist(|h| &h.e2e);
    let service = hist(|h| &h.service);
    let ttft = hist(|h| &h.ttft);
    let itl = hist(|h| &h.itl);
    let tpot = hist(|h| &h.tpot);
    let queue = hist(|h| &h.queue);
    let lag = hist(|h| &h.schedule_lag);
    let first_turn = hist(|h| &h.ttft_first_turn);
    let later_turns = hist(|h| &h.ttft_later_turns);

    let mut warnings = Vec::new();
    let (window_s, series) = window_and_series(&runs, &mut warnings);
    let per_s = |n: u64| if window_s > 0.0 { round(n as f64 / window_s, 3) } else { 0.0 };
    let counts = counts(&runs);
    let sum = |f: fn(&RunReport) -> u64| runs.iter().map(|r| f(r)).sum::<u64>();
    let (input, output) = (sum(|r| r.throughput.total_input_tokens), sum(|r| r.throughput.total_output_tokens));
    let throughput = Throughput {
        requests_per_s: per_s(counts.ok),
        requests_per_min: round(per_s(counts.ok) * 60.0, 3),
        input_tokens_per_s: runs.iter().any(|r| r.throughput.input_tokens_per_s.is_some()).then(|| per_s(input)),
        output_tokens_per_s: runs.iter().any(|r| r.throughput.output_tokens_per_s.is_some()).then(|| per_s(output)),
        total_input_tokens: input,
        total_output_tokens: output,
    };
    let goodput = first.goodput.as_ref().map(|g| {
        let requests: u64 = runs.iter().filter_map(|r| r.goodput.as_ref()).map(|g| g.requests).sum();
        Goodput {
            slo_ms: g.slo_ms.clone(),
            requests,
            requests_per_s: per_s(requests),
            fraction: if counts.sent > 0 { round(requests as f64 / counts.sent as f64, 4) } else { 0.0 },
        }
    });
    let latency_ms = Latencies {
        e2e: LatencySummary::from_micros(&e2e),
        service: LatencySummary::from_micros(&service),
        ttft: LatencySummary::from_micros(&ttft),
        itl: LatencySummary::from_micros(&itl),
        tpot: LatencySummary::from_micros(&tpot),
        queue: first.latency_ms.queue.as_ref().and(LatencySummary::from_micros(&queue)),
    };
    for (path, r) in &inputs {
        let who = shard_name(r, path);
        warnings.extend(r.warnings.iter().map(|w| format!("{who}: {w}")));
    }
    skew_warning(&runs, &mut warnings);
    let sessions = first.sessions.as_ref().map(|_| SessionSummary {
        finished: runs.iter().filter_map(|r| r.sessions.as_ref()).map(|s| s.finished).sum(),
        ttft_first_turn_ms: LatencySummary::from_micros(&first_turn),
        ttft_later_turns_ms: LatencySummary::from_micros(&later_turns),
    });
    let prefix_cache = prefix_cache(&runs);
    let merged_from = inputs
        .iter()
        .map(|(path, r)| MergedInput {
            file: path.display().to_string(),
            shard: r.shard.clone(),
            started_at: r.started_at.clone(),
            sent: r.counts.sent,
            ok: r.counts.ok,
            kept_up: r.client.kept_up,
            environment: r.environment.clone(),
        })
        .collect();
    RunReport {
        schema_version: RUN_SCHEMA_VERSION.max(first.schema_version),
        label: first.label.clone(),
        started_at: runs.iter().map(|r| r.started_at.clone()).min().unwrap_or_default(),
        target: first.target.clone(),
        workload: first.workload.clone(),
        environment: first.environment.clone(),
        definitions: first.definitions.clone(),
        client: client(&inputs, window_s, &lag),
        counts,
        window_s: round(window_s, 6),
        throughput,
        latency_ms,
        goodput,
        histograms: Histograms {
            unit: "microseconds".into(),
            e2e: encode_histogram(&e2e),
            service: encode_histogram(&service),
            ttft: encode_histogram(&ttft),
            itl: encode_histogram(&itl),
            tpot: encode_histogram(&tpot),
            queue: encode_histogram(&queue),
            schedule_lag: encoded_or_empty(&lag),
            ttft_first_turn: encoded_or_empty(&first_turn),
            ttft_later_turns: encoded_or_empty(&later_turns),
        },
        series,
        warnings,
        sessions,
        prefix_cache,
        interrupted: runs.iter().any(|r| r.interrupted),
        shard: None,
        merged_from: Some(merged_from),
        server_metrics: server_metrics(&runs),
    }
}

/// The servers' own metrics as the first shard that scraped them saw them (every shard
/// loads the same servers; by default only shard 0 scrapes), on the merged window's clock.
fn server_metrics(runs: &[&RunReport]) -> Option<crate::report::ServerMetrics> {
    let start = |r: &RunReport| r.shard.as_ref().and_then(|s| s.window_start_unix_ms);
    let begin = runs.iter().filter_map(|r| start(r)).fold(f64::INFINITY, f64::min);
    let r = runs.iter().find(|r| r.server_metrics.is_some())?;
    let mut metrics = r.server_metrics.clone()?;
    let shift = start(r).map_or(0.0, |s| (s - begin) / 1000.0);
    if shift.is_finite() && shift != 0.0 {
        for replica in &mut metrics.replicas {
            for p in &mut replica.series {
                p.t_s = round(p.t_s + shift, 3);
            }
        }
    }
    Some(metrics)
}

/// The shards' prefix-cache counts summed, and the hit share of the sums.
fn prefix_cache(runs: &[&RunReport]) -> Option<PrefixCacheSummary> {
    let caches: Vec<&PrefixCacheSummary> = runs.iter().filter_map(|r| r.prefix_cache.as_ref()).collect();
    (!caches.is_empty()).then(|| {
        let (answers, cached, prompt) = caches.iter().fold((0, 0, 0), |(a, c, p), x| (a + x.answers, c + x.cached_tokens, p + x.prompt_tokens));
        PrefixCacheSummary {
            answers,
            cached_tokens: cached,
            prompt_tokens: prompt,
            hit_share: if prompt > 0 { round(cached as f64 / prompt as f64, 4) } else { 0.0 },
        }
    })
}

fn shard_name(r: &RunReport, path: &std::path::Path) -> String {
    match &r.shard {
        Some(s) => format!("shard {}/{}", s.index, s.count),
        None => path.display().to_string(),
    }
}

fn counts(runs: &[&RunReport]) -> Counts {
    let mut c = Counts::default();
    let mut status: BTreeMap<String, u64> = BTreeMap::new();
    for r in runs {
        let x = &r.counts;
        c.sent += x.sent;
        c.ok += x.ok;
        c.errors.timeout += x.errors.timeout;
        c.errors.connect += x.errors.connect;
        c.errors.http_status += x.errors.http_status;
        c.errors.protocol += x.errors.protocol;
        c.unfinished += x.unfinished;
        c.warmup += x.warmup;
        for (k, v) in &x.http_status {
            *status.entry(k.clone()).or_default() += v;
        }
        for s in &x.error_samples {
            if c.error_samples.len() < MAX_SAMPLES && !c.error_samples.contains(s) {
                c.error_samples.push(s.clone());
            }
        }
    }
    c.http_status = status;
    c
}

/// The merged window (first shard's start to last shard's end, by wall clock) and the
/// per-second series summed on that clock. Without wall-clock times (older reports) the
/// series are summed second by second from each shard's own start.
fn window_and_series(runs: &[&RunReport], warnings: &mut Vec<String>) -> (f64, Vec<SeriesPoint>) {
    let starts: Option<Vec<f64>> = runs.iter().map(|r| r.shard.as_ref().and_then(|s| s.window_start_unix_ms)).collect();
    let window_s = match &starts {
        Some(starts) if !starts.is_empty() => {
            let begin = starts.iter().copied().fold(f64::INFINITY, f64::min);
            let end = runs.iter().zip(starts).map(|(r, s)| s + r.window_s * 1000.0).fold(f64::NEG_INFINITY, f64::max);
            ((end - begin) / 1000.0).max(0.0)
        }
        _ => {
            warnings.push("the shards carry no wall-clock window: the merged window is the longest shard's".into());
            runs.iter().map(|r| r.window_s).fold(0.0, f64::max)
        }
    };
    let origins: Vec<f64> = runs.iter().map(|r| r.shard.as_ref().and_then(|s| s.series_start_unix_ms).unwrap_or(0.0)).collect();
    let origin = origins.iter().copied().fold(f64::INFINITY, f64::min);
    let mut merged: Vec<(SeriesPoint, u64)> = Vec::new();
    for (r, o) in runs.iter().zip(&origins) {
        let shift = ((o - origin) / 1000.0).round().max(0.0) as u64;
        for p in &r.series {
            let t = (p.t_s + shift) as usize;
            if merged.len() <= t {
                merged.resize(t + 1, (SeriesPoint::default(), 0));
            }
            let (m, e2e_sum_us) = &mut merged[t];
            m.t_s = t as u64;
            m.sent += p.sent;
            m.ok += p.ok;
            m.errors += p.errors;
            m.output_tokens += p.output_tokens;
            *e2e_sum_us += (p.e2e_mean_ms.unwrap_or(0.0) * 1000.0 * p.ok as f64).round() as u64;
            m.e2e_max_ms = match (m.e2e_max_ms, p.e2e_max_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    let series = merged
        .into_iter()
        .enumerate()
        .map(|(t, (mut p, sum_us))| {
            p.t_s = t as u64;
            p.e2e_mean_ms = (p.ok > 0).then(|| round(sum_us as f64 / p.ok as f64 / 1000.0, 3));
            p
        })
        .collect();
    (window_s, series)
}

/// One client check for the whole run: rates summed, lag from the added histograms, and
/// kept up only when every shard was.
fn client(inputs: &[&(PathBuf, RunReport)], window_s: f64, lag: &Histogram<u64>) -> ClientCheck {
    let runs: Vec<&RunReport> = inputs.iter().map(|(_, r)| r).collect();
    let target_rate = runs.iter().map(|r| r.client.target_rate).try_fold(0.0, |acc, r| r.map(|r| acc + r)).map(|r| round(r, 6));
    let sent: u64 = runs.iter().map(|r| r.counts.sent).sum();
    let open = runs.iter().any(|r| r.client.schedule_lag_ms.is_some());
    let achieved = if open {
        runs.iter().map(|r| r.client.achieved_send_rate).sum()
    } else if window_s > 0.0 {
        sent as f64 / window_s
    } else {
        0.0
    };
    let schedule_lag_ms = if !lag.is_empty() {
        LatencySummary::from_micros(lag)
    } else {
        // Older shard reports carry no lag histogram: the worst shard's summary stands for all.
        runs.iter().filter_map(|r| r.client.schedule_lag_ms.clone()).max_by(|a, b| a.p99.total_cmp(&b.p99))
    };
    let mut notes = vec![format!(
        "merged from {} shards: histograms added (percentiles exact to histogram precision), counts summed, series aligned by wall clock",
        runs.len()
    )];
    let offsets: Vec<String> = runs
        .iter()
        .filter_map(|r| r.shard.as_ref())
        .filter_map(|s| s.clock_offset_ms.map(|o| format!("{}: {o:+.1} ± {:.1} ms", s.index, s.clock_offset_error_ms.unwrap_or(0.0))))
        .collect();
    if !offsets.is_empty() {
        notes.push(format!("target clock minus shard clock, by shard: {}", offsets.join(", ")));
    }
    for (path, r) in inputs {
        if !r.client.kept_up {
            let who = shard_name(r, path);
            notes.push(format!("{who} did not keep up with its schedule: {}", r.client.notes.first().cloned().unwrap_or_default()));
        }
    }
    ClientCheck {
        target_rate,
        achieved_send_rate: round(achieved, 3),
        schedule_lag_ms,
        kept_up: runs.iter().all(|r| r.client.kept_up),
        notes,
    }
}

/// Warns when the shards' clocks, as each measured against the target, disagree by more
/// than the series and the common start can hide.
fn skew_warning(runs: &[&RunReport], warnings: &mut Vec<String>) {
    let offsets: Vec<(f64, f64)> =
        runs.iter().filter_map(|r| r.shard.as_ref()).filter_map(|s| Some((s.clock_offset_ms?, s.clock_offset_error_ms.unwrap_or(0.0)))).collect();
    if offsets.len() < 2 {
        return;
    }
    let lo = offsets.iter().map(|o| o.0).fold(f64::INFINITY, f64::min);
    let hi = offsets.iter().map(|o| o.0).fold(f64::NEG_INFINITY, f64::max);
    let err = offsets.iter().map(|o| o.1).fold(0.0, f64::max);
    if hi - lo > SKEW_WARN_MS + 2.0 * err {
        warnings.push(format!(
            "the shards' clocks differ by about {:.0} ms (measured against the target's Date header): they did not start together, and the merged series is off by up to that; synchronise the nodes' clocks (NTP)",
            hi - lo
        ));
    }
}

#[cfg(test)]
#[path = "combine_tests.rs"]
pub(super) mod tests;
