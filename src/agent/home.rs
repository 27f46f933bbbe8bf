//! Where the agent keeps its files on a node: `$BAI_HOME`, else `~/.local/share/bai`.
//!
//! `agent/<sha256>/bai` holds installed agents, `blobs/` uploads (content-addressed), `leases/` one lock
//! file per cluster, `generations/<cluster>/` the numbered generation records, `state/<cluster>/` what the agent must remember between runs (node labels, the images
//! it placed, the cluster's secret key: see `agent::secret_key`), `engine.json` the Docker engine's version (see `agent::engine_version`), and `machine-id` on a machine without one of its own (see `agent::identity`). Cluster names are validated plain names, so they are safe as path components.

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
