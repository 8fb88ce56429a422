//! Interoperability with Python's huggingface_hub: each finds what the other downloaded from the
//! same fake Hub (cache layout and `--local-dir` sidecars). Skipped, with a message, when
//! huggingface_hub is not importable; CI installs it (.ci/setup-download.sh) and then it must run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use bytes::Bytes;
use common::fake_hub::{FakeFile, FakeHub, FakeRepo, Options};

const C1: &str = "abcdefabcdefabcdefabcdefabcdefabcdef0001";

fn repo() -> FakeRepo {
    let weights: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    FakeRepo::new("org/model").commit(
        C1,
        "main",
        vec![
            FakeFile::text("config.json", "{\"hidden_size\": 64}\n"),
            FakeFile::lfs("model.safetensors", Bytes::from(weights)),
            FakeFile::text("sub/dir/notes.txt", "nested\n"),
        ],
    )
}

/// True when python3 can import huggingface_hub. Outside CI a missing package skips the test.
fn python_ready() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import huggingface_hub"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 cannot import huggingface_hub: .ci/setup-download.sh should have installed it");
        }
        eprintln!("SKIPPED: python3 cannot import huggingface_hub (pip install huggingface_hub, or run .ci/setup-download.sh)");
    }
    ok
}

fn python(script: &str, hub: &str, home: &Path, cache: &Path) -> Output {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .env("HF_ENDPOINT", hub)
        .env("HF_HOME", home.join("pyhf"))
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn gpubench(hub: &str, home: &Path, cache: &Path) -> Command {
    let mut cmd = Command::cargo_bin("gpubench").expect("binary");
    cmd.env("HOME", home)
        .env("HF_HOME", home.join("hf"))
        .env("HF_HUB_CACHE", cache)
        .env("HF_ENDPOINT", hub)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .timeout(std::time::Duration::from_secs(60));
    cmd
}

fn lines(out: &Output) -> Vec<PathBuf> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| PathBuf::from(l.trim())).collect()
}

#[test]
fn python_finds_what_we_downloaded() {
    if !python_ready() {
        return;
    }
    let hub = FakeHub::start(vec![repo()], Options::default());
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    let out = gpubench(&hub.url, home.path(), &cache).args(["download", "org/model"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snapshot = lines(&out).pop().unwrap();

    let script = r#"
from huggingface_hub import hf_hub_download, snapshot_download
print(hf_hub_download("org/model", "model.safetensors", local_files_only=True))
print(hf_hub_download("org/model", "sub/dir/notes.txt", local_files_only=True))
print(snapshot_download("org/model", local_files_only=True))
"#;
    let found = lines(&python(script, &hub.url, home.path(), &cache));
    assert_eq!(found, vec![snapshot.join("model.safetensors"), snapshot.join("sub/dir/notes.txt"), snapshot.clone()]);

    // --local-dir: Python trusts our sidecars and downloads nothing again.
    let dir = home.path().join("local");
    let out = gpubench(&hub.url, home.path(), &cache).args(["download", "org/model", "--local-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success());
    let before = hub.stats();
    let script = format!(
        "from huggingface_hub import hf_hub_download\nprint(hf_hub_download('org/model', 'model.safetensors', local_dir={:?}))",
        dir.display().to_string()
    );
    let found = lines(&python(&script, &hub.url, home.path(), &home.path().join("other-cache")));
    assert_eq!(found, vec![dir.join("model.safetensors")]);
    assert_eq!(hub.stats().cdn_gets, before.cdn_gets, "Python re-downloaded a file our sidecar vouches for");
}

#[test]
fn we_find_what_python_downloaded() {
    if !python_ready() {
        return;
    }
    let hub = FakeHub::start(vec![repo()], Options::default());
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    let dir = home.path().join("local");
    let script = format!(
        "from huggingface_hub import snapshot_download\nprint(snapshot_download('org/model'))\nprint(snapshot_download('org/model', local_dir={:?}))",
        dir.display().to_string()
    );
    let py = lines(&python(&script, &hub.url, home.path(), &cache));
    let gets = hub.stats().cdn_gets;

    // Offline, from Python's cache.
    let out = gpubench("http://127.0.0.1:9", home.path(), &cache).args(["download", "org/model", "--offline"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines(&out).pop().unwrap(), py[0]);
    let out = gpubench("http://127.0.0.1:9", home.path(), &cache)
        .args(["download", "org/model", "sub/dir/notes.txt", "--offline"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(lines(&out).pop().unwrap()).unwrap(), "nested\n");

    // Online: everything is already there, nothing is fetched again (cache and Python's local-dir sidecars).
    let out = gpubench(&hub.url, home.path(), &cache).args(["download", "org/model"]).output().unwrap();
    assert!(out.status.success());
    let out = gpubench(&hub.url, home.path(), &cache).args(["download", "org/model", "--local-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines(&out).pop().unwrap(), py[1]);
    assert_eq!(hub.stats().cdn_gets, gets);
}
