//! Plumbing every command shares: files written atomically and hashed, number formatting,
//! pipe-safe stdout, duration parsing, stop signals, child processes and the HTTP client.

pub mod cli;
pub mod fmt;
pub mod fs;
pub mod http;
pub mod process;
