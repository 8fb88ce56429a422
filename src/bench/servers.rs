//! Waiting for the child processes the bench starts (servers, samplers) to listen and be ready.

use std::time::{Duration, Instant};

use super::BenchError;
pub use crate::support::process::ChildProcess;

/// The address a `gpubench serve` started on `--port 0` prints on stderr (`listening on
/// http://ADDR`), read from its log; an error when it exits first or `timeout` passes.
pub async fn wait_listening(process: &mut ChildProcess, timeout: Duration) -> Result<String, BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(&process.log).unwrap_or_default();
        if let Some(base) = text.lines().find_map(|l| l.split("listening on ").nth(1)).and_then(|r| r.split_whitespace().next()) {
            if base.starts_with("http://") {
                return Ok(base.to_string());
            }
        }
        if let Some(status) = process.exited() {
            return Err(BenchError::Failed(format!(
                "{} exited ({status}) before it listened; its last lines ({}):\n{}",
                process.name,
                process.log.display(),
                process.log_tail()
            )));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "{} did not say where it listens after {timeout:?}; its last lines ({}):\n{}",
                process.name,
                process.log.display(),
                process.log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `GET url` answers 200, the process dies, or `timeout` passes.
pub async fn wait_ready(process: &mut ChildProcess, url: &str, timeout: Duration) -> Result<(), BenchError> {
    let client = crate::support::http::client(Duration::from_secs(2)).map_err(|e| BenchError::Failed(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.exited() {
            return Err(BenchError::Failed(format!(
                "{} exited ({status}) before it was ready; its last lines ({}):\n{}",
                process.name,
                process.log.display(),
                process.log_tail()
            )));
        }
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "{} was not ready at {url} after {timeout:?}; its last lines ({}):\n{}",
                process.name,
                process.log.display(),
                process.log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
