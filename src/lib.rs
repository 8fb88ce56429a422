//! gpubench: how much LLM inference do your GPUs give, and what does sharing them buy?
//!
//! One module per command, meeting only in [`report`], the data contracts every
//! command reads or writes. The binary in `src/bin/gpubench.rs` parses the command
//! line and dispatches here.

pub mod bench;
pub mod compare;
pub mod check;
pub mod device;
pub mod exit;
pub mod hub;
pub mod loadtest;
pub mod merge;
pub mod metrics;
pub mod default_model;
pub mod report;
pub mod selftest;
pub mod support;
pub mod serve;

pub use exit::{ExitStatus, Failure};
