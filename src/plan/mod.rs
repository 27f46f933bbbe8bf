//! Plans: the changes that turn observed state into desired state, in graph order, and their renderings.

mod dependants;
mod diff;
pub mod fields;
mod render_json;
mod render_markdown;
mod render_text;
mod risk;
pub mod saved;

pub use diff::diff;
pub use render_json::render_json;
pub use render_markdown::render_markdown;
pub use render_text::render_text;
pub use risk::Risk;

use serde::{Deserialize, Serialize};

use crate::graph::{Kind, ResourceId};
use crate::model::ClusterName;
use crate::state::{ClusterState, ImageState, NodeState, SessionState, VfolderState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
}

impl Action {
    /// The sign a plan shows before the resource id.
    pub fn sign(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// One field that differs, with its values before and after (`None`: absent on that side).
///
/// Serialized, an absent side is left out, so that a saved plan keeps "absent" apart from a JSON `null`
/// value (`render_json` writes both as `null`, as its schema says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub before: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub after: Option<serde_json::Value>,
}

/// A key that is there holds a value, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub cluster: ClusterName,
    pub id: ResourceId,
    /// The node the change happens on.
    pub node: Option<String>,
    pub action: Action,
    /// Why, in words: one line each.
    pub reasons: Vec<String>,
    pub fields: Vec<FieldChange>,
    /// What a reviewer must not miss about this change, sorted (see [`Risk`] for the rules).
    #[serde(default)]
    pub risks: Vec<Risk>,
    /// The resource as observed (`None` for a create) and as desired (`None` for a delete), spec and hash
    /// included, taken when the plan was made: what the executor carries out, with nothing looked up
    /// again. Not part of the plan a person or a file reads (a saved plan gets them again from the state
    /// it is checked against, [`saved::carry_states`]), nor of what makes two changes the same.
    #[serde(skip)]
    pub before: Option<ResourceState>,
    #[serde(skip)]
    pub after: Option<ResourceState>,
}

impl Change {
    /// A change with no reasons, fields, risks or states yet.
    pub fn new(cluster: ClusterName, id: ResourceId, node: Option<String>, action: Action) -> Self {
        Change {
            cluster,
            id,
            node,
            action,
            reasons: Vec::new(),
            fields: Vec::new(),
            risks: Vec::new(),
            before: None,
            after: None,
        }
    }
}

impl PartialEq for Change {
    fn eq(&self, other: &Self) -> bool {
        (&self.cluster, &self.id, &self.node, self.action, &self.reasons, &self.fields, &self.risks)
            == (&other.cluster, &other.id, &other.node, other.action, &other.reasons, &other.fields, &other.risks)
    }
}

/// One resource's state, desired or observed, as a change carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceState {
    Node(NodeState),
    Image(ImageState),
    Vfolder(VfolderState),
    /// Boxed: a session's spec is by far the largest of the four.
    Session(Box<SessionState>),
}

impl ResourceState {
    /// The resource `id` in `state`, when it holds it.
    pub fn of(state: &ClusterState, id: &ResourceId) -> Option<ResourceState> {
        let name = id.name.as_str();
        match id.kind {
            Kind::Node => state.nodes.get(name).cloned().map(ResourceState::Node),
            Kind::Image => {
                let node = id.node.as_deref()?;
                state.images.get(&(node.into(), name.into())).cloned().map(ResourceState::Image)
            }
            Kind::Vfolder => state.vfolders.get(name).cloned().map(ResourceState::Vfolder),
            Kind::Session => state.sessions.get(name).cloned().map(|s| ResourceState::Session(Box::new(s))),
        }
    }
}

/// `from` must exist before `to`: `to` depends on `from`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Edge {
    pub cluster: ClusterName,
    pub from: ResourceId,
    pub to: ResourceId,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
}

impl Summary {
    pub fn is_empty(&self) -> bool {
        self.create + self.update + self.replace + self.delete == 0
    }

    pub fn line(&self) -> String {
        if self.is_empty() {
            return "No changes.".to_string();
        }
        format!(
            "Plan: {} to create, {} to update, {} to replace, {} to delete.",
            self.create, self.update, self.replace, self.delete
        )
    }
}

/// Every change for every cluster planned, in execution order within each cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub clusters: Vec<ClusterName>,
    pub changes: Vec<Change>,
    /// The dependency edges among the changed resources and everything depending on them, per cluster
    /// in the order of `clusters`, then sorted: what the review graph draws.
    #[serde(default)]
    pub edges: Vec<Edge>,
    /// The devices placed for every GPU session of the planned clusters, changed or not, by cluster and
    /// session: what the plan gives each session ([`crate::gpu::place`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<PlacedGpus>,
}

/// One session's placed devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedGpus {
    pub cluster: ClusterName,
    pub node: String,
    pub session: String,
    pub devices: Vec<crate::gpu::place::DeviceView>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
            }
        }
        s
    }

    /// Each risky change with one of its risks, by risk, then in plan order.
    pub fn risks(&self) -> Vec<(Risk, &Change)> {
        let mut out: Vec<(Risk, &Change)> =
            self.changes.iter().flat_map(|c| c.risks.iter().map(move |r| (*r, c))).collect();
        out.sort_by_key(|(r, _)| *r);
        out
    }
}

/// A JSON value as a reviewer reads it: strings quoted, sizes and lists compact.
pub fn show_value(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "(none)".to_string(),
        // JSON escapes C0 controls but not C1 ones or bidirectional marks; an observed value came
        // from a node.
        Some(v) => crate::untrusted::escape(&v.to_string()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_survives_json_round_trips() {
        let lab = ClusterName("lab".into());
        let change = |id: ResourceId, action, fields, risks| Change {
            reasons: vec!["why".into()],
            fields,
            risks,
            ..Change::new(lab.clone(), id, Some("gpu-01".into()), action)
        };
        let plan = Plan {
            clusters: vec![lab.clone(), ClusterName("empty".into())],
            changes: vec![
                change(ResourceId::node("gpu-01"), Action::Create, vec![], vec![Risk::AddsNode]),
                change(ResourceId::image("gpu-01", "pytorch"), Action::Replace, vec![], vec![]),
                change(
                    ResourceId::session("train"),
                    Action::Replace,
                    vec![
                        // An absent side, a JSON null and a value must stay three different things.
                        FieldChange { path: "image_digest".into(), before: Some(serde_json::Value::Null), after: None },
                        FieldChange { path: "resources.gpus".into(), before: None, after: Some(4.into()) },
                    ],
                    vec![Risk::InterruptsGpuSession],
                ),
                change(ResourceId::vfolder("scratch"), Action::Delete, vec![], vec![Risk::DestroysData]),
            ],
            edges: vec![Edge {
                cluster: lab.clone(),
                from: ResourceId::image("gpu-01", "pytorch"),
                to: ResourceId::session("train"),
            }],
            gpus: Vec::new(),
        };
        let json = serde_json::to_string(&plan).expect("serializes");
        let back: Plan = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, plan);
        assert_eq!(serde_json::to_string(&back).expect("serializes"), json);
        assert!(json.contains(r#""id":"image:gpu-01/pytorch""#) && json.contains(r#""risks":["destroys_data"]"#));
    }
}
