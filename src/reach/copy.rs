//! `bai cp`: files and folders between this machine and a session, as tar archives the way `docker cp`
//! moves them (the engine reads and writes the container's side).
//!
//! What comes out of a session is untrusted: it may hold links, `..`, absolute names, devices, or a link
//! planted first and a file written "through" it next (the class of docker cp's CVE-2018-15664 and
//! CVE-2019-14271). [`extract`] therefore writes nothing outside the destination: names must be plain
//! relative paths; no file is ever written through a symbolic link (every directory on the way is looked
//! at without following links, an existing link in a file's place is replaced, not followed); hard links
//! may only join files the archive itself put under the destination; devices and FIFOs are skipped;
//! set-user and set-group bits are dropped. Symbolic links themselves are made as they are, as `docker
//! cp` makes them: they are data, never followed here.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// How an archive's first name maps to the destination: kept (extracted into an existing directory),
/// or renamed (the destination is the copy's new name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placing {
    /// Extract into this existing directory; names as in the archive.
    Into(PathBuf),
    /// Extract into `dir`, the archive's top-level name replaced by `name`.
    Renamed { dir: PathBuf, name: String },
}

impl Placing {
    /// Where a copy to `dest` goes on this machine: into `dest` when it is a directory (not a link to
    /// one), else `dest` is the new name, in its parent directory.
    pub fn local(dest: &Path) -> Result<Placing, String> {
        match std::fs::symlink_metadata(dest) {
            Ok(meta) if meta.is_dir() => Ok(Placing::Into(dest.to_path_buf())),
            Ok(meta) if meta.file_type().is_symlink() => {
                Err(format!("{} is a symbolic link; name a directory or a new path", dest.display()))
            }
            _ => {
                let name = dest
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| format!("{} has no file name to copy to", dest.display()))?;
                let dir = match dest.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                if !dir.is_dir() {
                    return Err(format!("{} is not a directory", dir.display()));
                }
                Ok(Placing::Renamed { dir, name: name.to_string() })
            }
        }
    }
}

/// What [`extract`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Names of entries not made (devices, FIFOs), escaped for printing.
    pub skipped: Vec<String>,
}

/// Extracts an untrusted tar archive as [`Placing`] says, refusing (and stopping at) the first entry that
/// would write outside the destination.
pub fn extract(archive: impl Read, placing: &Placing) -> Result<Extracted, String> {
    let (base, rename) = match placing {
        Placing::Into(dir) => (dir.clone(), None),
        Placing::Renamed { dir, name } => (dir.clone(), Some(name.as_str())),
    };
    let mut archive = tar::Archive::new(archive);
    let mut done = Extracted::default();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let entries = archive.entries().map_err(|e| format!("the archive cannot be read: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("the archive cannot be read: {e}"))?;
        let raw = entry.path_bytes().into_owned();
        let shown = crate::untrusted::escape(&String::from_utf8_lossy(&raw)).into_owned();
        let Some(relative) = plain(&raw, rename) else {
            return Err(format!(
                "the archive names `{shown}`, which is not a plain relative path: nothing past it was written"
            ));
        };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let dest = base.join(&relative);
        no_links_on_the_way(&base, &relative).map_err(|why| format!("`{shown}`: {why}"))?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o1777;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                match std::fs::symlink_metadata(&dest) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => return Err(format!("`{shown}`: a directory in the archive where a file is")),
                    Err(_) => std::fs::create_dir(&dest).map_err(|e| format!("cannot make {}: {e}", dest.display()))?,
                }
                // Modes of directories are set at the end: a read-only one would refuse its own entries.
                dir_modes.push((dest, mode));
                done.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut file = open_for_writing(&dest).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
                let bytes = std::io::copy(&mut entry, &mut file)
                    .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("cannot set the mode of {}: {e}", dest.display()))?;
                if let Ok(mtime) = entry.header().mtime() {
                    let _ = file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
                }
                done.files += 1;
                done.bytes += bytes;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                remove_non_dir(&dest)?;
                let target: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(&target);
                std::os::unix::fs::symlink(target, &dest)
                    .map_err(|e| format!("cannot make the link {}: {e}", dest.display()))?;
                done.links += 1;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let target_shown = crate::untrusted::escape(&String::from_utf8_lossy(&target)).into_owned();
                let Some(target_rel) = plain(&target, rename) else {
                    return Err(format!("`{shown}` links to `{target_shown}`, outside what is copied"));
                };
                no_links_on_the_way(&base, &target_rel).map_err(|why| format!("`{shown}`: {why}"))?;
                let source = base.join(&target_rel);
                match std::fs::symlink_metadata(&source) {
                    Ok(meta) if meta.is_file() => {}
                    _ => return Err(format!("`{shown}` links to `{target_shown}`, which the archive did not write")),
                }
                remove_non_dir(&dest)?;
                std::fs::hard_link(&source, &dest).map_err(|e| format!("cannot link {}: {e}", dest.display()))?;
                done.files += 1;
            }
            _ => done.skipped.push(shown),
        }
    }
    // Deepest first, so that a read-only parent is set after its children.
    dir_modes.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (dir, mode) in dir_modes {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
    }
    Ok(done)
}

/// An archive name as a relative path of plain components, its first component replaced by `rename`;
/// `None` for anything else (`..`, an absolute name, an empty component after the first).
fn plain(raw: &[u8], rename: Option<&str>) -> Option<PathBuf> {
    let path = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(raw));
    let mut out = PathBuf::new();
    for (i, component) in path.components().enumerate() {
        match component {
            Component::Normal(part) if i == 0 => match rename {
                Some(name) => out.push(name),
                None => out.push(part),
            },
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Refuses a path whose directories under `base` include a symbolic link (or anything but directories):
/// writing there would land wherever the link points.
fn no_links_on_the_way(base: &Path, relative: &Path) -> Result<(), String> {
    let mut at = base.to_path_buf();
    let parents: Vec<_> = relative.components().collect();
    for component in parents.iter().take(parents.len().saturating_sub(1)) {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err("it would be written through a symbolic link; nothing past it was written".into());
            }
            Ok(_) => return Err(format!("{} is not a directory", at.display())),
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    Ok(())
}

/// Opens a file to write it, never through a link: a link in its place is removed first, and the open
/// itself refuses to follow one.
fn open_for_writing(dest: &Path) -> std::io::Result<std::fs::File> {
    if let Ok(meta) = std::fs::symlink_metadata(dest) {
        if meta.file_type().is_symlink() {
            std::fs::remove_file(dest)?;
        } else if meta.is_dir() {
            return Err(std::io::Error::other("a directory is there"));
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
}

/// Makes room for a link: what is there (a file or a link, never a directory) goes.
fn remove_non_dir(dest: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => Err(format!("{} is a directory", dest.display())),
        Ok(_) => std::fs::remove_file(dest).map_err(|e| format!("cannot replace {}: {e}", dest.display())),
        Err(_) => Ok(()),
    }
}

/// A tar archive of `src` (a file, a directory, or a link, which is archived as a link), its top-level
/// name `name`, written to `out`. Links inside are archived as links, never followed.
pub fn pack(src: &Path, name: &str, out: impl std::io::Write) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let result =
        if meta.is_dir() { builder.append_dir_all(name, src) } else { builder.append_path_with_name(src, name) };
    result.and_then(|()| builder.finish()).map_err(|e| format!("cannot archive {}: {e}", src.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive built entry by entry, as a hostile session could.
    fn archive(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o4755 });
            header.set_size(data.len() as u64);
            // Names are set raw: `set_path` itself refuses `..`, which a hostile archive does not.
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            if let Some(link) = link {
                let l = link.as_bytes();
                header.as_old_mut().linkname[..l.len()].copy_from_slice(l);
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_plain_tree_is_extracted_with_its_modes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = archive(&[
            ("tree/", tar::EntryType::Directory, b"", None),
            ("tree/a.txt", tar::EntryType::Regular, b"hello", None),
            ("tree/link", tar::EntryType::Symlink, b"", Some("a.txt")),
            ("tree/hard", tar::EntryType::Link, b"", Some("tree/a.txt")),
        ]);
        let done = extract(&bytes[..], &Placing::Into(dir.path().to_path_buf())).unwrap();
        assert_eq!((done.files, done.dirs, done.links, done.bytes), (2, 1, 1, 5));
        let a = dir.path().join("tree/a.txt");
        assert_eq!(std::fs::read(&a).unwrap(), b"hello");
        // Set-user bits are dropped; the rest of the mode is kept.
        assert_eq!(std::fs::metadata(&a).unwrap().permissions().mode() & 0o7777, 0o755);
        assert_eq!(std::fs::read_link(dir.path().join("tree/link")).unwrap(), Path::new("a.txt"));
        assert_eq!(std::fs::read(dir.path().join("tree/hard")).unwrap(), b"hello");
    }

    #[test]
    fn a_rename_replaces_the_top_level_name() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = archive(&[
            ("data/", tar::EntryType::Directory, b"", None),
            ("data/x", tar::EntryType::Regular, b"1", None),
        ]);
        extract(&bytes[..], &Placing::Renamed { dir: dir.path().to_path_buf(), name: "copy".into() }).unwrap();
        assert_eq!(std::fs::read(dir.path().join("copy/x")).unwrap(), b"1");
    }

    #[test]
    fn nothing_is_written_outside_the_destination() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"safe").unwrap();
        let hostile: Vec<Vec<u8>> = vec![
            archive(&[("../escape", tar::EntryType::Regular, b"x", None)]),
            archive(&[("/abs", tar::EntryType::Regular, b"x", None)]),
            // A link to a directory outside, then a file through it.
            archive(&[
                ("d/", tar::EntryType::Directory, b"", None),
                ("d/out", tar::EntryType::Symlink, b"", Some(outside.path().to_str().unwrap())),
                ("d/out/victim", tar::EntryType::Regular, b"owned", None),
            ]),
            // A hard link to a file outside.
            archive(&[("h", tar::EntryType::Link, b"", Some(victim.to_str().unwrap()))]),
            archive(&[("h", tar::EntryType::Link, b"", Some("../victim"))]),
        ];
        for (i, bytes) in hostile.iter().enumerate() {
            let dest = tempfile::tempdir().unwrap();
            let result = extract(&bytes[..], &Placing::Into(dest.path().to_path_buf()));
            assert!(result.is_err(), "archive {i} was accepted: {result:?}");
            assert_eq!(std::fs::read(&victim).unwrap(), b"safe", "archive {i}");
        }
    }

    #[test]
    fn a_link_in_a_files_place_is_replaced_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"safe").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let bytes = archive(&[
            ("f", tar::EntryType::Symlink, b"", Some(victim.to_str().unwrap())),
            ("f", tar::EntryType::Regular, b"data", None),
        ]);
        extract(&bytes[..], &Placing::Into(dest.path().to_path_buf())).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"safe");
        assert!(std::fs::symlink_metadata(dest.path().join("f")).unwrap().is_file());
        assert_eq!(std::fs::read(dest.path().join("f")).unwrap(), b"data");
    }

    #[test]
    fn fifos_and_devices_are_skipped() {
        let dest = tempfile::tempdir().unwrap();
        let bytes = archive(&[("p", tar::EntryType::Fifo, b"", None), ("c", tar::EntryType::Char, b"", None)]);
        let done = extract(&bytes[..], &Placing::Into(dest.path().to_path_buf())).unwrap();
        assert_eq!(done.skipped, vec!["p".to_string(), "c".to_string()]);
        assert!(std::fs::read_dir(dest.path()).unwrap().next().is_none());
    }

    #[test]
    fn pack_and_extract_round_trip() {
        let src = tempfile::tempdir().unwrap();
        let tree = src.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/f"), b"content").unwrap();
        std::fs::set_permissions(tree.join("sub/f"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("sub/f", tree.join("l")).unwrap();
        let mut bytes = Vec::new();
        pack(&tree, "tree", &mut bytes).unwrap();
        let dest = tempfile::tempdir().unwrap();
        extract(&bytes[..], &Placing::Into(dest.path().to_path_buf())).unwrap();
        assert_eq!(std::fs::read(dest.path().join("tree/sub/f")).unwrap(), b"content");
        assert_eq!(std::fs::metadata(dest.path().join("tree/sub/f")).unwrap().permissions().mode() & 0o777, 0o750);
        assert_eq!(std::fs::read_link(dest.path().join("tree/l")).unwrap(), Path::new("sub/f"));
    }

    #[test]
    fn local_placing_follows_docker_cp() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Placing::local(dir.path()), Ok(Placing::Into(dir.path().to_path_buf())));
        assert_eq!(
            Placing::local(&dir.path().join("new")),
            Ok(Placing::Renamed { dir: dir.path().to_path_buf(), name: "new".into() })
        );
        assert!(Placing::local(&dir.path().join("absent/new")).is_err());
    }
}
