//! `gpubench bench` stopped by SIGTERM (a CI timeout, a pod stopping) stops the servers it
//! started, as Ctrl-C does.

#![cfg(target_os = "linux")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

#[test]
fn sigterm_stops_the_servers_the_bench_started() {
    gpubench::default_model::ensure_default_model(true).expect("default model (see .ci/setup-serve.sh)");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let mut bench = Command::new(assert_cmd::cargo::cargo_bin!("gpubench"))
        .args(["bench", "--quick", "--phases", "bare-metal", "--concurrency", "1", "--point-duration", "30s"])
        .arg("--out-dir")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = out.join("logs").join("bare-metal-serve-0.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    let servers = loop {
        let up = std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on"));
        let kids = children(bench.id());
        if up && !kids.is_empty() {
            break kids;
        }
        if Instant::now() > deadline || bench.try_wait().unwrap().is_some() {
            let _ = bench.kill();
            let _ = bench.wait();
            panic!("the bench's first server did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) on the pid of our own child, not yet reaped.
    unsafe {
        libc::kill(bench.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while bench.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = bench.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = bench.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while servers.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<u32> = servers.iter().copied().filter(|&p| alive(p)).collect();
    for &p in &survivors {
        // SAFETY: the pid of a server this test's bench started (cleanup of a failed run).
        unsafe {
            libc::kill(p as libc::pid_t, libc::SIGKILL);
        }
    }
    assert!(survivors.is_empty(), "servers {survivors:?} outlived the bench after SIGTERM");
}
