//! Kubernetes and sharing checks, through `kubectl`: the current context answers, nodes
//! offer `nvidia.com/gpu` (or MIG slices), the GPU Operator's ClusterPolicy is ready,
//! its device-plugin time-slicing config; then the KAI or Run:AI scheduler, its
//! queues, and whether any GPU sharing mechanism is on.

use serde_json::Value;

use super::tools::{self, ToolError, ToolOutput};
use super::{CheckResult, Group};

const K: Group = Group::Kubernetes;
const S: Group = Group::Sharing;
/// Where the GPU Operator keeps its ConfigMaps by default.
pub const GPU_OPERATOR_NAMESPACE: &str = "gpu-operator";
const OPERATOR_FIX: &str = "install the NVIDIA GPU Operator with Helm (chart gpu-operator, namespace gpu-operator) and wait for its pods";

/// GPU resources one node offers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeGpus {
    pub name: String,
    pub ready: bool,
    /// Allocatable `nvidia.com/gpu` (time-sliced replicas included).
    pub gpus: u64,
    /// Allocatable MIG slices, e.g. (`nvidia.com/mig-1g.10gb`, 7).
    pub mig: Vec<(String, u64)>,
    /// GPU Feature Discovery labels.
    pub product: Option<String>,
    pub physical: Option<u64>,
    pub replicas: Option<u64>,
    pub sharing_strategy: Option<String>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

fn num(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Parses `kubectl get nodes -o json`.
pub fn parse_nodes(text: &str) -> Result<Vec<NodeGpus>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("kubectl get nodes did not print JSON ({e})"))?;
    let items = v.get("items").and_then(Value::as_array).ok_or("kubectl get nodes printed no items")?;
    Ok(items
        .iter()
        .map(|n| {
            let labels = n.pointer("/metadata/labels");
            let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str).map(str::to_string);
            let alloc = n.pointer("/status/allocatable").and_then(Value::as_object);
            let mut mig: Vec<(String, u64)> = alloc
                .map(|a| {
                    a.iter()
                        .filter(|(k, _)| k.starts_with("nvidia.com/mig-"))
                        .filter_map(|(k, v)| num(v).map(|n| (k.clone(), n)))
                        .filter(|(_, n)| *n > 0)
                        .collect()
                })
                .unwrap_or_default();
            mig.sort();
            let ready = n
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|c| str_at(c, &["type"]) == Some("Ready") && str_at(c, &["status"]) == Some("True")));
            NodeGpus {
                name: str_at(n, &["metadata", "name"]).unwrap_or("?").to_string(),
                ready,
                gpus: alloc.and_then(|a| a.get("nvidia.com/gpu")).and_then(num).unwrap_or(0),
                mig,
                product: label("nvidia.com/gpu.product"),
                physical: label("nvidia.com/gpu.count").and_then(|c| c.parse().ok()),
                replicas: label("nvidia.com/gpu.replicas").and_then(|c| c.parse().ok()),
                sharing_strategy: label("nvidia.com/gpu.sharing-strategy"),
            }
        })
        .collect())
}

/// What the GPU Operator's ClusterPolicy says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterPolicy {
    pub name: String,
    pub state: String,
    /// The device plugin's ConfigMap (time-slicing), and its default key.
    pub device_plugin_config: Option<(String, Option<String>)>,
    pub mig_strategy: Option<String>,
}

/// Parses `kubectl get clusterpolicies.nvidia.com -o json` (a list).
pub fn parse_cluster_policies(text: &str) -> Result<Vec<ClusterPolicy>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let items = v.get("items").and_then(Value::as_array).ok_or("no items")?;
    Ok(items
        .iter()
        .map(|p| ClusterPolicy {
            name: str_at(p, &["metadata", "name"]).unwrap_or("?").into(),
            state: str_at(p, &["status", "state"]).unwrap_or("unknown").into(),
            device_plugin_config: str_at(p, &["spec", "devicePlugin", "config", "name"])
                .filter(|n| !n.is_empty())
                .map(|n| (n.to_string(), str_at(p, &["spec", "devicePlugin", "config", "default"]).filter(|d| !d.is_empty()).map(str::to_string))),
            mig_strategy: str_at(p, &["spec", "mig", "strategy"]).map(str::to_string),
        })
        .collect())
}

/// Time-slicing replicas per config key of the device plugin's ConfigMap
/// (`kubectl get configmap NAME -o json`; each value is the plugin's YAML config).
pub fn parse_time_slicing(text: &str) -> Result<Vec<(String, Vec<u64>)>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let data = v.get("data").and_then(Value::as_object).ok_or("the ConfigMap has no data")?;
    let mut out = Vec::new();
    for (key, yaml) in data {
        let Some(yaml) = yaml.as_str() else { continue };
        if !yaml.contains("timeSlicing") {
            out.push((key.clone(), Vec::new()));
            continue;
        }
        let replicas = yaml
            .lines()
            .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("replicas:"))
            .filter_map(|r| r.trim().trim_matches('"').parse().ok())
            .collect();
        out.push((key.clone(), replicas));
    }
    Ok(out)
}

/// A KAI / Run:AI queue (`scheduling.run.ai/v2` `Queue`).
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    pub parent: Option<String>,
    pub gpu_quota: Option<f64>,
}

pub fn parse_queues(text: &str) -> Result<Vec<Queue>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let items = v.get("items").and_then(Value::as_array).ok_or("no items")?;
    Ok(items
        .iter()
        .map(|q| Queue {
            name: str_at(q, &["metadata", "name"]).unwrap_or("?").into(),
            parent: str_at(q, &["spec", "parentQueue"]).filter(|p| !p.is_empty()).map(str::to_string),
            gpu_quota: q.pointer("/spec/resources/gpu/quota").and_then(Value::as_f64),
        })
        .collect())
}

/// Namespace names from `kubectl get namespaces -o json`.
pub fn parse_namespaces(text: &str) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let items = v.get("items").and_then(Value::as_array).ok_or("no items")?;
    Ok(items.iter().filter_map(|n| str_at(n, &["metadata", "name"])).map(str::to_string).collect())
}

async fn kubectl(args: &[&str]) -> Result<ToolOutput, String> {
    match tools::run("kubectl", args).await {
        Ok(o) => Ok(o),
        Err(ToolError::NotFound) => Err("kubectl is not on PATH".into()),
        Err(ToolError::TimedOut) => Err(format!("kubectl {} did not answer in {} s", args.join(" "), tools::TOOL_TIMEOUT.as_secs())),
        Err(ToolError::Spawn(e)) => Err(format!("cannot run kubectl: {e}")),
    }
}

/// `kubectl get ... -o json`: the JSON text, or `Err(None)` when the resource type does
/// not exist in the cluster (CRD not installed), `Err(Some(message))` on other errors.
async fn get_json(args: &[&str]) -> Result<String, Option<String>> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--request-timeout=10s"]);
    let out = kubectl(&all).await.map_err(Some)?;
    if out.success {
        return Ok(out.stdout);
    }
    let err = out.first_error_line();
    if err.contains("doesn't have a resource type") || err.contains("could not find the requested resource") {
        Err(None)
    } else {
        Err(Some(err))
    }
}

fn describe_node(n: &NodeGpus) -> String {
    let mut parts = Vec::new();
    if n.gpus > 0 {
        let mut s = format!("{} nvidia.com/gpu", n.gpus);
        let mut extra = Vec::new();
        if let Some(p) = &n.product {
            extra.push(p.clone());
        }
        if let (Some(phys), Some(rep)) = (n.physical, n.replicas.filter(|r| *r > 1)) {
            extra.push(format!("{phys} physical x{rep} {}", n.sharing_strategy.as_deref().unwrap_or("time-slicing")));
        }
        if !extra.is_empty() {
            s.push_str(&format!(" ({})", extra.join(", ")));
        }
        parts.push(s);
    }
    for (k, v) in &n.mig {
        parts.push(format!("{v} {k}"));
    }
    format!("{}{}: {}", n.name, if n.ready { "" } else { " (not Ready)" }, parts.join(", "))
}

pub async fn checks(with_sharing: bool) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let reached = match kubectl_check().await {
        Ok(pass) => {
            out.push(pass);
            cluster_check().await.map_err(|fail| (fail, "needs a reachable cluster"))
        }
        Err(fail) => Err((fail, "needs kubectl")),
    };
    let nodes = match reached {
        Ok((pass, nodes)) => {
            out.push(pass);
            nodes
        }
        Err((fail, why)) => {
            out.push(fail);
            skip_rest(&mut out, why, with_sharing);
            return out;
        }
    };
    out.push(gpu_nodes_check(&nodes));
    let (operator, policy) = operator_check(nodes.iter().any(offers_gpus)).await;
    out.push(operator);
    let (time_slicing, sliced_configmap) = time_slicing_check(policy.as_ref()).await;
    out.push(time_slicing);
    if with_sharing {
        out.extend(sharing_checks(&nodes, sliced_configmap).await);
    }
    out
}

/// Skips the checks that have not run yet, saying what they need.
fn skip_rest(out: &mut Vec<CheckResult>, why: &str, with_sharing: bool) {
    for name in ["cluster", "GPU nodes", "GPU operator", "time-slicing"] {
        if !out.iter().any(|c: &CheckResult| c.name == name) {
            out.push(CheckResult::skip(K, name, why));
        }
    }
    if with_sharing {
        for name in ["GPU scheduler", "queues", "GPU sharing"] {
            out.push(CheckResult::skip(S, name, why));
        }
    }
}

/// kubectl itself: `Err` holds the failure that stops the other checks.
async fn kubectl_check() -> Result<CheckResult, CheckResult> {
    match kubectl(&["version", "--client", "-o", "json"]).await {
        Ok(o) if o.success => {
            let v: Value = serde_json::from_str(&o.stdout).unwrap_or(Value::Null);
            let version = str_at(&v, &["clientVersion", "gitVersion"]).unwrap_or("version unknown");
            Ok(CheckResult::pass(K, "kubectl", format!("client {version}")))
        }
        Ok(o) => Err(CheckResult::fail(K, "kubectl", format!("kubectl version fails: {}", o.first_error_line()), "reinstall kubectl")),
        Err(e) => Err(CheckResult::fail(K, "kubectl", e, "install kubectl and a kubeconfig for your cluster (KUBECONFIG or ~/.kube/config)")),
    }
}

/// The current context answers, with its nodes: `Err` holds the failure that stops the
/// other checks.
async fn cluster_check() -> Result<(CheckResult, Vec<NodeGpus>), CheckResult> {
    let context = match kubectl(&["config", "current-context"]).await {
        Ok(o) if o.success => o.stdout.trim().to_string(),
        Ok(o) => {
            return Err(CheckResult::fail(K, "cluster", format!("no current context: {}", o.first_error_line()), "pick one: kubectl config use-context NAME"));
        }
        Err(e) => return Err(CheckResult::fail(K, "cluster", e, "check kubectl")),
    };
    let nodes = match get_json(&["nodes"]).await.map_err(|e| e.unwrap_or_else(|| "nodes are not a resource type".into())).and_then(|t| parse_nodes(&t)) {
        Ok(n) => n,
        Err(e) => {
            return Err(CheckResult::fail(
                K,
                "cluster",
                format!("context {context} does not answer: {e}"),
                "check the VPN / API server address and your credentials (kubectl cluster-info)",
            ));
        }
    };
    Ok((CheckResult::pass(K, "cluster", format!("context {context}, {} node(s)", nodes.len())), nodes))
}

/// The nodes offering GPUs or MIG slices.
fn gpu_nodes_check(nodes: &[NodeGpus]) -> CheckResult {
    let gpu_nodes: Vec<&NodeGpus> = nodes.iter().filter(|n| offers_gpus(n)).collect();
    if gpu_nodes.is_empty() {
        return CheckResult::fail(K, "GPU nodes", format!("none of the {} node(s) offers nvidia.com/gpu or MIG slices", nodes.len()), OPERATOR_FIX);
    }
    let detail = format!(
        "{} of {} node(s): {}",
        gpu_nodes.len(),
        nodes.len(),
        gpu_nodes.iter().map(|n| describe_node(n)).collect::<Vec<_>>().join("; ")
    );
    if gpu_nodes.iter().any(|n| !n.ready) {
        CheckResult::warn(K, "GPU nodes", detail, "some GPU nodes are not Ready: kubectl describe node NAME")
    } else {
        CheckResult::pass(K, "GPU nodes", detail)
    }
}
fn offers_gpus(n: &NodeGpus) -> bool {
    n.gpus > 0 || !n.mig.is_empty()
}

/// The GPU Operator's ClusterPolicy; `standalone` when nodes offer GPUs without it.
async fn operator_check(standalone: bool) -> (CheckResult, Option<ClusterPolicy>) {
    match get_json(&["clusterpolicies.nvidia.com"]).await {
        Ok(text) => match parse_cluster_policies(&text) {
            Ok(p) if !p.is_empty() => {
                let p = p[0].clone();
                let mut detail = format!("ClusterPolicy {} is {}", p.name, p.state);
                if let Some(m) = &p.mig_strategy {
                    detail.push_str(&format!(", MIG strategy {m}"));
                }
                let check = if p.state == "ready" {
                    CheckResult::pass(K, "GPU operator", detail)
                } else {
                    CheckResult::fail(
                        K,
                        "GPU operator",
                        detail,
                        "look at the failing operands: kubectl get pods -n gpu-operator, then kubectl logs of the one not Running",
                    )
                };
                (check, Some(p))
            }
            Ok(_) => (CheckResult::fail(K, "GPU operator", "the ClusterPolicy CRD exists but there is no ClusterPolicy", OPERATOR_FIX), None),
            Err(e) => (CheckResult::fail(K, "GPU operator", format!("cannot read the ClusterPolicy: {e}"), OPERATOR_FIX), None),
        },
        Err(None) => {
            let check = if standalone {
                CheckResult::warn(K, "GPU operator", "not installed (GPUs come from a standalone device plugin)", "fine if the device plugin is managed by hand; the operator also runs DCGM exporter for metrics")
            } else {
                CheckResult::fail(K, "GPU operator", "not installed (no clusterpolicies.nvidia.com)", OPERATOR_FIX)
            };
            (check, None)
        }
        Err(Some(e)) => (
            CheckResult::fail(K, "GPU operator", format!("cannot read the ClusterPolicy: {e}"), "check your permissions (kubectl auth can-i get clusterpolicies.nvidia.com)"),
            None,
        ),
    }
}

/// The time-slicing config the ClusterPolicy names; with `ConfigMap NAME` when it
/// time-slices a GPU.
async fn time_slicing_check(policy: Option<&ClusterPolicy>) -> (CheckResult, Option<String>) {
    let Some((name, default)) = policy.and_then(|p| p.device_plugin_config.clone()) else {
        return (CheckResult::skip(K, "time-slicing", "no device-plugin config in the ClusterPolicy: GPUs are not time-sliced"), None);
    };
    match get_json(&["configmap", name.as_str(), "-n", GPU_OPERATOR_NAMESPACE]).await {
        Ok(text) => match parse_time_slicing(&text) {
            Ok(keys) => {
                let described: Vec<String> = keys
                    .iter()
                    .map(|(k, r)| if r.is_empty() { format!("{k}: no time-slicing") } else { format!("{k}: x{}", r.iter().max().unwrap_or(&1)) })
                    .collect();
                let any = keys.iter().any(|(_, r)| r.iter().any(|n| *n > 1));
                let detail = format!(
                    "ConfigMap {GPU_OPERATOR_NAMESPACE}/{name} (default {}): {}",
                    default.as_deref().unwrap_or("none"),
                    described.join(", ")
                );
                (CheckResult::pass(K, "time-slicing", detail), any.then(|| format!("ConfigMap {name}")))
            }
            Err(e) => (CheckResult::warn(K, "time-slicing", format!("ConfigMap {name}: {e}"), "check the ConfigMap's format (version: v1, sharing.timeSlicing.resources)"), None),
        },
        Err(e) => (
            CheckResult::fail(
                K,
                "time-slicing",
                format!("the ClusterPolicy names ConfigMap {name}, which cannot be read: {}", e.unwrap_or_else(|| "not found".into())),
                format!("create it in {GPU_OPERATOR_NAMESPACE} (kubectl create configmap {name} -n {GPU_OPERATOR_NAMESPACE} --from-file=any=time-slicing.yaml)"),
            ),
            None,
        ),
    }
}

/// Sharing: which scheduler, its queues, and whether any sharing mechanism is on.
async fn sharing_checks(nodes: &[NodeGpus], sliced_configmap: Option<String>) -> Vec<CheckResult> {
    let namespaces = match get_json(&["namespaces"]).await {
        Ok(t) => parse_namespaces(&t).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let queues = get_json(&["queues.scheduling.run.ai"]).await;
    let (scheduler, any_scheduler) = scheduler_check(&namespaces, !matches!(queues, Err(None)));
    let mut sliced = nodes.iter().filter(|n| n.replicas.is_some_and(|r| r > 1)).map(|n| format!("{} x{}", n.name, n.replicas.unwrap_or(1))).collect::<Vec<_>>();
    sliced.extend(sliced_configmap);
    vec![scheduler, queues_check(queues), sharing_mechanisms_check(nodes, any_scheduler, &sliced)]
}

/// The KAI scheduler or Run:AI, from their namespaces; with whether either is there.
fn scheduler_check(namespaces: &[String], queue_crd: bool) -> (CheckResult, bool) {
    let kai = namespaces.iter().any(|n| n == "kai-scheduler");
    let runai = namespaces.iter().any(|n| n == "runai");
    let schedulers: Vec<&str> = [(kai, "KAI scheduler (namespace kai-scheduler)"), (runai, "Run:AI (namespace runai)")]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, s)| s)
        .collect();
    if schedulers.is_empty() {
        let check = CheckResult::fail(
            S,
            "GPU scheduler",
            if queue_crd { "the Queue CRD exists but neither the kai-scheduler nor the runai namespace does" } else { "neither KAI scheduler nor Run:AI is installed" },
            "install the KAI scheduler (Helm chart kai-scheduler, namespace kai-scheduler, with global.gpuSharing=true) or Run:AI",
        );
        return (check, false);
    }
    (CheckResult::pass(S, "GPU scheduler", schedulers.join(", ")), true)
}

/// The scheduler's queues, from `get_json(["queues.scheduling.run.ai"])`.
fn queues_check(queues: Result<String, Option<String>>) -> CheckResult {
    match queues {
        Ok(text) => match parse_queues(&text) {
            Ok(q) if !q.is_empty() => {
                let leaves: Vec<String> = q
                    .iter()
                    .filter(|x| !q.iter().any(|y| y.parent.as_deref() == Some(x.name.as_str())))
                    .map(|x| match x.gpu_quota {
                        Some(g) if g < 0.0 => format!("{} (gpu quota unlimited)", x.name),
                        Some(g) => format!("{} (gpu quota {g})", x.name),
                        None => x.name.clone(),
                    })
                    .collect();
                CheckResult::pass(S, "queues", format!("{} queue(s); pods can use {}", q.len(), leaves.join(", ")))
            }
            Ok(_) => CheckResult::fail(
                S,
                "queues",
                "no Queue: pods labelled kai.scheduler/queue or runai/queue will stay Pending",
                "create a leaf Queue (apiVersion scheduling.run.ai/v2, spec.parentQueue, spec.resources.gpu.quota) and label pods with it",
            ),
            Err(e) => CheckResult::warn(S, "queues", format!("cannot read the queues: {e}"), "check kubectl get queues.scheduling.run.ai"),
        },
        Err(None) => CheckResult::fail(S, "queues", "no Queue CRD (queues.scheduling.run.ai)", "install the KAI scheduler or Run:AI, which bring the Queue CRD"),
        Err(Some(e)) => CheckResult::warn(S, "queues", format!("cannot list the queues: {e}"), "check your permissions (kubectl auth can-i list queues.scheduling.run.ai)"),
    }
}

/// Whether any sharing mechanism is on: fractions, time-slicing or MIG.
fn sharing_mechanisms_check(nodes: &[NodeGpus], any_scheduler: bool, sliced: &[String]) -> CheckResult {
    let mut mechanisms = Vec::new();
    if any_scheduler {
        mechanisms.push("GPU fractions (gpu-fraction annotation)".to_string());
    }
    if !sliced.is_empty() {
        mechanisms.push(format!("time-slicing ({})", sliced.join(", ")));
    }
    let mig_nodes: Vec<&str> = nodes.iter().filter(|n| !n.mig.is_empty()).map(|n| n.name.as_str()).collect();
    if !mig_nodes.is_empty() {
        mechanisms.push(format!("MIG ({})", mig_nodes.join(", ")));
    }
    if mechanisms.is_empty() {
        CheckResult::fail(
            S,
            "GPU sharing",
            "no sharing mechanism: each pod gets a whole GPU",
            "turn one on: fractions with KAI/Run:AI, time-slicing (a ConfigMap with sharing.timeSlicing.resources[].replicas named in the ClusterPolicy's devicePlugin.config), or MIG (mig.strategy mixed)",
        )
    } else {
        CheckResult::pass(S, "GPU sharing", mechanisms.join("; "))
    }
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
