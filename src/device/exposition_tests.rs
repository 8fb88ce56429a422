use super::*;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/exposition").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn value(e: &Exposition, name: &str) -> f64 {
    e.samples_named(name).next().unwrap_or_else(|| panic!("no sample {name}")).value
}

#[test]
fn vllm_families_types_and_histograms() {
    let e = parse(&fixture("vllm.prom"));
    assert_eq!(e.skipped, 0);
    assert_eq!(value(&e, "vllm:kv_cache_usage_perc"), 0.8125);
    assert_eq!(value(&e, "vllm:num_requests_waiting"), 7.0);
    let running = e.family("vllm:num_requests_running").unwrap();
    assert_eq!(running.kind, MetricType::Gauge);
    assert_eq!(running.help.as_deref(), Some("Number of requests in model execution batches."));
    assert_eq!(running.samples[0].label("model_name"), Some("Qwen/Qwen2.5-7B-Instruct"));
    let ttft = e.family("vllm:time_to_first_token_seconds").unwrap();
    assert_eq!(ttft.kind, MetricType::Histogram);
    assert_eq!(ttft.samples.len(), 7, "buckets, count and sum belong to the family");
    let inf = ttft.samples.iter().find(|s| s.label("le") == Some("+Inf")).unwrap();
    assert_eq!(inf.value, 256.0);
    assert_eq!(e.family("vllm:request_success_total").unwrap().samples.len(), 3);
    assert_eq!(e.family("vllm:num_preemptions_total").unwrap().kind, MetricType::Counter);
}

#[test]
fn old_vllm_counters_without_total_in_the_type_line() {
    let e = parse(&fixture("vllm-v0.prom"));
    assert_eq!(e.skipped, 0);
    let q = e.family("vllm:gpu_prefix_cache_queries").unwrap();
    assert_eq!(q.kind, MetricType::Counter);
    assert_eq!(q.samples[0].name, "vllm:gpu_prefix_cache_queries_total");
    assert_eq!(value(&e, "vllm:gpu_cache_usage_perc"), 0.375);
}

#[test]
fn tgi_summary_and_histogram() {
    let e = parse(&fixture("tgi.prom"));
    assert_eq!(e.skipped, 0);
    assert_eq!(value(&e, "tgi_queue_size"), 5.0);
    assert_eq!(value(&e, "tgi_batch_current_size"), 12.0);
    let d = e.family("tgi_request_duration").unwrap();
    assert_eq!(d.kind, MetricType::Summary);
    assert_eq!(d.samples.len(), 7);
    assert_eq!(e.family("tgi_batch_next_size").unwrap().samples.len(), 8);
}

#[test]
fn sglang_llamacpp_and_gpubench_serve() {
    let s = parse(&fixture("sglang.prom"));
    assert_eq!(s.skipped, 0);
    assert_eq!(value(&s, "sglang:token_usage"), 0.56);
    assert_eq!(value(&s, "sglang:num_queue_reqs"), 9.0);
    let l = parse(&fixture("llamacpp.prom"));
    assert_eq!(l.skipped, 0);
    assert_eq!(value(&l, "llamacpp:requests_processing"), 4.0);
    assert_eq!(value(&l, "llamacpp:kv_cache_usage_ratio"), 0.3125);
    let g = parse(&fixture("gpubench.prom"));
    assert_eq!(g.skipped, 0);
    assert_eq!(value(&g, "gpubench_serve_queue_depth"), 3.0);
    assert_eq!(g.family("gpubench_serve_time_to_first_token_seconds").unwrap().samples.len(), 7);
}

#[test]
fn what_gpubench_serve_renders_parses() {
    let m = crate::serve::metrics::Metrics::default();
    m.count_request("/generate", 200);
    m.observe_ttft(0.2);
    let e = parse(&m.render());
    assert_eq!(e.skipped, 0);
    assert!(e.family("gpubench_serve_queue_depth").is_some());
    assert_eq!(e.family("gpubench_serve_time_to_first_token_seconds").unwrap().kind, MetricType::Histogram);
}

#[test]
fn escapes_special_values_and_timestamps() {
    let text = concat!(
        "# HELP m A help\\nwith a line break and a \\\\.\n",
        "# TYPE m gauge\n",
        "m{path=\"C:\\\\dir\",quote=\"say \\\"hi\\\"\",nl=\"a\\nb\",brace=\"}{ ,\"} 1.5 1700000000000\n",
        "m{kind=\"nan\"} NaN\n",
        "m{kind=\"inf\"} +Inf\n",
        "m{kind=\"minf\"} -Inf\n",
        "m{kind=\"exp\",} 2.5e-3\n",
        "  m{ kind = \"spaced\" }   7  \n",
    );
    let e = parse(text);
    assert_eq!(e.skipped, 0, "{e:?}");
    let f = e.family("m").unwrap();
    assert_eq!(f.help.as_deref(), Some("A help\nwith a line break and a \\."));
    let first = &f.samples[0];
    assert_eq!(first.label("path"), Some("C:\\dir"));
    assert_eq!(first.label("quote"), Some("say \"hi\""));
    assert_eq!(first.label("nl"), Some("a\nb"));
    assert_eq!(first.label("brace"), Some("}{ ,"));
    assert_eq!(first.timestamp_ms, Some(1_700_000_000_000));
    assert!(f.samples[1].value.is_nan());
    assert_eq!(f.samples[2].value, f64::INFINITY);
    assert_eq!(f.samples[3].value, f64::NEG_INFINITY);
    assert_eq!(f.samples[4].value, 0.0025);
    assert_eq!(f.samples[5].label("kind"), Some("spaced"));
    assert_eq!(f.samples[5].value, 7.0);
}

#[test]
fn bad_lines_are_skipped_and_counted() {
    let text = concat!(
        "good 1\n",
        "9bad 1\n",
        "no_value\n",
        "word notanumber\n",
        "unclosed{a=\"x\" 1\n",
        "unquoted{a=x} 1\n",
        "too many 1 2 3\n",
        "# TYPE x nonsense\n",
        "# TYPE 1x gauge\n",
        "# a plain comment\n",
        "also_good{a=\"1\"} 2\n",
        "<html><body>Not Found</body></html>\n",
    );
    let e = parse(text);
    assert_eq!(e.skipped, 9);
    assert_eq!(e.sample_count(), 2);
}

#[test]
fn garbage_never_panics() {
    for text in ["{", "}", "a{", "a{b", "a{b=", "a{b=\"", "a{b=\"\\", "a{b=\"c\"", "a{b=\"c\"}", "#", "# TYPE", "# HELP a", "\u{feff}x 1", "é 1", "a 1 é"] {
        let e = parse(text);
        assert!(e.skipped + e.sample_count() <= 1, "{text}: {e:?}");
    }
    let json = parse("{\"detail\":\"Not Found\"}");
    assert_eq!(json.sample_count(), 0);
}
