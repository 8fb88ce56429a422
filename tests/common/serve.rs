//! The real `gpubench serve` as a child process on 127.0.0.1 (port 0), for the serve tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts the server on the default model with `env` set and returns once it prints its
    /// address (the model may still be loading).
    pub fn spawn(env: &[(&str, &str)], extra: &[&str]) -> Server {
        gpubench::default_model::ensure_default_model(true).expect("default model (see .ci/setup-serve.sh)");
        let mut child = Command::new(assert_cmd::cargo::cargo_bin!("gpubench"))
            .args(["serve", "--port", "0", "--threads", "2"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gpubench serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(60)).expect("server prints its address");
        Server { child, base }
    }

    /// [`Server::spawn`], then waits until `/ready` says the model is loaded.
    pub fn start(env: &[(&str, &str)], extra: &[&str]) -> Server {
        let srv = Server::spawn(env, extra);
        srv.wait_ready();
        srv
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if get(&self.url("/ready")).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server not ready in time");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn assert_alive(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "the server process exited");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        gpubench::support::process::stop_child(&mut self.child, Duration::ZERO);
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// GET: status and body (JSON where it parses, else the text); status 0 when unreachable.
pub fn get(url: &str) -> (u16, Value) {
    rt().block_on(async {
        match reqwest::Client::new().get(url).timeout(Duration::from_secs(10)).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
            }
            Err(_) => (0, Value::Null),
        }
    })
}

/// POST `body` as JSON: status and the JSON answer (null where it is not JSON).
pub fn post(url: &str, body: &Value) -> (u16, Value) {
    rt().block_on(async {
        let r = reqwest::Client::new().post(url).json(body).timeout(Duration::from_secs(120)).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    })
}

/// POST `body` as JSON: status and the `data:` payloads of the SSE answer.
pub fn post_stream(url: &str, body: &Value) -> (u16, Vec<String>) {
    rt().block_on(async {
        let r = reqwest::Client::new().post(url).json(body).timeout(Duration::from_secs(120)).send().await.unwrap();
        let s = r.status().as_u16();
        let text = r.text().await.unwrap();
        (s, text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect())
    })
}
