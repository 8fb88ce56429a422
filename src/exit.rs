//! Exit codes shared by every command, as documented in `gpubench --help`.

/// What a finished command tells the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything worked.
    Success = 0,
    /// The command failed (server unreachable, file unreadable, every request failed...).
    Failure = 1,
    /// The command line or an input file was malformed.
    Usage = 2,
    /// The command ran, but a check or gate it was asked to enforce failed.
    CheckFailed = 3,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Errors of a command know which exit status they mean.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Failure
    }
}

/// Text shown under `gpubench --help`.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 ok, 1 failure, 2 usage error (bad flag or input file), 3 a check or gate failed.";
