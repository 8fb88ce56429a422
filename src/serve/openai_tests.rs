//! Tests of request parsing and validation, and of the answers' JSON.

use super::*;
use crate::serve::responses::*;

#[test]
fn wrong_type_names_the_field() {
    let e = parse_body::<GenerateBody>(br#"{"prompt": "x", "max_tokens": "ten"}"#).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("max_tokens"), "{}", e.message);
}

#[test]
fn missing_prompt_names_the_field() {
    let e = parse_body::<GenerateBody>(br#"{"max_tokens": 3}"#).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("prompt"), "{}", e.message);
}

#[test]
fn invalid_json_is_a_body_error() {
    let e = parse_body::<GenerateBody>(b"{not json").unwrap_err();
    assert_eq!(e.param.as_deref(), Some("body"));
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
}

#[test]
fn max_tokens_bounds() {
    let d = || Defaults { max_tokens: 16, temperature: 1.0, top_p: 1.0 };
    let f = SamplingFields { max_tokens: Some(0), ..Default::default() };
    assert_eq!(f.validate(d(), 100).unwrap_err().param.as_deref(), Some("max_tokens"));
    let f = SamplingFields { max_tokens: Some(101), ..Default::default() };
    assert_eq!(f.validate(d(), 100).unwrap_err().param.as_deref(), Some("max_tokens"));
    let f = SamplingFields { stop: Some(OneOrMany::One("x".into())), ..Default::default() };
    let p = f.validate(d(), 100).unwrap();
    assert_eq!((p.max_tokens, p.stop), (16, vec!["x".to_string()]));
}

#[test]
fn a_long_stop_string_is_refused() {
    let d = Defaults { max_tokens: 16, temperature: 1.0, top_p: 1.0 };
    let f = SamplingFields { stop: Some(OneOrMany::Many(vec!["x".into(), "y".repeat(257)])), ..Default::default() };
    let e = f.validate(d, 100).unwrap_err();
    assert_eq!((e.status, e.param.as_deref()), (StatusCode::BAD_REQUEST, Some("stop")), "{}", e.message);
    let d = Defaults { max_tokens: 16, temperature: 1.0, top_p: 1.0 };
    let f = SamplingFields { stop: Some(OneOrMany::One("y".repeat(256))), ..Default::default() };
    assert!(f.validate(d, 100).is_ok());
}

/// Every field of the wrong type, and every required field missing, is a 400 naming it.
#[test]
fn every_field_is_type_checked() {
    let chat = |extra: &str| format!(r#"{{"messages": [{{"role": "user", "content": "hi"}}]{extra}}}"#);
    let cases: Vec<(String, &str)> = vec![
        (chat(r#", "stream": "yes""#), "stream"),
        (chat(r#", "stream_options": {"include_usage": 1}"#), "stream_options.include_usage"),
        (chat(r#", "temperature": "hot""#), "temperature"),
        (chat(r#", "top_p": [1]"#), "top_p"),
        (chat(r#", "top_k": 1.5"#), "top_k"),
        (chat(r#", "seed": -1"#), "seed"),
        (chat(r#", "stop": 7"#), "stop"),
        (chat(r#", "stop": ["a", 1]"#), "stop"),
        (chat(r#", "n": "1""#), "n"),
        (chat(r#", "ignore_eos": "no""#), "ignore_eos"),
        (chat(r#", "max_completion_tokens": "5""#), "max_completion_tokens"),
        (chat(r#", "model": 3"#), "model"),
        (chat(r#", "presence_penalty": "0""#), "presence_penalty"),
        (chat(r#", "frequency_penalty": true"#), "frequency_penalty"),
        (chat(r#", "logit_bias": {"1": "x"}"#), "logit_bias.1"),
        (chat(r#", "user": 5"#), "user"),
        (chat(r#", "logprobs": 1"#), "logprobs"),
        (chat(r#", "response_format": "json""#), "response_format"),
        (chat(r#", "tools": {}"#), "tools"),
        (r#"{"messages": "hi"}"#.into(), "messages"),
        (r#"{"messages": [{"content": "hi"}]}"#.into(), "messages[0].role"),
        (r#"{"messages": [{"role": 1, "content": "hi"}]}"#.into(), "messages[0].role"),
        (r#"{"messages": [{"role": "user", "content": 5}]}"#.into(), "messages[0].content"),
        (r#"{"model": "m"}"#.into(), "messages"),
    ];
    for (body, param) in cases {
        let e = parse_body::<ChatBody>(body.as_bytes()).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (StatusCode::BAD_REQUEST, Some(param)), "{body}: {}", e.message);
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
    }
    let completion_cases = [
        (r#"{"prompt": 5}"#, "prompt"),
        (r#"{"prompt": "x", "echo": "no"}"#, "echo"),
        (r#"{"prompt": "x", "logprobs": true}"#, "logprobs"),
        (r#"{"prompt": "x", "best_of": "2"}"#, "best_of"),
        (r#"{"prompt": "x", "suffix": 1}"#, "suffix"),
        (r#"{"prompt": "x", "max_tokens": 2.5}"#, "max_tokens"),
    ];
    for (body, param) in completion_cases {
        let e = parse_body::<CompletionBody>(body.as_bytes()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
    }
    let e = parse_body::<CompletionBody>(br#"{"prompt": {}}"#).unwrap_err();
    assert!(e.message.contains("a string or a list of strings"), "{}", e.message);
}

/// A field the server does not implement is refused, not ignored; its neutral value is fine.
#[test]
fn unsupported_openai_fields_are_refused() {
    let d = || Defaults { max_tokens: 16, temperature: 1.0, top_p: 1.0 };
    let refused = [
        (r#", "logprobs": true"#, "logprobs"),
        (r#", "presence_penalty": 0.5"#, "presence_penalty"),
        (r#", "frequency_penalty": 3"#, "frequency_penalty"),
        (r#", "logit_bias": {"42": 10}"#, "logit_bias"),
        (r#", "response_format": {"type": "json_object"}"#, "response_format"),
        (r#", "tools": [{"type": "function"}]"#, "tools"),
    ];
    for (extra, param) in refused {
        let body = format!(r#"{{"messages": [{{"role": "user", "content": "hi"}}]{extra}}}"#);
        let b: ChatBody = parse_body(body.as_bytes()).unwrap();
        let e = b.sampling().validate(d(), 100).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
    }
    let fine = r#"{"messages": [{"role": "user", "content": "hi"}], "logprobs": false, "presence_penalty": 0, "user": "u", "response_format": {"type": "text"}, "tools": []}"#;
    let b: ChatBody = parse_body(fine.as_bytes()).unwrap();
    b.sampling().validate(d(), 100).unwrap();
    for (body, param) in [(r#"{"prompt": "x", "echo": true}"#, "echo"), (r#"{"prompt": "x", "best_of": 2}"#, "best_of"), (r#"{"prompt": "x", "suffix": "y"}"#, "suffix")] {
        let b: CompletionBody = parse_body(body.as_bytes()).unwrap();
        assert_eq!(b.sampling().validate(d(), 100).unwrap_err().param.as_deref(), Some(param), "{body}");
    }
}

#[test]
fn user_content_is_required_and_text_parts_need_text() {
    let b: ChatBody = parse_body(br#"{"messages": [{"role": "user"}]}"#).unwrap();
    assert_eq!(b.chat_messages().unwrap_err().param.as_deref(), Some("messages[0].content"));
    let b: ChatBody = parse_body(br#"{"messages": [{"role": "user", "content": [{"type": "text"}]}]}"#).unwrap();
    assert_eq!(b.chat_messages().unwrap_err().param.as_deref(), Some("messages[0].content[0].text"));
    let b: ChatBody = parse_body(br#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": null}]}"#).unwrap();
    assert_eq!(b.chat_messages().unwrap().len(), 2);
}

/// The answers keep the exact bytes the server sends: keys in alphabetical order, null where a
/// value is absent, optional fields left out.
#[test]
fn answers_serialize_to_the_bytes_sent() {
    let usage = Usage::new(3, 2);
    let c = Completion {
        choices: vec![CompletionChoice { finish_reason: Some("length".into()), index: 0, logprobs: None, text: "hi \"x\"".into() }],
        created: 7,
        dummy_weights: false,
        id: "cmpl-1".into(),
        model: "m".into(),
        object: "text_completion",
        usage,
    };
    assert_eq!(
        serde_json::to_string(&c).unwrap(),
        r#"{"choices":[{"finish_reason":"length","index":0,"logprobs":null,"text":"hi \"x\""}],"created":7,"id":"cmpl-1","model":"m","object":"text_completion","usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}"#
    );
    let chunk = ChatCompletionChunk {
        choices: vec![ChatChunkChoice { delta: ChatDelta::default(), finish_reason: Some("stop".into()), index: 0, logprobs: None }],
        created: 7,
        id: "chatcmpl-1".into(),
        model: "m".into(),
        object: "chat.completion.chunk",
        usage: None,
    };
    assert_eq!(
        serde_json::to_string(&chunk).unwrap(),
        r#"{"choices":[{"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":7,"id":"chatcmpl-1","model":"m","object":"chat.completion.chunk"}"#
    );
    let first = ChatDelta { content: Some(String::new()), role: Some("assistant") };
    assert_eq!(serde_json::to_string(&first).unwrap(), r#"{"content":"","role":"assistant"}"#);
    let list = ModelList {
        data: vec![ModelCard { created: 7, dummy_weights: true, id: "m".into(), max_model_len: None, object: "model", owned_by: "gpubench" }],
        object: "list",
    };
    assert_eq!(serde_json::to_string(&list).unwrap(), r#"{"data":[{"created":7,"dummy_weights":true,"id":"m","object":"model","owned_by":"gpubench"}],"object":"list"}"#);
    let e = ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "busy");
    assert_eq!(
        serde_json::to_string(&e.error_body()).unwrap(),
        r#"{"error":{"code":"rate_limit_exceeded","message":"busy","param":null,"type":"rate_limit_error"}}"#
    );
}
