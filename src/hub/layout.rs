//! Where files go on disk, exactly as Python's huggingface_hub lays them out, so that each finds the other's:
//!
//! - the cache: `{cache}/models--{owner}--{name}/blobs/{etag}`, `snapshots/{commit}/{path}` (relative
//!   symlinks to the blob) and `refs/{revision}` (the commit);
//! - a local folder: real files, plus `.cache/huggingface/download/{path}.metadata` holding the commit,
//!   the etag and the time they were written.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha1::{Digest, Sha1};

use super::error::HubError;
use super::names::{check_repo_path, is_commit_hash, RepoType};

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by huggingface_hub.\n\
# For information about cache directory tags, see:\n\
#\thttps://bford.info/cachedir/\n";

/// Joins a checked repository path (`a/b.json`) onto a folder.
fn join(base: &Path, repo_path: &str) -> PathBuf {
    repo_path.split('/').fold(base.to_path_buf(), |p, s| p.join(s))
}

/// One repository's folder in the shared cache.
#[derive(Debug, Clone)]
pub struct CacheRepo {
    pub cache_dir: PathBuf,
    pub folder: PathBuf,
}

impl CacheRepo {
    pub fn new(cache_dir: &Path, repo_type: RepoType, repo: &str) -> CacheRepo {
        let name = std::iter::once(repo_type.plural()).chain(repo.split('/')).collect::<Vec<_>>().join("--");
        CacheRepo { cache_dir: cache_dir.to_path_buf(), folder: cache_dir.join(name) }
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.folder.join("blobs").join(etag)
    }

    pub fn blob_incomplete(&self, etag: &str) -> PathBuf {
        self.folder.join("blobs").join(format!("{etag}.incomplete"))
    }

    /// `{cache}/.locks/{repo folder}/{etag}.lock`, where Python's huggingface_hub locks the same blob.
    pub fn blob_lock(&self, etag: &str) -> PathBuf {
        let folder = self.folder.file_name().map(PathBuf::from).unwrap_or_default();
        self.cache_dir.join(".locks").join(folder).join(format!("{etag}.lock"))
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.folder.join("snapshots").join(commit)
    }

    pub fn pointer(&self, commit: &str, path: &str) -> PathBuf {
        join(&self.snapshot(commit), path)
    }

    /// The commit a branch or tag pointed to when last fetched.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        check_repo_path(revision).ok()?;
        let text = std::fs::read_to_string(join(&self.folder.join("refs"), revision)).ok()?;
        let commit = text.trim().to_string();
        // It becomes a folder name (snapshots/COMMIT): only a commit id is taken.
        is_commit_hash(&commit).then_some(commit)
    }

    /// Records `refs/{revision}` (only for names that are not the commit itself).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit || check_repo_path(revision).is_err() {
            return Ok(());
        }
        if self.read_ref(revision).as_deref() == Some(commit) {
            return Ok(());
        }
        let path = join(&self.folder.join("refs"), revision);
        crate::support::fs::write_atomically(&path, commit.as_bytes()).map_err(|e| HubError::io(&path, e))
    }

    /// Creates the folders and the CACHEDIR.TAG that Python creates too.
    pub fn prepare(&self) -> Result<(), HubError> {
        for sub in ["blobs", "snapshots", "refs"] {
            let dir = self.folder.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        }
        let tag = self.cache_dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = crate::support::fs::write_atomically(&tag, CACHEDIR_TAG.as_bytes());
        }
        Ok(())
    }

    /// Points `snapshots/{commit}/{path}` at `blobs/{etag}` with a relative symlink.
    pub fn link(&self, commit: &str, path: &str, etag: &str) -> Result<PathBuf, HubError> {
        let pointer = self.pointer(commit, path);
        if let Some(parent) = pointer.parent() {
            std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        let depth = path.split('/').count() - 1;
        let target = format!("{}../../blobs/{etag}", "../".repeat(depth));
        // Made under a unique name, then renamed over the old entry: another process linking the
        // same file at the same time never sees it missing, and neither fails.
        let tmp = crate::support::fs::temp_sibling(&pointer);
        make_link(&target, &self.blob(etag), &tmp).map_err(|e| HubError::io(&tmp, e))?;
        if let Err(e) = std::fs::rename(&tmp, &pointer) {
            let _ = std::fs::remove_file(&tmp);
            return Err(HubError::io(&pointer, e));
        }
        Ok(pointer)
    }

    /// Files in a cached snapshot, as repository paths.
    pub fn snapshot_files(&self, commit: &str) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.snapshot(commit), "", &mut out);
        out.sort();
        out
    }
}

#[cfg(unix)]
fn make_link(relative: &str, _blob: &Path, pointer: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(relative, pointer)
}

#[cfg(not(unix))]
fn make_link(_relative: &str, blob: &Path, pointer: &Path) -> std::io::Result<()> {
    std::fs::copy(blob, pointer).map(|_| ())
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        let path = entry.path();
        if path.is_dir() {
            walk(&path, &rel, out);
        } else if path.exists() {
            out.push(rel);
        }
    }
}

/// What a local folder's sidecar says about one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    pub commit: String,
    pub etag: String,
    pub timestamp: f64,
}

/// A `--local-dir` folder.
#[derive(Debug, Clone)]
pub struct LocalDir {
    pub root: PathBuf,
}

impl LocalDir {
    pub fn new(root: &Path) -> LocalDir {
        LocalDir { root: root.to_path_buf() }
    }

    fn download_dir(&self) -> PathBuf {
        self.root.join(".cache").join("huggingface").join("download")
    }

    pub fn file(&self, path: &str) -> PathBuf {
        join(&self.root, path)
    }

    pub fn metadata(&self, path: &str) -> PathBuf {
        join(&self.download_dir(), &format!("{path}.metadata"))
    }

    /// `.cache/huggingface/download/{path}.lock`, where Python's huggingface_hub locks the same file.
    pub fn lock(&self, path: &str) -> PathBuf {
        join(&self.download_dir(), &format!("{path}.lock"))
    }

    /// `{short hash of the metadata file name}.{etag}.incomplete` beside the metadata, as Python names it.
    pub fn incomplete(&self, path: &str, etag: &str) -> PathBuf {
        let metadata = self.metadata(path);
        let name = metadata.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let short = base64::engine::general_purpose::URL_SAFE.encode(Sha1::digest(name.as_bytes()));
        metadata.with_file_name(format!("{short}.{etag}.incomplete"))
    }

    /// Creates `.cache/huggingface` with its `.gitignore` and CACHEDIR.TAG.
    pub fn prepare(&self) -> Result<(), HubError> {
        let dir = self.download_dir();
        std::fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        let hf = self.root.join(".cache").join("huggingface");
        for (name, text) in [(".gitignore", "*"), ("CACHEDIR.TAG", CACHEDIR_TAG)] {
            let p = hf.join(name);
            if !p.exists() {
                let _ = crate::support::fs::write_atomically(&p, text.as_bytes());
            }
        }
        Ok(())
    }

    /// The sidecar, if it exists and the file was not changed after it was written.
    pub fn read(&self, path: &str) -> Option<Sidecar> {
        let text = std::fs::read_to_string(self.metadata(path)).ok()?;
        let mut lines = text.lines();
        let commit = lines.next()?.trim().to_string();
        let etag = lines.next()?.trim().to_string();
        let timestamp: f64 = lines.next()?.trim().parse().ok()?;
        let modified = std::fs::metadata(self.file(path)).ok()?.modified().ok()?;
        let mtime = modified.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        (mtime - 1.0 <= timestamp).then_some(Sidecar { commit, etag, timestamp })
    }

    pub fn write(&self, path: &str, commit: &str, etag: &str) -> Result<(), HubError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let target = self.metadata(path);
        let text = format!("{commit}\n{etag}\n{now}\n");
        crate::support::fs::write_atomically(&target, text.as_bytes()).map_err(|e| HubError::io(&target, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_match_python() {
        let c = CacheRepo::new(Path::new("/c"), RepoType::Model, "org/name");
        assert_eq!(c.folder, PathBuf::from("/c/models--org--name"));
        assert_eq!(c.pointer("abc", "a/b.json"), PathBuf::from("/c/models--org--name/snapshots/abc/a/b.json"));
        let d = CacheRepo::new(Path::new("/c"), RepoType::Dataset, "solo");
        assert_eq!(d.folder, PathBuf::from("/c/datasets--solo"));
    }

    #[cfg(unix)]
    #[test]
    fn links_are_relative_and_refs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = CacheRepo::new(dir.path(), RepoType::Model, "o/n");
        c.prepare().unwrap();
        std::fs::write(c.blob("e1"), b"x").unwrap();
        let p = c.link("c1", "sub/dir/f.txt", "e1").unwrap();
        assert_eq!(std::fs::read_link(&p).unwrap(), PathBuf::from("../../../../blobs/e1"));
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        assert_eq!(c.snapshot_files("c1"), vec!["sub/dir/f.txt".to_string()]);
        let commit = "c1".repeat(20);
        c.write_ref("main", &commit).unwrap();
        assert_eq!(c.read_ref("main").as_deref(), Some(commit.as_str()));
        std::fs::write(c.folder.join("refs/main"), "../../elsewhere").unwrap();
        assert_eq!(c.read_ref("main"), None, "a ref that is no commit id is not followed");
        let again = c.link("c1", "sub/dir/f.txt", "e1").unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), b"x", "linking again replaces the entry");
        assert_eq!(std::fs::read_dir(again.parent().unwrap()).unwrap().count(), 1, "no temporary name is left");
        assert_eq!(c.blob_lock("e1"), dir.path().join(".locks/models--o--n/e1.lock"));
        assert_eq!(c.read_ref("../x"), None);
        assert!(dir.path().join("CACHEDIR.TAG").exists());
    }

    #[test]
    fn local_dir_sidecars_round_trip_and_go_stale() {
        let dir = tempfile::tempdir().unwrap();
        let l = LocalDir::new(dir.path());
        l.prepare().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(l.file("a/f.bin"), b"x").unwrap();
        assert_eq!(l.read("a/f.bin"), None);
        l.write("a/f.bin", "c1", "e1").unwrap();
        let s = l.read("a/f.bin").unwrap();
        assert_eq!((s.commit.as_str(), s.etag.as_str()), ("c1", "e1"));
        assert!(l.metadata("a/f.bin").ends_with(".cache/huggingface/download/a/f.bin.metadata"));
        let inc = l.incomplete("a/f.bin", "e1");
        assert!(inc.to_string_lossy().ends_with(".e1.incomplete"));
        assert_eq!(std::fs::read_to_string(dir.path().join(".cache/huggingface/.gitignore")).unwrap(), "*");
        // A file changed after its sidecar was written is not trusted.
        let later = SystemTime::now() + std::time::Duration::from_secs(10);
        std::fs::File::options().write(true).open(l.file("a/f.bin")).unwrap().set_modified(later).unwrap();
        assert_eq!(l.read("a/f.bin"), None);
    }
}
