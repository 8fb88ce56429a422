//! `comparison.html` in a real browser: `gpubench compare` on the fixture reports, then
//! headless Chromium renders the page. Checked: no console errors, every chart drawn
//! where the page lays it out, the numbers equal those of comparison.json, the page fits
//! 1280 px, and nothing is fetched from the network. Skipped (with a message) where
//! Chromium is not installed: `.ci/setup-chromium.sh` installs it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use gpubench::report::Comparison;

/// A phase name with markup in it: the page must show it as text.
const ODD_LABEL: &str = "k8s<b>&\"q\"";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/compare")
}

/// The browser: `GPUBENCH_CHROMIUM`, else the first of the usual names on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GPUBENCH_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

fn skip() {
    eprintln!("SKIPPED: chromium is not installed; run .ci/setup-chromium.sh (or set GPUBENCH_CHROMIUM) to test comparison.html in a browser");
}

/// Runs headless Chromium on a page with a fresh profile; `extra` picks the output.
fn run_chromium(browser: &Path, page: &Path, height: u32, extra: &[String]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let url = url::Url::from_file_path(page).unwrap();
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--window-size=1280,{height}"))
    .args(extra)
    .arg(url.as_str())
    .timeout(Duration::from_secs(90));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The page's console errors in Chromium's log: uncaught exceptions and console errors.
fn console_errors(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("ERROR:CONSOLE")))
        .map(String::from)
        .collect()
}

/// The value of `name="..."` in a tag of the dumped DOM.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// The opening tags of the dumped DOM (without `<` and `>`) that carry `needle`; quotes
/// are respected, since an attribute value may hold a literal `<` or `>`.
fn tags_with<'a>(dom: &'a str, needle: &str) -> Vec<&'a str> {
    let bytes = dom.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphabetic()) {
            let start = i + 1;
            let mut quoted = false;
            let mut j = start;
            while j < bytes.len() && (quoted || bytes[j] != b'>') {
                if bytes[j] == b'"' {
                    quoted = !quoted;
                }
                j += 1;
            }
            let tag = &dom[start..j];
            if tag.contains(needle) {
                out.push(tag);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn console_error_detection_reads_chromium_logs() {
    let log = "\
[1:1:1202/040417.720224:INFO:CONSOLE:1] \"fine\", source: file:///tmp/a.html (1)
[1:1:1202/040417.723706:INFO:CONSOLE:1] \"Uncaught ReferenceError: undefinedFn is not defined\", source: file:///tmp/a.html (1)
[1:1:1202/040417.723706:ERROR:CONSOLE(3)] \"bad\", source: file:///tmp/a.html (3)
[1:1:1202/040417.800000:WARNING:gpu_init.cc(1)] not a console line, Uncaught elsewhere";
    let errors = console_errors(log);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("undefinedFn"));
    assert!(console_errors("[1:1:1202/0:INFO:CONSOLE:1] \"fine\", source: x (1)").is_empty());
}

#[test]
fn a_broken_script_is_caught_by_the_console_check() {
    let Some(browser) = chromium() else { return skip() };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(&page, "<!DOCTYPE html><html><body><p>x</p><script>notDefinedAnywhere();</script></body></html>").unwrap();
    let out = run_chromium(&browser, &page, 600, &["--dump-dom".into()]);
    let errors = console_errors(&String::from_utf8_lossy(&out.stderr));
    assert!(!errors.is_empty(), "the broken script went unnoticed:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn comparison_html_renders_in_a_browser() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path();
    Command::cargo_bin("gpubench")
        .unwrap()
        .current_dir(fixtures())
        .args(["compare", "--phase", "bare-metal=bare-metal.json,metrics=bare-metal-gpu.csv"])
        .args(["--phase", &format!("{ODD_LABEL}=kubernetes.json")])
        .args(["--phase", "sharing=sharing.json,metrics=sharing-gpu.csv,pods-per-gpu=3"])
        .args(["--target-rpm", "180", "--slo", "e2e=2s", "--out-dir"])
        .arg(out)
        .assert()
        .success()
        .stdout(predicates::str::contains(format!("Open: {}", out.join("comparison.html").display())));
    let page = out.join("comparison.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let comparison = Comparison::load(&out.join("comparison.json")).unwrap();

    // Self-contained: no fetched resources, inline charts, the odd label as text.
    assert!(!html.contains("<link") && !html.contains("<script src") && !html.contains("<img"), "external resources");
    for fetch in ["src=\"http", "href=\"http", "url(", "@import", "href=\"//", "src=\"//"] {
        assert!(!html.contains(fetch), "the page fetches something: {fetch}");
    }
    assert!(!html.contains(ODD_LABEL) && html.contains("k8s&lt;b&gt;&amp;&quot;q&quot;"), "the label is not escaped");
    let svgs = html.matches("<svg").count();
    assert_eq!(svgs, comparison.charts.len(), "one inline SVG per chart");
    assert!(svgs >= 4, "{svgs} charts");
    let titles = html.matches("<title>").count() - 1;
    let points: usize = comparison.phases.iter().map(|p| p.points.len()).sum();
    assert!(titles >= points * 2, "hover titles: {titles} for {points} points");
    for p in &comparison.phases {
        let name = Path::new(&p.report_file).file_name().unwrap().to_string_lossy().into_owned();
        assert!(html.contains(&format!("href=\"{name}\"")) || html.contains(&format!("/{name}\"")), "no link to {name}");
    }
    assert!(html.contains("Definitions") && html.contains("Environment"), "sections");

    let Some(browser) = chromium() else { return skip() };
    let dumped = run_chromium(&browser, &page, 2000, &["--dump-dom".into()]);
    let errors = console_errors(&String::from_utf8_lossy(&dumped.stderr));
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let dom = String::from_utf8(dumped.stdout).unwrap();
    let root = tags_with(&dom, "data-script=").into_iter().next().expect("the page's script ran to its end");
    let width: u32 = attr(root, "data-scroll-width").unwrap().parse().unwrap();
    let height: u32 = attr(root, "data-scroll-height").unwrap().parse().unwrap();
    assert!(width <= 1280, "the page is {width} px wide at a 1280 px window");

    // Every number of the summary table is the number of comparison.json.
    let mut checked = 0;
    for tag in tags_with(&dom, "data-phase=").into_iter().filter(|t| t.starts_with("td")) {
        let (Some(metric), Some(phase)) = (attr(tag, "data-metric"), attr(tag, "data-phase")) else { continue };
        let phase = unescape(phase);
        let row = comparison.rows.iter().find(|r| r.metric == metric).unwrap_or_else(|| panic!("row {metric}"));
        let i = comparison.phases.iter().position(|p| p.label == phase).unwrap_or_else(|| panic!("phase {phase}"));
        let shown = attr(tag, "data-value").map(|v| v.parse::<f64>().unwrap());
        assert_eq!(shown, row.values[i], "{metric} of {phase}");
        checked += 1;
    }
    assert_eq!(checked, comparison.rows.len() * comparison.phases.len(), "every cell of the summary");

    // Each chart, cut from a screenshot of the whole page at its laid-out place, is drawn.
    let rects: Vec<[u32; 4]> = tags_with(&dom, "data-rect=")
        .into_iter()
        .map(|t| {
            let v: Vec<u32> = attr(t, "data-rect").unwrap().split(',').map(|n| n.parse::<f64>().unwrap().max(0.0) as u32).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect();
    assert_eq!(rects.len(), svgs, "every chart is laid out");
    let shot = out.join("shot.png");
    run_chromium(&browser, &page, height.min(16_000), &[format!("--screenshot={}", shot.display())]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixel = |x: u32, y: u32| {
        let at = (y as usize * info.width as usize + x as usize) * channels;
        (buf[at], buf[at + 1], buf[at + 2])
    };
    for (i, [x, y, w, h]) in rects.iter().copied().enumerate() {
        assert!(w > 600 && h > 300, "chart {i} is {w}x{h} px");
        assert!(y + h <= info.height && x + w <= info.width, "chart {i} lies outside the screenshot");
        let (mut inked, mut coloured) = (0u64, 0u64);
        for py in y..y + h {
            for px in x..x + w {
                let (r, g, b) = pixel(px, py);
                if r < 235 || g < 235 || b < 235 {
                    inked += 1;
                }
                if r.max(g).max(b) - r.min(g).min(b) > 80 {
                    coloured += 1;
                }
            }
        }
        let area = (w * h) as u64;
        assert!(inked * 50 > area, "chart {i}: only {inked} of {area} pixels are drawn");
        assert!(coloured > 300, "chart {i}: only {coloured} pixels in the phases' colours");
    }
}
