//! Progress bars on stderr: one per file in flight and one for the total, with rate and ETA.
//! Hidden when stderr is not a terminal or with `-q`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    total: ProgressBar,
    visible: bool,
}

impl Progress {
    pub fn new(quiet: bool, total_bytes: u64, files: usize) -> Progress {
        let visible = !quiet && std::io::stderr().is_terminal();
        let target = if visible { ProgressDrawTarget::stderr_with_hz(10) } else { ProgressDrawTarget::hidden() };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(total_bytes));
        total.set_style(style("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"));
        total.set_prefix(format!("{files} file{}", if files == 1 { "" } else { "s" }));
        if visible {
            total.enable_steady_tick(Duration::from_millis(200));
        }
        Progress { multi, total, visible }
    }

    /// A bar for one file, shown above the total while it downloads.
    pub fn file(&self, name: &str, size: Option<u64>) -> ProgressBar {
        let bar = self.multi.insert_before(&self.total, ProgressBar::new(size.unwrap_or(0)));
        bar.set_style(style("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}"));
        bar.set_prefix(short(name, 12));
        bar
    }

    /// Bytes arrived (or, negative, were thrown away when a download restarted).
    pub fn add(&self, bytes: i64) {
        if bytes >= 0 {
            self.total.inc(bytes as u64);
        } else {
            self.total.dec(bytes.unsigned_abs());
        }
    }

    /// A file's size became known after the bars were made.
    pub fn grow(&self, bytes: u64) {
        self.total.inc_length(bytes);
    }

    /// Prints a line above the bars (or plainly on stderr when the bars are hidden).
    pub fn note(&self, line: &str) {
        if self.visible {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// The last `width` characters of a name, with a leading ellipsis when cut.
fn short(name: &str, width: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= width {
        name.to_string()
    } else {
        let tail: String = chars[chars.len() - (width - 1)..].iter().collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_names_keep_their_end() {
        assert_eq!(super::short("model.safetensors", 12), "…safetensors");
        assert_eq!(super::short("a.json", 12), "a.json");
    }
}
