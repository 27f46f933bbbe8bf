//! A run recorded as a generation: what every record of one run shares ([`RunStamp`]), which nodes a run
//! touched, each node's record of the new generation (`apply`, `destroy` and `rollback` alike), and the
//! generations the nodes keep (`bai generations`, `bai rollback`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::failure::Failure;
use crate::fleet::NodeConn;
use crate::fleet::execute::{ChangeOutcome, ChangeResult};
use crate::generation::{Meta, RecordExtras, config_hash, now_rfc3339, record_of};
use crate::model::{Cluster, NodeName};
use crate::protocol::{
    BAI_VERSION, ListGenerations, ListGenerationsReply, Method, RecordGeneration, RecordGenerationReply,
};
use crate::reconcile::{Engine, Observation, Reporter};
use crate::source::SourceMap;
use crate::state::ClusterState;

/// What every record of one run shares, computed once from the lab as loaded.
pub struct RunStamp {
    pub meta: Meta,
    /// The lab file's directory: recorded source paths are relative to it.
    pub lab_dir: PathBuf,
}

impl RunStamp {
    pub fn new(sources: &SourceMap, file: &Path) -> Self {
        let lab_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let lock = crate::config::load::read_source(&crate::reconcile::lockfile::path_for(file)).ok();
        let files: Vec<(String, &str)> =
            sources.files().map(|(_, f)| (f.path.display().to_string(), f.text())).collect();
        let meta = Meta {
            applied_at: now_rfc3339(),
            applied_by: crate::fleet::holder(),
            bai_version: BAI_VERSION.to_string(),
            config_hash: config_hash(&files, lock.as_deref()),
            lock,
            plan_id: None,
            rollback_of: None,
        };
        RunStamp { meta, lab_dir }
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

/// What one cluster's run recorded: generation `number` of the desired state, with `extras` and `meta`.
pub struct Generation<'a> {
    pub cluster: &'a Cluster,
    pub desired: &'a ClusterState,
    pub extras: &'a RecordExtras,
    pub number: u64,
    pub meta: &'a Meta,
}

/// Records generation `number` (the desired state's part of each touched node) and reports what happened.
/// Returns where some node could not record it: the changes happened, the history misses them.
pub fn record(
    engine: &Engine,
    generation: &Generation<'_>,
    conns: &mut BTreeMap<String, NodeConn>,
    results: &[ChangeResult],
    reporter: &dyn Reporter,
) -> Vec<Failure> {
    let Generation { cluster, desired, extras, number, meta } = *generation;
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
        match engine.block_on(call) {
            Ok(reply) => {
                recorded.push(node.clone());
                if !reply.pruned.is_empty() {
                    let pruned: Vec<String> = reply.pruned.iter().map(u64::to_string).collect();
                    reporter.note(&format!("node `{node}`: pruned generations {} (keep={keep})", pruned.join(", ")));
                }
            }
            Err(e) => failures.push(Failure::of(&e).context(format_args!(
                "node `{node}`: the changes were made, but generation {number} was not recorded"
            ))),
        }
    }
    if !recorded.is_empty() {
        reporter.note(&format!(
            "Recorded generation {number} of cluster `{}` on {}.",
            cluster.name.value,
            recorded.join(", ")
        ));
    }
    failures
}

/// Every reachable node's list of generations, by node name.
pub fn list_all(
    engine: &Engine,
    cluster: &Cluster,
    reached: &mut Observation,
) -> (BTreeMap<String, ListGenerationsReply>, Vec<Failure>) {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (node, conn) in &mut reached.conns {
        let call = conn.client.call::<ListGenerationsReply>(Method::ListGenerations(ListGenerations {
            cluster: cluster.name.value.to_string(),
        }));
        match engine.block_on(call).map_err(|e| Failure::of(&e)).and_then(|mut reply| {
            crate::untrusted::check_generations(&mut reply).map(|()| reply).map_err(|why| {
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
