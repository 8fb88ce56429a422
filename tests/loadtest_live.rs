//! The live view of `gpubench load-test`, in a real terminal: the real binary runs in a tmux
//! pane against a fake server on 127.0.0.1; the pane is read with `capture-pane`. Skips with a
//! message where tmux is missing (`.ci/setup-tmux.sh` installs it).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::fake_llm::{FakeConfig, FakeServer};

/// A tmux server of this test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().map(|o| !o.status.success()).unwrap_or(true) {
            eprintln!("SKIPPED: tmux is not installed (.ci/setup-tmux.sh installs it)");
            return None;
        }
        let socket = format!("gpubench-{name}-{}", std::process::id());
        let ok = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "120", "-y", "40", "-s", "live", command])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Some(Tmux { socket })
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p", "-t", "live"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(Command::new("tmux").args(["-L", &self.socket, "send-keys", "-t", "live", keys]).status().unwrap().success());
    }

    /// The screen once `want` holds, or the last screen after `limit`.
    fn wait_for(&self, limit: Duration, want: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + limit;
        loop {
            let s = self.screen();
            if want(&s) || Instant::now() > end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// The number after `sent` on the view's requests panel.
fn sent(screen: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.trim_start_matches(['│', ' ']).starts_with("sent "))?;
    let rest = line.trim_start_matches(['│', ' ']).strip_prefix("sent")?;
    rest.split_whitespace().next()?.replace(',', "").parse().ok()
}

#[test]
fn the_live_view_shows_the_run_and_ctrl_c_restores_the_terminal_and_keeps_the_report() {
    let server = FakeServer::start(FakeConfig { ttft: Duration::from_millis(5), token_gap: Duration::from_millis(2), ..FakeConfig::default() });
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("live.json");
    let command = format!(
        "{} load-test --url {} --stream --rate 20 --duration 60s --server-metrics off --out {}; echo EXITED $?; sleep 60",
        assert_cmd::cargo::cargo_bin("gpubench").display(),
        server.url("/v1/chat/completions"),
        report.display()
    );
    let Some(tmux) = Tmux::start("live", &command) else { return };

    let first = tmux.wait_for(Duration::from_secs(30), |s| sent(s).is_some_and(|n| n > 0) && s.contains("e2e "));
    let n1 = sent(&first).unwrap_or_else(|| panic!("no live view with a request count:\n{first}"));
    let later = tmux.wait_for(Duration::from_secs(15), |s| sent(s).is_some_and(|n| n > n1));
    let n2 = sent(&later).unwrap_or(0);
    assert!(n2 > n1, "the request count rises: {n1} then {n2}\n{later}");
    assert!(later.contains("latency percentiles") && later.contains("p99"), "{later}");
    let e2e = later.lines().find(|l| l.contains("e2e ")).unwrap_or_default();
    assert!(e2e.contains(" ms") || e2e.contains(" µs"), "a percentile row with values: {e2e}\n{later}");
    assert!(later.contains("keeping up") || later.contains("FALLING BEHIND"), "the client's own lag: {later}");

    tmux.keys("C-c");
    let end = tmux.wait_for(Duration::from_secs(30), |s| s.contains("EXITED"));
    assert!(end.contains("EXITED 1"), "Ctrl-C ends the run with status 1:\n{end}");
    assert!(!end.contains("latency percentiles"), "the view's screen is gone: the terminal is restored\n{end}");
    assert!(end.contains("report: "), "the summary is printed on the restored screen\n{end}");
    let text = std::fs::read_to_string(&report).expect("the partial report was written");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["interrupted"], true);
    assert!(r["counts"]["ok"].as_u64().unwrap() > 0);
}

#[test]
fn no_live_view_when_output_is_not_a_terminal_or_with_no_live() {
    // Piped (as in every other test): the run prints its summary and nothing of the view.
    let server = FakeServer::start(FakeConfig::default());
    let run = common::load_test(&["--url", &server.url("/v1/completions"), "-c", "2", "--requests", "6"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("latency percentiles") && !run.stderr.contains("\u{1b}[?1049h"), "{}", run.stderr);

    // A terminal, with --no-live: the plain summary only.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let command = format!(
        "{} load-test --url {} -c 2 --requests 200 --no-live --server-metrics off --out {}; echo EXITED $?; sleep 60",
        assert_cmd::cargo::cargo_bin("gpubench").display(),
        server.url("/v1/completions"),
        report.display()
    );
    let Some(tmux) = Tmux::start("no-live", &command) else { return };
    let end = tmux.wait_for(Duration::from_secs(60), |s| s.contains("EXITED"));
    assert!(end.contains("EXITED 0"), "{end}");
    assert!(!end.contains("latency percentiles"), "{end}");
    assert!(report.exists());
}
