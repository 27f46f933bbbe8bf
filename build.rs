//! Stamps the build with an identity of its sources (`BAI_BUILD_ID`), so that `bai` can tell whether the
//! `bai-agent` beside it was built from the same tree (src/agent/binary.rs): cargo relinks only the
//! binaries a command names, and an agent left from an older build must never be installed as this one.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

fn main() {
    // A directory: cargo looks at every file under it.
    for watched in ["src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={watched}");
    }
    let mut files = Vec::new();
    collect(Path::new("src"), &mut files);
    files.extend(["Cargo.toml", "Cargo.lock", "build.rs"].map(PathBuf::from));
    files.sort();
    // Not a cryptographic identity, only a way to tell two builds apart: SipHash of every source file.
    let mut hasher = DefaultHasher::new();
    for file in &files {
        file.hash(&mut hasher);
        std::fs::read(file).unwrap_or_default().hash(&mut hasher);
    }
    println!("cargo:rustc-env=BAI_BUILD_ID={:016x}", hasher.finish());
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect(&path, files),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
}
