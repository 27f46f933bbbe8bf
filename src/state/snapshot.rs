//! The observed-state snapshot: what `bai status --format json` writes and `bai plan --state` reads
//! (schema/state.schema.json). It is shaped the way nodes report: per node, what bai owns there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Permission;
use crate::state::spec::{SessionSpec, SourceKind};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub format_version: u32,
    pub clusters: Vec<ClusterSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSnapshot {
    pub name: String,
    pub nodes: Vec<NodeSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSnapshot {
    pub name: String,
    /// The installed agent; `None` when bai has never been on the node (it holds nothing).
    pub agent: Option<AgentInfo>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub inventory: Option<Inventory>,
    #[serde(default)]
    pub images: Vec<ImageSnapshot>,
    #[serde(default)]
    pub vfolders: Vec<VfolderSnapshot>,
    #[serde(default)]
    pub sessions: Vec<SessionSnapshot>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unowned: Vec<Unowned>,
    /// The node's current generation for the cluster (its newest record); `None` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub gpus: Vec<GpuInfo>,
    pub gpu_error: Option<String>,
    pub cpus: Option<u32>,
    pub memory: Option<u64>,
    pub docker_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total: u64,
    pub utilization: Option<u32>,
    // Reported since GPUs are placed by bai; absent in snapshots from before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used: Option<u64>,
    /// The NUMA node the GPU hangs off: a session's GPUs are kept on one where they fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// In MIG mode the GPU is never handed out whole; its instances are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mig_mode: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mig: Vec<MigInfo>,
    /// What uses the GPU now (processes, containers), whoever owns it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<GpuHolder>,
}

/// One MIG instance of a GPU in MIG mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigInfo {
    pub uuid: String,
    /// The profile, as NVML names it: `1g.10gb`.
    pub profile: String,
    pub memory_total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<GpuHolder>,
}

/// Something that uses a device: a process NVML reports, a container that was given the device, or both.
/// What it says comes from the node, so it is shown escaped and only decides what bai leaves alone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuHolder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The container's name, when the user is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// bai's cluster and session labels of that container, when it carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl GpuHolder {
    /// Whether this is session of `cluster` (its own use of its devices, not a reason to leave them out).
    pub fn is_session_of(&self, cluster: &str) -> bool {
        self.cluster.as_deref() == Some(cluster) && self.session.is_some()
    }

    /// Why the device is not free, in words: "used by process 4242, not in a container", "held by
    /// container `jupyter-x`", "held by session `a` of cluster `other`". Node-supplied names are escaped.
    pub fn describe(&self) -> String {
        let esc = crate::untrusted::escape;
        match (&self.container, &self.cluster, &self.session, self.pid) {
            (_, Some(c), Some(s), _) => format!("held by session `{}` of cluster `{}`", esc(s), esc(c)),
            (Some(name), _, _, Some(pid)) => format!("used by process {pid} in container `{}`, not bai's", esc(name)),
            (Some(name), _, _, None) => format!("held by container `{}`, not bai's", esc(name)),
            (None, _, _, Some(pid)) => format!("used by process {pid}, not in a container"),
            (None, _, _, None) => "in use by something bai does not own".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSnapshot {
    pub name: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub source: SourceKind,
    pub digest: Option<String>,
    pub spec_hash: String,
    /// Docker's id of the image the ref names on the node (`sha256:…`), when it is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The repository digest (`sha256:…`) of a pulled image, for the lock file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_digest: Option<String>,
    /// The sha256 of the build context or archive the node made the image from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfolderSnapshot {
    pub name: String,
    pub permission: Permission,
    pub quota: Option<u64>,
    pub empty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Restarting,
    Exited,
    Paused,
    Dead,
}

impl ContainerState {
    /// Docker's word for the state, as the JSON holds it.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
            ContainerState::Paused => "paused",
            ContainerState::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSnapshot {
    pub name: String,
    pub spec_hash: String,
    pub state: ContainerState,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub spec: Option<SessionSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unowned {
    pub kind: UnownedKind,
    pub name: String,
    /// Why bai does not take it for its own, where that is more than "no ownership marks": a vfolder
    /// whose marker bai cannot vouch for (`its marker is a FIFO, not a regular file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnownedKind {
    Container,
    Vfolder,
}
