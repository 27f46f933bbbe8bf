//! Rolling back (`bai rollback`, and `apply --confirm-healthy` when a session stays unhealthy): the nodes
//! back to the state of an earlier generation.
//!
//! Each reachable node's desired state is its newest record numbered N or less (a node with none held
//! nothing then; a node whose records up to N were pruned is refused). The plan is the ordinary diff of
//! that state against what is observed, executed by the ordinary executor, and the result is recorded as
//! a NEW generation (current + 1, `rollback_of: N`) — as Nix records switching back to an old profile
//! generation — so history only grows and a rollback can itself be rolled back.
//!
//! A rollback restores what bai owns, not data: what sessions wrote into vfolders since N stays, and a
//! vfolder removed since comes back empty. An image to rebuild from a build context or archive that
//! changed on the controller since N is refused: it would not be the image N ran.

use std::collections::{BTreeMap, BTreeSet};

use std::path::Path;

use crate::failure::Failure;
use crate::fleet::execute::{self, ChangeContext, ChangeOutcome, ChangeResult};
use crate::generation::{
    GenerationRecord, Meta, Pick, RecordedSource, check_source, cluster_with_sources, config_hash, graph_of, pick,
    state_of, target,
};
use crate::graph::{Kind, ResourceGraph};
use crate::model::{Cluster, Config, NodeName};
use crate::plan::{Action, Plan, diff};
use crate::protocol::{GetGeneration, Method};
use crate::reconcile::record::{self, Generation, RunStamp};
use crate::reconcile::{Engine, Observation, Reporter};
use crate::source::SourceMap;
use crate::state::ClusterState;
use crate::state::spec::SourceKind;

/// One cluster ready to roll back.
struct Prepared {
    exec_cluster: Cluster,
    desired: ClusterState,
    /// The secret values read for `desired`'s digests: what the containers get.
    secrets: crate::fleet::secrets::SecretValues,
    observed: ClusterState,
    graph: ResourceGraph,
    extras: crate::generation::RecordExtras,
    target: u64,
    number: u64,
    meta: Meta,
}

/// What `bai rollback` is asked.
pub struct RollbackRequest<'a> {
    pub config: &'a Config,
    /// The lab's files as loaded: the stamp of the generation the rollback records.
    pub sources: &'a SourceMap,
    pub file: &'a Path,
    /// The generation to go back to; `None`, the one before the current.
    pub to: Option<u64>,
    pub selectors: &'a [String],
    /// Go ahead without asking.
    pub yes: bool,
    pub allow_data_loss: bool,
}

/// `bai rollback`: every selected node back to its state at the target generation, recorded as a new
/// generation. True when everything asked was done.
pub fn rollback(engine: &Engine, request: &RollbackRequest<'_>, reporter: &dyn Reporter) -> bool {
    let stamp = RunStamp::new(request.sources, request.file);
    let mut failed = false;
    let mut reached: Vec<Observation> = Vec::new();
    let mut prepared: Vec<Option<Prepared>> = Vec::new();
    for c in &request.config.clusters {
        let mut r = engine.reach(c, request.selectors, true);
        reporter.node_failures(&r.failures);
        failed |= !r.failures.is_empty();
        match prepare(engine, c, &mut r, request.to, &stamp) {
            Ok(p) => prepared.push(Some(p)),
            Err(why) => {
                reporter.failures(
                    &why.into_iter().map(|f| f.context(format_args!("cluster `{}`", c.name.value))).collect::<Vec<_>>(),
                );
                failed = true;
                prepared.push(None);
            }
        }
        reached.push(r);
    }
    let triples: Vec<_> = prepared.iter().flatten().map(|p| (&p.desired, &p.observed, &p.graph)).collect();
    let plan = diff(&triples);
    reporter.plan(&plan);
    let mut blocked = false;
    for p in prepared.iter().flatten() {
        let lab_cluster = request.config.clusters.iter().find(|c| c.name.value == p.desired.name);
        blocked |= lab_cluster.is_none_or(|c| !caveats(p, &plan.changes, c, reporter));
    }
    if blocked {
        reporter.fail(Failure::error(REFUSED, "rollback refused: see above"));
        return false;
    }
    if plan.summary().is_empty() {
        for p in prepared.iter().flatten() {
            reporter.note(&format!(
                "Cluster `{}` already matches generation {}: nothing to roll back.",
                p.desired.name, p.target
            ));
        }
        return !failed;
    }
    if !request.yes && !reporter.confirm("roll back") {
        return false;
    }
    let mut results: Vec<ChangeResult> = Vec::new();
    reporter.executing(&plan);
    let mut recorded = true;
    for (r, p) in reached.iter_mut().zip(&prepared) {
        let Some(p) = p else { continue };
        let (done, not_recorded) = execute_prepared(engine, p, &plan, r, request.allow_data_loss, reporter);
        recorded &= not_recorded.is_empty();
        reporter.failures(&not_recorded);
        results.extend(done);
    }
    let failures: Vec<_> = reached.iter().flat_map(|r| r.failures.clone()).collect();
    reporter.executed(&plan, &results, &failures);
    let bad = results.iter().any(|r| !matches!(r.outcome, ChangeOutcome::Done(_)));
    !(bad || failed || !recorded)
}

/// Runs one prepared cluster's share of `plan` and records the new generation; returns the results and
/// where recording failed.
fn execute_prepared(
    engine: &Engine,
    p: &Prepared,
    plan: &Plan,
    r: &mut Observation,
    allow_data_loss: bool,
    reporter: &dyn Reporter,
) -> (Vec<ChangeResult>, Vec<Failure>) {
    let changes: Vec<_> = plan.changes.iter().filter(|ch| ch.cluster == p.desired.name).cloned().collect();
    let input = ChangeContext {
        cluster: &p.exec_cluster,
        graph: &p.graph,
        allow_data_loss,
        parallel: engine.parallel,
        // A rollback restores recorded images; their sources are checked against the records.
        lock: None,
        secrets: &p.secrets,
        sources: &crate::fleet::sources::Sources::new(&p.exec_cluster),
    };
    let report = |result: &ChangeResult| reporter.change(result);
    let done = engine.block_on(execute::execute(&input, &changes, &mut r.conns, &report));
    let generation = Generation {
        cluster: &p.exec_cluster,
        desired: &p.desired,
        extras: &p.extras,
        number: p.number,
        meta: &p.meta,
    };
    let not_recorded = record::record(engine, &generation, &mut r.conns, &done, reporter);
    (done, not_recorded)
}

/// `apply --confirm-healthy`: the nodes of `r` (observed again after the apply) back to generation
/// `target` at once, with no prompt: the operator asked for it in advance. Reports the plan, what cannot
/// be restored and the end report; true when the rollback went through.
pub fn roll_back_now(
    engine: &Engine,
    c: &Cluster,
    r: &mut Observation,
    target: u64,
    stamp: &RunStamp,
    allow_data_loss: bool,
    reporter: &dyn Reporter,
) -> bool {
    let (lists, errors) = record::list_all(engine, c, r);
    let prepared = if errors.is_empty() {
        prepare_at(engine, c, r, lists, target, stamp).map_err(|why| vec![Failure::error(REFUSED, why)])
    } else {
        Err(errors)
    };
    let p = match prepared {
        Ok(p) => p,
        Err(why) => {
            let context = format!("cluster `{}`: cannot roll back", c.name.value);
            reporter.failures(&why.into_iter().map(|f| f.context(&context)).collect::<Vec<_>>());
            return false;
        }
    };
    let plan = diff(&[(&p.desired, &p.observed, &p.graph)]);
    reporter.plan(&plan);
    if !caveats(&p, &plan.changes, c, reporter) {
        return false;
    }
    reporter.executing(&plan);
    let (results, not_recorded) = execute_prepared(engine, &p, &plan, r, allow_data_loss, reporter);
    reporter.failures(&not_recorded);
    reporter.executed(&plan, &results, &r.failures);
    not_recorded.is_empty() && results.iter().all(|r| matches!(r.outcome, ChangeOutcome::Done(_)))
}

/// The desired state of one cluster at the target generation, from its nodes' records.
fn prepare(
    engine: &Engine,
    c: &Cluster,
    r: &mut Observation,
    to: Option<u64>,
    stamp: &RunStamp,
) -> Result<Prepared, Vec<Failure>> {
    let (lists, errors) = record::list_all(engine, c, r);
    if !errors.is_empty() {
        return Err(errors);
    }
    let refused = |why: String| vec![Failure::error(REFUSED, why)];
    let known: BTreeSet<u64> = lists.values().flat_map(|l| l.generations.iter().map(|g| g.number)).collect();
    let target = target(&known, to).map_err(refused)?;
    prepare_at(engine, c, r, lists, target, stamp).map_err(refused)
}

/// A rollback that cannot be made as asked: a target no node holds, a pruned record, a secret or source
/// the lab does not name.
const REFUSED: &str = "bai::rollback::refused";

/// The desired state of the nodes of `r` at generation `target` (0: before the first, when they held
/// nothing), from the records in `lists`.
fn prepare_at(
    engine: &Engine,
    c: &Cluster,
    r: &mut Observation,
    lists: BTreeMap<String, crate::protocol::ListGenerationsReply>,
    target: u64,
    stamp: &RunStamp,
) -> Result<Prepared, String> {
    let known = lists.values().flat_map(|l| l.generations.iter().map(|g| g.number));
    let current = known.chain(record::current(r)).max().unwrap_or(0);
    let mut records: Vec<GenerationRecord> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for (node, list) in &lists {
        let kept: Vec<u64> = list.generations.iter().map(|g| g.number).collect();
        match pick(&kept, list.lowest_pruned, target) {
            Pick::Record(n) => {
                let Some(conn) = r.conns.get_mut(node) else { continue };
                let call = conn.client.call::<GenerationRecord>(Method::GetGeneration(GetGeneration {
                    cluster: c.name.value.to_string(),
                    number: n,
                }));
                let mut record =
                    engine.block_on(call).map_err(|e| format!("node `{node}`: cannot read generation {n}: {e}"))?;
                crate::untrusted::check_record(c.name.value.as_str(), node, &mut record)
                    .map_err(|why| format!("node `{node}`: its record of generation {n} is not believable: {why}"))?;
                records.push(record);
            }
            Pick::Empty => {}
            Pick::Pruned { oldest } => {
                let oldest = oldest.map_or(String::new(), |o| format!(" (its oldest kept generation is {o})"));
                refused.push(format!(
                    "node `{node}` cannot be restored to generation {target}: its record was pruned{oldest}; \
                     raise `generations keep=` to keep more"
                ));
            }
        }
    }
    // A node that cannot be restored is refused, and so is the rollback of its cluster: half a rollback
    // would be a state no generation ever was.
    if !refused.is_empty() {
        return Err(refused.join("\n  "));
    }
    let selected: BTreeSet<NodeName> = lists.keys().map(|n| NodeName(n.clone())).collect();
    let refs: Vec<&GenerationRecord> = records.iter().collect();
    let (desired, extras) = state_of(&c.name.value, &refs);
    let desired = desired.restrict(&selected);
    let observed = r.observed(c).restrict(&selected);
    // Secrets are read only from sources the lab names now: a record's source came from a node.
    let unnamed = crate::generation::unnamed_secret_sources(&desired, &ClusterState::desired(c));
    if !unnamed.is_empty() {
        return Err(unnamed.join("\n  "));
    }
    // Secret values are read now, once: their digests are made afresh under each node's key from the
    // values the containers get; one that cannot be read refuses the rollback.
    let crate::reconcile::Desired { state: desired, secrets, unresolved } =
        engine.block_on(crate::reconcile::desired(&c.root, desired, r, &observed, crate::reconcile::KeyMaking::Make));
    if !unresolved.is_empty() {
        return Err(unresolved.messages().join("\n  "));
    }
    let graph = graph_of(&desired, &extras.depends_on);
    let exec_cluster = cluster_with_sources(c, &extras.sources, &desired);
    // The restored state is what the target's lab produced: its config hash and lock describe it.
    let origin = records.iter().max_by_key(|r| r.number);
    let meta = Meta {
        applied_at: stamp.meta.applied_at.clone(),
        applied_by: stamp.meta.applied_by.clone(),
        bai_version: stamp.meta.bai_version.clone(),
        config_hash: origin.map_or_else(|| config_hash(&[], None), |o| o.meta.config_hash.clone()),
        lock: origin.and_then(|o| o.meta.lock.clone()),
        plan_id: None,
        rollback_of: Some(target),
    };
    Ok(Prepared { exec_cluster, desired, secrets, observed, graph, extras, target, number: current + 1, meta })
}

/// Prints what the rollback cannot restore; false when an image to rebuild or reload cannot be made
/// from the lab as its generation made it (see [`check_source`]: the lab's own context or archive, with
/// the sha256 the record holds; never a path from the record).
fn caveats(p: &Prepared, changes: &[crate::plan::Change], lab: &Cluster, reporter: &dyn Reporter) -> bool {
    let name = &p.desired.name;
    let n = p.target;
    reporter.note(&format!(
        "note: cluster `{name}`: a rollback restores what bai owns, not data: what sessions wrote into vfolders \
         since generation {n} stays as it is"
    ));
    for (v, state) in &p.desired.vfolders {
        if !p.observed.vfolders.contains_key(v) {
            reporter.note(&format!(
                "note: vfolder `{v}` on `{}` was removed since generation {n}: it comes back empty (a removed \
                 vfolder that held data was moved to `.bai-tombstones/` under the vfolder root)",
                state.node
            ));
        }
    }
    let mut ok = true;
    let mut checked: BTreeMap<&str, ()> = BTreeMap::new();
    for ch in changes.iter().filter(|ch| ch.cluster == *name && ch.id.kind == Kind::Image) {
        if matches!(ch.action, Action::Delete) || checked.insert(ch.id.name.as_str(), ()).is_some() {
            continue;
        }
        let image = ch.id.name.as_str();
        // A record that names no source for a built or loaded image is one without a hash.
        let kind = p.desired.images.iter().find(|((_, i), _)| i.as_str() == image).map(|(_, i)| i.spec.source);
        let recorded = p.extras.sources.get(image).cloned().unwrap_or(match kind {
            Some(SourceKind::Build) => RecordedSource::Build { context: String::new(), dockerfile: None, sha256: None },
            Some(SourceKind::Archive) => RecordedSource::Archive { path: String::new(), sha256: None },
            Some(SourceKind::Pull) | None => RecordedSource::Pull,
        });
        if let Err(why) = check_source(lab, image, &recorded, n) {
            ok = false;
            reporter.fail(Failure::error(
                "bai::rollback::source_changed",
                format!("image `{image}` cannot be restored: {why}"),
            ));
        }
    }
    ok
}
