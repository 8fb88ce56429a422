//! The environment stamp: what ran the measurement, so that numbers are never read
//! without their machine.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentStamp {
    pub gpubench_version: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_cores: u32,
    pub memory_total_bytes: u64,
    /// GPUs visible on the client's machine (empty where there are none or NVML is missing).
    pub gpus: Vec<GpuInfo>,
    /// What the server said about itself (e.g. its `/v1/models` answer), when it said anything.
    pub server: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_bytes: u64,
    pub driver_version: String,
}

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
            gpus: crate::device::gpu_inventory(),
            server: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamp_describes_this_machine() {
        let s = super::EnvironmentStamp::collect();
        assert!(s.cpu_cores >= 1);
        assert!(s.memory_total_bytes > 0);
        assert_eq!(s.gpubench_version, env!("CARGO_PKG_VERSION"));
    }
}
