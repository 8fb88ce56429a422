//! The charts, drawn with plotters into PNG files. The font is embedded (DejaVu Sans,
//! `assets/fonts/`), so they render on a machine with no fonts installed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{ChartFile, Comparison, PhaseSummary};

use super::inputs::PhaseData;
use super::markdown::value;
use super::plot::{add_hover, legend_width, side_legend, Hover, LegendEntry, FONT};
use super::table::util_name;
use crate::support::fmt::format_count;
use super::{device, CompareError};

pub(super) const SIZE: (u32, u32) = (1000, 600);
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub(super) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Registers the embedded font with plotters once per process.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        static BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, BYTES).is_ok()
    })
}

pub(super) type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// The charts the report can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Throughput,
    Saturation,
    Latency,
    Utilization,
    Server,
    Cost,
}

/// One chart: its PNG file (when PNGs were asked for) and its SVG text (when the HTML
/// report was), with a hover title on every point.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub chart: ChartFile,
    pub svg: Option<String>,
}

/// Draws every chart the data allows: PNG files into `dir` when `png`, SVG text when
/// `svg`; returns them in the order the report shows them.
pub fn draw_all(
    c: &Comparison,
    phases: &[PhaseData],
    dir: &Path,
    png: bool,
    svg: bool,
    written: &mut Vec<PathBuf>,
) -> Result<Vec<Drawn>, CompareError> {
    if !font_ready() {
        return Err(CompareError::Render { file: "charts".into(), detail: "the embedded font could not be loaded".into() });
    }
    let mut kinds = Vec::new();
    if c.phases.iter().any(|p| p.points.len() > 1) {
        kinds.push((Kind::Throughput, "throughput.png", "Throughput vs load".to_string()));
        kinds.push((Kind::Saturation, "saturation.png", "Latency vs throughput".into()));
    }
    kinds.push((Kind::Latency, "latency.png", "Latency percentiles per phase".into()));
    if phases.iter().any(|p| p.util.is_some()) {
        kinds.push((Kind::Utilization, "utilization.png", format!("{} over time", util_name(&c.phases))));
    }
    if super::server_chart::has_series(c, phases) {
        kinds.push((Kind::Server, super::server_chart::FILE, super::server_chart::TITLE.into()));
    }
    if c.phases.iter().any(|p| p.yearly_cost.is_some()) {
        kinds.push((Kind::Cost, "cost.png", format!("Yearly cost for {} req/min", format_count(c.cost_model.target_rpm))));
    }
    let mut out = Vec::new();
    for (kind, file, title) in kinds {
        let path = dir.join(file);
        let fail = |e: Box<dyn std::error::Error>| CompareError::Render { file: path.display().to_string(), detail: e.to_string() };
        if png {
            let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
            draw(kind, c, phases, &title, &root, &mut Vec::new()).and_then(|_| Ok(root.present()?)).map_err(fail)?;
            written.push(path.clone());
        }
        let svg = if svg {
            let mut text = String::new();
            let mut hover = Vec::new();
            {
                let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
                draw(kind, c, phases, &title, &root, &mut hover).and_then(|_| Ok(root.present()?)).map_err(fail)?;
            }
            Some(add_hover(text, &hover))
        } else {
            None
        };
        out.push(Drawn { chart: ChartFile { title, file: file.into() }, svg });
    }
    Ok(out)
}

/// Splits the image into the title, the plot and, when there is one, the legend column
/// right of the plot, so that the legend never covers data.
pub(super) fn layout<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    legend: &[LegendEntry],
) -> Result<DrawingArea<DB, Shift>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let body = root.margin(12, 0, 0, 0).titled(title, (FONT, 28))?;
    let width = legend_width(legend);
    if width == 0 {
        return Ok(body);
    }
    let (plot, side) = body.split_horizontally(SIZE.0 - width);
    side_legend(&side, legend, 30)?;
    Ok(plot)
}

/// The frame around a chart's plot: its margin, label areas and font sizes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame {
    pub margin: u32,
    pub x_label_area: u32,
    pub y_label_area: u32,
    pub label_font: u32,
    pub desc_font: u32,
}

/// The frame of a chart that has the plot to itself.
pub(super) const FRAME: Frame = Frame { margin: 20, x_label_area: 55, y_label_area: 80, label_font: 16, desc_font: 18 };

/// One axis: its description, how its labels read, and whether grid lines cross it.
pub(super) struct Axis<'f, V> {
    pub desc: &'f str,
    pub format: &'f dyn Fn(&V) -> String,
    pub grid: bool,
}

impl<'f, V> Axis<'f, V> {
    pub fn new(desc: &'f str, format: &'f dyn Fn(&V) -> String) -> Self {
        Axis { desc, format, grid: true }
    }
}

/// The chart `mesh_chart` builds over the ranges `X` and `Y`.
pub(super) type MeshChart<'a, DB, X, Y> =
    ChartContext<'a, DB, Cartesian2d<<X as AsRangedCoord>::CoordDescType, <Y as AsRangedCoord>::CoordDescType>>;

/// A chart on `area` over `x_range` and `y_range`, inside `frame`, with its mesh drawn.
pub(super) fn mesh_chart<'a, DB, X, Y>(
    area: &'a DrawingArea<DB, Shift>,
    frame: Frame,
    x_range: X,
    y_range: Y,
    x: Axis<'_, <X::CoordDescType as Ranged>::ValueType>,
    y: Axis<'_, <Y::CoordDescType as Ranged>::ValueType>,
) -> Result<MeshChart<'a, DB, X, Y>, Box<dyn std::error::Error>>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: AsRangedCoord,
    Y: AsRangedCoord,
    X::CoordDescType: ValueFormatter<<X::CoordDescType as Ranged>::ValueType>,
    Y::CoordDescType: ValueFormatter<<Y::CoordDescType as Ranged>::ValueType>,
{
    let mut chart = ChartBuilder::on(area)
        .margin(frame.margin)
        .x_label_area_size(frame.x_label_area)
        .y_label_area_size(frame.y_label_area)
        .build_cartesian_2d(x_range, y_range)?;
    let mut mesh = chart.configure_mesh();
    if !x.grid {
        mesh.disable_x_mesh();
    }
    if !y.grid {
        mesh.disable_y_mesh();
    }
    mesh.x_desc(x.desc)
        .y_desc(y.desc)
        .x_label_formatter(x.format)
        .y_label_formatter(y.format)
        .label_style((FONT, frame.label_font))
        .axis_desc_style((FONT, frame.desc_font))
        .draw()?;
    Ok(chart)
}

fn draw<DB: DrawingBackend>(
    kind: Kind,
    c: &Comparison,
    phases: &[PhaseData],
    title: &str,
    root: &DrawingArea<DB, Shift>,
    hover: &mut Vec<Hover>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    match kind {
        Kind::Throughput => throughput(c, root, hover),
        Kind::Saturation => saturation(c, root, hover),
        Kind::Latency => latency(c, root, hover),
        Kind::Utilization => utilization(c, phases, root, hover),
        Kind::Server => super::server_chart::draw(c, phases, root, hover),
        Kind::Cost => cost(c, title, root, hover),
    }
}

/// Axis numbers without a needless `.0`.
pub(super) fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn load_x(pt: &crate::report::SweepPoint, i: usize) -> f64 {
    match (pt.concurrency, pt.rate) {
        (_, Some(r)) => r,
        (Some(c), None) => c as f64,
        (None, None) => (i + 1) as f64,
    }
}

/// The legend of one line per phase, in the phases' colours.
fn phase_entries(c: &Comparison, label: impl Fn(&PhaseSummary) -> String) -> Vec<LegendEntry> {
    c.phases.iter().enumerate().map(|(i, p)| LegendEntry { label: label(p), color: color(i) }).collect()
}

fn throughput<DB: DrawingBackend>(c: &Comparison, root: &DrawingArea<DB, Shift>, hover: &mut Vec<Hover>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let all = c.phases.iter().flat_map(|p| p.points.iter());
    let open = all.clone().any(|pt| pt.rate.is_some());
    let closed = all.clone().any(|pt| pt.rate.is_none() && pt.concurrency.is_some());
    let x_desc = match (open, closed) {
        (true, false) => "Offered rate (req/s)",
        (false, true) => "Concurrency (requests in flight)",
        _ => "Load level (concurrency or req/s)",
    };
    let series: Vec<Vec<(f64, f64)>> = c
        .phases
        .iter()
        .map(|p| p.points.iter().enumerate().map(|(i, pt)| (load_x(pt, i), pt.requests_per_min)).collect())
        .collect();
    let x_max = series.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let y_max = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max);
    let plot = layout(root, "Throughput vs load", &phase_entries(c, |p| p.label.clone()))?;
    let mut chart = mesh_chart(
        &plot,
        FRAME,
        0.0..x_max * 1.08,
        0.0..y_max * 1.15,
        Axis::new(x_desc, &|x| tick(*x)),
        Axis::new("Throughput (req/min)", &|y| tick(*y)),
    )?;
    phase_lines(&mut chart, &series)?;
    for (p, data) in c.phases.iter().zip(&series) {
        for (pt, xy) in p.points.iter().zip(data) {
            let (x, y) = chart.backend_coord(xy);
            let text = format!("{} {}: {} req/min", p.label, pt.label, value("requests_per_min", Some(pt.requests_per_min)));
            hover.push(Hover { x, y, text });
        }
    }
    Ok(())
}

/// p95 latency against throughput, one curve per phase: where it turns up, the phase saturates.
fn saturation<DB: DrawingBackend>(c: &Comparison, root: &DrawingArea<DB, Shift>, hover: &mut Vec<Hover>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let points: Vec<Vec<(&str, f64, f64)>> = c
        .phases
        .iter()
        .map(|p| p.points.iter().filter_map(|pt| pt.latency_p95_ms.map(|l| (pt.label.as_str(), pt.requests_per_min, l))).collect())
        .collect();
    let series: Vec<Vec<(f64, f64)>> = points.iter().map(|s| s.iter().map(|p| (p.1, p.2)).collect()).collect();
    let x_max = series.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let y_max = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max);
    let slo_color = RGBColor(200, 30, 30);
    let slo = c.cost_model.slo_ms.get("e2e").copied();
    let mut entries = phase_entries(c, |p| p.label.clone());
    if let Some(slo) = slo {
        entries.push(LegendEntry { label: format!("SLO e2e p95 {}", crate::support::fmt::human_ms(slo)), color: slo_color });
    }
    let plot = layout(root, "Latency vs throughput (each point a load level)", &entries)?;
    let y_top = y_max.max(slo.unwrap_or(0.0)) * 1.15;
    let mut chart = mesh_chart(
        &plot,
        FRAME,
        0.0..x_max * 1.08,
        0.0..y_top,
        Axis::new("Throughput (req/min)", &|x| tick(*x)),
        Axis::new("Latency p95 (ms)", &|y| tick(*y)),
    )?;
    if let Some(slo) = slo {
        chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, slo), (x_max * 1.08, slo)], slo_color.stroke_width(2))))?;
    }
    phase_lines(&mut chart, &series)?;
    for (p, pts) in c.phases.iter().zip(&points) {
        for (label, rpm, p95) in pts {
            let (x, y) = chart.backend_coord(&(*rpm, *p95));
            let text = format!(
                "{} {label}: {} req/min, p95 {}",
                p.label,
                value("requests_per_min", Some(*rpm)),
                value("latency_p95_ms", Some(*p95))
            );
            hover.push(Hover { x, y, text });
        }
    }
    Ok(())
}

fn latency<DB: DrawingBackend>(c: &Comparison, root: &DrawingArea<DB, Shift>, hover: &mut Vec<Hover>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let names = ["p50", "p95", "p99"];
    let pick = |p: &PhaseSummary| [p.latency_p50_ms, p.latency_p95_ms, p.latency_p99_ms];
    let y_max = c.phases.iter().flat_map(pick).fold(1.0, f64::max);
    let entries = phase_entries(c, |p| format!("{} (p95 {})", p.label, value("latency_p95_ms", Some(p.latency_p95_ms))));
    let plot = layout(root, "End-to-end latency percentiles per phase", &entries)?;
    let x_label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i as usize).copied().unwrap_or("").to_string(),
        SegmentValue::Last => String::new(),
    };
    let mut chart = mesh_chart(
        &plot,
        FRAME,
        (0..names.len() as i32 - 1).into_segmented(),
        0.0..y_max * 1.15,
        Axis { grid: false, ..Axis::new("Percentile", &x_label) },
        Axis::new("Latency (ms)", &|y| tick(*y)),
    )?;
    for (i, p) in c.phases.iter().enumerate() {
        let col = color(i);
        let data: Vec<(SegmentValue<i32>, f64)> =
            pick(p).iter().enumerate().map(|(k, v)| (SegmentValue::CenterOf(k as i32), *v)).collect();
        chart.draw_series(LineSeries::new(data.clone(), col.stroke_width(3)))?;
        chart.draw_series(data.iter().map(|xy| Circle::new(xy.clone(), 5, col.filled())))?;
        for (k, xy) in data.iter().enumerate() {
            let (x, y) = chart.backend_coord(xy);
            hover.push(Hover { x, y, text: format!("{} {}: {}", p.label, names[k], value("latency_p95_ms", Some(xy.1))) });
        }
    }
    Ok(())
}

fn utilization<DB: DrawingBackend>(c: &Comparison, phases: &[PhaseData], root: &DrawingArea<DB, Shift>, hover: &mut Vec<Hover>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x_max = phases.iter().filter_map(|p| p.util.as_ref()).flat_map(|u| u.points.iter().map(|p| p.0)).fold(1.0, f64::max);
    let name = util_name(&c.phases);
    let entries: Vec<LegendEntry> = phases
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let u = p.util.as_ref()?;
            Some(LegendEntry { label: format!("{} (mean {})", p.input.label, value("util_mean_pct", Some(u.mean))), color: color(i) })
        })
        .collect();
    let plot = layout(root, &format!("{name} over time"), &entries)?;
    let mut chart = mesh_chart(
        &plot,
        FRAME,
        0.0..x_max * 1.02,
        0.0..105.0,
        Axis::new("Time since the first sample (s)", &|x| tick(*x)),
        Axis::new(&format!("{name} (%)"), &|y| tick(*y)),
    )?;
    for (i, p) in phases.iter().enumerate() {
        let Some(u) = &p.util else { continue };
        chart.draw_series(LineSeries::new(u.points.iter().copied(), color(i).stroke_width(2)))?;
        for (t, v) in &u.points {
            let (x, y) = chart.backend_coord(&(*t, *v));
            hover.push(Hover { x, y, text: format!("{} at {t:.1} s: {v:.1}%", p.input.label) });
        }
    }
    Ok(())
}

fn cost<DB: DrawingBackend>(c: &Comparison, title: &str, root: &DrawingArea<DB, Shift>, hover: &mut Vec<Hover>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let n = c.phases.len() as i32;
    let y_max = c.phases.iter().filter_map(|p| p.yearly_cost).fold(1.0, f64::max);
    let labels: Vec<String> = c.phases.iter().map(|p| p.label.clone()).collect();
    let dev = device::noun(c);
    let plot = layout(root, title, &[])?;
    let x_label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
        SegmentValue::Last => String::new(),
    };
    // Wider y labels: the amounts are money.
    let mut chart = mesh_chart(
        &plot,
        Frame { y_label_area: 100, ..FRAME },
        (0..n - 1).into_segmented(),
        0.0..y_max * 1.2,
        Axis { grid: false, ..Axis::new("Phase", &x_label) },
        Axis::new("Cost per year", &|y| super::verdict::money(*y)),
    )?;
    // Bars at most about 180 px wide, whatever the number of phases.
    let bar_margin = ((860.0 / n.max(1) as f64 - 180.0) / 2.0).max(30.0) as u32;
    for (i, p) in c.phases.iter().enumerate() {
        let Some(y) = p.yearly_cost else { continue };
        chart.draw_series(Histogram::vertical(&chart).style(color(i).filled()).margin(bar_margin).data([(i as i32, y)]))?;
        let count = p.gpus_needed.map(|g| format!("{}, ", device::count(g, dev))).unwrap_or_default();
        let text = format!("{count}{}", super::verdict::money(y));
        let top = (SegmentValue::CenterOf(i as i32), y);
        let (hx, hy) = chart.backend_coord(&top);
        hover.push(Hover { x: hx, y: hy, text: format!("{}: {text} a year", p.label) });
        let style = TextStyle::from((FONT, 18).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(std::iter::once(Text::new(text, top, style)))?;
    }
    Ok(())
}

/// One line with dots per phase, in the phase's colour.
fn phase_lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>,
    series: &[Vec<(f64, f64)>],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    for (i, data) in series.iter().enumerate() {
        let col = color(i);
        chart.draw_series(LineSeries::new(data.iter().copied(), col.stroke_width(3)))?;
        chart.draw_series(data.iter().map(|&xy| Circle::new(xy, 5, col.filled())))?;
    }
    Ok(())
}

