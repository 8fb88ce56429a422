//! Schema validation: every Kubernetes manifest with kubernetes-validate (strict, offline), and
//! the KAI queues against the schema the project writes itself (deploy/kai/queue.schema.json).

use super::*;

/// How to run kubernetes-validate here: `$KUBERNETES_VALIDATE`, the command on PATH, or the
/// Python module. None when it is not installed (.ci/setup-deploy.sh installs it).
fn kubernetes_validate() -> Option<Vec<String>> {
    let works = |argv: &[String]| {
        Command::new(&argv[0]).args(&argv[1..]).arg("--version").output().is_ok_and(|o| o.status.success())
    };
    let candidates: Vec<Vec<String>> = [
        std::env::var("KUBERNETES_VALIDATE").ok().map(|p| vec![p]),
        Some(vec!["kubernetes-validate".to_string()]),
        Some(vec!["python3".to_string(), "-m".to_string(), "kubernetes_validate".to_string()]),
    ]
    .into_iter()
    .flatten()
    .collect();
    candidates.into_iter().find(|c| works(c))
}

/// The validator, or None after a note when it is absent on a developer machine. In CI
/// (`CI` set) its absence is a failure.
fn validator_or_skip(test: &str) -> Option<Vec<String>> {
    match kubernetes_validate() {
        Some(tool) => Some(tool),
        None if std::env::var_os("CI").is_some() => {
            panic!("kubernetes-validate is not installed: .ci/run must call .ci/setup-deploy.sh before cargo test")
        }
        None => {
            eprintln!("note: {test} skipped: kubernetes-validate is not installed (run .ci/setup-deploy.sh)");
            None
        }
    }
}

/// Runs the validator over files: (success, its report on stdout, stderr).
fn run_validator(tool: &[String], files: &[String]) -> (bool, String, String) {
    let out = Command::new(&tool[0])
        .args(&tool[1..])
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(files)
        .current_dir(root())
        .output()
        .expect("kubernetes-validate runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_manifest_passes_kubernetes_validate_strict() {
    let Some(tool) = validator_or_skip("every_manifest_passes_kubernetes_validate_strict") else { return };
    let files = files::manifest_files();
    assert!(files.len() >= 20, "expected the manifests of every phase under deploy/, found {files:?}");
    let (ok, output, stderr) = run_validator(&tool, &files);
    assert!(ok, "kubernetes-validate --strict -k {KUBERNETES_VERSION} failed:\n{output}{stderr}");
    // A typo in apiVersion or kind is only a warning for the tool: require a pass line for every
    // built-in object, and allow warnings only for the scheduler's own resources.
    for m in manifests().iter().filter(|m| !m.is_scheduling_crd()) {
        let expected = format!(
            "INFO {} passed for resource {}/{} against version {KUBERNETES_VERSION}",
            m.file,
            m.kind().to_ascii_lowercase(),
            m.name()
        );
        assert!(output.lines().any(|l| l == expected), "no strict pass for {}:\n{output}", m.id());
    }
    for line in output.lines().filter(|l| !l.starts_with("INFO")) {
        assert!(line.contains("scheduling.run.ai/v2"), "unexpected validator output: {line}");
    }
}

#[test]
fn kubernetes_validate_strict_rejects_unknown_fields() {
    let Some(tool) = validator_or_skip("kubernetes_validate_strict_rejects_unknown_fields") else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut deployment = yaml_documents("deploy/kubernetes/40-deployment.yaml").remove(0);
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = json!("/ready");
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, serde_json::to_string(&deployment).expect("json")).expect("write");
    let (ok, output, _) = run_validator(&tool, &[path.to_string_lossy().into_owned()]);
    assert!(!ok && output.contains("paht"), "a misspelt field passed strict validation:\n{output}");
}

// ---------------------------------------------------------------------------------------------
// KAI Queue, against the schema the project writes itself

fn queue_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&read("deploy/kai/queue.schema.json")).expect("queue.schema.json is JSON");
    jsonschema::validator_for(&schema).expect("queue.schema.json is a valid JSON schema")
}

fn schema_errors(validator: &jsonschema::Validator, queue: &Value) -> Vec<String> {
    validator.iter_errors(queue).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

fn queues() -> Vec<Manifest> {
    manifests().into_iter().filter(|m| m.is_scheduling_crd()).collect()
}

#[test]
fn kai_queues_match_the_schema() {
    let validator = queue_validator();
    let queues = queues();
    assert!(queues.len() >= 2, "deploy/kai/queue.yaml should define a parent and a leaf queue");
    for q in &queues {
        assert_eq!(q.kind(), "Queue", "{}", q.id());
        let errors = schema_errors(&validator, &q.value);
        assert!(errors.is_empty(), "{} does not match queue.schema.json: {errors:#?}", q.id());
    }
}

#[test]
fn kai_queue_schema_rejects_unknown_fields_and_bad_values() {
    let validator = queue_validator();
    let leaf = queues().into_iter().find(|q| q.value["spec"]["parentQueue"].is_string()).expect("a leaf queue");
    let cases: Vec<(&str, Box<dyn Fn(&mut Value)>)> = vec![
        ("unknown spec field", Box::new(|q| q["spec"]["gpuShare"] = json!(true))),
        ("unknown resource field", Box::new(|q| q["spec"]["resources"]["gpu"]["burst"] = json!(2))),
        ("unknown resource kind", Box::new(|q| q["spec"]["resources"]["tpu"] = json!({"quota": 1}))),
        ("unknown top-level field", Box::new(|q| q["status"] = json!({}))),
        ("namespace on a cluster-scoped object", Box::new(|q| q["metadata"]["namespace"] = json!("gpubench"))),
        ("priority as text", Box::new(|q| q["spec"]["priority"] = json!("high"))),
        ("quota below -1", Box::new(|q| q["spec"]["resources"]["gpu"]["quota"] = json!(-2))),
        ("negative weight", Box::new(|q| q["spec"]["resources"]["gpu"]["overQuotaWeight"] = json!(-1))),
        ("duration in words", Box::new(|q| q["spec"]["preemptMinRuntime"] = json!("5 minutes"))),
        ("old API version", Box::new(|q| q["apiVersion"] = json!("scheduling.run.ai/v1"))),
        ("name with capitals", Box::new(|q| q["metadata"]["name"] = json!("GpuBench"))),
    ];
    for (what, change) in cases {
        let mut queue = leaf.value.clone();
        change(&mut queue);
        assert!(!validator.is_valid(&queue), "the schema accepted a queue with {what}");
    }
}

#[test]
fn kai_pods_name_a_leaf_queue_with_room_for_them() {
    let queues = queues();
    let by_name: BTreeMap<&str, &Manifest> = queues.iter().map(|q| (q.name(), q)).collect();
    for q in &queues {
        if let Some(parent) = q.value["spec"]["parentQueue"].as_str() {
            let parent_queue = by_name.get(parent).unwrap_or_else(|| panic!("{}: parent queue '{parent}' is not defined", q.id()));
            let child = q.value["spec"]["resources"]["gpu"]["quota"].as_f64().unwrap_or(0.0);
            let ceiling = parent_queue.value["spec"]["resources"]["gpu"]["quota"].as_f64().unwrap_or(-1.0);
            assert!(ceiling < 0.0 || child <= ceiling, "{}: gpu quota {child} exceeds its parent's {ceiling}", q.id());
        }
    }
    let mut demand: BTreeMap<String, f64> = BTreeMap::new();
    for m in manifests() {
        let Some((meta, spec)) = m.pod() else { continue };
        if spec["schedulerName"] != "kai-scheduler" {
            continue;
        }
        let queue = meta["labels"]["kai.scheduler/queue"].as_str().unwrap_or_else(|| panic!("{}: no queue label", m.id()));
        let q = by_name.get(queue).unwrap_or_else(|| panic!("{}: queue '{queue}' is not in deploy/kai/queue.yaml", m.id()));
        assert!(q.value["spec"]["parentQueue"].is_string(), "{}: pods must go to a leaf queue, '{queue}' has no parent", m.id());
        let fraction = meta["annotations"]["gpu-fraction"].as_str().map(|f| rules::parse_fraction(f).expect("valid fraction"));
        *demand.entry(queue.to_string()).or_default() += fraction.unwrap_or(1.0) * m.replicas() as f64;
    }
    assert!(!demand.is_empty(), "no pod uses kai-scheduler");
    for (queue, gpus) in demand {
        let gpu = &by_name[queue.as_str()].value["spec"]["resources"]["gpu"];
        let quota = gpu["quota"].as_f64().unwrap_or(0.0);
        assert!(gpus <= quota + 1e-9, "queue '{queue}' deserves {quota} GPU but its pods ask for {gpus}");
    }
}
