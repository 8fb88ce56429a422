//! The per-device summary of a series: mean, p50, p95 utilization, idle fraction,
//! peak memory, energy. Memory stays constant in the number of samples (utilization
//! is kept in a histogram of 0.1% bins).

use std::collections::BTreeMap;

use crate::report::{MetricSample, MetricSummary, SCHEMA_VERSION};
use crate::support::fmt::round3;

/// Utilization under this is idle.
pub const IDLE_BELOW_PCT: f64 = 5.0;
const BINS: usize = 1001;

#[derive(Debug, Clone)]
struct DeviceAcc {
    source: String,
    device_name: String,
    samples: u64,
    first_ts: f64,
    last_ts: f64,
    util_sum: f64,
    util_n: u64,
    util_bins: Vec<u32>,
    idle_n: u64,
    mem_peak: Option<f64>,
    energy_counter: Option<f64>,
    energy_from_power: f64,
    last_power: Option<(f64, f64)>,
    sm_sum: f64,
    sm_n: u64,
}

impl DeviceAcc {
    fn new(row: &MetricSample) -> Self {
        DeviceAcc {
            source: row.source.clone(),
            device_name: row.device_name.clone(),
            samples: 0,
            first_ts: row.timestamp,
            last_ts: row.timestamp,
            util_sum: 0.0,
            util_n: 0,
            util_bins: vec![0; BINS],
            idle_n: 0,
            mem_peak: None,
            energy_counter: None,
            energy_from_power: 0.0,
            last_power: None,
            sm_sum: 0.0,
            sm_n: 0,
        }
    }

    fn percentile(&self, p: f64) -> Option<f64> {
        if self.util_n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.util_n as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.util_bins.iter().enumerate() {
            seen += *c as u64;
            if seen >= rank {
                return Some(i as f64 / 10.0);
            }
        }
        Some(100.0)
    }
}

/// Summaries of every device seen in a series.
#[derive(Debug, Default, Clone)]
pub struct SeriesSummary {
    devices: BTreeMap<String, DeviceAcc>,
}

/// Rows about a whole device (not about one process or pod).
pub fn is_device_row(r: &MetricSample) -> bool {
    r.pid.is_none() && r.process_mem_mib.is_none() && r.process_sm_util_pct.is_none()
}

impl SeriesSummary {
    pub fn add(&mut self, row: &MetricSample) {
        if !is_device_row(row) {
            return;
        }
        let acc = self.devices.entry(row.device_id.clone()).or_insert_with(|| DeviceAcc::new(row));
        acc.samples += 1;
        acc.first_ts = acc.first_ts.min(row.timestamp);
        acc.last_ts = acc.last_ts.max(row.timestamp);
        if let Some(u) = row.gpu_util_pct.filter(|u| u.is_finite()) {
            let u = u.clamp(0.0, 100.0);
            acc.util_sum += u;
            acc.util_n += 1;
            acc.util_bins[((u * 10.0).round() as usize).min(BINS - 1)] += 1;
            if u < IDLE_BELOW_PCT {
                acc.idle_n += 1;
            }
        }
        if let Some(m) = row.mem_used_mib {
            acc.mem_peak = Some(acc.mem_peak.map_or(m, |p| p.max(m)));
        }
        if let Some(e) = row.energy_j {
            acc.energy_counter = Some(e);
        }
        if let Some(w) = row.power_w {
            if let Some((t0, w0)) = acc.last_power {
                let dt = row.timestamp - t0;
                if dt > 0.0 {
                    acc.energy_from_power += (w + w0) / 2.0 * dt;
                }
            }
            acc.last_power = Some((row.timestamp, w));
        }
        if let Some(s) = row.sm_activity_pct {
            acc.sm_sum += s;
            acc.sm_n += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// One summary per device. `interval_s` is the sampling interval; where it is unknown
    /// (a replay), pass `None` and it is read from the timestamps.
    pub fn finish(&self, interval_s: Option<f64>, note: &str) -> Vec<MetricSummary> {
        self.devices
            .iter()
            .map(|(id, a)| {
                let span = a.last_ts - a.first_ts;
                let interval = interval_s.unwrap_or(if a.samples > 1 { span / (a.samples - 1) as f64 } else { 0.0 });
                let energy = a.energy_counter.or((a.last_power.is_some() && a.energy_from_power > 0.0).then_some(a.energy_from_power));
                MetricSummary {
                    schema_version: SCHEMA_VERSION,
                    source: a.source.clone(),
                    device_id: id.clone(),
                    device_name: a.device_name.clone(),
                    samples: a.samples,
                    duration_s: round3(if a.samples > 0 { span + interval } else { 0.0 }),
                    interval_s: round3(interval),
                    util_mean_pct: (a.util_n > 0).then(|| round3(a.util_sum / a.util_n as f64)),
                    util_p50_pct: a.percentile(50.0),
                    util_p95_binned_pct: a.percentile(95.0),
                    idle_fraction: (a.util_n > 0).then(|| round3(a.idle_n as f64 / a.util_n as f64)),
                    mem_peak_mib: a.mem_peak.map(round3),
                    energy_j: energy.map(round3),
                    sm_activity_mean_pct: (a.sm_n > 0).then(|| round3(a.sm_sum / a.sm_n as f64)),
                    note: note.to_string(),
                }
            })
            .collect()
    }
}

/// One line per device, for people.
pub fn human_line(s: &MetricSummary) -> String {
    let pct = |v: Option<f64>| v.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{} {} ({}): {} samples over {:.1} s; util mean {} p50 {} p95 {}, idle {}",
        s.source,
        s.device_id,
        if s.device_name.is_empty() { "?" } else { &s.device_name },
        s.samples,
        s.duration_s,
        pct(s.util_mean_pct),
        pct(s.util_p50_pct),
        pct(s.util_p95_binned_pct),
        s.idle_fraction.map(|f| format!("{:.0}% of samples", f * 100.0)).unwrap_or_else(|| "-".into()),
    );
    if let Some(m) = s.mem_peak_mib {
        line.push_str(&format!(", peak memory {:.2} GiB", m / 1024.0));
    }
    if let Some(e) = s.energy_j {
        line.push_str(&format!(", energy {:.1} kJ", e / 1000.0));
    }
    if let Some(sm) = s.sm_activity_mean_pct {
        line.push_str(&format!(", SM activity mean {sm:.1}%"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: f64, util: f64) -> MetricSample {
        MetricSample {
            timestamp: ts,
            source: "nvml".into(),
            device_id: "0".into(),
            device_name: "GPU".into(),
            gpu_util_pct: Some(util),
            mem_used_mib: Some(util * 10.0),
            power_w: Some(100.0),
            ..Default::default()
        }
    }

    #[test]
    fn statistics_of_a_known_series() {
        let mut s = SeriesSummary::default();
        // 20 samples: 0, 5, 10, ... 95
        for i in 0..20 {
            s.add(&row(i as f64, i as f64 * 5.0));
        }
        // A process row does not count.
        s.add(&MetricSample { pid: Some(1), process_mem_mib: Some(1e6), ..row(3.0, 100.0) });
        let out = s.finish(Some(1.0), "n");
        assert_eq!(out.len(), 1);
        let m = &out[0];
        assert_eq!(m.samples, 20);
        assert_eq!(m.util_mean_pct, Some(47.5));
        assert_eq!(m.util_p50_pct, Some(45.0));
        assert_eq!(m.util_p95_binned_pct, Some(90.0));
        assert_eq!(m.idle_fraction, Some(0.05), "only the 0% sample is under 5%");
        assert_eq!(m.mem_peak_mib, Some(950.0));
        assert_eq!(m.duration_s, 20.0);
        assert_eq!(m.energy_j, Some(1900.0), "100 W over 19 s between first and last sample");
        assert_eq!(m.schema_version, SCHEMA_VERSION);
    }

    #[test]
    fn an_energy_counter_wins_over_integrated_power() {
        let mut s = SeriesSummary::default();
        s.add(&MetricSample { energy_j: Some(0.0), ..row(0.0, 50.0) });
        s.add(&MetricSample { energy_j: Some(250.0), ..row(1.0, 50.0) });
        assert_eq!(s.finish(None, "")[0].energy_j, Some(250.0));
        assert_eq!(s.finish(None, "")[0].interval_s, 1.0, "read from the timestamps");
    }

    #[test]
    fn the_human_line_names_the_numbers() {
        let mut s = SeriesSummary::default();
        s.add(&row(0.0, 80.0));
        let line = human_line(&s.finish(Some(1.0), "")[0]);
        assert!(line.contains("util mean 80.0%"), "{line}");
        assert!(line.contains("idle 0% of samples"), "{line}");
    }
}
