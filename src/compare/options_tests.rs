//! Unit tests of `compare/options.rs`.

use super::*;

#[test]
fn phase_specs_parse_with_all_keys() {
    let p = parse_phase_spec("sharing=r/p3.json,metrics=r/p3.csv,pods-per-gpu=3,gpus=1,license-per-gpu-year=2000").unwrap();
    assert_eq!(p.label, "sharing");
    assert_eq!(p.report, PathBuf::from("r/p3.json"));
    assert_eq!(p.metrics, Some(PathBuf::from("r/p3.csv")));
    assert_eq!(p.pods_per_gpu, 3);
    assert_eq!(p.gpus, 1.0);
    assert_eq!(p.license_per_gpu_year, Some(2000.0));
    let p = parse_phase_spec("bare=p1.json").unwrap();
    assert_eq!((p.pods_per_gpu, p.gpus, p.metrics), (1, 1.0, None));
}

#[test]
fn malformed_phase_specs_say_what_is_wrong() {
    for (spec, needle) in [
        ("p1.json", "no NAME=RUN.json"),
        ("=p1.json", "must not be empty"),
        ("a=p1.json,pods-per-gpu=0", "pods-per-gpu '0'"),
        ("a=p1.json,gpus=-1", "gpus '-1'"),
        ("a=p1.json,colour=red", "unknown key 'colour'"),
        ("a=p1.json,metrics", "'metrics' is not KEY=VALUE"),
    ] {
        let e = parse_phase_spec(spec).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains(spec), "{spec}: {e}");
    }
}

#[test]
fn slos_and_percentages_parse() {
    assert_eq!(parse_slo("e2e=2s").unwrap(), ("e2e".into(), 2000.0));
    assert_eq!(parse_slo("TTFT=500ms").unwrap(), ("ttft".into(), 500.0));
    assert!(parse_slo("latency=2s").unwrap_err().to_string().contains("unknown metric"));
    assert!(parse_slo("e2e").is_err());
    assert_eq!(parse_percent("5%").unwrap(), 5.0);
    assert_eq!(parse_percent("2.5").unwrap(), 2.5);
    assert!(parse_percent("five").is_err());
}

#[test]
fn flags_win_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("compare.toml");
    std::fs::write(
        &cfg,
        "gpu_hour_cost = 3.5\ntarget_rpm = 100\nformat = [\"md\"]\n[slo]\ne2e = \"2s\"\n[[phase]]\nname = \"a\"\nreport = \"a.json\"\npods_per_gpu = 3\n",
    )
    .unwrap();
    let args = CompareArgs { config: Some(cfg), target_rpm: Some(50.0), ..Default::default() };
    let r = args.resolve().unwrap();
    assert_eq!(r.gpu_hour_cost, 3.5);
    assert_eq!(r.target_rpm, Some(50.0));
    assert_eq!(r.formats, vec![Format::Markdown]);
    assert_eq!(r.slo_ms.get("e2e"), Some(&2000.0));
    assert_eq!(r.phases[0].report, dir.path().join("a.json"));
    assert_eq!(r.phases[0].pods_per_gpu, 3);
}

#[test]
fn duplicate_names_and_empty_lists_are_refused() {
    let args = CompareArgs { reports: vec!["x/p1.json".into(), "y/p1.json".into()], ..Default::default() };
    assert!(args.resolve().unwrap_err().to_string().contains("two phases are named 'p1'"));
    assert!(CompareArgs::default().resolve().unwrap_err().to_string().contains("nothing to compare"));
    let args = CompareArgs { reports: vec!["p1.json".into()], max_regression: Some("5%".into()), ..Default::default() };
    assert!(args.resolve().unwrap_err().to_string().contains("needs --baseline"));
}
