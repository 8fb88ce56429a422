//! `gpubench gpu-check`: is this machine (and its cluster) ready? Each check says PASS,
//! WARN, FAIL or SKIP with a one-line detail and, when something is wrong, the fix.
//! Without a GPU every other check still runs and the GPU check fails with what to do.

mod docker;
mod gpu;
mod host;
mod kube;
mod render;
pub mod tools;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use schemars::JsonSchema;
use serde::Serialize;

use crate::device::{self, GpuApi};
use crate::ExitStatus;

pub use render::render_table;

pub const AFTER_HELP: &str = "\
Phases: bare-metal adds Docker and the NVIDIA Container Toolkit. kubernetes adds kubectl, the cluster's GPU nodes, the GPU Operator and time-slicing. sharing adds those and the KAI or Run:AI scheduler, its queues and a GPU sharing mechanism. all runs everything (a missing docker or kubectl then only warns).

Exit status 3 when any check FAILs. NVML is loaded from libnvidia-ml.so.1, or from the file named by GPUBENCH_NVML_LIB.";

#[derive(Args, Debug, Clone)]
pub struct GpuCheckArgs {
    /// Which checks to run besides the GPU and host ones.
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,
    /// Fail when a GPU has less free memory than this, in GiB.
    #[arg(long, value_name = "N")]
    pub min_vram_gib: Option<f64>,
    /// Where models go (default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub).
    #[arg(long, value_name = "PATH")]
    pub model_dir: Option<PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read the GPU facts from an NVML recording (JSON) instead of NVML, for demos and tests.
    #[arg(long, value_name = "FILE", hide = true)]
    pub gpu_recording: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    All,
    BareMetal,
    Kubernetes,
    Sharing,
}

impl Phase {
    fn includes(self, group: Group) -> bool {
        matches!(
            (self, group),
            (_, Group::Gpu | Group::Host)
                | (Phase::All, _)
                | (Phase::BareMetal, Group::BareMetal)
                | (Phase::Kubernetes, Group::Kubernetes)
                | (Phase::Sharing, Group::Kubernetes | Group::Sharing)
        )
    }

    /// The GPUs of the kubernetes and sharing phases are in the cluster, not here.
    fn needs_local_gpu(self) -> bool {
        matches!(self, Phase::All | Phase::BareMetal)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    Gpu,
    Host,
    BareMetal,
    Kubernetes,
    Sharing,
}

impl Group {
    pub fn label(self) -> &'static str {
        match self {
            Group::Gpu => "gpu",
            Group::Host => "host",
            Group::BareMetal => "bare-metal",
            Group::Kubernetes => "kubernetes",
            Group::Sharing => "sharing",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CheckResult {
    pub group: Group,
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do, when the status is not PASS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckResult {
    pub fn pass(group: Group, name: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckResult { group, name: name.into(), status: Status::Pass, detail: detail.into(), fix: None }
    }
    pub fn warn(group: Group, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        CheckResult { group, name: name.into(), status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    pub fn fail(group: Group, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        CheckResult { group, name: name.into(), status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
    pub fn skip(group: Group, name: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckResult { group, name: name.into(), status: Status::Skip, detail: detail.into(), fix: None }
    }
    /// FAIL becomes WARN: for tools that an `all` run does not require.
    fn soften(mut self) -> Self {
        if self.status == Status::Fail {
            self.status = Status::Warn;
        }
        self
    }
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

/// What `gpu-check --json` prints.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CheckReport {
    pub schema_version: u32,
    pub phase: Phase,
    /// `NVML`, a recording, or null where NVML did not load.
    pub gpu_source: Option<String>,
    pub ready: bool,
    pub counts: Counts,
    pub checks: Vec<CheckResult>,
}

impl CheckReport {
    pub fn new(phase: Phase, gpu_source: Option<String>, checks: Vec<CheckResult>) -> Self {
        let mut counts = Counts::default();
        for c in &checks {
            match c.status {
                Status::Pass => counts.pass += 1,
                Status::Warn => counts.warn += 1,
                Status::Fail => counts.fail += 1,
                Status::Skip => counts.skip += 1,
            }
        }
        CheckReport { schema_version: crate::report::SCHEMA_VERSION, phase, gpu_source, ready: counts.fail == 0, counts, checks }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Usage(String),
}

impl crate::Failure for CheckError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Usage
    }
}

/// Runs every check the phase asks for, in order.
pub async fn run_checks(args: &GpuCheckArgs) -> Result<CheckReport, CheckError> {
    let phase = args.phase;
    let mut checks = Vec::new();

    // GPU: NVML (or a recording), then nvidia-smi as a second witness.
    let gpus: Result<Box<dyn GpuApi>, device::NvmlUnavailable> = match &args.gpu_recording {
        Some(path) => Ok(Box::new(device::RecordedGpus::load(path).map_err(CheckError::Usage)?)),
        None => device::open_nvml().map(|g| Box::new(g) as Box<dyn GpuApi>),
    };
    let smi = gpu::nvidia_smi().await;
    let gpu_source = gpus.as_ref().ok().map(|g| g.origin());
    let mut gpu_checks = match gpus {
        Ok(mut g) => gpu::checks_with_nvml(g.as_mut(), args.min_vram_gib, &smi),
        Err(e) => gpu::checks_without_nvml(&e, &smi),
    };
    if !phase.needs_local_gpu() {
        for c in &mut gpu_checks {
            if c.status == Status::Fail {
                c.status = Status::Warn;
                c.detail.push_str(" (the kubernetes and sharing phases use the cluster's GPUs)");
            }
        }
    }
    checks.extend(gpu_checks);

    checks.extend(host::checks(args.model_dir.as_deref()));

    if phase.includes(Group::BareMetal) {
        let soft = phase == Phase::All;
        checks.extend(docker::checks().await.into_iter().map(|c| if soft { c.soften() } else { c }));
    }
    if phase.includes(Group::Kubernetes) {
        let soft = phase == Phase::All;
        let with_sharing = phase.includes(Group::Sharing);
        checks.extend(kube::checks(with_sharing).await.into_iter().map(|c| if soft { c.soften() } else { c }));
    }
    Ok(CheckReport::new(phase, gpu_source, checks))
}

/// Runs the command line: the table (or JSON) on stdout, exit 3 when a check fails.
pub async fn run_cli(args: GpuCheckArgs, _quiet: bool) -> Result<ExitStatus, CheckError> {
    let report = run_checks(&args).await?;
    let text = if args.json { serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into()) } else { render_table(&report) };
    crate::metrics::print_stdout(&text);
    Ok(if report.ready { ExitStatus::Success } else { ExitStatus::CheckFailed })
}

/// `1.5 GiB` from bytes.
pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_include_their_groups() {
        assert!(Phase::Sharing.includes(Group::Kubernetes));
        assert!(!Phase::BareMetal.includes(Group::Kubernetes));
        assert!(Phase::All.includes(Group::BareMetal));
        assert!(Phase::Kubernetes.includes(Group::Gpu));
        assert!(!Phase::Kubernetes.needs_local_gpu());
    }

    #[test]
    fn counts_and_readiness() {
        let r = CheckReport::new(
            Phase::All,
            None,
            vec![
                CheckResult::pass(Group::Host, "RAM", "ok"),
                CheckResult::fail(Group::Gpu, "NVML", "missing", "install"),
                CheckResult::skip(Group::Gpu, "GPUs", "needs NVML"),
            ],
        );
        assert!(!r.ready);
        assert_eq!((r.counts.pass, r.counts.fail, r.counts.skip), (1, 1, 1));
        assert_eq!(CheckResult::fail(Group::Host, "x", "y", "z").soften().status, Status::Warn);
    }
}
