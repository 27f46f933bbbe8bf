//! Looking without touching (`bai plan` against the live nodes, `bai status`): every selected node of
//! every cluster observed without the lease (a survey never waits for an apply), the lab's desired state
//! with its secrets digested under the nodes' keys (never made here: a survey changes nothing), and the
//! plan from any observed state.

use std::collections::{BTreeMap, BTreeSet};

use crate::failure::Failure;
use crate::fleet::NodeFailure;
use crate::gpu::place::Placement;
use crate::graph::build_graph;
use crate::model::{ClusterName, Config, NodeName};
use crate::plan::{Plan, diff};
use crate::reconcile::{Desired, Engine, KeyMaking, Reporter, desired};
use crate::secret::Digests;
use crate::state::ClusterState;
use crate::state::snapshot::NodeSnapshot;

/// One cluster as surveyed.
pub struct Surveyed {
    pub cluster: ClusterName,
    /// What each reachable node reported, by node name.
    pub snapshots: Vec<NodeSnapshot>,
    pub observed: ClusterState,
    /// The lab's desired state, secrets digested where the values and keys could be had, the others
    /// settled as unchanged.
    pub desired: ClusterState,
    /// The selected nodes that could not be reached (reported already).
    pub failures: Vec<NodeFailure>,
    /// Vfolders bai leaves alone, as warnings (not reported: `plan` warns, `status` lists them).
    pub conflicts: Vec<Failure>,
    /// How the GPU sessions were placed on the nodes that answered (not reported: `plan` places again
    /// with [`plan_against`] and reports that, `status` lists it).
    pub placement: Placement,
}

/// Surveys the selected nodes of every cluster of `config`, reporting the nodes that cannot be reached
/// and the secrets that cannot be digested (their values read as unchanged).
pub fn survey(engine: &Engine, config: &Config, selectors: &[String], reporter: &dyn Reporter) -> Vec<Surveyed> {
    let mut out = Vec::new();
    for c in &config.clusters {
        let mut reached = engine.reach(c, selectors, false);
        reporter.node_failures(&reached.failures);
        let observed = reached.observed(c);
        let (wanted, placement) = ClusterState::desired_on(c, &observed);
        let Desired { state, unresolved, .. } =
            engine.block_on(desired(&c.root, wanted, &mut reached, &observed, KeyMaking::ReadOnly));
        let warnings: Vec<Failure> = unresolved
            .failures(crate::diagnostic::Severity::Warning)
            .into_iter()
            .map(|f| Failure { message: format!("{} (its value is taken as unchanged)", f.message), ..f })
            .collect();
        reporter.failures(&warnings);
        let mut snapshots = reached.snapshots.clone();
        snapshots.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(Surveyed {
            cluster: c.name.value.clone(),
            conflicts: reached.conflicts(),
            snapshots,
            observed,
            desired: state,
            failures: reached.failures,
            placement,
        });
    }
    out
}

/// Plans every cluster of `config` against what `observed` holds for it (nothing, when absent), with the
/// secrets' digests known for it; with `only`, for those nodes of each cluster alone. A digest not known
/// (offline, a snapshot, a value not readable here) reads as unchanged. GPU sessions are placed against
/// the observed state; what placing them found (sessions that cannot be placed, devices in use) comes
/// back beside the plan.
pub fn plan_against(
    config: &Config,
    observed: &BTreeMap<ClusterName, ClusterState>,
    only: Option<&BTreeMap<String, BTreeSet<NodeName>>>,
    digests: &BTreeMap<ClusterName, Digests>,
) -> (Plan, Vec<Failure>) {
    let mut placement_failures = Vec::new();
    let prepared: Vec<_> = config
        .clusters
        .iter()
        .map(|c| {
            let have =
                observed.get(&c.name.value).cloned().unwrap_or_else(|| ClusterState::empty(c.name.value.clone()));
            let (placed, placement) = ClusterState::desired_on(c, &have);
            placement_failures.extend(placement.failures());
            let mut desired = match digests.get(&c.name.value) {
                Some(d) => placed.with_digests(d),
                None => placed,
            };
            if let Some(only) = only {
                desired = desired.restrict(&only.get(c.name.value.as_str()).cloned().unwrap_or_default());
            }
            crate::secret::settle_unknown(&mut desired, &have);
            (desired, have, build_graph(c))
        })
        .collect();
    let triples: Vec<_> = prepared.iter().map(|(d, o, g)| (d, o, g)).collect();
    (diff(&triples), placement_failures)
}
