//! Parallel ranges for large files: several connections fetch pieces of one file with
//! `Range: bytes=a-b` and write each at its offset in the `*.incomplete` file. Pieces are handed
//! out in order, so the complete prefix grows steadily; a hashing thread reads that prefix back
//! (from the page cache) while the rest arrives. A small sidecar, `*.incomplete.ranges`, records
//! the prefix known complete, so an interrupted download resumes from there and never trusts
//! bytes written out of order. A server that ignores `Range` makes the caller fall back to one stream.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use futures_util::StreamExt;
use indicatif::ProgressBar;
use reqwest::header::{HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, StatusCode};

use super::api::{backoff, network_error, HubClient};
use super::error::HubError;
use super::progress::Progress;
use super::job::{content_range, Check, Job, ATTEMPTS_WITHOUT_PROGRESS, MAX_ATTEMPTS};

/// Files with at least this many bytes left to fetch use parallel ranges (when asked for).
pub const MIN_SIZE: u64 = 16 << 20;
const MIN_PIECE: u64 = 1 << 20;
const MAX_PIECE: u64 = 32 << 20;
/// The first line of the sidecar.
const SIDECAR_MAGIC: &str = "gpubench ranges v1";

/// How a parallel download ended, short of an error.
pub enum Ranged {
    /// Every byte is in the file; the digest of all of it (`None` for etags of no known kind).
    Complete { fetched: u64, length: u64, digest: Option<(&'static str, String)> },
    /// The server answered a range request with the whole file: go on with one stream from
    /// `contiguous` (the file has been cut back to it).
    Unsupported { contiguous: u64, fetched: u64 },
}

/// The size of the pieces handed to connections: about four per connection, 1 to 32 MiB.
pub fn piece_size(remaining: u64, connections: usize) -> u64 {
    let per = remaining / (connections.max(1) as u64 * 4);
    (per.div_ceil(MIN_PIECE) * MIN_PIECE).clamp(MIN_PIECE, MAX_PIECE)
}

/// `path` + `.ranges`.
pub fn sidecar(incomplete: &Path) -> PathBuf {
    let mut name = incomplete.as_os_str().to_owned();
    name.push(".ranges");
    PathBuf::from(name)
}

/// The complete prefix recorded in a sidecar for a file of `size` bytes (`None`: unreadable or another file).
pub fn read_sidecar(path: &Path, size: Option<u64>) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != SIDECAR_MAGIC {
        return None;
    }
    let mut recorded_size = None;
    let mut prefix = None;
    for line in lines {
        match line.split_once(' ') {
            Some(("size", v)) => recorded_size = v.trim().parse::<u64>().ok(),
            Some(("complete", v)) => prefix = v.trim().parse::<u64>().ok(),
            _ => {}
        }
    }
    match (recorded_size, size) {
        (Some(a), Some(b)) if a != b => None,
        _ => prefix,
    }
}

fn write_sidecar(path: &Path, size: u64, complete: u64) -> std::io::Result<()> {
    std::fs::write(path, format!("{SIDECAR_MAGIC}\nsize {size}\ncomplete {complete}\n"))
}

/// Why the workers stopped early.
enum Stop {
    Unsupported,
    Failed(HubError),
}

/// What the connections share (all on one task: cells, no locks).
struct Shared<'a> {
    client: &'a HubClient,
    job: &'a Job<'a>,
    file: File,
    size: u64,
    pieces: Vec<(u64, u64)>,
    next: Cell<usize>,
    done: RefCell<Vec<bool>>,
    /// Pieces before this index are all complete.
    first_missing: Cell<usize>,
    fetched: Cell<u64>,
    attempts: Cell<u32>,
    hasher: ReadBack,
    sidecar: PathBuf,
    progress: &'a Progress,
    bar: &'a ProgressBar,
}

impl Shared<'_> {
    fn prefix(&self) -> u64 {
        self.pieces.get(self.first_missing.get()).map_or(self.size, |p| p.0)
    }

    fn take_piece(&self) -> Option<usize> {
        let i = self.next.get();
        (i < self.pieces.len()).then(|| {
            self.next.set(i + 1);
            i
        })
    }

    /// Marks a piece complete; when the complete prefix grows, tells the hasher and the sidecar.
    fn piece_done(&self, index: usize) -> Result<(), Stop> {
        let mut done = self.done.borrow_mut();
        done[index] = true;
        let mut first = self.first_missing.get();
        while first < done.len() && done[first] {
            first += 1;
        }
        drop(done);
        if first != self.first_missing.get() {
            self.first_missing.set(first);
            let prefix = self.prefix();
            self.hasher.advance(prefix);
            write_sidecar(&self.sidecar, self.size, prefix).map_err(|e| Stop::Failed(HubError::io(&self.sidecar, e)))?;
        }
        Ok(())
    }
}

/// Downloads `job.url` bytes `existing..size` over `connections` connections into `job.incomplete`,
/// which holds `existing` good bytes. `check` is the digest state for the whole file (fresh).
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    client: &HubClient,
    job: &Job<'_>,
    existing: u64,
    size: u64,
    connections: usize,
    check: Check,
    progress: &Progress,
    bar: &ProgressBar,
) -> Result<Ranged, HubError> {
    let io = |e| HubError::io(&job.incomplete, e);
    let file = OpenOptions::new().create(true).write(true).truncate(false).open(&job.incomplete).map_err(io)?;
    file.set_len(existing).map_err(io)?;
    let sidecar_path = sidecar(&job.incomplete);
    write_sidecar(&sidecar_path, size, existing).map_err(|e| HubError::io(&sidecar_path, e))?;
    let hasher = ReadBack::start(&job.incomplete, check).map_err(io)?;
    hasher.advance(existing);

    let piece = piece_size(size - existing, connections);
    let mut pieces = Vec::new();
    let mut start = existing;
    while start < size {
        let end = (start + piece).min(size);
        pieces.push((start, end));
        start = end;
    }
    let shared = Shared {
        client,
        job,
        file,
        size,
        done: RefCell::new(vec![false; pieces.len()]),
        pieces,
        next: Cell::new(0),
        first_missing: Cell::new(0),
        fetched: Cell::new(0),
        attempts: Cell::new(0),
        hasher,
        sidecar: sidecar_path,
        progress,
        bar,
    };
    tracing::info!("{}: {} pieces of up to {piece} bytes over {connections} connections", job.name, shared.pieces.len());
    let workers = (0..connections.min(shared.pieces.len()).max(1)).map(|_| worker(&shared));
    let outcome = futures_util::future::try_join_all(workers).await;

    let reached = shared.prefix();
    let Shared { file, hasher, sidecar, fetched, .. } = shared;
    let fetched = fetched.get();
    let prefix = match outcome {
        Ok(_) => {
            drop(file);
            let digest = hasher.finish().map_err(io)?;
            let _ = std::fs::remove_file(&sidecar);
            return Ok(Ranged::Complete { fetched, length: size, digest });
        }
        Err(_) => {
            hasher.abandon();
            // Keep only the complete prefix: the file is then what a single stream would have left.
            file.set_len(reached).map_err(io)?;
            let _ = std::fs::remove_file(&sidecar);
            reached
        }
    };
    match outcome {
        Err(Stop::Unsupported) => {
            tracing::info!("{}: the server ignores Range; going on with one stream from byte {prefix}", job.name);
            progress.add(prefix as i64 - (existing + fetched) as i64);
            bar.set_position(prefix);
            Ok(Ranged::Unsupported { contiguous: prefix, fetched })
        }
        Err(Stop::Failed(e)) => Err(e),
        Ok(_) => unreachable!("handled above"),
    }
}

/// One connection: takes the next piece, fetches it (retrying from where it broke off), repeats.
async fn worker(s: &Shared<'_>) -> Result<(), Stop> {
    while let Some(index) = s.take_piece() {
        let (start, end) = s.pieces[index];
        let mut at = start;
        let mut failures = 0u32;
        loop {
            s.attempts.set(s.attempts.get() + 1);
            let before = at;
            match fetch_range(s, &mut at, end).await {
                Ok(()) => break,
                Err(Stop::Failed(e)) if e.is_transient() && s.attempts.get() < MAX_ATTEMPTS => {
                    failures = if at > before { 1 } else { failures + 1 };
                    if failures >= ATTEMPTS_WITHOUT_PROGRESS {
                        return Err(Stop::Failed(e));
                    }
                    tracing::info!("{}: {e}; retrying bytes {at}-{}", s.job.name, end - 1);
                    tokio::time::sleep(if at > before { backoff(1) / 5 } else { backoff(failures) }).await;
                }
                Err(e) => return Err(e),
            }
        }
        s.piece_done(index)?;
    }
    Ok(())
}

/// One GET of bytes `*at..end`, written at their offsets; `*at` follows what was written.
async fn fetch_range(s: &Shared<'_>, at: &mut u64, end: u64) -> Result<(), Stop> {
    let url = &s.job.url;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes={}-{}", *at, end - 1)) {
        headers.insert(RANGE, v);
    }
    let response = s.client.send(Method::GET, url.clone(), headers, false).await.map_err(Stop::Failed)?;
    let response = s.client.check(response, "", Some(s.job.name)).map_err(Stop::Failed)?;
    if response.status() != StatusCode::PARTIAL_CONTENT {
        return Err(Stop::Unsupported);
    }
    match content_range(response.headers()) {
        Some((start, total)) if start == *at && total.is_none_or(|t| t == s.size) => {}
        _ => {
            return Err(Stop::Failed(HubError::Protocol {
                url: url.to_string(),
                what: format!("a 206 answer for another range than bytes {}-{}", *at, end - 1),
            }))
        }
    }
    let final_url = response.url().clone();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Stop::Failed(network_error(&final_url, &e)))?;
        // A server may answer `bytes=a-b` with everything from `a` on: keep what the piece needs
        // and drop the rest (and with it this connection).
        let n = (chunk.len() as u64).min(end - *at);
        write_at(&s.file, &chunk[..n as usize], *at).map_err(|e| Stop::Failed(HubError::io(&s.job.incomplete, e)))?;
        *at += n;
        s.fetched.set(s.fetched.get() + n);
        s.bar.inc(n);
        s.progress.add(n as i64);
        if *at == end {
            break;
        }
    }
    if *at < end {
        return Err(Stop::Failed(HubError::Network {
            url: final_url.to_string(),
            reason: format!("the connection closed after byte {} of the range {}-{}", *at, end - 1, end - 1),
        }));
    }
    Ok(())
}

#[cfg(unix)]
fn write_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn write_at(file: &File, mut data: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, data, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(file, buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// What the hashing thread ends with: the digest (`None` for etags of no known kind), or a read error.
type Digested = std::io::Result<Option<(&'static str, String)>>;

/// A thread that hashes the file's complete prefix as it grows, reading it back from the file.
struct ReadBack {
    tx: Option<mpsc::Sender<u64>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Digested>>,
}

impl ReadBack {
    fn start(path: &Path, mut check: Check) -> std::io::Result<ReadBack> {
        let file = File::open(path)?;
        let (tx, rx) = mpsc::channel::<u64>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::Builder::new().name("sha256".into()).spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut hashed = 0u64;
            while let Ok(mut mark) = rx.recv() {
                while let Ok(later) = rx.try_recv() {
                    mark = mark.max(later);
                }
                while hashed < mark {
                    if stopped.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    let n = (mark - hashed).min(buf.len() as u64) as usize;
                    read_at(&file, &mut buf[..n], hashed)?;
                    check.update(&buf[..n]);
                    hashed += n as u64;
                }
            }
            Ok(check.finish())
        })?;
        Ok(ReadBack { tx: Some(tx), stop, handle: Some(handle) })
    }

    /// The first `prefix` bytes of the file are final.
    fn advance(&self, prefix: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(prefix);
        }
    }

    /// Waits for the digest of everything announced.
    fn finish(mut self) -> std::io::Result<Option<(&'static str, String)>> {
        drop(self.tx.take());
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(result)) => result,
            _ => Err(std::io::Error::other("the hashing thread failed")),
        }
    }

    fn abandon(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_about_four_per_connection_within_bounds() {
        assert_eq!(piece_size(1 << 30, 4), 32 << 20);
        assert_eq!(piece_size(64 << 20, 4), 4 << 20);
        assert_eq!(piece_size(20 << 20, 4), 2 << 20);
        assert_eq!(piece_size(100, 8), 1 << 20);
    }

    #[test]
    fn the_sidecar_round_trips_and_rejects_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = sidecar(&dir.path().join("blob.incomplete"));
        assert!(path.to_string_lossy().ends_with("blob.incomplete.ranges"));
        write_sidecar(&path, 1000, 256).unwrap();
        assert_eq!(read_sidecar(&path, Some(1000)), Some(256));
        assert_eq!(read_sidecar(&path, None), Some(256));
        assert_eq!(read_sidecar(&path, Some(999)), None);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read_sidecar(&path, Some(1000)), None);
    }
}
