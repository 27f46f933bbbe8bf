//! What the benches that need real nodes (`fanout`, `probe`) share: the SSH servers of the one harness the
//! integration tests use too (tests/harness/sshd.rs), and the small process helpers of a bench report.
//!
//! Included by each bench with `#[path = "common/sshfleet.rs"] mod sshfleet;`: a directory under
//! `benches/` is not a bench target of its own.

// Each bench uses its own part of this module; what one of them leaves unused is not dead.
#![allow(dead_code)]

use std::fs;
use std::process::{Command, Output, Stdio};

#[path = "../../tests/harness/sshd.rs"]
mod sshd;

// Each bench takes its own part of the harness.
#[allow(unused_imports)]
pub use sshd::{SSHD, Sshd, USER, descendants_of as descendants, die_with_parent, free_port};

/// Runs a command to the end; a non-zero exit is an error carrying its stderr.
pub fn output(mut cmd: Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} exited {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One line describing the machine, for a report.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or_else(|| "?".to_owned(), |kib| format!("{:.1}", kib / 1024.0 / 1024.0));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores (nproc), {model}, {mem_gib} GiB, Linux {}", kernel.trim())
}
