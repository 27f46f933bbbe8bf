//! The agents installed on a node, one per build of bai that reached it
//! (`~/.local/share/bai/agent/<sha256>/bai`), and letting go of those nobody runs any more: without it
//! every upgrade of bai left 2.5 MB (12 MB when `bai` itself crossed) on every node for good.
//!
//! An installed agent marks its own directory as used when the controller starts it (its modification
//! time, at most hourly), and once a day one of them removes the other agents' directories unused for
//! [`UNUSED_FOR`], and upload leftovers of installs that failed. Two operators on two versions of bai keep
//! both installed; a version unused for a month costs one upload when it comes back.
//!
//! Only what bai made is touched: directories under the agent root named by a SHA-256 that hold nothing
//! but `bai` and `.bai.upload.*` files. Nothing is followed: a link in their place is left alone, and a
//! link inside is removed as a link. The running agent's own directory stays whatever its age.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// How long an installed agent may go unused before it is removed.
pub const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the agents are looked over (the stamp [`STAMP`] under the agent root).
const LOOK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// How stale an agent's mark of use may grow before it is renewed: one write an hour, not one per
/// connection.
const MARK_EVERY: Duration = Duration::from_secs(3600);

/// How old an upload's leftover must be to be one: an install writes it and renames it within seconds.
const LEFTOVER_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Under the agent root: when the agents were last looked over.
const STAMP: &str = ".looked-over";

/// The name the installer gives an agent in its directory, and the prefix of its uploads in progress.
pub(crate) const AGENT: &str = "bai";
pub(crate) const UPLOAD: &str = ".bai.upload.";

/// What [`tend`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tended {
    /// Whether the running agent's directory was marked as used now.
    pub marked: bool,
    /// The agents' directories removed (their SHA-256 names), sorted.
    pub removed: Vec<String>,
    /// Upload leftovers removed.
    pub leftovers: usize,
}

/// Marks the running agent `exe` as used and, at most daily, removes the installed agents unused for
/// [`UNUSED_FOR`] (see the module doc). Does nothing unless `exe` is an installed agent under
/// `user_home`'s agent root: `bai agent` run from anywhere else has no siblings of its kind.
pub fn tend(exe: &Path, user_home: &Path, now: SystemTime) -> std::io::Result<Tended> {
    let root = user_home.join(".local/share/bai/agent");
    let own = match (exe.parent(), exe.file_name()) {
        (Some(dir), Some(name)) if name == AGENT && dir.parent() == Some(root.as_path()) => dir,
        _ => return Ok(Tended::default()),
    };
    let Some(own_name) = own.file_name().and_then(|n| n.to_str()).filter(|n| is_sha256(n)) else {
        return Ok(Tended::default());
    };
    let root_fd = rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let mut tended = Tended::default();
    if let Some(own_fd) = open_dir(root_fd.as_fd(), own_name)? {
        tended.marked = mark(&own_fd, now)?;
        tended.leftovers += clear(own_fd.as_fd(), now, false)?.unwrap_or(0);
    }
    if !due(root_fd.as_fd(), now)? {
        return Ok(tended);
    }
    let mut names = Vec::new();
    for entry in Dir::read_from(&root_fd)? {
        let entry = entry?;
        if let Ok(name) = entry.file_name().to_str()
            && is_sha256(name)
            && name != own_name
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    for name in names {
        let Some(dir) = open_dir(root_fd.as_fd(), &name)? else { continue };
        let age = now.duration_since(modified(&dir)?).unwrap_or_default();
        if age < UNUSED_FOR {
            tended.leftovers += clear(dir.as_fd(), now, false)?.unwrap_or(0);
            continue;
        }
        // Emptied only when it holds nothing but an agent and uploads; removed only when empty.
        if clear(dir.as_fd(), now, true)?.is_some() {
            match rustix::fs::unlinkat(&root_fd, name.as_str(), AtFlags::REMOVEDIR) {
                Ok(()) => tended.removed.push(name),
                // Another agent tending at once, or an install into it just now.
                Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(tended)
}

pub(crate) fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The directory `name` in `dir`; `None` when it is missing or is not a directory (a link is not one).
fn open_dir(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<Option<OwnedFd>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn modified(fd: &OwnedFd) -> std::io::Result<SystemTime> {
    let stat = rustix::fs::fstat(fd)?;
    let secs = u64::try_from(stat.st_mtime).unwrap_or(0);
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

fn set_modified(fd: &OwnedFd, when: SystemTime) -> std::io::Result<()> {
    let since = when.duration_since(UNIX_EPOCH).unwrap_or_default();
    let time =
        Timespec { tv_sec: i64::try_from(since.as_secs()).unwrap_or(i64::MAX), tv_nsec: since.subsec_nanos().into() };
    rustix::fs::futimens(fd, &Timestamps { last_access: time, last_modification: time })?;
    Ok(())
}

/// Renews the running agent's mark of use when it is older than [`MARK_EVERY`]; whether it did.
fn mark(own: &OwnedFd, now: SystemTime) -> std::io::Result<bool> {
    let stale = now.duration_since(modified(own)?).is_ok_and(|age| age >= MARK_EVERY);
    if stale {
        set_modified(own, now)?;
    }
    Ok(stale)
}

/// Whether the agents are due to be looked over (never yet, or not for [`LOOK_EVERY`]); if so, the
/// stamp says they are being now.
fn due(root: BorrowedFd<'_>, now: SystemTime) -> std::io::Result<bool> {
    match rustix::fs::statat(root, STAMP, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {
            let looked = UNIX_EPOCH + Duration::from_secs(u64::try_from(stat.st_mtime).unwrap_or(0));
            // A stamp in the future (a clock set back) is as good as none.
            if now.duration_since(looked).is_ok_and(|age| age < LOOK_EVERY) {
                return Ok(false);
            }
        }
        // Something not a file holds the name: nothing is looked over.
        Ok(_) => return Ok(false),
        Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let stamp = rustix::fs::openat(root, STAMP, flags, Mode::from_raw_mode(0o644))?;
    set_modified(&stamp, now)?;
    Ok(true)
}

/// Removes the upload leftovers older than a day in an agent's directory, and with `all` its agent and
/// every upload too: `Some(removed)`, or `None` when it holds something else (then nothing is removed
/// but leftovers, and the directory is not bai's to empty).
fn clear(dir: BorrowedFd<'_>, now: SystemTime, all: bool) -> std::io::Result<Option<usize>> {
    let mut doomed = Vec::new();
    let mut foreign = false;
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            foreign |= entry.file_name().to_bytes() != b"." && entry.file_name().to_bytes() != b"..";
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let kind = FileType::from_raw_mode(stat.st_mode);
        let plain = matches!(kind, FileType::RegularFile | FileType::Symlink);
        let upload = name.starts_with(UPLOAD) && plain;
        let agent = name == AGENT && plain;
        if !(upload || agent) {
            foreign = true;
            continue;
        }
        let age = now.duration_since(UNIX_EPOCH + Duration::from_secs(u64::try_from(stat.st_mtime).unwrap_or(0)));
        let leftover = upload && age.is_ok_and(|age| age >= LEFTOVER_AFTER);
        if leftover || all {
            doomed.push((name.to_owned(), leftover));
        }
    }
    let mut leftovers = 0;
    for (name, leftover) in doomed {
        // In a directory that is not bai's to empty, only what is surely a failed install's goes.
        if foreign && !leftover {
            continue;
        }
        match rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty()) {
            Ok(()) => leftovers += usize::from(leftover),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((!foreign).then_some(leftovers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn sha(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn age(path: &Path, now: SystemTime, by: Duration) {
        let file = fs::File::open(path).expect("open");
        file.set_modified(now - by).expect("set mtime");
    }

    struct Node {
        home: tempfile::TempDir,
    }

    impl Node {
        fn new() -> Node {
            let home = tempfile::tempdir().expect("tempdir");
            fs::create_dir_all(home.path().join(".local/share/bai/agent")).expect("root");
            Node { home }
        }
        fn root(&self) -> std::path::PathBuf {
            self.home.path().join(".local/share/bai/agent")
        }
        fn install(&self, name: &str, now: SystemTime, unused: Duration) -> std::path::PathBuf {
            let dir = self.root().join(name);
            fs::create_dir_all(&dir).expect("dir");
            fs::write(dir.join(AGENT), b"\x7fELF").expect("agent");
            age(&dir.join(AGENT), now, unused);
            age(&dir, now, unused);
            dir.join(AGENT)
        }
    }

    #[test]
    fn agents_unused_for_a_month_go_and_the_rest_stay() {
        let node = Node::new();
        let now = SystemTime::now();
        let own = node.install(&sha('a'), now, 90 * DAY);
        node.install(&sha('b'), now, 31 * DAY);
        node.install(&sha('c'), now, 20 * DAY);
        let tended = tend(&own, node.home.path(), now).expect("tend");
        assert!(tended.marked, "the running agent's own mark is renewed");
        assert_eq!(tended.removed, [sha('b')]);
        assert!(node.root().join(sha('a')).join(AGENT).exists(), "the running agent stays however old");
        assert!(node.root().join(sha('c')).join(AGENT).exists());
        assert!(!node.root().join(sha('b')).exists());

        // Looked over once a day: an agent that turns a month old meanwhile waits for tomorrow.
        node.install(&sha('d'), now, 40 * DAY);
        let again = tend(&own, node.home.path(), now + Duration::from_secs(60)).expect("tend");
        assert_eq!(again, Tended::default(), "marked within the hour, looked over within the day");
        let tomorrow = tend(&own, node.home.path(), now + DAY + Duration::from_secs(60)).expect("tend");
        assert_eq!(tomorrow.removed, [sha('d')]);
    }

    #[test]
    fn only_what_bai_made_is_removed_and_no_link_is_followed() {
        let node = Node::new();
        let now = SystemTime::now();
        let own = node.install(&sha('a'), now, Duration::ZERO);
        // Someone else's data through a link in an agent's place, and inside an agent's directory.
        let precious = tempfile::tempdir().expect("tempdir");
        fs::write(precious.path().join("bai"), b"keep").expect("write");
        std::os::unix::fs::symlink(precious.path(), node.root().join(sha('b'))).expect("symlink");
        let linked = node.install(&sha('c'), now, 60 * DAY);
        fs::remove_file(&linked).expect("rm");
        std::os::unix::fs::symlink(precious.path().join("bai"), &linked).expect("symlink");
        age(&node.root().join(sha('c')), now, 60 * DAY);
        // A directory that holds more than an agent is not bai's to empty.
        node.install(&sha('d'), now, 60 * DAY);
        fs::write(node.root().join(sha('d')).join("notes"), b"mine").expect("write");
        fs::write(node.root().join(sha('d')).join(".bai.upload.1"), b"today's").expect("write");
        age(&node.root().join(sha('d')), now, 60 * DAY);
        // Not a SHA-256: not an agent's directory.
        fs::create_dir(node.root().join("old")).expect("dir");
        age(&node.root().join("old"), now, 60 * DAY);

        let tended = tend(&own, node.home.path(), now).expect("tend");
        assert_eq!(tended.removed, [sha('c')], "the link inside went as a link");
        assert_eq!(fs::read(precious.path().join("bai")).expect("kept"), b"keep");
        assert!(node.root().join(sha('b')).is_symlink());
        assert!(node.root().join(sha('d')).join(AGENT).exists());
        assert!(node.root().join(sha('d')).join("notes").exists());
        assert!(node.root().join(sha('d')).join(".bai.upload.1").exists(), "an upload of today stays");
        assert!(node.root().join("old").is_dir());
    }

    #[test]
    fn upload_leftovers_older_than_a_day_go() {
        let node = Node::new();
        let now = SystemTime::now();
        let own = node.install(&sha('a'), now, Duration::ZERO);
        let dir = node.root().join(sha('a'));
        fs::write(dir.join(".bai.upload.123"), b"partial").expect("write");
        age(&dir.join(".bai.upload.123"), now, 2 * DAY);
        fs::write(dir.join(".bai.upload.456"), b"in progress").expect("write");
        let other = node.root().join(sha('b'));
        node.install(&sha('b'), now, DAY);
        fs::write(other.join(".bai.upload.789"), b"partial").expect("write");
        age(&other.join(".bai.upload.789"), now, 3 * DAY);
        let tended = tend(&own, node.home.path(), now).expect("tend");
        assert_eq!(tended.leftovers, 2);
        assert!(!dir.join(".bai.upload.123").exists());
        assert!(dir.join(".bai.upload.456").exists(), "an upload of today may be in progress");
        assert!(!other.join(".bai.upload.789").exists());
        assert!(other.join(AGENT).exists());
    }

    #[test]
    fn an_agent_run_from_anywhere_else_touches_nothing() {
        let node = Node::new();
        let now = SystemTime::now();
        node.install(&sha('b'), now, 60 * DAY);
        for exe in [
            node.home.path().join("bai"),
            node.root().join("bai"),
            node.root().join("not-a-hash").join("bai"),
            node.root().join(sha('a')).join("bai-agent"),
        ] {
            assert_eq!(tend(&exe, node.home.path(), now).expect("tend"), Tended::default(), "{}", exe.display());
        }
        assert!(node.root().join(sha('b')).join(AGENT).exists());
    }
}
