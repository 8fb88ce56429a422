//! Unit tests of `loadtest/api.rs`.

use super::*;
use crate::loadtest::workload::Prompt;

fn item(text: &str) -> PromptItem {
    PromptItem { prompt: Prompt::Text(text.into()), max_tokens: None }
}

#[test]
fn api_from_path() {
    assert_eq!(ApiKind::from_path("/generate"), Some(ApiKind::Generate));
    assert_eq!(ApiKind::from_path("/v1/completions"), Some(ApiKind::OpenaiCompletions));
    assert_eq!(ApiKind::from_path("/v1/chat/completions/"), Some(ApiKind::OpenaiChat));
    assert_eq!(ApiKind::from_path("/"), None);
    assert_eq!(ApiKind::from_path("/api/generate"), Some(ApiKind::OllamaGenerate));
    assert_eq!(ApiKind::from_path("/api/chat"), Some(ApiKind::OllamaChat));
    assert_eq!(ApiKind::from_path("/generate_stream"), Some(ApiKind::TgiStream));
}

#[test]
fn bodies_follow_each_api() {
    let opts = BodyOptions { max_tokens: 7, stream: true, ..BodyOptions::default() };
    let b = build_body(ApiKind::Generate, Some("m"), &item("hi"), &opts);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v, json!({"prompt": "hi", "max_tokens": 7}));
    let b = build_body(ApiKind::OpenaiChat, Some("m"), &item("hi"), &opts);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["messages"][0]["content"], "hi");
    assert_eq!(v["model"], "m");
    assert_eq!(v["stream_options"]["include_usage"], true);
    let mut it = item("x");
    it.max_tokens = Some(3);
    let v: serde_json::Value =
        serde_json::from_slice(&build_body(ApiKind::OpenaiCompletions, None, &it, &BodyOptions { max_tokens: 7, ..BodyOptions::default() })).unwrap();
    assert_eq!(v["max_tokens"], 3);
    assert!(v.get("stream").is_none());
}

#[test]
fn exact_lengths_sampling_and_extra_fields_reach_the_body() {
    let mut extra = serde_json::Map::new();
    extra.insert("seed".into(), json!(7));
    extra.insert("temperature".into(), json!(0.5));
    let opts = BodyOptions { max_tokens: 9, ignore_eos: true, temperature: Some(0.0), top_p: Some(0.9), extra, ..BodyOptions::default() };
    let v: serde_json::Value = serde_json::from_slice(&build_body(ApiKind::OpenaiChat, Some("m"), &item("hi"), &opts)).unwrap();
    assert_eq!(v["ignore_eos"], true);
    assert_eq!(v["min_tokens"], 9);
    assert_eq!(v["top_p"], 0.9);
    assert_eq!(v["seed"], 7);
    assert_eq!(v["temperature"], 0.5, "--extra-body is merged last");
    let v: serde_json::Value = serde_json::from_slice(&build_body(ApiKind::Generate, None, &item("hi"), &opts)).unwrap();
    assert_eq!(v["ignore_eos"], true);
    assert!(v.get("min_tokens").is_none());
}

#[test]
fn answers_give_token_counts() {
    let u = parse_answer(ApiKind::Generate, "application/json", br#"{"text":"a","prompt_tokens":3,"completion_tokens":9}"#).unwrap();
    assert_eq!(u, Usage { prompt_tokens: Some(3), completion_tokens: Some(9), cached_tokens: None });
    let u = parse_answer(ApiKind::Generate, "", br#"{"generated_text":"a"}"#).unwrap();
    assert_eq!(u, Usage::default());
    let e = parse_answer(ApiKind::Generate, "text/html; charset=utf-8", b"<!DOCTYPE html><html>").unwrap_err();
    assert!(e.contains("expected a JSON answer, got text/html"), "{e}");
    let e = parse_answer(ApiKind::Generate, "application/json", br#"{"ok":1}"#).unwrap_err();
    assert!(e.contains("no \"text\""), "{e}");
    let u = parse_answer(ApiKind::OpenaiChat, "application/json", br#"{"choices":[{}],"usage":{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#).unwrap();
    assert_eq!(u.completion_tokens, Some(2));
    assert_eq!(u.cached_tokens, Some(1));
    assert!(parse_answer(ApiKind::OpenaiChat, "application/json", br#"{"choices":[]}"#).is_err());
}

#[test]
fn sse_counts_content_and_usage_across_split_chunks() {
    let stream = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                  data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n\
                  : keep-alive\n\n\
                  data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
                  data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n\
                  data: [DONE]\n\n";
    let mut s = SseStream::default();
    let mut events = 0;
    for piece in stream.as_bytes().chunks(7) {
        events += s.feed(piece).unwrap();
    }
    events += s.finish().unwrap();
    assert_eq!(events, 2);
    assert_eq!(s.content_events, 2);
    assert_eq!(s.usage, Usage { prompt_tokens: Some(4), completion_tokens: Some(2), cached_tokens: None });
    assert!(s.done);
}

#[test]
fn truncated_or_broken_streams_are_protocol_errors() {
    let mut s = SseStream::default();
    s.feed(b"data: {\"choices\":[{\"text\":\"a\"}]}\n\n").unwrap();
    assert!(s.finish().unwrap_err().contains("ended before"));
    let mut s = SseStream::default();
    assert!(s.feed(b"data: {oops\n\n").unwrap_err().contains("not JSON"));
    let mut s = SseStream::default();
    assert!(s.feed(b"data: {\"error\":{\"message\":\"boom\"}}\n\n").unwrap_err().contains("boom"));
}
