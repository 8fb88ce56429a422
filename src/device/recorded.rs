//! GPUs played back from a recording of NVML readings (JSON): the NVML-like source the
//! tests and demos use where there is no GPU. A `null` reading stands for a device that
//! could not be read (GPU lost, driver reload); after the last reading the last one repeats.

use std::path::Path;

use serde::Deserialize;

use super::gpu::{GpuApi, GpuReading, GpuStatic};

#[derive(Debug, Clone, Deserialize)]
struct Recording {
    driver_version: String,
    cuda_driver_version: String,
    devices: Vec<RecordedDevice>,
}

#[derive(Debug, Clone, Deserialize)]
struct RecordedDevice {
    #[serde(rename = "static")]
    info: GpuStatic,
    readings: Vec<Option<GpuReading>>,
}

pub struct RecordedGpus {
    origin: String,
    recording: Recording,
    next: Vec<usize>,
}

impl RecordedGpus {
    pub fn from_fixture_text(text: &str) -> Result<Self, String> {
        Self::parse(text, "recording".into())
    }

    /// Reads a recording file; the error says which file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read GPU recording {}: {e}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        Self::parse(&text, format!("recording {name}"))
            .map_err(|e| format!("{} is not a GPU recording: {e}", path.display()))
    }

    fn parse(text: &str, origin: String) -> Result<Self, String> {
        let recording: Recording = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let next = vec![0; recording.devices.len()];
        Ok(RecordedGpus { origin, recording, next })
    }

    fn device(&self, index: u32) -> Result<&RecordedDevice, String> {
        self.recording
            .devices
            .get(index as usize)
            .ok_or_else(|| format!("no GPU {index}: the recording has {}", self.recording.devices.len()))
    }
}

impl GpuApi for RecordedGpus {
    fn origin(&self) -> String {
        self.origin.clone()
    }
    fn driver_version(&self) -> Result<String, String> {
        Ok(self.recording.driver_version.clone())
    }
    fn cuda_driver_version(&self) -> Result<String, String> {
        Ok(self.recording.cuda_driver_version.clone())
    }
    fn device_count(&self) -> Result<u32, String> {
        Ok(self.recording.devices.len() as u32)
    }
    fn static_info(&self, index: u32) -> Result<GpuStatic, String> {
        let mut info = self.device(index)?.info.clone();
        info.index = index;
        Ok(info)
    }
    fn read(&mut self, index: u32) -> Result<GpuReading, String> {
        let n = self.device(index)?.readings.len();
        if n == 0 {
            return Err(format!("GPU {index} has no recorded readings"));
        }
        let i = self.next[index as usize].min(n - 1);
        self.next[index as usize] += 1;
        self.recording.devices[index as usize].readings[i]
            .clone()
            .ok_or_else(|| format!("GPU {index} cannot be read: GPU is lost (recorded)"))
    }
}
