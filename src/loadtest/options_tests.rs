//! Unit tests of `loadtest/options.rs`.

use super::*;

#[test]
fn slo_parses_and_rejects_nonsense() {
    let s = parse_slo("ttft=500ms, tpot=50ms,e2e=5s").unwrap();
    assert_eq!(s.ttft_ms, Some(500.0));
    assert_eq!(s.tpot_ms, Some(50.0));
    assert_eq!(s.e2e_ms, Some(5000.0));
    assert!(parse_slo("ttft").unwrap_err().contains("KEY=DURATION"));
    assert!(parse_slo("latency=5s").unwrap_err().contains("unknown SLO metric 'latency'"));
    assert!(parse_slo("ttft=fast").unwrap_err().contains("SLO ttft"));
    assert!(parse_slo(",").unwrap_err().contains("empty SLO"));
}

#[test]
fn warmup_is_a_count_or_a_time() {
    assert_eq!(parse_warmup("20").unwrap(), Warmup::Requests(20));
    assert_eq!(parse_warmup("10s").unwrap(), Warmup::Time(Duration::from_secs(10)));
    assert!(parse_warmup("soon").is_err());
}

#[test]
fn input_tokens_and_headers() {
    assert_eq!(parse_input_tokens("128:32").unwrap(), InputTokens { mean: 128, stddev: 32 });
    assert_eq!(parse_input_tokens("64").unwrap(), InputTokens { mean: 64, stddev: 0 });
    assert!(parse_input_tokens("0").is_err());
    assert!(parse_input_tokens("x:1").is_err());
    assert_eq!(parse_header("Authorization: Bearer x").unwrap(), ("Authorization".into(), "Bearer x".into()));
    assert!(parse_header("no colon").is_err());
    assert!(parse_header("bad name: v").is_err());
}

#[test]
fn rates_stages_burstiness_and_extra_body() {
    assert_eq!(parse_rate("inf").unwrap(), f64::INFINITY);
    assert_eq!(parse_rate("2.5").unwrap(), 2.5);
    assert!(parse_rate("0").is_err());
    assert!(parse_rate("-1").is_err());
    assert!(parse_burstiness("-0.5").unwrap_err().contains("positive"));
    assert_eq!(parse_burstiness("0.5").unwrap(), 0.5);
    let s = parse_stages("30s@2, 1m@8").unwrap();
    assert_eq!(s.0, vec![Stage { duration: Duration::from_secs(30), rate: 2.0 }, Stage { duration: Duration::from_secs(60), rate: 8.0 }]);
    assert!(parse_stages("30s").unwrap_err().contains("DURATION@RATE"));
    assert!(parse_stages("30s@x").unwrap_err().contains("rate 'x'"));
    assert!(parse_stages("0s@1").is_err());
    assert_eq!(parse_extra_body(r#"{"seed": 1}"#).unwrap()["seed"], 1);
    assert!(parse_extra_body("[1]").unwrap_err().contains("object"));
    assert!(parse_extra_body("{").unwrap_err().contains("not JSON"));
}
