//! Unit tests of `bench/mod.rs`.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

#[test]
fn config_fills_what_the_flags_leave_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        "phases = [\"batched\"]\nconcurrency = [1, 4]\npoint_duration = \"3s\"\nmodel = \"m.gguf\"\n\
         [[target]]\nname = \"k8s\"\nurl = \"http://10.0.0.5:8000/generate\"\n",
    )
    .unwrap();
    let cfg_arg = cfg.display().to_string();
    let mut args = Cli::parse_from(["bench", "--config", cfg_arg.as_str(), "--concurrency", "2"]).args;
    args.merge_config().unwrap();
    assert_eq!(args.phases, vec![Phase::Batched]);
    assert_eq!(args.concurrency, vec![2], "the command line wins");
    assert_eq!(args.point_duration, Some(Duration::from_secs(3)));
    assert_eq!(args.model, Some(dir.path().join("m.gguf")), "paths are relative to the file");
    assert_eq!(args.targets, vec![("k8s".to_string(), "http://10.0.0.5:8000/generate".to_string())]);
    assert_eq!(args.device(), "cpu");

    std::fs::write(&cfg, "phases = [\"cloud\"]\n").unwrap();
    let mut args = Cli::parse_from(["bench", "--config", cfg_arg.as_str()]).args;
    assert!(args.merge_config().unwrap_err().to_string().contains("unknown phase 'cloud'"));
    std::fs::write(&cfg, "concurrancy = [1]\n").unwrap();
    let mut args = Cli::parse_from(["bench", "--config", cfg_arg.as_str()]).args;
    let e = args.merge_config().unwrap_err().to_string();
    assert!(e.contains("concurrancy") && e.contains("bench.toml"), "{e}");
}

#[test]
fn targets_are_name_equals_url() {
    assert_eq!(
        parse_target("k8s=http://10.0.0.5:8000/generate").unwrap(),
        ("k8s".to_string(), "http://10.0.0.5:8000/generate".to_string())
    );
    assert!(parse_target("k8s").unwrap_err().contains("NAME=URL"));
    assert!(parse_target("a b=http://x").unwrap_err().contains("must be letters"));
    assert!(parse_target("k=ftp://x").unwrap_err().contains("http://"));
}
