//! Shared server state: the loaded model and its engine, the queue counters, model loading and
//! shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::watch;

use super::engine::{self, EngineHandle, EngineLimits};
use super::metrics::Metrics;
use super::model::{self, load_model_with, LoadOptions, LoadedModel, ModelSource};
use super::{ServeArgs, ServeError};

/// The loaded model and its engine.
pub struct Loaded {
    pub model: Arc<LoadedModel>,
    pub engine: EngineHandle,
}

pub(super) struct Inner {
    pub(super) name: String,
    pub(super) api_key: Option<String>,
    pub(super) metrics_auth: bool,
    pub(super) limits: parking_lot::Mutex<EngineLimits>,
    pub(super) max_tokens_limit: usize,
    pub(super) max_model_len: Option<usize>,
    pub(super) max_in_flight: usize,
    pub(super) in_flight: AtomicUsize,
    pub(super) next_id: AtomicU64,
    pub(super) loaded: OnceLock<Loaded>,
    /// The KV cache chosen at load, for the startup line.
    pub(super) capacity: OnceLock<String>,
    pub(super) draining: AtomicBool,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) metrics: Arc<Metrics>,
    /// Bounds the prompts rendered and tokenized at once (CPU work on the blocking pool).
    pub(super) prep: tokio::sync::Semaphore,
}

/// Shared server state.
#[derive(Clone)]
pub struct AppState(pub(super) Arc<Inner>);

impl AppState {
    pub fn new(name: String, args: &ServeArgs) -> Self {
        let limits = EngineLimits {
            max_batch_size: args.max_batch_size as usize,
            max_batched_tokens: args.max_batched_tokens as usize,
            max_kv_tokens: args.max_kv_tokens.map_or(super::DEFAULT_KV_TOKENS, |n| n as usize),
        };
        let (shutdown, _) = watch::channel(false);
        Self(Arc::new(Inner {
            name,
            api_key: args.api_key.clone().filter(|k| !k.is_empty()),
            metrics_auth: args.metrics_auth(),
            limits: parking_lot::Mutex::new(limits),
            max_tokens_limit: args.max_tokens_limit as usize,
            max_model_len: args.max_model_len,
            max_in_flight: args.max_batch_size as usize + args.max_queue as usize,
            in_flight: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            loaded: OnceLock::new(),
            capacity: OnceLock::new(),
            draining: AtomicBool::new(false),
            shutdown,
            metrics: Arc::new(Metrics::default()),
            prep: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }))
    }

    /// Installs a loaded model and starts its engine.
    pub fn install(&self, mut model: LoadedModel) {
        if let Some(n) = self.0.max_model_len {
            model.model.cfg.context = model.model.cfg.context.min(n.max(2));
        }
        let model = Arc::new(model);
        let engine = engine::start(Arc::clone(&model), *self.0.limits.lock(), Arc::clone(&self.0.metrics));
        let _ = self.0.loaded.set(Loaded { model, engine });
    }

    /// The API key, when one is set.
    pub fn api_key(&self) -> Option<&str> {
        self.0.api_key.as_deref()
    }

    /// The KV cache chosen at load (empty before).
    pub fn capacity_line(&self) -> &str {
        self.0.capacity.get().map_or("", String::as_str)
    }

    fn set_kv_limit(&self, tokens: usize) {
        self.0.limits.lock().max_kv_tokens = tokens;
    }

    /// Resolves once shutdown has been asked for.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.0.shutdown.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Starts a graceful shutdown (as SIGTERM does).
    pub fn request_shutdown(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
        self.0.shutdown.send_replace(true);
    }
}

/// Loads the model (blocking) and installs it.
pub fn load_into(state: &AppState, source: &ModelSource, device: &candle_core::Device, args: &ServeArgs) -> Result<(), ServeError> {
    if let Some(delay) = super::fault::get().load_delay {
        std::thread::sleep(delay);
    }
    let started = Instant::now();
    let opts = LoadOptions { dtype: args.dtype, ..LoadOptions::default() };
    let mut model = load_model_with(source, device, &opts)?;
    model.model.cfg.context = model.model.cfg.context.min(32_768);
    let (kv_tokens, note) = super::memory::kv_limit(&model, device, args)?;
    state.set_kv_limit(kv_tokens);
    // The pool holds the engine's bound plus a block of rounding per running sequence; with a
    // memory share on CUDA it is taken whole now.
    let slots = kv_tokens + args.max_batch_size as usize * model::KV_BLOCK;
    let allocate = args.gpu_memory_fraction.is_some() && device.is_cuda();
    model.model.set_kv_capacity(slots, allocate).map_err(|e| ServeError::Model(format!("cannot allocate the KV cache of {slots} tokens: {e}")))?;
    let kv_gib = (slots * model.model.kv_bytes_per_token()) as f64 / (1u64 << 30) as f64;
    let line = format!("KV cache {kv_tokens} tokens, {kv_gib:.2} GiB{}{note}", if allocate { " allocated" } else { " at most" });
    tracing::info!("{line}");
    let _ = state.0.capacity.set(line);
    if model.dummy {
        tracing::warn!("serving RANDOM weights (--load-format dummy): the text is meaningless, the speed is real");
    }
    tracing::info!("model loaded in {:.1}s ({})", started.elapsed().as_secs_f64(), model.model.describe());
    state.install(model);
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C (or [`AppState::request_shutdown`]), then lets axum drain.
pub async fn shutdown_signal(state: AppState) {
    let requested = state.shutdown_requested();
    tokio::select! {
        _ = crate::support::cli::stop_signal() => {},
        _ = requested => {},
    }
    eprintln!("gpubench serve: shutting down (no new requests; in-flight ones may finish)");
    state.request_shutdown();
}
