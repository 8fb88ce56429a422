//! The environment stamp: what ran the measurement, so that numbers are never read
//! without their machine. It is read from the machine in `device::environment`.

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
