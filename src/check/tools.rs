//! Running the external tools the checks ask (nvidia-smi, docker, nvidia-ctk, kubectl),
//! each bounded in time so that an unreachable cluster cannot hang `gpu-check`.

use std::time::Duration;

/// How long one tool may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// The first non-empty line of stderr (else stdout), for one-line details.
    pub fn first_error_line(&self) -> String {
        self.stderr
            .lines()
            .chain(self.stdout.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no output")
            .to_string()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolError {
    /// Not on PATH.
    NotFound,
    /// Could not be started for another reason.
    Spawn(String),
    TimedOut,
}

/// Runs `program args...` and collects its output.
pub async fn run(program: &str, args: &[&str]) -> Result<ToolOutput, ToolError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let child = cmd.output();
    match tokio::time::timeout(TOOL_TIMEOUT, child).await {
        Err(_) => Err(ToolError::TimedOut),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(ToolError::NotFound),
        Ok(Err(e)) => Err(ToolError::Spawn(e.to_string())),
        Ok(Ok(out)) => Ok(ToolOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_tool_is_not_found() {
        assert_eq!(run("gpubench-no-such-tool", &[]).await.unwrap_err(), ToolError::NotFound);
    }

    #[tokio::test]
    async fn output_and_status_are_collected() {
        let out = run("sh", &["-c", "echo out; echo err >&2; exit 3"]).await.unwrap();
        assert!(!out.success);
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.first_error_line(), "err");
    }
}
