//! Multi-turn sessions: turn k is sent with the whole history, the model's real answers to
//! turns 1..k-1 included, after `--think-time`. Closed loop: N sessions at once; open loop:
//! the schedule starts sessions.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::api::{build_body, ApiKind, BodyOptions};
use super::driver::Shared;
use super::recorder::{Measured, Recorder};
use super::workload::{Message, Prompt, PromptItem};

/// One conversation of a dataset: its system prompt and its user turns (the dataset's own
/// answers are not replayed: the model's are).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    pub turns: Vec<Turn>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub user: String,
    pub max_tokens: Option<u32>,
}

/// Everything a session needs to build its bodies as it goes.
pub struct SessionSet {
    pub conversations: Vec<Conversation>,
    pub think_time: Duration,
    pub api: ApiKind,
    pub model: Option<String>,
    pub body: BodyOptions,
}

impl SessionSet {
    fn body(&self, history: &[Message], max_tokens: Option<u32>) -> bytes::Bytes {
        let item = PromptItem { prompt: Prompt::Chat(history.to_vec()), max_tokens };
        build_body(self.api, self.model.as_deref(), &item, &self.body)
    }
}

/// Runs session `session` (its conversation chosen round-robin) to its end. With sessions,
/// `--requests` and a counted `--warmup` count sessions, so every session runs whole.
/// `first_due` is the scheduled start of an open-loop session: its first turn's latency
/// counts from there. Returns false once no more sessions may start (limit, deadline or cancel).
pub(super) async fn run(shared: &Shared, session: u64, first_due: Option<Instant>, rec: &Mutex<Recorder>) -> bool {
    let Some(set) = shared.sessions.as_ref() else { return false };
    if set.conversations.is_empty() || shared.limits.total_requests().is_some_and(|t| session >= t) {
        return false;
    }
    let warmup_sessions = shared.limits.warmup_requests();
    let conv = &set.conversations[(session % set.conversations.len() as u64) as usize];
    let mut history: Vec<Message> = Vec::new();
    if let Some(s) = &conv.system {
        history.push(Message { role: "system".into(), content: s.clone() });
    }
    let mut completed = true;
    for (k, turn) in conv.turns.iter().enumerate() {
        if shared.cancel.is_cancelled() || shared.deadline().is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let index = shared.requests.fetch_add(1, Ordering::Relaxed);
        history.push(Message { role: "user".into(), content: turn.user.clone() });
        let body = set.body(&history, turn.max_tokens);
        let start = Instant::now();
        let intended = match (k, first_due) {
            (0, Some(due)) => due.min(start),
            _ => start,
        };
        if session >= warmup_sessions && k == 0 && shared.measure_start.get().is_none() {
            let _ = shared.measure_start.set(start);
        }
        let warmup = session < warmup_sessions || shared.limits.is_warmup(0, start.saturating_duration_since(shared.t0));
        let ex = shared.send_with(index, Some(body)).await;
        let turn_no = k as u32 + 1;
        shared.log(index, intended, warmup, ex.as_ref(), Some((session, turn_no)));
        let Some(ex) = ex else {
            rec.lock().record_unfinished(warmup);
            return false;
        };
        let answer = ex.result.as_ref().ok().map(|a| a.text.clone().unwrap_or_default());
        rec.lock().record(Measured { exchange: &ex, intended, warmup, turn: Some(turn_no) }, shared.limits.slo.as_ref());
        let Some(answer) = answer else {
            // Without the answer the next turn cannot be asked as the conversation had it.
            completed = false;
            break;
        };
        history.push(Message { role: "assistant".into(), content: answer });
        if k + 1 < conv.turns.len() && !set.think_time.is_zero() {
            tokio::select! {
                _ = shared.cancel.cancelled() => return false,
                _ = tokio::time::sleep(set.think_time) => {}
            }
        }
    }
    if completed {
        rec.lock().sessions_finished += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_carries_the_answers_so_far() {
        let set = SessionSet {
            conversations: vec![],
            think_time: Duration::ZERO,
            api: ApiKind::OpenaiChat,
            model: Some("m".into()),
            body: BodyOptions { max_tokens: 5, ..BodyOptions::default() },
        };
        let history = vec![
            Message { role: "user".into(), content: "Hi".into() },
            Message { role: "assistant".into(), content: "Hello!".into() },
            Message { role: "user".into(), content: "More".into() },
        ];
        let v: serde_json::Value = serde_json::from_slice(&set.body(&history, Some(9))).unwrap();
        assert_eq!(v["messages"][1]["content"], "Hello!");
        assert_eq!(v["messages"][2]["role"], "user");
        assert_eq!(v["max_tokens"], 9);
    }
}
