//! An upload of the agent putting itself in place. On a fresh node the controller's upload is unpacked
//! under a temporary name (`.bai.upload.<pid>`) in its content-addressed directory
//! (`~/.local/share/bai/agent/<sha256>/`) and started from there with `--place <sha256>`: before it
//! says it is ready, it hashes its own file and only when that is the SHA-256 it was told renames it to
//! `bai`, the name the controller starts later; a copy that hashes otherwise is removed and the agent
//! ends. The node's shell so needs no hashing tool of its own, nor `mv`: OpenSSL's start-up alone was a
//! tenth of what an install cost the node (docs/performance.md).
//!
//! What runs before the check is what the controller sent over the SSH channel, unpacked by a tool that
//! checks the compressed frame's own checksum (zstd, gzip), from a kept copy the controller checked
//! against the binary's SHA-256 before sending it (`transport::ssh::compressed`).
//!
//! Only the running file itself is hashed and renamed: it is opened by name in its directory without
//! following a link, and must be the very file this process runs (same device and inode as
//! `/proc/self/exe`), named as an upload, in the directory named by the expected SHA-256.

use std::io::Read as _;
use std::path::Path;

use rustix::fd::AsFd as _;
use rustix::fs::{AtFlags, Mode, OFlags};
use sha2::{Digest as _, Sha256};

use crate::agent::installed::{AGENT, UPLOAD, is_sha256};

/// Why an upload did not put itself in place.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The running file is not an upload in the directory of the SHA-256 it was given.
    #[error("{0} is not an upload of the agent in its content-addressed directory")]
    NotAnUpload(String),
    /// It is not as large as the binary the controller sent.
    #[error("the uploaded copy is {found} bytes, not {expected}")]
    Size { found: u64, expected: u64 },
    /// It hashes to something else: removed.
    #[error("the uploaded copy hashes to {found}, not {expected}")]
    Hash { found: String, expected: String },
    /// Reading, renaming or removing it failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Hashes the running binary `exe` (an upload, see the module doc) and renames it to `bai` beside it when
/// it is `expected_size` bytes with SHA-256 `expected` (64 lowercase hex digits); else removes it.
pub fn place(exe: &Path, expected: &str, expected_size: Option<u64>) -> Result<(), PlaceError> {
    let io = |what| move |source: std::io::Error| PlaceError::Io { what, source };
    let not_an_upload = || PlaceError::NotAnUpload(exe.display().to_string());
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name().and_then(|n| n.to_str())) else {
        return Err(not_an_upload());
    };
    let dir_name = dir.file_name().and_then(|n| n.to_str());
    if !name.starts_with(UPLOAD) || dir_name != Some(expected) || !is_sha256(expected) {
        return Err(not_an_upload());
    }
    let dir_fd = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io("cannot open the agent's directory")(e.into()))?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = rustix::fs::openat(&dir_fd, name, flags, Mode::empty())
        .map_err(|e| io("cannot open the uploaded copy")(e.into()))?;
    let (stat, running) = (
        rustix::fs::fstat(&file).map_err(|e| io("cannot read the uploaded copy")(e.into()))?,
        rustix::fs::stat("/proc/self/exe").map_err(|e| io("cannot read /proc/self/exe")(e.into()))?,
    );
    if (stat.st_dev, stat.st_ino) != (running.st_dev, running.st_ino) {
        return Err(not_an_upload());
    }
    let remove = || rustix::fs::unlinkat(&dir_fd, name, AtFlags::empty());
    let found = stat.st_size as u64;
    if let Some(expected) = expected_size.filter(|&e| e != found) {
        let _ = remove();
        return Err(PlaceError::Size { found, expected });
    }
    let mut hasher = Sha256::new();
    let mut reader = std::fs::File::from(file);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = reader.read(&mut buf).map_err(io("cannot read the uploaded copy"))?;
        let Some(chunk) = buf.get(..n).filter(|chunk| !chunk.is_empty()) else { break };
        hasher.update(chunk);
    }
    let found = crate::state::spec::hex_digest(&hasher.finalize());
    if found != expected {
        let _ = remove();
        return Err(PlaceError::Hash { found, expected: expected.to_owned() });
    }
    rustix::fs::renameat(dir_fd.as_fd(), name, dir_fd.as_fd(), AGENT)
        .map_err(|e| io("cannot rename the uploaded copy into place")(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        crate::state::spec::hex_digest(&Sha256::digest(bytes))
    }

    /// A file laid out as an upload of `bytes`; the test process's own binary stands for the running one.
    fn upload(root: &Path, dir_name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = root.join(dir_name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(".bai.upload.1");
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn only_the_running_file_named_as_an_upload_in_its_directory_is_placed() {
        let root = tempfile::tempdir().expect("tempdir");
        let bytes = b"an agent".as_slice();
        let hash = sha(bytes);
        // Named right, but not the running binary: refused, and left alone.
        let path = upload(root.path(), &hash, bytes);
        assert!(matches!(place(&path, &hash, None), Err(PlaceError::NotAnUpload(_))));
        assert!(path.exists() && !path.with_file_name("bai").exists());
        // Not named as an upload, or in another directory: refused before anything is opened.
        let elsewhere = root.path().join(&hash).join("bai");
        assert!(matches!(place(&elsewhere, &hash, None), Err(PlaceError::NotAnUpload(_))));
        let wrong_dir = upload(root.path(), &sha(b"other"), bytes);
        assert!(matches!(place(&wrong_dir, &hash, None), Err(PlaceError::NotAnUpload(_))));
        assert!(matches!(place(&path, "not-a-hash", None), Err(PlaceError::NotAnUpload(_))));
    }

    #[test]
    fn the_running_binary_is_hashed_and_renamed_or_removed() {
        // The test binary, hard-linked as an upload: the same inode as /proc/self/exe. The directory sits
        // beside it so the link stays on its filesystem.
        let own = std::fs::read_link("/proc/self/exe").expect("own binary");
        let bytes = std::fs::read(&own).expect("read own binary");
        let (hash, size) = (sha(&bytes), bytes.len() as u64);
        let root = tempfile::tempdir_in(own.parent().expect("a directory")).expect("tempdir");
        let link = |dir_name: &str, name: &str| {
            let dir = root.path().join(dir_name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::hard_link(&own, dir.join(name)).expect("link");
            dir.join(name)
        };

        let path = link(&hash, ".bai.upload.1");
        assert!(matches!(place(&path, &hash, Some(size + 1)), Err(PlaceError::Size { .. })));
        assert!(!path.exists(), "a copy of another size is removed");

        let wrong = sha(b"something else");
        let path = link(&wrong, ".bai.upload.2");
        match place(&path, &wrong, Some(size)) {
            Err(PlaceError::Hash { found, expected }) => assert_eq!((found, expected), (hash.clone(), wrong)),
            other => panic!("{other:?}"),
        }
        assert!(!path.exists() && !path.with_file_name("bai").exists(), "a copy that hashes wrong is removed");

        let path = link(&hash, ".bai.upload.3");
        place(&path, &hash, Some(size)).expect("placed");
        assert!(!path.exists(), "renamed away");
        let placed = std::fs::metadata(path.with_file_name("bai")).expect("placed as bai");
        assert_eq!(placed.len(), size);
    }
}
