//! An in-process fake of the Hugging Face Hub speaking its real protocol, on loopback:
//! repository info, tree listing paginated with `Link`, resolve (HEAD metadata headers, a 302 to a
//! second "CDN" server for LFS files, relative redirects for renamed repositories), Range/206,
//! `X-Error-Code` errors, a gated repository, and faults: a flaky CDN that drops the connection
//! mid-file, and corrupt bytes.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One file of a commit.
#[derive(Clone)]
pub struct FakeFile {
    pub path: String,
    pub content: Bytes,
    /// Stored in LFS: resolved with a 302 to the CDN, etag = sha256.
    pub lfs: bool,
    /// sha256 and git blob id, computed once (large files would otherwise be hashed on every request).
    digests: Arc<OnceLock<(String, String)>>,
}

impl FakeFile {
    pub fn text(path: &str, content: &str) -> FakeFile {
        FakeFile { path: path.into(), content: Bytes::from(content.to_string()), lfs: false, digests: Arc::default() }
    }
    pub fn lfs(path: &str, content: Bytes) -> FakeFile {
        FakeFile { path: path.into(), content, lfs: true, digests: Arc::default() }
    }
    fn digests(&self) -> &(String, String) {
        self.digests.get_or_init(|| {
            let mut h = Sha1::new();
            h.update(format!("blob {}\0", self.content.len()).as_bytes());
            h.update(&self.content);
            (hex(&Sha256::digest(&self.content)), hex(&h.finalize()))
        })
    }
    pub fn sha256(&self) -> String {
        self.digests().0.clone()
    }
    pub fn git_oid(&self) -> String {
        self.digests().1.clone()
    }
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_oid()
        }
    }
}

/// One repository: commits with their files, and branch/tag names pointing at commits.
#[derive(Clone, Default)]
pub struct FakeRepo {
    pub id: String,
    pub commits: HashMap<String, Vec<FakeFile>>,
    pub refs: HashMap<String, String>,
    /// Answers 401 GatedRepo unless the request carries `Bearer {token}`.
    pub gated_token: Option<String>,
}

impl FakeRepo {
    pub fn new(id: &str) -> FakeRepo {
        FakeRepo { id: id.into(), ..Default::default() }
    }
    /// Adds a commit and points `branch` at it.
    pub fn commit(mut self, commit: &str, branch: &str, files: Vec<FakeFile>) -> FakeRepo {
        self.commits.insert(commit.into(), files);
        self.refs.insert(branch.into(), commit.into());
        self
    }
    pub fn gated(mut self, token: &str) -> FakeRepo {
        self.gated_token = Some(token.into());
        self
    }
}

/// Fault injection and paging.
#[derive(Clone)]
pub struct Options {
    /// Entries per tree page (the `Link: rel="next"` header pages the rest).
    pub tree_page: usize,
    /// The first GET of each CDN blob drops the connection after this many bytes of its body.
    pub flaky_after: Option<u64>,
    /// CDN blobs (by sha256) served with one byte changed.
    pub corrupt: HashSet<String>,
    /// Size of the chunks the servers write.
    pub chunk: usize,
    /// Ignore `Range` on the CDN (answer 200 with everything).
    pub ignore_range: bool,
    /// Answer `bytes=a-b` with everything from `a` on (206), as some servers do.
    pub open_ended_ranges: bool,
    /// Renamed repositories: old id -> new id (answered with a relative 307).
    pub renamed: HashMap<String, String>,
    /// Tree `Link` headers name another host, as a mirror relaying the upstream answer does.
    pub foreign_links: bool,
    /// The first N hub requests are answered 503, then 429, alternately (a busy Hub).
    pub busy: u32,
    /// A hostile or broken Hub: this `ETag` on every resolve answer.
    pub etag: Option<String>,
    /// This `X-Linked-Etag` on LFS resolve answers.
    pub linked_etag: Option<String>,
    /// This `X-Repo-Commit` on resolve answers.
    pub repo_commit: Option<String>,
    /// This `sha` in the repository info.
    pub api_sha: Option<String>,
    /// HEAD answers for non-LFS files carry no size (no `Content-Length`).
    pub head_without_size: bool,
    /// CDN bodies carry this many bytes more than the file (announced in their `Content-Length`).
    pub extra_bytes: usize,
    /// The CDN waits this long before each chunk (so that two clients overlap).
    pub chunk_delay_ms: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            tree_page: 2,
            flaky_after: None,
            corrupt: HashSet::new(),
            chunk: 64 * 1024,
            ignore_range: false,
            open_ended_ranges: false,
            renamed: HashMap::new(),
            foreign_links: false,
            busy: 0,
            etag: None,
            linked_etag: None,
            repo_commit: None,
            api_sha: None,
            head_without_size: false,
            extra_bytes: 0,
            chunk_delay_ms: 0,
        }
    }
}

/// What the servers saw.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    /// Body bytes the CDN sent, per sha256.
    pub cdn_bytes: HashMap<String, u64>,
    /// GETs the CDN answered, per sha256.
    pub cdn_gets: HashMap<String, u32>,
    /// Range headers the CDN received.
    pub cdn_ranges: Vec<String>,
    /// Requests to the CDN that carried an Authorization header.
    pub cdn_auth: u32,
    /// GETs of resolve URLs (non-LFS bodies), per path.
    pub hub_file_gets: HashMap<String, u32>,
    pub heads: u32,
    pub api_calls: u32,
    pub tree_pages: u32,
    /// Every Authorization header value the hub saw (to check the token got there).
    pub hub_auth: Vec<String>,
    /// Requests answered 503 or 429.
    pub busy_answers: u32,
}

struct Shared {
    repos: HashMap<String, FakeRepo>,
    options: Options,
    stats: Mutex<Stats>,
    hub_url: Mutex<String>,
    cdn_url: Mutex<String>,
}

/// The running pair of servers. Dropping it stops them.
pub struct FakeHub {
    pub url: String,
    pub cdn_url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHub {
    pub fn start(repos: Vec<FakeRepo>, options: Options) -> FakeHub {
        Self::start_on(repos, options, 0)
    }

    /// Starts on a fixed hub port (0: any free one).
    pub fn start_on(repos: Vec<FakeRepo>, options: Options, port: u16) -> FakeHub {
        let hub = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind hub");
        let cdn = std::net::TcpListener::bind("127.0.0.1:0").expect("bind cdn");
        hub.set_nonblocking(true).expect("nonblocking");
        cdn.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", hub.local_addr().expect("addr"));
        let cdn_url = format!("http://{}", cdn.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            repos: repos.into_iter().map(|r| (r.id.clone(), r)).collect(),
            options,
            stats: Mutex::new(Stats::default()),
            hub_url: Mutex::new(url.clone()),
            cdn_url: Mutex::new(cdn_url.clone()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let hub = tokio::net::TcpListener::from_std(hub).expect("listener");
                let cdn = tokio::net::TcpListener::from_std(cdn).expect("listener");
                let hub_app = axum::Router::new().fallback(hub_handler).with_state(state.clone());
                let cdn_app = axum::Router::new().fallback(cdn_handler).with_state(state);
                let a = tokio::spawn(async move { axum::serve(hub, hub_app).await });
                let b = tokio::spawn(async move { axum::serve(cdn, cdn_app).await });
                let _ = stopped.await;
                a.abort();
                b.abort();
            });
        });
        FakeHub { url, cdn_url, shared, stop: Some(stop), thread: Some(thread) }
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().expect("stats").clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.url.trim_start_matches("http://").parse().expect("addr")
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&segment[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = Response::new(Body::from(format!("{{\"error\":\"{message}\"}}")));
    *r.status_mut() = status;
    if !code.is_empty() {
        r.headers_mut().insert("x-error-code", HeaderValue::from_str(code).expect("header"));
    }
    r.headers_mut().insert("x-error-message", HeaderValue::from_str(message).expect("header"));
    r
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut().insert("location", HeaderValue::from_str(location).expect("header"));
    r
}

async fn hub_handler(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    {
        let mut st = s.stats.lock().expect("stats");
        if let Some(a) = &auth {
            st.hub_auth.push(a.clone());
        }
        if st.busy_answers < s.options.busy {
            st.busy_answers += 1;
            let status = if st.busy_answers % 2 == 1 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::TOO_MANY_REQUESTS };
            return error(status, "", "busy, try again");
        }
    }
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let seg: Vec<String> = raw.iter().map(|p| decode(p)).collect();
    let is_api = seg.first().map(String::as_str) == Some("api");
    let (repo_id, rest) = if is_api {
        if seg.len() < 6 || seg[1] != "models" {
            return error(StatusCode::NOT_FOUND, "", "not found");
        }
        (format!("{}/{}", seg[2], seg[3]), &seg[4..])
    } else {
        if seg.len() < 5 || seg[2] != "resolve" {
            return error(StatusCode::NOT_FOUND, "", "not found");
        }
        (format!("{}/{}", seg[0], seg[1]), &seg[2..])
    };
    if let Some(new) = s.options.renamed.get(&repo_id) {
        let old_prefix = if is_api { format!("/api/models/{repo_id}/") } else { format!("/{repo_id}/") };
        let new_prefix = if is_api { format!("/api/models/{new}/") } else { format!("/{new}/") };
        let mut location = path.replacen(&old_prefix, &new_prefix, 1);
        if !query.is_empty() {
            location = format!("{location}?{query}");
        }
        return redirect(StatusCode::TEMPORARY_REDIRECT, &location);
    }
    let Some(repo) = s.repos.get(&repo_id) else {
        return error(StatusCode::UNAUTHORIZED, "RepoNotFound", "Repository Not Found");
    };
    if let Some(token) = &repo.gated_token {
        if auth.as_deref() != Some(&format!("Bearer {token}")) {
            return error(StatusCode::UNAUTHORIZED, "GatedRepo", "Access to this model is restricted");
        }
    }
    let revision = rest[1].clone();
    let commit = if repo.commits.contains_key(&revision) { Some(revision.clone()) } else { repo.refs.get(&revision).cloned() };
    let Some(commit) = commit else {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound", "Invalid rev id");
    };
    let files = &repo.commits[&commit];
    if is_api {
        s.stats.lock().expect("stats").api_calls += 1;
        return match rest[0].as_str() {
            "revision" => repo_info(&repo_id, s.options.api_sha.as_deref().unwrap_or(&commit), files),
            "tree" => tree(&s, &path, &query, files),
            _ => error(StatusCode::NOT_FOUND, "", "not found"),
        };
    }
    let file_path = rest[2..].join("/");
    let Some(file) = files.iter().find(|f| f.path == file_path) else {
        let mut r = error(StatusCode::NOT_FOUND, "EntryNotFound", "Entry not found");
        r.headers_mut().insert("x-repo-commit", HeaderValue::from_str(&commit).expect("header"));
        return r;
    };
    resolve(&s, req.method(), req.headers(), &commit, file)
}

fn repo_info(repo_id: &str, commit: &str, files: &[FakeFile]) -> Response {
    let siblings: Vec<serde_json::Value> = files.iter().map(|f| serde_json::json!({"rfilename": f.path})).collect();
    let body = serde_json::json!({"id": repo_id, "modelId": repo_id, "sha": commit, "private": false, "siblings": siblings});
    json(body, None)
}

fn json(body: serde_json::Value, link: Option<String>) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(link) = link {
        r.headers_mut().insert("link", HeaderValue::from_str(&link).expect("header"));
    }
    r
}

fn tree(s: &Shared, path: &str, query: &str, files: &[FakeFile]) -> Response {
    s.stats.lock().expect("stats").tree_pages += 1;
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut dirs: Vec<String> = files
        .iter()
        .filter_map(|f| f.path.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    dirs.sort();
    for d in dirs {
        entries.push(serde_json::json!({"type": "directory", "oid": "0".repeat(40), "size": 0, "path": d}));
    }
    for f in files {
        let mut e = serde_json::json!({"type": "file", "oid": f.git_oid(), "size": f.content.len(), "path": f.path});
        if f.lfs {
            e["lfs"] = serde_json::json!({"oid": f.sha256(), "size": f.content.len(), "pointerSize": 134});
        }
        entries.push(e);
    }
    let cursor: usize = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("cursor="))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let page = s.options.tree_page.max(1);
    let end = (cursor + page).min(entries.len());
    let link = (end < entries.len()).then(|| {
        let host = if s.options.foreign_links { "https://upstream.invalid".to_string() } else { s.hub_url.lock().expect("url").clone() };
        format!("<{host}{path}?recursive=true&cursor={end}>; rel=\"next\"")
    });
    json(serde_json::Value::Array(entries[cursor.min(end)..end].to_vec()), link)
}

fn resolve(s: &Shared, method: &Method, headers: &HeaderMap, commit: &str, file: &FakeFile) -> Response {
    let mut r = resolve_answer(s, method, headers, commit, file);
    let h = r.headers_mut();
    let o = &s.options;
    for (name, value) in [("etag", &o.etag), ("x-repo-commit", &o.repo_commit)] {
        if let Some(v) = value {
            h.insert(name, HeaderValue::from_str(v).expect("header"));
        }
    }
    if let (Some(v), true) = (&o.linked_etag, file.lfs) {
        h.insert("x-linked-etag", HeaderValue::from_str(v).expect("header"));
    }
    r
}

fn resolve_answer(s: &Shared, method: &Method, headers: &HeaderMap, commit: &str, file: &FakeFile) -> Response {
    let _ = headers;
    if method == Method::HEAD {
        s.stats.lock().expect("stats").heads += 1;
    }
    if file.lfs {
        let cdn = s.cdn_url.lock().expect("url").clone();
        let mut r = redirect(StatusCode::FOUND, &format!("{cdn}/blobs/{}?expires=0&signature=abc", file.sha256()));
        let h = r.headers_mut();
        h.insert("x-repo-commit", HeaderValue::from_str(commit).expect("header"));
        h.insert("x-linked-etag", HeaderValue::from_str(&format!("\"{}\"", file.sha256())).expect("header"));
        h.insert("x-linked-size", HeaderValue::from(file.content.len()));
        h.insert("etag", HeaderValue::from_str(&format!("\"{}\"", file.git_oid())).expect("header"));
        return r;
    }
    if method == Method::GET {
        *s.stats.lock().expect("stats").hub_file_gets.entry(file.path.clone()).or_default() += 1;
    }
    let head = method == Method::HEAD;
    let mut r = match (head, s.options.head_without_size) {
        // A body of unknown length: the server cannot announce a Content-Length.
        (true, true) => Response::new(Body::from_stream(futures_util::stream::empty::<Result<Bytes, std::io::Error>>())),
        (true, false) => Response::new(Body::empty()),
        (false, _) => Response::new(Body::from(file.content.clone())),
    };
    let h = r.headers_mut();
    h.insert("x-repo-commit", HeaderValue::from_str(commit).expect("header"));
    h.insert("etag", HeaderValue::from_str(&format!("W/\"{}\"", file.git_oid())).expect("header"));
    if !(head && s.options.head_without_size) {
        h.insert("content-length", HeaderValue::from(file.content.len()));
    }
    r
}

async fn cdn_handler(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let Some(sha) = path.strip_prefix("/blobs/") else {
        return error(StatusCode::NOT_FOUND, "", "not found");
    };
    let file = s.repos.values().flat_map(|r| r.commits.values()).flatten().find(|f| f.lfs && f.sha256() == sha).cloned();
    let Some(file) = file else {
        return error(StatusCode::NOT_FOUND, "", "no such blob");
    };
    let range = req.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_string);
    let first_get;
    {
        let mut st = s.stats.lock().expect("stats");
        if req.headers().contains_key("authorization") {
            st.cdn_auth += 1;
        }
        if let Some(r) = &range {
            st.cdn_ranges.push(r.clone());
        }
        let gets = st.cdn_gets.entry(sha.to_string()).or_default();
        first_get = *gets == 0;
        if req.method() == Method::GET {
            *gets += 1;
        }
    }
    let mut content = file.content.clone();
    if s.options.corrupt.contains(sha) {
        let mut v = content.to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0xff;
        content = Bytes::from(v);
    }
    if s.options.extra_bytes > 0 {
        let mut v = content.to_vec();
        v.resize(v.len() + s.options.extra_bytes, 0);
        content = Bytes::from(v);
    }
    let total = content.len() as u64;
    // `bytes=a-` or `bytes=a-b` (b inclusive, clipped to the end).
    let asked = match (&range, s.options.ignore_range) {
        (Some(r), false) => r.strip_prefix("bytes=").and_then(|r| r.split_once('-')).and_then(|(a, b)| {
            let a = a.trim().parse::<u64>().ok()?;
            let b = if b.trim().is_empty() || s.options.open_ended_ranges { None } else { Some(b.trim().parse::<u64>().ok()?) };
            Some((a, b))
        }),
        _ => None,
    };
    let start = asked.map(|(a, _)| a);
    if let Some(start) = start {
        if start >= total {
            let mut r = error(StatusCode::RANGE_NOT_SATISFIABLE, "", "range");
            r.headers_mut().insert("content-range", HeaderValue::from_str(&format!("bytes */{total}")).expect("header"));
            return r;
        }
    }
    let from = start.unwrap_or(0);
    let until = asked.and_then(|(_, b)| b).map_or(total, |b| (b + 1).min(total));
    // The first GET breaks off after `flaky_after` bytes of its body.
    let drop_at = if first_get { s.options.flaky_after.map(|n| from + n).filter(|&at| at < until) } else { None };
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        let chunk = s.options.chunk as u64;
        let delay = std::time::Duration::from_millis(s.options.chunk_delay_ms);
        let shared = s.clone();
        let sha = sha.to_string();
        let stream = futures_util::stream::unfold(from, move |pos| {
            let content = content.clone();
            let shared = shared.clone();
            let sha = sha.clone();
            async move {
                if pos >= until {
                    return None;
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if let Some(at) = drop_at {
                    if pos >= at {
                        // Give the bytes already written a moment to leave, then break the connection.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        return Some((Err(std::io::Error::other("flaky: connection dropped")), until));
                    }
                }
                let mut end = (pos + chunk).min(until);
                if let Some(at) = drop_at {
                    end = end.min(at);
                }
                *shared.stats.lock().expect("stats").cdn_bytes.entry(sha).or_default() += end - pos;
                Some((Ok::<Bytes, std::io::Error>(content.slice(pos as usize..end as usize)), end))
            }
        });
        Body::from_stream(stream)
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert("content-length", HeaderValue::from(until - from));
    h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    h.insert("etag", HeaderValue::from_str(&format!("\"{sha}\"")).expect("header"));
    if start.is_some() {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        let v = format!("bytes {from}-{}/{total}", until - 1);
        r.headers_mut().insert("content-range", HeaderValue::from_str(&v).expect("header"));
    }
    r
}
