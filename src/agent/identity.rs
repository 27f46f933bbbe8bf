//! Who an agent is: one agent home on one machine. Everything an agent keeps — the apply lease, the
//! cluster's state, its generation records — lives in its home, so two nodes of a lab that reach the same
//! home (one machine under two names, two ports of one host with one user) would share all of it: an
//! apply would find its own second node "being applied" by itself, and both nodes' records would mix.
//! The agent tells its identity in the `hello` reply, and the controller refuses a lab in which two nodes
//! tell the same one, before it changes anything.
//!
//! The identity is a SHA-256 over the machine's id and the canonical path of the agent home, so that
//! nodes on one machine with homes of their own (another user, another `BAI_HOME`) stay apart. The machine
//! id is systemd's `/etc/machine-id`, else D-Bus's `/var/lib/dbus/machine-id`; where neither exists, a
//! random id made once and kept in the agent home (`machine-id`), which then tells that home apart
//! anyway. Only the hash leaves the node: machine-id(5) asks not to show the id itself.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::agent::home::Home;
use crate::state::spec::hex_digest;

const MACHINE_IDS: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
/// The home's own id, where the machine has none.
const HOME_ID: &str = "machine-id";

/// This agent's identity (64 hex digits); `None` when neither a machine id nor a home id can be had.
pub fn identity(home: &Home) -> Option<String> {
    let machine = MACHINE_IDS.iter().find_map(|p| machine_id(Path::new(p))).or_else(|| home_id(home.root()))?;
    let place = canonical(home.root());
    let mut hasher = Sha256::new();
    hasher.update(b"bai agent identity 1\n");
    hasher.update(machine.as_bytes());
    hasher.update(b"\n");
    hasher.update(place.as_os_str().as_encoded_bytes());
    Some(hex_digest(&hasher.finalize()))
}

/// A machine id file's id: one line of hex digits (32 in practice).
fn machine_id(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(256).read_to_string(&mut text).ok()?;
    let id = text.trim();
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

/// The home's own random id, made on first use.
fn home_id(root: &Path) -> Option<String> {
    let path = root.join(HOME_ID);
    if let Some(id) = machine_id(&path) {
        return Some(id);
    }
    std::fs::create_dir_all(root).ok()?;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).ok()?;
    // Created exclusively: of two agents making it at once, the second reads the first's.
    if let Ok(mut file) = std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
        file.write_all(format!("{}\n", hex_digest(&bytes)).as_bytes()).ok()?;
    }
    machine_id(&path)
}

/// `path` with links and `..` resolved as far as it exists, the rest appended as written.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => canonical(parent).join(name),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_home_is_one_identity_and_other_homes_are_others() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let user = tmp.path().join("user");
        let a = Home::at(&tmp.path().join("a"), &user);
        let b = Home::at(&tmp.path().join("b"), &user);
        let id = identity(&a).expect("an identity");
        assert_eq!(id.len(), 64);
        assert_eq!(identity(&a), Some(id.clone()), "stable");
        assert_ne!(identity(&b), Some(id.clone()), "another home on this machine is another agent");
        // The same home reached by another spelling of its path, or through a link, is the same agent.
        std::fs::create_dir_all(tmp.path().join("a")).expect("mkdir");
        let spelled = Home::at(&tmp.path().join("b/../a"), &user);
        std::fs::create_dir_all(tmp.path().join("b")).expect("mkdir");
        assert_eq!(identity(&spelled), Some(id.clone()));
        std::os::unix::fs::symlink(tmp.path().join("a"), tmp.path().join("link")).expect("symlink");
        assert_eq!(identity(&Home::at(&tmp.path().join("link"), &user)), Some(id));
    }

    #[test]
    fn a_home_without_a_machine_id_makes_its_own_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = home_id(tmp.path()).expect("made");
        assert_eq!(first.len(), 32);
        assert_eq!(home_id(tmp.path()), Some(first));
        assert_eq!(machine_id(Path::new("/nonexistent/machine-id")), None);
        std::fs::write(tmp.path().join("junk"), "not hex\n").expect("write");
        assert_eq!(machine_id(&tmp.path().join("junk")), None);
    }
}
