//! A parser of the Prometheus text exposition format (what a server answers on
//! `/metrics`): families with their `# TYPE` and `# HELP`, samples with labels (escapes
//! included), optional timestamps, and the values `NaN`, `+Inf` and `-Inf`.
//!
//! It never fails: a line it cannot read is skipped and counted in
//! [`Exposition::skipped`], so one odd line from a server costs one line, not the scrape.

use std::collections::BTreeMap;

/// The type a family declared with `# TYPE` (`Untyped` where it declared none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" | "gaugehistogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" | "unknown" => MetricType::Untyped,
            _ => return None,
        })
    }

    /// Sample name suffixes that belong to a family of this type.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricType::Summary => &["_sum", "_count", "_created"],
            MetricType::Gauge | MetricType::Untyped => &[],
        }
    }
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name (`foo_bucket` in the `foo` histogram family).
    pub name: String,
    /// Labels in the order they were written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// May be NaN or infinite, as the format allows.
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line had one.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A metric family: its samples under one name, type and help text.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: MetricType,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Families by name.
    pub families: BTreeMap<String, Family>,
    /// Lines that could not be read and were skipped.
    pub skipped: usize,
}

impl Exposition {
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.get(name)
    }

    /// Number of samples in every family.
    pub fn sample_count(&self) -> usize {
        self.families.values().map(|f| f.samples.len()).sum()
    }

    /// Every sample of that exact sample name, from whichever family holds it.
    pub fn samples_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families.values().flat_map(|f| f.samples.iter()).filter(move |s| s.name == name)
    }
}

/// Parses exposition text. Never panics; unreadable lines are counted in `skipped`.
pub fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if !comment_line(&mut out, comment) {
                out.skipped += 1;
            }
            continue;
        }
        match sample_line(line) {
            Some(sample) => {
                let family = family_of(&out, &sample.name);
                out.families
                    .entry(family.clone())
                    .or_insert_with(|| Family { name: family, kind: MetricType::Untyped, help: None, samples: Vec::new() })
                    .samples
                    .push(sample);
            }
            None => out.skipped += 1,
        }
    }
    out
}

/// `# TYPE name kind`, `# HELP name text`, or any other comment (ignored). False for a
/// TYPE or HELP line that cannot be read.
fn comment_line(out: &mut Exposition, comment: &str) -> bool {
    let comment = comment.trim_start();
    let (keyword, rest) = comment.split_once(char::is_whitespace).unwrap_or((comment, ""));
    if keyword != "TYPE" && keyword != "HELP" {
        return true;
    }
    let rest = rest.trim_start();
    let (name, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !valid_name(name) {
        return false;
    }
    let family = out
        .families
        .entry(name.to_string())
        .or_insert_with(|| Family { name: name.to_string(), kind: MetricType::Untyped, help: None, samples: Vec::new() });
    if keyword == "TYPE" {
        match MetricType::parse(tail.trim()) {
            Some(kind) => family.kind = kind,
            None => return false,
        }
    } else {
        family.help = Some(unescape_help(tail.trim()));
    }
    true
}

/// The family a sample belongs to: its own name when declared, else the declared family
/// whose type has that suffix (`foo_bucket` in histogram `foo`), else its own name.
fn family_of(out: &Exposition, sample: &str) -> String {
    if out.families.contains_key(sample) {
        return sample.to_string();
    }
    for (name, family) in &out.families {
        if let Some(suffix) = sample.strip_prefix(name.as_str()) {
            if family.kind.suffixes().contains(&suffix) {
                return name.clone();
            }
        }
    }
    sample.to_string()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn sample_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return None;
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = label_set(after)?;
        labels = parsed;
        rest = tail.trim_start();
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    let timestamp_ms = match fields.next() {
        Some(t) => Some(t.parse::<i64>().ok()?),
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some(Sample { name: name.to_string(), labels, value, timestamp_ms })
}

/// Reads `a="x",b="y"}` (after the `{`); returns the labels and the text after the `}`.
fn label_set(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(tail) = rest.strip_prefix('}') {
            return Some((labels, tail));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        if !valid_name(key) || key.contains(':') {
            return None;
        }
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    other => {
                        value.push('\\');
                        value.push(other);
                    }
                },
                c => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = rest[end + 1..].trim_start();
        if let Some(tail) = rest.strip_prefix(',') {
            rest = tail;
        } else if !rest.starts_with('}') {
            return None;
        }
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        t if t.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) => t.parse().ok(),
        _ => None,
    }
}

fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "exposition_tests.rs"]
mod tests;
