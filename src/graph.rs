//! The resource DAG of a cluster: node agents before the images and vfolders on them, those before the
//! sessions using them, and a session before the sessions that `depends-on` it. Edges mean "must happen
//! before"; destroy walks them backwards.

use std::collections::HashMap;
use std::fmt::{self, Write};

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::model::{Cluster, ClusterName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Node,
    Image,
    Vfolder,
    Session,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Image => "image",
            Kind::Vfolder => "vfolder",
            Kind::Session => "session",
        }
    }
}

/// `node:<name>`, `image:<node>/<name>`, `vfolder:<name>`, `session:<name>`: unique within a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    pub kind: Kind,
    /// The node an image is placed on (images are per node; other kinds name their node elsewhere).
    pub node: Option<String>,
    pub name: String,
}

impl ResourceId {
    pub fn node(name: &str) -> Self {
        ResourceId { kind: Kind::Node, node: None, name: name.to_string() }
    }
    pub fn image(node: &str, name: &str) -> Self {
        ResourceId { kind: Kind::Image, node: Some(node.to_string()), name: name.to_string() }
    }
    pub fn vfolder(name: &str) -> Self {
        ResourceId { kind: Kind::Vfolder, node: None, name: name.to_string() }
    }
    pub fn session(name: &str) -> Self {
        ResourceId { kind: Kind::Session, node: None, name: name.to_string() }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{}:{}/{}", self.kind.as_str(), node, self.name),
            None => write!(f, "{}:{}", self.kind.as_str(), self.name),
        }
    }
}

/// A string that is not a resource id (`node:<name>`, `image:<node>/<name>`, `vfolder:<name>`,
/// `session:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a resource id (`node:N`, `image:N/I`, `vfolder:V` or `session:S`)")]
pub struct BadResourceId(pub String);

impl std::str::FromStr for ResourceId {
    type Err = BadResourceId;

    /// The inverse of `Display`: kinds hold no `:` and node names no `/`, so the first of each splits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadResourceId(s.to_string());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let id = match (kind, rest.split_once('/')) {
            (_, _) if rest.is_empty() => None,
            ("node", _) => Some(ResourceId::node(rest)),
            ("vfolder", _) => Some(ResourceId::vfolder(rest)),
            ("session", _) => Some(ResourceId::session(rest)),
            ("image", Some((node, name))) if !node.is_empty() && !name.is_empty() => {
                Some(ResourceId::image(node, name))
            }
            _ => None,
        };
        id.ok_or_else(bad)
    }
}

/// Saved plans write an id the way people read it, `session:train`, rather than as its parts.
impl Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The resource DAG of one (valid) cluster.
#[derive(Debug, Default)]
pub struct ResourceGraph {
    pub graph: DiGraph<ResourceId, ()>,
    index: HashMap<ResourceId, NodeIndex>,
}

impl ResourceGraph {
    fn vertex(&mut self, id: ResourceId) -> NodeIndex {
        if let Some(&i) = self.index.get(&id) {
            return i;
        }
        let i = self.graph.add_node(id.clone());
        self.index.insert(id, i);
        i
    }

    fn edge(&mut self, from: NodeIndex, to: NodeIndex) {
        self.graph.update_edge(from, to, ());
    }

    /// Adds a resource (for graphs built from something else than a lab: `generation::graph_of`).
    pub fn add(&mut self, id: ResourceId) {
        self.vertex(id);
    }

    /// Adds `from` and `to` and the edge "`from` before `to`".
    pub fn link(&mut self, from: ResourceId, to: ResourceId) {
        let (a, b) = (self.vertex(from), self.vertex(to));
        self.edge(a, b);
    }

    pub fn get(&self, id: &ResourceId) -> Option<NodeIndex> {
        self.index.get(id).copied()
    }

    /// Each resource's depth: 0 for node agents, 1 + the deepest predecessor otherwise. Resources of one
    /// level can be worked on in parallel.
    pub fn levels(&self) -> HashMap<ResourceId, usize> {
        let order = toposort(&self.graph, None).unwrap_or_else(|_| self.graph.node_indices().collect());
        let mut level = vec![0usize; self.graph.node_count()];
        for i in order {
            let depth = self
                .graph
                .neighbors_directed(i, petgraph::Direction::Incoming)
                .map(|p| level[p.index()] + 1)
                .max()
                .unwrap_or(0);
            level[i.index()] = depth;
        }
        self.graph.node_indices().map(|i| (self.graph[i].clone(), level[i.index()])).collect()
    }

    /// Edges as sorted pairs of ids, for rendering.
    pub fn sorted_edges(&self) -> Vec<(&ResourceId, &ResourceId)> {
        let mut edges: Vec<_> = self
            .graph
            .edge_indices()
            .filter_map(|e| self.graph.edge_endpoints(e))
            .map(|(a, b)| (&self.graph[a], &self.graph[b]))
            .collect();
        edges.sort();
        edges
    }

    pub fn sorted_vertices(&self) -> Vec<&ResourceId> {
        let mut v: Vec<_> = self.graph.node_weights().collect();
        v.sort();
        v
    }
}

/// Builds the DAG of a valid cluster. References that do not resolve are skipped (validation reports them).
pub fn build_graph(cluster: &Cluster) -> ResourceGraph {
    let mut g = ResourceGraph::default();
    let nodes: HashMap<&str, NodeIndex> = cluster
        .nodes
        .iter()
        .map(|n| (n.name.value.as_str(), g.vertex(ResourceId::node(n.name.value.as_str()))))
        .collect();
    let mut vfolders: HashMap<&str, NodeIndex> = HashMap::new();
    for v in &cluster.vfolders {
        let i = g.vertex(ResourceId::vfolder(v.name.value.as_str()));
        if let Some(&n) = nodes.get(v.node.value.as_str()) {
            g.edge(n, i);
        }
        vfolders.insert(v.name.value.as_str(), i);
    }
    let images: std::collections::HashSet<&str> = cluster.images.iter().map(|i| i.name.value.as_str()).collect();
    let mut sessions: HashMap<&str, NodeIndex> = HashMap::new();
    for s in &cluster.sessions {
        let i = g.vertex(ResourceId::session(s.name.value.as_str()));
        sessions.insert(s.name.value.as_str(), i);
        let node = nodes.get(s.node.value.as_str()).copied();
        if images.contains(s.image.value.as_str()) && node.is_some() {
            let image = g.vertex(ResourceId::image(s.node.value.as_str(), s.image.value.as_str()));
            if let Some(n) = node {
                g.edge(n, image);
            }
            g.edge(image, i);
        } else if let Some(n) = node {
            g.edge(n, i);
        }
        for m in &s.mounts {
            if let Some(&v) = vfolders.get(m.vfolder.value.as_str()) {
                g.edge(v, i);
            }
        }
    }
    for s in &cluster.sessions {
        let i = sessions[s.name.value.as_str()];
        for d in &s.depends_on {
            if let Some(&dep) = sessions.get(d.value.as_str())
                && dep != i
            {
                g.edge(dep, i);
            }
        }
    }
    g
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz DOT of several clusters' graphs, one subgraph per cluster.
pub fn render_dot(graphs: &[(ClusterName, ResourceGraph)]) -> String {
    let mut out = String::from("digraph bai {\n    rankdir=LR;\n    node [fontname=\"monospace\"];\n");
    for (name, g) in graphs {
        let _ = writeln!(out, "    subgraph {} {{", dot_quote(&format!("cluster_{name}")));
        let _ = writeln!(out, "        label={};", dot_quote(&format!("cluster {name}")));
        for v in g.sorted_vertices() {
            let shape = match v.kind {
                Kind::Node => "box3d",
                Kind::Image => "component",
                Kind::Vfolder => "folder",
                Kind::Session => "box",
            };
            let _ = writeln!(
                out,
                "        {} [label={}, shape={shape}];",
                dot_quote(&format!("{name}/{v}")),
                dot_quote(&v.to_string())
            );
        }
        for (a, b) in g.sorted_edges() {
            let _ = writeln!(
                out,
                "        {} -> {};",
                dot_quote(&format!("{name}/{a}")),
                dot_quote(&format!("{name}/{b}"))
            );
        }
        out.push_str("    }\n");
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart of several clusters' graphs (renders in GitHub Markdown).
pub fn render_mermaid(graphs: &[(ClusterName, ResourceGraph)]) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut next = 0usize;
    for (name, g) in graphs {
        let mut ids: HashMap<&ResourceId, String> = HashMap::new();
        let _ = writeln!(out, "    subgraph cluster_{next}[\"cluster {}\"]", mermaid_text(name.as_str()));
        for v in g.sorted_vertices() {
            let id = format!("r{next}");
            next += 1;
            let text = mermaid_text(&v.to_string());
            let shape = match v.kind {
                Kind::Node => format!("{id}[[\"{text}\"]]"),
                Kind::Image => format!("{id}[/\"{text}\"/]"),
                Kind::Vfolder => format!("{id}[(\"{text}\")]"),
                Kind::Session => format!("{id}[\"{text}\"]"),
            };
            let _ = writeln!(out, "        {shape}");
            ids.insert(v, id);
        }
        out.push_str("    end\n");
        for (a, b) in g.sorted_edges() {
            let _ = writeln!(out, "    {} --> {}", ids[a], ids[b]);
        }
    }
    out
}

/// Mermaid labels are quoted; a quote inside one is written as an entity.
pub(crate) fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_parse_back_from_their_display() {
        for id in [
            ResourceId::node("gpu-01"),
            ResourceId::image("gpu-01", "pytorch"),
            ResourceId::vfolder("ckpt"),
            ResourceId::session("train-resnet"),
        ] {
            assert_eq!(id.to_string().parse::<ResourceId>(), Ok(id.clone()));
            let json = serde_json::to_string(&id).expect("serializes");
            assert_eq!(serde_json::from_str::<ResourceId>(&json).expect("deserializes"), id);
        }
        assert_eq!(serde_json::to_string(&ResourceId::image("n", "i")).expect("serializes"), "\"image:n/i\"");
        for bad in ["", "node", "node:", "pod:x", "image:x", "image:/x", "image:x/"] {
            assert!(bad.parse::<ResourceId>().is_err(), "{bad}");
        }
    }
}
