//! GPU checks: NVML loads, the GPUs (identity, memory, compute capability, MIG, compute
//! mode, ECC, processes already there), driver and CUDA versions, free memory; and
//! `nvidia-smi` as a second witness, which also tells a missing driver from a
//! library that is only not found.

use super::tools::{self, ToolError};
use super::{gib, CheckResult, Group};
use crate::device::{GpuApi, GpuStatic, NvmlUnavailable};

const G: Group = Group::Gpu;
const DRIVER_FIX: &str = "install the NVIDIA driver (it ships nvidia-smi and libnvidia-ml.so.1) on a machine with an NVIDIA GPU; \
                          in a container use the NVIDIA runtime (docker run --gpus all)";

/// One GPU as `nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.used,driver_version --format=csv,noheader,nounits` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SmiGpu {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_mib: u64,
    pub memory_used_mib: u64,
    pub driver_version: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Smi {
    NotFound,
    Failed(String),
    Gpus(Vec<SmiGpu>),
}

pub const SMI_QUERY: &[&str] =
    &["--query-gpu=index,name,uuid,memory.total,memory.used,driver_version", "--format=csv,noheader,nounits"];

pub async fn nvidia_smi() -> Smi {
    match tools::run("nvidia-smi", SMI_QUERY).await {
        Err(ToolError::NotFound) => Smi::NotFound,
        Err(ToolError::TimedOut) => Smi::Failed("nvidia-smi did not answer in time".into()),
        Err(ToolError::Spawn(e)) => Smi::Failed(e),
        Ok(out) if !out.success => Smi::Failed(out.first_error_line()),
        Ok(out) => match parse_smi(&out.stdout) {
            Ok(gpus) => Smi::Gpus(gpus),
            Err(e) => Smi::Failed(e),
        },
    }
}

/// Parses the CSV lines of the query above.
pub fn parse_smi(text: &str) -> Result<Vec<SmiGpu>, String> {
    let mut gpus = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 6 {
            return Err(format!("unexpected nvidia-smi line '{line}'"));
        }
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("unexpected number '{s}' in nvidia-smi line '{line}'"));
        gpus.push(SmiGpu {
            index: num(f[0])? as u32,
            name: f[1].to_string(),
            uuid: f[2].to_string(),
            memory_total_mib: num(f[3])?,
            memory_used_mib: num(f[4])?,
            driver_version: f[5].to_string(),
        });
    }
    Ok(gpus)
}

fn smi_check(smi: &Smi, nvml_count: Option<u32>) -> CheckResult {
    match (smi, nvml_count) {
        (Smi::NotFound, Some(_)) => CheckResult::skip(G, "nvidia-smi", "not on PATH (not needed: NVML works)"),
        (Smi::NotFound, None) => CheckResult::fail(G, "nvidia-smi", "not on PATH: no NVIDIA driver on this machine", DRIVER_FIX),
        (Smi::Failed(e), _) => CheckResult::fail(
            G,
            "nvidia-smi",
            format!("fails: {e}"),
            "the driver is installed but not working: reload it (or reboot) and check dmesg for NVRM errors",
        ),
        (Smi::Gpus(g), Some(n)) if g.len() as u32 == n => {
            CheckResult::pass(G, "nvidia-smi", format!("agrees: {} GPU(s), driver {}", g.len(), g.first().map(|x| x.driver_version.as_str()).unwrap_or("?")))
        }
        (Smi::Gpus(g), Some(n)) => CheckResult::warn(
            G,
            "nvidia-smi",
            format!("lists {} GPU(s) where NVML sees {n}", g.len()),
            "check CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES and the container's device list",
        ),
        (Smi::Gpus(g), None) => CheckResult::warn(
            G,
            "nvidia-smi",
            format!(
                "lists {} GPU(s) ({}) while NVML did not load in gpubench",
                g.len(),
                g.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "point gpubench at the library nvidia-smi uses: export GPUBENCH_NVML_LIB=$(ldconfig -p | awk '/libnvidia-ml.so.1/{print $NF; exit}')",
        ),
    }
}

/// Checks where NVML did not load: a clear FAIL and what to do; the rest is skipped.
pub fn checks_without_nvml(e: &NvmlUnavailable, smi: &Smi) -> Vec<CheckResult> {
    vec![
        CheckResult::fail(G, "NVML", e.problem.clone(), e.fix.clone()),
        smi_check(smi, None),
        CheckResult::skip(G, "GPUs", "needs NVML"),
        CheckResult::skip(G, "driver / CUDA", "needs NVML"),
        CheckResult::skip(G, "free GPU memory", "needs NVML"),
    ]
}

/// Checks through NVML (or a recording of it).
pub fn checks_with_nvml(gpus: &mut dyn GpuApi, min_vram_gib: Option<f64>, smi: &Smi) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let driver = gpus.driver_version();
    let cuda = gpus.cuda_driver_version();
    out.push(CheckResult::pass(G, "NVML", format!("loaded ({})", gpus.origin())));
    let count = match gpus.device_count() {
        Ok(n) => n,
        Err(e) => {
            out.push(CheckResult::fail(G, "GPUs", format!("NVML cannot count the GPUs: {e}"), "check nvidia-smi; reload the driver"));
            return out;
        }
    };
    out.push(smi_check(smi, Some(count)));
    if count == 0 {
        out.push(CheckResult::fail(
            G,
            "GPUs",
            "NVML sees no GPU",
            "check CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES, or that the container was given GPUs",
        ));
        return out;
    }
    out.push(driver_check(&driver, &cuda));

    let mut free = FreeMemory::default();
    for i in 0..count {
        out.push(gpu_check(gpus, i, min_vram_gib, &mut free));
    }
    out.push(free_memory_check(&free, min_vram_gib));
    out
}

/// The driver and the CUDA version it supports.
fn driver_check(driver: &Result<String, String>, cuda: &Result<String, String>) -> CheckResult {
    match (driver, cuda) {
        (Ok(d), Ok(c)) => {
            let major: u32 = c.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
            if major < 12 {
                CheckResult::warn(G, "driver / CUDA", format!("driver {d}, CUDA {c}"), "gpubench's CUDA build needs a driver with CUDA 12 or newer: upgrade the driver")
            } else {
                CheckResult::pass(G, "driver / CUDA", format!("driver {d}, CUDA {c}"))
            }
        }
        (Err(e), _) | (_, Err(e)) => CheckResult::warn(G, "driver / CUDA", format!("cannot read the versions: {e}"), "check nvidia-smi"),
    }
}

/// Free memory per GPU, gathered while checking each one.
#[derive(Default)]
struct FreeMemory {
    /// `GPU i: X of Y free`, for every GPU that could be read.
    lines: Vec<String>,
    /// The GPUs with less free than asked.
    short: Vec<String>,
}

/// One GPU: what it is, what would stop or skew a benchmark on it, and its free memory.
fn gpu_check(gpus: &mut dyn GpuApi, i: u32, min_vram_gib: Option<f64>, free: &mut FreeMemory) -> CheckResult {
    let name = format!("GPU {i}");
    let info = match gpus.static_info(i) {
        Ok(s) => s,
        Err(e) => return CheckResult::fail(G, name, format!("cannot be read: {e}"), "check nvidia-smi; the GPU may need a reset (nvidia-smi -r)"),
    };
    let reading = gpus.read(i);
    let mut detail = describe_gpu(&info);
    let mut problems = setting_problems(&info, i);
    match &reading {
        Ok(r) => {
            let procs: Vec<String> = r
                .processes
                .iter()
                .map(|p| match p.used_memory_bytes {
                    Some(b) => format!("pid {} ({})", p.pid, gib(b)),
                    None => format!("pid {}", p.pid),
                })
                .collect();
            if procs.is_empty() {
                detail.push_str(", no processes");
            } else {
                detail.push_str(&format!(", in use by {}", procs.join(", ")));
                problems.push((false, "other processes on the GPU skew measurements: stop them first".into()));
            }
            let total = r.memory_total_bytes.unwrap_or(info.memory_total_bytes);
            let left = total.saturating_sub(r.memory_used_bytes.unwrap_or(0));
            free.lines.push(format!("GPU {i}: {} of {} free", gib(left), gib(total)));
            if let Some(min) = min_vram_gib {
                if (left as f64) < min * (1u64 << 30) as f64 {
                    free.short.push(format!("GPU {i} has {} free, under {min} GiB", gib(left)));
                }
            }
        }
        Err(e) => problems.push((true, format!("the GPU cannot be read ({e}): check nvidia-smi; reset it (nvidia-smi -r) or reboot"))),
    }
    match problems.iter().find(|(f, _)| *f).or(problems.first()) {
        None => CheckResult::pass(G, name, detail),
        Some((true, _)) => CheckResult::fail(G, name, detail, join_fixes(&problems)),
        Some((false, _)) => CheckResult::warn(G, name, detail, join_fixes(&problems)),
    }
}

/// Name, UUID, memory, compute capability, MIG, compute mode and ECC errors.
fn describe_gpu(info: &GpuStatic) -> String {
    let mut detail = format!("{}, {}, {}", info.name, info.uuid, gib(info.memory_total_bytes));
    if let Some(cc) = &info.compute_capability {
        detail.push_str(&format!(", compute {cc}"));
    }
    if let Some(mig) = info.mig_enabled {
        detail.push_str(if mig { ", MIG on" } else { ", MIG off" });
    }
    if let Some(mode) = &info.compute_mode {
        detail.push_str(&format!(", compute mode {mode}"));
    }
    if let Some(ecc) = info.ecc_uncorrected {
        detail.push_str(&format!(", {ecc} uncorrected ECC errors"));
    }
    detail
}

/// What the GPU's compute mode and ECC counters stand in the way of: (is failure, fix).
fn setting_problems(info: &GpuStatic, i: u32) -> Vec<(bool, String)> {
    let mut problems = Vec::new();
    if info.compute_mode.as_deref() == Some("Prohibited") {
        problems.push((true, format!("compute mode is Prohibited: no CUDA context can run; set it back with nvidia-smi -i {i} -c DEFAULT")));
    } else if info.compute_mode.as_deref().is_some_and(|m| m.starts_with("Exclusive")) {
        problems.push((false, format!("an exclusive compute mode lets one process use the GPU: for sharing, nvidia-smi -i {i} -c DEFAULT")));
    }
    if info.ecc_uncorrected.is_some_and(|e| e > 0) {
        problems.push((false, "uncorrected ECC errors: reset the GPU (nvidia-smi -r) or ask the provider to replace it".into()));
    }
    problems
}

/// Free memory on every GPU, against `--min-vram-gib` when given.
fn free_memory_check(free: &FreeMemory, min_vram_gib: Option<f64>) -> CheckResult {
    if !free.short.is_empty() {
        return CheckResult::fail(
            G,
            "free GPU memory",
            free.short.join("; "),
            "stop the processes holding GPU memory, pick another GPU (--device), or use a smaller model",
        );
    }
    let free_detail = free.lines.join("; ");
    match min_vram_gib {
        Some(min) => CheckResult::pass(G, "free GPU memory", format!("{free_detail} (at least {min} GiB asked)")),
        None => CheckResult::pass(G, "free GPU memory", free_detail),
    }
}

fn join_fixes(problems: &[(bool, String)]) -> String {
    problems.iter().map(|(_, f)| f.as_str()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;
    use crate::device::RecordedGpus;

    const SMI_H100: &str = include_str!("../../fixtures/tools/nvidia-smi-query-h100.csv");

    #[test]
    fn nvidia_smi_query_output_parses() {
        let g = parse_smi(SMI_H100).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(g[0].memory_total_mib, 81559);
        assert_eq!(g[0].driver_version, "580.95.05");
        assert!(parse_smi("0, x\n").unwrap_err().contains("unexpected nvidia-smi line"));
    }

    #[test]
    fn a_recorded_h100_passes_with_its_facts() {
        let mut gpus = RecordedGpus::from_fixture_text(include_str!("../../fixtures/gpu/h100-recording.json")).unwrap();
        let smi = Smi::Gpus(parse_smi(SMI_H100).unwrap());
        let checks = checks_with_nvml(&mut gpus, Some(40.0), &smi);
        let by = |n: &str| checks.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!(by("NVML").status, Status::Pass);
        assert_eq!(by("nvidia-smi").status, Status::Pass);
        assert_eq!(by("driver / CUDA").detail, "driver 580.95.05, CUDA 13.0");
        let g0 = by("GPU 0");
        assert_eq!(g0.status, Status::Pass, "{g0:?}");
        assert!(g0.detail.contains("compute 9.0, MIG off, compute mode Default"), "{}", g0.detail);
        assert_eq!(by("free GPU memory").status, Status::Pass);
    }

    #[test]
    fn too_little_free_memory_fails_with_a_fix() {
        let mut gpus = RecordedGpus::from_fixture_text(include_str!("../../fixtures/gpu/h100-recording.json")).unwrap();
        let checks = checks_with_nvml(&mut gpus, Some(100.0), &Smi::NotFound);
        let free = checks.iter().find(|c| c.name == "free GPU memory").unwrap();
        assert_eq!(free.status, Status::Fail);
        assert!(free.detail.contains("under 100 GiB"), "{}", free.detail);
        assert!(free.fix.as_deref().unwrap().contains("smaller model"));
    }

    #[test]
    fn no_nvml_is_a_clear_failure_and_the_rest_is_skipped() {
        let e = NvmlUnavailable { problem: "NVML not available: libnvidia-ml.so.1 could not be loaded".into(), fix: "install the driver".into() };
        let checks = checks_without_nvml(&e, &Smi::NotFound);
        assert_eq!(checks[0].status, Status::Fail);
        assert_eq!(checks[1].status, Status::Fail, "no nvidia-smi either: no driver");
        assert!(checks[2..].iter().all(|c| c.status == Status::Skip));
        let smi_only = checks_without_nvml(&e, &Smi::Gpus(parse_smi(SMI_H100).unwrap()));
        assert_eq!(smi_only[1].status, Status::Warn);
        assert!(smi_only[1].fix.as_deref().unwrap().contains("GPUBENCH_NVML_LIB"));
    }
}
