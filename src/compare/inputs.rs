//! Reading a phase: its run report file and, optionally, its metric series CSV.

use std::path::Path;

use crate::device::DeviceKind;
use crate::report::{MetricSample, RunReport, RunReportFile};

use super::{CompareError, PhaseInput};

/// A phase as read from disk.
#[derive(Debug, Clone)]
pub struct PhaseData {
    pub input: PhaseInput,
    pub runs: Vec<RunReport>,
    pub util: Option<UtilSeries>,
}

/// Device utilization over time, averaged over the devices of each sample time.
#[derive(Debug, Clone, PartialEq)]
pub struct UtilSeries {
    /// GPUs, or the host's CPUs.
    pub kind: DeviceKind,
    /// (seconds since the first sample, utilization %), in time order.
    pub points: Vec<(f64, f64)>,
    pub mean: f64,
    pub p95: f64,
    /// Mean SM activity (GPM / DCGM profiling), where the series has it.
    pub sm_activity_mean: Option<f64>,
}

pub fn load_phase(input: &PhaseInput) -> Result<PhaseData, CompareError> {
    let files = crate::merge::expand(&input.report)
        .map_err(|e| CompareError::Input { path: input.report.clone(), detail: format!("phase '{}': {e}", input.label) })?;
    let runs = if files.len() > 1 {
        // The shard reports of one sharded run: one phase.
        let merged = crate::merge::merge_files(&files)
            .map_err(|e| CompareError::Input { path: input.report.clone(), detail: format!("phase '{}': {e}", input.label) })?;
        vec![merged]
    } else {
        let file = RunReportFile::load(&files[0])
            .map_err(|error| CompareError::Report { label: input.label.clone(), error })?;
        file.runs().to_vec()
    };
    if runs.is_empty() {
        return Err(CompareError::Input {
            path: input.report.clone(),
            detail: format!("phase '{}' has no data: the runs list is empty. Re-run the load test", input.label),
        });
    }
    let util = input.metrics.as_deref().map(load_util).transpose()?;
    Ok(PhaseData { input: input.clone(), runs, util })
}

/// Reads a metric series CSV (rows of [`MetricSample`]) into a utilization series.
/// Per-process rows are left out: only whole-device samples count.
pub fn load_util(path: &Path) -> Result<UtilSeries, CompareError> {
    let err = |detail: String| CompareError::Input { path: path.into(), detail };
    let mut reader = csv::Reader::from_path(path).map_err(|e| err(format!("cannot read the metric series ({e})")))?;
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    let mut sm_activity: Vec<f64> = Vec::new();
    for (i, row) in reader.deserialize::<MetricSample>().enumerate() {
        let s = row.map_err(|e| err(format!("row {} is not a metric sample: {e}. Write it with gpubench metrics --out", i + 1)))?;
        if s.pid.is_some() || s.pod.as_deref().is_some_and(|p| !p.is_empty()) {
            continue;
        }
        if let Some(a) = s.sm_activity_pct.filter(|a| a.is_finite()) {
            sm_activity.push(a);
        }
        if let Some(u) = s.gpu_util_pct.filter(|u| u.is_finite()) {
            samples.push((s.timestamp, u));
            kinds.insert(DeviceKind::of_source(&s.source));
        }
    }
    if samples.is_empty() {
        return Err(err("no data: no row has a gpu_util_pct value. Sample the phase with gpubench metrics".into()));
    }
    let kind = if kinds.len() == 1 { kinds.iter().next().copied().unwrap_or(DeviceKind::Gpu) } else { DeviceKind::Gpu };
    let mut values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    values.sort_by(f64::total_cmp);
    let p95 = percentile(&values, 95.0);

    // Average the devices sampled at the same instant.
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let t0 = samples[0].0;
    let mut points: Vec<(f64, f64, u32)> = Vec::new();
    for (t, u) in samples {
        match points.last_mut() {
            Some(last) if (t - t0 - last.0).abs() < 1e-6 => {
                last.1 += u;
                last.2 += 1;
            }
            _ => points.push((t - t0, u, 1)),
        }
    }
    let points = points.into_iter().map(|(t, sum, n)| (t, sum / n as f64)).collect();
    let sm_activity_mean = (!sm_activity.is_empty()).then(|| sm_activity.iter().sum::<f64>() / sm_activity.len() as f64);
    Ok(UtilSeries { kind, points, mean, p95, sm_activity_mean })
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
    }

    #[test]
    fn utilization_averages_devices_and_skips_process_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let mut w = csv::Writer::from_path(&path).unwrap();
        let row = |t: f64, dev: &str, u: f64, pid: Option<u32>| MetricSample {
            timestamp: t,
            source: "nvml".into(),
            device_id: dev.into(),
            gpu_util_pct: Some(u),
            pid,
            ..Default::default()
        };
        w.serialize(row(100.0, "0", 20.0, None)).unwrap();
        w.serialize(row(100.0, "1", 40.0, None)).unwrap();
        w.serialize(row(101.0, "0", 60.0, None)).unwrap();
        w.serialize(row(101.0, "1", 80.0, None)).unwrap();
        w.serialize(row(101.0, "0", 99.0, Some(42))).unwrap();
        w.flush().unwrap();
        drop(w);
        let s = load_util(&path).unwrap();
        assert_eq!(s.kind, DeviceKind::Gpu);
        assert_eq!(s.points, vec![(0.0, 30.0), (1.0, 70.0)]);
        assert_eq!(s.mean, 50.0);
        assert_eq!(s.p95, 80.0);
        assert_eq!(s.sm_activity_mean, None);
    }

    #[test]
    fn a_series_without_utilization_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "timestamp,source,device_id,device_name,gpu_util_pct\n1.0,cpu,cpu,host,\n").unwrap();
        let e = load_util(&path).unwrap_err().to_string();
        assert!(e.contains("m.csv") && e.contains("gpu_util_pct"), "{e}");
        std::fs::write(&path, "timestamp,source\nnot-a-number,cpu\n").unwrap();
        let e = load_util(&path).unwrap_err().to_string();
        assert!(e.contains("row 1"), "{e}");
    }
}
