//! Vfolders on a node: directories under the node's vfolder root, each owned through bai's marker.
//!
//! Under the root `R`:
//! - `R/<name>/` is the vfolder. Sessions mount it, so whatever runs in one writes anything into it —
//!   symbolic links, FIFOs, device nodes, huge sparse files — and may swap them while bai looks.
//! - `R/.bai-markers/<name>.json` is bai's marker (cluster, name, permission, quota). It lives beside the
//!   vfolders, never in one: no session can rewrite, replace or plant it. Only the agent writes there.
//! - `R/.bai-tombstones/` holds removed vfolders that held data, moved aside rather than erased: data is
//!   only ever lost by hand.
//!
//! Names starting with `.bai` (in any case) are bai's own ([`is_reserved_vfolder_name`]): the agent
//! refuses them as vfolder names whatever the controller validated.
//!
//! Nothing inside a vfolder is followed, written or read without bounds. Every file operation goes
//! through directory handles: the vfolder directory is opened with `O_NOFOLLOW | O_DIRECTORY` relative
//! to the root's handle; emptiness is judged from names alone (nothing inside is opened or stat'ed); a
//! marker is written to a temporary file created with `O_CREAT | O_EXCL | O_NOFOLLOW` beside it and
//! renamed into place; a marker is read only when it is a regular file of at most [`MAX_MARKER`]
//! bytes, checked on an `O_PATH | O_NOFOLLOW` handle before it is opened for reading (opening a FIFO
//! would block, opening a device node can act on the device). `rustix` gives these calls safe
//! wrappers; it is in the tree already (through `tar`).
//!
//! Upgrades: an earlier bai kept the marker inside the vfolder (`R/<name>/.bai-vfolder.json`). Such a
//! vfolder is still recognised, its marker read with the same care; the first `ensure` (a quota or
//! permission change) writes the marker under `.bai-markers/` and removes the old one, and from then on
//! a file of that name in the vfolder is the session's own. Until then its session could rewrite the
//! old marker: that is the trust an earlier bai gave it, no more.
//!
//! A marker bai cannot vouch for (not a regular file, a link, too large, not a marker) makes the vfolder a
//! conflict: `observe` reports it as unowned with the reason, never drops it silently, and `ensure` and
//! `remove` refuse to touch it, naming why. A directory without a marker, or with another cluster's, is
//! not bai's: it is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::agent::home::is_safe_component;
use crate::model::Permission;
use crate::protocol::{ErrorKind, RpcError, is_reserved_vfolder_name};
use crate::state::snapshot::{Unowned, UnownedKind, VfolderSnapshot};

/// bai's markers, one `<name>.json` per vfolder, beside the vfolders under the root.
pub const MARKERS: &str = ".bai-markers";
/// Where removed vfolders that held data are moved.
pub const TOMBSTONES: &str = ".bai-tombstones";
/// The marker an earlier bai kept inside the vfolder.
pub const LEGACY_MARKER: &str = ".bai-vfolder.json";
/// The most a marker may hold: a few hundred bytes in practice.
pub const MAX_MARKER: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub cluster: String,
    pub name: String,
    pub permission: Permission,
    pub quota: Option<u64>,
}

/// Whose a vfolder name is, as its marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// No marker: not bai's (or nothing there).
    Nobody,
    /// A marker under `.bai-markers/`.
    Marked(Marker),
    /// An earlier bai's marker inside the vfolder.
    Legacy(Marker),
    /// A marker bai cannot vouch for, and why.
    Broken(String),
}

impl Owner {
    fn marker(&self) -> Option<&Marker> {
        match self {
            Owner::Marked(m) | Owner::Legacy(m) => Some(m),
            Owner::Nobody | Owner::Broken(_) => None,
        }
    }

    fn is(&self, cluster: &str) -> bool {
        self.marker().is_some_and(|m| m.cluster == cluster)
    }
}

fn failed(what: &str, path: &Path, e: impl Into<std::io::Error>) -> RpcError {
    RpcError::new(ErrorKind::Failed, format!("cannot {what} `{}`: {}", path.display(), e.into()))
        .with_code("bai::vfolder::io")
}

fn refused(message: String) -> RpcError {
    RpcError::new(ErrorKind::Refused, message).with_code("bai::vfolder::refused")
}

fn conflict(name: &str, why: &str) -> RpcError {
    refused(format!("vfolder `{name}`: {why}; bai leaves it alone")).with_code("bai::vfolder::conflict")
}

/// A name the controller may ask for: a plain path component, not one of bai's own.
fn check_name(name: &str) -> Result<(), RpcError> {
    if !is_safe_component(name) {
        return Err(RpcError::new(ErrorKind::BadRequest, format!("`{name}` is not a vfolder name")));
    }
    if is_reserved_vfolder_name(name) {
        return Err(RpcError::new(
            ErrorKind::BadRequest,
            format!(
                "vfolder name `{name}` is reserved: names starting with `.bai` are bai's own under the vfolder root"
            ),
        ));
    }
    Ok(())
}

/// The root's handle; `None` when it does not exist. The root is the operator's path: links on the way
/// to it are theirs, and followed.
fn open_root(root: &Path) -> Result<Option<OwnedFd>, RpcError> {
    match rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(failed("open the vfolder root", root, e)),
    }
}

/// What is at `name` in a directory, never following a link.
enum Entry {
    Missing,
    Dir(OwnedFd),
    /// Something else: a link, a file, a FIFO.
    Other,
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<Entry> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Entry::Dir(fd)),
        Err(Errno::NOENT) => Ok(Entry::Missing),
        // A link (`O_NOFOLLOW`) or not a directory.
        Err(Errno::LOOP | Errno::NOTDIR) => Ok(Entry::Other),
        Err(e) => Err(e.into()),
    }
}

/// A directory of bai's own under the root, made when missing.
fn own_dir(root_fd: BorrowedFd<'_>, root: &Path, name: &str) -> Result<OwnedFd, RpcError> {
    let path = root.join(name);
    for _ in 0..2 {
        match open_dir_at(root_fd, name).map_err(|e| failed("open", &path, e))? {
            Entry::Dir(fd) => return Ok(fd),
            Entry::Other => {
                return Err(RpcError::new(
                    ErrorKind::Failed,
                    format!("`{}` is not a directory: bai keeps its own files there", path.display()),
                ));
            }
            Entry::Missing => match rustix::fs::mkdirat(root_fd, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(failed("create", &path, e)),
            },
        }
    }
    Err(RpcError::new(ErrorKind::Failed, format!("`{}` keeps changing", path.display())))
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::Fifo => "a FIFO",
        FileType::Directory => "a directory",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Symlink => "a symbolic link",
        FileType::RegularFile => "a regular file",
        FileType::Unknown => "of an unknown kind",
    }
}

/// The bytes of file `name` in `dir` when it is a regular file of at most [`MAX_MARKER`] bytes; `None`
/// when there is none; otherwise why not, as the tail of "its marker …".
fn read_small(dir: BorrowedFd<'_>, name: &str) -> Result<Option<Vec<u8>>, String> {
    // An `O_PATH` handle opens nothing: not a FIFO's reader, not a device. Through a link it would
    // refer to the link itself, which `O_NOFOLLOW` keeps.
    let handle = match rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(format!("cannot be read: {}", std::io::Error::from(e))),
    };
    let stat = rustix::fs::fstat(&handle).map_err(|e| format!("cannot be read: {}", std::io::Error::from(e)))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {}
        FileType::Symlink => return Err("is a symbolic link, which bai never follows".into()),
        other => return Err(format!("is {}, not a regular file", describe(other))),
    }
    let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
    if size > MAX_MARKER {
        return Err(format!("is {size} bytes, more than a marker may hold ({MAX_MARKER} bytes)"));
    }
    // Reopening the handle through /proc opens that very inode, checked above, for reading; whatever
    // now sits at the name is not looked at again.
    let proc = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = rustix::fs::open(proc.as_str(), flags, Mode::empty())
        .map_err(|e| format!("cannot be read: {}", std::io::Error::from(e)))?;
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(MAX_MARKER + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_MARKER {
        return Err(format!("grew past what a marker may hold ({MAX_MARKER} bytes) while read"));
    }
    Ok(Some(bytes))
}

/// The marker in file `file` of `dir` for vfolder `name`.
fn marker_at(dir: BorrowedFd<'_>, file: &str, name: &str) -> Result<Option<Marker>, String> {
    let Some(bytes) = read_small(dir, file)? else { return Ok(None) };
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| format!("is not a bai marker ({e})"))?;
    if marker.name != name {
        return Err("names another vfolder".into());
    }
    Ok(Some(marker))
}

fn marker_file(name: &str) -> String {
    format!("{name}.json")
}

/// Whose vfolder `name` is: the marker under `.bai-markers/` first, else an earlier bai's inside the
/// vfolder directory `dir` (when there is one).
fn owner(markers: Option<BorrowedFd<'_>>, dir: Option<BorrowedFd<'_>>, name: &str) -> Owner {
    let broken = |why: String| Owner::Broken(format!("its marker {why}"));
    if let Some(markers) = markers {
        match marker_at(markers, &marker_file(name), name) {
            Ok(Some(m)) => return Owner::Marked(m),
            Ok(None) => {}
            Err(why) => return broken(why),
        }
    }
    match dir.map(|dir| marker_at(dir, LEGACY_MARKER, name)) {
        Some(Ok(Some(m))) => Owner::Legacy(m),
        Some(Err(why)) => broken(why),
        Some(Ok(None)) | None => Owner::Nobody,
    }
}

/// The `.bai-markers` handle, `None` when there is none yet.
fn markers_of(root_fd: BorrowedFd<'_>, root: &Path) -> Result<Option<OwnedFd>, RpcError> {
    let path = root.join(MARKERS);
    match open_dir_at(root_fd, MARKERS).map_err(|e| failed("open", &path, e))? {
        Entry::Dir(fd) => Ok(Some(fd)),
        Entry::Missing => Ok(None),
        Entry::Other => Err(RpcError::new(
            ErrorKind::Failed,
            format!("`{}` is not a directory: bai keeps its vfolder markers there", path.display()),
        )),
    }
}

/// Whether a vfolder holds nothing (but an earlier bai's marker), judged from the names of its entries:
/// nothing in it is opened or stat'ed.
fn is_empty(dir: BorrowedFd<'_>, legacy: bool) -> std::io::Result<bool> {
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || (legacy && name == LEGACY_MARKER.as_bytes()) {
            continue;
        }
        return Ok(false);
    }
    Ok(true)
}

/// The names under `dir`, as UTF-8 (others are not bai's).
fn names_in(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<(String, FileType)>, RpcError> {
    let mut out = Vec::new();
    for entry in Dir::read_from(dir).map_err(|e| failed("read", path, e))? {
        let entry = entry.map_err(|e| failed("read", path, e))?;
        if let Ok(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.file_type()));
        }
    }
    Ok(out)
}

/// The cluster's vfolders under `root`, and the vfolders whose marker bai cannot vouch for (with the
/// reason): those are conflicts, reported rather than dropped. Directories without a marker, and other
/// clusters' vfolders, are left out.
pub fn observe(root: &Path, cluster: &str) -> Result<(Vec<VfolderSnapshot>, Vec<Unowned>), RpcError> {
    let Some(root_fd) = open_root(root)? else { return Ok((Vec::new(), Vec::new())) };
    let markers = markers_of(root_fd.as_fd(), root)?;
    let mut names: BTreeSet<String> = BTreeSet::new();
    if let Some(markers) = &markers {
        for (file, _) in names_in(markers.as_fd(), &root.join(MARKERS))? {
            if let Some(name) = file.strip_suffix(".json") {
                names.insert(name.to_string());
            }
        }
    }
    for (name, kind) in names_in(root_fd.as_fd(), root)? {
        // A link or a file at the root is no vfolder (bai makes directories); `Unknown` is a file system
        // that does not say, judged when it is opened.
        if matches!(kind, FileType::Directory | FileType::Unknown) {
            names.insert(name);
        }
    }
    let mut owned = BTreeMap::new();
    let mut conflicts = Vec::new();
    for name in names.iter().filter(|n| is_safe_component(n) && !is_reserved_vfolder_name(n)) {
        let marked = markers.as_ref().map(|m| m.as_fd());
        let mut conflict = |why: String| {
            conflicts.push(Unowned { kind: UnownedKind::Vfolder, name: name.clone(), reason: Some(why) });
        };
        let dir = match open_dir_at(root_fd.as_fd(), name) {
            Ok(Entry::Dir(fd)) => Some(fd),
            Ok(Entry::Missing | Entry::Other) => None,
            // A session may make its vfolder unreadable to the agent: one of the cluster's is a conflict;
            // whose another is cannot be told.
            Err(e) => {
                if owner(marked, None, name).is(cluster) {
                    conflict(format!("its directory cannot be opened: {e}"));
                }
                continue;
            }
        };
        let owner = owner(marked, dir.as_ref().map(|d| d.as_fd()), name);
        match (&owner, &dir) {
            (Owner::Broken(why), _) => conflict(why.clone()),
            // A marker whose directory is gone: the vfolder is not there (an apply makes it again).
            (_, None) => {}
            (Owner::Marked(m) | Owner::Legacy(m), Some(dir)) if m.cluster == cluster => {
                match is_empty(dir.as_fd(), matches!(owner, Owner::Legacy(_))) {
                    Ok(empty) => {
                        let (permission, quota) = (m.permission, m.quota);
                        owned.insert(name.clone(), VfolderSnapshot { name: name.clone(), permission, quota, empty });
                    }
                    Err(e) => conflict(format!("its directory cannot be read: {e}")),
                }
            }
            _ => {}
        }
    }
    Ok((owned.into_values().collect(), conflicts))
}

/// Writes the marker under `.bai-markers/`: a temporary file created exclusively (never through a link,
/// never into a file already there), then renamed over the old marker, so that a crash never leaves half
/// a marker (which would orphan the folder).
fn write_marker(root_fd: BorrowedFd<'_>, root: &Path, marker: &Marker) -> Result<(), RpcError> {
    let markers = own_dir(root_fd, root, MARKERS)?;
    let file = marker_file(&marker.name);
    let tmp = format!("{file}.tmp");
    let tmp_path = root.join(MARKERS).join(&tmp);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&markers, tmp.as_str(), flags, Mode::from_raw_mode(0o644)) {
        Ok(fd) => fd,
        // Left by a run that died mid-write: only the agent writes here.
        Err(Errno::EXIST) => {
            rustix::fs::unlinkat(&markers, tmp.as_str(), AtFlags::empty())
                .map_err(|e| failed("replace", &tmp_path, e))?;
            rustix::fs::openat(&markers, tmp.as_str(), flags, Mode::from_raw_mode(0o644))
                .map_err(|e| failed("write", &tmp_path, e))?
        }
        Err(e) => return Err(failed("write", &tmp_path, e)),
    };
    let text = serde_json::to_string_pretty(marker).unwrap_or_default();
    let mut out = std::fs::File::from(fd);
    out.write_all(text.as_bytes()).and_then(|()| out.sync_all()).map_err(|e| failed("write", &tmp_path, e))?;
    rustix::fs::renameat(&markers, tmp.as_str(), &markers, file.as_str())
        .map_err(|e| failed("write", &root.join(MARKERS).join(&file), e))
}

fn remove_marker(root_fd: BorrowedFd<'_>, root: &Path, name: &str) -> Result<(), RpcError> {
    let Some(markers) = markers_of(root_fd, root)? else { return Ok(()) };
    let file = marker_file(name);
    match rustix::fs::unlinkat(&markers, file.as_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(failed("remove", &root.join(MARKERS).join(file), e)),
    }
}

/// Creates the vfolder, or updates its recorded permission and quota. Refuses a directory bai does not
/// own, and one whose marker it cannot vouch for.
pub fn ensure(
    root: &Path,
    cluster: &str,
    name: &str,
    permission: Permission,
    quota: Option<u64>,
) -> Result<(), RpcError> {
    check_name(name)?;
    std::fs::create_dir_all(root).map_err(|e| failed("create", root, e))?;
    let root_fd = open_root(root)?.ok_or_else(|| RpcError::new(ErrorKind::Failed, "the vfolder root vanished"))?;
    let path = root.join(name);
    let dir = match open_dir_at(root_fd.as_fd(), name).map_err(|e| failed("open", &path, e))? {
        Entry::Dir(fd) => Some(fd),
        Entry::Missing => None,
        Entry::Other => {
            return Err(refused(format!("`{}` exists and is not a directory: bai leaves it alone", path.display())));
        }
    };
    let markers = markers_of(root_fd.as_fd(), root)?;
    let owner = owner(markers.as_ref().map(|m| m.as_fd()), dir.as_ref().map(|d| d.as_fd()), name);
    match (&owner, &dir) {
        (Owner::Broken(why), _) => return Err(conflict(name, why)),
        (Owner::Marked(m) | Owner::Legacy(m), _) if m.cluster != cluster => {
            return Err(refused(format!("`{}` belongs to cluster `{}`, not `{cluster}`", path.display(), m.cluster)));
        }
        (Owner::Nobody, Some(_)) => {
            return Err(refused(format!("`{}` exists and is not a bai vfolder: bai leaves it alone", path.display())));
        }
        _ => {}
    }
    // The marker first, then the directory: a crash between leaves a marker that the next run completes,
    // never a directory that looks like someone else's.
    let marker = Marker { cluster: cluster.to_string(), name: name.to_string(), permission, quota };
    write_marker(root_fd.as_fd(), root, &marker)?;
    match &dir {
        None => match rustix::fs::mkdirat(&root_fd, name, Mode::from_raw_mode(0o777)) {
            Ok(()) => {}
            Err(e) => return Err(failed("create", &path, e)),
        },
        // The old marker inside is superseded. `unlinkat` removes the name itself, whatever it is now
        // (never what a link points to); a directory there stays, as the session's.
        Some(dir) if matches!(owner, Owner::Legacy(_)) => {
            let _ = rustix::fs::unlinkat(dir, LEGACY_MARKER, AtFlags::empty());
        }
        Some(_) => {}
    }
    Ok(())
}

/// What `remove` did: the reply to `remove_vfolder`.
pub use crate::protocol::RemoveVfolderReply as Removed;

pub fn remove(root: &Path, cluster: &str, name: &str, allow_data_loss: bool, now: u64) -> Result<Removed, RpcError> {
    check_name(name)?;
    let Some(root_fd) = open_root(root)? else { return Ok(Removed::Absent) };
    let path = root.join(name);
    let not_ours =
        || refused(format!("`{}` is not a vfolder of cluster `{cluster}`: bai leaves it alone", path.display()));
    let dir = match open_dir_at(root_fd.as_fd(), name).map_err(|e| failed("open", &path, e))? {
        Entry::Dir(fd) => fd,
        Entry::Other => return Err(not_ours()),
        Entry::Missing => {
            let markers = markers_of(root_fd.as_fd(), root)?;
            if owner(markers.as_ref().map(|m| m.as_fd()), None, name).is(cluster) {
                remove_marker(root_fd.as_fd(), root, name)?;
            }
            return Ok(Removed::Absent);
        }
    };
    let markers = markers_of(root_fd.as_fd(), root)?;
    let owner = owner(markers.as_ref().map(|m| m.as_fd()), Some(dir.as_fd()), name);
    if let Owner::Broken(why) = &owner {
        return Err(conflict(name, why));
    }
    if !owner.is(cluster) {
        return Err(not_ours());
    }
    let legacy = matches!(owner, Owner::Legacy(_));
    if is_empty(dir.as_fd(), legacy).map_err(|e| failed("read", &path, e))? {
        if legacy {
            let _ = rustix::fs::unlinkat(&dir, LEGACY_MARKER, AtFlags::empty());
        }
        // Fails, and keeps everything, if something was written into it meanwhile.
        rustix::fs::unlinkat(&root_fd, name, AtFlags::REMOVEDIR).map_err(|e| failed("remove", &path, e))?;
        remove_marker(root_fd.as_fd(), root, name)?;
        return Ok(Removed::Deleted);
    }
    if !allow_data_loss {
        return Err(refused(format!(
            "vfolder `{name}` holds data: not removed (run with --allow-data-loss to move it aside to {}/)",
            root.join(TOMBSTONES).display()
        )));
    }
    let graves = own_dir(root_fd.as_fd(), root, TOMBSTONES)?;
    let grave = format!("{cluster}.{name}.{now}");
    rustix::fs::renameat(&root_fd, name, &graves, grave.as_str()).map_err(|e| failed("move aside", &path, e))?;
    // The old marker, if any, goes with the directory; the marker beside it names nothing now.
    remove_marker(root_fd.as_fd(), root, name)?;
    Ok(Removed::Tombstoned { path: root.join(TOMBSTONES).join(grave).display().to_string() })
}

/// The host directory of a vfolder (for bind mounts).
pub fn path_of(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// Directories at the place of wanted vfolders that bai does not own (or whose marker it cannot vouch
/// for, with the reason), for `bai status`.
pub fn unowned(root: &Path, cluster: &str, wanted: &[String]) -> Vec<Unowned> {
    let Ok(Some(root_fd)) = open_root(root) else { return Vec::new() };
    let Ok(markers) = markers_of(root_fd.as_fd(), root) else { return Vec::new() };
    wanted
        .iter()
        .filter(|name| check_name(name).is_ok())
        .filter_map(|name| {
            let Ok(Entry::Dir(dir)) = open_dir_at(root_fd.as_fd(), name) else { return None };
            match owner(markers.as_ref().map(|m| m.as_fd()), Some(dir.as_fd()), name) {
                Owner::Broken(why) => Some(Some(why)),
                owner if owner.is(cluster) => None,
                _ => Some(None),
            }
            .map(|reason| Unowned { kind: UnownedKind::Vfolder, name: name.clone(), reason })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker_path(root: &Path, name: &str) -> PathBuf {
        root.join(MARKERS).join(marker_file(name))
    }

    #[test]
    fn lifecycle_with_data_protection() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        ensure(root, "lab", "data", Permission::Rw, Some(10)).expect("created");
        let (seen, _) = observe(root, "lab").expect("observed");
        assert_eq!(
            seen,
            vec![VfolderSnapshot { name: "data".into(), permission: Permission::Rw, quota: Some(10), empty: true }]
        );
        assert!(marker_path(root, "data").is_file(), "the marker lives beside the vfolder");
        assert_eq!(std::fs::read_dir(root.join("data")).expect("read").count(), 0, "and not in it");
        ensure(root, "lab", "data", Permission::Ro, Some(20)).expect("updated");
        assert_eq!(observe(root, "lab").expect("observed").0[0].quota, Some(20));
        // Another cluster sees nothing, and may not take it over.
        assert!(observe(root, "other").expect("observed").0.is_empty());
        assert_eq!(ensure(root, "other", "data", Permission::Rw, None).map_err(|e| e.kind), Err(ErrorKind::Refused));

        std::fs::write(root.join("data/result.txt"), "42").expect("write data");
        assert!(!observe(root, "lab").expect("observed").0[0].empty);
        let refused = remove(root, "lab", "data", false, 1).expect_err("refused without allow_data_loss");
        assert_eq!(refused.kind, ErrorKind::Refused);
        assert!(root.join("data/result.txt").exists());
        let done = remove(root, "lab", "data", true, 7).expect("moved aside");
        let grave = root.join(TOMBSTONES).join("lab.data.7");
        assert_eq!(done, Removed::Tombstoned { path: grave.display().to_string() });
        assert_eq!(std::fs::read_to_string(grave.join("result.txt")).expect("kept"), "42");
        assert!(!marker_path(root, "data").exists(), "its marker went with it");
        assert_eq!(remove(root, "lab", "data", true, 8).expect("absent"), Removed::Absent);
        assert!(observe(root, "lab").expect("observed").0.is_empty());
    }

    #[test]
    fn directories_bai_does_not_own_are_left_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("mine/deep")).expect("mkdir");
        assert_eq!(ensure(root, "lab", "mine", Permission::Rw, None).map_err(|e| e.kind), Err(ErrorKind::Refused));
        assert_eq!(remove(root, "lab", "mine", true, 1).map_err(|e| e.kind), Err(ErrorKind::Refused));
        assert!(root.join("mine/deep").exists());
        assert_eq!(unowned(root, "lab", &["mine".into(), "absent".into()]).len(), 1);
        ensure(root, "lab", "empty", Permission::Rw, None).expect("created");
        assert_eq!(remove(root, "lab", "empty", false, 1).expect("deleted"), Removed::Deleted);
        assert!(!root.join("empty").exists());
        assert!(!marker_path(root, "empty").exists());
        assert_eq!(
            ensure(root, "lab", "../escape", Permission::Rw, None).map_err(|e| e.kind),
            Err(ErrorKind::BadRequest)
        );
        // A link at the root is no vfolder, and is not followed.
        std::os::unix::fs::symlink(root.join("mine"), root.join("linked")).expect("symlink");
        assert_eq!(ensure(root, "lab", "linked", Permission::Rw, None).map_err(|e| e.kind), Err(ErrorKind::Refused));
        assert_eq!(remove(root, "lab", "linked", true, 1).map_err(|e| e.kind), Err(ErrorKind::Refused));
        assert!(root.join("mine/deep").exists());
    }

    /// A controller may be an older or another bai that does not validate names: the agent itself keeps
    /// bai's own names out of the vfolder namespace.
    #[test]
    fn bais_own_names_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        ensure(root, "lab", "data", Permission::Rw, None).expect("created");
        std::fs::write(root.join("data/x"), "x").expect("write");
        remove(root, "lab", "data", true, 1).expect("moved aside");
        for name in [TOMBSTONES, ".bai-markers", ".BAI-tombstones"] {
            let err = ensure(root, "lab", name, Permission::Rw, None).expect_err("refused");
            assert_eq!(err.kind, ErrorKind::BadRequest, "{name}");
            assert!(err.message.contains("reserved"), "{}", err.message);
            assert_eq!(remove(root, "lab", name, true, 2).map_err(|e| e.kind), Err(ErrorKind::BadRequest));
        }
        assert!(root.join(TOMBSTONES).join("lab.data.1/x").is_file(), "the tombstones are left alone");
        assert!(observe(root, "lab").expect("observed").0.is_empty(), "bai's own directories are no vfolders");
    }

    /// A vfolder as an earlier bai made it: the marker inside.
    fn legacy(root: &Path, cluster: &str, name: &str) {
        std::fs::create_dir_all(root.join(name)).expect("mkdir");
        let m = Marker { cluster: cluster.into(), name: name.into(), permission: Permission::Rw, quota: None };
        std::fs::write(root.join(name).join(LEGACY_MARKER), serde_json::to_string(&m).expect("json")).expect("write");
    }

    #[test]
    fn an_earlier_bais_vfolder_is_recognised_and_its_marker_moved_out() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        legacy(root, "lab", "old");
        legacy(root, "other", "theirs");
        let (seen, conflicts) = observe(root, "lab").expect("observed");
        assert_eq!(seen.len(), 1);
        assert!(seen[0].empty, "the old marker is no data");
        assert!(conflicts.is_empty());
        assert_eq!(ensure(root, "lab", "theirs", Permission::Rw, None).map_err(|e| e.kind), Err(ErrorKind::Refused));

        // The session planted links where the old agent wrote its temporary file and marker.
        let victim = tmp.path().join("victim.txt");
        std::fs::write(&victim, "precious").expect("write");
        std::os::unix::fs::symlink("../victim.txt", root.join("old").join(format!("{LEGACY_MARKER}.tmp")))
            .expect("symlink");
        ensure(root, "lab", "old", Permission::Rw, Some(5)).expect("updated");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious");
        assert!(marker_path(root, "old").is_file());
        assert!(!root.join("old").join(LEGACY_MARKER).exists(), "the old marker is gone");
        let (seen, _) = observe(root, "lab").expect("observed");
        assert_eq!((seen[0].quota, seen[0].empty), (Some(5), false), "the planted link is the session's data");
        // From now on a marker the session writes inside is its own file, and changes nothing.
        legacy(root, "other", "old");
        assert_eq!(observe(root, "lab").expect("observed").0[0].quota, Some(5));
    }

    #[test]
    fn markers_bai_cannot_vouch_for_are_conflicts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for name in ["fifo", "big", "zero", "dir", "junk", "renamed"] {
            legacy(root, "lab", name);
        }
        let marker = |name: &str| root.join(name).join(LEGACY_MARKER);
        for name in ["fifo", "big", "zero", "dir"] {
            std::fs::remove_file(marker(name)).expect("rm");
        }
        let fifo = std::ffi::CString::new(marker("fifo").as_os_str().as_encoded_bytes()).expect("path");
        rustix::fs::mkfifoat(rustix::fs::CWD, fifo.as_c_str(), Mode::from_raw_mode(0o644)).expect("mkfifo");
        std::fs::File::create(marker("big")).and_then(|f| f.set_len(2 << 30)).expect("sparse file");
        std::os::unix::fs::symlink("/dev/zero", marker("zero")).expect("symlink");
        std::fs::create_dir(marker("dir")).expect("mkdir");
        std::fs::write(marker("junk"), "not json").expect("write");
        let m = Marker { cluster: "lab".into(), name: "other".into(), permission: Permission::Rw, quota: None };
        std::fs::write(marker("renamed"), serde_json::to_string(&m).expect("json")).expect("write");

        let (seen, conflicts) = observe(root, "lab").expect("observed without blocking");
        assert!(seen.is_empty(), "{seen:?}");
        let why: BTreeMap<&str, &str> =
            conflicts.iter().map(|u| (u.name.as_str(), u.reason.as_deref().unwrap_or(""))).collect();
        assert_eq!(why["fifo"], "its marker is a FIFO, not a regular file");
        assert_eq!(why["big"], "its marker is 2147483648 bytes, more than a marker may hold (65536 bytes)");
        assert_eq!(why["zero"], "its marker is a symbolic link, which bai never follows");
        assert_eq!(why["dir"], "its marker is a directory, not a regular file");
        assert!(why["junk"].starts_with("its marker is not a bai marker"), "{}", why["junk"]);
        assert_eq!(why["renamed"], "its marker names another vfolder");
        assert!(conflicts.iter().all(|u| u.kind == UnownedKind::Vfolder));

        for name in ["fifo", "big", "zero", "dir"] {
            let err = ensure(root, "lab", name, Permission::Rw, Some(1)).expect_err("refused");
            assert_eq!(err.kind, ErrorKind::Refused);
            assert!(err.message.starts_with(&format!("vfolder `{name}`: its marker ")), "{}", err.message);
            assert!(err.message.ends_with("bai leaves it alone"), "{}", err.message);
            assert_eq!(remove(root, "lab", name, true, 1).map_err(|e| e.kind), Err(ErrorKind::Refused));
        }
        assert_eq!(unowned(root, "lab", &["fifo".into()])[0].reason.as_deref(), Some(why["fifo"]));
        assert!(std::fs::metadata(marker("big")).is_ok_and(|m| m.len() == 2 << 30), "left as it is");
    }
}
