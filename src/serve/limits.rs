//! Bounds on the request inputs that cost work per byte or per token, in one place, and the
//! admission of a request (readiness, the served model's name, the queue bound).

use std::sync::atomic::Ordering;

use axum::http::StatusCode;

use super::openai::ApiError;
use super::state::{AppState, Loaded};

/// A stop string at most (the engine searches every stop string after every token).
pub const MAX_STOP_BYTES: usize = 256;
/// Stop strings per request at most.
pub const MAX_STOP_STRINGS: usize = 16;
/// A request body at most (set on the router; the checks below agree with it).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Template instructions per chat render at most (minijinja's fuel): ample for any chat that fits
/// in a body, and a bound on a model's template that loops for long.
pub const TEMPLATE_FUEL: u64 = 5_000_000;
/// A rendered chat prompt at most, in bytes (a template that multiplies its input is refused).
pub const MAX_RENDERED_BYTES: usize = 4 * MAX_BODY_BYTES;

/// A slot in the bounded queue, given back when dropped (also when a client goes away).
pub(super) struct Slot(AppState);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0 .0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks readiness and the queue bound, validates the model name.
pub(super) fn admit<'a>(state: &'a AppState, model: Option<&str>) -> Result<(Slot, &'a Loaded), ApiError> {
    if state.0.draining.load(Ordering::SeqCst) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the server is shutting down"));
    }
    let Some(loaded) = state.0.loaded.get() else {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the model is still loading; retry when GET /ready answers 200");
        e.retry_after = Some(2);
        return Err(e);
    };
    if let Some(m) = model {
        if m != state.0.name {
            let mut e = ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("model `{m}` is not served here; this server serves `{}`", state.0.name));
            e.param = Some("model".into());
            return Err(e);
        }
    }
    let prev = state.0.in_flight.fetch_add(1, Ordering::SeqCst);
    let slot = Slot(state.clone());
    if prev >= state.0.max_in_flight {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("the server is at capacity ({} running or queued); retry later", state.0.max_in_flight),
        );
        e.retry_after = Some(1);
        return Err(e);
    }
    Ok((slot, loaded))
}
