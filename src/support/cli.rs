//! What every command's front end needs: pipe-safe stdout, duration parsing, flag parsing
//! for programs that build another command's flags, and the stop signals.

use std::time::Duration;

/// Parses `flags` (after the command word) as the flags of command `A`, the way the binary
/// would: how a program that builds another command's flags checks them.
pub fn parse_flags<A: clap::Args>(command: &'static str, flags: &[String]) -> Result<A, clap::Error> {
    let cmd = A::augment_args(clap::Command::new(command));
    let matches = cmd.try_get_matches_from(std::iter::once(command.to_string()).chain(flags.iter().cloned()))?;
    A::from_arg_matches(&matches)
}

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
}
