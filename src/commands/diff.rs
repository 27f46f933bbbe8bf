//! `bai diff OLD NEW`: the plan from one lab to another, as if OLD were fully applied. No node is touched.

use std::collections::BTreeMap;

use bai::graph::{ResourceGraph, build_graph};
use bai::model::ClusterName;
use bai::plan::diff;
use bai::state::ClusterState;

use crate::cli::DiffArgs;
use crate::commands::plan::emit;
use crate::commands::{Outcome, Printer, check};

pub fn run(args: &DiffArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let old = check(&args.old, cluster);
    let new = check(&args.new, cluster);
    printer.diagnostics(&old.problems, &old.loaded.sources);
    printer.diagnostics(&new.problems, &new.loaded.sources);
    if old.has_errors() || new.has_errors() {
        return Outcome::Failed;
    }
    let before: BTreeMap<ClusterName, ClusterState> =
        old.config().clusters.iter().map(|c| (c.name.value.clone(), ClusterState::desired(c))).collect();
    let mut prepared: Vec<(ClusterState, ClusterState, ResourceGraph)> = new
        .config()
        .clusters
        .iter()
        .map(|c| {
            let have = before.get(&c.name.value).cloned().unwrap_or_else(|| ClusterState::empty(c.name.value.clone()));
            // GPU sessions keep the devices OLD gave them, as they would on the nodes.
            let (desired, _) = ClusterState::desired_on(c, &have);
            (desired, have, build_graph(c))
        })
        .collect();
    // A cluster dropped from the file: everything of it is deleted.
    for (name, state) in &before {
        if !new.config().clusters.iter().any(|c| &c.name.value == name) {
            prepared.push((ClusterState::empty(name.clone()), state.clone(), ResourceGraph::default()));
        }
    }
    let triples: Vec<_> = prepared.iter().map(|(d, o, g)| (d, o, g)).collect();
    emit(&diff(&triples), &args.output, printer)
}
