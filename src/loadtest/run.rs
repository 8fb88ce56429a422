//! Running a plan: every point in order (or an automatic sweep), each with its progress bar
//! or live view, the engine's metrics scraped beside it, and its report built at the end.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::driver::{self, Limits, Live, Point};
use super::plan::{Plan, Points, DEFAULT_THROUGHPUT_CONCURRENCY};
use super::requests_csv::RequestLog;
use super::schedule::{Gaps, Shape};
use super::{live, server_metrics, summary, sweep, LoadTestError, Warmup};
use crate::report::{RunReport, SweepSummary};

fn point_label(base: Option<&str>, point: &Point, sweep: bool) -> String {
    let own = match point {
        Point::Closed { concurrency } => format!("c{concurrency}"),
        Point::Throughput { .. } => "throughput".to_string(),
        Point::Open { shape: Shape::Rate(rate), .. } => format!("r{rate}"),
        Point::Open { shape: Shape::Ramp { start, end, .. }, .. } => format!("ramp{start}-{end}"),
        Point::Open { shape: Shape::Stages(_), .. } => "stages".to_string(),
        Point::Open { shape: Shape::Trace(_), .. } => "trace".to_string(),
    };
    match (base, sweep) {
        (Some(b), false) => b.to_string(),
        (Some(b), true) => format!("{b}-{own}"),
        (None, _) => own,
    }
}

/// What a run shows while it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Nothing.
    Quiet,
    /// A progress bar per point on stderr (when it is a terminal).
    Bar,
    /// The live view: rates, percentiles, errors, the client's lag and the server's queue.
    Live,
}

impl Display {
    /// The live view where stdout and stderr are terminals (unless `no_live`), else a bar;
    /// nothing when `quiet`.
    pub fn choose(quiet: bool, no_live: bool) -> Display {
        match (quiet, no_live) {
            (true, _) => Display::Quiet,
            (false, false) if live::possible() => Display::Live,
            _ => Display::Bar,
        }
    }
}

/// Runs every point of the plan in order. Stops early (with partial reports) when
/// `cancel` fires. `progress` draws a bar per point on stderr when it is a terminal.
pub async fn run(plan: &Plan, cancel: &CancellationToken, progress: bool) -> Result<Vec<RunReport>, LoadTestError> {
    let display = if progress { Display::Bar } else { Display::Quiet };
    Ok(run_all(plan, cancel, display).await?.0)
}

/// [`run`] with the display chosen, and the summary of an automatic sweep.
pub async fn run_all(
    plan: &Plan,
    cancel: &CancellationToken,
    progress: Display,
) -> Result<(Vec<RunReport>, Option<SweepSummary>), LoadTestError> {
    let log = plan.open_log()?;
    let mut reports = Vec::new();
    let summary = match &plan.points {
        Points::Fixed(points) => {
            let sweep = points.len() > 1;
            for point in points {
                if cancel.is_cancelled() {
                    break;
                }
                reports.push(run_point(plan, point, sweep, log.clone(), cancel, progress).await);
            }
            None
        }
        Points::Auto { rates, stop_on_saturation, gaps, max_concurrency } => {
            auto_sweep(plan, (*rates, *stop_on_saturation, *gaps, *max_concurrency), log.clone(), cancel, progress, &mut reports).await
        }
    };
    if let Some(log) = log {
        log.finish()?;
    }
    Ok((reports, summary))
}

async fn auto_sweep(
    plan: &Plan,
    (k, stop_on_saturation, gaps, max_concurrency): (u32, bool, Gaps, Option<u32>),
    log: Option<Arc<RequestLog>>,
    cancel: &CancellationToken,
    progress: Display,
    reports: &mut Vec<RunReport>,
) -> Option<SweepSummary> {
    let sync = run_point(plan, &Point::Closed { concurrency: 1 }, true, log.clone(), cancel, progress).await;
    let sync_rate = sync.throughput.requests_per_s;
    let mut steps: Vec<sweep::Step> = sweep::Step::of(sync_rate, &sync).into_iter().collect();
    let mut labels = vec![sync.label.clone()];
    reports.push(sync);
    if cancel.is_cancelled() {
        return None;
    }
    let concurrency = max_concurrency.unwrap_or(DEFAULT_THROUGHPUT_CONCURRENCY);
    let max = run_point(plan, &Point::Throughput { concurrency }, true, log.clone(), cancel, progress).await;
    let max_rate = max.throughput.requests_per_s;
    reports.push(max);
    let rates = sweep::rates(sync_rate, max_rate, k);
    let mut stopped_early = false;
    for (i, &rate) in rates.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        let point = Point::Open { shape: Shape::Rate(rate), gaps, max_concurrency };
        let r = run_point(plan, &point, true, log.clone(), cancel, progress).await;
        steps.extend(sweep::Step::of(rate, &r));
        labels.push(r.label.clone());
        reports.push(r);
        if stop_on_saturation && sweep::knee(&steps).1 && i + 1 < rates.len() {
            stopped_early = true;
            break;
        }
    }
    Some(sweep::summary(sync_rate, max_rate, rates, &steps, &labels, stopped_early))
}

/// Runs one point and builds its report.
async fn run_point(
    plan: &Plan,
    point: &Point,
    sweep: bool,
    log: Option<Arc<RequestLog>>,
    cancel: &CancellationToken,
    progress: Display,
) -> RunReport {
    let label = point_label(plan.label.as_deref(), point, sweep);
    let live = Arc::new(Live::default());
    let scraper = server_metrics::Scraper::start(&plan.server_metrics);
    let view = match progress {
        Display::Live => live::LiveView::start(
            live::Header {
                label: label.clone(),
                target: plan.target_desc.urls.join(", "),
                open: matches!(point, Point::Open { .. }),
                stream: plan.workload.stream,
            },
            live.clone(),
            scraper.as_ref().map(|s| s.latest()),
        ),
        _ => None,
    };
    let bar = progress_bar(progress == Display::Bar || (progress == Display::Live && view.is_none()), &plan.limits, &label);
    let ticker = bar.clone().map(|bar| {
        let live = live.clone();
        tokio::spawn(async move {
            loop {
                let done = live.done.load(Ordering::Relaxed);
                let failed = live.failed.load(Ordering::Relaxed);
                bar.set_position(done);
                bar.set_message(format!("{failed} failed"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let point_cancel = cancel.child_token();
    let outcome = driver::drive(
        point.clone(),
        plan.target.clone(),
        plan.limits.clone(),
        live.clone(),
        log,
        plan.sessions.clone(),
        point_cancel,
    )
    .await;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(v) = view {
        v.finish().await;
    }
    let workload = point_workload(plan, point);
    let ctx = summary::RunContext {
        label,
        target: plan.target_desc.clone(),
        workload,
        environment: plan.environment.clone(),
        slo: plan.slo.clone(),
        point: point.clone(),
        interrupted: cancel.is_cancelled(),
        cap_reached: live.cap_reached.load(Ordering::Relaxed),
        sessions: plan.sessions.is_some(),
        shard: plan.shard.clone(),
    };
    let mut report = summary::build_report(ctx, &outcome);
    if let Some(scraper) = scraper {
        report.server_metrics = Some(scraper.finish(outcome.recorder.first_start).await);
        report.definitions.insert(
            "server_metrics".into(),
            "the engine's own /metrics, scraped every interval while the point ran: running and waiting requests, KV-cache use (0 to 1), preemptions and prefix-cache tokens since the first scrape; means and peaks over the window".into(),
        );
    }
    if let Some(note) = &plan.server_metrics.note {
        report.warnings.push(note.clone());
    }
    report
}

/// The plan's workload, as this point offered it.
fn point_workload(plan: &Plan, point: &Point) -> crate::report::Workload {
    let mut workload = plan.workload.clone();
    match point {
        Point::Closed { concurrency } => {
            workload.mode = "closed".into();
            workload.concurrency = Some(*concurrency);
        }
        Point::Throughput { concurrency } => {
            workload.mode = "throughput".into();
            workload.max_concurrency = Some(*concurrency);
        }
        Point::Open { shape, gaps, max_concurrency } => {
            workload.mode = "open".into();
            workload.rate = match shape {
                Shape::Rate(r) => Some(*r),
                _ => None,
            };
            workload.arrival = Some(match shape {
                Shape::Trace(_) => "trace".into(),
                _ => gaps.name().into(),
            });
            workload.max_concurrency = *max_concurrency;
        }
    }
    workload
}

fn progress_bar(enabled: bool, limits: &Limits, label: &str) -> Option<ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = match limits.requests {
        Some(n) if limits.duration.is_none() => {
            let warm = match limits.warmup {
                Some(Warmup::Requests(w)) => w,
                _ => 0,
            };
            ProgressBar::with_draw_target(Some(n + warm), ProgressDrawTarget::stderr())
        }
        _ => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let style = ProgressStyle::with_template("{prefix} {spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} requests, {msg}")
        .or_else(|_| ProgressStyle::with_template("{prefix} {pos} requests"))
        .ok()?;
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}
