//! The NVML sampler: one row per GPU per tick, plus one row per process on it, from any
//! NVML-like source ([`GpuApi`]). A device that cannot be read leaves a gap in the
//! series and is tried again at the next tick.

use std::collections::HashMap;

use super::gpu::{GpuApi, GpuReading};
use super::pods::pod_of_pid;
use super::{SampleError, Sampler};
use crate::report::MetricSample;

const MIB: f64 = 1024.0 * 1024.0;

/// Energy counter bookkeeping: joules since the series started, across counter resets.
#[derive(Default)]
struct Energy {
    base_mj: Option<u64>,
    offset_j: f64,
    last_j: f64,
}

impl Energy {
    fn update(&mut self, counter_mj: u64) -> f64 {
        match self.base_mj {
            None => self.base_mj = Some(counter_mj),
            Some(base) if counter_mj < base => {
                // The counter restarted (driver reload): carry on from the last value.
                self.offset_j = self.last_j;
                self.base_mj = Some(counter_mj);
            }
            Some(_) => {}
        }
        let j = self.offset_j + (counter_mj - self.base_mj.unwrap_or(counter_mj)) as f64 / 1000.0;
        self.last_j = j;
        j
    }
}

pub struct NvmlSampler {
    gpus: Box<dyn GpuApi>,
    devices: Vec<(u32, String)>,
    pid: Option<u32>,
    energy: HashMap<u32, Energy>,
    pods: HashMap<u32, Option<String>>,
    origin: String,
}

impl NvmlSampler {
    /// Samples every GPU, or only `device`; process rows only for `pid` when given.
    pub fn new(gpus: Box<dyn GpuApi>, device: Option<u32>, pid: Option<u32>) -> Result<Self, String> {
        let count = gpus.device_count()?;
        if count == 0 {
            return Err("NVML sees no GPU on this machine".into());
        }
        let indices: Vec<u32> = match device {
            Some(d) if d >= count => return Err(format!("there is no GPU {d}: this machine has {count} (0 to {})", count - 1)),
            Some(d) => vec![d],
            None => (0..count).collect(),
        };
        let devices = indices
            .into_iter()
            .map(|i| (i, gpus.static_info(i).map(|s| s.name).unwrap_or_else(|_| format!("GPU {i}"))))
            .collect();
        let origin = gpus.origin();
        Ok(NvmlSampler { gpus, devices, pid, energy: HashMap::new(), pods: HashMap::new(), origin })
    }

    fn rows(&mut self, now: f64, index: u32, name: &str, r: GpuReading) -> Vec<MetricSample> {
        let energy_j = r.energy_total_mj.map(|mj| self.energy.entry(index).or_default().update(mj));
        let device = MetricSample {
            timestamp: now,
            source: "nvml".into(),
            device_id: index.to_string(),
            device_name: name.to_string(),
            gpu_util_pct: r.gpu_util_pct,
            mem_util_pct: r.mem_util_pct,
            mem_used_mib: r.memory_used_bytes.map(|b| b as f64 / MIB),
            mem_total_mib: r.memory_total_bytes.map(|b| b as f64 / MIB),
            power_w: r.power_w,
            energy_j,
            temperature_c: r.temperature_c,
            sm_clock_mhz: r.sm_clock_mhz,
            sm_activity_pct: r.sm_activity_pct,
            sm_occupancy_pct: r.sm_occupancy_pct,
            tensor_activity_pct: r.tensor_activity_pct,
            dram_activity_pct: r.dram_activity_pct,
            throttle_reasons: (!r.throttle_reasons.is_empty()).then(|| r.throttle_reasons.join("|")),
            ..Default::default()
        };
        let mut rows = vec![device];
        for p in r.processes.iter().filter(|p| self.pid.is_none_or(|want| want == p.pid)) {
            let pod = self.pods.entry(p.pid).or_insert_with(|| pod_of_pid(p.pid)).clone();
            rows.push(MetricSample {
                timestamp: now,
                source: "nvml".into(),
                device_id: index.to_string(),
                device_name: name.to_string(),
                pid: Some(p.pid),
                pod,
                process_mem_mib: p.used_memory_bytes.map(|b| b as f64 / MIB),
                process_sm_util_pct: p.sm_util_pct,
                ..Default::default()
            });
        }
        rows
    }
}

impl Sampler for NvmlSampler {
    fn source(&self) -> &'static str {
        "nvml"
    }

    fn note(&self) -> String {
        let from = if self.origin == "NVML" { String::new() } else { format!(" (read from {})", self.origin) };
        format!(
            "gpu_util_pct is NVML utilization.gpu{from}: the share of each sample period in which any kernel ran, \
             a duty cycle that reads 100% for one tiny kernel running all the time; sm_activity_pct (GPM, Hopper and later) \
             says how busy the SMs really were"
        )
    }

    fn sample(&mut self, now: f64) -> Result<Vec<MetricSample>, SampleError> {
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        let devices = self.devices.clone();
        for (index, name) in &devices {
            match self.gpus.read(*index) {
                Ok(reading) => rows.extend(self.rows(now, *index, name, reading)),
                Err(e) => failures.push(e),
            }
        }
        if rows.is_empty() && !failures.is_empty() {
            return Err(SampleError::Unavailable(failures.join("; ")));
        }
        for f in failures {
            tracing::warn!("{f}: this GPU has a gap in the series");
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::RecordedGpus;

    fn recorded() -> Box<dyn GpuApi> {
        Box::new(RecordedGpus::from_fixture_text(include_str!("../../fixtures/gpu/h100-recording.json")).expect("fixture"))
    }

    #[test]
    fn a_reading_becomes_a_device_row_and_process_rows() {
        let mut s = NvmlSampler::new(recorded(), None, None).unwrap();
        let idle = s.sample(100.0).unwrap();
        assert_eq!(idle.len(), 1, "no process on an idle GPU");
        assert_eq!(idle[0].gpu_util_pct, Some(0.0));
        assert_eq!(idle[0].energy_j, Some(0.0), "energy counts from the start of the series");
        assert_eq!(idle[0].throttle_reasons.as_deref(), Some("gpu_idle"));
        assert_eq!(idle[0].mem_total_mib, Some(81559.0));

        let busy = s.sample(101.0).unwrap();
        assert_eq!(busy.len(), 2);
        let (dev, proc_row) = (&busy[0], &busy[1]);
        assert_eq!(dev.device_id, "0");
        assert_eq!(dev.device_name, "NVIDIA H100 80GB HBM3");
        assert_eq!(dev.gpu_util_pct, Some(100.0));
        assert_eq!(dev.sm_activity_pct, Some(78.5));
        assert_eq!(dev.energy_j, Some(255.0));
        assert_eq!(dev.pid, None);
        assert_eq!(proc_row.pid, Some(4242));
        assert_eq!(proc_row.process_sm_util_pct, Some(87.0));
        assert_eq!(proc_row.process_mem_mib, Some(17280.0));
        assert_eq!(proc_row.gpu_util_pct, None, "process rows carry only process fields");
    }

    #[test]
    fn a_lost_gpu_is_a_gap_and_sampling_goes_on() {
        let mut s = NvmlSampler::new(recorded(), Some(0), None).unwrap();
        for t in 0..3 {
            s.sample(t as f64).unwrap();
        }
        match s.sample(3.0) {
            Err(SampleError::Unavailable(msg)) => assert!(msg.contains("GPU 0 cannot be read"), "{msg}"),
            other => panic!("expected a gap, got {other:?}"),
        }
        let back = s.sample(4.0).unwrap();
        assert_eq!(back[0].gpu_util_pct, Some(3.0));
        assert_eq!(back[0].energy_j, Some(1655.0));
    }

    #[test]
    fn the_pid_filter_keeps_only_that_process() {
        let mut s = NvmlSampler::new(recorded(), None, Some(1)).unwrap();
        s.sample(0.0).unwrap();
        assert_eq!(s.sample(1.0).unwrap().len(), 1, "only the device row: pid 1 is not on the GPU");
    }

    #[test]
    fn a_missing_device_index_is_refused_with_the_range() {
        let err = NvmlSampler::new(recorded(), Some(3), None).err().unwrap();
        assert!(err.contains("there is no GPU 3"), "{err}");
        assert!(err.contains("0 to 0"), "{err}");
    }

    #[test]
    fn energy_survives_a_counter_reset() {
        let mut e = Energy::default();
        assert_eq!(e.update(5_000), 0.0);
        assert_eq!(e.update(7_000), 2.0);
        assert_eq!(e.update(1_000), 2.0, "reset: carry on from the last value");
        assert_eq!(e.update(4_000), 5.0);
    }
}
