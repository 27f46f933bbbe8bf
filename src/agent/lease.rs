//! The apply lease: one controller at a time per cluster on a node.
//!
//! An exclusive `flock` on `leases/<cluster>.lock`, held by the agent process for as long as its
//! controller is connected. The kernel drops it when the process ends — the controller closing the
//! connection, or being killed outright, ends the agent (its stdin closes) — so a lease can never be
//! left behind. The holder and the time it was taken are written into the file for the refusal message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::protocol::{ErrorKind, RpcError};

/// A held lease; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

fn failed(path: &Path, e: std::io::Error) -> RpcError {
    RpcError::new(ErrorKind::Failed, format!("cannot use the lease file `{}`: {e}", path.display()))
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
            let mut who = String::new();
            let _ = file.read_to_string(&mut who);
            let who = who.trim();
            let who = if who.is_empty() { "another controller" } else { who };
            return Err(RpcError::new(
                ErrorKind::LeaseHeld,
                format!("node `{node}`: cluster `{cluster}` is being applied by {who}; wait for it to finish"),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(failed(&path, e)),
    }
    let line = format!("{holder} since {}", format_utc(now_unix));
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(line.as_bytes()))
        .map_err(|e| failed(&path, e))?;
    Ok(Lease { _file: file })
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
        // Another cluster on the same node is independent.
        let _other = acquire(tmp.path(), "other", "gpu-01", "bob@ws pid 2", 0).expect("other cluster");
        drop(first);
        acquire(tmp.path(), "lab", "gpu-01", "bob@ws pid 2", 0).expect("released");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
