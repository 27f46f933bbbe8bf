//! The apply lease: one controller at a time per cluster on a node.
//!
//! An exclusive `flock` on `leases/<cluster>.lock`, held by the agent process for as long as its
//! controller is connected. The kernel drops it when the process ends — the controller closing the
//! connection, or being killed outright, ends the agent (its stdin closes) — so a lease can never be
//! left behind. The agent notices its connection closing even in the middle of a call
//! (`agent::serve`), so a lease is never held for a controller that is gone.
//!
//! The file says who holds the lease and since when, the holding agent's pid, and what it is doing
//! (rewritten at each change it makes), so that a refused controller is told whether the holder is still
//! there and what it waits for.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::protocol::{ErrorKind, RpcError};

/// A held lease; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct Lease {
    file: File,
    /// The file's first lines: holder, since when, the agent's pid.
    head: String,
}

impl Lease {
    /// Records what the holder is doing now, for a controller that is refused meanwhile. Best effort:
    /// the lease holds whether or not the note could be written.
    pub fn doing(&mut self, what: &str, now_unix: u64) {
        let text = format!("{}\ndoing {what} since {}\n", self.head, format_utc(now_unix));
        let _ = self.file.set_len(0);
        let _ = self.file.seek(SeekFrom::Start(0));
        let _ = self.file.write_all(text.as_bytes());
    }
}

/// What a held lease's file says, as the refusal tells it.
fn describe_holder(text: &str) -> String {
    let mut lines = text.lines();
    let who = lines.next().map(str::trim).filter(|w| !w.is_empty()).unwrap_or("another controller");
    let mut pid = None;
    let mut doing = None;
    for line in lines {
        if let Some(p) = line.strip_prefix("agent pid ") {
            pid = p.trim().parse::<u32>().ok();
        } else if let Some(d) = line.strip_prefix("doing ") {
            doing = Some(d.trim());
        }
    }
    let mut out = who.to_string();
    match pid {
        Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => {
            out.push_str(&format!("; it is still connected (its agent, pid {pid} on this node, is running"));
            match doing {
                Some(d) => out.push_str(&format!(": {d})")),
                None => out.push(')'),
            }
        }
        Some(pid) => out.push_str(&format!("; its agent (pid {pid}) has just ended, so the lease is being let go")),
        None => {}
    }
    out
}

fn failed(path: &Path, e: std::io::Error) -> RpcError {
    RpcError::new(ErrorKind::Failed, format!("cannot use the lease file `{}`: {e}", path.display()))
        .with_code("bai::agent::lease_file")
}

/// Takes the lease, or says who holds it and since when.
pub fn acquire(dir: &Path, cluster: &str, node: &str, holder: &str, now_unix: u64) -> Result<Lease, RpcError> {
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let path = dir.join(format!("{cluster}.lock"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| failed(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.take(4096).read_to_string(&mut text);
            let who = describe_holder(&text);
            return Err(RpcError::new(
                ErrorKind::LeaseHeld,
                format!("node `{node}`: cluster `{cluster}` is being applied by {who}; wait for it to finish"),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(failed(&path, e)),
    }
    let head = format!("{holder} since {}\nagent pid {}", format_utc(now_unix), std::process::id());
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(head.as_bytes()))
        .map_err(|e| failed(&path, e))?;
    Ok(Lease { file, head })
}

/// `2026-11-24 21:07:47 UTC`.
pub fn format_utc(unix: u64) -> String {
    crate::utc::Utc::from_unix(unix).human()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = acquire(tmp.path(), "lab", "gpu-01", "alice@ws pid 1", 1_764_018_467).expect("free");
        let err = acquire(tmp.path(), "lab", "gpu-01", "bob@ws pid 2", 1_764_018_500).expect_err("held");
        assert_eq!(err.kind, ErrorKind::LeaseHeld);
        assert!(err.message.contains("alice@ws pid 1 since 2025-11-24 21:07:47 UTC"), "{}", err.message);
        assert!(err.message.contains("it is still connected"), "{}", err.message);
        // Another cluster on the same node is independent.
        let _other = acquire(tmp.path(), "other", "gpu-01", "bob@ws pid 2", 0).expect("other cluster");
        drop(first);
        acquire(tmp.path(), "lab", "gpu-01", "bob@ws pid 2", 0).expect("released");
    }

    #[test]
    fn the_refusal_says_what_the_holder_is_doing_and_whether_it_is_there() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut held = acquire(tmp.path(), "lab", "gpu-01", "alice@ws pid 1", 0).expect("free");
        held.doing("ensure_image `box`", 60);
        let err = acquire(tmp.path(), "lab", "gpu-01", "bob@ws pid 2", 0).expect_err("held");
        let me = std::process::id();
        assert!(
            err.message.contains(&format!(
                "alice@ws pid 1 since 1970-01-01 00:00:00 UTC; it is still connected (its agent, pid {me} on this node, \
                 is running: ensure_image `box` since 1970-01-01 00:01:00 UTC)"
            )),
            "{}",
            err.message
        );
        let gone = describe_holder("carol@ws pid 3 since then\nagent pid 4000000000\n");
        assert!(gone.contains("has just ended"), "{gone}");
        assert_eq!(describe_holder(""), "another controller");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
