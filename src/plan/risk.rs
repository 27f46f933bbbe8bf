//! Risk markers: the few kinds of change a reviewer must not wave through, decided in the pure diff so
//! that every rendering (text, JSON, Markdown) shows the same ones.
//!
//! The rules, each judged on the observed side because that is what the change takes away:
//!
//! - [`Risk::DestroysData`]: a vfolder is deleted, or replaced because it moves to another node, and its
//!   observed folder is not known to be empty (`empty != Some(true)`). `bai diff` and `plan --offline`
//!   cannot know what a folder holds, so there the unknown counts as data: the marker errs towards a
//!   second look. (The agent moves such a folder aside rather than erasing it, but for the lab it is gone.)
//! - [`Risk::InterruptsGpuSession`]: a session with GPUs is replaced or deleted while its container holds
//!   them: running, restarting or paused, or unknown (`bai diff` assumes OLD was applied and runs). Its
//!   GPUs are those observed; where the node did not record the spec, those configured.
//! - [`Risk::AddsNode`] / [`Risk::RemovesNode`]: a node's agent is installed or removed, which changes the
//!   lab's capacity.

use serde::{Deserialize, Serialize};

use crate::graph::Kind;
use crate::plan::{Action, Change};
use crate::state::ClusterState;
use crate::state::snapshot::ContainerState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    DestroysData,
    InterruptsGpuSession,
    AddsNode,
    RemovesNode,
}

impl Risk {
    /// The marker in words, as every rendering shows it.
    pub fn describe(self) -> &'static str {
        match self {
            Risk::DestroysData => "destroys vfolder data",
            Risk::InterruptsGpuSession => "interrupts a running GPU session",
            Risk::AddsNode => "adds a node",
            Risk::RemovesNode => "removes a node",
        }
    }
}

/// The risks of one change of the cluster going from `observed` to `desired`, sorted.
pub(crate) fn risks_of(change: &Change, desired: &ClusterState, observed: &ClusterState) -> Vec<Risk> {
    let name = change.id.name.as_str();
    let risk = match (change.id.kind, change.action) {
        (Kind::Node, Action::Create) => Some(Risk::AddsNode),
        (Kind::Node, Action::Delete) => Some(Risk::RemovesNode),
        (Kind::Vfolder, Action::Delete | Action::Replace) => observed.vfolders.get(name).and_then(|have| {
            let moves = desired.vfolders.get(name).is_none_or(|want| want.node != have.node);
            (moves && have.empty != Some(true)).then_some(Risk::DestroysData)
        }),
        (Kind::Session, Action::Delete | Action::Replace) => observed.sessions.get(name).and_then(|have| {
            let spec = have.spec.as_ref().or_else(|| desired.sessions.get(name).and_then(|s| s.spec.as_ref()));
            let gpus = spec.map_or(0, |s| s.resources.gpus);
            let holds = matches!(
                have.container,
                None | Some(ContainerState::Running | ContainerState::Restarting | ContainerState::Paused)
            );
            (gpus > 0 && holds).then_some(Risk::InterruptsGpuSession)
        }),
        _ => None,
    };
    risk.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ResourceId;
    use crate::model::{ClusterName, NodeName, Permission, Restart};
    use crate::state::spec::{ResourceSpec, SessionSpec};
    use crate::state::{SessionState, VfolderState};

    fn change(id: ResourceId, action: Action) -> Change {
        Change::new(ClusterName("lab".into()), id, Some("n1".into()), action)
    }

    fn empty() -> ClusterState {
        ClusterState::empty(ClusterName("lab".into()))
    }

    fn vfolder(node: &str, is_empty: Option<bool>) -> VfolderState {
        VfolderState { node: NodeName(node.into()), permission: Permission::Rw, quota: None, empty: is_empty }
    }

    fn session(gpus: Option<u32>, container: Option<ContainerState>) -> SessionState {
        let spec = gpus.map(|gpus| SessionSpec {
            image: "img".into(),
            image_ref: "img:1".into(),
            image_digest: None,
            node: "n1".into(),
            command: Vec::new(),
            env: Default::default(),
            mounts: Vec::new(),
            resources: ResourceSpec { cpus: None, memory: None, gpus, ..Default::default() },
            ports: Default::default(),
            restart: Restart::No,
            ..Default::default()
        });
        SessionState { node: NodeName("n1".into()), hash: "h".into(), spec, container }
    }

    fn with_vfolder(v: VfolderState) -> ClusterState {
        let mut s = empty();
        s.vfolders.insert("data".into(), v);
        s
    }

    fn with_session(s: SessionState) -> ClusterState {
        let mut c = empty();
        c.sessions.insert("train".into(), s);
        c
    }

    #[test]
    fn vfolder_removal_destroys_data_unless_known_empty() {
        let delete = change(ResourceId::vfolder("data"), Action::Delete);
        for (is_empty, risky) in [(Some(false), true), (None, true), (Some(true), false)] {
            let observed = with_vfolder(vfolder("n1", is_empty));
            let want = if risky { vec![Risk::DestroysData] } else { vec![] };
            assert_eq!(risks_of(&delete, &empty(), &observed), want, "empty: {is_empty:?}");
        }
        // A move replaces it; a quota change on the same node is an update and loses nothing.
        let replace = change(ResourceId::vfolder("data"), Action::Replace);
        let moved = with_vfolder(vfolder("n2", None));
        assert_eq!(risks_of(&replace, &moved, &with_vfolder(vfolder("n1", None))), vec![Risk::DestroysData]);
        let update = change(ResourceId::vfolder("data"), Action::Update);
        assert!(risks_of(&update, &with_vfolder(vfolder("n1", None)), &with_vfolder(vfolder("n1", None))).is_empty());
    }

    #[test]
    fn gpu_sessions_that_hold_their_gpus_are_interrupted() {
        let replace = change(ResourceId::session("train"), Action::Replace);
        let delete = change(ResourceId::session("train"), Action::Delete);
        let cases = [
            (Some(2), None, true),
            (Some(2), Some(ContainerState::Running), true),
            (Some(2), Some(ContainerState::Paused), true),
            (Some(2), Some(ContainerState::Exited), false),
            (Some(2), Some(ContainerState::Created), false),
            (Some(0), Some(ContainerState::Running), false),
        ];
        for (gpus, container, risky) in cases {
            let observed = with_session(session(gpus, container));
            let want = if risky { vec![Risk::InterruptsGpuSession] } else { vec![] };
            assert_eq!(risks_of(&replace, &empty(), &observed), want, "{gpus:?} {container:?}");
            assert_eq!(risks_of(&delete, &empty(), &observed), want, "{gpus:?} {container:?}");
        }
        // The node did not record the spec: the configured GPUs decide.
        let unknown = with_session(session(None, Some(ContainerState::Running)));
        assert_eq!(
            risks_of(&replace, &with_session(session(Some(1), None)), &unknown),
            vec![Risk::InterruptsGpuSession]
        );
        assert!(risks_of(&replace, &with_session(session(Some(0), None)), &unknown).is_empty());
        // Creating one interrupts nothing.
        let create = change(ResourceId::session("train"), Action::Create);
        assert!(risks_of(&create, &with_session(session(Some(4), None)), &empty()).is_empty());
    }

    #[test]
    fn nodes_added_and_removed() {
        let node = |action| risks_of(&change(ResourceId::node("n1"), action), &empty(), &empty());
        assert_eq!(node(Action::Create), vec![Risk::AddsNode]);
        assert_eq!(node(Action::Delete), vec![Risk::RemovesNode]);
        assert!(node(Action::Update).is_empty());
        let image = change(ResourceId::image("n1", "img"), Action::Delete);
        assert!(risks_of(&image, &empty(), &empty()).is_empty());
    }
}
