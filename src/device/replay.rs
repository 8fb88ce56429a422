//! The replay sampler: plays a metric series recorded by `metrics --out` (CSV), one
//! timestamp per tick, for tests and demos. Its rows say `replay` as their source.

use std::path::{Path, PathBuf};

use super::{SampleError, Sampler};
use crate::report::MetricSample;

pub struct ReplaySampler {
    path: PathBuf,
    recorded_source: String,
    ticks: std::vec::IntoIter<Vec<MetricSample>>,
}

impl ReplaySampler {
    /// Reads the whole recording; `device` keeps only that device's rows.
    pub fn load(path: &Path, device: Option<&str>) -> Result<Self, String> {
        let mut reader = csv::Reader::from_path(path).map_err(|e| format!("cannot read recording {}: {e}", path.display()))?;
        let mut ticks: Vec<Vec<MetricSample>> = Vec::new();
        let mut recorded_source = String::new();
        for (i, row) in reader.deserialize::<MetricSample>().enumerate() {
            let mut row = row.map_err(|e| {
                format!("{} is not a gpubench metric series (row {}: {e}); record one with gpubench metrics --out FILE.csv", path.display(), i + 1)
            })?;
            if device.is_some_and(|d| d != row.device_id) {
                continue;
            }
            if recorded_source.is_empty() {
                recorded_source = row.source.clone();
            }
            row.source = "replay".into();
            match ticks.last_mut() {
                Some(last) if last.first().is_some_and(|r| r.timestamp == row.timestamp) => last.push(row),
                _ => ticks.push(vec![row]),
            }
        }
        if ticks.is_empty() {
            let which = device.map(|d| format!(" for device {d}")).unwrap_or_default();
            return Err(format!("{} holds no samples{which}", path.display()));
        }
        Ok(ReplaySampler { path: path.to_path_buf(), recorded_source, ticks: ticks.into_iter() })
    }
}

impl Sampler for ReplaySampler {
    fn source(&self) -> &'static str {
        "replay"
    }

    fn note(&self) -> String {
        format!(
            "replay of {} (recorded from the {} source), not a live measurement",
            self.path.display(),
            self.recorded_source
        )
    }

    fn sample(&mut self, _now: f64) -> Result<Vec<MetricSample>, SampleError> {
        self.ticks.next().ok_or(SampleError::Exhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/metrics/h100-nvml.csv")
    }

    #[test]
    fn a_recording_plays_one_timestamp_per_tick_labelled_replay() {
        let mut r = ReplaySampler::load(&fixture(), None).unwrap();
        let first = r.sample(0.0).unwrap();
        assert!(first.iter().all(|s| s.source == "replay"));
        assert!(first.iter().all(|s| s.timestamp == first[0].timestamp));
        assert!(r.note().contains("recorded from the nvml source"));
        let mut n = 1;
        while r.sample(0.0).is_ok() {
            n += 1;
        }
        assert_eq!(n, 12);
    }

    #[test]
    fn a_foreign_file_is_refused_with_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, "timestamp,source\nnot-a-number,nvml\n").unwrap();
        let err = ReplaySampler::load(&p, None).err().unwrap();
        assert!(err.contains("not a gpubench metric series (row 1"), "{err}");
        let missing = ReplaySampler::load(&dir.path().join("none.csv"), None).err().unwrap();
        assert!(missing.contains("cannot read recording"), "{missing}");
    }

    #[test]
    fn a_device_filter_that_matches_nothing_says_so() {
        let err = ReplaySampler::load(&fixture(), Some("7")).err().unwrap();
        assert!(err.contains("no samples for device 7"), "{err}");
    }
}
