//! `gpubench metrics` as a child process of another command (bench samples each phase with
//! it): its flags are built here, beside the flags themselves.

use std::path::PathBuf;
use std::time::Duration;

/// A sampler writing a metric series CSV until it is stopped (or `duration` has passed).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsChild {
    /// `nvml`, `cpu`, ...: a `--source` value.
    pub source: String,
    pub interval: Duration,
    pub duration: Duration,
    pub out: PathBuf,
}

impl MetricsChild {
    /// The argument list after the program name: `metrics --source ... --out FILE.csv`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "metrics".into(),
            "--source".into(),
            self.source.clone(),
            "--interval".into(),
            format!("{}ms", self.interval.as_millis()),
            "--duration".into(),
            format!("{}s", self.duration.as_secs()),
            "--out".into(),
            self.out.display().to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::cli::parse_flags;

    fn parses(args: &[String]) -> Result<crate::metrics::MetricsArgs, clap::Error> {
        assert_eq!(args[0], "metrics");
        parse_flags::<crate::metrics::MetricsArgs>("metrics", &args[1..])
    }

    #[test]
    fn the_child_flags_are_metrics_flags() {
        for source in ["cpu", "nvml"] {
            let child = MetricsChild {
                source: source.into(),
                interval: Duration::from_millis(500),
                duration: Duration::from_secs(6 * 3600),
                out: "/tmp/m.csv".into(),
            };
            if let Err(e) = parses(&child.args()) {
                panic!("{e}");
            }
        }
    }
}
