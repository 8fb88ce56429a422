//! Moving one file's bytes: resume from `*.incomplete` with `Range`, retry with backoff, write and
//! hash in large batches (hashing on its own thread), verify, and rename into place only when complete.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::ProgressBar;
use reqwest::header::{HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, StatusCode};

use super::api::{backoff, HubClient};
use super::error::HubError;
use super::progress::Progress;
use super::job::{content_range, Check, Job, ATTEMPTS_WITHOUT_PROGRESS, MAX_ATTEMPTS};
use super::ranges::{self, Ranged};

/// Bytes gathered from the network before they are written and hashed in one go.
const BATCH: usize = 1 << 20;

/// What a finished transfer did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Bytes received over the network.
    pub fetched: u64,
    /// Bytes that were already in `*.incomplete` and kept.
    pub resumed: u64,
    /// The final size.
    pub size: u64,
}

/// Downloads `job`, then renames it to `job.dest`. The partial file is deleted if the content is wrong.
pub async fn fetch(client: &HubClient, job: &Job<'_>, progress: &Progress, bar: &ProgressBar) -> Result<Outcome, HubError> {
    if let Some(parent) = job.incomplete.parent() {
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    }
    let resumed = resume_point(job).map_err(|e| HubError::io(&job.incomplete, e))?;
    if resumed > 0 {
        tracing::info!("resuming {} from byte {resumed}", job.name);
    }
    if let (Some(size), Some(dir)) = (job.size, job.incomplete.parent()) {
        check_space(dir, size.saturating_sub(resumed), job.name)?;
    }
    bar.set_position(resumed);
    progress.add(resumed as i64);

    let mut existing = resumed;
    let mut fetched_in_ranges = 0;
    let parallel = job.size.filter(|&size| job.connections > 1 && size.saturating_sub(existing) >= ranges::MIN_SIZE);
    if let Some(size) = parallel {
        bar.set_length(size);
        let check = Check::for_etag(job.etag, job.size);
        match ranges::fetch(client, job, existing, size, job.connections, check, progress, bar).await? {
            Ranged::Complete { fetched, length, digest } => {
                return finish(job, Some(size), length, digest, Outcome { fetched, resumed, size: length });
            }
            Ranged::Unsupported { contiguous, fetched } => {
                existing = contiguous;
                fetched_in_ranges = fetched;
            }
        }
    }

    let check = Check::for_etag(job.etag, job.size);
    let path = job.incomplete.clone();
    let disk = blocking(move || Disk::open(&path, existing, check)).map_err(|e| HubError::io(&job.incomplete, e))?;
    let mut sink = Sink { disk, error: None, pending: Vec::new(), pending_len: 0 };
    let network = receive(client, job, existing, &mut sink, progress, bar).await;
    let Sink { disk, error, .. } = sink;
    if let Some(e) = error {
        return Err(HubError::io(&job.incomplete, e));
    }
    let (fetched, expected) = match network {
        Err(e @ HubError::TooLong { .. }) => {
            drop(disk);
            let _ = std::fs::remove_file(&job.incomplete);
            return Err(e);
        }
        other => other?,
    };
    let (length, digest) = blocking(|| disk.finish()).map_err(|e| HubError::io(&job.incomplete, e))?;
    let outcome = Outcome { fetched: fetched + fetched_in_ranges, resumed: resumed.min(length), size: length };
    finish(job, expected, length, digest, outcome)
}

/// How many bytes of `*.incomplete` to keep: all of it, or after a parallel download was cut
/// short, the complete prefix its sidecar records (the rest is cut off and the sidecar removed).
fn resume_point(job: &Job<'_>) -> std::io::Result<u64> {
    let length = std::fs::metadata(&job.incomplete).map(|m| m.len()).unwrap_or(0);
    let sidecar = ranges::sidecar(&job.incomplete);
    let has_sidecar = sidecar.exists();
    let mut keep = length;
    if has_sidecar {
        keep = ranges::read_sidecar(&sidecar, job.size).unwrap_or(0).min(length);
    }
    if job.size.is_some_and(|size| keep > size) {
        keep = 0;
    }
    if keep < length {
        OpenOptions::new().write(true).open(&job.incomplete)?.set_len(keep)?;
    }
    if has_sidecar {
        std::fs::remove_file(&sidecar)?;
    }
    Ok(keep)
}

/// Checks size and digest, then renames the partial file into place (or deletes it when wrong).
/// Without a digest that could be checked, the file is refused unless `--no-verify` was given.
fn finish(
    job: &Job<'_>,
    expected: Option<u64>,
    length: u64,
    digest: Option<(&'static str, String)>,
    outcome: Outcome,
) -> Result<Outcome, HubError> {
    if let Some(expected) = expected.filter(|&e| e != length) {
        let _ = std::fs::remove_file(&job.incomplete);
        return Err(HubError::SizeMismatch { path: job.name.to_string(), expected, actual: length });
    }
    let Some((algo, actual)) = digest else {
        if job.no_verify {
            tracing::warn!("{}: kept without a checked digest (--no-verify)", job.name);
            return publish(job, outcome);
        }
        let _ = std::fs::remove_file(&job.incomplete);
        let why = if job.etag.len() == 40 {
            format!("the server gave its git blob id ({}) but not its size, which that check needs", job.etag)
        } else {
            format!("the server gave no sha256 or git blob id for it (etag '{}')", job.etag)
        };
        return Err(HubError::Unverified { path: job.name.to_string(), why });
    };
    if !actual.eq_ignore_ascii_case(job.etag) {
        let _ = std::fs::remove_file(&job.incomplete);
        return Err(HubError::Integrity { path: job.name.to_string(), algo, expected: job.etag.to_string(), actual, size: length });
    }
    publish(job, outcome)
}

/// Renames the checked partial file into place.
fn publish(job: &Job<'_>, outcome: Outcome) -> Result<Outcome, HubError> {
    if let Some(parent) = job.dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    }
    std::fs::rename(&job.incomplete, &job.dest).map_err(|e| HubError::io(&job.dest, e))?;
    Ok(outcome)
}

/// Refuses to start writing `need` more bytes into `dir` when its filesystem has less free.
pub(super) fn check_space(dir: &Path, need: u64, name: &str) -> Result<(), HubError> {
    let Some(free) = crate::support::fs::free_bytes(dir) else { return Ok(()) };
    if need <= free {
        return Ok(());
    }
    let human = |n: u64| format!("{} ({n} bytes)", indicatif::HumanBytes(n));
    Err(HubError::NoSpace { dir: dir.to_path_buf(), path: name.to_string(), need: human(need), free: human(free) })
}

/// Hands received bytes to the disk in batches of about 1 MiB: few hand-offs between threads, so
/// little CPU goes to waking them.
struct Sink {
    disk: Disk,
    error: Option<std::io::Error>,
    pending: Vec<Bytes>,
    pending_len: usize,
}

impl Sink {
    /// False when the disk failed (the error is kept for the caller).
    async fn push(&mut self, data: Bytes) -> bool {
        self.pending_len += data.len();
        self.pending.push(data);
        self.pending_len < BATCH || self.flush().await
    }
    /// Writes what is gathered; every byte counted as received is on disk afterwards.
    async fn flush(&mut self) -> bool {
        if self.error.is_some() {
            return false;
        }
        if self.pending.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let disk = &mut self.disk;
        if let Err(e) = blocking(|| disk.append(batch)) {
            self.error = Some(e);
            return false;
        }
        true
    }
    async fn restart(&mut self) -> bool {
        self.pending.clear();
        self.pending_len = 0;
        let disk = &mut self.disk;
        if let Err(e) = blocking(|| disk.restart()) {
            self.error = Some(e);
            return false;
        }
        true
    }
}

/// Runs a short blocking section: through `block_in_place` on a multi-threaded runtime, inline otherwise.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The network side: GET (with `Range` when resuming), hand chunks to the disk, retry.
/// Returns bytes received and the size the server announced.
async fn receive(
    client: &HubClient,
    job: &Job<'_>,
    existing: u64,
    sink: &mut Sink,
    progress: &Progress,
    bar: &ProgressBar,
) -> Result<(u64, Option<u64>), HubError> {
    let mut offset = existing;
    let mut expected = job.size;
    let mut fetched = 0u64;
    let mut failures = 0u32;
    let mut attempts = 0u32;
    loop {
        if expected == Some(offset) {
            return Ok((fetched, expected));
        }
        attempts += 1;
        let mut headers = HeaderMap::new();
        if offset > 0 {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={offset}-")) {
                headers.insert(RANGE, v);
            }
        }
        let before = offset;
        let result = attempt(client, job, headers, &mut offset, &mut expected, &mut fetched, sink, progress, bar).await;
        if !sink.flush().await {
            return Ok((fetched, expected));
        }
        match result {
            Ok(true) => return Ok((fetched, expected)),
            Ok(false) => return Ok((fetched, expected)),
            Err(e) if e.is_transient() && attempts < MAX_ATTEMPTS => {
                failures = if offset > before { 1 } else { failures + 1 };
                if failures >= ATTEMPTS_WITHOUT_PROGRESS {
                    return Err(e);
                }
                bar.set_message("retrying");
                tracing::info!("{}: {e}; retrying from byte {offset}", job.name);
                tokio::time::sleep(if offset > before { backoff(1) / 5 } else { backoff(failures) }).await;
                bar.set_message("");
            }
            Err(e) => return Err(e),
        }
    }
}

/// One GET. `Ok(true)`: the body ended where it should. `Ok(false)`: the disk side stopped.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    client: &HubClient,
    job: &Job<'_>,
    headers: HeaderMap,
    offset: &mut u64,
    expected: &mut Option<u64>,
    fetched: &mut u64,
    sink: &mut Sink,
    progress: &Progress,
    bar: &ProgressBar,
) -> Result<bool, HubError> {
    let response = client.send(Method::GET, job.url.clone(), headers, false).await?;
    let status = response.status();
    if status == StatusCode::RANGE_NOT_SATISFIABLE && *offset > 0 {
        // Our partial file is as long as (or longer than) the file: start over, the hash decides.
        restart(offset, sink, progress, bar).await;
        return Err(HubError::Network { url: job.url.to_string(), reason: "range not satisfiable; restarting".into() });
    }
    let response = client.check(response, "", Some(job.name))?;
    let range_start = content_range(response.headers()).map(|(start, total)| {
        if expected.is_none() {
            *expected = total;
        }
        start
    });
    if status == StatusCode::PARTIAL_CONTENT && range_start != Some(*offset) {
        return Err(HubError::Protocol { url: job.url.to_string(), what: "a 206 answer for another range".into() });
    }
    if status != StatusCode::PARTIAL_CONTENT {
        if *offset > 0 {
            tracing::info!("{}: the server ignored Range; starting over", job.name);
            if !restart(offset, sink, progress, bar).await {
                return Ok(false);
            }
        }
        if expected.is_none() {
            *expected = response.content_length();
        }
    }
    if let Some(size) = *expected {
        bar.set_length(size);
    }
    let url = response.url().clone();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| super::api::network_error(&url, &e))?;
        let mut n = chunk.len() as u64;
        if n == 0 {
            continue;
        }
        // Never more than announced: the excess is not written, and the file fails.
        let room = (*expected).map_or(u64::MAX, |size| size.saturating_sub(*offset));
        let too_long = n > room;
        if too_long {
            chunk.truncate(room as usize);
            n = room;
        }
        if n > 0 && !sink.push(chunk).await {
            return Ok(false);
        }
        *offset += n;
        *fetched += n;
        bar.inc(n);
        progress.add(n as i64);
        if too_long {
            return Err(HubError::TooLong { path: job.name.to_string(), expected: (*expected).unwrap_or(*offset) });
        }
    }
    match *expected {
        Some(size) if *offset < size => Err(HubError::Network {
            url: url.to_string(),
            reason: format!("the connection closed after {offset} of {size} bytes"),
        }),
        _ => Ok(true),
    }
}

async fn restart(offset: &mut u64, sink: &mut Sink, progress: &Progress, bar: &ProgressBar) -> bool {
    progress.add(-(*offset as i64));
    bar.set_position(0);
    *offset = 0;
    sink.restart().await
}

/// The partial file, written on the receiving task, and a hashing thread that digests the same
/// batches meanwhile (one hand-off per batch, so hashing overlaps the download on another core).
struct Disk {
    file: File,
    length: u64,
    hash_tx: Option<std::sync::mpsc::SyncSender<HashMsg>>,
    hasher: Option<std::thread::JoinHandle<Option<(&'static str, String)>>>,
}

enum HashMsg {
    Data(Vec<Bytes>),
    Reset,
}

impl Disk {
    /// Opens the partial file and hashes the `existing` bytes kept from an earlier attempt.
    fn open(path: &Path, existing: u64, mut check: Check) -> std::io::Result<Disk> {
        let mut file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(path)?;
        let mut length = 0u64;
        if existing > 0 {
            let mut prefix = (&mut file).take(existing);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = prefix.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                check.update(&buf[..n]);
                length += n as u64;
            }
        }
        file.set_len(length)?;
        file.seek(SeekFrom::Start(length))?;
        let (hash_tx, rx) = std::sync::mpsc::sync_channel::<HashMsg>(8);
        let hasher = std::thread::Builder::new().name("sha256".into()).spawn(move || {
            while let Ok(msg) = rx.recv() {
                match msg {
                    HashMsg::Data(batch) => batch.iter().for_each(|b| check.update(b)),
                    HashMsg::Reset => check.reset(),
                }
            }
            check.finish()
        })?;
        Ok(Disk { file, length, hash_tx: Some(hash_tx), hasher: Some(hasher) })
    }

    fn hash(&self, msg: HashMsg) -> std::io::Result<()> {
        match &self.hash_tx {
            Some(tx) => tx.send(msg).map_err(|_| std::io::Error::other("the hashing thread stopped")),
            None => Err(std::io::Error::other("the hashing thread stopped")),
        }
    }

    fn append(&mut self, batch: Vec<Bytes>) -> std::io::Result<()> {
        write_all_vectored(&mut self.file, &batch)?;
        self.length += batch.iter().map(|b| b.len() as u64).sum::<u64>();
        self.hash(HashMsg::Data(batch))
    }

    fn restart(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.length = 0;
        self.hash(HashMsg::Reset)
    }

    /// The length and the digest (`None` when the etag is of no known kind).
    fn finish(mut self) -> std::io::Result<(u64, Option<(&'static str, String)>)> {
        drop(self.hash_tx.take());
        let digest = match self.hasher.take().map(|h| h.join()) {
            Some(Ok(digest)) => digest,
            _ => return Err(std::io::Error::other("the hashing thread failed")),
        };
        Ok((self.length, digest))
    }
}

/// Writes a batch of buffers with as few system calls as the kernel allows.
fn write_all_vectored(out: &mut File, batch: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().filter(|b| !b.is_empty()).map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = out.write_vectored(rest)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the disk accepted no bytes"));
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
