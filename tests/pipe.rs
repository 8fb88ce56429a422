//! Output into a pipe that closes early (`gpubench ... | head -c 10`): the commands stop
//! writing quietly instead of panicking on the broken pipe.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::fake_llm::{FakeConfig, FakeServer};

/// Runs `cmd` with stdout into a pipe of one page (so that the output does not fit in it),
/// reads 10 bytes, closes the pipe and waits for the exit: the status and stderr.
fn read_a_little_then_close(mut cmd: Command) -> (ExitStatus, String) {
    let (mut reader, writer) = std::io::pipe().expect("a pipe");
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl(2) on a pipe we own; a failure only leaves the default size.
        unsafe {
            libc::fcntl(reader.as_raw_fd(), libc::F_SETPIPE_SZ, 4096);
        }
    }
    cmd.stdout(writer).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn().expect("start gpubench");
    drop(cmd); // our copy of the write end
    let mut first = [0u8; 10];
    reader.read_exact(&mut first).expect("the first bytes of the output");
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for gpubench") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gpubench did not exit after its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    (status, stderr)
}

fn gpubench() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("gpubench"));
    cmd.env("NO_COLOR", "1");
    cmd
}

#[test]
fn compare_json_into_a_closed_pipe_exits_without_a_panic() {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = gpubench();
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/compare"))
        .args(["compare", "--phase", "bare-metal=bare-metal.json,metrics=bare-metal-gpu.csv"])
        .args(["--phase", "sharing=sharing.json,metrics=sharing-gpu.csv,pods-per-gpu=3", "--json", "--out-dir"])
        .arg(out.path());
    let (status, stderr) = read_a_little_then_close(cmd);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn load_test_json_into_a_closed_pipe_exits_without_a_panic() {
    let server = FakeServer::start(FakeConfig::default());
    let out = tempfile::tempdir().unwrap();
    let mut cmd = gpubench();
    cmd.args(["load-test", "--url", &server.url("/generate"), "-n", "5", "--json", "--out"]).arg(out.path().join("run.json"));
    let (status, stderr) = read_a_little_then_close(cmd);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}
