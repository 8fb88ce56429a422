//! What can go wrong while talking to the Hub or writing the cache, each with the fix.

use std::path::PathBuf;

use crate::ExitStatus;

/// Errors of `gpubench download`. Messages never contain the access token.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Usage(String),
    #[error("repository '{repo}' was not found at {endpoint}: check the name (owner/name); if it is private, set HF_TOKEN (or --token) to a token that can read it")]
    RepoNotFound { repo: String, endpoint: String },
    #[error("repository '{repo}' is gated: accept its licence at {endpoint}/{repo} while logged in, then set HF_TOKEN (or --token) to a token of that account")]
    Gated { repo: String, endpoint: String },
    #[error("the token was refused for '{repo}' (HTTP 401): check that HF_TOKEN / --token / $HF_HOME/token holds a valid, unexpired token")]
    Unauthorized { repo: String },
    #[error("revision '{revision}' does not exist in '{repo}': check the branch, tag or commit name given to --revision")]
    RevisionNotFound { repo: String, revision: String },
    #[error("file '{path}' does not exist in '{repo}' at revision '{revision}': check the file name (case matters) or the revision")]
    EntryNotFound { repo: String, revision: String, path: String },
    #[error("offline mode is on (--offline or HF_HUB_OFFLINE) and {what} is not in the cache at {dir}: run once online, or point --cache-dir / HF_HUB_CACHE at the cache that has it")]
    OfflineNotCached { what: String, dir: PathBuf },
    #[error("the Hub answered HTTP {status} for {url}{message}: try again later, or check HF_ENDPOINT")]
    Http { url: String, status: u16, message: String },
    #[error("cannot reach {url}: {reason}; check the network or HF_ENDPOINT, or use --offline to use files already in the cache")]
    Network { url: String, reason: String },
    #[error("unexpected answer from {url}: {what}; check that HF_ENDPOINT points to a Hugging Face Hub (or a compatible mirror)")]
    Protocol { url: String, what: String },
    #[error("'{path}' is corrupt: expected {algo} {expected}, got {actual} ({size} bytes); the partial download was deleted, run again to refetch it (if it repeats, a proxy or mirror alters the data)")]
    Integrity { path: String, algo: &'static str, expected: String, actual: String, size: u64 },
    #[error("'{path}' has {actual} bytes but the Hub announced {expected}; the partial download was deleted, run again to refetch it")]
    SizeMismatch { path: String, expected: u64, actual: u64 },
    #[error("refusing file name '{path}' from the server: {why}; it would be written outside the target folder (exclude it with --exclude, and report the repository)")]
    UnsafePath { path: String, why: &'static str },
    #[error("refusing {field} '{value}' from the server: {expected}; nothing was written (check that HF_ENDPOINT points to a Hugging Face Hub or a compatible mirror)")]
    BadValue { field: String, value: String, expected: &'static str },
    #[error("'{path}' cannot be verified: {why}; it was not kept. Pass --no-verify to accept files without a checked digest (only from a server you trust)")]
    Unverified { path: String, why: String },
    #[error("'{path}': the server sent more than the {expected} bytes it announced; the download was cut there and deleted: run again (if it repeats, a proxy or mirror alters the data)")]
    TooLong { path: String, expected: u64 },
    #[error("not enough free space in {dir} for '{path}': it needs {need}, {free} is free; free some space or choose another --cache-dir / --local-dir")]
    NoSpace { dir: PathBuf, path: String, need: String, free: String },
    #[error("disk full while writing {path}: free some space or choose another --cache-dir / --local-dir")]
    DiskFull { path: PathBuf },
    #[error("cannot write {path}: {source}; check the permissions of that folder or choose another --cache-dir / --local-dir")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no file of '{repo}' at '{revision}' matches the given names and --include/--exclude patterns: check them (patterns match whole paths, e.g. '*.json' or 'onnx/*')")]
    NothingMatched { repo: String, revision: String },
}

impl crate::Failure for HubError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            HubError::Usage(_) => ExitStatus::Usage,
            _ => ExitStatus::Failure,
        }
    }
}

impl HubError {
    /// An I/O error on `path`, with disk-full singled out.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::StorageFull || source.kind() == std::io::ErrorKind::QuotaExceeded {
            HubError::DiskFull { path }
        } else {
            HubError::Io { path, source }
        }
    }

    /// Worth trying again (network trouble, 429, 5xx)?
    pub fn is_transient(&self) -> bool {
        match self {
            HubError::Network { .. } => true,
            HubError::Http { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_named_and_transient_errors_are_told_apart() {
        let full = HubError::io("/x", std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(full.to_string().starts_with("disk full while writing /x"));
        assert!(matches!(HubError::io("/x", std::io::Error::other("boom")), HubError::Io { .. }));
        let http = |status| HubError::Http { url: String::new(), status, message: String::new() };
        assert!(http(503).is_transient() && http(429).is_transient() && !http(404).is_transient());
        assert!(!HubError::Usage(String::new()).is_transient());
        assert_eq!(crate::Failure::exit_status(&HubError::Usage(String::new())), ExitStatus::Usage);
    }
}
