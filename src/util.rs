//! The former home of the shared helpers, now in [`crate::support`]; kept as re-exports for
//! the callers not moved yet.

pub use crate::support::cli::{parse_duration, print_line, print_out, stop_signal};
pub use crate::support::fmt::human_ms;
pub use crate::support::fs::free_bytes;
