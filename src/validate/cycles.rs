//! `depends-on` cycles: one error per cycle, naming every session in it and labelling each edge.

use std::collections::HashMap;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostic::{Code, Problem};
use crate::model::Cluster;
use crate::source::Loc;
use crate::validate::ClusterIndex;

pub fn check(cluster: &Cluster, index: &ClusterIndex<'_>, problems: &mut Vec<Problem>) {
    let mut graph: DiGraph<&str, Loc> = DiGraph::new();
    let mut ids: HashMap<&str, NodeIndex> = HashMap::new();
    for s in &cluster.sessions {
        ids.entry(s.name.value.as_str()).or_insert_with(|| graph.add_node(s.name.value.as_str()));
    }
    for s in &cluster.sessions {
        // Only the first definition of a name counts: duplicates are reported elsewhere.
        if !index.sessions.get(s.name.value.as_str()).is_some_and(|first| std::ptr::eq(*first, s)) {
            continue;
        }
        let from = ids[s.name.value.as_str()];
        for dep in &s.depends_on {
            if let Some(&to) = ids.get(dep.value.as_str()) {
                graph.add_edge(from, to, dep.loc);
            }
        }
    }
    let mut cycles: Vec<Vec<NodeIndex>> =
        tarjan_scc(&graph).into_iter().filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0])).collect();
    for scc in &mut cycles {
        scc.sort_by_key(|i| graph[*i]);
    }
    cycles.sort_by_key(|scc| graph[scc[0]]);
    for scc in cycles {
        let path = cycle_path(&graph, &scc);
        let names: Vec<String> = path.iter().map(|i| format!("`{}`", graph[*i])).collect();
        let mut p = Problem::error(
            Code::Cycle,
            format!("sessions depend on each other in a cycle: {} → `{}`", names.join(" → "), graph[path[0]]),
        );
        for (k, from) in path.iter().enumerate() {
            let to = path[(k + 1) % path.len()];
            if let Some(edge) = graph.find_edge(*from, to) {
                let text = format!("`{}` depends on `{}`", graph[*from], graph[to]);
                p = if k == 0 { p.primary(graph[edge], text) } else { p.label(graph[edge], text) };
            }
        }
        problems.push(p.help("remove one of these `depends-on` entries to break the cycle"));
    }
}

/// A simple cycle through the strongly connected component, starting at its first session by name.
fn cycle_path(graph: &DiGraph<&str, Loc>, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    let start = scc[0];
    let mut path = vec![start];
    let mut visited = vec![start];
    // Depth-first search for a way back to `start` that stays inside the component.
    fn dfs(
        graph: &DiGraph<&str, Loc>,
        scc: &[NodeIndex],
        start: NodeIndex,
        path: &mut Vec<NodeIndex>,
        visited: &mut Vec<NodeIndex>,
    ) -> bool {
        let Some(&here) = path.last() else { return false };
        let mut next: Vec<NodeIndex> = graph.neighbors(here).filter(|n| scc.contains(n)).collect();
        next.sort_by_key(|n| graph[*n]);
        for n in next {
            if n == start {
                return true;
            }
            if visited.contains(&n) {
                continue;
            }
            visited.push(n);
            path.push(n);
            if dfs(graph, scc, start, path, visited) {
                return true;
            }
            path.pop();
        }
        false
    }
    dfs(graph, scc, start, &mut path, &mut visited);
    path
}
