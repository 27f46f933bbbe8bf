//! `bai apply --confirm-healthy WINDOW`: after a successful apply, the sessions it
//! created or replaced are watched (`bai::watch::confirm`); when one is not healthy by the end of the
//! window, the nodes holding the unhealthy ones go back to their previous generation at once, and the run
//! fails, reporting both the failure and the rollback. Healthy sessions on other nodes are kept: their
//! nodes are not rolled back.

use std::time::Duration;

use crate::failure::Failure;
use crate::fleet;
use crate::model::Cluster;
use crate::reconcile::record::RunStamp;
use crate::reconcile::{Engine, Observation, Reporter, rollback};
use crate::watch::confirm::{SessionToConfirm, confirm};

/// What one cluster's apply changed: the sessions to watch and the generation it recorded.
pub struct Applied {
    pub sessions: Vec<SessionToConfirm>,
    pub number: u64,
}

/// How the sessions are confirmed and, when one is not healthy, its nodes rolled back.
pub struct Gate<'a> {
    /// How long the sessions have to turn healthy.
    pub window: Duration,
    pub stamp: &'a RunStamp,
    pub allow_data_loss: bool,
}

/// True when every watched session turned healthy in time.
pub fn confirm_or_roll_back(
    engine: &Engine,
    clusters: &[Cluster],
    reached: &mut [Observation],
    applied: &[Applied],
    how: &Gate<'_>,
    reporter: &dyn Reporter,
) -> bool {
    let mut all_ok = true;
    for ((c, r), a) in clusters.iter().zip(reached.iter_mut()).zip(applied) {
        if a.sessions.is_empty() {
            continue;
        }
        let name = c.name.value.as_str();
        reporter.note(&format!(
            "Confirming that {} changed session{} of cluster `{name}` turn healthy within {}s…",
            a.sessions.len(),
            if a.sessions.len() == 1 { "" } else { "s" },
            how.window.as_secs_f64()
        ));
        let verdicts = engine.block_on(confirm(&mut r.conns, name, &a.sessions, how.window));
        let mut bad_nodes: Vec<String> = Vec::new();
        for v in &verdicts {
            if v.healthy {
                reporter.note(&format!("healthy: session `{}` on `{}` ({})", v.session, v.node, v.detail));
            } else {
                reporter.fail(Failure::error(
                    "bai::confirm::unhealthy",
                    format!(
                        "session `{}` on `{}` is not healthy after {}s: {}",
                        v.session,
                        v.node,
                        how.window.as_secs_f64(),
                        v.detail
                    ),
                ));
                bad_nodes.push(v.node.clone());
            }
        }
        bad_nodes.sort();
        bad_nodes.dedup();
        if bad_nodes.is_empty() {
            reporter
                .note(&format!("Cluster `{name}`: every changed session is healthy; generation {} stands.", a.number));
            continue;
        }
        all_ok = false;
        let target = a.number - 1;
        reporter.note(&format!(
            "Rolling node{} {} of cluster `{name}` back to generation {target}{}…",
            if bad_nodes.len() == 1 { "" } else { "s" },
            bad_nodes.join(", "),
            if target == 0 { " (before the first: what bai placed there is removed)" } else { "" }
        ));
        let mut back = match reobserve(engine, name, r, &bad_nodes) {
            Ok(back) => back,
            Err(why) => {
                reporter.fail(Failure::error(
                    "bai::confirm::rollback_failed",
                    format!("cannot roll back: {why}; the nodes are left at generation {}", a.number),
                ));
                continue;
            }
        };
        let rolled = rollback::roll_back_now(engine, c, &mut back, target, how.stamp, how.allow_data_loss, reporter);
        if rolled {
            let (nodes, verb) = if bad_nodes.len() == 1 { ("node", "is") } else { ("nodes", "are") };
            reporter.note(&format!(
                "Rolled back: {nodes} {} of cluster `{name}` {verb} as in generation {target} again.",
                bad_nodes.join(", ")
            ));
        } else {
            reporter.fail(
                Failure::error("bai::confirm::rollback_failed", "the rollback did not complete")
                    .help(format!("check `bai status` and run `bai rollback --to {target}` once the cause is fixed")),
            );
        }
        r.conns.append(&mut back.conns);
    }
    all_ok
}

/// The connections of `nodes` taken out of `r` and each node observed again: the rollback plans against
/// what the apply left.
fn reobserve(engine: &Engine, cluster: &str, r: &mut Observation, nodes: &[String]) -> Result<Observation, String> {
    let mut back = Observation::default();
    for node in nodes {
        let Some(mut conn) = r.conns.remove(node) else {
            return Err(format!("node `{node}` is no longer connected"));
        };
        let snapshot = engine.block_on(fleet::observe(&mut conn, cluster));
        back.conns.insert(node.clone(), conn);
        match snapshot {
            Ok(s) => back.snapshots.push(s),
            Err(f) => {
                r.conns.append(&mut back.conns);
                return Err(f.message);
            }
        }
    }
    Ok(back)
}
