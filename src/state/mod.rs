//! Desired and observed state in one shape, so that planning is a diff of two values.
//!
//! Desired state comes from a validated [`Cluster`]; observed state from a node snapshot, from another
//! configuration (`bai diff`: "as if OLD were applied"), or from nothing at all (`plan --offline`).

pub mod snapshot;
pub mod spec;

use std::collections::BTreeMap;

use crate::model::{Cluster, ClusterName, ImageName, NodeName, Permission, SessionName, VfolderName};
use crate::state::snapshot::{ContainerState, Inventory, Snapshot};
use crate::state::spec::{ImageSpec, SessionSpec, hash_of, image_spec, session_spec};

/// The version every node's agent is brought to: this binary's.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// Installed agent version; `None` when nothing is installed.
    pub agent: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub inventory: Option<Inventory>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageState {
    pub spec: ImageSpec,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VfolderState {
    pub node: NodeName,
    pub permission: Permission,
    pub quota: Option<u64>,
    /// Observed only: whether the directory holds no data (removing it then loses nothing).
    pub empty: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    pub node: NodeName,
    pub hash: String,
    /// Known for desired state always; for observed state when the node recorded it.
    pub spec: Option<SessionSpec>,
    pub container: Option<ContainerState>,
}

/// Everything bai owns in one cluster, desired or observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterState {
    pub name: ClusterName,
    pub nodes: BTreeMap<NodeName, NodeState>,
    pub images: BTreeMap<(NodeName, ImageName), ImageState>,
    pub vfolders: BTreeMap<VfolderName, VfolderState>,
    pub sessions: BTreeMap<SessionName, SessionState>,
    /// Observed only: what each node that answered has (GPUs above all), enrolled or not yet: a first
    /// apply places GPU sessions by UUID too.
    pub inventories: BTreeMap<NodeName, Inventory>,
}

impl ClusterState {
    pub fn empty(name: ClusterName) -> Self {
        ClusterState {
            name,
            nodes: BTreeMap::new(),
            images: BTreeMap::new(),
            vfolders: BTreeMap::new(),
            sessions: BTreeMap::new(),
            inventories: BTreeMap::new(),
        }
    }

    /// The state a valid cluster asks for, its GPU sessions placed as if nothing were known of its nodes
    /// but their declared `gpus` (offline plans, `bai diff`); [`ClusterState::desired_on`] places them
    /// against what the nodes reported.
    pub fn desired(cluster: &Cluster) -> Self {
        Self::desired_on(cluster, &ClusterState::empty(cluster.name.value.clone())).0
    }

    /// The state a valid cluster asks for, its GPU sessions placed against `observed` ([`crate::gpu::place`]):
    /// running sessions keep their devices, devices something else holds are left out.
    pub fn desired_on(cluster: &Cluster, observed: &ClusterState) -> (Self, crate::gpu::place::Placement) {
        let mut state = Self::unplaced(cluster);
        let placement = crate::gpu::place::place(cluster, &mut state, observed);
        (state, placement)
    }

    /// The state a valid cluster asks for before GPUs are placed. Images exist on a node only where a
    /// session there uses them.
    fn unplaced(cluster: &Cluster) -> Self {
        let mut state = ClusterState::empty(cluster.name.value.clone());
        for node in &cluster.nodes {
            let labels = node.labels.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect();
            state.nodes.insert(
                node.name.value.clone(),
                NodeState { agent: Some(AGENT_VERSION.to_string()), labels, inventory: None },
            );
        }
        let images: BTreeMap<&str, _> = cluster.images.iter().map(|i| (i.name.value.as_str(), i)).collect();
        let mut image_hashes: BTreeMap<&str, ImageState> = BTreeMap::new();
        for v in &cluster.vfolders {
            state.vfolders.insert(
                v.name.value.clone(),
                VfolderState {
                    node: v.node.value.clone(),
                    permission: v.permission(),
                    quota: v.quota.as_ref().map(|q| q.value),
                    empty: None,
                },
            );
        }
        for s in &cluster.sessions {
            let image = images.get(s.image.value.as_str()).copied();
            if let Some(image) = image {
                let image_state = image_hashes.entry(image.name.value.as_str()).or_insert_with(|| {
                    let spec = image_spec(image);
                    ImageState { hash: hash_of(&spec), spec }
                });
                state
                    .images
                    .entry((s.node.value.clone(), image.name.value.clone()))
                    .or_insert_with(|| image_state.clone());
            }
            let spec = session_spec(s, image);
            state.sessions.insert(
                s.name.value.clone(),
                SessionState { node: s.node.value.clone(), hash: hash_of(&spec), spec: Some(spec), container: None },
            );
        }
        state
    }

    /// Observed state of one cluster from what its nodes reported.
    pub fn observed(name: &ClusterName, nodes: Vec<snapshot::NodeSnapshot>) -> ClusterState {
        let snapshot = Snapshot {
            format_version: snapshot::FORMAT_VERSION,
            clusters: vec![snapshot::ClusterSnapshot { name: name.to_string(), nodes }],
        };
        ClusterState::from_snapshot(&snapshot).remove(name).unwrap_or_else(|| ClusterState::empty(name.clone()))
    }

    /// Observed state of every cluster of a snapshot, by cluster name.
    pub fn from_snapshot(snapshot: &Snapshot) -> BTreeMap<ClusterName, ClusterState> {
        let mut out = BTreeMap::new();
        for c in &snapshot.clusters {
            let mut state = ClusterState::empty(ClusterName(c.name.clone()));
            for n in &c.nodes {
                let node = NodeName(n.name.clone());
                if let Some(inventory) = &n.inventory {
                    state.inventories.insert(node.clone(), inventory.clone());
                }
                // A node is bai's once enrolled (`agent` set); what bai owns there counts either way.
                if let Some(agent) = &n.agent {
                    state.nodes.insert(
                        node.clone(),
                        NodeState {
                            agent: Some(agent.version.clone()),
                            labels: n.labels.clone(),
                            inventory: n.inventory.clone(),
                        },
                    );
                }
                for i in &n.images {
                    let spec = ImageSpec { reference: i.reference.clone(), source: i.source, digest: i.digest.clone() };
                    state.images.insert(
                        (node.clone(), ImageName(i.name.clone())),
                        ImageState { spec, hash: i.spec_hash.clone() },
                    );
                }
                for v in &n.vfolders {
                    state.vfolders.insert(
                        VfolderName(v.name.clone()),
                        VfolderState {
                            node: node.clone(),
                            permission: v.permission,
                            quota: v.quota,
                            empty: Some(v.empty),
                        },
                    );
                }
                for s in &n.sessions {
                    state.sessions.insert(
                        SessionName(s.name.clone()),
                        SessionState {
                            node: node.clone(),
                            hash: s.spec_hash.clone(),
                            spec: s.spec.clone(),
                            container: Some(s.state),
                        },
                    );
                }
            }
            out.insert(state.name.clone(), state);
        }
        out
    }

    /// Inventory of the nodes that reported one, for the declared-GPU check.
    pub fn inventories(&self) -> impl Iterator<Item = (&NodeName, &Inventory)> {
        self.inventories.iter()
    }
}

impl ClusterState {
    /// This state as a snapshot, shaped the way nodes report it (what `bai status --format json` writes).
    pub fn to_snapshot(&self) -> snapshot::ClusterSnapshot {
        use snapshot::{AgentInfo, ClusterSnapshot, ImageSnapshot, NodeSnapshot, SessionSnapshot, VfolderSnapshot};
        let mut nodes: BTreeMap<&NodeName, NodeSnapshot> = self
            .nodes
            .iter()
            .map(|(name, n)| {
                let node = NodeSnapshot {
                    name: name.to_string(),
                    agent: n.agent.as_ref().map(|v| AgentInfo { version: v.clone() }),
                    labels: n.labels.clone(),
                    inventory: n.inventory.clone(),
                    images: Vec::new(),
                    vfolders: Vec::new(),
                    sessions: Vec::new(),
                    unowned: Vec::new(),
                    generation: None,
                };
                (name, node)
            })
            .collect();
        for ((node, name), image) in &self.images {
            if let Some(n) = nodes.get_mut(node) {
                n.images.push(ImageSnapshot {
                    name: name.to_string(),
                    reference: image.spec.reference.clone(),
                    source: image.spec.source,
                    digest: image.spec.digest.clone(),
                    spec_hash: image.hash.clone(),
                    id: None,
                    repo_digest: None,
                    content: None,
                });
            }
        }
        for (name, v) in &self.vfolders {
            if let Some(n) = nodes.get_mut(&v.node) {
                n.vfolders.push(VfolderSnapshot {
                    name: name.to_string(),
                    permission: v.permission,
                    quota: v.quota,
                    empty: v.empty.unwrap_or(true),
                });
            }
        }
        for (name, s) in &self.sessions {
            if let Some(n) = nodes.get_mut(&s.node) {
                n.sessions.push(SessionSnapshot {
                    name: name.to_string(),
                    spec_hash: s.hash.clone(),
                    state: s.container.unwrap_or(ContainerState::Running),
                    exit_code: None,
                    spec: s.spec.clone(),
                });
            }
        }
        ClusterSnapshot { name: self.name.to_string(), nodes: nodes.into_values().collect() }
    }
}

impl ClusterState {
    /// Only what lives on `nodes`: a run limited by `--on`, or by the nodes that answered.
    pub fn restrict(&self, nodes: &std::collections::BTreeSet<NodeName>) -> ClusterState {
        ClusterState {
            name: self.name.clone(),
            nodes: self.nodes.iter().filter(|(n, _)| nodes.contains(*n)).map(|(k, v)| (k.clone(), v.clone())).collect(),
            images: self
                .images
                .iter()
                .filter(|((n, _), _)| nodes.contains(n))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            vfolders: self
                .vfolders
                .iter()
                .filter(|(_, v)| nodes.contains(&v.node))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            sessions: self
                .sessions
                .iter()
                .filter(|(_, s)| nodes.contains(&s.node))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            inventories: self
                .inventories
                .iter()
                .filter(|(n, _)| nodes.contains(*n))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}
