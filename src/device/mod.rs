//! The device layer: sampling backends behind one trait ([`Sampler`]), the clock the
//! sampling loop runs on ([`Clock`]), and the NVML-like view of GPUs ([`GpuApi`]) that
//! `gpu-check`, `metrics` and the environment stamp share.
//!
//! Backends: NVML (the default where `libnvidia-ml.so.1` loads), the host CPU and one
//! process (`cpu`), a Prometheus server holding dcgm-exporter or Run:AI series
//! (`prometheus`), and a recorded CSV played back (`replay`, always labelled as such).

pub(crate) mod clock;
mod cpu;
mod environment;
pub mod exposition;
mod gpu;
mod nvml;
mod pods;
mod prometheus;
mod recorded;
mod replay;

pub use clock::{Clock, SystemClock, Wake};
pub use cpu::CpuSampler;
pub use gpu::{open_nvml, GpuApi, GpuProcess, GpuReading, GpuStatic, NvmlGpus, NvmlUnavailable, NVML_LIB_ENV};
pub use nvml::NvmlSampler;
pub use pods::pod_of_pid;
pub use prometheus::{PrometheusError, PrometheusSampler, PrometheusSelector};
pub use recorded::RecordedGpus;
pub use replay::ReplaySampler;

use crate::report::{GpuInfo, MetricSample};

/// Why a sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The device is gone for now (GPU lost, driver reloading, server down): the series
    /// gets a gap and sampling goes on.
    #[error("{0}")]
    Unavailable(String),
    /// A replayed recording has no more samples.
    #[error("the recording has no more samples")]
    Exhausted,
}

/// What a metric series measured: GPUs, or the host's CPUs (the `cpu` source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    Gpu,
    Cpu,
}

impl DeviceKind {
    /// The kind of a sample's `source`: `cpu` is the host's CPUs, every other source GPUs.
    pub fn of_source(source: &str) -> Self {
        if source == CpuSampler::SOURCE {
            DeviceKind::Cpu
        } else {
            DeviceKind::Gpu
        }
    }

    /// `gpu` or `cpu`, as the reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Gpu => "gpu",
            DeviceKind::Cpu => "cpu",
        }
    }
}

/// One sampling backend. `sample` is called once per tick of the sampling loop and
/// returns one row per device (and per process or pod where the source knows them).
pub trait Sampler: Send {
    /// `nvml`, `cpu`, `prometheus` or `replay`.
    fn source(&self) -> &'static str;
    /// What `gpu_util_pct` means for this source, in words (goes into the summary).
    fn note(&self) -> String;
    /// Takes one sample; `now` is the wall-clock time of the tick in Unix seconds.
    fn sample(&mut self, now: f64) -> Result<Vec<MetricSample>, SampleError>;
}

/// GPUs visible through NVML on this machine, for the environment stamp. Empty where
/// NVML is missing or fails.
pub fn gpu_inventory() -> Vec<GpuInfo> {
    match open_nvml() {
        Ok(gpus) => inventory_of(&gpus),
        Err(e) => {
            tracing::debug!("no GPU inventory: {e}");
            Vec::new()
        }
    }
}

/// The inventory of any NVML-like source.
pub fn inventory_of(gpus: &dyn GpuApi) -> Vec<GpuInfo> {
    let driver = gpus.driver_version().unwrap_or_default();
    let count = gpus.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| gpus.static_info(i).ok())
        .map(|s| GpuInfo {
            index: s.index,
            name: s.name,
            uuid: s.uuid,
            memory_total_bytes: s.memory_total_bytes,
            driver_version: driver.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn inventory_is_empty_without_nvml() {
        // This machine has no NVIDIA driver; where it has one, the list is not empty.
        let inv = super::gpu_inventory();
        if super::open_nvml().is_err() {
            assert!(inv.is_empty());
        }
    }

    #[test]
    fn inventory_of_a_recording_lists_its_gpus() {
        let gpus = super::RecordedGpus::from_fixture_text(include_str!("../../fixtures/gpu/h100-recording.json"))
            .expect("fixture parses");
        let inv = super::inventory_of(&gpus);
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(inv[0].driver_version, "580.95.05");
        assert_eq!(inv[0].memory_total_bytes, 85_520_809_984);
    }
}
