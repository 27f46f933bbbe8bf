//! What the agent remembers per cluster between runs: that the node is enrolled, its labels, and the
//! images it placed (Docker keeps no owner on a pulled image, so bai keeps its own record).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::protocol::{ErrorKind, RpcError};
use crate::state::spec::SourceKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    #[serde(rename = "ref")]
    pub reference: String,
    pub source: SourceKind,
    pub digest: Option<String>,
    pub spec_hash: String,
    pub id: String,
    /// The sha256 of the build context or archive the image was made from (for the lock file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub labels: BTreeMap<String, String>,
    pub images: BTreeMap<String, ImageRecord>,
}

const FILE: &str = "cluster.json";

fn failed(path: &Path, e: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorKind::Failed, format!("cannot use `{}`: {e}", path.display())).with_code("bai::agent::records")
}

/// The record, or `None` when the node was never enrolled in the cluster.
pub fn load(dir: &Path) -> Result<Option<ClusterRecord>, RpcError> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| failed(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed(&path, e)),
    }
}

pub fn save(dir: &Path, record: &ClusterRecord) -> Result<(), RpcError> {
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let text = serde_json::to_string_pretty(record).map_err(|e| failed(&path, e))?;
    std::fs::write(&tmp, text).map_err(|e| failed(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| failed(&path, e))
}

pub fn forget(dir: &Path) -> Result<(), RpcError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(dir, e)),
    }
}
