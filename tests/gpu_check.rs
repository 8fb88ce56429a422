//! `gpubench gpu-check` run for real: NVML is pointed at a library that does not exist
//! (so the no-GPU path runs everywhere), and docker, nvidia-ctk, nvidia-smi and kubectl
//! are fake executables, first and only on PATH, that print recorded outputs.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// A folder of fake tools. Each script answers by its arguments with a recorded file.
struct FakeTools {
    dir: tempfile::TempDir,
}

impl FakeTools {
    fn new() -> Self {
        FakeTools { dir: tempfile::tempdir().unwrap() }
    }

    /// `cases`: (shell `case` pattern on "$*", exit status, file printed on stdout or text on stderr).
    fn tool(&self, name: &str, cases: &[(&str, i32, Answer)]) -> &Self {
        let mut script = String::from("#!/bin/sh\ncase \"$*\" in\n");
        for (pattern, status, answer) in cases {
            let body = match answer {
                Answer::File(f) => format!("/bin/cat '{}'", fixture(f).display()),
                Answer::Stdout(t) => format!("printf '%s\\n' '{t}'"),
                Answer::Stderr(t) => format!("printf '%s\\n' '{t}' >&2"),
            };
            // The literal part quoted (it may hold spaces), a trailing `*` left as a glob.
            let (literal, glob) = match pattern.strip_suffix('*') {
                Some(l) => (l, "*"),
                None => (*pattern, ""),
            };
            script.push_str(&format!("  '{literal}'{glob}) {body}; exit {status} ;;\n"));
        }
        script.push_str("  *) echo \"fake $0: unexpected arguments: $*\" >&2; exit 99 ;;\nesac\n");
        let path = self.dir.path().join(name);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    fn docker_with_nvidia(&self) -> &Self {
        self.tool("docker", &[("--version", 0, Answer::Stdout("Docker version 27.3.1, build ce12230")), ("info*", 0, Answer::File("tools/docker-info-nvidia.json"))])
            .tool("nvidia-ctk", &[("--version", 0, Answer::Stdout("NVIDIA Container Toolkit CLI version 1.17.3"))])
    }

    fn kubectl_cluster(&self) -> &Self {
        self.tool(
            "kubectl",
            &[
                ("version*", 0, Answer::File("tools/kubectl-version-client.json")),
                ("config current-context", 0, Answer::Stdout("gpu-lab")),
                ("get nodes*", 0, Answer::File("tools/kubectl-get-nodes.json")),
                ("get clusterpolicies.nvidia.com*", 0, Answer::File("tools/kubectl-get-clusterpolicies.json")),
                ("get configmap time-slicing-config -n gpu-operator*", 0, Answer::File("tools/kubectl-get-configmap-time-slicing.json")),
                ("get namespaces*", 0, Answer::File("tools/kubectl-get-namespaces.json")),
                ("get queues.scheduling.run.ai*", 0, Answer::File("tools/kubectl-get-queues.json")),
            ],
        )
    }

    fn command(&self, home: &Path) -> Command {
        let mut cmd = Command::cargo_bin("gpubench").unwrap();
        cmd.env_clear()
            .env("PATH", self.dir.path())
            .env("HOME", home)
            .env("HF_HUB_CACHE", home.join("hub"))
            .env("GPUBENCH_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
            .arg("gpu-check");
        cmd
    }
}

enum Answer {
    File(&'static str),
    Stdout(&'static str),
    Stderr(&'static str),
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// The table without what differs between machines: the RAM and disk rows (their
/// numbers, and whether they warn) and the PASS/WARN counts that follow from them.
fn stable(table: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in table.lines() {
        let cells: Vec<&str> = line.split(['│', '┆']).map(str::trim).collect();
        let is_row_start = cells.len() > 2 && !cells[1].is_empty();
        if is_row_start {
            skipping = cells[1] == "host" && (cells[2] == "RAM" || cells[2] == "disk for models");
            if skipping {
                out.push(format!("│ host ┆ {} ┆ [machine-specific] │", cells[2]));
                continue;
            }
        } else if skipping && cells.len() > 2 {
            continue;
        } else {
            skipping = false;
        }
        out.push(line.to_string());
    }
    regex_lite_counts(&out.join("\n"))
}

/// `12 PASS, 3 WARN,` becomes `[N] PASS, [N] WARN,` on the last line.
fn regex_lite_counts(text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if let Some(last) = lines.last_mut() {
        if let Some(pos) = last.find(" WARN, ") {
            *last = format!("[N] PASS, [N] WARN, {}", &last[pos + 7..]);
        }
    }
    lines.join("\n")
}

#[test]
fn without_nvml_the_gpu_fails_clearly_and_every_other_check_runs() {
    let tools = FakeTools::new();
    tools.docker_with_nvidia();
    let home = tempfile::tempdir().unwrap();
    let out = tools.command(home.path()).args(["--phase", "bare-metal"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a FAIL exits 3: {}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    insta::assert_snapshot!("gpu_check_no_nvml_bare_metal", stable(&table));
}

#[test]
fn json_says_what_failed_and_how_to_fix_it() {
    let tools = FakeTools::new();
    tools.docker_with_nvidia();
    let home = tempfile::tempdir().unwrap();
    let out = tools.command(home.path()).args(["--phase", "bare-metal", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let r = json_of(&out);
    assert_eq!(r["ready"], false);
    let nvml = check(&r, "NVML");
    assert_eq!(nvml["status"], "FAIL");
    assert!(nvml["detail"].as_str().unwrap().contains("/nonexistent/libnvidia-ml.so.1 could not be loaded"), "{nvml}");
    assert!(nvml["fix"].as_str().unwrap().contains("NVIDIA GPU and its driver installed"), "{nvml}");
    assert_eq!(check(&r, "docker nvidia runtime")["status"], "PASS");
    assert_eq!(check(&r, "nvidia-ctk")["status"], "PASS");
    assert_eq!(check(&r, "RAM")["status"], "PASS");
    assert_eq!(check(&r, "Hugging Face token")["status"], "WARN");
    assert_eq!(check(&r, "free GPU memory")["status"], "SKIP");
}

#[test]
fn all_phases_with_no_tools_warn_instead_of_failing_on_docker_and_kubectl() {
    let tools = FakeTools::new();
    let home = tempfile::tempdir().unwrap();
    let out = tools.command(home.path()).args(["--json"]).env("HF_TOKEN", "hf_x").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "the GPU still fails");
    let r = json_of(&out);
    assert_eq!(check(&r, "docker")["status"], "WARN");
    assert_eq!(check(&r, "kubectl")["status"], "WARN");
    assert_eq!(check(&r, "GPU nodes")["status"], "SKIP");
    assert_eq!(check(&r, "GPU sharing")["status"], "SKIP");
    assert_eq!(check(&r, "Hugging Face token")["detail"], "found in HF_TOKEN");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hf_x"), "the token never shows");
    assert_eq!(r["counts"]["fail"], 2, "NVML and nvidia-smi: {r:#}");
}

#[test]
fn a_ready_sharing_cluster_passes_its_checks() {
    let tools = FakeTools::new();
    tools.kubectl_cluster();
    let home = tempfile::tempdir().unwrap();
    let out = tools.command(home.path()).args(["--phase", "sharing"]).env("HF_TOKEN", "hf_x").output().unwrap();
    let table = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(out.status.code(), Some(0), "the local GPU only warns in the sharing phase:\n{table}");
    insta::assert_snapshot!("gpu_check_sharing_cluster", stable(&table));
}

#[test]
fn an_unreachable_cluster_fails_and_skips_what_needs_it() {
    let tools = FakeTools::new();
    tools.tool(
        "kubectl",
        &[
            ("version*", 0, Answer::File("tools/kubectl-version-client.json")),
            ("config current-context", 0, Answer::Stdout("gpu-lab")),
            ("get nodes*", 1, Answer::Stderr("Unable to connect to the server: dial tcp 10.0.0.1:6443: i/o timeout")),
        ],
    );
    let home = tempfile::tempdir().unwrap();
    let out = tools.command(home.path()).args(["--phase", "kubernetes", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let r = json_of(&out);
    let cluster = check(&r, "cluster");
    assert_eq!(cluster["status"], "FAIL");
    assert!(cluster["detail"].as_str().unwrap().contains("context gpu-lab does not answer: Unable to connect"), "{cluster}");
    assert_eq!(check(&r, "GPU operator")["status"], "SKIP");
    assert_eq!(check(&r, "NVML")["status"], "WARN", "no local GPU is fine for the kubernetes phase");
}

#[test]
fn docker_without_the_nvidia_runtime_and_a_stopped_daemon() {
    for (fixture_file, expect) in [("tools/docker-info-plain.json", "no nvidia runtime"), ("tools/docker-info-daemon-down.json", "daemon is not reachable")] {
        let tools = FakeTools::new();
        let status = if fixture_file.contains("down") { 1 } else { 0 };
        tools.tool("docker", &[("--version", 0, Answer::Stdout("Docker version 27.3.1, build ce12230")), ("info*", status, Answer::File(fixture_file))]);
        let home = tempfile::tempdir().unwrap();
        let out = tools.command(home.path()).args(["--phase", "bare-metal", "--json"]).output().unwrap();
        let r = json_of(&out);
        let rt = check(&r, "docker nvidia runtime");
        assert_eq!(rt["status"], "FAIL", "{rt}");
        assert!(rt["detail"].as_str().unwrap().contains(expect), "{rt}");
        assert_eq!(check(&r, "nvidia-ctk")["status"], "FAIL", "nvidia-ctk is not on PATH");
    }
}

#[test]
fn a_recorded_h100_and_nvidia_smi_pass_the_gpu_checks() {
    let tools = FakeTools::new();
    tools.docker_with_nvidia().tool("nvidia-smi", &[("--query-gpu*", 0, Answer::File("tools/nvidia-smi-query-h100.csv"))]);
    let home = tempfile::tempdir().unwrap();
    let recording = fixture("gpu/h100-recording.json");
    let out = tools
        .command(home.path())
        .args(["--phase", "bare-metal", "--json", "--min-vram-gib", "40", "--gpu-recording"])
        .arg(&recording)
        .env("HF_TOKEN", "hf_x")
        .output()
        .unwrap();
    let r = json_of(&out);
    assert!(r["gpu_source"].as_str().unwrap().starts_with("recording "), "{r:#}");
    for name in ["NVML", "nvidia-smi", "driver / CUDA", "GPU 0", "free GPU memory", "docker nvidia runtime"] {
        assert_eq!(check(&r, name)["status"], "PASS", "{name}: {r:#}");
    }
    assert!(check(&r, "GPU 0")["detail"].as_str().unwrap().starts_with("NVIDIA H100 80GB HBM3, GPU-5b1a4f7e"));

    let table = tools
        .command(home.path())
        .args(["--phase", "bare-metal", "--min-vram-gib", "40", "--gpu-recording"])
        .arg(&recording)
        .env("HF_TOKEN", "hf_x")
        .output()
        .unwrap();
    assert_eq!(table.status.code(), Some(0), "all PASS or WARN");
    let table = String::from_utf8(table.stdout).unwrap();
    insta::assert_snapshot!("gpu_check_recorded_h100_bare_metal", stable(&table));

    let short = tools.command(home.path()).args(["--phase", "bare-metal", "--json", "--min-vram-gib", "100", "--gpu-recording"]).arg(&recording).output().unwrap();
    assert_eq!(short.status.code(), Some(3));
    assert_eq!(check(&json_of(&short), "free GPU memory")["status"], "FAIL");
}

#[test]
fn a_broken_recording_is_a_usage_error() {
    let tools = FakeTools::new();
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("bad.json");
    std::fs::write(&bad, "{").unwrap();
    let out = tools.command(home.path()).arg("--gpu-recording").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a GPU recording"));
}
