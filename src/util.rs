//! Small helpers shared by the commands: parsers, the free space of a filesystem, and the
//! stop signals.

use std::time::Duration;

/// Parses a duration such as `500ms`, `10s`, `5m`, `1h30m` or a bare number of seconds (`2.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration: use e.g. 500ms, 10s, 5m".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("'{t}' is not a valid duration: it must be a positive number"));
    }
    humantime::parse_duration(t).map_err(|e| format!("'{t}' is not a valid duration ({e}): use e.g. 500ms, 10s, 5m"))
}

/// Writes `text` to stdout as it is; a closed pipe (`| head`) ends the output quietly instead of panicking.
pub fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// [`print_out`] with a newline.
pub fn print_line(text: &str) {
    print_out(&format!("{text}\n"));
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

/// Bytes free for an unprivileged user on the filesystem holding `dir` (`statvfs`); `None` where unknown.
#[cfg(unix)]
#[allow(clippy::useless_conversion)] // the field types differ between platforms
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid C string and `stat` a plain struct statvfs fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

#[cfg(not(unix))]
pub fn free_bytes(_dir: &std::path::Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_all_spellings() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("ten").unwrap_err().contains("not a valid duration"));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn milliseconds_read_well() {
        assert_eq!(human_ms(0.5), "500 µs");
        assert_eq!(human_ms(12.34), "12.3 ms");
        assert_eq!(human_ms(250.0), "250 ms");
        assert_eq!(human_ms(2410.0), "2.41 s");
    }
}

/// Resolves on Ctrl-C or SIGTERM (a CI timeout, a pod stopping): every command that must
/// clean up or keep its partial results waits on this.
pub async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
