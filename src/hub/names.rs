//! Repository names, repository file paths that are safe to write, and include/exclude patterns.

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::error::HubError;

/// The kind of repository, as the Hub's URLs and the cache folders name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RepoType {
    Model,
    Dataset,
    Space,
}

impl RepoType {
    /// Plural used in API paths and cache folder names (`models`, `datasets`, `spaces`).
    pub fn plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
            RepoType::Space => "spaces",
        }
    }

    /// Prefix of resolve URLs: none for models, `datasets/` or `spaces/` otherwise.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
            RepoType::Space => "spaces/",
        }
    }
}

/// Checks a repo id (`name` or `owner/name`), the way the Hub spells them.
pub fn check_repo_id(repo: &str) -> Result<(), HubError> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p != "."
            && p != ".."
            && !p.starts_with('-')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if parts.len() > 2 || !parts.iter().all(|p| ok_part(p)) {
        return Err(HubError::Usage(format!(
            "'{repo}' is not a repository id: use owner/name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct"
        )));
    }
    Ok(())
}

/// A 40-hex-digit commit id?
pub fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A commit id from the server (`X-Repo-Commit`, the repository info's `sha`), checked before it
/// becomes a folder name: exactly 40 lowercase hex digits.
pub fn check_commit(source: &str, value: &str) -> Result<String, HubError> {
    if is_commit_hash(value) {
        Ok(value.to_string())
    } else {
        Err(bad_value(source, value, "a commit id is 40 lowercase hex digits"))
    }
}

/// An etag from the server (`ETag`, `X-Linked-Etag`, a tree entry's oid), checked before it becomes
/// a file name: after `W/` and quotes are stripped, a git blob id (40) or a sha256 (64) in lowercase hex.
pub fn check_etag(source: &str, raw: &str) -> Result<String, HubError> {
    let etag = raw.trim().trim_start_matches("W/").trim_matches('"');
    let hex = etag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex && (etag.len() == 40 || etag.len() == 64) {
        Ok(etag.to_string())
    } else {
        Err(bad_value(source, raw, "an etag is a git blob id or a sha256: 40 or 64 lowercase hex digits"))
    }
}

fn bad_value(source: &str, value: &str, expected: &'static str) -> HubError {
    // Shown with control characters escaped and cut short: the value came from the network.
    let mut shown = String::new();
    for c in value.chars() {
        if shown.len() >= 120 {
            shown.push_str("...");
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    HubError::BadValue { field: source.to_string(), value: shown, expected }
}

/// A file path from the server or the command line, refused if it could escape the target folder
/// (absolute, `..`, drive letters, backslashes, empty segments, NUL).
pub fn check_repo_path(path: &str) -> Result<(), HubError> {
    let refuse = |why: &'static str| Err(HubError::UnsafePath { path: path.to_string(), why });
    if path.is_empty() {
        return refuse("it is empty");
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return refuse("it is absolute");
    }
    if path.contains('\\') {
        return refuse("it contains a backslash");
    }
    if path.contains('\0') {
        return refuse("it contains a NUL byte");
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return refuse("it starts with a drive letter");
    }
    for segment in path.split('/') {
        match segment {
            ".." => return refuse("it contains a '..' segment"),
            "" => return refuse("it contains an empty segment"),
            "." => return refuse("it contains a '.' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Include/exclude patterns, matched against whole repository paths like Python's `fnmatch`
/// (`*` also crosses `/`; a pattern ending in `/` means everything under that folder).
pub struct Selection {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl Selection {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection, HubError> {
        Ok(Selection { include: build(include)?, exclude: build(exclude)? })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|set| set.is_match(path)) && !self.exclude.as_ref().is_some_and(|set| set.is_match(path))
    }
}

fn build(patterns: &[String]) -> Result<Option<GlobSet>, HubError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let text = if pattern.ends_with('/') { format!("{pattern}*") } else { pattern.clone() };
        let glob = Glob::new(&text)
            .map_err(|e| HubError::Usage(format!("bad pattern '{pattern}': {e}; use shell-style globs such as '*.safetensors'")))?;
        builder.add(glob);
    }
    builder.build().map(Some).map_err(|e| HubError::Usage(format!("bad patterns: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for ok in ["gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct", "a/b.c_d"] {
            assert!(check_repo_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b/c", "../x", "a/..", "a b/c", "/a", "a/"] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "\\\\host\\share", "C:/x", "c:x", "a//b", "a\\..\\b", "./a", ""] {
            assert!(matches!(check_repo_path(bad), Err(HubError::UnsafePath { .. })), "{bad}");
        }
        for ok in ["config.json", "onnx/model.onnx", "a..b/c..", ".gitattributes"] {
            assert!(check_repo_path(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn selection_matches_whole_paths_like_fnmatch() {
        let s = Selection::new(&["*.json".into(), "onnx/".into()], &["tokenizer*".into()]).unwrap();
        assert!(s.matches("config.json"));
        assert!(s.matches("sub/config.json"));
        assert!(s.matches("onnx/model.onnx"));
        assert!(!s.matches("tokenizer.json"));
        assert!(!s.matches("model.safetensors"));
        let all = Selection::new(&[], &[]).unwrap();
        assert!(all.matches("anything/at/all"));
        assert!(matches!(Selection::new(&["a[".into()], &[]), Err(HubError::Usage(_))));
    }

    #[test]
    fn values_from_the_server_that_become_paths_are_checked() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        let sha256 = "b".repeat(64);
        assert_eq!(check_commit("X-Repo-Commit", sha1).unwrap(), sha1);
        for bad in ["", "main", "../../x", &sha1.to_uppercase(), &format!("{sha1}0"), &format!("{}/", &sha1[..39])] {
            let e = check_commit("X-Repo-Commit", bad).unwrap_err();
            assert!(e.to_string().contains("X-Repo-Commit"), "{e}");
        }
        assert_eq!(check_etag("ETag", &format!("W/\"{sha1}\"")).unwrap(), sha1);
        assert_eq!(check_etag("X-Linked-Etag", &format!("\"{sha256}\"")).unwrap(), sha256);
        for bad in ["\"../../../tmp/x\"", "", "\"\"", "abc", &"A".repeat(64), &"g".repeat(40), &"a".repeat(32), &format!("{sha1}/x")] {
            let e = check_etag("ETag", bad).unwrap_err();
            assert!(matches!(e, HubError::BadValue { .. }), "{bad}");
        }
        let e = check_etag("ETag", "\"../../../tmp/x\"").unwrap_err().to_string();
        assert!(e.contains("ETag") && e.contains("../../../tmp/x"), "{e}");
        let long = check_etag("ETag", &"x".repeat(10_000)).unwrap_err().to_string();
        assert!(long.len() < 400 && long.contains("..."), "{long}");
        assert!(check_etag("ETag", "a\nb").unwrap_err().to_string().contains("a\\nb"));
    }

    #[test]
    fn commit_hashes() {
        assert!(is_commit_hash("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit_hash("main"));
        assert!(!is_commit_hash("0123456789ABCDEF0123456789abcdef01234567"));
    }
}
