//! Numbers, durations and times formatted for people and reports.

/// `x` rounded to `digits` decimals, as the reports write their numbers.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// [`round`] to 3 decimals: milliseconds to the microsecond, shares to a tenth of a percent.
pub fn round3(x: f64) -> f64 {
    round(x, 3)
}

/// RFC 3339 in UTC (`2026-12-02T10:00:00Z`); empty should the time not be representable.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let dt: time::OffsetDateTime = t.into();
    dt.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// RFC 3339 in UTC with milliseconds (`2026-12-02T10:00:00.000Z`).
pub fn rfc3339_ms(t: std::time::SystemTime) -> String {
    let dt: time::OffsetDateTime = t.into();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    dt.format(&fmt).unwrap_or_default()
}

/// Formats milliseconds for people: `812 µs`, `12.3 ms`, `2.41 s`.
pub fn human_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return "-".into();
    }
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// Groups the integer digits of a formatted number: `1234567.8` -> `1,234,567.8`.
pub fn group_thousands(text: &str) -> String {
    let (sign, rest) = text.strip_prefix('-').map(|r| ("-", r)).unwrap_or(("", text));
    let (int, frac) = rest.split_once('.').map(|(i, f)| (i, Some(f))).unwrap_or((rest, None));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

/// A number rounded to a whole one, thousands grouped: `1234567.4` -> `1,234,567`.
pub fn thousands(x: f64) -> String {
    group_thousands(&format!("{x:.0}"))
}

/// `180`, `1,234`, `12.5`: whole numbers without decimals, others with one, thousands grouped.
pub fn format_count(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        thousands(x)
    } else {
        group_thousands(&format!("{x:.1}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_read_well() {
        assert_eq!(human_ms(0.5), "500 µs");
        assert_eq!(human_ms(12.34), "12.3 ms");
        assert_eq!(human_ms(250.0), "250 ms");
        assert_eq!(human_ms(2410.0), "2.41 s");
    }

    #[test]
    fn numbers_group_thousands() {
        assert_eq!(group_thousands("43800"), "43,800");
        assert_eq!(group_thousands("1234567.89"), "1,234,567.89");
        assert_eq!(group_thousands("-1000"), "-1,000");
        assert_eq!(group_thousands("999"), "999");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-1234.4), "-1,234");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(format_count(180.0), "180");
        assert_eq!(format_count(12.25), "12.2");
    }
}
