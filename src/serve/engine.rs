//! The continuous-batching engine: one thread owns the model; requests join the running batch at
//! the next step and leave when done; long prompts are prefilled in chunks so running streams
//! keep decoding.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::fault;
use super::metrics::Metrics;
use super::model::{LoadedModel, SeqCache, StepInput};
use super::sampling::{Sampler, SamplingParams, TextStream};

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    /// Sequences decoded together at most.
    pub max_batch_size: usize,
    /// Tokens (prefill chunks plus decode tokens) per forward step at most.
    pub max_batched_tokens: usize,
    /// KV-cache tokens reserved by running sequences at most.
    pub max_kv_tokens: usize,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the engine tells a request's handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text (may be empty when a token's text is held back).
    Text(String),
    Done { finish_reason: FinishReason, prompt_tokens: usize, completion_tokens: usize },
    Error(String),
}

/// One generation request, tokenized and validated.
pub struct GenRequest {
    pub id: String,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
}

enum Command {
    Submit(GenRequest),
}

/// The HTTP side's handle on the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

impl EngineHandle {
    /// Queues a request; false when the engine has stopped.
    pub fn submit(&self, req: GenRequest) -> bool {
        self.tx.send(Command::Submit(req)).is_ok()
    }
}

struct Seq {
    req: GenRequest,
    cache: SeqCache,
    prefilled: usize,
    generated: Vec<u32>,
    sampler: Sampler,
    text: TextStream,
    last_token_at: Option<Instant>,
    reserved: usize,
    finished: Option<FinishReason>,
    /// An error was sent to the client; no `Done` follows.
    /// Why the sequence failed; its client is told when it leaves the batch.
    failed: Option<String>,
    /// Injected faults (see [`fault`]) that apply to this request.
    fault_on_token: bool,
    fault_in_step: bool,
}

/// Starts the engine thread; it runs until every handle is dropped and the work is done.
pub fn start(model: Arc<LoadedModel>, limits: EngineLimits, metrics: Arc<Metrics>) -> EngineHandle {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || Engine { model, limits, metrics, waiting: VecDeque::new(), running: Vec::new(), kv_used: 0 }.run(rx))
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!("cannot start the engine thread: {e}"));
    EngineHandle { tx }
}

struct Engine {
    model: Arc<LoadedModel>,
    limits: EngineLimits,
    metrics: Arc<Metrics>,
    waiting: VecDeque<GenRequest>,
    running: Vec<Seq>,
    kv_used: usize,
}

impl Engine {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        self.metrics.kv_tokens_limit.store(self.limits.max_kv_tokens as u64, Ordering::Relaxed);
        loop {
            if self.waiting.is_empty() && self.running.is_empty() {
                match rx.recv() {
                    Ok(cmd) => self.accept(cmd),
                    Err(_) => return,
                }
            }
            // A panic outside a step's own guard fails the requests in the engine, not the engine.
            let turn = catch_unwind(AssertUnwindSafe(|| {
                while let Ok(cmd) = rx.try_recv() {
                    self.accept(cmd);
                }
                self.drop_cancelled();
                self.admit();
                self.publish();
                if !self.running.is_empty() {
                    self.step();
                }
            }));
            if let Err(panic) = turn {
                self.fail_all(&format!("internal error in the engine: {}", panic_message(&*panic)));
            }
        }
    }

    /// Fails every running and waiting request (after a panic the engine could not pin on one).
    fn fail_all(&mut self, msg: &str) {
        tracing::error!("{msg}; failing {} running and {} waiting requests", self.running.len(), self.waiting.len());
        for s in self.running.drain(..) {
            let _ = s.req.events.send(Event::Error(msg.to_string()));
        }
        for r in self.waiting.drain(..) {
            let _ = r.events.send(Event::Error(msg.to_string()));
        }
        self.kv_used = 0;
        self.publish();
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(req) => self.waiting.push_back(req),
        }
    }

    fn reservation(&self, req: &GenRequest) -> usize {
        (req.prompt.len() + req.params.max_tokens).min(self.model.model.cfg.context)
    }

    /// Clients that went away free their slot and KV cache now.
    fn drop_cancelled(&mut self) {
        self.waiting.retain(|r| !r.events.is_closed());
        let before = self.running.len();
        let mut freed = 0;
        self.running.retain(|s| {
            let keep = !s.req.events.is_closed();
            if !keep {
                freed += s.reserved;
                tracing::info!(request_id = %s.req.id, "client went away; sequence cancelled");
            }
            keep
        });
        self.kv_used -= freed;
        if before != self.running.len() {
            self.publish();
        }
    }

    /// Moves waiting requests into the batch while slots and KV budget allow.
    fn admit(&mut self) {
        while self.running.len() < self.limits.max_batch_size {
            let Some(req) = self.waiting.front() else { break };
            let need = self.reservation(req);
            if self.kv_used + need > self.limits.max_kv_tokens && !self.running.is_empty() {
                break;
            }
            let Some(req) = self.waiting.pop_front() else { break };
            self.kv_used += need;
            let vocab = self.model.model.cfg.vocab;
            let sampler = Sampler::new(req.params.clone(), &req.prompt, vocab);
            let (fault_on_token, fault_in_step) = injected_faults(&self.model, &req.prompt);
            self.running.push(Seq {
                cache: self.model.model.new_cache(),
                prefilled: 0,
                generated: Vec::new(),
                sampler,
                text: TextStream::default(),
                last_token_at: None,
                reserved: need,
                finished: None,
                failed: None,
                fault_on_token,
                fault_in_step,
                req,
            });
        }
    }

    fn publish(&self) {
        self.metrics.queue_depth.store(self.waiting.len() as u64, Ordering::Relaxed);
        self.metrics.running.store(self.running.len() as u64, Ordering::Relaxed);
        self.metrics.kv_tokens_used.store(self.kv_used as u64, Ordering::Relaxed);
    }

    /// One forward step: every decoding sequence gets one token; prompts fill the remaining
    /// token budget in chunks.
    fn step(&mut self) {
        let mut budget = self.limits.max_batched_tokens.max(1);
        // (index into running, start, len) of the tokens each sequence contributes.
        let mut plan: Vec<(usize, usize, usize)> = Vec::new();
        for (i, s) in self.running.iter().enumerate() {
            if s.prefilled == s.req.prompt.len() && budget > 0 {
                plan.push((i, 0, 1));
                budget -= 1;
            }
        }
        for (i, s) in self.running.iter().enumerate() {
            let left = s.req.prompt.len() - s.prefilled;
            if left > 0 && budget > 0 {
                let n = left.min(budget);
                plan.push((i, s.prefilled, n));
                budget -= n;
            }
        }
        if plan.is_empty() {
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(|| self.forward(&plan)));
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("the model failed: {e}")),
            Err(panic) => Some(format!("internal error in the engine: {}", panic_message(&*panic))),
        };
        if let Some(msg) = error {
            tracing::error!("{msg}; failing the {} sequences of this step", plan.len());
            for &(i, _, _) in &plan {
                fail(&mut self.running[i], &msg);
            }
        }
        self.metrics.steps.fetch_add(1, Ordering::Relaxed);
        self.retire();
    }

    fn forward(&mut self, plan: &[(usize, usize, usize)]) -> candle_core::Result<()> {
        if plan.iter().any(|&(i, _, _)| self.running[i].fault_in_step) {
            panic!("injected fault (panic-in-step)");
        }
        let model = Arc::clone(&self.model);
        // Tokens of each planned sequence: a prompt slice, or the last generated token.
        let tokens: Vec<Vec<u32>> = plan
            .iter()
            .map(|&(i, start, n)| {
                let s = &self.running[i];
                if s.prefilled < s.req.prompt.len() {
                    s.req.prompt[start..start + n].to_vec()
                } else {
                    vec![*s.generated.last().unwrap_or(&0)]
                }
            })
            .collect();
        let want: Vec<bool> = plan
            .iter()
            .map(|&(i, start, n)| {
                let s = &self.running[i];
                s.prefilled == s.req.prompt.len() || start + n == s.req.prompt.len()
            })
            .collect();
        let logits = {
            let mut caches: Vec<Option<&mut SeqCache>> = self.running.iter_mut().map(|s| Some(&mut s.cache)).collect();
            let mut inputs = Vec::with_capacity(plan.len());
            for (k, &(i, _, _)) in plan.iter().enumerate() {
                let Some(cache) = caches[i].take() else { candle_core::bail!("sequence planned twice") };
                inputs.push(StepInput { tokens: &tokens[k], cache, want_logits: want[k] });
            }
            model.model.forward(&mut inputs)?
        };
        let mut logits = logits.into_iter();
        let now = Instant::now();
        for (k, &(i, _, n)) in plan.iter().enumerate() {
            let s = &mut self.running[i];
            if s.prefilled < s.req.prompt.len() {
                s.prefilled += n;
                self.metrics.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
            }
            if !want[k] {
                continue;
            }
            let Some(mut row) = logits.next() else { candle_core::bail!("missing logits") };
            // A panic while handling one sequence's token fails that request alone.
            let metrics = &self.metrics;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| emit_token(&model, metrics, s, &mut row, now))) {
                let msg = format!("internal error in the engine: {}", panic_message(&*panic));
                tracing::error!(request_id = %s.req.id, "{msg}; failing this request");
                fail(s, &msg);
            }
        }
        Ok(())
    }

    /// Finished sequences leave the batch and tell their clients. The gauges are published first,
    /// so a client that reads `/metrics` after its answer never sees its own sequence there.
    fn retire(&mut self) {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].finished.is_some() {
                let s = self.running.remove(i);
                self.kv_used -= s.reserved;
                done.push(s);
            } else {
                i += 1;
            }
        }
        self.publish();
        for mut s in done {
            let Some(reason) = s.finished else { continue };
            if let Some(msg) = s.failed.take() {
                let _ = s.req.events.send(Event::Error(msg));
                tracing::info!(request_id = %s.req.id, prompt_tokens = s.req.prompt.len(), "request failed");
                continue;
            }
            let rest = s.text.take_rest();
            if !rest.is_empty() {
                let _ = s.req.events.send(Event::Text(rest));
            }
            let completion_tokens = s.generated.len();
            self.metrics.observe_e2e(s.req.arrived.elapsed().as_secs_f64());
            let _ = s.req.events.send(Event::Done { finish_reason: reason, prompt_tokens: s.req.prompt.len(), completion_tokens });
            tracing::info!(request_id = %s.req.id, prompt_tokens = s.req.prompt.len(), completion_tokens, finish_reason = reason.as_str(), "request done");
        }
    }
}

/// Samples one sequence's next token from its logits row, streams its text and decides whether
/// the sequence is done.
fn emit_token(model: &LoadedModel, metrics: &Metrics, s: &mut Seq, row: &mut [f32], now: Instant) {
    if s.fault_on_token {
        panic!("injected fault (panic-on-prompt)");
    }
    let token = s.sampler.sample(row);
    metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
    match s.last_token_at {
        None => metrics.observe_ttft(now.duration_since(s.req.arrived).as_secs_f64()),
        Some(t) => metrics.observe_itl(now.duration_since(t).as_secs_f64()),
    }
    s.last_token_at = Some(now);
    if model.tokenizer.eos_ids.contains(&token) && !s.sampler.params().ignore_eos {
        s.finished = Some(FinishReason::Stop);
        s.generated.push(token);
        return;
    }
    s.generated.push(token);
    s.sampler.observe(token);
    let (delta, stopped) = s.text.push(token, |ids| model.tokenizer.decode(ids), &s.sampler.params().stop);
    if !delta.is_empty() {
        let _ = s.req.events.send(Event::Text(delta));
    }
    if stopped {
        s.finished = Some(FinishReason::Stop);
    } else if s.generated.len() >= s.sampler.params().max_tokens
        || s.cache.len() + 1 >= model.model.cfg.context
    {
        s.finished = Some(FinishReason::Length);
    }
}

/// Marks a sequence failed; it leaves at the next retire, which tells its client.
fn fail(s: &mut Seq, msg: &str) {
    s.failed = Some(msg.to_string());
    s.finished = Some(FinishReason::Stop);
}

/// The text of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// Which injected faults (see [`fault`]) a prompt triggers: (on its tokens, in its steps).
fn injected_faults(model: &LoadedModel, prompt: &[u32]) -> (bool, bool) {
    let f = fault::get();
    if f.panic_on_prompt.is_none() && f.panic_in_step.is_none() {
        return (false, false);
    }
    let text = model.tokenizer.decode(prompt);
    (fault::triggers(&f.panic_on_prompt, &text), fault::triggers(&f.panic_in_step, &text))
}
