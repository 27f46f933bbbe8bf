//! `bai generations FILE`: every cluster's generations as its nodes keep them, with the current one of
//! each node marked. Listing takes no lease: it never waits for an apply. Recording them is the engine's
//! ([`bai::reconcile::record`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bai::generation::GenerationSummary;
use bai::protocol::ListGenerationsReply;
use bai::reconcile::Reporter;
use bai::reconcile::record::list_all;

use crate::cli::{GenerationsArgs, StatusFormat};
use crate::commands::remote;
use crate::commands::{Outcome, Printer, check};

/// One generation across the nodes that hold it. The lock's text stays on the nodes (`get_generation`):
/// a listing shows the config hash, which covers it.
#[derive(serde::Serialize)]
struct Row {
    number: u64,
    applied_at: String,
    applied_by: String,
    bai_version: String,
    config_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_of: Option<u64>,
    nodes: Vec<NodeMark>,
}

#[derive(serde::Serialize)]
struct NodeMark {
    node: String,
    current: bool,
}

#[derive(serde::Serialize)]
struct ClusterRows {
    name: String,
    generations: Vec<Row>,
}

fn rows(lists: &BTreeMap<String, ListGenerationsReply>) -> Vec<Row> {
    let mut by_number: BTreeMap<u64, (GenerationSummary, Vec<NodeMark>)> = BTreeMap::new();
    for (node, list) in lists {
        let newest = list.generations.iter().map(|g| g.number).max();
        for g in &list.generations {
            let entry = by_number.entry(g.number).or_insert_with(|| (g.clone(), Vec::new()));
            entry.1.push(NodeMark { node: node.clone(), current: Some(g.number) == newest });
        }
    }
    by_number
        .into_iter()
        .rev()
        .map(|(number, (s, nodes))| Row {
            number,
            applied_at: s.meta.applied_at,
            applied_by: s.meta.applied_by,
            bai_version: s.meta.bai_version,
            config_hash: s.meta.config_hash,
            plan_id: s.meta.plan_id,
            rollback_of: s.meta.rollback_of,
            nodes,
        })
        .collect()
}

pub fn run(args: &GenerationsArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let lab = check(&args.file, cluster);
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    if lab.has_errors() {
        return Outcome::Failed;
    }
    let Some(engine) = remote::start(&args.connect, lab.config(), printer) else { return Outcome::Failed };
    let mut failed = false;
    let mut all = Vec::new();
    for c in &lab.config().clusters {
        let mut reached = engine.reach(c, &args.connect.on, false);
        printer.node_failures(&reached.failures);
        failed |= !reached.failures.is_empty();
        let (lists, errors) = list_all(&engine, c, &mut reached);
        printer.failures(&errors);
        failed |= !errors.is_empty();
        all.push(ClusterRows { name: c.name.value.to_string(), generations: rows(&lists) });
    }
    match args.format {
        StatusFormat::Json => {
            let doc = serde_json::json!({ "clusters": all });
            printer.stdout(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
        }
        StatusFormat::Text => printer.stdout(&render_text(&all)),
    }
    if failed { Outcome::Failed } else { Outcome::Ok }
}

fn render_text(clusters: &[ClusterRows]) -> String {
    let mut out = String::new();
    for c in clusters {
        let _ = writeln!(out, "cluster `{}`", c.name);
        if c.generations.is_empty() {
            let _ = writeln!(out, "  no generations recorded yet");
            continue;
        }
        for g in &c.generations {
            let nodes: Vec<String> = g
                .nodes
                .iter()
                .map(|n| if n.current { format!("{} (current)", n.node) } else { n.node.clone() })
                .collect();
            let rollback = g.rollback_of.map_or(String::new(), |n| format!(", rollback to {n}"));
            let _ = writeln!(
                out,
                "  {:>4}  {}  {}  bai {}  config {}{rollback}  on {}",
                g.number,
                g.applied_at,
                g.applied_by,
                g.bai_version,
                g.config_hash.get(..12).unwrap_or(&g.config_hash),
                nodes.join(", ")
            );
        }
    }
    out
}
