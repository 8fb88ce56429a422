//! The Hub's HTTP API: repository info, tree listing (paginated by `Link`), and the HEAD of a
//! file's resolve URL, which gives its commit, etag, size and download location.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, LOCATION, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use super::error::HubError;
use super::names::{check_commit, check_etag, RepoType};
use super::settings::Token;

/// Redirects followed at most for one request.
const MAX_REDIRECTS: usize = 10;
/// Attempts for metadata requests that fail transiently (network, 429, 5xx).
const METADATA_ATTEMPTS: u32 = 4;

/// What one file of a repository is, according to the HEAD of its resolve URL.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// The commit the revision resolved to (`X-Repo-Commit`, checked: 40 lowercase hex digits).
    pub commit: String,
    /// `X-Linked-Etag` or `ETag`, without `W/` and quotes: the sha256 for LFS files, the git blob sha1
    /// otherwise (checked: 40 or 64 lowercase hex digits).
    pub etag: String,
    /// `X-Linked-Size`, else `Content-Length` of a non-redirect answer.
    pub size: Option<u64>,
    /// Where to GET the bytes (the CDN URL after a cross-host redirect, else the resolve URL).
    pub location: Url,
}

/// One file in a tree listing.
#[derive(Debug, Clone, Deserialize)]
pub struct TreeEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LfsInfo {
    pub oid: String,
    pub size: u64,
}

impl TreeEntry {
    /// The etag the Hub will announce for this file: the LFS sha256, else the git oid.
    pub fn etag(&self) -> Option<&str> {
        self.lfs.as_ref().map(|l| l.oid.as_str()).or(self.oid.as_deref())
    }
    pub fn file_size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

#[derive(Deserialize)]
struct RepoInfo {
    sha: Option<String>,
}

/// A client for one repository on one endpoint.
#[derive(Clone)]
pub struct HubClient {
    pub http: reqwest::Client,
    pub endpoint: Url,
    pub token: Option<Token>,
    pub repo: String,
    pub repo_type: RepoType,
}

impl HubClient {
    pub fn new(endpoint: &str, token: Option<Token>, repo: &str, repo_type: RepoType) -> Result<HubClient, HubError> {
        let endpoint_url = Url::parse(endpoint).map_err(|e| {
            HubError::Usage(format!("bad endpoint '{endpoint}': {e}; give a URL such as https://huggingface.co"))
        })?;
        if !matches!(endpoint_url.scheme(), "http" | "https") {
            return Err(HubError::Usage(format!("bad endpoint '{endpoint}': use an http:// or https:// URL")));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| HubError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(HubClient { http, endpoint: endpoint_url, token, repo: repo.to_string(), repo_type })
    }

    /// The endpoint URL with path segments appended (each percent-encoded, `/` inside a segment included).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        url
    }

    /// `{endpoint}/{datasets/}{repo}/resolve/{rev}/{path}`.
    pub fn resolve_url(&self, revision: &str, path: &str) -> Url {
        let mut segments: Vec<&str> = Vec::new();
        if self.repo_type != RepoType::Model {
            segments.push(self.repo_type.plural());
        }
        segments.extend(self.repo.split('/'));
        segments.push("resolve");
        segments.push(revision);
        segments.extend(path.split('/'));
        self.url(&segments)
    }

    fn api_url(&self, action: &str, revision: &str) -> Url {
        let mut segments = vec!["api", self.repo_type.plural()];
        segments.extend(self.repo.split('/'));
        segments.push(action);
        segments.push(revision);
        self.url(&segments)
    }

    /// Same scheme, host and port as the endpoint: only there does the token go.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.endpoint.scheme()
            && url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default()
    }

    /// Headers for a request to `url`: user agent, and the token only for the endpoint's own origin.
    pub fn headers_for(&self, url: &Url) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("gpubench/", env!("CARGO_PKG_VERSION"))));
        if let (Some(token), true) = (&self.token, self.same_origin(url)) {
            if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", token.secret())) {
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
        }
        headers
    }

    /// Sends one request, following redirects. With `stop_cross_host`, a redirect to another
    /// host is not followed but returned (the caller reads metadata from it, as the Hub intends).
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        extra: HeaderMap,
        stop_cross_host: bool,
    ) -> Result<reqwest::Response, HubError> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let mut headers = self.headers_for(&url);
            headers.extend(extra.clone());
            let response = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers)
                .send()
                .await
                .map_err(|e| network_error(&url, &e))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let Some(location) = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
                return Ok(response);
            };
            let relative = Url::parse(location).is_err();
            let next = url.join(location).map_err(|e| HubError::Protocol {
                url: url.to_string(),
                what: format!("bad redirect location '{location}': {e}"),
            })?;
            if stop_cross_host && !relative {
                return Ok(response);
            }
            url = next;
        }
        Err(HubError::Protocol { url: url.to_string(), what: format!("more than {MAX_REDIRECTS} redirects") })
    }

    /// The commit a revision points to (`GET /api/{type}s/{repo}/revision/{rev}`).
    pub async fn commit_of(&self, revision: &str) -> Result<String, HubError> {
        let url = self.api_url("revision", revision);
        let response = retry(METADATA_ATTEMPTS, || self.get_checked(url.clone(), revision, None)).await?;
        let info: RepoInfo = response.json().await.map_err(|e| HubError::Protocol {
            url: url.to_string(),
            what: format!("repository info is not the expected JSON ({e})"),
        })?;
        let sha = info.sha.filter(|s| !s.is_empty()).ok_or_else(|| HubError::Protocol {
            url: url.to_string(),
            what: "repository info has no 'sha'".to_string(),
        })?;
        check_commit("the repository info's 'sha'", &sha)
    }

    /// Every file at a commit (`GET /api/{type}s/{repo}/tree/{commit}?recursive=true`, following `Link: rel="next"`).
    pub async fn list_files(&self, commit: &str) -> Result<Vec<TreeEntry>, HubError> {
        let mut url = self.api_url("tree", commit);
        url.query_pairs_mut().append_pair("recursive", "true");
        let mut files = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            if pages > 10_000 {
                return Err(HubError::Protocol { url: url.to_string(), what: "tree listing never ends".to_string() });
            }
            let response = retry(METADATA_ATTEMPTS, || self.get_checked(url.clone(), commit, None)).await?;
            let next = next_link(response.headers()).map(|link| self.onto_endpoint(&url, &link));
            let page: Vec<TreeEntry> = response.json().await.map_err(|e| HubError::Protocol {
                url: url.to_string(),
                what: format!("tree listing is not the expected JSON ({e})"),
            })?;
            files.extend(page.into_iter().filter(|e| e.kind == "file"));
            match next {
                Some(Ok(next)) => url = next,
                Some(Err(e)) => return Err(e),
                None => return Ok(files),
            }
        }
    }

    /// A `Link` target, with scheme, host and port replaced by the endpoint's (mirrors answer with the upstream host).
    fn onto_endpoint(&self, current: &Url, link: &str) -> Result<Url, HubError> {
        let mut next = current.join(link).map_err(|e| HubError::Protocol {
            url: current.to_string(),
            what: format!("bad Link header '{link}': {e}"),
        })?;
        let _ = next.set_scheme(self.endpoint.scheme());
        let _ = next.set_host(self.endpoint.host_str());
        let _ = next.set_port(self.endpoint.port());
        Ok(next)
    }

    /// HEAD of a file's resolve URL.
    pub async fn file_meta(&self, revision: &str, path: &str) -> Result<FileMeta, HubError> {
        let url = self.resolve_url(revision, path);
        retry(METADATA_ATTEMPTS, || self.head_once(url.clone(), revision, path)).await
    }

    async fn head_once(&self, url: Url, revision: &str, path: &str) -> Result<FileMeta, HubError> {
        let mut extra = HeaderMap::new();
        extra.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let response = self.send(Method::HEAD, url.clone(), extra, true).await?;
        let response = self.check(response, revision, Some(path))?;
        let headers = response.headers();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let commit = text("x-repo-commit").ok_or_else(|| HubError::Protocol {
            url: url.to_string(),
            what: "no X-Repo-Commit header".to_string(),
        })?;
        let commit = check_commit("the X-Repo-Commit header", &commit)?;
        // Both become file names (blobs/ETAG, ETAG.incomplete): checked before any path is built.
        let etag = match (text("x-linked-etag"), text("etag")) {
            (Some(linked), _) => check_etag("the X-Linked-Etag header", &linked)?,
            (None, Some(etag)) => check_etag("the ETag header", &etag)?,
            (None, None) => return Err(HubError::Protocol { url: url.to_string(), what: "no ETag header".to_string() }),
        };
        let is_redirect = response.status().is_redirection();
        let size = text("x-linked-size")
            .or_else(|| if is_redirect { None } else { text("content-length") })
            .and_then(|s| s.trim().parse().ok());
        let location = match text("location") {
            Some(loc) if is_redirect => response.url().join(&loc).map_err(|e| HubError::Protocol {
                url: url.to_string(),
                what: format!("bad redirect location: {e}"),
            })?,
            _ => response.url().clone(),
        };
        Ok(FileMeta { commit, etag, size, location })
    }

    async fn get_checked(&self, url: Url, revision: &str, path: Option<&str>) -> Result<reqwest::Response, HubError> {
        let response = self.send(Method::GET, url, HeaderMap::new(), false).await?;
        self.check(response, revision, path)
    }

    /// Turns an error answer into the error that says what to do.
    pub fn check(&self, response: reqwest::Response, revision: &str, path: Option<&str>) -> Result<reqwest::Response, HubError> {
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            return Ok(response);
        }
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let code = header("x-error-code").unwrap_or_default();
        let message = header("x-error-message");
        let repo = self.repo.clone();
        let endpoint = self.endpoint.as_str().trim_end_matches('/').to_string();
        Err(match (code.as_str(), status) {
            ("GatedRepo", _) => HubError::Gated { repo, endpoint },
            ("RevisionNotFound", _) => HubError::RevisionNotFound { repo, revision: revision.to_string() },
            ("EntryNotFound", _) => HubError::EntryNotFound {
                repo,
                revision: revision.to_string(),
                path: path.unwrap_or_default().to_string(),
            },
            ("RepoNotFound", _) => HubError::RepoNotFound { repo, endpoint },
            (_, StatusCode::UNAUTHORIZED) if self.token.is_some() => HubError::Unauthorized { repo },
            (_, StatusCode::UNAUTHORIZED) => HubError::RepoNotFound { repo, endpoint },
            (_, StatusCode::NOT_FOUND) if path.is_some() => HubError::EntryNotFound {
                repo,
                revision: revision.to_string(),
                path: path.unwrap_or_default().to_string(),
            },
            (_, StatusCode::NOT_FOUND) => HubError::RepoNotFound { repo, endpoint },
            _ => HubError::Http {
                url: response.url().to_string(),
                status: status.as_u16(),
                message: message.map(|m| format!(" ({m})")).unwrap_or_default(),
            },
        })
    }
}

/// Runs `attempt` up to `attempts` times while it fails transiently, waiting 250 ms, 500 ms, 1 s... between.
pub async fn retry<T, F, Fut>(attempts: u32, mut attempt: F) -> Result<T, HubError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, HubError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if e.is_transient() && tries < attempts => {
                tracing::info!("retrying after: {e}");
                tokio::time::sleep(backoff(tries)).await;
            }
            other => return other,
        }
    }
}

/// The wait before try `tries + 1`.
pub fn backoff(tries: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << tries.saturating_sub(1).min(5)))
}

/// The target of `Link: <...>; rel="next"`.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let text = value.to_str().ok()?;
        for part in text.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                return Some(target.trim_start_matches('<').trim_end_matches('>').to_string());
            }
        }
    }
    None
}

/// A network error described without its URL's secrets (there are none: tokens only travel in headers).
pub fn network_error(url: &Url, e: &reqwest::Error) -> HubError {
    let mut reason = if e.is_timeout() { "timed out".to_string() } else { String::new() };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        if !reason.is_empty() {
            reason.push_str(": ");
        }
        reason.push_str(&s.to_string());
        source = s.source();
    }
    if reason.is_empty() {
        reason = e.to_string();
    }
    HubError::Network { url: url.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static("<https://x/a?cursor=1>; rel=\"prev\", <https://x/a?cursor=2>; rel=\"next\""),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://x/a?cursor=2"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn urls_encode_revisions_and_keep_paths() {
        let c = HubClient::new("http://127.0.0.1:9/", None, "org/name", RepoType::Model).unwrap();
        assert_eq!(c.resolve_url("refs/pr/1", "dir/a b.json").as_str(), "http://127.0.0.1:9/org/name/resolve/refs%2Fpr%2F1/dir/a%20b.json");
        let d = HubClient::new("http://127.0.0.1:9/", None, "org/name", RepoType::Dataset).unwrap();
        assert_eq!(d.resolve_url("main", "x").as_str(), "http://127.0.0.1:9/datasets/org/name/resolve/main/x");
        assert_eq!(c.api_url("revision", "main").as_str(), "http://127.0.0.1:9/api/models/org/name/revision/main");
    }

    #[test]
    fn the_token_goes_only_to_the_endpoint_origin() {
        let c = HubClient::new("http://127.0.0.1:9", Token::new("hf_secret"), "o/n", RepoType::Model).unwrap();
        assert!(c.headers_for(&Url::parse("http://127.0.0.1:9/o/n").unwrap()).contains_key(AUTHORIZATION));
        assert!(!c.headers_for(&Url::parse("http://127.0.0.1:10/blob").unwrap()).contains_key(AUTHORIZATION));
        assert!(!c.headers_for(&Url::parse("http://localhost:9/blob").unwrap()).contains_key(AUTHORIZATION));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(30), Duration::from_millis(8000));
    }
}
