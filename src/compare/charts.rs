//! The charts, drawn with plotters into PNG files. The font is embedded (DejaVu Sans,
//! `assets/fonts/`), so they render on a machine with no fonts installed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{ChartFile, Comparison, PhaseSummary};

use super::inputs::PhaseData;
use super::markdown::value;
use super::table::{format_count, util_name};
use super::CompareError;

pub(super) const FONT: &str = "sans-serif";
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

/// Draws every chart the data allows into `dir`; returns them in the order the report shows them.
pub fn draw_all(c: &Comparison, phases: &[PhaseData], dir: &Path, written: &mut Vec<PathBuf>) -> Result<Vec<ChartFile>, CompareError> {
    if !font_ready() {
        return Err(CompareError::Render { file: "charts".into(), detail: "the embedded font could not be loaded".into() });
    }
    let mut charts = Vec::new();
    let mut draw = |file: &str, title: String, f: &dyn Fn(&Path) -> DrawResult| -> Result<(), CompareError> {
        let path = dir.join(file);
        f(&path).map_err(|e| CompareError::Render { file: path.display().to_string(), detail: e.to_string() })?;
        written.push(path);
        charts.push(ChartFile { title, file: file.into() });
        Ok(())
    };
    if c.phases.iter().any(|p| p.points.len() > 1) {
        draw("throughput.png", "Throughput vs load".into(), &|p| throughput(c, p))?;
        draw("saturation.png", "Latency vs throughput".into(), &|p| saturation(c, p))?;
    }
    draw("latency.png", "Latency percentiles per phase".into(), &|p| latency(c, p))?;
    if phases.iter().any(|p| p.util.is_some()) {
        draw("utilization.png", format!("{} over time", util_name(&c.phases)), &|p| utilization(c, phases, p))?;
    }
    if super::server_chart::has_series(c, phases) {
        draw(super::server_chart::FILE, super::server_chart::TITLE.into(), &|p| super::server_chart::draw(c, phases, p))?;
    }
    if c.phases.iter().any(|p| p.yearly_cost.is_some()) {
        let title = format!("Yearly cost for {} req/min", format_count(c.cost_model.target_rpm));
        draw("cost.png", title.clone(), &|p| cost(c, &title, p))?;
    }
    Ok(charts)
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

fn throughput(c: &Comparison, path: &Path) -> DrawResult {
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

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput vs load", (FONT, 28))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max * 1.08, 0.0..y_max * 1.15)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("Throughput (req/min)")
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()?;
    phase_lines(&mut chart, c, &series)?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// p95 latency against throughput, one curve per phase: where it turns up, the phase saturates.
fn saturation(c: &Comparison, path: &Path) -> DrawResult {
    let series: Vec<Vec<(f64, f64)>> = c
        .phases
        .iter()
        .map(|p| p.points.iter().filter_map(|pt| pt.latency_p95_ms.map(|l| (pt.requests_per_min, l))).collect())
        .collect();
    let x_max = series.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let y_max = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency vs throughput (each point a load level)", (FONT, 28))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max * 1.08, 0.0..y_max * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("Throughput (req/min)")
        .y_desc("Latency p95 (ms)")
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()?;
    if let Some(slo) = c.cost_model.slo_ms.get("e2e") {
        let slo_color = RGBColor(200, 30, 30);
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(0.0, *slo), (x_max * 1.08, *slo)], slo_color.stroke_width(2))))?
            .label(format!("SLO e2e p95 {}", crate::util::human_ms(*slo)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], slo_color.stroke_width(2)));
    }
    phase_lines(&mut chart, c, &series)?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

fn latency(c: &Comparison, path: &Path) -> DrawResult {
    let names = ["p50", "p95", "p99"];
    let pick = |p: &PhaseSummary| [p.latency_p50_ms, p.latency_p95_ms, p.latency_p99_ms];
    let y_max = c.phases.iter().flat_map(pick).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("End-to-end latency percentiles per phase", (FONT, 28))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d((0..names.len() as i32 - 1).into_segmented(), 0.0..y_max * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("Percentile")
        .y_desc("Latency (ms)")
        .y_label_formatter(&|y| tick(*y))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i as usize).copied().unwrap_or("").to_string(),
            SegmentValue::Last => String::new(),
        })
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()?;
    for (i, p) in c.phases.iter().enumerate() {
        let col = color(i);
        let data: Vec<(SegmentValue<i32>, f64)> =
            pick(p).iter().enumerate().map(|(k, v)| (SegmentValue::CenterOf(k as i32), *v)).collect();
        chart
            .draw_series(LineSeries::new(data.clone(), col.stroke_width(3)))?
            .label(format!("{} (p95 {})", p.label, value("latency_p95_ms", Some(p.latency_p95_ms))))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], col.stroke_width(3)));
        chart.draw_series(data.into_iter().map(|xy| Circle::new(xy, 5, col.filled())))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

fn utilization(c: &Comparison, phases: &[PhaseData], path: &Path) -> DrawResult {
    let x_max = phases.iter().filter_map(|p| p.util.as_ref()).flat_map(|u| u.points.iter().map(|p| p.0)).fold(1.0, f64::max);
    let name = util_name(&c.phases);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{name} over time"), (FONT, 28))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max * 1.02, 0.0..105.0)?;
    chart
        .configure_mesh()
        .x_desc("Time since the first sample (s)")
        .y_desc(format!("{name} (%)"))
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()?;
    for (i, p) in phases.iter().enumerate() {
        let Some(u) = &p.util else { continue };
        let col = color(i);
        chart
            .draw_series(LineSeries::new(u.points.iter().copied(), col.stroke_width(2)))?
            .label(format!("{} (mean {:.0}%)", p.input.label, u.mean))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], col.stroke_width(3)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

fn cost(c: &Comparison, title: &str, path: &Path) -> DrawResult {
    let n = c.phases.len() as i32;
    let y_max = c.phases.iter().filter_map(|p| p.yearly_cost).fold(1.0, f64::max);
    let labels: Vec<String> = c.phases.iter().map(|p| p.label.clone()).collect();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 28))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(100)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..y_max * 1.2)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("Phase")
        .y_desc("Cost per year")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|y| super::verdict::money(*y))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()?;
    // Bars at most about 180 px wide, whatever the number of phases.
    let bar_margin = ((860.0 / n.max(1) as f64 - 180.0) / 2.0).max(30.0) as u32;
    for (i, p) in c.phases.iter().enumerate() {
        let Some(y) = p.yearly_cost else { continue };
        chart.draw_series(Histogram::vertical(&chart).style(color(i).filled()).margin(bar_margin).data([(i as i32, y)]))?;
        let gpus = match p.gpus_needed {
            Some(1) => "1 GPU".to_string(),
            Some(g) => format!("{g} GPUs"),
            None => String::new(),
        };
        let text = format!("{gpus}, {}", super::verdict::money(y));
        let style = TextStyle::from((FONT, 18).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(std::iter::once(Text::new(text, (SegmentValue::CenterOf(i as i32), y), style)))?;
    }
    root.present()?;
    Ok(())
}

/// One line with dots per phase, in the phase's colour, with its legend entry.
fn phase_lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>,
    c: &Comparison,
    series: &[Vec<(f64, f64)>],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    for (i, (p, data)) in c.phases.iter().zip(series).enumerate() {
        let col = color(i);
        chart
            .draw_series(LineSeries::new(data.iter().copied(), col.stroke_width(3)))?
            .label(p.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], col.stroke_width(3)));
        chart.draw_series(data.iter().map(|&xy| Circle::new(xy, 5, col.filled())))?;
    }
    Ok(())
}

pub(super) fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)?;
    Ok(())
}
