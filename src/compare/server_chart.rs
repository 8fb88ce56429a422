//! The chart of the engines' own metrics: KV-cache use and waiting requests over the
//! operating point of each phase, one line per replica in the phase's colour.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Comparison, ReplicaMetrics, RunReport};

use super::charts::{color, legend, tick, DrawResult, FONT, SIZE};
use super::inputs::PhaseData;

pub const FILE: &str = "server-metrics.png";
pub const TITLE: &str = "KV-cache use and waiting requests over time";

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

pub fn draw(c: &Comparison, phases: &[PhaseData], path: &Path) -> DrawResult {
    let data = replicas(c, phases);
    let points = || data.iter().flat_map(|r| r.2.iter()).flat_map(|r| r.series.iter());
    let x_min = points().map(|p| p.t_s).fold(0.0, f64::min);
    let x_max = points().map(|p| p.t_s).fold(1.0, f64::max);
    let w_max = points().filter_map(|p| p.waiting).fold(1.0, f64::max);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.titled(TITLE, (FONT, 28))?;
    let panels = body.split_evenly((2, 1));
    type Get = fn(&crate::report::ServerMetricsPoint) -> Option<f64>;
    let specs: [(&str, f64, Get); 2] = [
        ("KV-cache use (%)", 105.0, |p| p.kv_usage.map(|v| v * 100.0)),
        ("Requests waiting", w_max * 1.15, |p| p.waiting),
    ];
    for (panel, (y_desc, y_max, get)) in panels.iter().zip(specs) {
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(x_min..x_max * 1.02, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("Time since the start of the measurement (s)")
            .y_desc(y_desc)
            .x_label_formatter(&|x| tick(*x))
            .y_label_formatter(&|y| tick(*y))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()?;
        for (i, label, replicas) in &data {
            let col = color(*i);
            for (k, r) in replicas.iter().enumerate() {
                let line: Vec<(f64, f64)> = r.series.iter().filter_map(|p| get(p).map(|v| (p.t_s, v))).collect();
                if line.is_empty() {
                    continue;
                }
                let s = chart.draw_series(LineSeries::new(line, col.stroke_width(2)))?;
                if k == 0 {
                    let name = if replicas.len() > 1 { format!("{label} ({} replicas)", replicas.len()) } else { label.to_string() };
                    s.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], col.stroke_width(3)));
                }
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present()?;
    Ok(())
}
