//! The API key: `Authorization: Bearer KEY` on the generation endpoints (and on `/metrics` with
//! `--metrics-auth`), compared in constant time.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::state::AppState;
use super::openai::ApiError;

/// Whether `given` is `key`; the time taken does not depend on where they differ.
pub fn key_matches(given: Option<&str>, key: &str) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(key.as_bytes())))
}

/// The key in an `Authorization: Bearer KEY` header.
fn bearer(req: &Request) -> Option<&str> {
    req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// Refuses a request without the server's API key (when one is set).
pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = state.api_key() {
        if !key_matches(bearer(&req), key) {
            return ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", "missing or wrong API key; send `Authorization: Bearer KEY`").into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        assert!(key_matches(Some("secret"), "secret"));
        assert!(!key_matches(Some("secreT"), "secret"));
        assert!(!key_matches(Some("secret2"), "secret"));
        assert!(!key_matches(Some(""), "secret"));
        assert!(!key_matches(None, "secret"));
    }
}
