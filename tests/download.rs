//! `gpubench download` against an in-process fake Hub (and its fake CDN) on loopback.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bytes::Bytes;
use common::fake_hub::{FakeFile, FakeHub, FakeRepo, Options};

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const TOKEN: &str = "hf_TopSecretTokenValue123";

fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn model_repo() -> FakeRepo {
    FakeRepo::new("org/model")
        .commit(
            C1,
            "main",
            vec![
                FakeFile::text(".gitattributes", "*.safetensors filter=lfs\n"),
                FakeFile::text("config.json", "{\"hidden_size\": 64}\n"),
                FakeFile::text("tokenizer.json", "{\"model\": {}}\n"),
                FakeFile::lfs("model.safetensors", noise(1 << 20, 1)),
                FakeFile::lfs("onnx/model.onnx", noise(3000, 2)),
                FakeFile::text("sub/dir/notes.txt", "nested\n"),
            ],
        )
        .commit(C2, "v1", vec![FakeFile::text("config.json", "{\"hidden_size\": 32}\n")])
}

fn file<'a>(repo: &'a FakeRepo, commit: &str, path: &str) -> &'a FakeFile {
    repo.commits[commit].iter().find(|f| f.path == path).expect("file in repo")
}

/// The binary with a clean Hugging Face environment pointing at `hub`.
fn gpubench(hub: &str, home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("gpubench").expect("binary");
    for var in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN_PATH", "XDG_CACHE_HOME"] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home).env("HF_HOME", home.join("hf")).env("HF_ENDPOINT", hub).env("RUST_LOG", "info");
    cmd.timeout(std::time::Duration::from_secs(60));
    cmd
}

fn stdout_last_line(out: &std::process::Output) -> PathBuf {
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.lines().last().unwrap_or("").trim())
}

#[test]
fn full_snapshot_lands_in_the_cache_layout_and_is_not_fetched_twice() {
    let repo = model_repo();
    // Tree pages link to the upstream host, as through a mirror: the client stays on its endpoint.
    let hub = FakeHub::start(vec![repo.clone()], Options { foreign_links: true, ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model"]).env("HF_TOKEN", TOKEN).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(TOKEN));

    let cache = home.path().join("hf/hub/models--org--model");
    let snapshot = cache.join("snapshots").join(C1);
    assert_eq!(stdout_last_line(&out), snapshot);
    assert_eq!(std::fs::read_to_string(cache.join("refs/main")).unwrap(), C1);
    assert!(home.path().join("hf/hub/CACHEDIR.TAG").exists());
    for f in &repo.commits[C1] {
        let pointer = f.path.split('/').fold(snapshot.clone(), |p, s| p.join(s));
        assert_eq!(std::fs::read(&pointer).unwrap(), f.content, "{}", f.path);
        let target = std::fs::read_link(&pointer).unwrap();
        let depth = f.path.matches('/').count();
        assert_eq!(target, PathBuf::from(format!("{}../../blobs/{}", "../".repeat(depth), f.etag())));
    }
    let stats = hub.stats();
    assert!(stats.tree_pages > 2, "the tree listing is paginated: {}", stats.tree_pages);
    assert_eq!(stats.cdn_auth, 0, "the token must not be sent to the CDN");
    assert!(stats.hub_auth.iter().all(|a| a == &format!("Bearer {TOKEN}")) && !stats.hub_auth.is_empty());
    let big = file(&repo, C1, "model.safetensors");
    assert_eq!(stats.cdn_bytes[&big.sha256()], big.content.len() as u64);

    // Second run: everything is present, nothing is fetched, not even a HEAD.
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model"]).output().unwrap();
    assert!(out.status.success());
    let again = hub.stats();
    assert_eq!(again.cdn_gets, stats.cdn_gets);
    assert_eq!(again.hub_file_gets, stats.hub_file_gets);
    assert_eq!(again.heads, stats.heads);
}

#[test]
fn include_and_exclude_select_files() {
    let hub = FakeHub::start(vec![model_repo()], Options::default());
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("c");
    let out = gpubench(&hub.url, home.path())
        .args(["download", "org/model", "--include", "*.json", "--include", "onnx/", "--exclude", "tokenizer*", "--json", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = summary["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(names, ["config.json", "onnx/model.onnx"]);
    assert_eq!(summary["commit"], C1);
    let snapshot = cache.join("models--org--model/snapshots").join(C1);
    assert!(snapshot.join("config.json").exists());
    assert!(!snapshot.join("tokenizer.json").exists());
    assert!(!snapshot.join("model.safetensors").exists());

    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "--include", "*.bin"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches"));
}

#[test]
fn revisions_are_pinned_by_tag_or_commit() {
    let hub = FakeHub::start(vec![model_repo()], Options::default());
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hf/hub/models--org--model");
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "config.json", "--revision", "v1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = stdout_last_line(&out);
    assert_eq!(path, cache.join("snapshots").join(C2).join("config.json"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"hidden_size\": 32}\n");
    assert_eq!(std::fs::read_to_string(cache.join("refs/v1")).unwrap(), C2);

    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "config.json", "--revision", C1]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(stdout_last_line(&out)).unwrap(), "{\"hidden_size\": 64}\n");
    assert!(!cache.join("refs").join(C1).exists(), "a commit id is not a ref");

    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "--revision", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revision 'nope' does not exist"));
}

#[test]
fn local_dir_gets_real_files_and_sidecars_and_skips_complete_files() {
    let repo = model_repo();
    let hub = FakeHub::start(vec![repo.clone()], Options::default());
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("model");
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "--local-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout_last_line(&out), dir);
    for f in &repo.commits[C1] {
        let p = dir.join(&f.path);
        assert!(!p.is_symlink());
        assert_eq!(std::fs::read(&p).unwrap(), f.content);
        let side = std::fs::read_to_string(dir.join(".cache/huggingface/download").join(format!("{}.metadata", f.path))).unwrap();
        let lines: Vec<&str> = side.lines().collect();
        assert_eq!(lines[0], C1);
        assert_eq!(lines[1], f.etag());
        assert!(lines[2].parse::<f64>().unwrap() > 1.6e9);
    }
    assert_eq!(std::fs::read_to_string(dir.join(".cache/huggingface/.gitignore")).unwrap(), "*");
    assert!(!home.path().join("hf/hub").exists(), "--local-dir does not fill the cache");

    let before = hub.stats();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "--local-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success());
    let after = hub.stats();
    assert_eq!(after.cdn_gets, before.cdn_gets);
    assert_eq!(after.hub_file_gets, before.hub_file_gets);

    // A file changed by hand is fetched again.
    std::fs::write(dir.join("config.json"), "edited").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(dir.join("config.json")).unwrap().set_modified(later).unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "--local-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(dir.join("config.json")).unwrap(), "{\"hidden_size\": 64}\n");
    assert_eq!(hub.stats().hub_file_gets["config.json"], before.hub_file_gets["config.json"] + 1);
}

#[test]
fn a_dropped_connection_resumes_and_refetches_less_than_a_chunk() {
    let repo = model_repo();
    let chunk = 16 * 1024;
    let options = Options { flaky_after: Some(400_000), chunk, ..Options::default() };
    let hub = FakeHub::start(vec![repo.clone()], options);
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "model.safetensors"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let big = file(&repo, C1, "model.safetensors");
    assert_eq!(std::fs::read(stdout_last_line(&out)).unwrap(), big.content);
    let stats = hub.stats();
    let sent = stats.cdn_bytes[&big.sha256()];
    let size = big.content.len() as u64;
    assert!(sent >= size && sent < size + chunk as u64, "sent {sent} bytes for a {size}-byte file");
    assert_eq!(stats.cdn_gets[&big.sha256()], 2);
    assert!(stats.cdn_ranges.iter().any(|r| r.starts_with("bytes=") && r != "bytes=0-"), "{:?}", stats.cdn_ranges);
}

#[test]
fn an_interrupted_earlier_download_is_resumed_from_its_incomplete_file() {
    let repo = model_repo();
    let hub = FakeHub::start(vec![repo.clone()], Options::default());
    let home = tempfile::tempdir().unwrap();
    let big = file(&repo, C1, "model.safetensors");
    let blobs = home.path().join("hf/hub/models--org--model/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let kept = 300_000usize;
    std::fs::write(blobs.join(format!("{}.incomplete", big.sha256())), &big.content[..kept]).unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "model.safetensors", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files"][0]["resumed_bytes"], kept as u64);
    assert_eq!(hub.stats().cdn_bytes[&big.sha256()], (big.content.len() - kept) as u64);
    assert_eq!(std::fs::read(blobs.join(big.sha256())).unwrap(), big.content);
    assert!(!blobs.join(format!("{}.incomplete", big.sha256())).exists());
}

#[test]
fn a_server_ignoring_range_restarts_cleanly() {
    let repo = model_repo();
    let hub = FakeHub::start(vec![repo.clone()], Options { ignore_range: true, ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let big = file(&repo, C1, "model.safetensors");
    let blobs = home.path().join("hf/hub/models--org--model/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{}.incomplete", big.sha256())), &big.content[..300_000]).unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "model.safetensors"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(blobs.join(big.sha256())).unwrap(), big.content);
    assert_eq!(hub.stats().cdn_bytes[&big.sha256()], big.content.len() as u64);
    assert_eq!(hub.stats().cdn_ranges, vec!["bytes=300000-".to_string()]);
}

#[test]
fn corrupt_bytes_fail_loudly_and_leave_nothing_behind() {
    let repo = model_repo();
    let big = file(&repo, C1, "model.safetensors").clone();
    let options = Options { corrupt: HashSet::from([big.sha256()]), ..Options::default() };
    let hub = FakeHub::start(vec![repo], options);
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "model.safetensors"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'model.safetensors' is corrupt") && stderr.contains(&big.sha256()), "{stderr}");
    let blobs = home.path().join("hf/hub/models--org--model/blobs");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0, "neither the blob nor the partial stays");
    assert!(!home.path().join("hf/hub/models--org--model/snapshots").join(C1).join("model.safetensors").exists());
}

#[test]
fn offline_answers_from_the_cache_alone() {
    let home = tempfile::tempdir().unwrap();
    let snapshot;
    {
        let hub = FakeHub::start(vec![model_repo()], Options::default());
        let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "--include", "*.json"]).output().unwrap();
        assert!(out.status.success());
        snapshot = stdout_last_line(&out);
    }
    let gone = "http://127.0.0.1:9";
    let out = gpubench(gone, home.path()).args(["download", "org/model", "--offline"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout_last_line(&out), snapshot);

    let out = gpubench(gone, home.path()).args(["download", "org/model", "config.json"]).env("HF_HUB_OFFLINE", "1").output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout_last_line(&out), snapshot.join("config.json"));

    // The Hub unreachable without --offline: the cache still serves, with a warning.
    let out = gpubench(gone, home.path()).args(["download", "org/model"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));

    let out = gpubench(gone, home.path()).args(["download", "org/model", "model.safetensors", "--offline"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("offline mode is on"));
    let out = gpubench(gone, home.path()).args(["download", "org/other", "--offline"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn gated_repos_need_a_token_that_never_shows() {
    let repo = FakeRepo::new("org/gated").commit(C1, "main", vec![FakeFile::lfs("w.bin", noise(5000, 3))]).gated(TOKEN);
    let hub = FakeHub::start(vec![repo], Options::default());
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/gated"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is gated") && stderr.contains("HF_TOKEN"), "{stderr}");

    let wrong = "hf_WrongButSecret999";
    let out = gpubench(&hub.url, home.path()).args(["download", "org/gated", "--token", wrong]).env("RUST_LOG", "trace").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(wrong));

    // The token from $HF_HOME/token, as `hf auth login` writes it.
    std::fs::create_dir_all(home.path().join("hf")).unwrap();
    std::fs::write(home.path().join("hf/token"), format!("{TOKEN}\n")).unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/gated", "--json"]).env("RUST_LOG", "trace").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(TOKEN));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(TOKEN));
    assert_eq!(hub.stats().cdn_auth, 0);
}

#[test]
fn missing_things_get_errors_that_say_what_to_do() {
    let hub = FakeHub::start(vec![model_repo()], Options::default());
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/missing"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let repo_err = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").replace(&hub.url, "[HUB]");
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "nope.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let entry_err = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").to_string();
    let out = gpubench(&hub.url, home.path()).args(["download", "not a repo"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let usage_err = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").to_string();
    insta::assert_snapshot!("download_errors", format!("{repo_err}\n{entry_err}\n{usage_err}"));
}

#[test]
fn file_names_escaping_the_target_are_refused() {
    for evil in ["../evil.txt", "/tmp/abs-evil.txt", "a/../../evil.txt"] {
        let repo = FakeRepo::new("org/evil").commit(C1, "main", vec![FakeFile::text("ok.txt", "ok"), FakeFile::text(evil, "pwned")]);
        let hub = FakeHub::start(vec![repo], Options::default());
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("a/b/local");
        let out = gpubench(&hub.url, home.path()).args(["download", "org/evil", "--local-dir"]).arg(&dir).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{evil}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refusing file name"), "{stderr}");
        assert!(!home.path().join("a/b/evil.txt").exists() && !home.path().join("a/evil.txt").exists());
        assert!(!Path::new("/tmp/abs-evil.txt").exists());
        // Excluding it is the way out.
        let out = gpubench(&hub.url, home.path()).args(["download", "org/evil", "--exclude", "*evil*", "--local-dir"]).arg(&dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn renamed_repos_follow_relative_redirects() {
    let options = Options { renamed: [("old/model".to_string(), "org/model".to_string())].into(), ..Options::default() };
    let hub = FakeHub::start(vec![model_repo()], options);
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "old/model", "model.safetensors"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout_last_line(&out).starts_with(home.path().join("hf/hub/models--old--model")));
}

#[test]
fn dry_run_lists_without_downloading() {
    let hub = FakeHub::start(vec![model_repo()], Options::default());
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "--dry-run", "--exclude", "*.txt"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).replace(&home.path().display().to_string(), "[HOME]");
    insta::assert_snapshot!("download_dry_run", text);
    assert!(hub.stats().cdn_gets.is_empty());
    assert!(!home.path().join("hf/hub/models--org--model/blobs").exists());
}

#[test]
fn a_busy_hub_is_retried_with_backoff() {
    let repo = model_repo();
    let hub = FakeHub::start(vec![repo.clone()], Options { busy: 2, ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "config.json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(stdout_last_line(&out)).unwrap(), file(&repo, C1, "config.json").content);
    assert_eq!(hub.stats().busy_answers, 2);
}

const BIG: usize = 20 << 20;

fn big_repo() -> FakeRepo {
    FakeRepo::new("org/big").commit(C1, "main", vec![FakeFile::lfs("big.bin", noise(BIG, 7))])
}

fn json_out(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON summary")
}

/// `bytes=a-b` -> (a, b).
fn bounded_range(r: &str) -> Option<(u64, u64)> {
    let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[test]
fn large_files_come_in_parallel_ranges_and_survive_a_drop_mid_range() {
    let repo = big_repo();
    let chunk = 16 * 1024;
    let hub = FakeHub::start(vec![repo.clone()], Options { flaky_after: Some(300_000), chunk, ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/big", "big.bin", "--connections", "4", "--json"]).output().unwrap();
    let summary = json_out(&out);
    let big = file(&repo, C1, "big.bin");
    let blobs = home.path().join("hf/hub/models--org--big/blobs");
    assert_eq!(std::fs::read(blobs.join(big.sha256())).unwrap(), big.content);
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 1, "no partial or sidecar left");
    let stats = hub.stats();
    let ranges: Vec<(u64, u64)> = stats.cdn_ranges.iter().filter_map(|r| bounded_range(r)).collect();
    assert_eq!(ranges.len(), stats.cdn_ranges.len(), "every request names its range: {:?}", stats.cdn_ranges);
    assert!(ranges.len() >= 5, "several pieces: {:?}", stats.cdn_ranges);
    // The dropped piece was asked again from where it broke off, not from its start.
    assert!(ranges.iter().any(|(a, _)| a % (1 << 20) != 0), "{:?}", stats.cdn_ranges);
    let sent = stats.cdn_bytes[&big.sha256()];
    assert!(sent >= BIG as u64 && sent < (BIG + chunk) as u64, "sent {sent} bytes for a {BIG}-byte file");
    assert_eq!(summary["files"][0]["fetched_bytes"], BIG as u64);
}

#[test]
fn parallel_ranges_fall_back_to_one_stream_when_the_server_ignores_range() {
    let repo = big_repo();
    let hub = FakeHub::start(vec![repo.clone()], Options { ignore_range: true, ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/big", "big.bin", "--connections", "4"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let big = file(&repo, C1, "big.bin");
    assert_eq!(std::fs::read(stdout_last_line(&out)).unwrap(), big.content);
    let stats = hub.stats();
    // Range requests answered 200, then one plain GET for the whole file.
    assert!(!stats.cdn_ranges.is_empty() && stats.cdn_ranges.iter().all(|r| bounded_range(r).is_some()), "{:?}", stats.cdn_ranges);
    assert_eq!(stats.cdn_gets[&big.sha256()] as usize, stats.cdn_ranges.len() + 1);
    let blobs = home.path().join("hf/hub/models--org--big/blobs");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 1, "no partial or sidecar left");
}

#[test]
fn parallel_ranges_detect_corrupt_bytes_and_leave_nothing_behind() {
    let repo = big_repo();
    let big = file(&repo, C1, "big.bin").clone();
    let hub = FakeHub::start(vec![repo], Options { corrupt: HashSet::from([big.sha256()]), ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/big", "big.bin", "--connections", "4"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'big.bin' is corrupt") && stderr.contains(&big.sha256()), "{stderr}");
    assert!(hub.stats().cdn_ranges.len() > 1, "it was fetched in ranges");
    let blobs = home.path().join("hf/hub/models--org--big/blobs");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0, "neither the blob, the partial nor the sidecar stays");
}

#[test]
fn an_interrupted_parallel_download_resumes_from_its_recorded_prefix_only() {
    let repo = big_repo();
    let big = file(&repo, C1, "big.bin").clone();
    for connections in ["1", "4"] {
        let hub = FakeHub::start(vec![repo.clone()], Options::default());
        let home = tempfile::tempdir().unwrap();
        let blobs = home.path().join("hf/hub/models--org--big/blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        // As a killed parallel download leaves it: a complete prefix, then pieces written out of
        // order (here: garbage) that the sidecar does not vouch for.
        let kept = 3 << 20;
        let mut partial = big.content[..kept].to_vec();
        partial.extend(std::iter::repeat_n(0xAAu8, 7 << 20));
        let incomplete = blobs.join(format!("{}.incomplete", big.sha256()));
        std::fs::write(&incomplete, &partial).unwrap();
        std::fs::write(blobs.join(format!("{}.incomplete.ranges", big.sha256())), format!("gpubench ranges v1\nsize {BIG}\ncomplete {kept}\n"))
            .unwrap();
        let out = gpubench(&hub.url, home.path()).args(["download", "org/big", "big.bin", "--json", "--connections", connections]).output().unwrap();
        let summary = json_out(&out);
        assert_eq!(summary["files"][0]["resumed_bytes"], kept as u64, "--connections {connections}");
        assert_eq!(hub.stats().cdn_bytes[&big.sha256()], (BIG - kept) as u64, "--connections {connections}");
        assert_eq!(std::fs::read(blobs.join(big.sha256())).unwrap(), big.content, "--connections {connections}");
        assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 1, "no partial or sidecar left");
        if connections == "1" {
            assert_eq!(hub.stats().cdn_ranges, vec![format!("bytes={kept}-")]);
        } else {
            assert!(hub.stats().cdn_ranges.iter().all(|r| bounded_range(r).is_some_and(|(a, _)| a >= kept as u64)));
        }
    }
}

#[test]
fn parallel_ranges_cope_with_servers_that_answer_more_than_the_range() {
    let repo = big_repo();
    let hub = FakeHub::start(vec![repo.clone()], Options { open_ended_ranges: true, ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let out = gpubench(&hub.url, home.path()).args(["download", "org/big", "big.bin", "--connections", "4"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let big = file(&repo, C1, "big.bin");
    assert_eq!(std::fs::read(stdout_last_line(&out)).unwrap(), big.content);
    assert!(hub.stats().cdn_ranges.len() > 1, "{:?}", hub.stats().cdn_ranges);
}

/// Every file or link under `root` that is not under one of `allowed`.
fn written_outside(root: &Path, allowed: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if allowed.iter().any(|a| path.starts_with(a)) {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Regular files and links under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    written_outside(dir, &[])
}

#[test]
fn commit_ids_and_etags_that_are_not_digests_are_refused_before_any_path_is_built() {
    let evil = "\"../../../tmp/x\"".to_string();
    let cases = [
        (Options { etag: Some(evil.clone()), ..Options::default() }, "config.json", "the ETag header", "../../../tmp/x"),
        (Options { linked_etag: Some(evil.clone()), ..Options::default() }, "model.safetensors", "the X-Linked-Etag header", "../../../tmp/x"),
        (Options { etag: Some("W/\"abc123\"".into()), ..Options::default() }, "config.json", "the ETag header", "abc123"),
        (Options { repo_commit: Some("../../../tmp/c".into()), ..Options::default() }, "config.json", "the X-Repo-Commit header", "../../../tmp/c"),
        (Options { api_sha: Some("../../../tmp/c".into()), ..Options::default() }, "config.json", "the repository info's 'sha'", "../../../tmp/c"),
    ];
    for (options, name, header, value) in cases {
        let hub = FakeHub::start(vec![model_repo()], options);
        let home = tempfile::tempdir().unwrap();
        let cache = home.path().join("cache");
        let local = home.path().join("local");
        let to_cache = gpubench(&hub.url, home.path()).args(["download", "org/model", name, "--cache-dir"]).arg(&cache).output().unwrap();
        let to_local = gpubench(&hub.url, home.path()).args(["download", "org/model", name, "--local-dir"]).arg(&local).output().unwrap();
        for out in [to_cache, to_local] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{header}: {stderr}");
            assert!(stderr.contains(&format!("refusing {header}")) && stderr.contains(value), "{header}: {stderr}");
        }
        assert_eq!(written_outside(home.path(), &[cache.clone(), local.clone()]), Vec::<PathBuf>::new(), "{header}");
        assert_eq!(files_under(&cache.join("models--org--model/blobs")), Vec::<PathBuf>::new(), "{header}");
        assert_eq!(files_under(&cache.join("models--org--model/snapshots")), Vec::<PathBuf>::new(), "{header}");
        assert!(!local.join(name).exists(), "{header}");
    }
}

#[test]
fn a_file_without_a_digest_that_can_be_checked_is_refused_unless_no_verify() {
    let repo = model_repo();
    // HEAD without a size: the git blob id (which hashes the size first) cannot be checked.
    let hub = FakeHub::start(vec![repo.clone()], Options { head_without_size: true, ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let local = home.path().join("local");
    let cache = home.path().join("hf/hub/models--org--model");
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "config.json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("'config.json' cannot be verified") && stderr.contains("--no-verify"), "{stderr}");
    assert_eq!(files_under(&cache.join("blobs")), Vec::<PathBuf>::new());
    assert_eq!(files_under(&cache.join("snapshots")), Vec::<PathBuf>::new());
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "config.json", "--local-dir"]).arg(&local).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!local.join("config.json").exists());

    // Asked for explicitly, it is kept.
    let expected = &file(&repo, C1, "config.json").content;
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "config.json", "--no-verify"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(&std::fs::read(stdout_last_line(&out)).unwrap(), expected);
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "config.json", "--no-verify", "--local-dir"]).arg(&local).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(&std::fs::read(local.join("config.json")).unwrap(), expected);
}

#[test]
fn a_body_longer_than_announced_is_cut_there_and_the_file_fails() {
    let repo = model_repo();
    let extra = 64 << 20;
    let hub = FakeHub::start(vec![repo.clone()], Options { extra_bytes: extra, ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let big = file(&repo, C1, "model.safetensors");
    let size = big.content.len() as u64;
    let out = gpubench(&hub.url, home.path()).args(["download", "org/model", "model.safetensors"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("the server sent more than the {size} bytes it announced")), "{stderr}");
    // Reading stopped at the announced size (give or take what the sockets buffer).
    let sent = hub.stats().cdn_bytes[&big.sha256()];
    assert!(sent < size + (16 << 20), "read {sent} bytes of a body of {}", size + extra as u64);
    assert_eq!(files_under(&home.path().join("hf/hub/models--org--model/blobs")), Vec::<PathBuf>::new());
}

#[test]
fn two_downloads_into_the_same_cache_or_folder_at_once_both_succeed() {
    let repo = model_repo();
    // A slow CDN, so that the two processes overlap.
    let hub = FakeHub::start(vec![repo.clone()], Options { chunk: 16 * 1024, chunk_delay_ms: 10, ..Options::default() });
    let home = tempfile::tempdir().unwrap();
    let local = home.path().join("local");
    let big = file(&repo, C1, "model.safetensors");
    for (round, to_local) in [false, true].into_iter().enumerate() {
        let run = || {
            let mut cmd = gpubench(&hub.url, home.path());
            cmd.args(["download", "org/model"]);
            if to_local {
                cmd.arg("--local-dir").arg(&local);
            }
            cmd.output().unwrap()
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(run);
            let b = s.spawn(run);
            (a.join().unwrap(), b.join().unwrap())
        });
        for out in [&a, &b] {
            assert!(out.status.success(), "local: {to_local}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(stdout_last_line(out), stdout_last_line(&a));
        }
        let root = stdout_last_line(&a);
        for f in &repo.commits[C1] {
            assert_eq!(std::fs::read(root.join(&f.path)).unwrap(), f.content, "local: {to_local}: {}", f.path);
        }
        // One of them fetched the large file, the other waited for it (or found it done).
        assert_eq!(hub.stats().cdn_bytes[&big.sha256()], (round as u64 + 1) * big.content.len() as u64, "local: {to_local}");
        let leftovers = files_under(home.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".incomplete") || p.to_string_lossy().ends_with(".tmp"))
            .collect::<Vec<_>>();
        assert_eq!(leftovers, Vec::<PathBuf>::new(), "local: {to_local}");
    }
    let blobs = home.path().join("hf/hub/models--org--model/blobs");
    let mut names: Vec<String> = files_under(&blobs).iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect();
    names.sort();
    let mut etags: Vec<String> = repo.commits[C1].iter().map(|f| f.etag()).collect();
    etags.sort();
    assert_eq!(names, etags, "the blobs are the files' digests, nothing else");
}
