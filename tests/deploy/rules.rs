//! The GPU-sharing rules that the KAI and Run:AI schedulers enforce on a pod, checked on a
//! pod template (its `metadata` and `spec` as JSON):
//!
//! - `gpu-fraction` is a number strictly between 0 and 1, written as a string;
//! - a pod with a fraction asks for no whole GPU (`nvidia.com/gpu`, or a MIG profile) in its
//!   requests or limits, and does not also set `gpu-memory`;
//! - fractions are read only by `kai-scheduler` and `runai-scheduler`, and each of them needs its
//!   queue label (`kai.scheduler/queue`, `runai/queue`);
//! - GPU memory is not isolated between the pods of a GPU, so a server given a fraction caps its
//!   own memory (`serve --gpu-memory-fraction`) at no more than that fraction.

use serde_json::Value;

pub const FRACTION_ANNOTATION: &str = "gpu-fraction";
pub const MEMORY_ANNOTATION: &str = "gpu-memory";
pub const MEMORY_FRACTION_FLAG: &str = "--gpu-memory-fraction";

/// Which scheduler places the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    Default,
    Kai,
    RunAi,
}

impl Scheduler {
    pub fn from_name(name: Option<&str>) -> Result<Scheduler, String> {
        match name {
            None | Some("default-scheduler") => Ok(Scheduler::Default),
            Some("kai-scheduler") => Ok(Scheduler::Kai),
            Some("runai-scheduler") => Ok(Scheduler::RunAi),
            Some(other) => Err(format!(
                "unknown schedulerName '{other}': use kai-scheduler, runai-scheduler or leave it unset"
            )),
        }
    }

    /// The pod label naming the queue (KAI) or project (Run:AI).
    pub fn queue_label(self) -> Option<&'static str> {
        match self {
            Scheduler::Default => None,
            Scheduler::Kai => Some("kai.scheduler/queue"),
            Scheduler::RunAi => Some("runai/queue"),
        }
    }
}

/// Parses a `gpu-fraction` value: a finite number in the open interval (0, 1).
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("gpu-fraction '{text}' is not a number: write a decimal such as \"0.5\""))?;
    if !value.is_finite() || value <= 0.0 || value >= 1.0 {
        return Err(format!(
            "gpu-fraction {text} is outside (0, 1): ask for a whole GPU with nvidia.com/gpu instead of a fraction of 1 or more"
        ));
    }
    Ok(value)
}

/// Parses the value of `serve --gpu-memory-fraction`: a number in (0, 1].
pub fn parse_memory_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{MEMORY_FRACTION_FLAG} '{text}' is not a number"))?;
    if !value.is_finite() || value <= 0.0 || value > 1.0 {
        return Err(format!("{MEMORY_FRACTION_FLAG} {text} is outside (0, 1]"));
    }
    Ok(value)
}

/// How many pods of this fraction one GPU holds.
pub fn pods_per_gpu(fraction: f64) -> u32 {
    // A small tolerance so that 3 x 0.33 and 4 x 0.25 count as fitting.
    (1.0 / fraction + 1e-9).floor() as u32
}

/// Whether a resource name is a whole GPU or a MIG instance of one.
pub fn is_gpu_resource(name: &str) -> bool {
    name == "nvidia.com/gpu" || name.starts_with("nvidia.com/mig-")
}

/// Every rule the pod template breaks, as one message each (empty when it follows them all).
pub fn check_pod(metadata: &Value, spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let scheduler = match Scheduler::from_name(spec.get("schedulerName").and_then(Value::as_str)) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    let annotations = metadata.get("annotations");
    let annotation = |key: &str| annotations.and_then(|a| a.get(key));
    let label = |key: &str| metadata.get("labels").and_then(|l| l.get(key)).and_then(Value::as_str);

    let fraction = match annotation(FRACTION_ANNOTATION) {
        None => None,
        Some(Value::String(text)) => match parse_fraction(text) {
            Ok(f) => Some(f),
            Err(e) => {
                problems.push(e);
                None
            }
        },
        Some(other) => {
            problems.push(format!(
                "gpu-fraction must be a string annotation (\"0.5\"), found {other}: quote the value"
            ));
            None
        }
    };
    let has_fraction = annotation(FRACTION_ANNOTATION).is_some();

    if let Some(memory) = annotation(MEMORY_ANNOTATION) {
        let valid = memory.as_str().and_then(|m| m.trim().parse::<u64>().ok()).is_some_and(|m| m > 0);
        if !valid {
            problems.push(format!("gpu-memory {memory} is not a positive number of MiB, e.g. \"4096\""));
        }
        if has_fraction {
            problems.push("gpu-fraction and gpu-memory are both set: keep one of them".to_string());
        }
    }

    if has_fraction || annotation(MEMORY_ANNOTATION).is_some() {
        if scheduler == Scheduler::Default {
            problems.push(
                "a GPU fraction is read only by kai-scheduler or runai-scheduler: set spec.schedulerName".to_string(),
            );
        }
        for (container, resource) in gpu_resources(spec) {
            problems.push(format!(
                "container '{container}' asks for {resource} although the pod has a GPU fraction: remove the GPU from its requests and limits"
            ));
        }
    }

    if let Some(queue_label) = scheduler.queue_label() {
        if label(queue_label).is_none_or(str::is_empty) {
            problems.push(format!("pods placed by {scheduler:?} need the label {queue_label}: set it to the queue or project"));
        }
    }

    for (container, value) in memory_fraction_args(spec) {
        match parse_memory_fraction(&value) {
            Err(e) => problems.push(format!("container '{container}': {e}")),
            Ok(memory) => {
                if let Some(f) = fraction {
                    if memory > f + 1e-9 {
                        problems.push(format!(
                            "container '{container}' may use {memory} of the GPU memory but holds a {f} fraction: memory is not isolated, so pass {MEMORY_FRACTION_FLAG} {f} or less"
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// (container name, resource name) for every GPU resource asked in requests or limits.
pub fn gpu_resources(spec: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for container in containers(spec) {
        let name = container.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        for section in ["requests", "limits"] {
            if let Some(map) = container.pointer(&format!("/resources/{section}")).and_then(Value::as_object) {
                for key in map.keys().filter(|k| is_gpu_resource(k)) {
                    found.push((name.clone(), key.clone()));
                }
            }
        }
    }
    found
}

/// (container name, value) for every `--gpu-memory-fraction` in a container's command or args.
pub fn memory_fraction_args(spec: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for container in containers(spec) {
        let name = container.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        let argv: Vec<&str> = ["command", "args"]
            .iter()
            .filter_map(|k| container.get(*k).and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (i, word) in argv.iter().enumerate() {
            if *word == MEMORY_FRACTION_FLAG {
                found.push((name.clone(), argv.get(i + 1).unwrap_or(&"").to_string()));
            } else if let Some(v) = word.strip_prefix(&format!("{MEMORY_FRACTION_FLAG}=")) {
                found.push((name.clone(), v.to_string()));
            }
        }
    }
    found
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(|k| spec.get(k).and_then(Value::as_array))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kai_pod() -> (Value, Value) {
        (
            json!({"labels": {"kai.scheduler/queue": "gpubench"}, "annotations": {"gpu-fraction": "0.33"}}),
            json!({"schedulerName": "kai-scheduler", "containers": [{
                "name": "server",
                "args": ["--port", "8000", "--gpu-memory-fraction", "0.33"],
                "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi"}}
            }]}),
        )
    }

    #[test]
    fn fraction_must_lie_strictly_between_zero_and_one() {
        assert_eq!(parse_fraction("0.33"), Ok(0.33));
        assert_eq!(parse_fraction(" 0.5 "), Ok(0.5));
        assert!(parse_fraction("0.999").is_ok());
        for bad in ["0", "1", "1.0", "1.5", "-0.2", "", "abc", "NaN", "inf", "33%"] {
            assert!(parse_fraction(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn memory_fraction_may_be_the_whole_device() {
        assert_eq!(parse_memory_fraction("1"), Ok(1.0));
        assert!(parse_memory_fraction("0").is_err());
        assert!(parse_memory_fraction("1.1").is_err());
        assert!(parse_memory_fraction("$(X)").is_err());
    }

    #[test]
    fn pods_per_gpu_counts_whole_pods() {
        assert_eq!(pods_per_gpu(0.33), 3);
        assert_eq!(pods_per_gpu(0.25), 4);
        assert_eq!(pods_per_gpu(0.5), 2);
        assert_eq!(pods_per_gpu(0.34), 2);
        assert_eq!(pods_per_gpu(0.9), 1);
    }

    #[test]
    fn a_well_formed_kai_pod_passes() {
        let (m, s) = kai_pod();
        assert_eq!(check_pod(&m, &s), Vec::<String>::new());
    }

    #[test]
    fn a_fraction_with_a_gpu_limit_is_rejected() {
        let (m, mut s) = kai_pod();
        s["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = json!(1);
        let problems = check_pod(&m, &s);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("nvidia.com/gpu"), "{problems:?}");
    }

    #[test]
    fn a_fraction_with_a_gpu_request_or_mig_profile_is_rejected() {
        let (m, mut s) = kai_pod();
        s["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = json!(1);
        assert_eq!(check_pod(&m, &s).len(), 1);
        let (m, mut s) = kai_pod();
        s["initContainers"] = json!([{"name": "init", "resources": {"limits": {"nvidia.com/mig-1g.10gb": 1}}}]);
        let problems = check_pod(&m, &s);
        assert!(problems.iter().any(|p| p.contains("mig-1g.10gb") && p.contains("'init'")), "{problems:?}");
    }

    #[test]
    fn a_fraction_out_of_range_or_unquoted_is_rejected() {
        for bad in [json!("1"), json!("0"), json!("1.2"), json!(0.5)] {
            let (mut m, s) = kai_pod();
            m["annotations"]["gpu-fraction"] = bad.clone();
            assert!(!check_pod(&m, &s).is_empty(), "{bad} accepted");
        }
    }

    #[test]
    fn a_fraction_needs_a_sharing_scheduler_and_its_queue_label() {
        let (m, mut s) = kai_pod();
        s.as_object_mut().unwrap().remove("schedulerName");
        assert!(check_pod(&m, &s).iter().any(|p| p.contains("schedulerName")));

        let (mut m, s) = kai_pod();
        m["labels"] = json!({});
        assert!(check_pod(&m, &s).iter().any(|p| p.contains("kai.scheduler/queue")));

        // Run:AI reads its own label, not KAI's.
        let (m, mut s) = kai_pod();
        s["schedulerName"] = json!("runai-scheduler");
        assert!(check_pod(&m, &s).iter().any(|p| p.contains("runai/queue")));

        let (m, mut s) = kai_pod();
        s["schedulerName"] = json!("volcano");
        assert!(check_pod(&m, &s)[0].contains("unknown schedulerName"));
    }

    #[test]
    fn fraction_and_memory_annotations_exclude_each_other() {
        let (mut m, s) = kai_pod();
        m["annotations"]["gpu-memory"] = json!("4096");
        assert!(check_pod(&m, &s).iter().any(|p| p.contains("both set")));

        let (mut m, s) = kai_pod();
        m["annotations"] = json!({"gpu-memory": "4GB"});
        assert!(check_pod(&m, &s).iter().any(|p| p.contains("MiB")));
    }

    #[test]
    fn the_server_must_not_use_more_memory_than_its_fraction() {
        let (m, mut s) = kai_pod();
        s["containers"][0]["args"] = json!(["--gpu-memory-fraction=0.9"]);
        let problems = check_pod(&m, &s);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("not isolated"), "{problems:?}");
    }

    #[test]
    fn a_whole_gpu_pod_on_the_default_scheduler_passes() {
        let m = json!({"labels": {"app": "x"}});
        let s = json!({"containers": [{"name": "server", "args": ["--gpu-memory-fraction", "0.9"],
            "resources": {"limits": {"nvidia.com/gpu": 1}}}]});
        assert_eq!(check_pod(&m, &s), Vec::<String>::new());
        assert_eq!(gpu_resources(&s), vec![("server".to_string(), "nvidia.com/gpu".to_string())]);
    }
}
