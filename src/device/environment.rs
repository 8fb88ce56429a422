//! Reads this machine's description into the run report's environment stamp.

use crate::report::EnvironmentStamp;

impl EnvironmentStamp {
    /// Reads this machine's description (GPUs through NVML where it loads). Cheap enough to call once per run.
    pub fn collect() -> Self {
        let mut sys = sysinfo::System::new();
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        sys.refresh_memory();
        let cpu_model = sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "unknown".into());
        EnvironmentStamp {
            gpubench_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: sysinfo::System::host_name().unwrap_or_else(|| "unknown".into()),
            os: sysinfo::System::long_os_version().unwrap_or_else(|| std::env::consts::OS.into()),
            arch: std::env::consts::ARCH.into(),
            cpu_model,
            cpu_cores: sys.cpus().len() as u32,
            memory_total_bytes: sys.total_memory(),
            gpus: super::gpu_inventory(),
            server: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::report::EnvironmentStamp;

    #[test]
    fn stamp_describes_this_machine() {
        let s = EnvironmentStamp::collect();
        assert!(s.cpu_cores >= 1);
        assert!(s.memory_total_bytes > 0);
        assert_eq!(s.gpubench_version, env!("CARGO_PKG_VERSION"));
    }
}
