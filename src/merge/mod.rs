//! `gpubench report merge`: the shard reports of one sharded run (`load-test --shard I/N`)
//! become one run report, as if one client had sent the whole schedule.
//!
//! HdrHistograms are added, so percentiles are exact to histogram precision (never averages
//! of percentiles); counts and errors are summed; per-second series are aligned by wall
//! clock; one shard that fell behind its schedule makes the merged `kept_up` false. The
//! result is the same run-report contract, so `compare` reads it as one phase.

mod combine;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::report::{RunReport, RunReportFile, ReportError};
use crate::ExitStatus;

pub use combine::combine;

pub const AFTER_HELP: &str = "\
Examples:
  gpubench report merge reports/shards/shard-*.json --out reports/merged.json
  gpubench compare --phase k8s-4-pods='reports/shards/shard-*.json' --phase bare-metal=p1.json

The shards must be the N reports of one run (same workload, endpoint and gpubench report
version, shard indices 0..N-1 each once); anything else is refused with the file named.";

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Merge the shard reports of one sharded load test into one run report.
    #[command(after_help = AFTER_HELP)]
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shard reports (load-test --shard I/N --out ...), one per shard.
    #[arg(required = true, value_name = "SHARD.json")]
    pub files: Vec<PathBuf>,
    /// Write the merged report here.
    #[arg(long, short = 'o', value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Print the merged report JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot merge {path}: {detail}")]
    Refused { path: PathBuf, detail: String },
    #[error(transparent)]
    Report(#[from] ReportError),
}

impl crate::Failure for MergeError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            MergeError::Report(e) => e.exit_status(),
            _ => ExitStatus::Usage,
        }
    }
}

fn refused(path: &Path, detail: impl Into<String>) -> MergeError {
    MergeError::Refused { path: path.to_path_buf(), detail: detail.into() }
}

/// The files `path` names: itself, or the files its name's pattern matches
/// (`shards/shard-*.json`, a pattern in the file name only), in name order.
pub fn expand(path: &Path) -> Result<Vec<PathBuf>, MergeError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.contains(['*', '?', '[']) {
        return Ok(vec![path.to_path_buf()]);
    }
    let err = |detail: String| refused(path, detail);
    let matcher = globset::Glob::new(&name).map_err(|e| err(format!("not a file pattern ({e})")))?.compile_matcher();
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let entries = std::fs::read_dir(dir).map_err(|e| err(format!("cannot list {} ({e})", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()) && matcher.is_match(e.file_name()))
        .map(|e| e.path())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err("no file matches this pattern: check the folder and the shard reports' names".into()));
    }
    Ok(files)
}

/// Reads shard reports and merges them (see [`combine`] for the arithmetic, [`check`] for what is refused).
pub fn merge_files(files: &[PathBuf]) -> Result<RunReport, MergeError> {
    if files.is_empty() {
        return Err(MergeError::Usage("nothing to merge: give the shard reports, e.g. reports/shards/shard-*.json".into()));
    }
    let mut paths = Vec::new();
    for f in files {
        paths.extend(expand(f)?);
    }
    let mut inputs = Vec::with_capacity(paths.len());
    for path in &paths {
        let file = RunReportFile::load(path)?;
        let run = match file.runs() {
            [one] => one.clone(),
            runs => {
                return Err(refused(path, format!("it holds {} runs (a sweep): a sharded run has one point per file", runs.len())))
            }
        };
        inputs.push((path.clone(), run));
    }
    check(&inputs)?;
    Ok(combine(&inputs))
}

/// Refuses inputs that are not the shards of one run: mixed report versions, another
/// workload or endpoint, reports without shard information, and missing or repeated shards.
pub fn check(inputs: &[(PathBuf, RunReport)]) -> Result<(), MergeError> {
    let Some((first_path, first)) = inputs.first() else {
        return Err(MergeError::Usage("nothing to merge".into()));
    };
    let name = |p: &Path| p.display().to_string();
    let workload = serde_json::to_value(&first.workload).unwrap_or_default();
    let mut seen: Vec<Option<&Path>> = Vec::new();
    for (path, run) in inputs {
        if run.schema_version != first.schema_version {
            return Err(refused(path, format!(
                "its schema_version is {} while {} has {}: run every shard with the same gpubench",
                run.schema_version, name(first_path), first.schema_version
            )));
        }
        let t = (&run.target.urls, &run.target.api, &run.target.model);
        if t != (&first.target.urls, &first.target.api, &first.target.model) {
            return Err(refused(path, format!(
                "it loaded another endpoint ({} {}, model {}) than {} ({} {}, model {})",
                run.target.urls.join(" "), run.target.api, run.target.model.as_deref().unwrap_or("-"),
                name(first_path), first.target.urls.join(" "), first.target.api, first.target.model.as_deref().unwrap_or("-")
            )));
        }
        let own = serde_json::to_value(&run.workload).unwrap_or_default();
        if own != workload {
            let keys = differing_keys(&own, &workload);
            return Err(refused(path, format!(
                "its workload differs from {}'s in {}: shards of one run share every load-test flag but --shard",
                name(first_path), keys.join(", ")
            )));
        }
        let Some(shard) = &run.shard else {
            return Err(refused(path, "it is not a shard report (no `shard` field): run each part with load-test --shard I/N"));
        };
        let count = first.shard.as_ref().map_or(shard.count, |s| s.count);
        if shard.count != count {
            return Err(refused(path, format!("it is shard {}/{} while {} is of {count} shards", shard.index, shard.count, name(first_path))));
        }
        if seen.len() < count as usize {
            seen.resize(count as usize, None);
        }
        if let Some(Some(other)) = seen.get(shard.index as usize) {
            return Err(refused(path, format!("it is shard {}/{count}, and so is {}", shard.index, name(other))));
        }
        seen[shard.index as usize] = Some(path);
    }
    let missing: Vec<String> = seen.iter().enumerate().filter(|(_, p)| p.is_none()).map(|(i, _)| i.to_string()).collect();
    if !missing.is_empty() {
        return Err(MergeError::Usage(format!(
            "shards {} of {} are missing: give every shard's report (a shard that failed must be re-run)",
            missing.join(", "),
            seen.len()
        )));
    }
    Ok(())
}

/// The top-level keys where two JSON objects differ.
fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (a.as_object().unwrap_or(&empty), b.as_object().unwrap_or(&empty));
    let mut keys: Vec<String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `gpubench report ...`.
pub fn run_cli(args: ReportArgs, _quiet: bool) -> Result<ExitStatus, MergeError> {
    match args.command {
        ReportCommand::Merge(m) => merge_cli(m),
    }
}

fn merge_cli(args: MergeArgs) -> Result<ExitStatus, MergeError> {
    if args.out.is_none() && !args.json {
        return Err(MergeError::Usage("where should the merged report go? give --out merged.json (or --json for stdout)".into()));
    }
    let merged = merge_files(&args.files)?;
    let file = RunReportFile::Single(Box::new(merged));
    if let Some(out) = &args.out {
        file.save(out)?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&file).map_err(|e| MergeError::Usage(e.to_string()))?;
        crate::support::cli::print_line(&text);
    } else if let Some(run) = file.runs().first() {
        let mut text = crate::loadtest::render(run);
        if let Some(out) = &args.out {
            text.push_str(&format!("merged {} shards: {}\n", args.files.len(), out.display()));
        }
        crate::support::cli::print_out(&text);
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::combine::tests::shard_report;
    use super::*;

    fn pair() -> Vec<(PathBuf, RunReport)> {
        vec![("s0.json".into(), shard_report(&[1000], 0, 2)), ("s1.json".into(), shard_report(&[2000], 1, 2))]
    }

    fn refusal(inputs: &[(PathBuf, RunReport)]) -> String {
        check(inputs).unwrap_err().to_string()
    }

    #[test]
    fn the_shards_of_one_run_pass() {
        check(&pair()).unwrap();
    }

    #[test]
    fn mixed_versions_workloads_and_endpoints_are_refused_naming_the_file() {
        let mut v = pair();
        v[1].1.schema_version = 1;
        let e = refusal(&v);
        assert!(e.contains("s1.json") && e.contains("schema_version is 1"), "{e}");

        let mut w = pair();
        w[1].1.workload.max_tokens = 32;
        let e = refusal(&w);
        assert!(e.contains("s1.json") && e.contains("workload differs") && e.contains("max_tokens"), "{e}");

        let mut t = pair();
        t[1].1.target.urls = vec!["http://10.0.0.9:8000/v1/completions".into()];
        let e = refusal(&t);
        assert!(e.contains("s1.json") && e.contains("another endpoint"), "{e}");
    }

    #[test]
    fn missing_repeated_and_unsharded_reports_are_refused() {
        let mut dup = pair();
        dup[1].1.shard.as_mut().unwrap().index = 0;
        let e = refusal(&dup);
        assert!(e.contains("s1.json") && e.contains("and so is s0.json"), "{e}");

        let e = refusal(&pair()[..1]);
        assert!(e.contains("shards 1 of 2 are missing"), "{e}");

        let mut plain = pair();
        plain[0].1.shard = None;
        let e = refusal(&plain);
        assert!(e.contains("s0.json") && e.contains("not a shard report"), "{e}");

        let mut other = pair();
        other[1].1.shard.as_mut().unwrap().count = 3;
        assert!(refusal(&other).contains("is of 2 shards"));
    }
}
