//! `serve --dtype` and `--gpu-memory-fraction` on the CPU (where the fraction is of the system
//! memory): a share the weights do not fit is refused with the sizes, and a bf16 dummy model on
//! candle's CPU kernels names its KV capacity when ready and serves tokens. Also the engine on
//! candle's kernels, batched against alone.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

fn serve() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin!("gpubench"));
    c.args(["serve", "--port", "0", "--threads", "2", "--load-format", "dummy", "--arch", "smollm2-135m"]);
    c
}

#[test]
fn a_share_the_weights_do_not_fit_is_refused_with_the_sizes() {
    let out = serve().args(["--gpu-memory-fraction", "0.000001"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--gpu-memory-fraction 0.000001: the weights (") && err.contains("do not fit in"), "{err}");
    assert!(err.contains("raise --gpu-memory-fraction"), "{err}");
}

#[test]
fn a_gguf_refuses_a_float_dtype() {
    let path = gpubench::default_model::ensure_default_model(true).expect("default model (see .ci/setup-serve.sh)");
    let out = Command::new(assert_cmd::cargo::cargo_bin!("gpubench"))
        .args(["serve", "--port", "0", "--dtype", "bf16", "--model"])
        .arg(path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--dtype bf16 applies to safetensors and dummy weights"), "{err}");
}

#[test]
fn bf16_dummy_weights_on_the_cpu_name_their_kv_capacity_and_serve() {
    let mut child = serve()
        .args(["--dtype", "bf16", "--gpu-memory-fraction", "0.5", "--max-kv-tokens", "4096", "--max-batch-size", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ready = None;
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        if line.contains("ready on") {
            ready = Some(line);
            break;
        }
        seen.push(line);
    }
    let Some(ready) = ready else {
        let _ = child.kill();
        panic!("no ready line; stderr:\n{}", seen.join("\n"));
    };
    let base = ready.split("ready on ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
    // The explicit --max-kv-tokens is below what half the memory leaves, so it is the bound.
    assert!(ready.contains("(KV cache 4096 tokens, ") && ready.contains("--gpu-memory-fraction 0.5 of"), "{ready}");
    let body = json!({"prompt": "Hello", "max_tokens": 4, "temperature": 0, "ignore_eos": true});
    let sent = common::serve::rt().block_on(async {
        let r = reqwest::Client::new().post(format!("{base}/generate")).json(&body).timeout(Duration::from_secs(60)).send().await?;
        r.json::<Value>().await
    });
    let _ = child.kill();
    let _ = child.wait();
    let r = sent.expect("generate");
    assert_eq!(r["completion_tokens"], 4, "{r}");
}

/// The engine on candle's kernels (the CUDA path's code): concurrent greedy requests of different
/// lengths, batched into shared decode steps, give the same text as each alone.
#[test]
fn candle_engine_batches_like_alone() {
    let srv = common::serve::Server::start(&[("GPUBENCH_CPU_BACKEND", "candle")], &["--max-batch-size", "8"]);
    let prompts = ["The capital of France is", "Once upon a time there was a", "def add(a, b):", "Hi"];
    let body = |p: &str| json!({"prompt": p, "max_tokens": 8, "temperature": 0, "ignore_eos": true});
    let send = |c: reqwest::Client, p: &'static str| {
        let url = srv.url("/generate");
        async move { c.post(url).json(&body(p)).send().await.unwrap().json::<Value>().await.unwrap()["text"].clone() }
    };
    let rt = common::serve::rt();
    let alone: Vec<Value> = prompts.iter().map(|p| rt.block_on(send(reqwest::Client::new(), p))).collect();
    let c = reqwest::Client::new();
    let together = rt.block_on(futures_util::future::join_all(prompts.iter().map(|p| send(c.clone(), p))));
    assert_eq!(together, alone);
    assert!(alone.iter().all(|t| !t.as_str().unwrap_or("").is_empty()), "{alone:?}");
}
