//! The `gpubench` command line: parse, start logging, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use gpubench::exit::EXIT_CODES_HELP;
use gpubench::{ExitStatus, Failure};

#[derive(Parser)]
#[command(name = "gpubench", version, about, after_help = EXIT_CODES_HELP, propagate_version = true)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr; no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive concurrent load at an LLM endpoint and measure it (closed or open loop).
    #[command(after_help = gpubench::loadtest::AFTER_HELP)]
    LoadTest(gpubench::loadtest::LoadTestArgs),
    /// The main job: run the phases (bare metal, sharing, batched, remote targets) and write the comparison report.
    #[command(after_help = gpubench::bench::AFTER_HELP)]
    Bench(gpubench::bench::BenchArgs),
    /// Compare phases (run reports, metric series): tables, charts, cost, verdict, regression gate.
    #[command(after_help = gpubench::compare::AFTER_HELP)]
    Compare(gpubench::compare::CompareArgs),
    /// Is this machine (and cluster) ready? GPU, driver, memory, disk, Docker, Kubernetes, sharing: PASS/WARN/FAIL with fixes.
    #[command(after_help = gpubench::check::AFTER_HELP)]
    GpuCheck(gpubench::check::GpuCheckArgs),
    /// Sample GPU (NVML), CPU, Prometheus/DCGM or a recording, for a duration or while a command runs.
    #[command(after_help = gpubench::metrics::AFTER_HELP)]
    Metrics(gpubench::metrics::MetricsArgs),
    /// Download a model (or some files) from the Hugging Face Hub into the shared cache or a folder.
    #[command(after_help = gpubench::hub::AFTER_HELP)]
    Download(gpubench::hub::DownloadArgs),
    /// Serve an LLM over HTTP (seed /generate API and OpenAI API) with continuous batching.
    #[command(after_help = gpubench::serve::AFTER_HELP)]
    Serve(gpubench::serve::ServeArgs),
    /// Work with run reports: merge the shard reports of a sharded load test into one.
    Report(gpubench::merge::ReportArgs),
    /// Run a few tensor operations on a device (CUDA) and compare them with the CPU.
    #[command(after_help = gpubench::selftest::AFTER_HELP)]
    SelfTest(gpubench::selftest::SelfTestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(ExitStatus::Failure.code());
        }
    };
    let quiet = cli.quiet;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::LoadTest(args) => gpubench::loadtest::run_cli(args, quiet).await.map_err(failed),
            Command::Bench(args) => gpubench::bench::run_cli(args, quiet).await.map_err(failed),
            Command::Compare(args) => gpubench::compare::run_cli(args, quiet).map_err(failed),
            Command::GpuCheck(args) => gpubench::check::run_cli(args, quiet).await.map_err(failed),
            Command::Metrics(args) => gpubench::metrics::run_cli(args, quiet).await.map_err(failed),
            Command::Download(args) => gpubench::hub::run_cli(args, quiet).await.map_err(failed),
            Command::Serve(args) => gpubench::serve::run_cli(args, quiet).await.map_err(failed),
            Command::Report(args) => gpubench::merge::run_cli(args, quiet).map_err(failed),
            Command::SelfTest(args) => gpubench::selftest::run_cli(args, quiet).await.map_err(failed),
        }
    });
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err((status, err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(status.code())
        }
    }
}

fn failed<E: Failure>(e: E) -> (ExitStatus, anyhow::Error) {
    (e.exit_status(), anyhow::Error::new(e))
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
