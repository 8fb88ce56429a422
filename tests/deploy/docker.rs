//! The Dockerfile, .dockerignore and the Compose file of Phase 1.

use super::*;

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
