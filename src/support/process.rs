//! Child processes (servers, samplers), always stopped by their pid: on success, on failure, on
//! Ctrl-C and SIGTERM (the handles stop them when dropped). On Linux they also get SIGTERM from
//! the kernel should the parent die without stopping them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors starting a child process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot write {path}: {source}. Check that the folder exists and is writable")]
    Log { path: PathBuf, source: std::io::Error },
    #[error("cannot start {name} ({exe}): {source}")]
    Start { name: String, exe: PathBuf, source: std::io::Error },
}

/// A child process of ours, with its output in a log file.
pub struct ChildProcess {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ChildProcess {
    /// Starts `exe args...`, output written to `log`.
    pub fn start(name: &str, exe: &Path, args: &[String], log: &Path) -> Result<Self, ProcessError> {
        let log_error = |source| ProcessError::Log { path: log.into(), source };
        let out = File::create(log).map_err(log_error)?;
        let err = out.try_clone().map_err(log_error)?;
        tracing::info!("starting {name}: {} {}", exe.display(), args.join(" "));
        let mut cmd = Command::new(exe);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        stop_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| ProcessError::Start { name: name.into(), exe: exe.into(), source })?;
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
        if !stop_child(&mut child, grace) {
            tracing::warn!("{} (pid {}) did not stop within {grace:?}; it was killed", self.name, child.id());
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Stops `child` by its pid: SIGTERM, then SIGKILL after `grace`, and reaps it. False when it
/// had to be killed.
pub fn stop_child(child: &mut Child, grace: Duration) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    #[cfg(unix)]
    {
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    #[cfg(not(unix))]
    let _ = (grace, Instant::now());
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// A loopback TCP port free right now (bound to port 0, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
                // The parent died before the call above: do not outlive it.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the parent exited while starting its child"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_stopped_by_term_and_its_output_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        let args = ["-c".to_string(), "echo started; exec sleep 30".to_string()];
        let mut p = ChildProcess::start("sleeper", Path::new("/bin/sh"), &args, &log).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.log_tail().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(p.log_tail(), "started");
        assert!(p.exited().is_none());
        let started = Instant::now();
        p.stop(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(5), "stopped by SIGTERM, not the kill after the grace");
    }

    #[test]
    fn a_missing_program_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let err = ChildProcess::start("ghost", Path::new("/nonexistent/ghost"), &[], &dir.path().join("g.log")).err().unwrap();
        assert!(err.to_string().contains("cannot start ghost"), "{err}");
        assert!(free_port().unwrap() > 0);
    }
}
