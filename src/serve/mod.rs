//! `gpubench serve`: an LLM inference server with continuous batching, the seed's `/generate`
//! API and the OpenAI API, running llama-family models through candle.

pub mod child;
mod auth;
mod conn;
pub mod engine;
pub mod fault;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod model;
mod openai;
mod responses;
mod prompt;
mod routes;
mod schema;
pub mod sampling;
mod spm;
mod sse;
mod state;
pub mod template;
pub mod tokenizer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use routes::build_router;
pub use state::AppState;
use model::{Arch, ModelSource, WeightDtype};

pub const AFTER_HELP: &str = "Examples:
  gpubench serve                                   # default model (SmolLM2-135M-Instruct Q4_1), 127.0.0.1:8000
  gpubench serve --model ./model --port 8080       # a Hugging Face folder (config.json, tokenizer.json, *.safetensors)
  gpubench serve --model m.gguf --max-batch-size 1 # one request at a time, like the classic server
  gpubench serve --load-format dummy --arch llama-3.1-8b --device cuda   # random weights, for speed only
  gpubench serve --load-format dummy --arch llama-3.2-1b --device cuda --dtype bf16 --gpu-memory-fraction 0.33

Endpoints: POST /generate, POST /v1/completions, POST /v1/chat/completions, GET /v1/models,
GET /health, GET /ready, GET /metrics.";

/// How `--model` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadFormat {
    /// A `.gguf` file or a folder with config.json, by what the path is.
    Auto,
    Gguf,
    Safetensors,
    /// Random weights of `--arch` (for speed measurements; the text is meaningless).
    Dummy,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// GGUF file or Hugging Face folder. Default: SmolLM2-135M-Instruct Q4_1, downloaded once into the cache.
    #[arg(long, env = "GPUBENCH_MODEL")]
    pub model: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LoadFormat::Auto)]
    pub load_format: LoadFormat,
    /// Architecture for `--load-format dummy`.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Dtype of float weights (safetensors, dummy) and activations: auto is bf16 on CUDA and f32 on
    /// the CPU. bf16 and f16 run on candle's kernels (on the CPU too); a GGUF stays quantized.
    #[arg(long, value_enum, default_value_t = WeightDtype::Auto)]
    pub dtype: WeightDtype,
    /// Model name the API reports and accepts (default: from the file name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads for the model (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// TCP port; 0 picks a free one (the bound address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on the generation endpoints (compared in constant
    /// time). Set it through GPUBENCH_API_KEY to keep it out of `ps` and the shell history.
    #[arg(long, env = "GPUBENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Require the API key on /metrics too [default: true when a key is set]; /health and /ready
    /// stay open for probes.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub metrics_auth: Option<bool>,
    /// Sequences in the running batch at most (1: one request at a time).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_batch_size: u32,
    /// Tokens per forward step at most (prompt chunks plus one per decoding sequence).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batched_tokens: u32,
    /// KV-cache tokens (prompt + max_tokens of running requests) at most [default: 65536, or what
    /// --gpu-memory-fraction leaves].
    #[arg(long, value_parser = clap::value_parser!(u32).range(16..))]
    pub max_kv_tokens: Option<u32>,
    /// The share of device memory (0 < F <= 1) this server may use: weights + KV cache fit in
    /// total x F, and the KV cache is what the weights leave (allocated at start on CUDA). On the
    /// CPU, of the system memory. Refuses to start when the weights do not fit.
    #[arg(long, value_parser = parse_fraction)]
    pub gpu_memory_fraction: Option<f64>,
    /// Requests waiting beyond the running batch at most; more get 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: u32,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens_limit: u32,
    /// Context length in tokens (default: the model's, at most 32768).
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Open connections at most; beyond them a connection gets 503 at once and is closed.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// The time a client has to send a request's headers.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,
    /// A connection with no request and no traffic for this long is closed.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub keep_alive_timeout: Duration,
    /// A client that stops reading its answer (a stream) for this long loses the connection; its
    /// sequence is cancelled and its batch slot freed.
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub stream_stall_timeout: Duration,
    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish before they are cut.
    #[arg(long, default_value = "10s", value_parser = crate::support::cli::parse_duration)]
    pub shutdown_grace: Duration,
}

/// KV-cache tokens without --max-kv-tokens or --gpu-memory-fraction.
pub const DEFAULT_KV_TOKENS: usize = 65_536;

impl ServeArgs {
    fn has_key(&self) -> bool {
        self.api_key.as_deref().is_some_and(|k| !k.is_empty())
    }

    /// Whether /metrics takes the API key.
    pub fn metrics_auth(&self) -> bool {
        self.metrics_auth.unwrap_or(true) && self.has_key()
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match crate::support::cli::parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{s}`: a timeout must be above 0; write e.g. 10s")),
        d => Ok(d),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("`{s}` is not a fraction in (0, 1]; write e.g. 0.5")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Usage(String),
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("cannot listen on {addr}: {source}; pick another --port or --host")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Provision(#[from] crate::default_model::ModelError),
}

impl crate::Failure for ServeError {
    fn exit_status(&self) -> crate::ExitStatus {
        match self {
            ServeError::Model(_) | ServeError::Usage(_) | ServeError::BadRequest { .. } => crate::ExitStatus::Usage,
            _ => crate::ExitStatus::Failure,
        }
    }
}

/// Parses `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(s: &str) -> Result<candle_core::Device, ServeError> {
    let s = s.trim();
    if s == "cpu" {
        return Ok(candle_core::Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ServeError::Usage(format!("--device `{s}`: write cpu, cuda or cuda:N")))?,
        None => return Err(ServeError::Usage(format!("--device `{s}`: write cpu, cuda or cuda:N"))),
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(ServeError::Usage(format!(
            "--device {s}: this gpubench was built without CUDA; rebuild with `cargo build --release --features cuda`, or use --device cpu"
        )));
    }
    candle_core::Device::new_cuda(ordinal)
        .map_err(|e| ServeError::Usage(format!("--device {s}: cannot open the CUDA device: {e}")))
}

/// Decides where the weights come from.
pub fn model_source(args: &ServeArgs, quiet: bool) -> Result<(ModelSource, String), ServeError> {
    if args.load_format == LoadFormat::Dummy {
        let arch = args.arch.ok_or_else(|| {
            ServeError::Usage("--load-format dummy needs --arch (smollm2-135m, llama-3.2-1b, llama-3.2-3b, llama-3.1-8b)".into())
        })?;
        return Ok((ModelSource::Dummy(arch), format!("dummy-{}", arch.name())));
    }
    if args.arch.is_some() {
        return Err(ServeError::Usage("--arch only goes with --load-format dummy".into()));
    }
    let (path, default) = match &args.model {
        Some(p) => (p.clone(), false),
        None => (crate::default_model::ensure_default_model(quiet)?, true),
    };
    let name = if default {
        crate::default_model::DEFAULT_MODEL_NAME.to_string()
    } else {
        let stem = if path.is_dir() { path.file_name() } else { path.file_stem() };
        stem.map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
    };
    let is_dir = path.is_dir();
    if !path.exists() {
        return Err(ServeError::Usage(format!("--model {}: no such file or folder", path.display())));
    }
    let source = match args.load_format {
        LoadFormat::Gguf if is_dir => return Err(ServeError::Usage(format!("--load-format gguf: {} is a folder", path.display()))),
        LoadFormat::Safetensors if !is_dir => {
            return Err(ServeError::Usage(format!("--load-format safetensors: {} is not a folder", path.display())))
        }
        _ if is_dir => ModelSource::HfFolder(path),
        _ => ModelSource::Gguf(path),
    };
    Ok((source, name))
}

/// Entry point of `gpubench serve`.
pub async fn run_cli(args: ServeArgs, quiet: bool) -> Result<crate::ExitStatus, ServeError> {
    fault::init().map_err(ServeError::Usage)?;
    if args.metrics_auth == Some(true) && !args.has_key() {
        return Err(ServeError::Usage("--metrics-auth needs an API key: set --api-key or GPUBENCH_API_KEY".into()));
    }
    if let Some(n) = args.threads {
        if n == 0 {
            return Err(ServeError::Usage("--threads must be at least 1".into()));
        }
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
        model::cpu::set_threads(n);
    }
    let device = parse_device(&args.device)?;
    conn::raise_fd_limit();
    let (source, default_name) = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || model_source(&args, quiet))
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))??
    };
    let name = args.served_model_name.clone().unwrap_or(default_name);
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|source| ServeError::Bind { addr: addr.clone(), source })?;
    let local: SocketAddr = listener.local_addr().map_err(|source| ServeError::Bind { addr: addr.clone(), source })?;
    let state = AppState::new(name.clone(), &args);
    // Bind first so /health and /ready answer while the model loads.
    eprintln!("gpubench serve: listening on http://{local} (model {name} loading)");
    let loader = {
        let state = state.clone();
        let args = args.clone();
        tokio::task::spawn_blocking(move || state::load_into(&state, &source, &device, &args))
    };
    let shutdown = state::shutdown_signal(state.clone());
    let limits = conn::ConnLimits {
        max_connections: args.max_connections as usize,
        header_read_timeout: args.header_read_timeout,
        keep_alive_timeout: args.keep_alive_timeout,
        stall_timeout: args.stream_stall_timeout,
    };
    let server = tokio::spawn(conn::serve(listener, build_router(state.clone()), limits, shutdown));
    tokio::select! {
        loaded = loader => match loaded {
            Ok(Ok(())) => eprintln!("gpubench serve: model {name} ready on http://{local} ({})", state.capacity_line()),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(ServeError::Internal(format!("model loading crashed: {e}"))),
        },
        _ = state.shutdown_requested() => {
            eprintln!("gpubench serve: stopped while the model was loading");
            return Ok(crate::ExitStatus::Success);
        }
    }
    let grace = args.shutdown_grace;
    // Wait for the signal, then let in-flight requests finish within the grace period.
    state.shutdown_requested().await;
    match tokio::time::timeout(grace + Duration::from_millis(500), server).await {
        Ok(_) => eprintln!("gpubench serve: stopped"),
        Err(_) => eprintln!("gpubench serve: requests still running after {}s; stopped", grace.as_secs_f64()),
    }
    Ok(crate::ExitStatus::Success)
}
