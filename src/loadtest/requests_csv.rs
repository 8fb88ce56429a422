//! `--csv`: one row per request, written as requests finish (memory stays flat).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::client::Exchange;
use super::LoadTestError;

pub struct RequestLog {
    writer: Mutex<csv::Writer<BufWriter<File>>>,
    failed: AtomicBool,
}

const HEADER: [&str; 17] = [
    "index", "warmup", "intended_s", "sent_s", "done_s", "status", "error_kind", "http_status", "e2e_ms",
    "service_ms", "ttft_ms", "tpot_ms", "prompt_tokens", "output_tokens", "cached_tokens", "session", "turn",
];

impl RequestLog {
    pub fn create(path: &Path) -> Result<Self, LoadTestError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| LoadTestError::Failed(format!("cannot create folder {}: {e}", parent.display())))?;
        }
        let file = File::create(path).map_err(|e| LoadTestError::Failed(format!("cannot write {}: {e}", path.display())))?;
        let mut writer = csv::Writer::from_writer(BufWriter::new(file));
        writer
            .write_record(HEADER)
            .map_err(|e| LoadTestError::Failed(format!("cannot write {}: {e}", path.display())))?;
        Ok(RequestLog { writer: Mutex::new(writer), failed: AtomicBool::new(false) })
    }

    /// Writes one row (`turn`: the session and turn of a multi-turn request); a write error is
    /// reported once and further rows are dropped.
    pub fn write(&self, index: u64, t0: Instant, intended: Instant, warmup: bool, ex: Option<&Exchange>, turn: Option<(u64, u32)>) {
        let secs = |t: Instant| format!("{:.6}", t.saturating_duration_since(t0).as_secs_f64());
        let ms = |d: std::time::Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
        let mut row: Vec<String> = vec![index.to_string(), warmup.to_string(), secs(intended)];
        match ex {
            None => row.extend(["".into(), "".into(), "unfinished".into()]),
            Some(ex) => {
                row.extend([secs(ex.sent), secs(ex.done)]);
                match &ex.result {
                    Ok(_) => row.push("ok".into()),
                    Err(_) => row.push("error".into()),
                }
            }
        }
        let (kind, code, e2e, service, ttft, tpot, prompt, out) = match ex.map(|e| (e, &e.result)) {
            Some((ex, Ok(a))) => {
                let e2e = ex.done.saturating_duration_since(intended);
                let ttft = a.first_token.map(|t| t.saturating_duration_since(intended));
                let tpot = a.tpot(e2e, ttft).map(ms);
                (
                    String::new(),
                    String::new(),
                    ms(e2e),
                    ms(ex.done.saturating_duration_since(ex.sent)),
                    ttft.map(ms).unwrap_or_default(),
                    tpot.unwrap_or_default(),
                    a.usage.prompt_tokens.map(|n| n.to_string()).unwrap_or_default(),
                    a.output_tokens().map(|n| n.to_string()).unwrap_or_default(),
                )
            }
            Some((_, Err(e))) => {
                let code = match e.kind {
                    super::client::ErrorKind::HttpStatus(c) => c.to_string(),
                    _ => String::new(),
                };
                (e.kind.name().to_string(), code, String::new(), String::new(), String::new(), String::new(), String::new(), String::new())
            }
            None => Default::default(),
        };
        row.extend([kind, code, e2e, service, ttft, tpot, prompt, out]);
        let cached = match ex.map(|e| &e.result) {
            Some(Ok(a)) => a.usage.cached_tokens.map(|n| n.to_string()).unwrap_or_default(),
            _ => String::new(),
        };
        row.push(cached);
        match turn {
            Some((session, turn)) => row.extend([session.to_string(), turn.to_string()]),
            None => row.extend([String::new(), String::new()]),
        }
        let mut w = self.writer.lock();
        if let Err(e) = w.write_record(&row) {
            if !self.failed.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot write the per-request CSV: {e}");
            }
        }
    }

    pub fn finish(&self) -> Result<(), LoadTestError> {
        self.writer
            .lock()
            .flush()
            .map_err(|e| LoadTestError::Failed(format!("cannot finish the per-request CSV: {e}")))
    }
}
