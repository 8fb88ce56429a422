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
// kubernetes-validate

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

// ---------------------------------------------------------------------------------------------
// Docker

#[test]
fn dockerfile_builds_cuda_and_cpu_variants_and_runs_gpubench_serve_as_non_root() {
    let df = Dockerfile::load();
    let args = df.global_args();
    assert_eq!(args.get("VARIANT").map(String::as_str), Some("cuda"), "the CUDA image is the default variant");
    for stage in ["build-cuda", "build-cpu", "build", "runtime-cuda", "runtime-cpu", "runtime"] {
        assert!(df.stage_index(stage).is_some(), "no stage named {stage}");
    }
    let from = |stage: &str| df.stages[df.stage_index(stage).expect("stage")].from.clone();
    // CUDA: build on devel, run on runtime, same version and OS.
    let devel = from("build-cuda");
    let runtime = from("runtime-cuda");
    assert!(devel.starts_with("nvidia/cuda:") && devel.contains("-devel-"), "CUDA build stage base: {devel}");
    assert!(runtime.starts_with("nvidia/cuda:") && runtime.contains("-runtime-"), "CUDA runtime base: {runtime}");
    assert_eq!(devel.replace("-devel-", "-"), runtime.replace("-runtime-", "-"), "devel and runtime bases must match");
    assert!(args.contains_key("CUDA_VERSION") && devel.contains("${CUDA_VERSION}"), "CUDA version set once by ARG");
    // The variant picks both the build and the runtime stage.
    assert_eq!(from("build"), "build-${VARIANT}");
    assert_eq!(from("runtime"), "runtime-${VARIANT}");
    assert_eq!(df.stages.last().and_then(|s| s.name.as_deref()), Some("runtime"), "the runtime stage must be last (built by default)");
    // The CUDA build compiles with the cuda feature, the CPU build without features.
    let env_of = |stage: &str| -> String {
        df.in_stage(df.stage_index(stage).expect("stage")).filter(|i| i.keyword == "ENV").map(|i| i.args.clone()).collect::<Vec<_>>().join(" ")
    };
    assert!(env_of("build-cuda").contains("CARGO_FEATURES=cuda"), "build-cuda must set CARGO_FEATURES=cuda");
    assert!(env_of("build-cpu").contains("CARGO_FEATURES=\"\""), "build-cpu must build without features");
    let build_run: Vec<_> = df.in_stage(df.stage_index("build").expect("build")).filter(|i| i.keyword == "RUN").collect();
    assert!(
        build_run.iter().any(|i| i.args.contains("cargo build --release --locked") && i.args.contains("--features ${CARGO_FEATURES}")),
        "the build stage must run cargo build --release --locked with the variant's features"
    );
    // Runtime: non-root, entrypoint, health check, port, no model inside.
    let user = df.final_instruction("USER").map(|i| i.args.clone()).unwrap_or_default();
    let uid = user.split(':').next().unwrap_or("");
    assert!(uid.parse::<u32>().is_ok_and(|u| u >= 1000), "USER must be a numeric non-root uid (runAsNonRoot needs one), found '{user}'");
    let entrypoint = df.entrypoint();
    let serve = invocations_in(&entrypoint, "Dockerfile ENTRYPOINT");
    assert_eq!(serve.len(), 1, "ENTRYPOINT must run gpubench serve in exec form, found {entrypoint:?}");
    assert_eq!(serve[0].subcommand, "serve");
    assert_eq!(serve[0].value_of("--host"), Some("0.0.0.0"));
    assert_eq!(df.cmd(), vec!["--port".to_string(), PORT.to_string()], "CMD gives the default port");
    let health = df.final_instruction("HEALTHCHECK").map(|i| i.args.clone()).unwrap_or_default();
    assert_eq!(urls_in(&health), vec![format!("http://127.0.0.1:{PORT}{LIVENESS_PATH}")], "HEALTHCHECK must probe {LIVENESS_PATH}: {health}");
    assert!(df.final_instruction("EXPOSE").is_some_and(|i| i.args == PORT), "EXPOSE {PORT}");
    let last = df.stages.len() - 1;
    for i in df.in_stage(last).filter(|i| matches!(i.keyword.as_str(), "COPY" | "ADD")) {
        assert!(i.args.starts_with("--from=build "), "the runtime stage copies only the built binary: {} {}", i.keyword, i.args);
    }
    for i in &df.instructions {
        let lower = i.args.to_ascii_lowercase();
        assert!(
            !lower.contains("gpubench download") && !lower.contains(".gguf") && !lower.contains(".safetensors"),
            "the model must not be baked into the image: {} {}",
            i.keyword,
            i.args
        );
    }
}

#[test]
fn dockerignore_keeps_build_outputs_and_models_out_of_the_context() {
    let ignore = read(".dockerignore");
    let patterns: BTreeSet<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in ["target/", ".git/", "**/*.gguf", "**/*.safetensors", "models/", "reports/"] {
        assert!(patterns.contains(needed), ".dockerignore must exclude {needed}");
    }
    for kept in ["src/", "Cargo.toml", "Cargo.lock", "*.rs", "src"] {
        assert!(!patterns.contains(kept), ".dockerignore must not exclude {kept}: the build needs it");
    }
}

#[test]
fn compose_reserves_one_gpu_and_checks_health() {
    let compose = yaml_documents("deploy/compose.yaml").remove(0);
    let df = Dockerfile::load();
    let server = &compose["services"]["gpubench"];
    assert_eq!(server["image"], IMAGE);
    assert_eq!(server["build"]["dockerfile"], "Dockerfile");
    assert!(root().join("deploy").join(server["build"]["context"].as_str().unwrap_or("?")).join("Dockerfile").is_file(), "build context must hold the Dockerfile");
    assert_eq!(server["build"]["args"]["VARIANT"], "cuda");
    let devices = server["deploy"]["resources"]["reservations"]["devices"].as_array().expect("deploy.resources.reservations.devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["driver"], "nvidia");
    assert_eq!(devices[0]["count"], 1);
    assert!(devices[0]["capabilities"].as_array().is_some_and(|c| c.contains(&json!("gpu"))), "capabilities: [gpu]");
    assert_eq!(strings(&server["ports"]), Some(vec![format!("{PORT}:{PORT}")]));
    let test = strings(&server["healthcheck"]["test"]).unwrap_or_default().join(" ");
    assert_eq!(urls_in(&test), vec![format!("http://127.0.0.1:{PORT}{LIVENESS_PATH}")], "healthcheck must probe {LIVENESS_PATH}: {test}");
    assert!(server["shm_size"].is_string(), "set shm_size for the server");
    // The server reads the model that the one-shot download service wrote to the same volume.
    let serve = compose_invocations(&compose, &df).into_iter().find(|i| i.subcommand == "serve").expect("serve in compose");
    assert_eq!(serve.value_of("--port"), Some(PORT));
    assert_eq!(serve.value_of("--host"), Some("0.0.0.0"));
    assert_eq!(serve.value_of("--device"), Some("cuda"));
    let download = compose_invocations(&compose, &df).into_iter().find(|i| i.subcommand == "download").expect("download in compose");
    assert_eq!(download.value_of("--local-dir"), serve.value_of("--model"), "serve --model must be the download's --local-dir");
    assert_eq!(server["depends_on"]["model-download"]["condition"], "service_completed_successfully");
    let mounts = |service: &Value| strings(&service["volumes"]).unwrap_or_default();
    assert!(mounts(server).iter().any(|v| v.starts_with("models:/models")));
    assert!(mounts(&compose["services"]["model-download"]).iter().any(|v| v == "models:/models"));
    assert!(compose["volumes"].get("models").is_some(), "named volume 'models'");
    for (name, service) in compose["services"].as_object().expect("services") {
        assert_eq!(service["image"], IMAGE, "service {name}");
    }
}

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

// ---------------------------------------------------------------------------------------------
// Kubernetes: consistency across phases

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

#[test]
fn every_pod_runs_the_same_image() {
    for m in manifests() {
        let Some((_, spec)) = m.pod() else { continue };
        for c in containers(spec) {
            assert_eq!(c["image"], IMAGE, "{} container {}", m.id(), c["name"]);
            assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{} container {}", m.id(), c["name"]);
        }
    }
}

#[test]
fn every_server_uses_the_same_port_probes_and_model_volume() {
    let all = manifests();
    let df = Dockerfile::load();
    let servers = servers(&all, &df);
    let dirs: BTreeSet<&str> = servers.iter().filter_map(|(m, _, _)| m.file.split('/').nth(1)).collect();
    assert_eq!(dirs, BTreeSet::from(["kai", "kubernetes", "mig", "runai", "time-slicing"]), "a server Deployment per phase");
    for (m, c, serve) in &servers {
        let id = format!("{} container {}", m.id(), c["name"]);
        assert_eq!(m.kind(), "Deployment", "{id}");
        assert_eq!(serve.value_of("--host"), Some("0.0.0.0"), "{id}");
        assert_eq!(serve.value_of("--port"), Some(PORT), "{id}");
        assert_eq!(serve.value_of("--device"), Some("cuda"), "{id}");
        let ports = c["ports"].as_array().expect("ports");
        assert_eq!(ports.len(), 1, "{id}");
        assert_eq!(ports[0]["containerPort"].to_string(), PORT, "{id}");
        assert_eq!(ports[0]["name"], "http", "{id}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], READINESS_PATH, "{id}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], LIVENESS_PATH, "{id}");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{id} {probe}");
        }
        for r in ["cpu", "memory"] {
            assert!(c["resources"]["requests"][r].is_string(), "{id}: resources.requests.{r}");
        }
        assert!(c["resources"]["limits"]["memory"].is_string(), "{id}: resources.limits.memory");
        let (_, spec) = m.pod().expect("pod");
        let volume_of = |path: &str| -> Value {
            let mount = c["volumeMounts"].as_array().into_iter().flatten().find(|v| v["mountPath"] == path);
            let name = mount.unwrap_or_else(|| panic!("{id}: nothing mounted at {path}"))["name"].clone();
            spec["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == name).cloned().expect("volume")
        };
        assert_eq!(volume_of("/dev/shm")["emptyDir"]["medium"], "Memory", "{id}: /dev/shm must be a memory emptyDir");
        assert_eq!(volume_of("/models")["persistentVolumeClaim"]["claimName"], "gpubench-models", "{id}");
        assert!(serve.value_of("--model").is_some_and(|p| p.starts_with("/models/")), "{id}: --model must be on the models volume");
        assert!(spec["securityContext"]["runAsNonRoot"] == true, "{id}: runAsNonRoot");
    }
}

#[test]
fn services_route_the_server_port_to_the_server_pods() {
    let all = manifests();
    let df = Dockerfile::load();
    let servers = servers(&all, &df);
    let services: Vec<&Manifest> = all.iter().filter(|m| m.kind() == "Service").collect();
    assert!(services.len() >= 2, "a Service in the gpubench and the Run:AI namespace");
    for s in services {
        let ports = s.value["spec"]["ports"].as_array().expect("ports");
        assert_eq!(ports.len(), 1, "{}", s.id());
        assert_eq!(ports[0]["port"].to_string(), PORT, "{}", s.id());
        assert_eq!(ports[0]["targetPort"], "http", "{}", s.id());
        let selector = s.value["spec"]["selector"].as_object().expect("selector");
        let matched = servers.iter().filter(|(m, _, _)| m.namespace() == s.namespace()).all(|(m, _, _)| {
            let labels = &m.pod().expect("pod").0["labels"];
            selector.iter().all(|(k, v)| &labels[k] == v)
        });
        assert!(matched, "{}: the selector must match every server pod of its namespace", s.id());
    }
}

#[test]
fn model_downloads_write_where_the_servers_read() {
    let all = manifests();
    let df = Dockerfile::load();
    let invocations = container_invocations(&all, &df);
    let downloads: Vec<_> = invocations
        .iter()
        .filter_map(|(m, c, inv)| inv.iter().find(|i| i.subcommand == "download").map(|i| (m, c, i)))
        .collect();
    assert_eq!(downloads.len(), 2, "a download Job in the gpubench and the Run:AI namespace");
    for (m, c, download) in downloads {
        assert_eq!(m.kind(), "Job", "{}", m.id());
        let local_dir = download.value_of("--local-dir").expect("--local-dir");
        for (sm, _, serve) in servers(&all, &df).iter().filter(|(sm, _, _)| sm.namespace() == m.namespace()) {
            assert_eq!(serve.value_of("--model"), Some(local_dir), "{} reads another directory than {} writes", sm.id(), m.id());
        }
        let token = c["env"].as_array().into_iter().flatten().find(|e| e["name"] == "HF_TOKEN").expect("HF_TOKEN from a Secret");
        let secret = &token["valueFrom"]["secretKeyRef"];
        assert_eq!(secret["name"], "hf-token", "{}", m.id());
        assert_eq!(secret["optional"], true, "{}: the Secret is only needed for gated models", m.id());
        let mount = c["volumeMounts"].as_array().into_iter().flatten().find(|v| v["mountPath"] == "/models").expect("models mount");
        assert!(mount["readOnly"] != true, "{}: the download writes the models volume", m.id());
    }
}

#[test]
fn phase2_runs_one_pod_per_whole_gpu() {
    let all = manifests();
    let d = all.iter().find(|m| m.file == "deploy/kubernetes/40-deployment.yaml").expect("Phase 2 Deployment");
    let (meta, spec) = d.pod().expect("pod");
    assert_eq!(d.replicas(), 1);
    assert!(spec.get("schedulerName").is_none(), "Phase 2 uses the default scheduler");
    assert!(meta["annotations"].get("gpu-fraction").is_none());
    let limits = &spec["containers"][0]["resources"]["limits"];
    assert_eq!(limits["nvidia.com/gpu"], 1, "Phase 2 asks for one whole GPU");
    let hpa = all.iter().find(|m| m.kind() == "HorizontalPodAutoscaler").expect("HPA");
    assert_eq!(hpa.value["spec"]["scaleTargetRef"]["name"], d.name());
    assert_eq!(hpa.namespace(), d.namespace());
}

#[test]
fn sharing_manifests_follow_the_fraction_rules() {
    let all = manifests();
    for m in &all {
        let Some((meta, spec)) = m.pod() else { continue };
        let problems = rules::check_pod(meta, spec);
        assert!(problems.is_empty(), "{}: {problems:#?}", m.id());
        if let Some(f) = meta["annotations"]["gpu-fraction"].as_str() {
            let fraction = rules::parse_fraction(f).expect("checked above");
            assert!(
                m.replicas() <= u64::from(rules::pods_per_gpu(fraction)),
                "{}: {} replicas of {f} do not fit on one GPU",
                m.id(),
                m.replicas()
            );
        }
    }
    for (file, scheduler, label) in [
        ("deploy/runai/inference-deployment.yaml", "runai-scheduler", "runai/queue"),
        ("deploy/kai/deployment.yaml", "kai-scheduler", "kai.scheduler/queue"),
    ] {
        let d = all.iter().find(|m| m.file == file && m.kind() == "Deployment").expect(file);
        let (meta, spec) = d.pod().expect("pod");
        assert_eq!(d.replicas(), 3, "{file}");
        assert_eq!(meta["annotations"]["gpu-fraction"], "0.33", "{file}");
        assert_eq!(spec["schedulerName"], scheduler, "{file}");
        assert!(meta["labels"][label].is_string(), "{file}: label {label}");
        assert_eq!(d.value["metadata"]["labels"][label], meta["labels"][label], "{file}: queue label on the Deployment too");
        assert!(rules::gpu_resources(spec).is_empty(), "{file}: no GPU limit with a fraction");
        let memory = rules::memory_fraction_args(spec);
        assert_eq!(memory, vec![("server".to_string(), "0.33".to_string())], "{file}: serve --gpu-memory-fraction 0.33");
    }
    // The same check fails once a GPU limit is added to a real sharing manifest.
    let kai = all.iter().find(|m| m.file == "deploy/kai/deployment.yaml").expect("kai");
    let mut broken = kai.value.clone();
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = json!(1);
    let t = &broken["spec"]["template"];
    assert!(!rules::check_pod(&t["metadata"], &t["spec"]).is_empty());
}

#[test]
fn runai_training_job_is_preemptible_and_inference_is_not() {
    let all = manifests();
    let train = all.iter().find(|m| m.file == "deploy/runai/training-job.yaml").expect("training job");
    let inference = all.iter().find(|m| m.file == "deploy/runai/inference-deployment.yaml").expect("inference");
    assert_eq!(train.pod().expect("pod").1["priorityClassName"], "train");
    assert_eq!(inference.pod().expect("pod").1["priorityClassName"], "inference");
    for m in all.iter().filter(|m| m.namespace() == Some("runai-llm-inference")) {
        if let Some((meta, spec)) = m.pod() {
            assert_eq!(spec["schedulerName"], "runai-scheduler", "{}", m.id());
            assert_eq!(meta["labels"]["runai/queue"], "llm-inference", "{}", m.id());
        }
    }
}

#[test]
fn time_slicing_advertises_enough_slices_and_servers_cap_memory() {
    let all = manifests();
    let cm = all.iter().find(|m| m.file == "deploy/time-slicing/time-slicing-config.yaml").expect("config");
    assert_eq!(cm.namespace(), Some("gpu-operator"));
    let data = cm.value["data"].as_object().expect("data");
    assert!(!data.is_empty());
    let mut slices = None;
    for (key, text) in data {
        let config: Value = serde_yaml::from_str(text.as_str().expect("string")).unwrap_or_else(|e| panic!("data.{key} is not YAML: {e}"));
        assert_eq!(config["version"], "v1", "data.{key}");
        let resources = config["sharing"]["timeSlicing"]["resources"].as_array().expect("sharing.timeSlicing.resources");
        let gpu = resources.iter().find(|r| r["name"] == "nvidia.com/gpu").expect("nvidia.com/gpu entry");
        slices = gpu["replicas"].as_u64();
    }
    let slices = slices.expect("replicas");
    assert!(slices >= 2, "time-slicing with {slices} replica shares nothing");
    let d = all.iter().find(|m| m.file == "deploy/time-slicing/deployment.yaml").expect("deployment");
    let (_, spec) = d.pod().expect("pod");
    assert!(d.replicas() <= slices, "{} pods for {slices} slices of one GPU", d.replicas());
    assert_eq!(spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], 1);
    let memory: f64 = rules::memory_fraction_args(spec)[0].1.parse().expect("number");
    assert!(memory * d.replicas() as f64 <= 1.0 + 1e-9, "time slices share memory: {} x {memory} is more than the GPU", d.replicas());
}

#[test]
fn mig_deployments_ask_for_mig_instances_that_fit_one_gpu() {
    let all = manifests();
    let mig: Vec<&Manifest> = all.iter().filter(|m| m.file.starts_with("deploy/mig/") && m.kind() == "Deployment").collect();
    let mut seen = BTreeSet::new();
    for d in mig {
        let (_, spec) = d.pod().expect("pod");
        let resources = rules::gpu_resources(spec);
        assert_eq!(resources.len(), 1, "{}: exactly one MIG resource", d.id());
        let profile = resources[0].1.strip_prefix("nvidia.com/mig-").unwrap_or_else(|| panic!("{}: asks for {}", d.id(), resources[0].1));
        let (_, per_gpu) = MIG_PROFILES.iter().find(|(p, _)| *p == profile).unwrap_or_else(|| panic!("{}: unknown MIG profile {profile}", d.id()));
        assert!(d.replicas() <= *per_gpu, "{}: {} instances of {profile} do not fit on one GPU", d.id(), d.replicas());
        assert!(d.file.contains(profile), "{}: file name should name its profile", d.id());
        seen.insert(profile.to_string());
    }
    assert_eq!(seen, BTreeSet::from(["1g.10gb".to_string(), "3g.40gb".to_string()]));
}

#[test]
fn load_test_jobs_share_one_workload_and_keep_their_reports() {
    let all = manifests();
    let df = Dockerfile::load();
    let jobs: Vec<(Manifest, Value, Invocation)> = container_invocations(&all, &df)
        .into_iter()
        .filter_map(|(m, c, inv)| inv.into_iter().find(|i| i.subcommand == "load-test").map(|i| (m, c, i)))
        .collect();
    let labels: Vec<&str> = jobs.iter().filter_map(|(_, _, i)| i.value_of("--label")).collect();
    let unique: BTreeSet<&str> = labels.iter().copied().collect();
    assert_eq!(labels.len(), unique.len(), "labels must differ: {labels:?}");
    assert_eq!(
        unique,
        BTreeSet::from(["kai", "kubernetes", "mig-1g.10gb", "mig-3g.40gb", "runai", "time-slicing"]),
        "a load-test Job per cluster phase"
    );
    let workload = |i: &Invocation| -> Vec<(String, Option<String>)> {
        ["--concurrency", "--requests", "--warmup", "--max-tokens"].iter().map(|f| (f.to_string(), i.value_of(f).map(str::to_string))).collect()
    };
    let reference = workload(&jobs[0].2);
    assert!(reference.iter().all(|(_, v)| v.is_some()), "the load-test Jobs set {reference:?}");
    for (m, c, lt) in &jobs {
        assert_eq!(workload(lt), reference, "{}: every phase runs the same workload", m.id());
        let label = lt.value_of("--label").expect("label");
        assert_eq!(lt.value_of("--out"), Some(format!("/reports/{label}.json").as_str()), "{}", m.id());
        let url = url::Url::parse(lt.value_of("--url").expect("--url")).expect("valid URL");
        assert_eq!(url.path(), "/generate", "{}", m.id());
        assert_eq!(url.port().map(|p| p.to_string()).as_deref(), Some(PORT), "{}", m.id());
        let host = url.host_str().expect("host");
        assert!(
            all.iter().any(|s| s.kind() == "Service" && s.name() == host && s.namespace() == m.namespace()),
            "{}: no Service '{host}' in its namespace",
            m.id()
        );
        let (_, spec) = m.pod().expect("pod");
        assert_eq!(spec["restartPolicy"], "Never", "{}", m.id());
        let mount = c["volumeMounts"].as_array().into_iter().flatten().find(|v| v["mountPath"] == "/reports").expect("reports mount");
        let volume = spec["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == mount["name"]).expect("volume");
        assert_eq!(volume["persistentVolumeClaim"]["claimName"], "gpubench-reports", "{}", m.id());
        let wait = containers(spec).into_iter().find(|c| c["name"] == "wait-until-ready").expect("waits for the server");
        let script = strings(&wait["command"]).unwrap_or_default().join(" ");
        assert_eq!(urls_in(&script), vec![format!("http://{host}:{PORT}{READINESS_PATH}")], "{}: waits on {READINESS_PATH}", m.id());
        assert!(
            all.iter().any(|p| p.kind() == "Pod" && p.namespace() == m.namespace() && p.value["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "gpubench-reports"),
            "{}: no reports pod in its namespace to copy the report out",
            m.id()
        );
    }
    // The README's bare-metal run uses the same workload, so the phases compare.
    let readme = markdown_invocations(&read("deploy/README.md"), "deploy/README.md");
    let local: Vec<_> = readme.iter().filter(|i| i.subcommand == "load-test").collect();
    assert!(!local.is_empty(), "deploy/README.md shows a load-test run");
    for lt in local {
        assert_eq!(workload(lt), reference, "deploy/README.md: load-test workload differs from the Jobs'");
    }
}

#[test]
fn references_resolve_within_their_namespace() {
    let all = manifests();
    let namespaces: BTreeSet<&str> = all.iter().filter(|m| m.kind() == "Namespace").map(|m| m.name()).collect();
    for m in &all {
        let cluster_scoped = matches!(m.kind(), "Namespace" | "Queue");
        match m.namespace() {
            None => assert!(cluster_scoped, "{}: set metadata.namespace", m.id()),
            Some(ns) => {
                assert!(!cluster_scoped, "{}: cluster-scoped objects have no namespace", m.id());
                assert!(namespaces.contains(ns) || EXTERNAL_NAMESPACES.contains(&ns), "{}: namespace {ns} is created nowhere", m.id());
            }
        }
        let Some((_, spec)) = m.pod() else { continue };
        for v in spec["volumes"].as_array().into_iter().flatten() {
            if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                assert!(
                    all.iter().any(|p| p.kind() == "PersistentVolumeClaim" && p.name() == claim && p.namespace() == m.namespace()),
                    "{}: PVC {claim} is not defined in its namespace",
                    m.id()
                );
            }
        }
        for c in containers(spec) {
            container_env(m, c, &all); // panics on a missing ConfigMap
            for var in c["env"].as_array().into_iter().flatten() {
                if var["valueFrom"]["secretKeyRef"].is_object() {
                    assert_eq!(var["valueFrom"]["secretKeyRef"]["optional"], true, "{}: no Secret is shipped; make it optional", m.id());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// gpubench flags used by the files exist in the built binary

/// Every gpubench invocation in the Dockerfile, the Compose file, the manifests and deploy/README.md.
fn all_invocations() -> Vec<Invocation> {
    let df = Dockerfile::load();
    let mut found = invocations_in(&df.entrypoint().into_iter().chain(df.cmd()).collect::<Vec<_>>(), "Dockerfile");
    found.extend(compose_invocations(&yaml_documents("deploy/compose.yaml").remove(0), &df));
    for (_, _, inv) in container_invocations(&manifests(), &df) {
        found.extend(inv);
    }
    found.extend(markdown_invocations(&read("deploy/README.md"), "deploy/README.md"));
    found
}

/// The option blocks of a --help text: each starts at a line whose first character is '-'.
fn help_blocks(help: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let second = trimmed.chars().nth(1);
        if trimmed.starts_with('-') && second.is_some_and(|c| c == '-' || c.is_ascii_alphanumeric()) {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line.trim());
            b.push('\n');
        }
    }
    blocks
}

fn help_mentions(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        let next = help[i + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Values that clap lists for a flag ("[possible values: a, b]" or a "Possible values:" list).
fn possible_values(help: &str, flag: &str) -> Option<Vec<String>> {
    let block = help_blocks(help).into_iter().find(|b| b.lines().next().is_some_and(|l| help_mentions(l, flag)))?;
    let joined = block.replace('\n', " ");
    if let Some(start) = joined.find("[possible values: ") {
        let rest = &joined[start + "[possible values: ".len()..];
        let list = &rest[..rest.find(']')?];
        return Some(list.split(',').map(|v| v.trim().to_string()).collect());
    }
    let list_start = block.find("Possible values:")?;
    let values: Vec<String> = block[list_start..]
        .lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix("- "))
        .map(|l| l.split(':').next().unwrap_or("").trim().to_string())
        .collect();
    (!values.is_empty()).then_some(values)
}

#[test]
fn every_gpubench_flag_in_the_deploy_files_is_in_its_help() {
    let invocations = all_invocations();
    let by_command: BTreeMap<&str, Vec<&Invocation>> = invocations.iter().fold(BTreeMap::new(), |mut map, i| {
        map.entry(i.subcommand.as_str()).or_default().push(i);
        map
    });
    for expected in ["serve", "download", "load-test", "gpu-check", "bench"] {
        assert!(by_command.contains_key(expected), "no `gpubench {expected}` found in the deploy files: {:?}", by_command.keys());
    }
    let mut checked = 0;
    for (sub, uses) in &by_command {
        let out = Command::new(env!("CARGO_BIN_EXE_gpubench")).args([*sub, "--help"]).output().expect("run gpubench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("unrecognized subcommand") {
            assert!(
                pending::SUBCOMMANDS_NOT_YET_BUILT.contains(sub),
                "`gpubench {sub}` is used by {} but the binary does not know it",
                uses[0].source
            );
            eprintln!("note: `gpubench {sub}` is not in this build yet: its flags are not checked (tests/deploy/pending.rs)");
            continue;
        }
        assert!(out.status.success(), "gpubench {sub} --help failed: {stderr}");
        if pending::SUBCOMMANDS_NOT_YET_BUILT.contains(sub) {
            eprintln!("note: `gpubench {sub}` exists now: remove it from tests/deploy/pending.rs");
        }
        let help = String::from_utf8_lossy(&out.stdout);
        for inv in uses {
            for (flag, value) in &inv.flags {
                assert!(help_mentions(&help, flag), "{}: `gpubench {sub}` has no flag {flag}", inv.source);
                let Some(value) = value.as_deref().filter(|v| !v.contains("$(") && !v.contains("${")) else { continue };
                if let Some(allowed) = possible_values(&help, flag) {
                    assert!(allowed.iter().any(|a| a == value), "{}: {flag} {value} is not one of {allowed:?}", inv.source);
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0 || by_command.keys().all(|k| pending::SUBCOMMANDS_NOT_YET_BUILT.contains(k)), "no flag was checked");
}

#[test]
fn help_parsing_finds_flags_and_their_values() {
    let help = "Options:\n      --url <URL>\n          Endpoint\n      --api <API>\n          Which API\n\n          Possible values:\n          - auto:     From the URL\n          - generate: The seed API\n\n  -c, --concurrency <N>\n          Workers [possible values: 1,\n          2]\n";
    assert!(help_mentions(help, "--url"));
    assert!(!help_mentions(help, "--ur"));
    assert_eq!(possible_values(help, "--api"), Some(vec!["auto".to_string(), "generate".to_string()]));
    assert_eq!(possible_values(help, "--concurrency"), Some(vec!["1".to_string(), "2".to_string()]));
    assert_eq!(possible_values(help, "--url"), None);
}

#[test]
fn the_dockerfile_feature_exists_in_cargo_toml() {
    let df = Dockerfile::load();
    let features: Vec<String> = df
        .instructions
        .iter()
        .filter(|i| i.keyword == "ENV")
        .flat_map(|i| i.args.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|w| w.strip_prefix("CARGO_FEATURES=").map(|f| f.trim_matches('"').to_string()))
        .filter(|f| !f.is_empty())
        .collect();
    assert_eq!(features, vec!["cuda".to_string()], "the CUDA stage builds with the cuda feature");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let package = meta["packages"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "gpubench")).expect("gpubench package");
    for feature in &features {
        if package["features"].get(feature).is_some() {
            if pending::CARGO_FEATURES_NOT_YET_DEFINED.contains(&feature.as_str()) {
                eprintln!("note: feature `{feature}` exists now: remove it from tests/deploy/pending.rs");
            }
        } else if pending::CARGO_FEATURES_NOT_YET_DEFINED.contains(&feature.as_str()) {
            eprintln!("note: feature `{feature}` is not in Cargo.toml yet: not checked (tests/deploy/pending.rs)");
        } else {
            panic!("the Dockerfile builds with --features {feature} but Cargo.toml has no such feature");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The walkthrough

#[test]
fn the_readme_walks_through_every_phase_and_file() {
    let readme = read("deploy/README.md");
    let invocations = markdown_invocations(&readme, "deploy/README.md");
    let phases: BTreeSet<&str> = invocations.iter().filter(|i| i.subcommand == "gpu-check").filter_map(|i| i.value_of("--phase")).collect();
    assert_eq!(phases, BTreeSet::from(["bare-metal", "kubernetes", "sharing"]), "gpu-check for every phase");
    assert!(invocations.iter().any(|i| i.subcommand == "bench" && i.has("--target")), "bench --target example");
    for needed in ["docker compose -f deploy/compose.yaml up", "docker compose -f deploy/compose.yaml down", "kubectl delete", "runai project create"] {
        assert!(readme.contains(needed), "deploy/README.md should show `{needed}`");
    }
    let mut files = files::manifest_files();
    files.push("deploy/compose.yaml".to_string());
    files.push("deploy/kai/queue.schema.json".to_string());
    for file in files {
        let short = file.trim_start_matches("deploy/");
        assert!(readme.contains(short), "deploy/README.md never mentions {short}");
    }
}
