//! Sharded load tests: N real `gpubench load-test --shard I/N --start-at` processes on
//! 127.0.0.1 against one fake server send exactly the single-process schedule, and
//! `gpubench report merge` makes one report of them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::fake_llm::{FakeConfig, FakeServer};
use common::{assert_valid_report, load_test};
use serde_json::Value;

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("gpubench")
}

/// `index -> intended_s` of a `--csv` file.
fn intended(path: &Path) -> BTreeMap<u64, f64> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (i, t) = (col("index"), col("intended_s"));
    reader.records().map(|r| r.unwrap()).map(|r| (r[i].parse().unwrap(), r[t].parse().unwrap())).collect()
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    // Whole seconds, UTC, by hand (the test has no date crate).
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let (y, mo, d) = civil(days as i64);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Starts shard `i` of `n` with `args`, writing `dir/s{i}.json` and `dir/s{i}.csv`.
fn spawn_shard(dir: &Path, i: u32, n: u32, start_at: &str, args: &[&str]) -> Child {
    Command::new(bin())
        .arg("load-test")
        .args(args)
        .args(["--shard", &format!("{i}/{n}"), "--start-at", start_at, "-q"])
        .arg("--out")
        .arg(dir.join(format!("s{i}.json")))
        .arg("--csv")
        .arg(dir.join(format!("s{i}.csv")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_all(children: Vec<Child>) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a shard failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn read(path: &Path) -> Value {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_valid_report(&v);
    v
}

fn merge(files: &[PathBuf], out: &Path) -> std::process::Output {
    Command::new(bin()).args(["report", "merge"]).args(files).arg("--out").arg(out).output().unwrap()
}

#[test]
fn shards_together_send_the_single_process_schedule_and_merge_into_one_report() {
    let server = FakeServer::start(FakeConfig { ttft: Duration::from_millis(2), tokens: 4, ..FakeConfig::default() });
    let url = server.url("/v1/completions");
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--url", url.as_str(), "--rate", "40", "--requests", "60", "--arrival", "poisson", "--seed", "7", "--max-tokens", "4"];

    // One process: the schedule to match.
    let single_csv = dir.path().join("single.csv");
    let mut args: Vec<&str> = flags.to_vec();
    let csv_arg = single_csv.to_string_lossy().into_owned();
    args.extend(["--csv", csv_arg.as_str()]);
    let single = load_test(&args);
    assert_eq!(single.code, 0, "{}", single.stderr);
    let want = intended(&single_csv);
    assert_eq!(want.len(), 60);
    let before = server.received().len();

    // Three shards, started together.
    let start_wall = SystemTime::now() + Duration::from_secs(4);
    let start_wall = SystemTime::UNIX_EPOCH + Duration::from_secs(start_wall.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 1);
    let start_instant = Instant::now() + start_wall.duration_since(SystemTime::now()).unwrap();
    let start_at = rfc3339(start_wall);
    let children: Vec<Child> = (0..3).map(|i| spawn_shard(dir.path(), i, 3, &start_at, &flags)).collect();
    wait_all(children);

    // Every request of the schedule was sent once, by its shard, at its intended offset.
    let mut got: BTreeMap<u64, f64> = BTreeMap::new();
    for i in 0..3u64 {
        let part = intended(&dir.path().join(format!("s{i}.csv")));
        assert_eq!(part.len(), 20, "shard {i} sends a third");
        for (index, t) in part {
            assert_eq!(index % 3, i, "request {index} belongs to shard {}", index % 3);
            assert!(got.insert(index, t).is_none(), "request {index} sent twice");
        }
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (index, t) in &got {
        assert!((t - want[index]).abs() < 1e-5, "request {index}: intended {t} s in the shards, {} s alone", want[index]);
    }
    // What the server saw: arrivals at the schedule's offsets from the common start.
    let mut arrivals: Vec<f64> =
        server.received()[before..].iter().map(|(at, _)| at.saturating_duration_since(start_instant).as_secs_f64()).collect();
    arrivals.sort_by(f64::total_cmp);
    let mut offsets: Vec<f64> = want.values().copied().collect();
    offsets.sort_by(f64::total_cmp);
    assert_eq!(arrivals.len(), 60);
    let worst = arrivals.iter().zip(&offsets).map(|(a, o)| (a - o).abs()).fold(0.0, f64::max);
    assert!(worst < 0.1, "arrivals differ from the schedule by up to {worst:.3} s");

    // Each shard says which it is and what its clock is against the target's.
    let shards: Vec<Value> = (0..3).map(|i| read(&dir.path().join(format!("s{i}.json")))).collect();
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s["shard"]["index"], i as u64);
        assert_eq!(s["shard"]["count"], 3);
        assert!(s["shard"]["clock_offset_ms"].as_f64().unwrap().abs() < 1000.0, "{}", s["shard"]);
        assert!(s["shard"]["start_at"].as_str().unwrap().starts_with(&start_at[..19]));
        assert!((s["client"]["target_rate"].as_f64().unwrap() - 40.0 / 3.0).abs() < 1e-3);
    }

    let files: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("s{i}.json"))).collect();
    let merged_path = dir.path().join("merged.json");
    let out = merge(&files, &merged_path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("merged 3 shards"));
    let m = read(&merged_path);
    let sum = |key: &str| shards.iter().map(|s| s["counts"][key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(m["counts"]["sent"], sum("sent"));
    assert_eq!(m["counts"]["sent"], 60);
    assert_eq!(m["counts"]["ok"], sum("ok"));
    assert_eq!(m["latency_ms"]["e2e"]["count"], 60);
    assert_eq!(m["merged_from"].as_array().unwrap().len(), 3);
    assert!(m.get("shard").is_none());
    assert!((m["client"]["target_rate"].as_f64().unwrap() - 40.0).abs() < 1e-3);
    let series_sent: u64 = m["series"].as_array().unwrap().iter().map(|p| p["sent"].as_u64().unwrap()).sum();
    assert_eq!(series_sent, 60);
}

#[test]
fn a_closed_loop_splits_its_workers_and_requests_and_the_index_can_come_from_the_job() {
    let server = FakeServer::start(FakeConfig { tokens: 2, ..FakeConfig::default() });
    let url = server.url("/v1/completions");
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--url", url.as_str(), "-c", "5", "--requests", "40", "--max-tokens", "2"];
    let children: Vec<Child> = (0..2u32)
        .map(|i| {
            Command::new(bin())
                .arg("load-test")
                .args(flags)
                .args(["--shards", "2", "--start-at", "+2s", "-q"])
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .arg("--out")
                .arg(dir.path().join(format!("s{i}.json")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_all(children);
    let shards: Vec<Value> = (0..2).map(|i| read(&dir.path().join(format!("s{i}.json")))).collect();
    assert_eq!(shards[0]["shard"]["workers"], 3);
    assert_eq!(shards[1]["shard"]["workers"], 2);
    assert_eq!(shards[0]["counts"]["sent"], 20);
    assert_eq!(shards[1]["counts"]["sent"], 20);
    assert_eq!(server.received().len(), 40);

    // compare merges a glob of shards on the fly, as one phase.
    let cmp = dir.path().join("cmp");
    let glob = format!("sharded={}", dir.path().join("s*.json").display());
    let out = Command::new(bin()).args(["compare", "--phase", &glob, "--out-dir"]).arg(&cmp).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let comparison: Value = serde_json::from_str(&std::fs::read_to_string(cmp.join("comparison.json")).unwrap()).unwrap();
    let text = comparison.to_string();
    assert!(text.contains("sharded"), "{text}");
}

#[test]
fn shard_flags_and_merges_that_make_no_sense_are_refused_with_the_reason() {
    let server = FakeServer::start(FakeConfig::default());
    let url = server.url("/v1/completions");
    let run = load_test(&["--url", &url, "-c", "2", "--requests", "4", "--shard", "0/3"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("2 workers cannot be split over 3 shards"), "{}", run.stderr);
    let run = load_test(&["--url", &url, "-c", "2,4", "--requests", "4", "--shard", "0/2"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("measures one point"), "{}", run.stderr);
    let run = load_test(&["--url", &url, "-c", "2", "--requests", "4", "--shards", "2"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("JOB_COMPLETION_INDEX"), "{}", run.stderr);

    // Two shards of different workloads: refused, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    for (path, shard, tokens) in [(&a, "0/2", "4"), (&b, "1/2", "8")] {
        let out = Command::new(bin())
            .args(["load-test", "--url", &url, "-c", "2", "--requests", "4", "-q", "--max-tokens", tokens, "--shard", shard, "--out"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = merge(&[a.clone(), b.clone()], &dir.path().join("m.json"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("b.json") && err.contains("max_tokens"), "{err}");
    let out = merge(&[a], &dir.path().join("m.json"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards 1 of 2 are missing"));
    assert!(!dir.path().join("m.json").exists(), "nothing is written when the merge is refused");
}
