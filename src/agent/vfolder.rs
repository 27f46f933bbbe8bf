//! Vfolders on a node: directories under the node's vfolder root, each carrying bai's marker file.
//!
//! A directory without the marker, or with another cluster's, is not bai's: it is reported, never
//! touched. Removing a vfolder that holds data needs `allow_data_loss`, and even then the directory is
//! moved aside into `.bai-tombstones/` under the root rather than erased: data is only ever lost by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent::home::is_safe_component;
use crate::model::Permission;
use crate::protocol::{ErrorKind, RpcError};
use crate::state::snapshot::{Unowned, UnownedKind, VfolderSnapshot};

pub const MARKER: &str = ".bai-vfolder.json";
pub const TOMBSTONES: &str = ".bai-tombstones";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub cluster: String,
    pub name: String,
    pub permission: Permission,
    pub quota: Option<u64>,
}

fn failed(what: &str, path: &Path, e: std::io::Error) -> RpcError {
    RpcError::new(ErrorKind::Failed, format!("cannot {what} `{}`: {e}", path.display()))
}

fn dir_of(root: &Path, name: &str) -> Result<PathBuf, RpcError> {
    if !is_safe_component(name) {
        return Err(RpcError::new(ErrorKind::BadRequest, format!("`{name}` is not a vfolder name")));
    }
    Ok(root.join(name))
}

fn read_marker(dir: &Path) -> Option<Marker> {
    let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether a vfolder holds nothing but its marker.
fn is_empty(dir: &Path) -> Result<bool, RpcError> {
    let entries = std::fs::read_dir(dir).map_err(|e| failed("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| failed("read", dir, e))?;
        if entry.file_name() != MARKER {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The cluster's vfolders under `root`, and the directories holding one of `wanted` names that bai
/// does not own.
pub fn observe(root: &Path, cluster: &str) -> Result<(Vec<VfolderSnapshot>, Vec<Unowned>), RpcError> {
    let mut owned = BTreeMap::new();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(failed("read the vfolder root", root, e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let Some(marker) = read_marker(&path) else { continue };
        if marker.cluster != cluster || entry.file_name().to_str() != Some(marker.name.as_str()) {
            continue;
        }
        let empty = is_empty(&path)?;
        owned.insert(
            marker.name.clone(),
            VfolderSnapshot { name: marker.name, permission: marker.permission, quota: marker.quota, empty },
        );
    }
    Ok((owned.into_values().collect(), Vec::new()))
}

/// Creates the vfolder, or updates its recorded permission and quota. Refuses a directory bai does not own.
pub fn ensure(
    root: &Path,
    cluster: &str,
    name: &str,
    permission: Permission,
    quota: Option<u64>,
) -> Result<(), RpcError> {
    let dir = dir_of(root, name)?;
    if dir.exists() {
        match read_marker(&dir) {
            Some(m) if m.cluster == cluster => {}
            Some(m) => {
                return Err(RpcError::new(
                    ErrorKind::Refused,
                    format!("`{}` belongs to cluster `{}`, not `{cluster}`", dir.display(), m.cluster),
                ));
            }
            None => {
                return Err(RpcError::new(
                    ErrorKind::Refused,
                    format!("`{}` exists and is not a bai vfolder: bai leaves it alone", dir.display()),
                ));
            }
        }
    } else {
        std::fs::create_dir_all(&dir).map_err(|e| failed("create", &dir, e))?;
    }
    let marker = Marker { cluster: cluster.to_string(), name: name.to_string(), permission, quota };
    let text = serde_json::to_string_pretty(&marker).unwrap_or_default();
    // Written beside and renamed, so a crash never leaves a half marker (which would orphan the folder).
    let tmp = dir.join(format!("{MARKER}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| failed("write", &tmp, e))?;
    std::fs::rename(&tmp, dir.join(MARKER)).map_err(|e| failed("write", &dir, e))
}

/// What `remove` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Removed {
    Absent,
    Deleted,
    Tombstoned { path: String },
}

pub fn remove(root: &Path, cluster: &str, name: &str, allow_data_loss: bool, now: u64) -> Result<Removed, RpcError> {
    let dir = dir_of(root, name)?;
    if !dir.exists() {
        return Ok(Removed::Absent);
    }
    match read_marker(&dir) {
        Some(m) if m.cluster == cluster => {}
        _ => {
            return Err(RpcError::new(
                ErrorKind::Refused,
                format!("`{}` is not a vfolder of cluster `{cluster}`: bai leaves it alone", dir.display()),
            ));
        }
    }
    if is_empty(&dir)? {
        std::fs::remove_dir_all(&dir).map_err(|e| failed("remove", &dir, e))?;
        return Ok(Removed::Deleted);
    }
    if !allow_data_loss {
        return Err(RpcError::new(
            ErrorKind::Refused,
            format!(
                "vfolder `{name}` holds data: not removed (run with --allow-data-loss to move it aside to {}/)",
                root.join(TOMBSTONES).display()
            ),
        ));
    }
    let graves = root.join(TOMBSTONES);
    std::fs::create_dir_all(&graves).map_err(|e| failed("create", &graves, e))?;
    let grave = graves.join(format!("{cluster}.{name}.{now}"));
    std::fs::rename(&dir, &grave).map_err(|e| failed("move aside", &dir, e))?;
    Ok(Removed::Tombstoned { path: grave.display().to_string() })
}

/// The host directory of a vfolder (for bind mounts).
pub fn path_of(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// Directories at the place of wanted vfolders that bai does not own, for `bai status`.
pub fn unowned(root: &Path, cluster: &str, wanted: &[String]) -> Vec<Unowned> {
    wanted
        .iter()
        .filter(|name| is_safe_component(name))
        .filter(|name| {
            let dir = root.join(name);
            dir.exists() && read_marker(&dir).is_none_or(|m| m.cluster != cluster)
        })
        .map(|name| Unowned { kind: UnownedKind::Vfolder, name: name.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(remove(root, "lab", "data", true, 8).expect("absent"), Removed::Absent);
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
        assert_eq!(
            ensure(root, "lab", "../escape", Permission::Rw, None).map_err(|e| e.kind),
            Err(ErrorKind::BadRequest)
        );
    }
}
