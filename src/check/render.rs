//! The table people read: one row per check, the fix under the detail.

use std::io::IsTerminal;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

use super::{CheckReport, Status};

/// Width used when stdout is not a terminal (files, pipes, tests): stable output.
const PIPE_WIDTH: u16 = 120;

pub fn render_table(report: &CheckReport) -> String {
    let tty = std::io::stdout().is_terminal();
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    if !tty {
        table.set_width(PIPE_WIDTH);
        table.force_no_tty();
    }
    table.set_header(vec!["group", "check", "status", "detail"]);
    for c in &report.checks {
        let mut status = Cell::new(c.status.label());
        if tty {
            status = status.fg(match c.status {
                Status::Pass => Color::Green,
                Status::Warn => Color::Yellow,
                Status::Fail => Color::Red,
                Status::Skip => Color::DarkGrey,
            });
        }
        let detail = match &c.fix {
            Some(fix) => format!("{}\nfix: {fix}", c.detail),
            None => c.detail.clone(),
        };
        table.add_row(vec![Cell::new(c.group.label()), Cell::new(&c.name), status, Cell::new(detail)]);
    }
    let n = &report.counts;
    let verdict = if report.ready {
        "ready".to_string()
    } else {
        "not ready: fix the FAIL rows above (exit status 3)".to_string()
    };
    let source = match &report.gpu_source {
        Some(s) if s != "NVML" => format!(" GPU facts from {s}."),
        _ => String::new(),
    };
    format!("{table}\n{} PASS, {} WARN, {} FAIL, {} SKIP: {verdict}.{source}", n.pass, n.warn, n.fail, n.skip)
}
