//! The one place that lists what the deployment files already use but this build of gpubench
//! may not have yet. While an entry is missing from the binary or from Cargo.toml, the checks
//! print a note and skip only that entry; when it exists, it is checked like everything else
//! (and the note says the entry can go). Empty both lists once every command is built: from
//! then on a missing command or feature fails the tests.

/// Subcommands used in deploy/ (README included), the Dockerfile and the Compose file.
pub const SUBCOMMANDS_NOT_YET_BUILT: &[&str] = &[];

/// Cargo features the Dockerfile builds with.
pub const CARGO_FEATURES_NOT_YET_DEFINED: &[&str] = &[];
