//! The Docker engine's version, for the node's inventory, asked once per engine rather than on every
//! observe. `/version` was the dearest call of an observe: to answer it the engine asks containerd and runs
//! `runc --version` and `docker-init --version`, about 7 ms of its CPU here against well under 1 ms for a
//! filtered container list. The answer changes only when the engine is replaced, and a restarted engine
//! makes its socket anew, so the version is kept in the agent's home under the socket's identity (device,
//! inode, change time) and asked again when that differs, or after [`MAX_AGE_S`] in any case (an engine
//! reached over TCP has no socket file to tell a restart by).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agent::containers::Containers;

/// The longest an answer is kept, in seconds.
const MAX_AGE_S: u64 = 3600;

/// The most of the cache file that is read: it is a line of JSON.
const MAX_FILE: u64 = 4096;

use crate::agent::docker::DEFAULT_HOST;

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Cached {
    engine: String,
    asked_s: u64,
    version: String,
}

/// The engine's version string (`20.10.24+dfsg1`), from the cache at `file` when it is for this engine
/// and fresh, else from the engine (and then kept). `None` when the engine does not answer.
pub async fn engine_version(engine: &impl Containers, file: &Path, now_s: u64) -> Option<String> {
    let key = engine_key(std::env::var("DOCKER_HOST").ok().as_deref());
    if let Some(cached) = read(file).filter(|c| c.engine == key && now_s.saturating_sub(c.asked_s) < MAX_AGE_S) {
        return Some(cached.version);
    }
    let version = engine.version().await.ok()?;
    // A cache that cannot be written costs the next observe one more question, nothing else.
    let _ = write(file, &Cached { engine: key, asked_s: now_s, version: version.clone() });
    Some(version)
}

/// What tells one engine from another: where it is reached, and for a socket, the socket file itself.
fn engine_key(docker_host: Option<&str>) -> String {
    let host = docker_host.filter(|h| !h.is_empty()).unwrap_or(DEFAULT_HOST);
    match host.strip_prefix("unix://").map(std::fs::metadata) {
        Some(Ok(m)) => format!("{host} {}:{} {}.{}", m.dev(), m.ino(), m.ctime(), m.ctime_nsec()),
        _ => host.to_string(),
    }
}

fn read(file: &Path) -> Option<Cached> {
    crate::agent::home::read_json(file, MAX_FILE)
}

fn write(file: &Path, cached: &Cached) -> std::io::Result<()> {
    crate::agent::home::replace_file(file, &serde_json::to_vec(cached).map_err(std::io::Error::other)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::containers::InMemory;

    #[test]
    fn a_socket_is_known_by_its_file_and_anything_else_by_its_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        std::fs::write(&socket, b"").expect("write");
        let host = format!("unix://{}", socket.display());
        let first = engine_key(Some(&host));
        assert!(first.starts_with(&host) && first.len() > host.len(), "{first}");
        assert_eq!(engine_key(Some(&host)), first);
        // A restarted engine makes its socket anew.
        std::fs::remove_file(&socket).expect("rm");
        std::fs::write(&socket, b"").expect("write");
        assert_ne!(engine_key(Some(&host)), first);
        assert_eq!(engine_key(Some("tcp://10.0.0.1:2376")), "tcp://10.0.0.1:2376");
        assert_eq!(engine_key(Some("")), engine_key(None));
    }

    #[tokio::test]
    async fn the_engine_is_asked_once_until_the_answer_is_stale_or_for_another_engine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("engine.json");
        let engine = InMemory::default();
        assert_eq!(engine_version(&engine, &file, 1000).await.as_deref(), Some("in-memory"));
        let kept = read(&file).expect("kept");
        assert_eq!((kept.asked_s, kept.version.as_str()), (1000, "in-memory"));
        // Within the hour the file answers (a planted answer shows it is the file that does).
        let planted = Cached { version: "planted".into(), ..kept };
        write(&file, &planted).expect("write");
        assert_eq!(engine_version(&engine, &file, 1000 + MAX_AGE_S - 1).await.as_deref(), Some("planted"));
        // After it, or for another engine, the engine is asked again.
        assert_eq!(engine_version(&engine, &file, 1000 + MAX_AGE_S).await.as_deref(), Some("in-memory"));
        write(&file, &Cached { engine: "tcp://elsewhere".into(), asked_s: 1000, version: "planted".into() })
            .expect("write");
        assert_eq!(engine_version(&engine, &file, 1001).await.as_deref(), Some("in-memory"));
        // A file that is not an answer is asked past, and replaced.
        std::fs::write(&file, b"\x00garbage").expect("write");
        assert_eq!(engine_version(&engine, &file, 1002).await.as_deref(), Some("in-memory"));
        assert_eq!(read(&file).map(|c| c.asked_s), Some(1002));
    }
}
