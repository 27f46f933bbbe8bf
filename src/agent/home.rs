//! Where the agent keeps its files on a node: `$BAI_HOME`, else `~/.local/share/bai`.
//!
//! `agent/<sha256>/bai` holds installed agents (removed once unused for a month: see `agent::installed`), `blobs/` uploads (content-addressed), `leases/` one lock
//! file per cluster, `generations/<cluster>/` the numbered generation records, `state/<cluster>/` what the agent must remember between runs (node labels, the images
//! it placed, the cluster's secret key: see `agent::secret_key`), `engine.json` the Docker engine's version (see `agent::engine_version`), `gpu-claims.json` the GPUs other containers asked for, and `machine-id` on a machine without one of its own (see `agent::identity`). Cluster names are validated plain names, so they are safe as path components.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
    user_home: PathBuf,
}

impl Home {
    pub fn from_env() -> Self {
        let user_home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        let root =
            std::env::var_os("BAI_HOME").map(PathBuf::from).unwrap_or_else(|| user_home.join(".local/share/bai"));
        Home { root, user_home }
    }

    pub fn at(root: &Path, user_home: &Path) -> Self {
        Home { root: root.to_path_buf(), user_home: user_home.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob(&self, sha256: &str) -> PathBuf {
        self.blobs().join(sha256)
    }

    /// The engine's version, kept between connections ([`crate::agent::engine_version`]).
    pub fn engine_version(&self) -> PathBuf {
        self.root.join("engine.json")
    }

    /// What other containers' GPU requests were, by container id ([`crate::agent::docker::Engine::gpu_holders`]).
    pub fn gpu_claims(&self) -> PathBuf {
        self.root.join("gpu-claims.json")
    }

    pub fn leases(&self) -> PathBuf {
        self.root.join("leases")
    }

    pub fn cluster_state(&self, cluster: &str) -> PathBuf {
        self.root.join("state").join(cluster)
    }

    /// The cluster's generation records: beside `state/<cluster>`, not in it, so that `leave` (the end of
    /// a destroy) keeps the history a later rollback needs.
    pub fn generations(&self, cluster: &str) -> PathBuf {
        self.root.join("generations").join(cluster)
    }

    /// A configured path on the node: `~/x` is the agent user's home, a relative path lies under it too.
    pub fn expand(&self, configured: &str) -> PathBuf {
        if configured == "~" {
            return self.user_home.clone();
        }
        if let Some(rest) = configured.strip_prefix("~/") {
            return self.user_home.join(rest);
        }
        let p = Path::new(configured);
        if p.is_absolute() { p.to_path_buf() } else { self.user_home.join(p) }
    }
}

/// Writes `bytes` to `path` whole: under a name of this process's first, then renamed, so that agents of
/// parallel connections may write at once and a reader sees one file or the other.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The JSON in the first `max` bytes of `path`; `None` when there is no such file or it is not that.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, max: u64) -> Option<T> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(max).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether a string is safe as one path component (names bai validated, hex hashes).
pub fn is_safe_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_expand_against_the_agent_users_home() {
        let h = Home::at(Path::new("/state"), Path::new("/home/u"));
        assert_eq!(h.expand("~/.local/share/bai/vfolders"), PathBuf::from("/home/u/.local/share/bai/vfolders"));
        assert_eq!(h.expand("/srv/v"), PathBuf::from("/srv/v"));
        assert_eq!(h.expand("v"), PathBuf::from("/home/u/v"));
        assert!(is_safe_component("gpu-01"));
        assert!(!is_safe_component("../x"));
        assert!(!is_safe_component(".."));
    }
}
