//! `gpubench compare` end to end: the real binary on the fixture reports in
//! `fixtures/compare/` (see its generate.py).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use gpubench::compare::{compare, CompareRequest, PhaseInput};
use gpubench::report::{Comparison, RunReportFile};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/compare")
}

/// The three fixture phases, as a user would name them.
const PHASES: [&str; 6] = [
    "--phase",
    "bare-metal=bare-metal.json,metrics=bare-metal-gpu.csv",
    "--phase",
    "kubernetes=kubernetes.json",
    "--phase",
    "sharing=sharing.json,metrics=sharing-gpu.csv,pods-per-gpu=3",
];

fn gpubench() -> Command {
    let mut cmd = Command::cargo_bin("gpubench").unwrap();
    cmd.current_dir(fixtures()).env("NO_COLOR", "1");
    cmd
}

fn run_compare(out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    gpubench()
        .arg("compare")
        .args(PHASES)
        .args(["--target-rpm", "180", "--slo", "e2e=2s", "--gpu-hour-cost", "2", "--out-dir"])
        .arg(out)
        .args(extra)
        .assert()
}

#[test]
fn fixtures_are_valid_run_reports() {
    for name in ["bare-metal.json", "kubernetes.json", "sharing.json", "sharing-slower.json", "no-data.json"] {
        let file = RunReportFile::load(&fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!file.runs().is_empty(), "{name}");
    }
}

#[test]
fn markdown_report_is_stable() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let out = run_compare(a.path(), &[]).success().get_output().stdout.clone();
    let stdout = String::from_utf8(out).unwrap();
    assert!(stdout.contains("Report: "), "{stdout}");
    run_compare(b.path(), &[]).success();
    let md = std::fs::read_to_string(a.path().join("comparison.md")).unwrap();
    let md_again = std::fs::read_to_string(b.path().join("comparison.md")).unwrap();
    assert_eq!(md, md_again, "same inputs must give the same markdown");
    insta::assert_snapshot!("comparison_md", md);
    // The terminal rendering, without the lines naming the temporary folder.
    let table: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("Report: ") && !l.starts_with("Open: ")).collect();
    insta::assert_snapshot!("comparison_stdout", table.join("\n"));
}

#[test]
fn library_computes_cost_gpus_and_winners() {
    let dir = fixtures();
    let mut bare = PhaseInput::from_file(dir.join("bare-metal.json"));
    bare.metrics = Some(dir.join("bare-metal-gpu.csv"));
    let k8s = PhaseInput::from_file(dir.join("kubernetes.json"));
    let mut sharing = PhaseInput::from_file(dir.join("sharing.json"));
    sharing.pods_per_gpu = 3;
    sharing.metrics = Some(dir.join("sharing-gpu.csv"));
    let mut request = CompareRequest::new(vec![bare, k8s, sharing], None);
    request.target_rpm = Some(180.0);
    request.slo_ms.insert("e2e".into(), 2000.0);
    let c = compare(&request).unwrap().comparison;

    let p = |l: &str| c.phase(l).unwrap();
    // Operating points: the fastest point within e2e p95 <= 2 s.
    assert_eq!(p("bare-metal").operating_point, "c2");
    assert_eq!(p("kubernetes").operating_point, "c1");
    assert_eq!(p("sharing").operating_point, "c3");
    // GPUs needed = ceil(180 / rpm per GPU): 180/61 -> 3, 180/55.8 -> 4, 180/183 -> 1.
    assert_eq!(p("bare-metal").gpus_needed, Some(3));
    assert_eq!(p("kubernetes").gpus_needed, Some(4));
    assert_eq!(p("sharing").gpus_needed, Some(1));
    // Yearly cost = GPUs x 2.00 x 8760.
    assert_eq!(p("bare-metal").yearly_cost, Some(52_560.0));
    assert_eq!(p("kubernetes").yearly_cost, Some(70_080.0));
    assert_eq!(p("sharing").yearly_cost, Some(17_520.0));
    // 1 GPU at 2.00/h making 366 tokens/s (183 req/min x 120 tokens) = 1.3176M tokens/h.
    let per_m = p("sharing").cost_per_million_output_tokens.unwrap();
    assert!((per_m - 2.0 / 1.3176).abs() < 1e-3, "{per_m}");
    // Utilization from the metric series; absent without one.
    assert!((p("sharing").util_mean_pct.unwrap() - 71.0).abs() < 3.0);
    assert_eq!(p("kubernetes").util_mean_pct, None);

    let winners = |m: &str| c.rows.iter().find(|r| r.metric == m).unwrap().winners.clone();
    assert_eq!(winners("requests_per_min"), vec!["sharing"]);
    assert_eq!(winners("latency_p95_ms"), vec!["kubernetes"]);
    assert_eq!(winners("yearly_cost"), vec!["sharing"]);
    assert_eq!(winners("pods_per_gpu"), vec!["sharing"]);
    assert_eq!(winners("util_mean_pct"), vec!["sharing"]);
    assert!(winners("gpus").is_empty());
    // The verdict is written from these numbers.
    assert!(c.verdict.contains("sharing gets the most out of a GPU: 183 req/min per GPU"), "{}", c.verdict);
    assert!(c.verdict.contains("$17,520") && c.verdict.contains("$70,080"), "{}", c.verdict);
}

#[test]
fn without_slo_every_point_counts_and_target_defaults_to_best() {
    let dir = fixtures();
    let request = CompareRequest::new(
        vec![PhaseInput::from_file(dir.join("bare-metal.json")), PhaseInput::from_file(dir.join("sharing.json"))],
        None,
    );
    let c = compare(&request).unwrap().comparison;
    assert_eq!(c.phase("sharing").unwrap().operating_point, "c6");
    assert!(c.cost_model.target_rpm_is_default);
    assert_eq!(c.cost_model.target_rpm, 190.2);
    assert_eq!(c.phase("sharing").unwrap().gpus_needed, Some(1));
    assert_eq!(c.phase("bare-metal").unwrap().gpus_needed, Some(4));
}

#[test]
fn csv_json_and_charts_are_written() {
    let out = tempfile::tempdir().unwrap();
    run_compare(out.path(), &[]).success();
    let json = Comparison::load(&out.path().join("comparison.json")).unwrap();
    assert_eq!(json.phases.len(), 3);
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("comparison.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&Comparison::json_schema()).unwrap();
    assert!(validator.is_valid(&raw), "comparison.json does not match its schema");
    let csv = std::fs::read_to_string(out.path().join("comparison.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("phase,pods_per_gpu,gpus,operating_point"));
    assert_eq!(lines.count(), 3);

    let md = std::fs::read_to_string(out.path().join("comparison.md")).unwrap();
    for chart in ["throughput.png", "saturation.png", "latency.png", "utilization.png", "cost.png"] {
        assert!(md.contains(&format!("]({chart})")), "{chart} not embedded");
        let path = out.path().join(chart);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 10_000, "{chart}: {size} bytes");
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (1000, 600), "{chart}");
        // The caption (top 50 rows) has dark pixels: the embedded font drew text.
        let bpp = info.line_size / info.width as usize;
        let dark = buf[..info.line_size * 50].chunks(bpp).filter(|px| px[..3].iter().all(|&c| c < 100)).count();
        assert!(dark > 200, "{chart}: caption has {dark} dark pixels");
        // The legend has a column of its own right of the plot: below its few entries
        // that column is empty, where a legend inside the plot would leave data drawn.
        if chart != "cost.png" {
            let coloured = (200..590)
                .flat_map(|y| (800..1000).map(move |x| (x, y)))
                .filter(|&(x, y)| {
                    let px = &buf[y * info.line_size + x * bpp..][..3];
                    px.iter().max().unwrap() - px.iter().min().unwrap() > 80
                })
                .count();
            assert_eq!(coloured, 0, "{chart}: data drawn in the legend's column");
        }
    }
}

#[test]
fn json_flag_prints_the_comparison() {
    let out = tempfile::tempdir().unwrap();
    let stdout = run_compare(out.path(), &["--json", "--format", "json"]).success().get_output().stdout.clone();
    let c: Comparison = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(c.cost_model.target_rpm, 180.0);
    assert!(!out.path().join("comparison.md").exists());
    assert!(!out.path().join("comparison.html").exists());
    assert!(!out.path().join("latency.png").exists());
}

#[test]
fn regression_gate_names_the_metric_and_exits_3() {
    let base = tempfile::tempdir().unwrap();
    run_compare(base.path(), &["--format", "json"]).success();
    let baseline = base.path().join("comparison.json");
    let now = tempfile::tempdir().unwrap();

    // Same inputs: nothing regressed.
    let baseline_arg = baseline.to_str().unwrap();
    run_compare(now.path(), &["--format", "json", "--baseline", baseline_arg]).code(0);
    let out = gpubench()
        .arg("compare")
        .args(["--phase", "sharing=sharing-slower.json", "--slo", "e2e=2s", "--format", "md", "--baseline"])
        .arg(&baseline)
        .args(["--max-regression", "5%", "--out-dir"])
        .arg(now.path())
        .assert()
        .code(3);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("sharing requests_per_min 7.1% worse (183 -> 170)"), "{stderr}");
    assert!(stderr.contains("latency_p95_ms"), "{stderr}");
    // The report is still written.
    assert!(now.path().join("comparison.md").exists());

    gpubench()
        .arg("compare")
        .args(["--phase", "sharing=sharing-slower.json", "--slo", "e2e=2s", "--format", "md", "--baseline"])
        .arg(&baseline)
        .args(["--max-regression", "50%", "--out-dir"])
        .arg(now.path())
        .assert()
        .code(0);
    // Faster is never a regression: the old run gated against the slower one passes.
    let slower = tempfile::tempdir().unwrap();
    gpubench()
        .arg("compare")
        .args(["--phase", "sharing=sharing-slower.json", "--slo", "e2e=2s", "--format", "json", "--out-dir"])
        .arg(slower.path())
        .assert()
        .success();
    let slower_baseline = slower.path().join("comparison.json");
    run_compare(now.path(), &["--format", "json", "--baseline", slower_baseline.to_str().unwrap(), "--max-regression", "0"]).code(0);

    // A baseline with none of these phases is bad input, not a pass.
    let assert = gpubench()
        .arg("compare")
        .args(["sharing-slower.json", "--format", "json", "--baseline"])
        .arg(&baseline)
        .arg("--out-dir")
        .arg(now.path())
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(stderr.contains("no phase of this comparison") && stderr.contains("comparison.json"), "{stderr}");
}

fn bad_input(args: &[&str], needles: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let assert = gpubench().arg("compare").args(args).arg("--out-dir").arg(out.path()).assert().code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: no '{n}' in {stderr}");
    }
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
    assert!(stderr.matches("(os error").count() <= 1, "the cause is said once: {stderr}");
}

#[test]
fn bad_inputs_name_the_file_and_field() {
    bad_input(&["missing.json"], &["missing.json", "phase 'missing'"]);
    bad_input(&["old-schema.json"], &["old-schema.json", "schema_version 0"]);
    bad_input(&["kubernetes.json", "no-data.json"], &["no-data.json", "no data", "counts.ok"]);
    bad_input(&["--phase", "a=kubernetes.json,pods-per-gpu=x"], &["--phase 'a=kubernetes.json,pods-per-gpu=x'", "pods-per-gpu"]);
    bad_input(&["--phase", "kubernetes.json"], &["NAME=RUN.json"]);
    bad_input(&["--phase", "a=kubernetes.json,metrics=nope.csv"], &["nope.csv"]);
    bad_input(&["--phase", "a=kubernetes.json,metrics=kubernetes.json"], &["kubernetes.json", "row 1"]);
    bad_input(&["kubernetes.json", "--slo", "itl=50ms"], &["kubernetes.json", "latency_ms.itl"]);
    bad_input(&["kubernetes.json", "--format", "pdf"], &["--format", "pdf"]);
    bad_input(&["kubernetes.json", "--baseline", "kubernetes.json"], &["baseline", "kubernetes.json"]);
    bad_input(&[], &["nothing to compare"]);
}

#[test]
fn config_file_gives_phases_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let config = dir.path().join("compare.toml");
    std::fs::write(
        &config,
        format!(
            "target_rpm = 120\ngpu_hour_cost = 3.0\nlicense_per_gpu_year = 1000\nout_dir = \"out\"\nformat = [\"json\"]\n[slo]\ne2e = \"1.5s\"\n\
             [[phase]]\nname = \"bare\"\nreport = \"{0}/bare-metal.json\"\n\
             [[phase]]\nname = \"shared\"\nreport = \"{0}/sharing.json\"\nmetrics = \"{0}/sharing-gpu.csv\"\npods_per_gpu = 3\n",
            fx.display()
        ),
    )
    .unwrap();
    gpubench().arg("compare").arg("--config").arg(&config).assert().success();
    let c = Comparison::load(&dir.path().join("out/comparison.json")).unwrap();
    assert_eq!(c.cost_model.target_rpm, 120.0);
    assert_eq!(c.cost_model.slo_ms.get("e2e"), Some(&1500.0));
    // Within 1.5 s only bare-metal's c1 (58.2 req/min) is left: 120 / 58.2 -> 3 GPUs.
    let bare = c.phase("bare").unwrap();
    assert_eq!((bare.operating_point.as_str(), bare.gpus_needed), ("c1", Some(3)));
    assert_eq!(bare.yearly_cost, Some(3.0 * (3.0 * 8760.0 + 1000.0)));
    assert_eq!(c.phase("shared").unwrap().pods_per_gpu, 3);
    assert!(!dir.path().join("out/comparison.md").exists());
}

#[test]
fn a_phase_that_never_meets_the_slo_gets_no_cost() {
    let dir = fixtures();
    let mut request = CompareRequest::new(
        vec![PhaseInput::from_file(dir.join("bare-metal.json")), PhaseInput::from_file(dir.join("sharing.json"))],
        None,
    );
    request.slo_ms.insert("e2e".into(), 1070.0);
    request.target_rpm = Some(100.0);
    let c = compare(&request).unwrap().comparison;
    let bare = c.phase("bare-metal").unwrap();
    assert!(!bare.meets_slo);
    assert_eq!((bare.gpus_needed, bare.yearly_cost), (None, None));
    // Its numbers are those of its fastest point.
    assert_eq!(bare.operating_point, "c4");
    let sharing = c.phase("sharing").unwrap();
    assert_eq!((sharing.operating_point.as_str(), sharing.gpus_needed), ("c1", Some(2)));
    assert!(c.verdict.contains("bare-metal met the SLO at no measured point"), "{}", c.verdict);
    assert!(c.notes.iter().any(|n| n.starts_with("bare-metal: no point met the SLOs")));
}

/// A CPU-only run (the committed example's inputs) names the CPU in every human label,
/// keeps the JSON and CSV keys, and records the device kind beside them.
#[test]
fn a_cpu_run_says_cpu_not_gpu() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let phase = |name: &str, pods: u32| {
        let base = repo.join("reports/example-cpu");
        format!("{name}={},metrics={},pods-per-gpu={pods}", base.join(format!("{name}.json")).display(), base.join(format!("{name}-metrics.csv")).display())
    };
    Command::cargo_bin("gpubench")
        .unwrap()
        .args(["compare", "--phase", &phase("bare-metal", 1), "--phase", &phase("sharing", 3), "--format", "md,csv,json", "--out-dir"])
        .arg(dir.path())
        .assert()
        .success();
    let c = Comparison::load(&dir.path().join("comparison.json")).unwrap();
    assert_eq!(c.device_kind.as_deref(), Some("cpu"));
    assert!(c.phases.iter().all(|p| p.device_kind.as_deref() == Some("cpu")));
    let title = |m: &str| c.rows.iter().find(|r| r.metric == m).unwrap().title.clone();
    assert_eq!(title("pods_per_gpu"), "Pods per CPU");
    assert_eq!(title("gpus"), "CPUs used");
    assert!(title("gpus_needed").starts_with("CPUs for "), "{}", title("gpus_needed"));
    assert!(c.verdict.contains("per CPU") && !c.verdict.contains("GPU"), "{}", c.verdict);
    let md = std::fs::read_to_string(dir.path().join("comparison.md")).unwrap();
    assert!(md.contains("- CPU hour: $2.00") && !md.contains("GPU"), "{md}");
    let csv = std::fs::read_to_string(dir.path().join("comparison.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.contains("gpus_needed") && header.ends_with(",device_kind"), "{header}");
    assert!(csv.lines().skip(1).all(|l| l.ends_with(",cpu")), "{csv}");
}
