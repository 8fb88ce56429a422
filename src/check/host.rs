//! Host checks: RAM, free disk where models go, a Hugging Face token.

use std::path::{Path, PathBuf};

use super::{gib, CheckResult, Group};

const H: Group = Group::Host;
const GIB: u64 = 1 << 30;

pub fn checks(model_dir: Option<&Path>) -> Vec<CheckResult> {
    vec![ram(), disk(model_dir), hf_token()]
}

fn ram() -> CheckResult {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let (total, avail) = (sys.total_memory(), sys.available_memory());
    let detail = format!("{} total, {} available", gib(total), gib(avail));
    if avail < 2 * GIB {
        CheckResult::warn(H, "RAM", detail, "free memory (stop other programs): loading a model needs a few GiB of RAM")
    } else {
        CheckResult::pass(H, "RAM", detail)
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

fn hf_home() -> Option<PathBuf> {
    std::env::var_os("HF_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".cache/huggingface")))
}

/// Where models go: `--model-dir`, else `HF_HUB_CACHE`, else `HF_HOME/hub`.
pub fn model_dir(explicit: Option<&Path>) -> Option<(PathBuf, &'static str)> {
    if let Some(p) = explicit {
        return Some((p.to_path_buf(), "--model-dir"));
    }
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|h| !h.is_empty()) {
        return Some((PathBuf::from(p), "HF_HUB_CACHE"));
    }
    hf_home().map(|h| (h.join("hub"), "the Hugging Face cache"))
}

/// Free bytes on the file system holding `path` (or its nearest existing parent).
pub fn free_space(path: &Path) -> Option<(u64, PathBuf)> {
    let mut existing = path.to_path_buf();
    while !existing.exists() {
        existing = existing.parent()?.to_path_buf();
    }
    let existing = existing.canonicalize().unwrap_or(existing);
    let disks = sysinfo::Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| existing.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| (d.available_space(), d.mount_point().to_path_buf()))
}

fn disk(explicit: Option<&Path>) -> CheckResult {
    let Some((dir, from)) = model_dir(explicit) else {
        return CheckResult::warn(H, "disk for models", "no HOME, HF_HOME or HF_HUB_CACHE: no place for models", "pass --model-dir PATH or set HF_HUB_CACHE");
    };
    match free_space(&dir) {
        None => CheckResult::warn(
            H,
            "disk for models",
            format!("cannot tell the free space at {} ({from})", dir.display()),
            "check that the folder is on a mounted file system (df -h)",
        ),
        Some((free, _)) => {
            let detail = format!("{} free at {} ({from})", gib(free), dir.display());
            if free < GIB {
                CheckResult::fail(H, "disk for models", detail, "free disk space or point --model-dir / HF_HUB_CACHE at a bigger disk")
            } else if free < 10 * GIB {
                CheckResult::warn(H, "disk for models", detail, "a 1B model takes about 2.5 GiB, an 8B one 16 GiB: free space or use a bigger disk")
            } else {
                CheckResult::pass(H, "disk for models", detail)
            }
        }
    }
}

/// Where a token is (never the token itself).
pub fn token_source() -> Option<String> {
    if std::env::var("HF_TOKEN").is_ok_and(|t| !t.trim().is_empty()) {
        return Some("HF_TOKEN".into());
    }
    let file = hf_home()?.join("token");
    std::fs::read_to_string(&file).ok().filter(|t| !t.trim().is_empty()).map(|_| file.display().to_string())
}

fn hf_token() -> CheckResult {
    match token_source() {
        Some(from) => CheckResult::pass(H, "Hugging Face token", format!("found in {from}")),
        None => CheckResult::warn(
            H,
            "Hugging Face token",
            "none (HF_TOKEN or HF_HOME/token): public models only",
            "gated models (Llama, Gemma) need one: create a read token in your Hugging Face settings and export HF_TOKEN=...",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_found_for_a_folder_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let (free, mount) = free_space(&dir.path().join("a/b/c")).unwrap();
        assert!(free > 0);
        assert!(dir.path().canonicalize().unwrap().starts_with(mount));
    }

    #[test]
    fn an_explicit_model_dir_wins() {
        let (p, from) = model_dir(Some(Path::new("/models"))).unwrap();
        assert_eq!((p, from), (PathBuf::from("/models"), "--model-dir"));
    }

    #[test]
    fn ram_is_reported() {
        let c = ram();
        assert!(c.detail.contains("GiB total"), "{}", c.detail);
    }
}
