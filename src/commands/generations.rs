//! `bai generations FILE`: every cluster's generations as its nodes keep them, with the current one of
//! each node marked; and what `apply`, `destroy` and `rollback` share to record a new generation after a
//! run. Listing takes no lease: it never waits for an apply.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bai::failure::Failure;
use bai::fleet::NodeConn;
use bai::fleet::execute::{ChangeOutcome, ChangeResult};
use bai::generation::{Extras, GenerationSummary, Meta, config_hash, now_rfc3339, record_of};
use bai::model::{Cluster, NodeName};
use bai::protocol::{
    BAI_VERSION, ListGenerations, ListGenerationsReply, Method, RecordGeneration, RecordGenerationReply,
};
use bai::state::ClusterState;

use crate::cli::{GenerationsArgs, StatusFormat};
use crate::commands::remote;
use crate::commands::{Lab, Outcome, Printer, check};
use bai::reconcile::Observation;

/// The lock file a lab may have beside it.
pub const LOCK_FILE: &str = "bai.lock";

/// What every record of one run shares, computed once from the lab as loaded.
pub struct Stamp {
    pub meta: Meta,
    /// The lab file's directory: recorded source paths are relative to it.
    pub lab_dir: PathBuf,
}

impl Stamp {
    pub fn new(lab: &Lab, file: &Path) -> Self {
        let lab_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let lock = bai::config::load::read_source(&lab_dir.join(LOCK_FILE)).ok();
        let files: Vec<(String, &str)> =
            lab.loaded.sources.files().map(|(_, f)| (f.path.display().to_string(), f.text())).collect();
        let meta = Meta {
            applied_at: now_rfc3339(),
            applied_by: bai::fleet::holder(),
            bai_version: BAI_VERSION.to_string(),
            config_hash: config_hash(&files, lock.as_deref()),
            lock,
            plan_id: None,
            rollback_of: None,
        };
        Stamp { meta, lab_dir }
    }
}

/// Nodes where at least one change succeeded: those a run touched.
pub fn touched(results: &[ChangeResult]) -> BTreeSet<String> {
    results
        .iter()
        .filter(|r| matches!(r.outcome, ChangeOutcome::Done(_)))
        .filter_map(|r| r.change.node.clone())
        .collect()
}

/// The cluster's current generation as observed: the highest among its reachable nodes.
pub fn current(reached: &Observation) -> Option<u64> {
    reached.snapshots.iter().filter_map(|s| s.generation).max()
}

/// Records generation `number` (the desired state's part of each touched node) and says what happened.
/// Returns false when some node could not record it: the changes happened, the history misses them.
#[allow(clippy::too_many_arguments)]
pub fn record(
    runtime: &tokio::runtime::Runtime,
    cluster: &Cluster,
    desired: &ClusterState,
    extras: &Extras,
    conns: &mut BTreeMap<String, NodeConn>,
    results: &[ChangeResult],
    number: u64,
    meta: &Meta,
) -> Vec<Failure> {
    let nodes = touched(results);
    if nodes.is_empty() {
        return Vec::new();
    }
    let keep = u64::from(cluster.generations.keep());
    let mut recorded = Vec::new();
    let mut failures = Vec::new();
    for node in &nodes {
        let Some(conn) = conns.get_mut(node) else { continue };
        let record = record_of(desired, &NodeName(node.clone()), extras, number, meta.clone());
        let call = conn.client.call::<RecordGenerationReply>(Method::RecordGeneration(Box::new(RecordGeneration {
            cluster: cluster.name.value.to_string(),
            record,
            keep,
        })));
        match runtime.block_on(call) {
            Ok(reply) => {
                recorded.push(node.clone());
                if !reply.pruned.is_empty() {
                    let pruned: Vec<String> = reply.pruned.iter().map(u64::to_string).collect();
                    eprintln!("node `{node}`: pruned generations {} (keep={keep})", pruned.join(", "));
                }
            }
            Err(e) => failures.push(Failure::of(&e).context(format_args!(
                "node `{node}`: the changes were made, but generation {number} was not recorded"
            ))),
        }
    }
    if !recorded.is_empty() {
        eprintln!("Recorded generation {number} of cluster `{}` on {}.", cluster.name.value, recorded.join(", "));
    }
    failures
}

/// Every reachable node's list of generations, by node name.
pub fn list_all(
    runtime: &tokio::runtime::Runtime,
    cluster: &Cluster,
    reached: &mut Observation,
) -> (BTreeMap<String, ListGenerationsReply>, Vec<Failure>) {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (node, conn) in &mut reached.conns {
        let call = conn.client.call::<ListGenerationsReply>(Method::ListGenerations(ListGenerations {
            cluster: cluster.name.value.to_string(),
        }));
        match runtime.block_on(call).map_err(|e| Failure::of(&e)).and_then(|mut reply| {
            bai::untrusted::check_generations(&mut reply).map(|()| reply).map_err(|why| {
                Failure::error("bai::agent::unbelievable", format!("its answer is not believable: {why}"))
            })
        }) {
            Ok(reply) => {
                out.insert(node.clone(), reply);
            }
            Err(f) => errors.push(f.context(format_args!("node `{node}`: cannot list generations"))),
        }
    }
    (out, errors)
}

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
    let Some((runtime, options)) = remote::start(args.connect.accept_new_host_keys, printer) else {
        return Outcome::Failed;
    };
    let mut failed = false;
    let mut all = Vec::new();
    for c in &lab.config().clusters {
        let mut reached =
            runtime.block_on(bai::reconcile::reach(c, &args.connect.on, &options, false, args.connect.parallel));
        remote::print_failures(printer, &reached.failures);
        failed |= !reached.failures.is_empty();
        let (lists, errors) = list_all(&runtime, c, &mut reached);
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
