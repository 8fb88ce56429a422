//! Parts the charts share: the legend beside the plot (never over data) and the hover
//! targets of the SVG charts (a `<title>` per point, shown by the browser without script).

use std::fmt::Write as _;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::html::escape;

pub const FONT: &str = "sans-serif";

/// One legend entry: its label and the colour of its line.
pub struct LegendEntry {
    pub label: String,
    pub color: RGBColor,
}

/// A point of a chart, in pixels of the whole image, with what hovering it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Hover {
    pub x: i32,
    pub y: i32,
    pub text: String,
}

/// The width of the legend column for these labels: wide enough for the longest one.
pub fn legend_width(entries: &[LegendEntry]) -> u32 {
    if entries.is_empty() {
        return 0;
    }
    let longest = entries.iter().map(|e| e.label.chars().count()).max().unwrap_or(0) as u32;
    // About 9 px a character at 16 px, plus the swatch and the margins.
    (longest * 9 + 60).clamp(150, 360)
}

/// Draws the legend in its own column (the area right of the plot), from the top down.
pub fn side_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[LegendEntry], top: i32) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, e) in entries.iter().enumerate() {
        let y = top + 26 * i as i32;
        area.draw(&PathElement::new(vec![(8, y), (32, y)], e.color.stroke_width(3)))?;
        area.draw(&Text::new(e.label.clone(), (40, y), style.clone()))?;
    }
    Ok(())
}

/// Adds a transparent circle with a `<title>` over each point, just before `</svg>`.
pub fn add_hover(svg: String, hover: &[Hover]) -> String {
    let Some(end) = svg.rfind("</svg>") else { return svg };
    let mut overlay = String::from("<g class=\"hover\">\n");
    for h in hover {
        let _ = writeln!(
            overlay,
            "<circle cx=\"{}\" cy=\"{}\" r=\"7\" fill=\"transparent\"><title>{}</title></circle>",
            h.x,
            h.y,
            escape(&h.text)
        );
    }
    overlay.push_str("</g>\n");
    let mut out = svg;
    out.insert_str(end, &overlay);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hover_titles_are_escaped_and_inside_the_svg() {
        let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg>\n".to_string();
        let out = add_hover(svg, &[Hover { x: 3, y: 4, text: "<b>&\"a\"".into() }]);
        assert!(out.contains("<title>&lt;b&gt;&amp;&quot;a&quot;</title>"), "{out}");
        assert!(out.trim_end().ends_with("</g>\n</svg>"), "{out}");
    }

    #[test]
    fn the_legend_is_as_wide_as_its_longest_label() {
        let e = |l: &str| LegendEntry { label: l.into(), color: BLACK };
        assert_eq!(legend_width(&[]), 0);
        assert_eq!(legend_width(&[e("a")]), 150);
        assert!(legend_width(&[e("a"), e("bare-metal (mean 99.7%)")]) > 200);
    }
}
