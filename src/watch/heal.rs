//! `bai watch --heal`: re-applying what drifted on one node, and nothing else. It takes the node's apply
//! lease on a connection of its own (so it waits for no one and no apply runs beside it), observes the
//! node afresh, plans the file against it, and carries out only the drifted sessions' changes plus the
//! creation of anything they need that went missing. It never deletes, and never touches what bai does
//! not own: a squatted name is reported, not healed.

use std::collections::BTreeMap;

use crate::failure::Failure;
use crate::fleet::execute;
use crate::fleet::sources::Sources;
use crate::graph::{Kind, ResourceId, build_graph};
use crate::plan::{Action, Change, ResourceState, diff};
use crate::reconcile::{self, KeyMaking};
use crate::state::ClusterState;
use crate::watch::Watched;
use crate::watch::context::WatchContext;
use crate::watch::drift::Drift;
use crate::watch::event::Event;

/// Heals `drifted` sessions of `node`, reporting each as an event and counting it in the status.
/// `expected` is the node's generation as the watcher last saw it: a heal that finds another under the
/// lease heals nothing (another controller changed the node meanwhile; the watcher follows that).
pub async fn heal(
    watched: &Watched,
    node: &str,
    drifted: BTreeMap<String, Drift>,
    expected: Option<u64>,
    shared: &WatchContext,
) {
    let cluster = watched.cluster.name.value.to_string();
    let outcomes = match heal_node(watched, node, &drifted, expected, shared).await {
        Ok(outcomes) => outcomes,
        Err(why) => drifted.keys().map(|s| (s.clone(), Err(why.clone()))).collect(),
    };
    for (session, outcome) in outcomes {
        let healed = outcome.is_ok();
        {
            let mut status = shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = status.clusters.get_mut(&cluster).and_then(|c| c.nodes.get_mut(node)) {
                if healed {
                    n.heals_total += 1;
                }
                if let Some(s) = n.sessions.get_mut(&session).filter(|_| healed) {
                    s.heals_total += 1;
                }
            }
        }
        let (outcome, detail) = match outcome {
            Ok(detail) => ("healed", detail),
            Err(detail) => ("failed", detail),
        };
        let reason = drifted.get(&session).map_or_else(String::new, |d| format!(" (was: {})", d.reason));
        let _ = shared.events.send(Event::Heal {
            cluster: cluster.clone(),
            node: node.to_string(),
            session,
            outcome: outcome.into(),
            detail: format!("{detail}{reason}"),
        });
    }
}

type Outcomes = Vec<(String, Result<String, String>)>;

async fn heal_node(
    watched: &Watched,
    node: &str,
    drifted: &BTreeMap<String, Drift>,
    expected: Option<u64>,
    shared: &WatchContext,
) -> Result<Outcomes, String> {
    let cluster = &watched.cluster;
    if !cluster.nodes.iter().any(|n| n.name.value.as_str() == node) {
        return Err(format!("node `{node}` is no longer in the file"));
    }
    let mut observation = reconcile::reach(cluster, &[node.to_string()], &shared.options.connect, true, 1).await;
    if let Some(failure) = observation.failures.first() {
        return Err(failure.message.clone());
    }
    let generation = observation.snapshots.first().map(|s| s.generation);
    if generation != Some(expected) {
        return Err(format!(
            "not healed: generation {} was recorded on the node since the drift was seen (an apply, destroy or \
             rollback by another run); the watcher takes that as the node's new truth",
            generation.flatten().map_or_else(|| "(none)".to_string(), |g| g.to_string())
        ));
    }
    let observed = observation.observed(cluster);
    // As `apply` does: secrets digested under the node's key; one that cannot be read is taken as
    // unchanged here, and fails its session's creation with a message naming it.
    let (placed, placement) = ClusterState::desired_on(cluster, &observed);
    if let Some(refused) = placement.failures().into_iter().find(Failure::is_error) {
        return Err(format!("not healed: {}", refused.message));
    }
    let wanted = placed.restrict(&observation.reachable());
    let reconcile::Desired { state: desired, secrets, .. } =
        reconcile::desired(&cluster.root, wanted, &mut observation, &observed, KeyMaking::Make).await;
    let graph = build_graph(cluster);
    let plan = diff(&[(&desired, &observed, &graph)]);
    let changes = heal_changes(&plan.changes, drifted, node, &desired);
    let input = execute::ChangeContext {
        cluster,
        graph: &graph,
        allow_data_loss: false,
        parallel: 1,
        lock: None,
        secrets: &secrets,
        sources: &Sources::new(cluster),
    };
    let results = execute::execute(&input, &changes, &mut observation.conns, &|_| {}).await;
    let mut outcomes: Outcomes = Vec::new();
    let mut prerequisite_failures = Vec::new();
    for r in results {
        let outcome = match r.outcome {
            execute::ChangeOutcome::Done(d) => Ok(d),
            execute::ChangeOutcome::Failed(f) => Err(format!("{} [{}]", f.message, f.code)),
            execute::ChangeOutcome::Skipped(d) => Err(d),
        };
        match r.change.id.kind {
            Kind::Session => {
                outcomes.push((r.change.id.name.clone(), outcome.map(|d| format!("{} ({d})", verb(r.change.action)))))
            }
            _ => {
                if let Err(why) = outcome {
                    prerequisite_failures.push(format!("{}: {why}", r.change.id));
                }
            }
        }
    }
    for name in drifted.keys() {
        if !outcomes.iter().any(|(n, _)| n == name) {
            let why = if prerequisite_failures.is_empty() {
                "nothing to do: the node already matches the file".to_string()
            } else {
                prerequisite_failures.join("; ")
            };
            outcomes.push((name.clone(), Err(why)));
        }
    }
    Ok(outcomes)
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Create => "created",
        Action::Replace => "recreated",
        Action::Update => "updated",
        Action::Delete => "removed",
    }
}

/// The changes a heal carries out: the plan's creates and replaces of drifted sessions, a replace for a
/// drifted session the plan has no change for (stopped, same spec), and creates of the node's agent
/// record, images and vfolders that went missing. Never a delete.
fn heal_changes(plan: &[Change], drifted: &BTreeMap<String, Drift>, node: &str, desired: &ClusterState) -> Vec<Change> {
    let mut out: Vec<Change> = plan
        .iter()
        .filter(|c| match c.id.kind {
            Kind::Session => drifted.contains_key(&c.id.name) && matches!(c.action, Action::Create | Action::Replace),
            Kind::Node | Kind::Image | Kind::Vfolder => c.action == Action::Create && c.node.as_deref() == Some(node),
        })
        .cloned()
        .collect();
    for (name, d) in drifted {
        let planned = out.iter().any(|c| c.id.kind == Kind::Session && &c.id.name == name);
        if !planned && desired.sessions.contains_key(name.as_str()) {
            let id = ResourceId::session(name);
            out.push(Change {
                reasons: vec![d.reason.clone()],
                after: ResourceState::of(desired, &id),
                ..Change::new(desired.name.clone(), id, Some(node.to_string()), Action::Replace)
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterName, NodeName};
    use crate::watch::drift::DriftKind;

    fn change(kind: Kind, name: &str, node: &str, action: Action) -> Change {
        let id = match kind {
            Kind::Node => ResourceId::node(name),
            Kind::Image => ResourceId::image(node, name),
            Kind::Vfolder => ResourceId::vfolder(name),
            Kind::Session => ResourceId::session(name),
        };
        Change::new(ClusterName("lab".into()), id, Some(node.into()), action)
    }

    #[test]
    fn heals_only_drifted_sessions_and_missing_prerequisites_never_deletes() {
        let drift = |kind| Drift { kind, reason: "r".into() };
        let drifted = BTreeMap::from([
            ("gone".to_string(), drift(DriftKind::Missing)),
            ("stopped".to_string(), drift(DriftKind::Stopped)),
        ]);
        let plan = vec![
            change(Kind::Image, "box", "n1", Action::Create),
            change(Kind::Image, "box", "n2", Action::Create),
            change(Kind::Vfolder, "old", "n1", Action::Delete),
            change(Kind::Session, "gone", "n1", Action::Create),
            change(Kind::Session, "other", "n1", Action::Replace),
            change(Kind::Session, "extra", "n1", Action::Delete),
        ];
        let mut desired = ClusterState::empty(ClusterName("lab".into()));
        for name in ["gone", "stopped", "other"] {
            desired.sessions.insert(
                crate::model::SessionName(name.into()),
                crate::state::SessionState {
                    node: NodeName("n1".into()),
                    hash: "h".into(),
                    spec: None,
                    container: None,
                },
            );
        }
        let out = heal_changes(&plan, &drifted, "n1", &desired);
        let got: Vec<String> = out.iter().map(|c| format!("{} {}", c.action.sign(), c.id)).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(out[0].id, ResourceId::image("n1", "box"));
        assert_eq!(out[1].id, ResourceId::session("gone"));
        assert_eq!((out[2].id.clone(), out[2].action), (ResourceId::session("stopped"), Action::Replace));
    }
}
