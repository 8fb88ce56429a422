//! A standalone fake Hugging Face Hub serving one large LFS file on loopback, for
//! `scripts/bench-download` (the same fake the tests use).
//!
//! Usage: cargo run --example fake_hub_server -- [SIZE_MIB]   (default 1024)
//! Prints `hub URL`, `file REPO PATH` and `resolve URL` lines, then serves until stdin closes.

#[path = "../tests/common/fake_hub.rs"]
mod fake_hub;

use std::io::{Read, Write};

use bytes::Bytes;
use fake_hub::{FakeFile, FakeHub, FakeRepo, Options};

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let commit = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
    let file = FakeFile::lfs("model.bin", Bytes::from(data));
    let _ = file.sha256(); // computed once, before any client is timed
    let repo = FakeRepo::new("bench/big").commit(commit, "main", vec![file]);
    let hub = FakeHub::start(vec![repo], Options { chunk: 256 * 1024, ..Options::default() });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "hub {}", hub.url);
    let _ = writeln!(out, "file bench/big model.bin");
    let _ = writeln!(out, "resolve {}/bench/big/resolve/main/model.bin", hub.url);
    let _ = out.flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(hub);
}
