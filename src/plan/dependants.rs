//! What a change reaches: for each changed resource, every resource that depends on it, transitively,
//! as the dependency edges among them. The Markdown review draws them so that a reviewer sees what a
//! replace or delete drags along.
//!
//! Edges come from the desired graph (the configuration, `depends-on` included) and from the observed
//! state (what the nodes hold: a deleted resource exists only there). Observed edges follow the same
//! rules as the graph: node → image and vfolder on it → the sessions using them; a session with neither
//! an image there nor a recorded spec hangs off its node.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::{ResourceGraph, ResourceId};
use crate::model::{ClusterName, ImageName, NodeName};
use crate::plan::{Change, Edge};
use crate::state::ClusterState;

/// The edges among the changed resources and their dependants, sorted by (from, to).
pub(crate) fn dependant_edges(
    cluster: &ClusterName,
    changes: &[Change],
    graph: &ResourceGraph,
    observed: &ClusterState,
) -> Vec<Edge> {
    let mut all: BTreeSet<(ResourceId, ResourceId)> =
        graph.sorted_edges().into_iter().map(|(a, b)| (a.clone(), b.clone())).collect();
    all.extend(observed_edges(observed));
    let mut next: BTreeMap<&ResourceId, Vec<&ResourceId>> = BTreeMap::new();
    for (a, b) in &all {
        next.entry(a).or_default().push(b);
    }
    let mut reached: BTreeSet<&ResourceId> = changes.iter().map(|c| &c.id).collect();
    let mut todo: Vec<&ResourceId> = reached.iter().copied().collect();
    while let Some(id) = todo.pop() {
        for &d in next.get(id).into_iter().flatten() {
            if reached.insert(d) {
                todo.push(d);
            }
        }
    }
    // Every edge leaving a reached resource ends at a reached one: that is the subgraph.
    all.iter()
        .filter(|(a, _)| reached.contains(a))
        .map(|(a, b)| Edge { cluster: cluster.clone(), from: a.clone(), to: b.clone() })
        .collect()
}

fn observed_edges(state: &ClusterState) -> Vec<(ResourceId, ResourceId)> {
    let mut out = Vec::new();
    for (node, image) in state.images.keys() {
        out.push((ResourceId::node(node.as_str()), ResourceId::image(node.as_str(), image.as_str())));
    }
    for (name, v) in &state.vfolders {
        out.push((ResourceId::node(v.node.as_str()), ResourceId::vfolder(name.as_str())));
    }
    for (name, s) in &state.sessions {
        let id = ResourceId::session(name.as_str());
        let image: Option<(NodeName, ImageName)> =
            s.spec.as_ref().map(|spec| (s.node.clone(), spec.image.as_str().into()));
        match image.filter(|key| state.images.contains_key(key)) {
            Some((node, image)) => out.push((ResourceId::image(node.as_str(), image.as_str()), id.clone())),
            None => out.push((ResourceId::node(s.node.as_str()), id.clone())),
        }
        for m in s.spec.iter().flat_map(|spec| &spec.mounts) {
            if state.vfolders.contains_key(m.vfolder.as_str()) {
                out.push((ResourceId::vfolder(&m.vfolder), id.clone()));
            }
        }
    }
    out
}
