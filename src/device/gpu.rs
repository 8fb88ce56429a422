//! An NVML-like view of the GPUs ([`GpuApi`]) and its real implementation on
//! `nvml-wrapper` ([`NvmlGpus`]). Everything above this trait (sampling, checks,
//! inventory) is tested with a recording ([`super::RecordedGpus`]) instead of a GPU.

use serde::{Deserialize, Serialize};

use nvml_wrapper::enum_wrappers::device::{Clock as NvmlClock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{GpmSample, Nvml};

/// Environment variable naming the NVML library to load instead of `libnvidia-ml.so.1`.
pub const NVML_LIB_ENV: &str = "GPUBENCH_NVML_LIB";

/// What does not change while a program runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuStatic {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_bytes: u64,
    /// `9.0` for Hopper.
    pub compute_capability: Option<String>,
    /// MIG mode currently enabled.
    pub mig_enabled: Option<bool>,
    /// `Default`, `ExclusiveProcess`, `Prohibited`...
    pub compute_mode: Option<String>,
    /// Uncorrected ECC errors since the driver loaded (volatile counter).
    pub ecc_uncorrected: Option<u64>,
    pub gpm_supported: bool,
}

/// One process using a GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    /// SM utilization of this process over the samples NVML had buffered since the last read.
    pub sm_util_pct: Option<f64>,
}

/// One reading of one GPU. Fields the device does not support are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuReading {
    pub gpu_util_pct: Option<f64>,
    pub mem_util_pct: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub power_w: Option<f64>,
    /// Energy counter since the driver loaded, in millijoules.
    pub energy_total_mj: Option<u64>,
    pub temperature_c: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
    /// Active clock throttle reasons, by name (`sw_power_cap`, `hw_slowdown`...).
    #[serde(default)]
    pub throttle_reasons: Vec<String>,
    #[serde(default)]
    pub processes: Vec<GpuProcess>,
    /// GPM metrics (Hopper+), in %, over the time since the previous reading.
    pub sm_activity_pct: Option<f64>,
    pub sm_occupancy_pct: Option<f64>,
    pub tensor_activity_pct: Option<f64>,
    pub dram_activity_pct: Option<f64>,
}

/// What NVML offers, reduced to what gpubench reads. Errors are one-line messages.
pub trait GpuApi: Send {
    /// Where the facts come from (`NVML` or `recording FILE`), for outputs.
    fn origin(&self) -> String;
    fn driver_version(&self) -> Result<String, String>;
    /// The CUDA version the driver supports, e.g. `13.0`.
    fn cuda_driver_version(&self) -> Result<String, String>;
    fn device_count(&self) -> Result<u32, String>;
    fn static_info(&self, index: u32) -> Result<GpuStatic, String>;
    /// Reads the device now. An error means the device could not be read at all
    /// (GPU lost, driver gone); a field the device lacks is `None` instead.
    fn read(&mut self, index: u32) -> Result<GpuReading, String>;
}

/// NVML could not be opened: what happened and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{problem}")]
pub struct NvmlUnavailable {
    pub problem: String,
    pub fix: String,
}

/// The library handle, opened once per program: GPM samples borrow it for as long as
/// they live, and every caller (stamp, checks, sampler) shares it.
static NVML: std::sync::OnceLock<&'static Nvml> = std::sync::OnceLock::new();

/// Opens NVML (`libnvidia-ml.so.1`, or the file named by `GPUBENCH_NVML_LIB`). A failure
/// is not remembered: a later call tries again (the driver may have been loaded since).
pub fn open_nvml() -> Result<NvmlGpus, NvmlUnavailable> {
    if let Some(nvml) = NVML.get() {
        return Ok(NvmlGpus { nvml, state: Vec::new() });
    }
    let lib = std::env::var_os(NVML_LIB_ENV);
    let result = match &lib {
        Some(path) => Nvml::builder().lib_path(path).init(),
        None => Nvml::init(),
    };
    let lib_name = lib.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| "libnvidia-ml.so.1".into());
    match result {
        Ok(nvml) => {
            let nvml = *NVML.get_or_init(|| Box::leak(Box::new(nvml)));
            Ok(NvmlGpus { nvml, state: Vec::new() })
        }
        Err(e) => Err(explain_nvml_error(&lib_name, e)),
    }
}

fn explain_nvml_error(lib_name: &str, e: NvmlError) -> NvmlUnavailable {
    match e {
        NvmlError::LibloadingError(inner) => NvmlUnavailable {
            problem: format!("NVML not available: {lib_name} could not be loaded ({inner})"),
            fix: "run on a machine with an NVIDIA GPU and its driver installed (the driver ships libnvidia-ml.so.1); \
                  in a container, start it with the NVIDIA runtime (docker run --gpus all, or a pod with an nvidia.com/gpu limit)"
                .into(),
        },
        NvmlError::DriverNotLoaded => NvmlUnavailable {
            problem: "NVML loaded but the NVIDIA kernel driver is not running".into(),
            fix: "load the driver (modprobe nvidia, or reboot after installing it) and check nvidia-smi".into(),
        },
        NvmlError::NoPermission => NvmlUnavailable {
            problem: "NVML refused access to the GPUs (no permission)".into(),
            fix: "run as a user allowed to open /dev/nvidia* (the video group), or in a container with the NVIDIA runtime".into(),
        },
        other => NvmlUnavailable {
            problem: format!("NVML failed to start: {other}"),
            fix: "check the driver with nvidia-smi; reinstall or reload the NVIDIA driver if it fails too".into(),
        },
    }
}

struct DeviceState {
    last_process_ts: Option<u64>,
    gpm_previous: Option<GpmSample<'static>>,
    gpm_supported: Option<bool>,
}

/// The real GPUs, through NVML.
pub struct NvmlGpus {
    nvml: &'static Nvml,
    state: Vec<DeviceState>,
}

impl NvmlGpus {
    fn state(&mut self, index: u32) -> &mut DeviceState {
        let i = index as usize;
        while self.state.len() <= i {
            self.state.push(DeviceState { last_process_ts: None, gpm_previous: None, gpm_supported: None });
        }
        &mut self.state[i]
    }
}

/// `Ok(v)` as `Some(v)`; an unsupported or missing field as `None`.
fn opt<T>(r: Result<T, NvmlError>) -> Option<T> {
    r.ok()
}

/// Errors that mean the whole device is gone, not just one field.
fn is_fatal(e: &NvmlError) -> bool {
    matches!(e, NvmlError::GpuLost | NvmlError::Uninitialized | NvmlError::DriverNotLoaded | NvmlError::ResetRequired)
}

impl GpuApi for NvmlGpus {
    fn origin(&self) -> String {
        "NVML".into()
    }

    fn driver_version(&self) -> Result<String, String> {
        self.nvml.sys_driver_version().map_err(|e| e.to_string())
    }

    fn cuda_driver_version(&self) -> Result<String, String> {
        let v = self.nvml.sys_cuda_driver_version().map_err(|e| e.to_string())?;
        Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
    }

    fn device_count(&self) -> Result<u32, String> {
        self.nvml.device_count().map_err(|e| e.to_string())
    }

    fn static_info(&self, index: u32) -> Result<GpuStatic, String> {
        let d = self.nvml.device_by_index(index).map_err(|e| e.to_string())?;
        Ok(GpuStatic {
            index,
            name: d.name().map_err(|e| e.to_string())?,
            uuid: d.uuid().unwrap_or_default(),
            memory_total_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
            compute_capability: opt(d.cuda_compute_capability()).map(|c| format!("{}.{}", c.major, c.minor)),
            mig_enabled: opt(d.mig_mode()).map(|m| m.current == 1),
            compute_mode: opt(d.compute_mode()).map(|m| format!("{m:?}")),
            ecc_uncorrected: opt(d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)),
            gpm_supported: d.gpm_support().unwrap_or(false),
        })
    }

    fn read(&mut self, index: u32) -> Result<GpuReading, String> {
        let nvml = self.nvml;
        let d = nvml.device_by_index(index).map_err(|e| format!("GPU {index} cannot be read: {e}"))?;
        // Utilization is read first: if the device is gone, say so and read nothing else.
        let util = match d.utilization_rates() {
            Ok(u) => Some(u),
            Err(e) if is_fatal(&e) => return Err(format!("GPU {index} cannot be read: {e}")),
            Err(_) => None,
        };
        let mem = opt(d.memory_info());
        let throttle_reasons = opt(d.current_throttle_reasons())
            .map(|r| r.iter_names().map(|(name, _)| name.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let mut processes: Vec<GpuProcess> = opt(d.running_compute_processes())
            .unwrap_or_default()
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                used_memory_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                },
                sm_util_pct: None,
            })
            .collect();
        let mut reading = GpuReading {
            gpu_util_pct: util.as_ref().map(|u| u.gpu as f64),
            mem_util_pct: util.as_ref().map(|u| u.memory as f64),
            memory_used_bytes: mem.as_ref().map(|m| m.used),
            memory_total_bytes: mem.as_ref().map(|m| m.total),
            power_w: opt(d.power_usage()).map(|mw| mw as f64 / 1000.0),
            energy_total_mj: opt(d.total_energy_consumption()),
            temperature_c: opt(d.temperature(TemperatureSensor::Gpu)).map(|t| t as f64),
            sm_clock_mhz: opt(d.clock_info(NvmlClock::SM)).map(|c| c as f64),
            throttle_reasons,
            processes: Vec::new(),
            ..Default::default()
        };

        let state = self.state(index);
        // Per-process SM utilization: samples since the last read. NotFound means no
        // new samples, which is not an error.
        match d.process_utilization_stats(state.last_process_ts) {
            Ok(samples) => {
                for s in &samples {
                    state.last_process_ts = Some(state.last_process_ts.map_or(s.timestamp, |t| t.max(s.timestamp)));
                    match processes.iter_mut().find(|p| p.pid == s.pid) {
                        Some(p) => p.sm_util_pct = Some(p.sm_util_pct.unwrap_or(0.0).max(s.sm_util as f64)),
                        None => processes.push(GpuProcess { pid: s.pid, used_memory_bytes: None, sm_util_pct: Some(s.sm_util as f64) }),
                    }
                }
            }
            Err(NvmlError::NotFound) => {}
            Err(e) => tracing::debug!("process utilization of GPU {index}: {e}"),
        }
        reading.processes = processes;

        // GPM: a sample now, metrics between the previous sample and this one.
        if state.gpm_supported.is_none() {
            state.gpm_supported = Some(d.gpm_support().unwrap_or(false));
        }
        if state.gpm_supported == Some(true) {
            match d.gpm_sample() {
                Ok(now) => {
                    if let Some(prev) = state.gpm_previous.take() {
                        let ids = [GpmMetricId::SmUtil, GpmMetricId::SmOccupancy, GpmMetricId::AnyTensorUtil, GpmMetricId::DramBwUtil];
                        if let Ok(results) = nvml_wrapper::gpm::gpm_metrics_get(nvml, &prev, &now, &ids) {
                            let value = |i: usize| results.get(i).and_then(|r| r.as_ref().ok()).map(|r| r.value);
                            reading.sm_activity_pct = value(0);
                            reading.sm_occupancy_pct = value(1);
                            reading.tensor_activity_pct = value(2);
                            reading.dram_activity_pct = value(3);
                        }
                    }
                    state.gpm_previous = Some(now);
                }
                Err(e) => {
                    tracing::debug!("GPM sample of GPU {index}: {e}");
                    state.gpm_previous = None;
                }
            }
        }
        Ok(reading)
    }
}
