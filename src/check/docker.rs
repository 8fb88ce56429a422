//! Bare-metal checks: Docker, its `nvidia` runtime (`docker info`), the NVIDIA
//! Container Toolkit CLI (`nvidia-ctk`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::tools::{self, ToolError};
use super::{CheckResult, Group};

const B: Group = Group::BareMetal;
const TOOLKIT_FIX: &str = "install the NVIDIA Container Toolkit (package nvidia-container-toolkit), then \
                           sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker";

/// The parts of `docker info --format '{{json .}}'` we read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerInfo {
    #[serde(default)]
    pub server_version: Option<String>,
    #[serde(default)]
    pub runtimes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub default_runtime: Option<String>,
    #[serde(default, rename = "CDISpecDirs")]
    pub cdi_spec_dirs: Option<Vec<String>>,
    #[serde(default)]
    pub server_errors: Option<Vec<String>>,
}

pub fn parse_docker_info(text: &str) -> Result<DockerInfo, String> {
    serde_json::from_str(text.trim()).map_err(|e| format!("docker info did not print JSON ({e})"))
}

/// The runtime check from a parsed `docker info`.
pub fn runtime_check(info: &DockerInfo) -> CheckResult {
    let name = "docker nvidia runtime";
    if let Some(err) = info.server_errors.as_ref().and_then(|e| e.first()) {
        return CheckResult::fail(
            B,
            name,
            format!("the Docker daemon is not reachable: {err}"),
            "start it (sudo systemctl start docker) or add your user to the docker group",
        );
    }
    if info.server_version.as_deref().is_none_or(str::is_empty) {
        // Newer clients print the JSON with empty server fields (and the error on stderr).
        return CheckResult::fail(
            B,
            name,
            "the Docker daemon is not reachable: docker info reports no server",
            "start it (sudo systemctl start docker) or add your user to the docker group",
        );
    }
    let runtimes: Vec<&str> = info.runtimes.iter().flat_map(|r| r.keys()).map(String::as_str).collect();
    let default = info.default_runtime.as_deref().unwrap_or("?");
    let server = info.server_version.as_deref().unwrap_or("?");
    let listed = format!("Docker {server}, runtimes {} (default {default})", runtimes.join(", "));
    if runtimes.contains(&"nvidia") {
        CheckResult::pass(B, name, listed)
    } else if info.cdi_spec_dirs.as_ref().is_some_and(|d| !d.is_empty()) {
        CheckResult::warn(
            B,
            name,
            format!("{listed}; no nvidia runtime (CDI is on: --device nvidia.com/gpu=all may work)"),
            TOOLKIT_FIX,
        )
    } else {
        CheckResult::fail(B, name, format!("{listed}; no nvidia runtime: containers cannot see the GPU"), TOOLKIT_FIX)
    }
}

fn first_line(s: &str) -> String {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string()
}

pub async fn checks() -> Vec<CheckResult> {
    let mut out = Vec::new();
    match tools::run("docker", &["--version"]).await {
        Ok(v) if v.success => out.push(CheckResult::pass(B, "docker", first_line(&v.stdout))),
        Ok(v) => out.push(CheckResult::fail(B, "docker", format!("docker --version fails: {}", v.first_error_line()), "reinstall Docker Engine")),
        Err(ToolError::NotFound) => {
            out.push(CheckResult::fail(B, "docker", "not on PATH", "install Docker Engine to run the bare-metal phase in a container"));
            out.push(CheckResult::skip(B, "docker nvidia runtime", "needs docker"));
        }
        Err(e) => out.push(CheckResult::fail(B, "docker", format!("cannot run docker: {e:?}"), "check the docker installation")),
    }
    if out.len() == 1 {
        out.push(match tools::run("docker", &["info", "--format", "{{json .}}"]).await {
            Ok(o) => match parse_docker_info(&o.stdout) {
                Ok(info) => runtime_check(&info),
                Err(e) if o.success => CheckResult::fail(B, "docker nvidia runtime", e, "check the docker installation"),
                Err(_) => CheckResult::fail(
                    B,
                    "docker nvidia runtime",
                    format!("docker info fails: {}", o.first_error_line()),
                    "start the daemon (sudo systemctl start docker) or add your user to the docker group",
                ),
            },
            Err(e) => CheckResult::fail(B, "docker nvidia runtime", format!("docker info did not run: {e:?}"), "check the docker installation"),
        });
    }
    out.push(match tools::run("nvidia-ctk", &["--version"]).await {
        Ok(v) if v.success => CheckResult::pass(B, "nvidia-ctk", first_line(&v.stdout)),
        Ok(v) => CheckResult::fail(B, "nvidia-ctk", format!("nvidia-ctk --version fails: {}", v.first_error_line()), TOOLKIT_FIX),
        Err(ToolError::NotFound) => CheckResult::fail(B, "nvidia-ctk", "not on PATH: the NVIDIA Container Toolkit is not installed", TOOLKIT_FIX),
        Err(e) => CheckResult::fail(B, "nvidia-ctk", format!("cannot run nvidia-ctk: {e:?}"), TOOLKIT_FIX),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_without_a_daemon_is_named() {
        let info =
            parse_docker_info(r#"{"ServerVersion":"","Runtimes":null,"DefaultRuntime":"","ClientInfo":{"Version":"28.2.2"}}"#)
                .unwrap();
        let c = runtime_check(&info);
        assert!(c.detail.contains("daemon is not reachable"), "{}", c.detail);
    }
    use crate::check::Status;

    #[test]
    fn docker_info_with_the_nvidia_runtime_passes() {
        let info = parse_docker_info(include_str!("../../fixtures/tools/docker-info-nvidia.json")).unwrap();
        let c = runtime_check(&info);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert_eq!(c.detail, "Docker 27.3.1, runtimes io.containerd.runc.v2, nvidia, runc (default runc)");
    }

    #[test]
    fn docker_info_without_it_fails_with_the_toolkit_fix() {
        let info = parse_docker_info(include_str!("../../fixtures/tools/docker-info-plain.json")).unwrap();
        let c = runtime_check(&info);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("nvidia-ctk runtime configure"));
    }

    #[test]
    fn an_unreachable_daemon_says_so() {
        let info = parse_docker_info(include_str!("../../fixtures/tools/docker-info-daemon-down.json")).unwrap();
        let c = runtime_check(&info);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("Cannot connect to the Docker daemon"), "{}", c.detail);
    }

    #[test]
    fn non_json_is_an_error_not_a_panic() {
        assert!(parse_docker_info("Client: Docker Engine").is_err());
    }
}
