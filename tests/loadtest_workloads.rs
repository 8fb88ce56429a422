//! The workloads production sends, end to end: the real binary against in-process fake
//! servers that record what they receive and when.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::fake_llm::{FakeConfig, FakeServer};
use common::load_test;
use serde_json::Value;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn secs_since(t0: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(t0).as_secs_f64()
}

fn quick_server() -> FakeServer {
    FakeServer::start(FakeConfig { ttft: Duration::from_millis(1), token_gap: Duration::ZERO, tokens: 4, ..FakeConfig::default() })
}

#[test]
fn trace_offsets_are_honoured() {
    let server = quick_server();
    let offsets_ms = [0u64, 100, 150, 600, 700, 1200, 1250, 1500];
    let lines: String = offsets_ms
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{{\"timestamp\": {}, \"prompt\": \"p{i}\", \"output_length\": 3}}\n", 5000 + t))
        .collect();
    let trace = file(&lines);
    let run = load_test(&["--url", &server.url("/v1/completions"), "--trace", trace.path().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["counts"]["ok"], 8);
    assert_eq!(run.r()["workload"]["trace"]["requests"], 8);
    assert!((run.r()["workload"]["trace"]["rate"].as_f64().unwrap() - 7.0 / 1.5).abs() < 1e-6);
    assert_eq!(run.r()["workload"]["arrival"], "trace");
    let got = server.received();
    let t0 = got.iter().find(|(_, b)| b["prompt"] == "p0").unwrap().0;
    for (i, want) in offsets_ms.iter().enumerate() {
        let (at, body) = got.iter().find(|(_, b)| b["prompt"] == format!("p{i}")).unwrap();
        let offset_ms = secs_since(t0, *at) * 1000.0;
        assert!((offset_ms - *want as f64).abs() < 40.0, "p{i} arrived at {offset_ms:.1} ms, the trace says {want}");
        assert_eq!(body["max_tokens"], 3);
    }
}

#[test]
fn trace_speed_compresses_time() {
    let server = quick_server();
    let trace = file("{\"timestamp\": 0, \"prompt\": \"a\"}\n{\"timestamp\": 1000, \"prompt\": \"b\"}\n");
    let run = load_test(&["--url", &server.url("/v1/completions"), "--trace", trace.path().to_str().unwrap(), "--trace-speed", "4"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got = server.received();
    let gap = secs_since(got[0].0, got[1].0);
    assert!((gap - 0.25).abs() < 0.04, "gap {gap}");
}

fn cv(gaps: &[f64]) -> f64 {
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    var.sqrt() / mean
}

#[test]
fn gamma_gaps_have_the_coefficient_of_variation_asked() {
    let server = quick_server();
    let run = load_test(&[
        "--url", &server.url("/v1/completions"), "--rate", "100", "--arrival", "gamma", "--burstiness", "0.25",
        "-n", "400", "--max-tokens", "2", "--seed", "5",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["workload"]["arrival"], "gamma");
    assert_eq!(run.r()["workload"]["burstiness"], 0.25);
    let mut at: Vec<Instant> = server.received().iter().map(|(t, _)| *t).collect();
    at.sort();
    let gaps: Vec<f64> = at.windows(2).map(|w| secs_since(w[0], w[1])).collect();
    let c = cv(&gaps);
    assert!((1.6..2.4).contains(&c), "CV of the gaps {c:.2}, 1/sqrt(0.25) = 2");
}

#[test]
fn a_linear_ramp_reaches_its_end_rate() {
    let server = quick_server();
    let run = load_test(&[
        "--url", &server.url("/v1/completions"), "--ramp-up", "linear", "--ramp-up-start-rate", "5",
        "--ramp-up-end-rate", "60", "--duration", "4s", "--arrival", "constant", "--max-tokens", "2",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["workload"]["ramp"]["end_rate"], 60.0);
    let at: Vec<Instant> = server.received().iter().map(|(t, _)| *t).collect();
    let t0 = *at.iter().min().unwrap();
    let first = at.iter().filter(|t| secs_since(t0, **t) < 1.0).count();
    let last = at.iter().filter(|t| (3.5..4.0).contains(&secs_since(t0, **t))).count();
    // Rate 5 -> 60 over 4 s: about 12 requests in the first second, about 28 in the last half second.
    assert!(first <= 16, "{first} in the first second");
    assert!(last >= 22, "{last} in the last half second (the end rate is 60/s)");
}

#[test]
fn stages_run_their_rates_and_end_by_themselves() {
    let server = quick_server();
    let run = load_test(&["--url", &server.url("/v1/completions"), "--stages", "1s@5,1s@40", "--arrival", "constant", "--max-tokens", "2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let n = run.r()["counts"]["ok"].as_u64().unwrap();
    assert!((40..=50).contains(&n), "{n} requests for 1 s at 5/s and 1 s at 40/s");
    assert_eq!(run.r()["workload"]["stages"][1]["rate"], 40.0);
}

#[test]
fn rate_inf_is_bounded_by_max_concurrency() {
    let server = quick_server();
    let run = load_test(&["--url", &server.url("/v1/completions"), "--rate", "inf", "--max-concurrency", "3", "-n", "30", "--max-tokens", "2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["workload"]["mode"], "throughput");
    assert_eq!(run.r()["workload"]["max_concurrency"], 3);
    assert_eq!(run.r()["counts"]["ok"], 30);
    assert_eq!(run.r()["label"], "throughput");
}

#[test]
fn sweep_auto_runs_synchronous_throughput_then_rates_between() {
    let server = FakeServer::start(FakeConfig { ttft: Duration::from_millis(20), token_gap: Duration::ZERO, tokens: 2, ..FakeConfig::default() });
    let run = load_test(&["--url", &server.url("/v1/completions"), "--sweep", "auto", "--sweep-points", "3", "-n", "20", "--max-concurrency", "8"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let runs = run.r()["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5, "synchronous, throughput and 3 rates");
    assert_eq!(runs[0]["label"], "c1");
    assert_eq!(runs[1]["workload"]["mode"], "throughput");
    let sweep = &run.r()["sweep"];
    assert_eq!(sweep["kind"], "auto");
    let sync = sweep["synchronous_rate"].as_f64().unwrap();
    let max = sweep["throughput_rate"].as_f64().unwrap();
    assert!(max > 2.0 * sync, "8 in flight beat one at a time: {sync} vs {max}");
    let rates: Vec<f64> = sweep["rates"].as_array().unwrap().iter().map(|r| r.as_f64().unwrap()).collect();
    assert_eq!(rates.len(), 3);
    assert!(rates.windows(2).all(|w| w[0] < w[1]) && rates[0] > sync && (rates[2] - max).abs() < 0.01, "{rates:?}");
    for (r, run) in rates.iter().zip(&runs[2..]) {
        assert_eq!(run["workload"]["rate"].as_f64().unwrap(), *r);
    }
    assert!(sweep["definition"].as_str().unwrap().contains("knee"));
}

/// The fake's answer to its `n`-th request of `tokens` tokens.
fn fake_answer(n: usize, tokens: usize) -> String {
    format!("a{n} {}", "tok ".repeat(tokens - 1))
}

#[test]
fn a_sessions_later_turn_carries_the_real_answers() {
    let server = FakeServer::start(FakeConfig { ttft: Duration::from_millis(2), token_gap: Duration::from_millis(1), tokens: 3, ..FakeConfig::default() });
    let data = file(concat!(
        r#"{"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "q1"}, {"from": "gpt", "value": "old"}, {"from": "human", "value": "q2"}, {"from": "human", "value": "q3"}]}"#,
        "\n",
        r#"{"messages": [{"role": "user", "content": "m1"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "m2"}]}"#,
        "\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("requests.csv");
    let run = load_test(&[
        "--url", &server.url("/v1/chat/completions"), "--stream", "--dataset", data.path().to_str().unwrap(),
        "--sessions", "2", "--think-time", "20ms", "-n", "2", "--max-tokens", "3", "--csv", csv.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["counts"]["ok"], 5);
    assert_eq!(run.r()["sessions"]["finished"], 2);
    assert!(run.r()["sessions"]["ttft_first_turn_ms"]["p50"].as_f64().is_some());
    assert!(run.r()["sessions"]["ttft_later_turns_ms"]["p50"].as_f64().is_some());
    let got = server.received();
    let messages = |b: &Value| b["messages"].as_array().unwrap().clone();
    let mut later = 0;
    for (_, body) in &got {
        let msgs = messages(body);
        if msgs.len() < 3 || msgs.last().unwrap()["role"] != "user" || msgs.iter().filter(|m| m["role"] == "assistant").count() == 0 {
            continue;
        }
        later += 1;
        // The request before this turn: the same history up to the last answer.
        let history = &msgs[..msgs.len() - 2];
        let answer = &msgs[msgs.len() - 2];
        assert_eq!(answer["role"], "assistant");
        let (hit, _) = got.iter().enumerate().map(|(i, (_, b))| (i + 1, b)).find(|(_, b)| messages(b) == history).expect("the earlier turn was sent");
        assert_eq!(answer["content"], fake_answer(hit, 3), "the model's real answer, not the dataset's");
    }
    assert_eq!(later, 3, "q2, q3 and m2 carry history");
    assert!(got.iter().all(|(_, b)| !b.to_string().contains("\"old\"")));
    let text = std::fs::read_to_string(&csv).unwrap();
    let header = text.lines().next().unwrap();
    assert!(header.ends_with("cached_tokens,session,turn"), "{header}");
    assert!(text.lines().skip(1).any(|l| l.ends_with(",3")), "a third turn is logged");
}

#[test]
fn shared_prefixes_are_byte_identical_within_a_group() {
    let server = quick_server();
    let run = load_test(&[
        "--url", &server.url("/v1/chat/completions"), "-c", "1", "-n", "8", "--input-tokens", "16",
        "--shared-prefix-tokens", "64", "--prefix-groups", "2", "--max-tokens", "2",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["workload"]["shared_prefix_tokens"], 64);
    assert_eq!(run.r()["workload"]["prefix_groups"], 2);
    let systems: Vec<String> = server.received().iter().map(|(_, b)| b["messages"][0]["content"].as_str().unwrap().to_string()).collect();
    assert_eq!(systems.len(), 8);
    for i in 2..8 {
        assert_eq!(systems[i], systems[i - 2], "request {i} has its group's prefix byte for byte");
    }
    assert_ne!(systems[0], systems[1]);
    assert!(systems[0].split(' ').count() >= 60);
}

#[test]
fn body_fields_exact_lengths_and_spreads_reach_the_server() {
    let server = quick_server();
    let run = load_test(&[
        "--url", &server.url("/v1/completions"), "-c", "2", "-n", "40", "--ignore-eos", "--temperature", "0.5",
        "--top-p", "0.9", "--extra-body", r#"{"seed": 11, "top_k": 5}"#, "--output-tokens", "50:10",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let w = &run.r()["workload"];
    assert_eq!(w["ignore_eos"], true);
    assert_eq!(w["output_tokens"], "50:10");
    assert_eq!(w["extra_body"]["seed"], 11);
    let bodies: Vec<Value> = server.received().into_iter().map(|(_, b)| b).collect();
    assert!(bodies.iter().all(|b| b["ignore_eos"] == true && b["min_tokens"] == b["max_tokens"] && b["temperature"] == 0.5 && b["top_p"] == 0.9 && b["seed"] == 11 && b["top_k"] == 5));
    let lens: Vec<u64> = bodies.iter().map(|b| b["max_tokens"].as_u64().unwrap()).collect();
    let mean = lens.iter().sum::<u64>() as f64 / lens.len() as f64;
    assert!((40.0..60.0).contains(&mean) && lens.iter().any(|&l| l != lens[0]), "{lens:?}");
}

#[test]
fn ignore_eos_gives_exact_lengths_on_gpubench_serve() {
    let server = common::serve::Server::start(&[], &[]);
    let run = load_test(&[
        "--url", &server.url("/v1/completions"), "-c", "2", "-n", "4", "--max-tokens", "20", "--ignore-eos",
        "--prompt", "Say yes.", "--stream",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["counts"]["ok"], 4);
    assert_eq!(run.r()["throughput"]["total_output_tokens"], 80, "4 answers of exactly 20 tokens");
}

#[test]
fn bad_workload_input_names_the_file_line_and_field() {
    let server = quick_server();
    let url = server.url("/v1/completions");
    let no_ts = file("{\"timestamp\": 0, \"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n");
    let run = load_test(&["--url", &url, "--trace", no_ts.path().to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("trace {} line 2: no \"timestamp\"", no_ts.path().display())), "{}", run.stderr);
    let backwards = file("{\"timestamp\": 10, \"prompt\": \"a\"}\n{\"timestamp\": 3, \"prompt\": \"b\"}\n");
    let run = load_test(&["--url", &url, "--trace", backwards.path().to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("line 2: timestamp 3 is before line 1's 10"), "{}", run.stderr);
    let run = load_test(&["--url", &url, "--rate", "2", "--arrival", "gamma", "--burstiness=-1"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("burstiness '-1' must be a positive number"), "{}", run.stderr);
    let run = load_test(&["--url", &url, "--rate", "2", "--burstiness", "0.5"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--arrival gamma"), "{}", run.stderr);
    let run = load_test(&["--url", &url, "--stages", "10s"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("DURATION@RATE"), "{}", run.stderr);
    let run = load_test(&["--url", &url, "--extra-body", "[1]"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("JSON object"), "{}", run.stderr);
    assert_eq!(server.hits(), 0, "bad input sends nothing");
}

#[test]
fn tokenizer_prompts_have_exactly_the_tokens_asked() {
    let model = gpubench::default_model::ensure_default_model(true).expect("default model (see .ci/setup-serve.sh)");
    let mut file = std::fs::File::open(&model).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let tk = gpubench::serve::tokenizer::TextTokenizer::from_gguf(&content).unwrap();
    let count = |t: &str| {
        let ids = tk.encode(t).unwrap();
        ids.len() - usize::from(tk.add_bos && tk.bos_id.is_some())
    };
    let server = FakeServer::start(FakeConfig { usage: false, tokens: 5, ..FakeConfig::default() });
    let run = load_test(&[
        "--url", &server.url("/v1/chat/completions"), "-c", "2", "-n", "12", "--input-tokens", "37",
        "--shared-prefix-tokens", "20", "--tokenizer", model.to_str().unwrap(), "--max-tokens", "5",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["workload"]["prompt_lengths"], "exact");
    assert!(run.r()["workload"]["tokenizer"].as_str().unwrap().ends_with(".gguf"));
    let mut lengths = Vec::new();
    for (_, body) in server.received() {
        let msgs = body["messages"].as_array().cloned().unwrap_or_default();
        let (system, user) = if msgs.is_empty() {
            panic!("shared prefixes go out as a system message: {body}")
        } else {
            (msgs[0]["content"].as_str().unwrap().to_string(), msgs[1]["content"].as_str().unwrap().to_string())
        };
        assert_eq!(count(&system), 20, "prefix {system:?}");
        lengths.push(count(&user));
    }
    assert_eq!(lengths, vec![37; 12], "every prompt has exactly 37 tokens by the same tokenizer");
    // The answers carried no usage: the tokenizer counted them (5 words "a1 tok tok tok tok").
    assert!(run.r()["throughput"]["total_output_tokens"].as_u64().unwrap() >= 12 * 5, "{:#}", run.r()["throughput"]);

    let run = load_test(&["--url", &server.url("/v1/completions"), "-n", "1", "--tokenizer", "no-such-org/no-such-model"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--tokenizer 'no-such-org/no-such-model' is neither a file"), "{}", run.stderr);
}

#[test]
fn cached_prompt_tokens_give_the_cache_hit_share() {
    let server = FakeServer::start(FakeConfig { cached_tokens: Some(3), tokens: 2, ..FakeConfig::default() });
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("requests.csv");
    let run = load_test(&["--url", &server.url("/v1/chat/completions"), "--stream", "-n", "5", "--csv", csv.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let cache = &run.r()["prefix_cache"];
    assert_eq!(cache["answers"], 5);
    assert_eq!(cache["cached_tokens"], 15);
    assert_eq!(cache["prompt_tokens"], 20);
    assert_eq!(cache["hit_share"], 0.75);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.lines().skip(1).all(|l| l.ends_with(",3,,")), "{text}");
    let plain = FakeServer::start(FakeConfig::default());
    let run = load_test(&["--url", &plain.url("/v1/completions"), "-n", "2"]);
    assert!(run.r().get("prefix_cache").is_none(), "no cache share where the server says nothing");
}

#[test]
fn open_loop_sessions_start_on_the_schedule_and_run_whole() {
    let server = quick_server();
    let data = file(concat!(
        r#"{"messages": [{"role": "user", "content": "u1"}, {"role": "user", "content": "u2"}]}"#,
        "\n"
    ));
    let run = load_test(&[
        "--url", &server.url("/v1/chat/completions"), "--dataset", data.path().to_str().unwrap(), "--sessions", "1",
        "--rate", "20", "--arrival", "constant", "-n", "6", "--max-tokens", "2",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["workload"]["mode"], "open");
    assert_eq!(run.r()["sessions"]["finished"], 6);
    assert_eq!(run.r()["counts"]["ok"], 12, "6 sessions of 2 turns");
    let firsts: Vec<Instant> =
        server.received().iter().filter(|(_, b)| b["messages"].as_array().unwrap().len() == 1).map(|(t, _)| *t).collect();
    assert_eq!(firsts.len(), 6);
    let span = secs_since(firsts[0], firsts[5]);
    assert!((span - 0.25).abs() < 0.05, "6 session starts at 20/s span {span:.3} s");
}
