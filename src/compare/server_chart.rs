//! The chart of the engines' own metrics: KV-cache use and waiting requests over the
//! operating point of each phase, one line per replica in the phase's colour.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{Comparison, ReplicaMetrics, RunReport};

use super::charts::{color, layout, mesh_chart, tick, Axis, DrawResult, Frame, FRAME};
use super::plot::{Hover, LegendEntry};
use super::inputs::PhaseData;

pub const FILE: &str = "server-metrics.png";
pub const TITLE: &str = "KV-cache use and waiting requests over time";
/// Two panels share the height: a smaller frame and fonts.
const PANEL: Frame = Frame { margin: 12, x_label_area: 45, label_font: 14, desc_font: 16, ..FRAME };

/// The operating point's replicas of each phase, in phase order.
fn replicas<'a>(c: &Comparison, phases: &'a [PhaseData]) -> Vec<(usize, &'a str, &'a [ReplicaMetrics])> {
    phases
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let op = c.phases.get(i).map(|s| s.operating_point.as_str())?;
            let run: &RunReport = p.runs.iter().find(|r| r.label == op)?;
            let m = run.server_metrics.as_ref()?;
            Some((i, p.input.label.as_str(), m.replicas.as_slice()))
        })
        .collect()
}

/// True when some phase has a KV-cache or queue series to draw.
pub fn has_series(c: &Comparison, phases: &[PhaseData]) -> bool {
    replicas(c, phases).iter().flat_map(|r| r.2.iter()).flat_map(|r| r.series.iter()).any(|p| p.kv_usage.is_some() || p.waiting.is_some())
}

/// Two panels, KV-cache use and waiting requests, over the measurement window; the legend
/// in its own column beside them.
pub fn draw<DB: DrawingBackend>(c: &Comparison, phases: &[PhaseData], root: &DrawingArea<DB, Shift>, hover: &mut Vec<Hover>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let data = replicas(c, phases);
    let points = || data.iter().flat_map(|r| r.2.iter()).flat_map(|r| r.series.iter());
    let x_min = points().map(|p| p.t_s).fold(0.0, f64::min);
    let x_max = points().map(|p| p.t_s).fold(1.0, f64::max);
    let w_max = points().filter_map(|p| p.waiting).fold(1.0, f64::max);
    let entries: Vec<LegendEntry> = data
        .iter()
        .map(|(i, label, replicas)| {
            let label = if replicas.len() > 1 { format!("{label} ({} replicas)", replicas.len()) } else { label.to_string() };
            LegendEntry { label, color: color(*i) }
        })
        .collect();
    let plot = layout(root, TITLE, &entries)?;
    let panels = plot.split_evenly((2, 1));
    type Get = fn(&crate::report::ServerMetricsPoint) -> Option<f64>;
    let specs: [(&str, &str, f64, Get); 2] = [
        ("KV-cache use (%)", "%", 105.0, |p| p.kv_usage.map(|v| v * 100.0)),
        ("Requests waiting", " waiting", w_max * 1.15, |p| p.waiting),
    ];
    for (panel, (y_desc, unit, y_max, get)) in panels.iter().zip(specs) {
        let mut chart = mesh_chart(
            panel,
            PANEL,
            x_min..x_max * 1.02,
            0.0..y_max,
            Axis::new("Time since the start of the measurement (s)", &|x| tick(*x)),
            Axis::new(y_desc, &|y| tick(*y)),
        )?;
        for (i, label, replicas) in &data {
            let col = color(*i);
            for r in replicas.iter() {
                let line: Vec<(f64, f64)> = r.series.iter().filter_map(|p| get(p).map(|v| (p.t_s, v))).collect();
                if line.is_empty() {
                    continue;
                }
                for (t, v) in &line {
                    let (x, y) = chart.backend_coord(&(*t, *v));
                    hover.push(Hover { x, y, text: format!("{label} at {t:.1} s: {v:.1}{unit}") });
                }
                chart.draw_series(LineSeries::new(line, col.stroke_width(2)))?;
            }
        }
    }
    Ok(())
}
