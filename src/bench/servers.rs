//! Child processes the bench starts (servers, samplers), always stopped by their pid:
//! on success, on failure, on Ctrl-C and SIGTERM (the handles stop them when dropped). On Linux
//! they also get SIGTERM from the kernel should the bench die without stopping them.

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
        let mut cmd = Command::new(exe);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        stop_with_parent(&mut cmd);
        let child = cmd
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

/// On Linux: the child gets SIGTERM when the thread that started it ends (the bench starts its
/// children from the runtime's worker threads, which live as long as the bench).
fn stop_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The bench died before the call above: do not outlive it.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the bench exited while starting its child"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

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
