//! The agent as it crosses the wire: gzip-compressed (a release agent of 16 MB travels as 6.5 MB; `gzip`
//! is on every node bai targets, busybox's included), made once per binary and kept in the controller's
//! cache, `$XDG_CACHE_HOME/bai/agents/<sha256>.gz` (else `~/.cache/…`). Compressing takes most of a second
//! for a release binary and several for a debug one: an apply reaching 50 new nodes, or a test suite
//! starting hundreds of labs, pays it once. The node hashes what it unpacks against the binary's own
//! SHA-256 as before, so a damaged cache entry is refused there, never installed; the controller then
//! drops the entry.

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use flate2::Compression;
use flate2::write::GzEncoder;

/// The gzip level: 6 (gzip's default) makes a release agent 6.5 MB in under a second; 9 saves 1 % more
/// for three times the time.
const LEVEL: u32 = 6;

/// Where the compressed agent for `sha256` is kept; `None` without a home to keep it in.
fn cache_file(sha256: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("bai").join("agents").join(format!("{sha256}.gz")))
}

/// The gzip of `binary` (whose SHA-256 is `sha256`, 64 hex digits computed by the caller), from the cache
/// or made now. `None` when it can be neither read nor made (no home, a read-only cache): the caller
/// uploads the binary as it is.
pub(super) fn compressed(binary: &Path, sha256: &str) -> Option<PathBuf> {
    // Held while compressing: an apply installs on every node at once, and all but the first wait for
    // its result rather than compressing the same file again.
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _held = LOCK.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    let file = cache_file(sha256)?;
    if std::fs::metadata(&file).is_ok_and(|m| m.is_file() && m.len() > 0) {
        return Some(file);
    }
    make(binary, &file).ok()?;
    Some(file)
}

/// Drops the cache entry for `sha256`: the node found that what it unpacked hashed wrong.
pub(super) fn forget(sha256: &str) {
    if let Some(file) = cache_file(sha256) {
        let _ = std::fs::remove_file(file);
    }
}

/// Compresses `binary` into `file`, under a name of this process's first and renamed into place, so a
/// reader (another bai at the same time) sees a whole file or none.
fn make(binary: &Path, file: &Path) -> std::io::Result<()> {
    let dir = file.parent().ok_or_else(|| std::io::Error::other("a cache file has a directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    let written = (|| {
        let mut input = std::fs::File::open(binary)?;
        let mut encoder = GzEncoder::new(BufWriter::new(std::fs::File::create(&tmp)?), Compression::new(LEVEL));
        std::io::copy(&mut input, &mut encoder)?;
        encoder.finish()?.flush()
    })();
    match written.and_then(|()| std::fs::rename(&tmp, file)) {
        Ok(()) => {
            prune(dir);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Entries kept: every build of bai is a new agent, and each would otherwise stay for good.
const KEPT: usize = 4;

/// Removes all but the [`KEPT`] newest entries.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut kept: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".gz")))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    kept.sort_by_key(|k| std::cmp::Reverse(k.0));
    for (_, old) in kept.iter().skip(KEPT) {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn a_binary_is_compressed_once_and_unpacks_to_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("bai");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&binary, &content).expect("write");
        let file = dir.path().join("cache/bai/agents/abc.gz");
        make(&binary, &file).expect("compressed");
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&file).expect("open"))
            .read_to_end(&mut unpacked)
            .expect("gunzip");
        assert_eq!(unpacked, content);
        assert!(std::fs::metadata(&file).expect("kept").len() < content.len() as u64 / 10);
        let leftovers: Vec<_> = std::fs::read_dir(file.parent().expect("dir")).expect("ls").flatten().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        // Only the newest few are kept.
        for i in 0..KEPT + 2 {
            let entry = dir.path().join(format!("cache/bai/agents/{i}.gz"));
            make(&binary, &entry).expect("compressed");
            // File times tick coarsely: each entry gets a second of its own.
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
            std::fs::File::options().append(true).open(&entry).and_then(|f| f.set_modified(at)).expect("touch");
        }
        assert_eq!(std::fs::read_dir(file.parent().expect("dir")).expect("ls").count(), KEPT);
        assert!(file.parent().expect("dir").join(format!("{}.gz", KEPT + 1)).exists(), "the newest is kept");
        // A binary that cannot be read leaves nothing behind.
        assert!(make(&dir.path().join("missing"), &dir.path().join("cache/x.gz")).is_err());
        assert!(!dir.path().join("cache/x.gz").exists());
    }
}
