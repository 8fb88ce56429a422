//! Turns a finished point into a [`RunReport`] (its console summary is in [`super::render`]).

use std::collections::BTreeMap;
use std::time::Duration;

use super::driver::{Outcome, Point};
use super::options::Slo;
use crate::report::{
    encode_histogram, ClientCheck, Counts, EnvironmentStamp, Goodput, Histograms, Latencies, LatencySummary, RunReport,
    SeriesPoint, ShardInfo, Target, Throughput, Workload, RUN_SCHEMA_VERSION, PrefixCacheSummary, SessionSummary,
};
use crate::support::fmt::{human_ms, rfc3339, round};
#[cfg(test)]
use super::render::{rate, render, render_sweep};
#[cfg(test)]
use crate::support::fmt::thousands;

/// Schedule lag above which the client is said not to have kept up.
const MAX_LAG_P99_MS: f64 = 10.0;

/// What the report says about the run besides the measurements.
pub struct RunContext {
    pub label: String,
    pub target: Target,
    pub workload: Workload,
    pub environment: EnvironmentStamp,
    pub slo: Option<Slo>,
    pub point: Point,
    pub interrupted: bool,
    /// The open loop reached its default cap on requests in flight.
    pub cap_reached: bool,
    /// The run was made of multi-turn sessions.
    pub sessions: bool,
    /// This process ran one shard of the run.
    pub shard: Option<ShardInfo>,
}

fn definitions(open: bool) -> BTreeMap<String, String> {
    let start = if open {
        "the request's intended send time on the schedule (open loop: waiting for the client or for --max-concurrency counts)"
    } else {
        "the request's actual send time (closed loop: a slow server lowers the offered load, so latency under a fixed load needs --rate)"
    };
    [
        ("e2e", format!("last byte received minus {start}")),
        ("service", "last byte received minus actual send time".to_string()),
        ("ttft", format!("first streamed content chunk received minus {start}; streamed runs only")),
        ("itl", "gaps between streamed token arrivals, one sample per token after the first (tokens arriving in the same read count as 0)".to_string()),
        ("tpot", "(e2e - ttft) / (output_tokens - 1) per request, excluding TTFT (vLLM's definition); streamed runs only".to_string()),
        ("queue", "actual send time minus intended send time (open loop)".to_string()),
        ("output_tokens", "the server's usage.completion_tokens; else the number of streamed content chunks".to_string()),
        ("throughput", "successful requests (and their tokens) in the measurement window over its length; warm-up excluded".to_string()),
        ("goodput", "successful requests that met every --slo threshold, over the window".to_string()),
        ("window", "from the first measured request's start to the last measured request's end".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn build_report(ctx: RunContext, outcome: &Outcome) -> RunReport {
    let r = &outcome.recorder;
    let window = match (r.first_start, r.last_done) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => Duration::ZERO,
    };
    let window_s = window.as_secs_f64();
    let per_s = |n: u64| if window_s > 0.0 { round(n as f64 / window_s, 3) } else { 0.0 };
    let open = matches!(ctx.point, Point::Open { .. });

    let warnings = warnings(&ctx, r);
    let sessions = ctx.sessions.then(|| SessionSummary {
        finished: r.sessions_finished,
        ttft_first_turn_ms: LatencySummary::from_micros(&r.ttft_first_turn),
        ttft_later_turns_ms: LatencySummary::from_micros(&r.ttft_later_turns),
    });
    let prefix_cache = (r.answers_with_cached_count > 0).then(|| PrefixCacheSummary {
        answers: r.answers_with_cached_count,
        cached_tokens: r.cached_tokens,
        prompt_tokens: r.prompt_tokens_with_cached,
        hit_share: if r.prompt_tokens_with_cached > 0 {
            round(r.cached_tokens as f64 / r.prompt_tokens_with_cached as f64, 4)
        } else {
            0.0
        },
    });

    let mut client = client_check(&ctx, outcome, window_s);
    let shard = ctx.shard.clone().map(|mut info| {
        if let Some(rate) = client.target_rate.as_mut() {
            *rate = round(*rate / f64::from(info.count.max(1)), 6);
        }
        client.notes.push(format!(
            "shard {} of {}: this report is its part of the schedule; merge the shards with gpubench report merge",
            info.index, info.count
        ));
        info.window_start_unix_ms =
            r.first_start.map(|at| super::shard::unix_ms(outcome.wall_t0 + at.saturating_duration_since(outcome.t0)));
        info.series_start_unix_ms = r.first_start.map(|first| {
            let whole = Duration::from_secs(first.saturating_duration_since(outcome.t0).as_secs());
            super::shard::unix_ms(outcome.wall_t0 + whole)
        });
        info
    });
    let counts = Counts {
        sent: r.sent(),
        ok: r.ok,
        errors: r.errors.clone(),
        unfinished: r.unfinished,
        warmup: r.warmup,
        http_status: r.http_status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        error_samples: r.samples.clone(),
    };
    let throughput = Throughput {
        requests_per_s: per_s(r.ok),
        requests_per_min: round(per_s(r.ok) * 60.0, 3),
        input_tokens_per_s: (r.answers_with_prompt_count > 0).then(|| per_s(r.input_tokens)),
        output_tokens_per_s: (r.answers_with_output_count > 0).then(|| per_s(r.output_tokens)),
        total_input_tokens: r.input_tokens,
        total_output_tokens: r.output_tokens,
    };
    let goodput = ctx.slo.as_ref().map(|slo| Goodput {
        slo_ms: slo.as_map(),
        requests: r.goodput,
        requests_per_s: per_s(r.goodput),
        fraction: if counts.sent > 0 { round(r.goodput as f64 / counts.sent as f64, 4) } else { 0.0 },
    });
    let latency_ms = Latencies {
        e2e: LatencySummary::from_micros(&r.e2e),
        service: LatencySummary::from_micros(&r.service),
        ttft: LatencySummary::from_micros(&r.ttft),
        itl: LatencySummary::from_micros(&r.itl),
        tpot: LatencySummary::from_micros(&r.tpot),
        queue: if open { LatencySummary::from_micros(&r.queue) } else { None },
    };
    let histograms = histograms(r);
    RunReport {
        schema_version: RUN_SCHEMA_VERSION,
        label: ctx.label,
        started_at: rfc3339(outcome.started_at),
        target: ctx.target,
        workload: ctx.workload,
        environment: ctx.environment,
        definitions: definitions(open),
        counts,
        window_s: round(window_s, 6),
        throughput,
        latency_ms,
        goodput,
        client,
        histograms,
        series: series(outcome),
        server_metrics: None,
        warnings,
        sessions,
        prefix_cache,
        interrupted: ctx.interrupted,
        shard,
        merged_from: None,
    }
}

/// The recorder's histograms in the report's wire encoding (empty strings for the optional ones).
fn histograms(r: &super::recorder::Recorder) -> Histograms {
    Histograms {
        unit: "microseconds".into(),
        e2e: encode_histogram(&r.e2e),
        service: encode_histogram(&r.service),
        ttft: encode_histogram(&r.ttft),
        itl: encode_histogram(&r.itl),
        tpot: encode_histogram(&r.tpot),
        queue: encode_histogram(&r.queue),
        schedule_lag: if r.lag.is_empty() { String::new() } else { encode_histogram(&r.lag) },
        ttft_first_turn: if r.ttft_first_turn.is_empty() { String::new() } else { encode_histogram(&r.ttft_first_turn) },
        ttft_later_turns: if r.ttft_later_turns.is_empty() { String::new() } else { encode_histogram(&r.ttft_later_turns) },
    }
}

/// What a reader of the report should know about how the run went.
fn warnings(ctx: &RunContext, r: &super::recorder::Recorder) -> Vec<String> {
    let mut warnings = Vec::new();
    if r.count_mismatches > 0 {
        warnings.push(format!(
            "{} answers: the server's usage.completion_tokens differs from the number of streamed chunks; the server's count is used",
            r.count_mismatches
        ));
    }
    if r.ok > 0 && r.answers_with_output_count == 0 {
        warnings.push("the server reported no output token counts and the answers were not streamed: output tokens/s is unknown (use --stream or an API that reports usage)".into());
    } else if r.answers_with_output_count < r.ok {
        warnings.push(format!("{} of {} answers had no output token count", r.ok - r.answers_with_output_count, r.ok));
    }
    if r.ok > 0 && r.ttft.is_empty() && ctx.slo.as_ref().is_some_and(|s| s.ttft_ms.is_some() || s.tpot_ms.is_some()) {
        warnings.push("a ttft or tpot SLO needs streamed answers (--stream): no request can meet it".into());
    }
    if r.unfinished > 0 {
        warnings.push(format!("{} requests were still in flight when the run stopped and are counted as unfinished", r.unfinished));
    }
    if ctx.interrupted {
        warnings.push("interrupted: this report is partial".into());
    }
    if ctx.cap_reached {
        warnings.push(format!(
            "the open loop reached its default cap of {} requests in flight: later requests waited (their wait is in the latency); set --max-concurrency to choose the cap",
            super::driver::DEFAULT_OPEN_LOOP_CAP
        ));
    }
    warnings
}

fn client_check(ctx: &RunContext, outcome: &Outcome, window_s: f64) -> ClientCheck {
    let r = &outcome.recorder;
    match &ctx.point {
        Point::Closed { .. } | Point::Throughput { .. } => ClientCheck {
            target_rate: None,
            achieved_send_rate: if window_s > 0.0 { round(r.sent() as f64 / window_s, 3) } else { 0.0 },
            schedule_lag_ms: None,
            kept_up: true,
            notes: vec![if matches!(ctx.point, Point::Throughput { .. }) {
                "throughput run (--rate inf): requests go out as fast as the in-flight cap allows; latency is measured from the actual send time".into()
            } else {
                "closed loop: the offered load follows the server's speed; latency is measured from the actual send time".into()
            }],
        },
        Point::Open { shape, .. } => {
            let rate = match shape {
                super::schedule::Shape::Rate(r) => Some(*r),
                _ => None,
            };
            let n = r.lag.len();
            let span = |a: Option<std::time::Instant>, b: Option<std::time::Instant>| match (a, b) {
                (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
                _ => 0.0,
            };
            let sent_span = span(r.first_dispatch, r.last_dispatch);
            let plan_span = span(r.first_intended, r.last_intended);
            let achieved = if n > 1 && sent_span > 0.0 { (n - 1) as f64 / sent_span } else { 0.0 };
            let scheduled = if n > 1 && plan_span > 0.0 { (n - 1) as f64 / plan_span } else { 0.0 };
            let lag = LatencySummary::from_micros(&r.lag);
            let lag_p99 = lag.as_ref().map_or(0.0, |l| l.p99);
            let mut notes = Vec::new();
            let mut kept_up = true;
            if lag_p99 > MAX_LAG_P99_MS {
                kept_up = false;
                notes.push(format!(
                    "the client fell behind its schedule: lag p99 {} > {} ms; the client, not the server, limited this run",
                    human_ms(lag_p99),
                    MAX_LAG_P99_MS
                ));
            }
            if scheduled > 0.0 && achieved < 0.99 * scheduled {
                kept_up = false;
                notes.push(format!("sent {achieved:.1} req/s while the schedule asked for {scheduled:.1} req/s"));
            }
            if n > 1 {
                let target = rate.map_or_else(|| "a varying rate".to_string(), |r| format!("{r} req/s"));
                notes.push(format!("schedule: {scheduled:.2} req/s over the measured requests (target {target}, seeded)"));
            }
            ClientCheck {
                target_rate: rate,
                achieved_send_rate: round(achieved, 3),
                schedule_lag_ms: lag,
                kept_up,
                notes,
            }
        }
    }
}

fn series(outcome: &Outcome) -> Vec<SeriesPoint> {
    let r = &outcome.recorder;
    let Some(first) = r.first_start else { return Vec::new() };
    let start = first.saturating_duration_since(outcome.t0).as_secs() as usize;
    r.buckets
        .iter()
        .enumerate()
        .skip(start)
        .map(|(i, b)| SeriesPoint {
            t_s: (i - start) as u64,
            sent: b.sent,
            ok: b.ok,
            errors: b.errors,
            output_tokens: b.output_tokens,
            e2e_mean_ms: (b.ok > 0).then(|| round(b.e2e_sum_us as f64 / b.ok as f64 / 1000.0, 3)),
            e2e_max_ms: (b.ok > 0).then(|| round(b.e2e_max_us as f64 / 1000.0, 3)),
        })
        .collect()
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
