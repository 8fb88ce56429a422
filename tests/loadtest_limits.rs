//! The client's own limits: a stream is done at `[DONE]` even when the server keeps it open,
//! answers and stream lines are read only up to a cap, and an open loop without
//! --max-concurrency holds at most 4,096 requests in flight.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::fake_llm::{Fault, FakeConfig, FakeServer};
use common::load_test;

/// A raw-TCP server whose streamed answers are `body` (after a chunked SSE head), kept open
/// for 30 s after it; `/v1/models` names one model.
fn raw_server(body: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || answer(conn, body));
        }
    });
    format!("http://{addr}")
}

fn answer(conn: TcpStream, body: &[u8]) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut b = vec![0; length];
        if r.read_exact(&mut b).is_err() {
            return;
        }
        if line.starts_with("GET") {
            let models = br#"{"data":[{"id":"m"}]}"#;
            let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", models.len());
            let _ = w.write_all(models);
            continue;
        }
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        for piece in body.chunks(64 << 10) {
            if write!(w, "{:x}\r\n", piece.len()).is_err() || w.write_all(piece).is_err() || w.write_all(b"\r\n").is_err() {
                return;
            }
        }
        // Never end the body: a client that waits for the end times out.
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
}

#[test]
fn a_stream_is_done_at_done_even_if_the_server_keeps_it_open() {
    let base = raw_server(
        b"data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\",\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n",
    );
    let started = Instant::now();
    let run = load_test(&["--url", &format!("{base}/v1/completions"), "--stream", "-n", "2", "--timeout", "20s"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.r()["counts"]["ok"], 2, "{:#}", run.r());
    assert_eq!(run.r()["counts"]["errors"]["timeout"], 0);
    assert!(started.elapsed() < Duration::from_secs(15), "the client waited for the end of the body");
}

#[test]
fn an_endless_stream_line_is_a_protocol_error_not_a_memory_leak() {
    static LONG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body: &'static [u8] = LONG.get_or_init(|| {
        let mut b = b"data: {\"choices\":[{\"text\":\"".to_vec();
        b.resize(3 << 20, b'x');
        b
    });
    let base = raw_server(body);
    let run = load_test(&["--url", &format!("{base}/v1/completions"), "--stream", "-n", "1", "--timeout", "20s"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.r()["counts"]["errors"]["protocol"], 1, "{:#}", run.r());
    let sample = run.r()["counts"]["error_samples"][0].as_str().unwrap();
    assert!(sample.contains("longer than 1 MiB"), "{sample}");
}

#[test]
fn an_open_loop_without_max_concurrency_is_capped_and_says_so() {
    let server = FakeServer::start(FakeConfig { fault: Fault::Stall, ..FakeConfig::default() });
    let url = server.url("/v1/completions");
    let load = std::thread::spawn(move || {
        load_test(&["--url", &url, "--rate", "8000", "-n", "4200", "--timeout", "6s", "--model", "fake-model"])
    });
    // Every request stalls: before the first one times out, the server holds what the cap let through.
    std::thread::sleep(Duration::from_secs(4));
    let hits = server.hits();
    let run = load.join().unwrap();
    assert!(hits <= 4096, "{hits} requests reached the server at once");
    assert!(hits >= 3000, "only {hits} requests reached the server");
    let warnings = run.r()["warnings"].to_string();
    assert!(warnings.contains("default cap of 4096"), "{warnings}");
}
