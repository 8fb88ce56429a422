//! The live view of a running point, on the terminal (ratatui over crossterm, drawn on
//! stderr's terminal in its alternate screen, redrawn once a second): requests sent and done
//! per second, in flight, errors by kind, latency percentiles with a small histogram, output
//! tokens per second, whether the client keeps to its schedule, and the server's own KV-cache
//! use and queue where `--server-metrics` reads them.
//!
//! It reads the point's recorders once a second (a short lock each), so it costs the load
//! nothing measurable. The terminal is restored when the point ends, on Ctrl-C (which ends
//! the point) and if the view's task is dropped. Raw mode is never entered, so Ctrl-C keeps
//! reaching the process as a signal.

use std::io::{IsTerminal, Stderr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Borders, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};
use tokio_util::sync::CancellationToken;

use super::driver::Live;
use super::recorder::Recorder;
use super::server_metrics::Latest;
use crate::report::LatencySummary;
use super::render::rate;
use crate::support::fmt::{human_ms, thousands};

fn grouped(n: u64) -> String {
    thousands(n as f64)
}

/// Schedule lag p99 above which the client is falling behind (as in the report's `kept_up`).
const LAG_LIMIT_MS: f64 = 10.0;

/// True where a live view may be drawn: both stdout and stderr are terminals.
pub fn possible() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// What the view says about the point besides the numbers.
pub struct Header {
    pub label: String,
    pub target: String,
    /// An open loop (it has a schedule to keep).
    pub open: bool,
    pub stream: bool,
}

/// The view while its point runs; [`LiveView::finish`] restores the terminal.
pub struct LiveView {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LiveView {
    /// Enters the terminal's alternate screen and draws once a second until finished.
    /// `None` when the terminal cannot be set up (the run goes on without the view).
    pub fn start(header: Header, live: Arc<Live>, server: Option<Latest>) -> Option<LiveView> {
        let screen = Screen::enter().ok()?;
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let mut screen = screen;
            let mut rates = Rates::new();
            let started = Instant::now();
            loop {
                let view = View::read(&header, &live, server.as_ref(), &mut rates, started.elapsed());
                let _ = screen.terminal.draw(|f| view.draw(f));
                tokio::select! {
                    _ = stop2.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        Some(LiveView { stop, task })
    }

    /// Stops drawing and gives the terminal back as it was.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The alternate screen, left again (cursor shown) when dropped.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stderr>>,
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        ratatui::crossterm::execute!(std::io::stderr(), ratatui::crossterm::terminal::EnterAlternateScreen, ratatui::crossterm::cursor::Hide)?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stderr()));
        match terminal {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                leave();
                Err(e)
            }
        }
    }
}

fn leave() {
    let _ = ratatui::crossterm::execute!(std::io::stderr(), ratatui::crossterm::cursor::Show, ratatui::crossterm::terminal::LeaveAlternateScreen);
}

impl Drop for Screen {
    fn drop(&mut self) {
        leave();
    }
}

/// Per-second rates from one reading to the next.
struct Rates {
    last: Option<(Instant, u64, u64, u64)>,
    now: (f64, f64, f64),
}

impl Rates {
    fn new() -> Self {
        Rates { last: None, now: (0.0, 0.0, 0.0) }
    }

    fn update(&mut self, sent: u64, done: u64, tokens: u64) -> (f64, f64, f64) {
        let at = Instant::now();
        if let Some((t, s, d, k)) = self.last {
            let dt = at.duration_since(t).as_secs_f64();
            if dt > 0.2 {
                let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                self.now = (per(sent, s), per(done, d), per(tokens, k));
                self.last = Some((at, sent, done, tokens));
            }
        } else {
            self.last = Some((at, sent, done, tokens));
        }
        self.now
    }
}

/// One frame's numbers.
struct View {
    title: String,
    target: String,
    sent: u64,
    done: u64,
    rates: (f64, f64, f64),
    errors: [(&'static str, u64); 4],
    latencies: Vec<(&'static str, Option<LatencySummary>)>,
    histogram: Vec<(String, u64)>,
    client: (String, Color),
    server: Option<String>,
}

impl View {
    fn read(header: &Header, live: &Live, server: Option<&Latest>, rates: &mut Rates, elapsed: Duration) -> View {
        let sent = live.sent.load(Ordering::Relaxed);
        let done = live.done.load(Ordering::Relaxed);
        let rec = live.snapshot();
        let tokens = rec.as_ref().map_or(0, |r| r.output_tokens);
        let e = rec.as_ref().map(|r| r.errors.clone()).unwrap_or_default();
        let summary = |pick: fn(&Recorder) -> &Histogram<u64>| rec.as_ref().and_then(|r| LatencySummary::from_micros(pick(r)));
        let mut latencies = vec![("e2e", summary(|r| &r.e2e))];
        if header.stream {
            latencies.extend([("ttft", summary(|r| &r.ttft)), ("itl", summary(|r| &r.itl)), ("tpot", summary(|r| &r.tpot))]);
        }
        let lag = summary(|r| &r.lag);
        let client = match (header.open, lag) {
            (false, _) => ("closed loop: the load follows the server".to_string(), Color::Gray),
            (true, Some(l)) if l.p99 > LAG_LIMIT_MS => (format!("FALLING BEHIND: schedule lag p99 {}", human_ms(l.p99)), Color::Red),
            (true, Some(l)) => (format!("keeping up: schedule lag p99 {}", human_ms(l.p99)), Color::Green),
            (true, None) => ("waiting for the first request".to_string(), Color::Gray),
        };
        View {
            title: format!(" gpubench load-test · {} · {:.0} s ", header.label, elapsed.as_secs_f64()),
            target: header.target.clone(),
            sent,
            done,
            rates: rates.update(sent, done, tokens),
            errors: [("timeout", e.timeout), ("connect", e.connect), ("http", e.http_status), ("protocol", e.protocol)],
            latencies,
            histogram: rec.as_ref().map(|r| buckets(&r.e2e)).unwrap_or_default(),
            client,
            server: server.and_then(server_line),
        }
    }

    fn draw(&self, f: &mut Frame) {
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(11), Constraint::Length(12), Constraint::Length(1), Constraint::Min(0)])
            .split(f.area());
        let top = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
            .split(rows[0]);
        let (sent_s, done_s, tok_s) = self.rates;
        let errors: u64 = self.errors.iter().map(|e| e.1).sum();
        let kinds: Vec<String> = self.errors.iter().filter(|e| e.1 > 0).map(|e| format!("{} {}", e.0, e.1)).collect();
        let mut lines = vec![
            Line::from(Span::styled(self.target.clone(), Style::default().add_modifier(Modifier::BOLD))),
            Line::from(format!("sent       {:>10}   {:>9}/s", grouped(self.sent), rate(sent_s))),
            Line::from(format!("done       {:>10}   {:>9}/s", grouped(self.done), rate(done_s))),
            Line::from(format!("in flight  {:>10}", grouped(self.sent.saturating_sub(self.done)))),
            Line::from(vec![
                Span::raw(format!("errors     {:>10}   ", grouped(errors))),
                Span::styled(kinds.join(" · "), Style::default().fg(Color::Red)),
            ]),
            Line::from(format!("output     {:>10} tok/s", rate(tok_s))),
            Line::from(Span::styled(self.client.0.clone(), Style::default().fg(self.client.1))),
        ];
        if let Some(s) = &self.server {
            lines.push(Line::from(s.clone()));
        }
        f.render_widget(Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(self.title.clone())), top[0]);
        let header = Row::new(["", "p50", "p90", "p99", "max", "n"]).style(Style::default().add_modifier(Modifier::BOLD));
        let ms = |v: f64| human_ms(v);
        let body: Vec<Row> = self
            .latencies
            .iter()
            .map(|(name, s)| match s {
                Some(s) => Row::new(vec![name.to_string(), ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max), grouped(s.count)]),
                None => Row::new(vec![name.to_string(), "-".into(), "-".into(), "-".into(), "-".into(), "0".into()]),
            })
            .collect();
        let widths = [Constraint::Length(5), Constraint::Length(9), Constraint::Length(9), Constraint::Length(9), Constraint::Length(9), Constraint::Min(6)];
        let table = Table::new(body, widths).header(header).block(Block::default().borders(Borders::ALL).title(" latency percentiles "));
        f.render_widget(table, top[1]);
        let bars: Vec<Bar> = self.histogram.iter().map(|(label, n)| Bar::default().label(Line::from(label.clone())).value(*n)).collect();
        let chart = BarChart::default()
            .block(Block::default().borders(Borders::ALL).title(" e2e latency, requests per bucket "))
            .data(BarGroup::default().bars(&bars))
            .bar_width(7)
            .bar_gap(1);
        f.render_widget(chart, rows[1]);
        f.render_widget(Paragraph::new(" Ctrl-C stops the run and writes the partial report"), rows[2]);
    }
}

/// The server's KV-cache use and queue, summed over replicas (KV: the highest).
fn server_line(latest: &Latest) -> Option<String> {
    let readings = latest.lock().clone();
    let kv = readings.iter().filter_map(|r| r.kv_usage).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let waiting: Option<f64> = readings.iter().filter_map(|r| r.waiting).fold(None, |s, v| Some(s.unwrap_or(0.0) + v));
    let running: Option<f64> = readings.iter().filter_map(|r| r.running).fold(None, |s, v| Some(s.unwrap_or(0.0) + v));
    if kv.is_none() && waiting.is_none() && running.is_none() {
        return None;
    }
    let part = |name: &str, v: Option<String>| v.map(|v| format!("{name} {v}"));
    let parts: Vec<String> = [
        part("KV cache", kv.map(|k| format!("{:.0}%", k * 100.0))),
        part("running", running.map(|r| format!("{r:.0}"))),
        part("waiting", waiting.map(|w| format!("{w:.0}"))),
    ]
    .into_iter()
    .flatten()
    .collect();
    Some(format!("server     {}", parts.join(" · ")))
}

/// Up to eight buckets between the fastest and the slowest request, spaced evenly on a log scale.
fn buckets(h: &Histogram<u64>) -> Vec<(String, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let (lo, hi) = (h.min().max(1) as f64, h.max().max(2) as f64);
    let n = 8;
    let step = (hi / lo).powf(1.0 / n as f64).max(1.0001);
    let mut out = Vec::with_capacity(n);
    let mut from = lo;
    for i in 0..n {
        let to = if i + 1 == n { hi } else { from * step };
        let count = h.count_between(from as u64, to as u64);
        out.push((format!("<{}", human_ms(to / 1000.0)), count));
        from = to + 1.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_span_the_samples_and_count_each_once() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in [1_000u64, 2_000, 4_000, 50_000, 900_000] {
            h.record(v).unwrap();
        }
        let b = buckets(&h);
        assert_eq!(b.len(), 8);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 5);
        assert!(buckets(&Histogram::<u64>::new(3).unwrap()).is_empty());
    }

    #[test]
    fn rates_come_from_the_change_between_readings() {
        let mut r = Rates::new();
        assert_eq!(r.update(0, 0, 0), (0.0, 0.0, 0.0));
        std::thread::sleep(Duration::from_millis(250));
        let (sent, done, tok) = r.update(100, 50, 1000);
        assert!(sent > 200.0 && sent < 400.0 && done > 100.0 && tok > 2000.0, "{sent} {done} {tok}");
    }

    #[test]
    fn the_server_line_sums_queues_and_shows_the_fullest_cache() {
        use super::super::server_metrics::LatestReading;
        let latest: Latest = Arc::new(parking_lot::Mutex::new(vec![
            LatestReading { running: Some(3.0), waiting: Some(2.0), kv_usage: Some(0.4) },
            LatestReading { running: Some(1.0), waiting: Some(5.0), kv_usage: Some(0.7) },
        ]));
        assert_eq!(server_line(&latest).unwrap(), "server     KV cache 70% · running 4 · waiting 7");
        let empty: Latest = Arc::new(parking_lot::Mutex::new(vec![LatestReading::default()]));
        assert!(server_line(&empty).is_none());
    }
}
