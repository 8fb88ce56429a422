//! The Kubernetes manifests of every phase: the same image, port, probes, volumes and workload,
//! references that resolve, and the GPU-sharing rules of each Phase 3 variant.

use super::*;

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
    let (sharded, jobs): (Vec<(Manifest, Value, Invocation)>, Vec<_>) = container_invocations(&all, &df)
        .into_iter()
        .filter_map(|(m, c, inv)| inv.into_iter().find(|i| i.subcommand == "load-test").map(|i| (m, c, i)))
        .partition(|(_, _, i)| i.has("--shards"));
    sharded_jobs_split_the_same_workload_and_are_merged(&all, &df, &sharded, &jobs[0].2);
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

/// The Indexed Jobs: one per cluster phase that runs several pods behind a Service, each pod a
/// shard of the same workload as the plain Jobs, and a merge Job that reads their reports.
fn sharded_jobs_split_the_same_workload_and_are_merged(all: &[Manifest], df: &Dockerfile, sharded: &[(Manifest, Value, Invocation)], reference: &Invocation) {
    let labels: BTreeSet<&str> = sharded.iter().filter_map(|(_, _, i)| i.value_of("--label")).collect();
    assert_eq!(labels, BTreeSet::from(["kai-sharded", "kubernetes-sharded", "runai-sharded"]), "an Indexed Job per shared cluster phase");
    let merges: Vec<(Manifest, Value, Invocation)> = container_invocations(all, df)
        .into_iter()
        .flat_map(|(m, c, inv)| inv.into_iter().filter(|i| i.subcommand == "report merge").map(move |i| (m.clone(), c.clone(), i)))
        .collect();
    for (m, c, lt) in sharded {
        let label = lt.value_of("--label").expect("label");
        for flag in ["--concurrency", "--requests", "--warmup", "--max-tokens", "--url"] {
            assert_eq!(lt.value_of(flag), reference.value_of(flag), "{}: {flag} as in the plain load-test Jobs", m.id());
        }
        let spec = &m.value["spec"];
        let shards = lt.value_of("--shards").expect("--shards N");
        assert_eq!(spec["completionMode"], "Indexed", "{}", m.id());
        assert_eq!(spec["completions"].to_string(), shards, "{}: completions = --shards", m.id());
        assert_eq!(spec["parallelism"].to_string(), shards, "{}: every shard runs at once", m.id());
        assert_eq!(lt.value_of("--start-at"), Some("$(START_AT)"), "{}: one start time for all shards", m.id());
        let env: BTreeMap<&str, &str> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?, v["valueFrom"]["fieldRef"]["fieldPath"].as_str()?)))
            .collect();
        assert_eq!(env.get("START_AT"), Some(&"metadata.annotations['gpubench.dev/start-at']"), "{}", m.id());
        assert_eq!(env.get("JOB_COMPLETION_INDEX"), Some(&"metadata.annotations['batch.kubernetes.io/job-completion-index']"), "{}", m.id());
        let at = spec["template"]["metadata"]["annotations"]["gpubench.dev/start-at"].as_str().expect("start-at annotation");
        let out = Command::new(env!("CARGO_BIN_EXE_gpubench"))
            .args(["load-test", "--url", "http://127.0.0.1:9/generate", "--start-at", at, "--help"])
            .output()
            .expect("run gpubench");
        assert!(out.status.success(), "{}: --start-at {at} does not parse: {}", m.id(), String::from_utf8_lossy(&out.stderr));
        let dir = format!("/reports/shards/{label}");
        assert_eq!(lt.value_of("--out"), Some(format!("{dir}/shard-$(JOB_COMPLETION_INDEX).json").as_str()), "{}", m.id());
        let merge = merges.iter().find(|(mm, _, i)| mm.namespace() == m.namespace() && i.value_of("--out") == Some(format!("/reports/{label}.json").as_str()));
        let (mm, mc, _) = merge.unwrap_or_else(|| panic!("{}: no merge Job writes /reports/{label}.json", m.id()));
        let words = container_argv(mc, df).join(" ");
        assert!(words.contains(&format!("{dir}/shard-*.json")), "{}: merges {dir}/shard-*.json", mm.id());
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
