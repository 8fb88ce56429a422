//! Every `gpubench <command> --flag` that the files use exists in the built binary's help, the
//! Dockerfile's cargo feature exists, and deploy/README.md walks through every phase and file.

use super::*;

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
        let out = Command::new(env!("CARGO_BIN_EXE_gpubench")).args(sub.split(' ')).arg("--help").output().expect("run gpubench");
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
