//! The GPU scripts, tested without a GPU or the CUDA toolkit: `scripts/build-cuda --dry-run`
//! (prerequisites, the generated libcuda stub), `scripts/torch-peer.py` (shapes, the summary and
//! its bandwidth bound) and `scripts/gpu-smoke` against the CPU build.

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;
use predicates::str::contains;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dry_run_generates_a_libcuda_stub_with_the_driver_soname() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(script("build-cuda"))
        .args(["--dry-run", "--cache-dir"])
        .arg(cache.path())
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("prerequisites ok"), "{err}");
    assert!(err.contains("CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000"), "{err}");
    assert!(err.contains("nvidia-cuda-nvcc==13.0.88"), "{err}");
    // Nothing was installed or built.
    assert!(!cache.path().join("venv").exists());

    let stub = cache.path().join("stub/libcuda.so.1");
    let dynamic = StdCommand::new("readelf").arg("-dW").arg(&stub).output().unwrap();
    assert!(stdout_of(&dynamic).contains("Library soname: [libcuda.so.1]"), "{}", stdout_of(&dynamic));
    let symbols = StdCommand::new("readelf").arg("--dyn-syms").arg("-W").arg(&stub).output().unwrap();
    let symbols = stdout_of(&symbols);
    for name in ["cuInit", "cuDeviceGet", "cuCtxCreate_v4", "cuMemAlloc_v2", "cuLaunchKernel", "cuModuleLoadData", "cuStreamSynchronize"] {
        assert!(symbols.lines().any(|l| l.contains(" FUNC ") && l.ends_with(&format!(" {name}"))), "{name} missing from the stub");
    }
    let source = std::fs::read_to_string(cache.path().join("stub/libcuda_stub.c")).unwrap();
    assert!(source.contains("int cuInit(void) { return STUB_RESULT; }"), "{source}");

    // Idempotent: a second run gives the same source.
    let again = Command::new(script("build-cuda")).args(["--check", "--cache-dir"]).arg(cache.path()).output().unwrap();
    assert!(again.status.success(), "{}", stderr_of(&again));
    assert_eq!(std::fs::read_to_string(cache.path().join("stub/libcuda_stub.c")).unwrap(), source);
}

#[test]
fn build_cuda_names_a_missing_compiler_and_rejects_bad_flags() {
    let cache = tempfile::tempdir().unwrap();
    Command::new(script("build-cuda"))
        .args(["--dry-run", "--cache-dir"])
        .arg(cache.path())
        .env("CC", "/nonexistent/gcc")
        .assert()
        .code(1)
        .stderr(contains("missing prerequisite: /nonexistent/gcc (apt-get install gcc"));
    Command::new(script("build-cuda"))
        .args(["--compress", "lz4", "--dry-run"])
        .assert()
        .code(2)
        .stderr(contains("--compress must be zstd or xz"));
    Command::new(script("build-cuda")).arg("--frobnicate").assert().code(2).stderr(contains("unknown argument '--frobnicate'"));
    Command::new(script("build-cuda")).arg("--help").assert().success().stdout(contains("--dry-run"));
}

fn peer(args: &[&str]) -> std::process::Output {
    StdCommand::new("python3").arg(script("torch-peer.py")).args(args).output().unwrap()
}

#[test]
fn peer_script_knows_the_architectures_without_torch() {
    let out = peer(&["--help"]);
    assert!(out.status.success());
    for sub in ["params", "matmul", "bandwidth", "generate", "summarize"] {
        assert!(stdout_of(&out).contains(sub));
    }
    assert!(peer(&["generate", "--help"]).status.success());
    // Llama-3.2-1B has 1,235,814,400 parameters (tied embeddings); one decode step reads all of them
    // once the output layer (the embedding matrix) is counted.
    let out = peer(&["params", "--arch", "llama-3.2-1b", "--weight-bytes", "2"]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["params"], 1_235_814_400u64);
    assert_eq!(p["bytes_per_step"], 2 * 1_235_814_400u64);
    // Llama-3.1-8B: 8,030,261,248 parameters; the untied embedding is not read per step.
    let out = peer(&["params", "--arch", "llama-3.1-8b"]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["params"], 8_030_261_248u64);
    assert_eq!(p["params_read_per_step"], 8_030_261_248u64 - 128_256 * 4096);
    assert!(!peer(&["params", "--arch", "gpt-5"]).status.success());
}

#[test]
fn summary_computes_the_bandwidth_bound_and_lists_failed_steps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("steps.tsv"), "self-test\tok\t3\nserve-dummy-sweep\tok\t40\npeer-float32\ttimeout after 150s\t150\n").unwrap();
    std::fs::write(d.join("self-test.jsonl"), "{\"check\":\"a\",\"passed\":true}\n{\"check\":\"b\",\"passed\":false}\n").unwrap();
    std::fs::write(d.join("bandwidth.log"), "noise\n{\"gb_per_s\": 3000.0}\n").unwrap();
    let run = |c: u32, tok_s: f64, ttft: f64, tpot: f64| {
        serde_json::json!({"workload": {"concurrency": c}, "counts": {"ok": 10},
            "throughput": {"output_tokens_per_s": tok_s}, "latency_ms": {"ttft": {"p50": ttft}, "tpot": {"p50": tpot}}})
    };
    let report = serde_json::json!({"schema_version": 1, "runs": [run(1, 480.0, 12.0, 2.0), run(64, 9000.0, 80.0, 6.5)]});
    std::fs::write(d.join("serve-dummy.json"), report.to_string()).unwrap();
    std::fs::write(d.join("peer-bfloat16.log"), "batch 1\n{\"results\": [{\"batch\": 1, \"output_tok_s\": 90.5, \"ttft_ms\": 15.0}]}\n").unwrap();

    let out = peer(&["summarize", d.to_str().unwrap(), "--arch", "llama-3.2-1b", "--weight-bytes", "4"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("1/2 checks passed; failed: b"), "{text}");
    let row = |key: &str| -> String {
        text.lines().find(|l| l.starts_with(key)).map(|l| l[key.len()..].trim().to_string()).unwrap_or_default()
    };
    assert_eq!(row("batch-1 decode (1/TPOT)"), "500.0 tok/s", "{text}");
    // 4.94 GB per step at 3000 GB/s: 606.9 tok/s; 500 of them is 82 %.
    assert_eq!(row("bandwidth bound"), "4.94 GB/step (4 B/weight) / 3,000.0 GB/s = 606.9 tok/s; decode reaches 82%", "{text}");
    assert!(text.contains("serve dummy c=64"), "{text}");
    assert!(text.contains("transformers bfloat16 b=1"), "{text}");
    assert_eq!(row("transformers float32"), "not measured (see steps)", "{text}");
    assert!(text.contains("failed: peer-float32 (timeout after 150s)"), "{text}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap();
    assert!((summary["fraction_of_bound"].as_f64().unwrap() - 0.8238).abs() < 1e-3, "{summary}");
    assert!(d.join("summary.txt").exists());
}

#[test]
fn gpu_smoke_explains_what_is_missing() {
    let out_dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    Command::new(script("gpu-smoke")).arg("--help").assert().success().stdout(contains("--device D"));
    Command::new(script("gpu-smoke")).args(["--device", "tpu"]).assert().code(2).stderr(contains("--device must be cuda or cpu"));
    Command::new(script("gpu-smoke"))
        .args(["--device", "cuda", "--out"])
        .arg(out_dir.path())
        .arg("--dist")
        .arg(empty.path())
        .assert()
        .code(1)
        .stderr(contains("run scripts/build-cuda on the build machine and copy dist/ along"));
    assert!(out_dir.path().join("machine.txt").exists());
}

/// The whole script against the CPU build: every step runs (or is skipped with its reason), the sweep
/// reaches the dummy server, compare runs, and the summary table comes last.
#[test]
fn gpu_smoke_runs_every_step_against_the_cpu_build() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = StdCommand::new(script("gpu-smoke"))
        .args(["--device", "cpu", "--quick", "--out"])
        .arg(out_dir.path())
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_gpubench"))
        .env("GPUBENCH_MODEL", out_dir.path().join("no-such.gguf"))
        .output()
        .unwrap();
    let (stdout, stderr) = (stdout_of(&out), stderr_of(&out));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let steps = std::fs::read_to_string(out_dir.path().join("steps.tsv")).unwrap();
    for ok in [
        "self-test\tok",
        "gpu-check\t",
        "serve-dummy-load\tok",
        "serve-dummy-sweep\tok",
        "compare\tok",
        "share-load\tok",
        "share-sweep\tok",
        "bench\tok",
        "total\tok",
    ] {
        assert!(steps.contains(ok), "{ok} not in\n{steps}\n{stderr}");
    }
    assert!(steps.contains("serve-gguf\tskipped"), "{steps}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("serve-dummy.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["counts"]["ok"].as_u64().unwrap() > 0), "{report}");
    assert!(out_dir.path().join("serve-dummy-metrics.csv").exists());
    assert!(out_dir.path().join("compare/comparison.md").exists());
    let selftest = std::fs::read_to_string(out_dir.path().join("self-test.jsonl")).unwrap();
    assert!(selftest.lines().count() >= 8 && !selftest.contains("\"passed\":false"), "{selftest}");
    // Three servers at --gpu-memory-fraction 0.33, each measured against its share, each naming its KV cache.
    let share = std::fs::read_to_string(out_dir.path().join("share-memory.tsv")).unwrap();
    let after: Vec<&str> = share.lines().filter(|l| l.starts_with("after-load\t")).collect();
    assert_eq!(after.len(), 3, "{share}");
    assert!(after.iter().all(|l| l.ends_with("\tyes")), "{share}");
    let kv = std::fs::read_to_string(out_dir.path().join("share-kv.txt")).unwrap();
    assert_eq!(kv.lines().filter(|l| l.contains("KV cache ") && l.contains("--gpu-memory-fraction 0.33 of")).count(), 3, "{kv}");
    assert!(out_dir.path().join("bench/comparison.md").exists());
    assert!(stdout.contains("share server 3 (after-load)"), "{stdout}");
    // The table comes last.
    assert!(stdout.contains("serve dummy c=1"), "{stdout}");
    assert!(stdout.trim_end().lines().last().unwrap().starts_with("steps"), "{stdout}");
}
