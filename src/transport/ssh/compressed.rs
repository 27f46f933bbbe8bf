//! The agent as it crosses the wire to a node whose ssh_config says `Compression yes` (else it crosses as
//! it is: `install`'s module doc says why): compressed with zstd where the node has `zstd`, else with gzip (on
//! every node bai targets, busybox's included), made once per binary and codec and kept in the
//! controller's cache, `$XDG_CACHE_HOME/bai/agents/<sha256>.zst|.gz` (else `~/.cache/…`). A 2.5 MB release
//! agent crosses as 0.92 MB of zstd or 1.1 MB of gzip; the node unpacks zstd in a third of gzip's time
//! (gzip's unpacking was a third of what a node's install cost). Compressing takes a second or
//! so: an apply reaching 50 new nodes, or a test suite starting hundreds of labs, pays it once. A kept entry
//! this process did not make is unpacked and hashed against the binary's SHA-256 before it first crosses
//! (a damaged one is made afresh): a fresh node runs what it unpacks before that checks itself. The node
//! hashes what it unpacks too, so nothing damaged on the way is ever installed; when an install fails, the
//! controller drops the entry.

use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use flate2::Compression;
use flate2::write::GzEncoder;

/// How the agent is packed for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    Zstd,
    Gzip,
}

impl Codec {
    /// The best the node can unpack, from what its shell found (`zstd`, `gzip`); `None`: neither.
    pub(super) fn for_node(zstd: bool, gzip: bool) -> Option<Codec> {
        if zstd {
            Some(Codec::Zstd)
        } else if gzip {
            Some(Codec::Gzip)
        } else {
            None
        }
    }

    /// The word that names it to the node's shell (a fixed string).
    pub(super) fn word(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
        }
    }

    /// The node's command that unpacks stdin to stdout (a fixed string).
    pub(super) fn unpack(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd -dcq",
            Codec::Gzip => "gzip -dc",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Codec::Zstd => "zst",
            Codec::Gzip => "gz",
        }
    }

    /// Compresses `input` into `output`.
    fn write(self, input: &mut std::fs::File, output: std::fs::File, size: u64) -> std::io::Result<()> {
        let output = BufWriter::new(output);
        match self {
            Codec::Zstd => {
                // Level 19 packs a release agent a sixth tighter than level 3 in about a second, once per
                // build; a debug build (tens of MB, made by every test run) takes the fast level.
                let level = if size <= 16_000_000 { 19 } else { 3 };
                let mut encoder = zstd::stream::write::Encoder::new(output, level)?;
                encoder.include_checksum(true)?;
                std::io::copy(input, &mut encoder)?;
                encoder.finish()?.flush()
            }
            Codec::Gzip => {
                // 6 (gzip's default): 9 saves 1 % more for three times the time.
                let mut encoder = GzEncoder::new(output, Compression::new(6));
                std::io::copy(input, &mut encoder)?;
                encoder.finish()?.flush()
            }
        }
    }
}

/// Where the compressed agent for `sha256` is kept; `None` without a home to keep it in.
fn cache_file(sha256: &str, codec: Codec) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("bai").join("agents").join(format!("{sha256}.{}", codec.extension())))
}

/// `binary` (whose SHA-256 is `sha256`, 64 hex digits computed by the caller) packed with `codec`, from
/// the cache or made now. `None` when it can be neither read nor made (no home, a read-only cache): the
/// caller uploads the binary as it is.
pub(super) fn compressed(binary: &Path, sha256: &str, codec: Codec) -> Option<PathBuf> {
    // Held while compressing: an apply installs on every node at once, and all but the first wait for
    // its result rather than compressing the same file again.
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _held = LOCK.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    let file = cache_file(sha256, codec)?;
    if std::fs::metadata(&file).is_ok_and(|m| m.is_file() && m.len() > 0) {
        let size = std::fs::metadata(binary).ok()?.len();
        if checked(&file, sha256, codec, size) {
            return Some(file);
        }
        let _ = std::fs::remove_file(&file);
    }
    make(binary, &file, codec).ok()?;
    remember(&file);
    Some(file)
}

/// A kept entry as this process knows it: path, size and modification time.
type EntryKey = (PathBuf, u64, std::time::SystemTime);

fn entry_key(file: &Path) -> Option<EntryKey> {
    let metadata = std::fs::metadata(file).ok()?;
    Some((file.to_owned(), metadata.len(), metadata.modified().ok()?))
}

/// The entries this process made or checked.
fn known() -> &'static Mutex<std::collections::HashSet<EntryKey>> {
    static KNOWN: OnceLock<Mutex<std::collections::HashSet<EntryKey>>> = OnceLock::new();
    KNOWN.get_or_init(Mutex::default)
}

fn remember(file: &Path) {
    if let Some(key) = entry_key(file) {
        known().lock().unwrap_or_else(PoisonError::into_inner).insert(key);
    }
}

/// Whether the kept `file` unpacks to the binary of `size` bytes whose SHA-256 is `sha256`: what crosses
/// is run on the node before it hashes itself ([`crate::agent::place`]), so an entry this process did not
/// make is unpacked and hashed here first, once per process (a release agent: about 15 ms), and never
/// past one byte more than the binary.
fn checked(file: &Path, sha256: &str, codec: Codec, size: u64) -> bool {
    use sha2::Digest as _;
    let Some(key) = entry_key(file) else { return false };
    if known().lock().unwrap_or_else(PoisonError::into_inner).contains(&key) {
        return true;
    }
    let hashed = (|| {
        let input = std::io::BufReader::new(std::fs::File::open(file)?);
        let mut hasher = sha2::Sha256::new();
        match codec {
            Codec::Zstd => {
                std::io::copy(&mut zstd::stream::read::Decoder::with_buffer(input)?.take(size + 1), &mut hasher)?
            }
            Codec::Gzip => std::io::copy(&mut flate2::bufread::GzDecoder::new(input).take(size + 1), &mut hasher)?,
        };
        Ok::<_, std::io::Error>(crate::state::spec::hex_digest(&hasher.finalize()))
    })();
    let right = hashed.is_ok_and(|h| h == sha256);
    if right {
        known().lock().unwrap_or_else(PoisonError::into_inner).insert(key);
    }
    right
}

/// Drops the cache entry for `sha256` and `codec`: the node could not install what crossed.
pub(super) fn forget(sha256: &str, codec: Codec) {
    if let Some(file) = cache_file(sha256, codec) {
        let _ = std::fs::remove_file(file);
    }
}

/// Compresses `binary` into `file`, under a name of this process's first and renamed into place, so a
/// reader (another bai at the same time) sees a whole file or none.
fn make(binary: &Path, file: &Path, codec: Codec) -> std::io::Result<()> {
    let dir = file.parent().ok_or_else(|| std::io::Error::other("a cache file has a directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    let written = (|| {
        let mut input = std::fs::File::open(binary)?;
        let size = input.metadata()?.len();
        codec.write(&mut input, std::fs::File::create(&tmp)?, size)
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

/// Removes all but the [`KEPT`] newest entries of each codec.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let entries: Vec<_> = entries.flatten().collect();
    for codec in [Codec::Zstd, Codec::Gzip] {
        let suffix = format!(".{}", codec.extension());
        let mut kept: Vec<(std::time::SystemTime, PathBuf)> = entries
            .iter()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        kept.sort_by_key(|k| std::cmp::Reverse(k.0));
        for (_, old) in kept.iter().skip(KEPT) {
            let _ = std::fs::remove_file(old);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn unpacked(file: &Path, codec: Codec) -> Vec<u8> {
        let input = std::fs::File::open(file).expect("open");
        let mut out = Vec::new();
        match codec {
            Codec::Gzip => flate2::read::GzDecoder::new(input).read_to_end(&mut out).expect("gunzip"),
            Codec::Zstd => {
                zstd::stream::read::Decoder::new(input).expect("zstd").read_to_end(&mut out).expect("unzstd")
            }
        };
        out
    }

    /// A directory holding `bai`, `len` bytes that compress well.
    fn a_binary(len: u32) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("bai");
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&binary, &content).expect("write");
        (dir, binary, content)
    }

    #[test]
    fn a_binary_is_compressed_once_per_codec_and_unpacks_to_itself() {
        let (dir, binary, content) = a_binary(300_000);
        for codec in [Codec::Zstd, Codec::Gzip] {
            let file = dir.path().join(format!("cache/bai/agents/abc.{}", codec.extension()));
            make(&binary, &file, codec).expect("compressed");
            assert_eq!(unpacked(&file, codec), content, "{codec:?}");
            assert!(std::fs::metadata(&file).expect("kept").len() < content.len() as u64 / 10);
        }
        let cache = dir.path().join("cache/bai/agents");
        let leftovers: Vec<_> = std::fs::read_dir(&cache).expect("ls").flatten().collect();
        assert_eq!(leftovers.len(), 2, "no temporary file left behind");
        // Only the newest few of each codec are kept.
        for i in 0..KEPT + 2 {
            let entry = cache.join(format!("{i}.gz"));
            make(&binary, &entry, Codec::Gzip).expect("compressed");
            // File times tick coarsely: each entry gets a second of its own.
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
            std::fs::File::options().append(true).open(&entry).and_then(|f| f.set_modified(at)).expect("touch");
        }
        let names: Vec<String> = std::fs::read_dir(&cache)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.iter().filter(|n| n.ends_with(".gz")).count(), KEPT, "{names:?}");
        assert!(names.contains(&"abc.zst".to_owned()), "another codec's entry is not pruned: {names:?}");
        assert!(cache.join(format!("{}.gz", KEPT + 1)).exists(), "the newest is kept");
        // A binary that cannot be read leaves nothing behind.
        assert!(make(&dir.path().join("missing"), &dir.path().join("cache/x.gz"), Codec::Gzip).is_err());
        assert!(!dir.path().join("cache/x.gz").exists());
    }

    #[test]
    fn a_kept_entry_crosses_only_when_it_unpacks_to_the_binary() {
        use sha2::Digest as _;
        let (dir, binary, content) = a_binary(200_000);
        let sha256 = crate::state::spec::hex_digest(&sha2::Sha256::digest(&content));
        let size = content.len() as u64;
        for codec in [Codec::Zstd, Codec::Gzip] {
            let file = dir.path().join(format!("entry.{}", codec.extension()));
            make(&binary, &file, codec).expect("compressed");
            assert!(checked(&file, &sha256, codec, size), "{codec:?}: made from the binary");
            // Another content (one byte more, then a different one) under the same name: refused.
            for other in [[content.as_slice(), b"x"].concat(), content.iter().map(|b| b ^ 1).collect()] {
                let source = dir.path().join("other");
                std::fs::write(&source, &other).expect("write");
                make(&source, &file, codec).expect("compressed");
                assert!(!checked(&file, &sha256, codec, size), "{codec:?}: {} bytes", other.len());
            }
            assert!(!checked(&dir.path().join("missing"), &sha256, codec, size), "{codec:?}: no entry");
        }
    }

    #[test]
    fn the_node_gets_zstd_where_it_has_it() {
        assert_eq!(Codec::for_node(true, true), Some(Codec::Zstd));
        assert_eq!(Codec::for_node(true, false), Some(Codec::Zstd));
        assert_eq!(Codec::for_node(false, true), Some(Codec::Gzip));
        assert_eq!(Codec::for_node(false, false), None);
    }
}
