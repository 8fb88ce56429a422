//! `gpubench download`: fetch a repository (or some of its files) from the Hugging Face Hub into the
//! cache that every Hugging Face tool shares, or into a plain folder, with resume, retries and checks.

pub mod api;
mod error;
pub mod layout;
mod lock;
pub mod names;
mod plan;
mod progress;
mod job;
mod ranges;
pub mod settings;
pub mod transfer;

use std::path::PathBuf;

pub use error::HubError;
pub use plan::{download, FileReport, Summary};

use crate::support::cli::print_line;
use names::RepoType;

pub const AFTER_HELP: &str = "\
Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (else the file $HF_HOME/token),
HF_HOME (default ~/.cache/huggingface), HF_HUB_CACHE (default $HF_HOME/hub), HF_HUB_OFFLINE=1.

The last line on stdout is the snapshot folder (or, for one FILE, its path), as `hf download` prints it.
Interrupted downloads resume from *.incomplete files; every file is checked against its sha256 (LFS)
or git blob id before it appears (a file the server gives no such digest for is refused, unless
--no-verify). Commit ids and etags from the server are checked before they name a file; a lock per
file keeps two downloads into the same cache or folder from writing it at once.

Examples:
  gpubench download HuggingFaceTB/SmolLM2-135M-Instruct --local-dir ./model
  gpubench download gpt2 config.json tokenizer.json
  gpubench download org/model --include '*.safetensors' --include '*.json' --exclude 'onnx/*'";

/// Arguments of `gpubench download`.
#[derive(clap::Args)]
pub struct DownloadArgs {
    /// Repository id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct.
    pub repo_id: String,
    /// Files to fetch (paths in the repository). Default: every file, filtered by --include/--exclude.
    pub files: Vec<String>,
    /// Branch, tag or commit to fetch.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Only files whose path matches this glob (repeatable; '*' also matches '/').
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip files whose path matches this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Write real files into this folder (with .cache/huggingface/download/*.metadata) instead of the cache.
    #[arg(long, value_name = "DIR", conflicts_with = "cache_dir")]
    pub local_dir: Option<PathBuf>,
    /// The hub cache folder [default: $HF_HUB_CACHE, else $HF_HOME/hub].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Access token [default: $HF_TOKEN, else the file $HF_HOME/token]. Never printed.
    #[arg(long, value_name = "TOKEN", hide_default_value = true)]
    pub token: Option<String>,
    /// Hub URL [default: $HF_ENDPOINT, else https://huggingface.co].
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Files downloaded at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_workers: u16,
    /// Connections per large file: files with 16 MiB or more to fetch come in pieces over this many
    /// connections at once (HTTP Range), written in place; 1: one stream per file.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub connections: u16,
    /// Kind of repository.
    #[arg(long, value_enum, default_value = "model")]
    pub repo_type: RepoType,
    /// Use only what is already on disk; no network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Show what would be downloaded, and how much, without downloading.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a JSON summary on stdout instead of the path.
    #[arg(long)]
    pub json: bool,
    /// Keep files for which the server gives no digest that can be checked (no sha256, or a git
    /// blob id without the size), unverified. Only for a server you trust: such a file may be
    /// anything. A digest that does not match still fails.
    #[arg(long)]
    pub no_verify: bool,
}

/// Runs the command: downloads, then prints the path (or the JSON summary) on stdout.
pub async fn run_cli(args: DownloadArgs, quiet: bool) -> Result<crate::ExitStatus, HubError> {
    let summary = download(&args, quiet, &settings::ProcessEnv).await?;
    if args.json {
        let text = serde_json::to_string_pretty(&summary).map_err(|e| HubError::Usage(format!("cannot encode the summary: {e}")))?;
        print_line(&text);
    } else {
        if args.dry_run {
            for f in &summary.files {
                let size = f.size.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
                print_line(&format!("{}\t{}\t{}", f.status, size, f.path));
            }
        } else if !quiet {
            eprintln!("{}", summary.headline());
        }
        print_line(&summary.path.display().to_string());
    }
    Ok(crate::ExitStatus::Success)
}
