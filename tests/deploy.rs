//! Checks of the deployment assets: the Dockerfile, deploy/compose.yaml and the Kubernetes
//! manifests under deploy/. No Docker engine or cluster is needed: manifests are validated
//! offline (kubernetes-validate, strict), the KAI Queue against our own JSON schema, and the
//! rest by reading the files: the GPU-sharing rules, and the same image, port, probes and
//! gpubench flags everywhere.

#[path = "deploy/files.rs"]
mod files;
#[path = "deploy/invocations.rs"]
mod invocations;
#[path = "deploy/pending.rs"]
mod pending;
#[path = "deploy/rules.rs"]
mod rules;

// The checks, by what they look at.
#[path = "deploy/cluster.rs"]
mod cluster;
#[path = "deploy/docker.rs"]
mod docker;
#[path = "deploy/flags.rs"]
mod flags;
#[path = "deploy/validation.rs"]
mod validation;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{json, Value};

use files::{container_argv, containers, manifests, read, root, strings, yaml_documents, Dockerfile, Manifest};
use invocations::{exec_commands, invocations_in, markdown_invocations, Invocation};

/// The image every file runs (the CPU variant adds `-cpu`).
const IMAGE: &str = concat!("gpubench:", env!("CARGO_PKG_VERSION"));
const PORT: &str = "8000";
const READINESS_PATH: &str = "/ready";
const LIVENESS_PATH: &str = "/health";
/// Kubernetes release the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.33";
/// Namespaces the manifests use without creating them: the GPU Operator's, and the one that
/// `runai project create llm-inference` makes.
const EXTERNAL_NAMESPACES: &[&str] = &["gpu-operator", "runai-llm-inference"];
/// MIG profiles of an H100 80GB and how many instances of each fit on one GPU.
const MIG_PROFILES: &[(&str, u64)] = &[("1g.10gb", 7), ("1g.20gb", 4), ("2g.20gb", 3), ("3g.40gb", 2), ("4g.40gb", 1), ("7g.80gb", 1)];

// ---------------------------------------------------------------------------------------------
// Views shared by the checks

/// The http:// URLs of a shell command line, as whole words.
fn urls_in(script: &str) -> Vec<String> {
    invocations::shell_commands(script).into_iter().flatten().filter(|w| w.starts_with("http://")).collect()
}

/// Invocations of gpubench by each Compose service: its entrypoint (or the image's) and its
/// command (or the image's CMD when the entrypoint is the image's).
fn compose_invocations(compose: &Value, df: &Dockerfile) -> Vec<Invocation> {
    let mut found = Vec::new();
    for (name, service) in compose["services"].as_object().expect("services") {
        let words = |v: &Value| strings(v).or_else(|| v.as_str().map(|s| s.split_whitespace().map(str::to_string).collect()));
        let (entrypoint, default_cmd) = match words(&service["entrypoint"]) {
            Some(e) => (e, Vec::new()),
            None => (df.entrypoint(), df.cmd()),
        };
        let argv: Vec<String> = entrypoint.into_iter().chain(words(&service["command"]).unwrap_or(default_cmd)).collect();
        for command in exec_commands(&argv) {
            found.extend(invocations_in(&command, &format!("deploy/compose.yaml service {name}")));
        }
    }
    found
}

/// Environment of a container: its ConfigMaps (envFrom, from the same namespace) and env values.
fn container_env(m: &Manifest, container: &Value, all: &[Manifest]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            let cm = all
                .iter()
                .find(|c| c.kind() == "ConfigMap" && c.name() == name && c.namespace() == m.namespace())
                .unwrap_or_else(|| panic!("{}: ConfigMap '{name}' is not defined in its namespace", m.id()));
            for (k, v) in cm.value["data"].as_object().into_iter().flatten() {
                env.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (var["name"].as_str(), var["value"].as_str()) {
            env.insert(k.to_string(), v.to_string());
        }
    }
    env
}

/// Replaces $(VAR) the way the kubelet does in command and args.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// (manifest, container, its gpubench invocations with $(VAR) expanded) for every container.
fn container_invocations(all: &[Manifest], df: &Dockerfile) -> Vec<(Manifest, Value, Vec<Invocation>)> {
    let mut out = Vec::new();
    for m in all {
        let Some((_, spec)) = m.pod() else { continue };
        for c in containers(spec) {
            let env = container_env(m, c, all);
            let argv: Vec<String> = container_argv(c, df).iter().map(|a| expand(a, &env)).collect();
            let source = format!("{} container {}", m.id(), c["name"].as_str().unwrap_or("?"));
            let found = exec_commands(&argv).iter().flat_map(|cmd| invocations_in(cmd, &source)).collect();
            out.push((m.clone(), c.clone(), found));
        }
    }
    out
}

fn servers(all: &[Manifest], df: &Dockerfile) -> Vec<(Manifest, Value, Invocation)> {
    container_invocations(all, df)
        .into_iter()
        .filter_map(|(m, c, inv)| inv.into_iter().find(|i| i.subcommand == "serve").map(|i| (m, c, i)))
        .collect()
}
