//! Build contexts packed for upload: a tar of the directory with sorted entries and zeroed times and
//! owners, so the same files always give the same bytes and the same sha256 (the node then skips an
//! upload it already has). Symbolic links are followed: a context may point at a file that lives
//! elsewhere on the controller (the quickstart links the machine's busybox) without copying it.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::state::spec::hex_digest;

/// The packed context and its sha256.
pub fn pack(dir: &Path) -> std::io::Result<(Vec<u8>, String)> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(true);
    add_dir(&mut builder, dir, Path::new(""))?;
    let bytes = builder.into_inner()?;
    let sha = hex_digest(&Sha256::digest(&bytes));
    Ok((bytes, sha))
}

fn add_dir(builder: &mut tar::Builder<Vec<u8>>, base: &Path, rel: &Path) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(base.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel_path = rel.join(entry.file_name());
        // `metadata` follows links, so a link to a directory is packed as that directory.
        let kind = std::fs::metadata(entry.path())?.file_type();
        if kind.is_dir() {
            builder.append_dir(&rel_path, entry.path())?;
            add_dir(builder, base, &rel_path)?;
        } else {
            builder.append_path_with_name(entry.path(), &rel_path)?;
        }
    }
    Ok(())
}

/// The sha256 of a file (an image archive), streamed.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex_digest(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_deterministic() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/a.txt"), "a").expect("write");
        let (bytes, sha) = pack(dir.path()).expect("packed");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(dir.path().join("sub/a.txt"), "a").expect("rewrite, new mtime");
        let (again, sha2) = pack(dir.path()).expect("packed");
        assert_eq!(sha, sha2);
        assert_eq!(bytes, again);
        std::fs::write(dir.path().join("sub/a.txt"), "b").expect("change");
        assert_ne!(pack(dir.path()).expect("packed").1, sha);
    }
}
