//! Which binary bai installs on nodes as their agent: `bai-agent` when it sits beside the running `bai`
//! and was built from the same sources, else `bai` itself (which runs the agent too, as `bai agent`).
//!
//! `bai-agent` is 2.5 MB where `bai` is 12 (release; 0.9 MB as zstd where it crosses compressed): every node's first
//! contact moves, unpacks and hashes a fifth of the bytes. Cargo relinks only the binaries a command
//! names (`cargo run` builds `bai` alone), so an agent beside `bai` may be left from an older build: each
//! build carries its identity ([`BUILD_MARKER`], from `build.rs`), and a `bai-agent` that does not hold
//! `bai`'s is passed over for `bai` itself, which is always right if larger.

use std::path::{Path, PathBuf};

/// This build's identity as it appears, whole, in every binary built with it: `bai-agent --version`
/// prints it, which is what keeps it in that binary.
pub const BUILD_MARKER: &str = concat!("bai-build:", env!("BAI_BUILD_ID"));

/// The file name of the agent-only binary.
pub const AGENT_FILE: &str = "bai-agent";

/// The binary to install for a controller running as `controller`: the `bai-agent` beside it when it is
/// of this build, else `controller`.
pub fn for_controller(controller: &Path) -> PathBuf {
    let sibling = controller.with_file_name(AGENT_FILE);
    if is_this_build(&sibling) { sibling } else { controller.to_owned() }
}

/// Whether `path` is an executable file that holds this build's [`BUILD_MARKER`].
pub fn is_this_build(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    executable && std::fs::read(path).is_ok_and(|bytes| memchr::memmem::find(&bytes, BUILD_MARKER.as_bytes()).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn an_agent_of_this_build_beside_bai_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let bai = write(dir.path(), "bai", b"controller", 0o755);
        let mut agent = b"\x7fELF...".to_vec();
        agent.extend_from_slice(BUILD_MARKER.as_bytes());
        agent.extend_from_slice(b"...");
        write(dir.path(), AGENT_FILE, &agent, 0o755);
        assert_eq!(for_controller(&bai), dir.path().join(AGENT_FILE));
    }

    #[test]
    fn bai_itself_when_the_agent_is_missing_stale_or_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        let bai = write(dir.path(), "bai", b"controller", 0o755);
        assert_eq!(for_controller(&bai), bai, "no agent beside it");
        write(dir.path(), AGENT_FILE, b"bai-build:0123456789abcdef", 0o755);
        assert_eq!(for_controller(&bai), bai, "an agent of another build");
        write(dir.path(), AGENT_FILE, BUILD_MARKER.as_bytes(), 0o644);
        assert_eq!(for_controller(&bai), bai, "not executable");
        std::fs::remove_file(dir.path().join(AGENT_FILE)).unwrap();
        std::fs::create_dir(dir.path().join(AGENT_FILE)).unwrap();
        assert_eq!(for_controller(&bai), bai, "a directory");
    }
}
