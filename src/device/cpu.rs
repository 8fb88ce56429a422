//! The CPU sampler, for CPU serving: host CPU busy % and memory, and optionally one
//! process (CPU % of the whole machine and resident memory).

use sysinfo::{CpuRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::{SampleError, Sampler};
use crate::report::MetricSample;

const MIB: f64 = 1024.0 * 1024.0;

pub struct CpuSampler {
    sys: System,
    name: String,
    cores: f64,
    pid: Option<u32>,
}

impl CpuSampler {
    /// Primes the counters, so that the first sample (one interval later) measures that interval.
    pub fn new(pid: Option<u32>) -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_list(CpuRefreshKind::nothing().with_cpu_usage());
        let name = sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "CPU".into());
        let cores = sys.cpus().len().max(1) as f64;
        let mut s = CpuSampler { sys, name, cores, pid };
        s.refresh();
        s
    }

    /// Follows another process from now on (the command `metrics` runs).
    pub fn follow(&mut self, pid: u32) {
        self.pid = Some(pid);
        self.refresh();
    }

    fn refresh(&mut self) {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        if let Some(pid) = self.pid {
            let pid = Pid::from_u32(pid);
            self.sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
        }
    }
}

impl CpuSampler {
    /// The `source` of its samples.
    pub const SOURCE: &'static str = "cpu";
}

impl Sampler for CpuSampler {
    fn source(&self) -> &'static str {
        Self::SOURCE
    }

    fn note(&self) -> String {
        format!(
            "no GPU: gpu_util_pct is the host's CPU busy % over all {} cores; memory columns are host RAM; \
             process rows give the process's CPU % of the whole machine in gpu_util_pct and its resident memory in process_mem_mib",
            self.cores
        )
    }

    fn sample(&mut self, now: f64) -> Result<Vec<MetricSample>, SampleError> {
        self.refresh();
        let total = self.sys.total_memory() as f64;
        let used = self.sys.used_memory() as f64;
        let mut rows = vec![MetricSample {
            timestamp: now,
            source: "cpu".into(),
            device_id: "cpu".into(),
            device_name: self.name.clone(),
            gpu_util_pct: Some(round2(self.sys.global_cpu_usage() as f64)),
            mem_util_pct: (total > 0.0).then(|| round2(used / total * 100.0)),
            mem_used_mib: Some(round2(used / MIB)),
            mem_total_mib: Some(round2(total / MIB)),
            ..Default::default()
        }];
        if let Some(pid) = self.pid {
            if let Some(p) = self.sys.process(Pid::from_u32(pid)) {
                rows.push(MetricSample {
                    timestamp: now,
                    source: "cpu".into(),
                    device_id: "cpu".into(),
                    device_name: self.name.clone(),
                    gpu_util_pct: Some(round2(p.cpu_usage() as f64 / self.cores)),
                    pid: Some(pid),
                    process_mem_mib: Some(round2(p.memory() as f64 / MIB)),
                    ..Default::default()
                });
            }
        }
        Ok(rows)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_row_has_cpu_and_memory() {
        let mut s = CpuSampler::new(None);
        let rows = s.sample(1.0).unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.source.as_str(), r.device_id.as_str()), ("cpu", "cpu"));
        let util = r.gpu_util_pct.unwrap();
        assert!((0.0..=100.0).contains(&util), "{util}");
        assert!(r.mem_total_mib.unwrap() > 0.0);
        assert!(r.mem_used_mib.unwrap() <= r.mem_total_mib.unwrap());
    }

    #[test]
    fn a_followed_process_gets_its_own_row() {
        let mut s = CpuSampler::new(Some(std::process::id()));
        let rows = s.sample(1.0).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].pid, Some(std::process::id()));
        assert!(rows[1].process_mem_mib.unwrap() > 0.0, "this test process has resident memory");
    }

    #[test]
    fn a_gone_process_has_no_row() {
        let mut s = CpuSampler::new(Some(u32::MAX - 1));
        assert_eq!(s.sample(1.0).unwrap().len(), 1);
    }
}
