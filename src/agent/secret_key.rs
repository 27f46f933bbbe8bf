//! The node's secret key for a cluster: 32 random bytes at `state/<cluster>/secret-key` under the agent's
//! home, mode 0600, under which the controller digests secret values ([`crate::secret`]).
//!
//! It lives on the node so that the digests shown in plans, status and labels cannot be brute-forced by
//! whoever reads them, while every controller that reaches the node computes the same digests. It is
//! created on first use by a controller holding the apply lease, read (never created) by `status` and
//! `watch`, which must not change a node; it is never printed and crosses the wire only in the reply to
//! `secret_key`. It goes with the rest of the cluster's state when the node leaves the cluster.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::agent::home::Home;
use crate::protocol::{ErrorKind, RpcError};
use crate::state::spec::hex_digest;

/// Bytes of key: as long as the HMAC-SHA256 output, more than any brute force reaches.
pub const KEY_LEN: usize = 32;

const FILE: &str = "secret-key";

pub fn path(home: &Home, cluster: &str) -> PathBuf {
    home.cluster_state(cluster).join(FILE)
}

fn failed(path: &Path, e: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorKind::Failed, format!("cannot use the secret key `{}`: {e}", path.display()))
        .with_code("bai::agent::secret_key")
}

/// The cluster's key in hex; with `create`, made first when there is none. `None` when there is none
/// and `create` is off.
pub fn key(home: &Home, cluster: &str, create: bool) -> Result<Option<String>, RpcError> {
    let file = path(home, cluster);
    match read(&file) {
        Ok(key) => return Ok(Some(hex_digest(&key))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(&file, e)),
    }
    let dir = home.cluster_state(cluster);
    std::fs::create_dir_all(&dir).map_err(|e| failed(&dir, e))?;
    let mut key = [0u8; KEY_LEN];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)).map_err(|e| failed(&file, e))?;
    // Written whole to a file of this process, then linked into place: a second agent making a key at
    // the same moment either wins or reads the winner's, and nobody reads half a key.
    let tmp = dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    let written = write_private(&tmp, &key);
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, &file));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed(&file, e)),
    }
    read(&file).map(|k| Some(hex_digest(&k))).map_err(|e| failed(&file, e))
}

fn write_private(path: &Path, key: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(key)?;
    f.sync_all()
}

fn read(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    let bytes = std::fs::read(path)?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("it is not {KEY_LEN} bytes long")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path(), dir.path());
        assert_eq!(key(&home, "lab", false).ok(), Some(None), "reading never creates");
        let first = key(&home, "lab", true).ok().flatten().expect("created");
        assert_eq!(first.len(), KEY_LEN * 2);
        assert_eq!(key(&home, "lab", false).ok().flatten().as_deref(), Some(first.as_str()));
        assert_eq!(key(&home, "lab", true).ok().flatten().as_deref(), Some(first.as_str()));
        let other = key(&home, "other", true).ok().flatten().expect("created");
        assert_ne!(first, other, "one key per cluster");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(&home, "lab")).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(home.cluster_state("lab")).expect("dir").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn a_damaged_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path(), dir.path());
        std::fs::create_dir_all(home.cluster_state("lab")).expect("mkdir");
        std::fs::write(path(&home, "lab"), b"short").expect("write");
        let err = key(&home, "lab", true).expect_err("refused");
        assert!(err.message.contains("32 bytes"), "{}", err.message);
    }
}
