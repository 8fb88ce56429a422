//! Child processes the bench starts (servers, samplers), always stopped by their pid:
//! on success, on failure and on Ctrl-C (the handles stop them when dropped).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;

/// A child process of ours, with its output in a log file.
pub struct ChildProcess {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ChildProcess {
    /// Starts `exe args...`, output appended to `log`.
    pub fn start(name: &str, exe: &Path, args: &[String], log: &Path) -> Result<Self, BenchError> {
        let out = File::create(log).map_err(|e| BenchError::Failed(format!("cannot write {}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| BenchError::Failed(format!("cannot write {}: {e}", log.display())))?;
        tracing::info!("starting {name}: {} {}", exe.display(), args.join(" "));
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| BenchError::Failed(format!("cannot start {name} ({}): {e}", exe.display())))?;
        Ok(ChildProcess { name: name.into(), log: log.into(), child: Some(child) })
    }

    /// The last lines the process wrote, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(6).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Whether the process has exited (and with what).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!("{} (pid {pid}) did not stop within {grace:?}; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a race with another program is reported by serve itself).
pub fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::Failed(format!("cannot find a free port on 127.0.0.1: {e}")))
}

/// Waits until `GET url` answers 200, the process dies, or `timeout` passes.
pub async fn wait_ready(process: &mut ChildProcess, url: &str, timeout: Duration) -> Result<(), BenchError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| BenchError::Failed(e.to_string()))?;
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
