//! What the single-stream and the ranged transfers share: the file to fetch, the digest
//! that checks it, the retry limits and the parsing of `Content-Range`.

use std::path::PathBuf;

use reqwest::header::{HeaderMap, CONTENT_RANGE};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use url::Url;

/// Failed attempts in a row (without new bytes) before giving up on a file.
pub(super) const ATTEMPTS_WITHOUT_PROGRESS: u32 = 5;
/// Attempts in all, even when each brings some bytes.
pub(super) const MAX_ATTEMPTS: u32 = 50;
/// One file to fetch.
pub struct Job<'a> {
    /// The file's path in the repository (for messages).
    pub name: &'a str,
    /// Where to GET it.
    pub url: Url,
    /// The announced size, when known.
    pub size: Option<u64>,
    /// The etag: sha256 (LFS) or git blob sha1, both checked.
    pub etag: &'a str,
    /// Partial data lives here (and is resumed from).
    pub incomplete: PathBuf,
    /// Where the complete file goes.
    pub dest: PathBuf,
    /// Connections for one large file (parallel ranges); 1: a single stream.
    pub connections: usize,
    /// Keep the file even when no digest could be checked (`--no-verify`).
    pub no_verify: bool,
}

/// `Content-Range: bytes a-b/total` -> (a, total).
pub(super) fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let text = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = text.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// Which digest the etag is, and the running state.
pub(super) enum Check {
    Sha256(Sha256),
    /// Git blob id: sha1 of `blob {size}\0` + content (needs the size up front).
    GitSha1(Sha1, u64),
    None,
}

impl Check {
    pub(super) fn for_etag(etag: &str, size: Option<u64>) -> Check {
        let hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
        match (etag.len(), size) {
            (64, _) if hex => Check::Sha256(Sha256::new()),
            (40, Some(size)) if hex => Check::GitSha1(git_blob_header(size), size),
            _ => Check::None,
        }
    }
    pub(super) fn reset(&mut self) {
        match self {
            Check::Sha256(h) => *h = Sha256::new(),
            Check::GitSha1(h, size) => *h = git_blob_header(*size),
            Check::None => {}
        }
    }
    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            Check::Sha256(h) => h.update(data),
            Check::GitSha1(h, _) => h.update(data),
            Check::None => {}
        }
    }
    pub(super) fn finish(self) -> Option<(&'static str, String)> {
        match self {
            Check::Sha256(h) => Some(("sha256", hex::encode(h.finalize()))),
            Check::GitSha1(h, _) => Some(("git sha1", hex::encode(h.finalize()))),
            Check::None => None,
        }
    }
}

fn git_blob_header(size: u64) -> Sha1 {
    let mut h = Sha1::new();
    h.update(format!("blob {size}\0").as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn git_blob_ids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let mut c = Check::for_etag("ce013625030ba8dba906f756967f9e9ca394464a", Some(6));
        c.update(b"hello\n");
        assert_eq!(c.finish().unwrap().1, "ce013625030ba8dba906f756967f9e9ca394464a");
    }

    #[test]
    fn sha256_restarts_cleanly() {
        let mut c = Check::for_etag(&"0".repeat(64), None);
        c.update(b"garbage");
        c.reset();
        c.update(b"abc");
        assert_eq!(c.finish().unwrap().1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn content_range_is_parsed() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 100-199/1000"));
        assert_eq!(content_range(&h), Some((100, Some(1000))));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 5-9/*"));
        assert_eq!(content_range(&h), Some((5, None)));
    }

    #[test]
    fn unknown_etags_check_size_only() {
        assert!(matches!(Check::for_etag("abc", Some(3)), Check::None));
        assert!(matches!(Check::for_etag(&"a".repeat(40), None), Check::None));
    }
}
