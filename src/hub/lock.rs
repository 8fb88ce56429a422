//! One writer per file across processes: an advisory `flock` on a `.lock` file, taken before a file
//! is fetched and released when the guard drops. The lock files are the ones Python's huggingface_hub
//! takes (`{cache}/.locks/{repo folder}/{etag}.lock`, `.cache/huggingface/download/{path}.lock`), so a
//! gpubench and a Python download of the same file wait for each other too. gpubench leaves its lock
//! files in place; a holder that deletes its lock file when done (as huggingface_hub may) is coped with.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::Duration;

use super::error::HubError;

/// How often a waiting process tries again.
const POLL: Duration = Duration::from_millis(100);

/// Held while the guard lives.
#[derive(Debug)]
pub struct Guard {
    _file: File,
}

/// Waits (without blocking the runtime: other files go on meanwhile) until `path` is locked by us.
pub async fn acquire(path: &Path, name: &str) -> Result<Guard, HubError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    }
    let open = || OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(|e| HubError::io(path, e));
    let mut file = open()?;
    let mut told = false;
    loop {
        match file.try_lock() {
            // A holder that deletes the lock file when done leaves us holding a lock
            // on a file no longer there, which a newcomer would not see: then lock the new one.
            Ok(()) if !still_there(&file, path) => file = open()?,
            Ok(()) => return Ok(Guard { _file: file }),
            Err(TryLockError::WouldBlock) => {
                if !told {
                    tracing::info!("{name}: another process is downloading it (lock {}); waiting", path.display());
                    told = true;
                }
                tokio::time::sleep(POLL).await;
            }
            Err(TryLockError::Error(e)) => return Err(HubError::io(path, e)),
        }
    }
}

/// Is `file` still the one at `path`?
#[cfg(unix)]
fn still_there(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_there(_file: &File, _path: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/blob.lock");
        let first = acquire(&path, "f").await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), acquire(&path, "f")).await;
        assert!(waiting.is_err(), "the lock is exclusive");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), acquire(&path, "f")).await;
        assert!(matches!(second, Ok(Ok(_))));
    }

    #[tokio::test]
    async fn a_lock_file_deleted_by_its_holder_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob.lock");
        let first = acquire(&path, "f").await.unwrap();
        let waiter = tokio::spawn({
            let path = path.clone();
            async move { acquire(&path, "f").await }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        // The holder deletes the file and lets go; a newcomer locks a new file at the same path.
        std::fs::remove_file(&path).unwrap();
        drop(first);
        let newcomer = acquire(&path, "f").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "the waiter must wait for the newcomer");
        drop(newcomer);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(second, Ok(Ok(Ok(_)))));
    }
}
