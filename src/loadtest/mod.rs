//! `gpubench load-test` (being written).
mod options;
pub use options::*;

pub const AFTER_HELP: &str = "";

#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    #[error("load-test is not built yet")]
    NotYet,
}
impl crate::Failure for LoadTestError {}

pub async fn run_cli(_args: LoadTestArgs, _quiet: bool) -> Result<crate::ExitStatus, LoadTestError> {
    Err(LoadTestError::NotYet)
}
