//! A `bai` left running (`logs --follow`, `port-forward`): its stdout read line by line as it comes, waits
//! for a line with a deadline, and the process killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `bai` whose stdout lines arrive on a channel.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    /// `bai ARGS…` as [`crate::support::bai`] runs it (no colour, no ssh_config of the machine's).
    pub fn start(args: &[&str]) -> Running {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("bai"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("BAI_SSH_CONFIG", "none")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bai starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    /// Waits up to `within` for a line `want` accepts; every line read is kept.
    #[track_caller]
    pub fn wait_for(&mut self, what: &str, within: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("no {what} within {within:?}; lines: {:?}\nstderr: {err}", self.seen);
                }
            }
        }
    }

    /// Waits for the process to end by itself within `within`; its exit code.
    #[track_caller]
    pub fn ends_within(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("bai did not end within {within:?}; lines: {:?}", self.seen);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
