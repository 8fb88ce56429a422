//! Deciding what to fetch (repository info, tree, what is already on disk) and fetching it in parallel.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;

use super::api::{FileMeta, HubClient};
use super::error::HubError;
use super::layout::{CacheRepo, LocalDir};
use super::lock;
use super::names::{check_etag, check_repo_id, check_repo_path, is_commit_hash, Selection};
use super::progress::Progress;
use super::settings::{self, Env};
use super::job::Job;
use super::transfer;
use super::DownloadArgs;

/// What happened to one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub size: Option<u64>,
    /// `downloaded`, `present` (already complete, nothing fetched), `linked` (blob already in the cache)
    /// or, with --dry-run, `download` / `present`.
    pub status: &'static str,
    pub local_path: PathBuf,
    /// Bytes that came over the network for it.
    pub fetched_bytes: u64,
    /// Bytes kept from an interrupted earlier download.
    pub resumed_bytes: u64,
}

/// The JSON summary (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub repo_id: String,
    pub repo_type: &'static str,
    pub revision: String,
    pub commit: String,
    /// The snapshot or local folder, or the file when one FILE was asked for.
    pub path: PathBuf,
    pub offline: bool,
    pub dry_run: bool,
    pub files: Vec<FileReport>,
    pub fetched_bytes: u64,
    pub seconds: f64,
}

impl Summary {
    pub fn headline(&self) -> String {
        let fetched = self.files.iter().filter(|f| f.status == "downloaded").count();
        let present = self.files.len() - fetched;
        let mib = self.fetched_bytes as f64 / (1024.0 * 1024.0);
        let rate = if self.seconds > 0.0 { mib / self.seconds } else { 0.0 };
        format!(
            "{}@{}: {fetched} downloaded ({mib:.1} MiB, {rate:.1} MiB/s), {present} already present",
            self.repo_id,
            short_commit(&self.commit)
        )
    }
}

fn short_commit(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// Where files go.
enum Target {
    Cache(CacheRepo),
    Local(LocalDir),
}

/// A file to consider, with what the listing said about it.
struct Entry {
    path: String,
    size: Option<u64>,
    etag: Option<String>,
}

/// The whole command, minus printing.
pub async fn download(args: &DownloadArgs, quiet: bool, env: &dyn Env) -> Result<Summary, HubError> {
    let started = Instant::now();
    check_args(args)?;
    let selection = Selection::new(&args.include, &args.exclude)?;
    let cache = CacheRepo::new(&settings::cache_dir(args.cache_dir.as_deref(), env), args.repo_type, &args.repo_id);
    let target = match &args.local_dir {
        Some(dir) => Target::Local(LocalDir::new(dir)),
        None => Target::Cache(cache.clone()),
    };

    if settings::offline(args.offline, env) {
        return from_disk(args, &selection, &target, started);
    }
    let endpoint = settings::endpoint(args.endpoint.as_deref(), env);
    let client = HubClient::new(&endpoint, settings::token(args.token.as_deref(), env), &args.repo_id, args.repo_type)?;

    let commit = match client.commit_of(&args.revision).await {
        Ok(commit) => commit,
        Err(e @ HubError::Network { .. }) => {
            // As Python does: with the Hub unreachable, what is on disk still serves.
            return match from_disk(args, &selection, &target, started) {
                Ok(summary) => {
                    if !quiet {
                        eprintln!("warning: {e}\nwarning: using the files already on disk");
                    }
                    Ok(summary)
                }
                Err(_) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };

    let entries = list_entries(&client, &commit, args, &selection).await?;
    if !args.dry_run {
        prepare_target(&target, args, &commit)?;
    }
    let (mut reports, todo) = split_present(&target, &commit, entries)?;
    reports.extend(fetch_all(&client, &target, &commit, todo, quiet, args).await?);
    reports.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(summary(args, commit, reports, &target, false, started))
}

/// The repository id, the FILE arguments and the revision, before anything is asked.
fn check_args(args: &DownloadArgs) -> Result<(), HubError> {
    check_repo_id(&args.repo_id)?;
    for f in &args.files {
        check_repo_path(f).map_err(|e| HubError::Usage(format!("bad FILE argument: {e}")))?;
    }
    if args.revision.trim().is_empty() {
        return Err(HubError::Usage("--revision is empty: give a branch, tag or commit".into()));
    }
    Ok(())
}

/// The files to consider: the FILE arguments, else the tree listing filtered by the selection.
async fn list_entries(client: &HubClient, commit: &str, args: &DownloadArgs, selection: &Selection) -> Result<Vec<Entry>, HubError> {
    let entries: Vec<Entry> = if args.files.is_empty() {
        let mut entries = Vec::new();
        for item in client.list_files(commit).await? {
            if !selection.matches(&item.path) {
                continue;
            }
            check_repo_path(&item.path)?;
            let etag = item.etag().map(|e| check_etag(&format!("the tree listing's oid of '{}'", item.path), e)).transpose()?;
            entries.push(Entry { size: item.file_size(), etag, path: item.path });
        }
        entries
    } else {
        args.files.iter().map(|f| Entry { path: f.clone(), size: None, etag: None }).collect()
    };
    if entries.is_empty() {
        return Err(HubError::NothingMatched { repo: args.repo_id.clone(), revision: args.revision.clone() });
    }
    Ok(entries)
}

/// Makes the target's folders; the cache also records which commit the revision names.
fn prepare_target(target: &Target, args: &DownloadArgs, commit: &str) -> Result<(), HubError> {
    match target {
        Target::Cache(c) => {
            c.prepare()?;
            c.write_ref(&args.revision, commit)
        }
        Target::Local(l) => l.prepare(),
    }
}

/// The files already complete (nothing to fetch, not even a HEAD), and the ones to fetch.
fn split_present(target: &Target, commit: &str, entries: Vec<Entry>) -> Result<(Vec<FileReport>, Vec<Entry>), HubError> {
    let mut reports = Vec::new();
    let mut todo = Vec::new();
    for entry in entries {
        match already_there(target, commit, &entry)? {
            Some(local_path) => reports.push(FileReport {
                size: entry.size.or_else(|| std::fs::metadata(&local_path).ok().map(|m| m.len())),
                path: entry.path,
                status: "present",
                local_path,
                fetched_bytes: 0,
                resumed_bytes: 0,
            }),
            None => todo.push(entry),
        }
    }
    Ok((reports, todo))
}

/// Fetches the files in parallel (`--max-workers`); the first error is returned, the
/// others are printed unless `quiet`.
async fn fetch_all(
    client: &HubClient,
    target: &Target,
    commit: &str,
    todo: Vec<Entry>,
    quiet: bool,
    args: &DownloadArgs,
) -> Result<Vec<FileReport>, HubError> {
    let total: u64 = todo.iter().filter_map(|e| e.size).sum();
    let progress = Progress::new(quiet || args.dry_run, total, todo.len());
    let workers = usize::from(args.max_workers);
    let results: Vec<Result<FileReport, HubError>> = futures_util::stream::iter(todo)
        .map(|entry| fetch_one(client, target, commit, entry, &progress, args))
        .map(|f| async {
            // Name the revision the user gave, not the commit it resolved to.
            f.await.map_err(|e| match e {
                HubError::EntryNotFound { repo, path, .. } => HubError::EntryNotFound { repo, path, revision: args.revision.clone() },
                e => e,
            })
        })
        .buffer_unordered(workers)
        .collect()
        .await;
    progress.finish();

    let mut reports = Vec::new();
    let mut first_error = None;
    for result in results {
        match result {
            Ok(report) => reports.push(report),
            Err(e) => {
                if first_error.is_some() && !quiet {
                    eprintln!("error: {e}");
                }
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

/// The local path of a file that needs no download, if any.
fn already_there(target: &Target, commit: &str, entry: &Entry) -> Result<Option<PathBuf>, HubError> {
    match target {
        Target::Cache(c) => {
            let pointer = c.pointer(commit, &entry.path);
            Ok(pointer.exists().then_some(pointer))
        }
        Target::Local(l) => {
            let file = l.file(&entry.path);
            if !file.is_file() {
                return Ok(None);
            }
            if let Some(side) = l.read(&entry.path) {
                let same = match &entry.etag {
                    Some(etag) => &side.etag == etag,
                    None => side.commit == commit,
                };
                return Ok(same.then_some(file));
            }
            // No sidecar (copied in by hand?): adopt the file if its sha256 is the LFS etag.
            if let Some(etag) = entry.etag.as_deref().filter(|e| e.len() == 64) {
                if crate::support::fs::sha256_file(&file).ok().as_deref() == Some(etag) {
                    l.write(&entry.path, commit, etag)?;
                    return Ok(Some(file));
                }
            }
            Ok(None)
        }
    }
}

async fn fetch_one(
    client: &HubClient,
    target: &Target,
    commit: &str,
    entry: Entry,
    progress: &Progress,
    args: &DownloadArgs,
) -> Result<FileReport, HubError> {
    let dry_run = args.dry_run;
    let meta = client.file_meta(commit, &entry.path).await?;
    if entry.size.is_none() {
        if let Some(size) = meta.size {
            progress.grow(size);
        }
    }
    let size = meta.size.or(entry.size);
    let mut report = FileReport {
        path: entry.path.clone(),
        size,
        status: "downloaded",
        local_path: PathBuf::new(),
        fetched_bytes: 0,
        resumed_bytes: 0,
    };
    match target {
        Target::Cache(c) => {
            let blob = c.blob(&meta.etag);
            report.local_path = c.pointer(commit, &entry.path);
            if dry_run {
                report.status = if blob.exists() { "link" } else { "download" };
                return Ok(report);
            }
            // One process fetches a blob; another one waits, then finds it there.
            let _lock = if blob.exists() { None } else { Some(lock::acquire(&c.blob_lock(&meta.etag), &entry.path).await?) };
            if blob.exists() {
                report.status = "linked";
                progress.add(size.unwrap_or(0) as i64);
            } else {
                transfer_into(client, &meta, c.blob_incomplete(&meta.etag), blob.clone(), &mut report, progress, args).await?;
            }
            c.link(commit, &entry.path, &meta.etag)?;
        }
        Target::Local(l) => {
            report.local_path = l.file(&entry.path);
            if dry_run {
                report.status = "download";
                return Ok(report);
            }
            let _lock = lock::acquire(&l.lock(&entry.path), &entry.path).await?;
            // Another process may have fetched it while this one waited.
            if l.read(&entry.path).is_some_and(|side| side.etag == meta.etag) && report.local_path.is_file() {
                report.status = "present";
                progress.add(size.unwrap_or(0) as i64);
                return Ok(report);
            }
            let dest = report.local_path.clone();
            transfer_into(client, &meta, l.incomplete(&entry.path, &meta.etag), dest, &mut report, progress, args).await?;
            l.write(&entry.path, &meta.commit, &meta.etag)?;
        }
    }
    Ok(report)
}

/// Fetches the file of `report` into `dest`, resuming from `incomplete`, with its own
/// progress bar; the report gets the bytes fetched, resumed and the final size.
async fn transfer_into(
    client: &HubClient,
    meta: &FileMeta,
    incomplete: PathBuf,
    dest: PathBuf,
    report: &mut FileReport,
    progress: &Progress,
    args: &DownloadArgs,
) -> Result<(), HubError> {
    let bar = progress.file(&report.path, report.size);
    let job = Job {
        name: &report.path,
        url: meta.location.clone(),
        size: report.size,
        etag: &meta.etag,
        incomplete,
        dest,
        connections: usize::from(args.connections),
        no_verify: args.no_verify,
    };
    let outcome = transfer::fetch(client, &job, progress, &bar).await;
    bar.finish_and_clear();
    let outcome = outcome?;
    report.fetched_bytes = outcome.fetched;
    report.resumed_bytes = outcome.resumed;
    report.size = Some(outcome.size);
    Ok(())
}

/// Offline: answer from the cache or the local folder alone.
fn from_disk(args: &DownloadArgs, selection: &Selection, target: &Target, started: Instant) -> Result<Summary, HubError> {
    let what = format!("{}@{}", args.repo_id, args.revision);
    let present = |path: String, local_path: PathBuf| FileReport {
        size: std::fs::metadata(&local_path).ok().map(|m| m.len()),
        path,
        status: "present",
        local_path,
        fetched_bytes: 0,
        resumed_bytes: 0,
    };
    let (commit, reports, dir) = match target {
        Target::Cache(c) => {
            let missing = || HubError::OfflineNotCached { what: what.clone(), dir: c.cache_dir.clone() };
            let commit = if is_commit_hash(&args.revision) { Some(args.revision.clone()) } else { c.read_ref(&args.revision) };
            let commit = commit.filter(|commit| c.snapshot(commit).is_dir()).ok_or_else(missing)?;
            let paths = requested(args, selection, || c.snapshot_files(&commit));
            let mut reports = Vec::new();
            for p in paths {
                let pointer = c.pointer(&commit, &p);
                if !pointer.exists() {
                    return Err(HubError::OfflineNotCached { what: format!("'{p}' of {what}"), dir: c.cache_dir.clone() });
                }
                reports.push(present(p, pointer));
            }
            (commit, reports, c.cache_dir.clone())
        }
        Target::Local(l) => {
            let paths = requested(args, selection, || {
                let mut all = Vec::new();
                list_local(&l.root, "", &mut all);
                all
            });
            let mut reports = Vec::new();
            let mut commit = String::new();
            for p in paths {
                let file = l.file(&p);
                if !file.is_file() {
                    return Err(HubError::OfflineNotCached { what: format!("'{p}' of {what}"), dir: l.root.clone() });
                }
                if let Some(side) = l.read(&p) {
                    commit = side.commit;
                }
                reports.push(present(p, file));
            }
            (commit, reports, l.root.clone())
        }
    };
    if reports.is_empty() {
        return Err(HubError::OfflineNotCached { what, dir });
    }
    Ok(summary(args, commit, reports, target, true, started))
}

/// The FILE arguments, else the files on disk (from `on_disk`) that the selection matches.
fn requested(args: &DownloadArgs, selection: &Selection, on_disk: impl FnOnce() -> Vec<String>) -> Vec<String> {
    if args.files.is_empty() {
        on_disk().into_iter().filter(|p| selection.matches(p)).collect()
    } else {
        args.files.clone()
    }
}

fn list_local(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if prefix.is_empty() && name == ".cache" {
            continue;
        }
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let path = entry.path();
        if path.is_dir() {
            list_local(&path, &rel, out);
        } else {
            out.push(rel);
        }
    }
}

fn summary(args: &DownloadArgs, commit: String, mut files: Vec<FileReport>, target: &Target, offline: bool, started: Instant) -> Summary {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let path = match (args.files.len(), files.first(), target) {
        (1, Some(f), _) => f.local_path.clone(),
        (_, _, Target::Cache(c)) => c.snapshot(&commit),
        (_, _, Target::Local(l)) => l.root.clone(),
    };
    Summary {
        repo_id: args.repo_id.clone(),
        repo_type: args.repo_type.plural(),
        revision: args.revision.clone(),
        fetched_bytes: files.iter().map(|f| f.fetched_bytes).sum(),
        commit,
        path,
        offline,
        dry_run: args.dry_run,
        files,
        seconds: started.elapsed().as_secs_f64(),
    }
}
