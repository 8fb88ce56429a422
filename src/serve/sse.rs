//! Server-sent event streams of the OpenAI endpoints: one chunk per piece of text, the finish
//! reason, usage when asked for, then `data: [DONE]`.

use std::convert::Infallible;

use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::engine::Event;
use super::limits::Slot;
use super::openai::ApiError;

enum StreamPhase {
    First,
    Body,
    Usage(usize, usize),
    Done,
    End,
}

/// An SSE stream of chunks ending in `data: [DONE]`; dropping it (client gone) closes the
/// engine channel, which cancels the sequence at the next step.
pub(super) fn sse<C, F, U>(
    rx: UnboundedReceiver<Event>,
    slot: Slot,
    chunk: F,
    first: Option<C>,
    include_usage: bool,
    usage_chunk: U,
) -> Response
where
    C: Serialize + Send + Sync + 'static,
    F: Fn(&str, Option<&str>) -> C + Send + Sync + 'static,
    U: Fn(usize, usize) -> C + Send + Sync + 'static,
{
    struct StreamState<C, F, U> {
        rx: UnboundedReceiver<Event>,
        _slot: Slot,
        chunk: F,
        usage_chunk: U,
        first: Option<C>,
        include_usage: bool,
        phase: StreamPhase,
    }
    let st = StreamState { rx, _slot: slot, chunk, usage_chunk, first, include_usage, phase: StreamPhase::First };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            match std::mem::replace(&mut st.phase, StreamPhase::Body) {
                StreamPhase::First => {
                    if let Some(f) = st.first.take() {
                        return Some((Ok::<_, Infallible>(sse_event(to_data(&f))), st));
                    }
                }
                StreamPhase::Body => match st.rx.recv().await {
                    Some(Event::Text(t)) if t.is_empty() => {}
                    Some(Event::Text(t)) => {
                        let c = (st.chunk)(&t, None);
                        return Some((Ok(sse_event(to_data(&c))), st));
                    }
                    Some(Event::Done { finish_reason, prompt_tokens, completion_tokens }) => {
                        st.phase = if st.include_usage { StreamPhase::Usage(prompt_tokens, completion_tokens) } else { StreamPhase::Done };
                        let c = (st.chunk)("", Some(finish_reason.as_str()));
                        return Some((Ok(sse_event(to_data(&c))), st));
                    }
                    Some(Event::Error(e)) => {
                        st.phase = StreamPhase::Done;
                        let body = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e).error_body();
                        return Some((Ok(sse_event(to_data(&body))), st));
                    }
                    None => {
                        st.phase = StreamPhase::Done;
                    }
                },
                StreamPhase::Usage(p, c) => {
                    st.phase = StreamPhase::Done;
                    let u = (st.usage_chunk)(p, c);
                    return Some((Ok(sse_event(to_data(&u))), st));
                }
                StreamPhase::Done => {
                    st.phase = StreamPhase::End;
                    return Some((Ok(sse_event("[DONE]")), st));
                }
                StreamPhase::End => return None,
            }
        }
    });
    sse_response(stream)
}

/// A chunk as the JSON of an event's data.
fn to_data<T: Serialize>(v: &T) -> String {
    // The chunks are plain structs of strings and numbers, which always serialize.
    serde_json::to_string(v).unwrap_or_else(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", format!("cannot encode a chunk: {e}")).body().to_string()
    })
}

/// One SSE event (with the `sse-padding` fault, padded by a comment).
fn sse_event(data: impl AsRef<str>) -> SseEvent {
    let ev = SseEvent::default().data(data);
    match super::fault::get().sse_padding {
        Some(n) => ev.comment(" ".repeat(n)),
        None => ev,
    }
}

fn sse_response<S>(stream: S) -> Response
where
    S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
{
    Sse::new(stream).into_response()
}
