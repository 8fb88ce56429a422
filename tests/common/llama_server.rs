//! llama.cpp's `llama-server` (built by `.ci/setup-llama-server.sh`) as a child process on
//! 127.0.0.1 with the default model: a real server nobody here wrote. Tests skip, with a
//! message, where it is not built.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `.ci/setup-llama-server.sh` puts the binary, or `$LLAMA_SERVER`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LLAMA_SERVER").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let cache = gpubench::default_model::cache_dir().ok()?;
    let p = cache.join("peers/llama.cpp-0.3.36/bin/llama-server");
    p.is_file().then_some(p)
}

/// A running llama-server; stopped by its pid when dropped.
pub struct LlamaServer {
    child: Child,
    pub port: u16,
}

impl LlamaServer {
    /// Starts it with `extra` flags, or returns None (after printing why) where it is not built.
    pub fn start(extra: &[&str]) -> Option<LlamaServer> {
        let Some(bin) = binary() else {
            eprintln!("skipped: llama-server is not built (run .ci/setup-llama-server.sh, or set LLAMA_SERVER)");
            return None;
        };
        let model = gpubench::default_model::ensure_default_model(true).expect("default model (see .ci/setup-serve.sh)");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bin)
            .arg("-m")
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "-t", "2", "-c", "4096", "-np", "4"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let server = LlamaServer { child, port };
        server.wait_healthy();
        Some(server)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if super::serve::get(&self.url("/health")).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("llama-server did not become healthy within 120 s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
