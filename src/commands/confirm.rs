//! `bai apply --confirm-healthy WINDOW` at the CLI edge: after a successful apply, the sessions it
//! created or replaced are watched (`bai::watch::confirm`); when one is not healthy by the end of the
//! window, the nodes holding the unhealthy ones go back to their previous generation at once, and the run
//! fails, reporting both the failure and the rollback. Healthy sessions on other nodes are kept: their
//! nodes are not rolled back.

use std::time::Duration;

use bai::failure::Failure;
use bai::fleet;
use bai::model::Cluster;
use bai::watch::confirm::{SessionToConfirm, confirm};

use crate::commands::Printer;
use crate::commands::generations::Stamp;
use crate::commands::rollback;
use bai::reconcile::Observation;

/// What one cluster's apply changed: the sessions to watch and the generation it recorded.
pub struct Applied {
    pub sessions: Vec<SessionToConfirm>,
    pub number: u64,
}

pub struct How<'a> {
    pub window: Duration,
    pub stamp: &'a Stamp,
    pub allow_data_loss: bool,
    pub parallel: usize,
}

/// True when every watched session turned healthy in time.
pub fn confirm_or_roll_back(
    runtime: &tokio::runtime::Runtime,
    clusters: &[Cluster],
    reached: &mut [Observation],
    applied: &[Applied],
    how: &How<'_>,
    printer: &Printer,
) -> bool {
    let mut all_ok = true;
    for ((c, r), a) in clusters.iter().zip(reached.iter_mut()).zip(applied) {
        if a.sessions.is_empty() {
            continue;
        }
        let name = c.name.value.as_str();
        eprintln!(
            "Confirming that {} changed session{} of cluster `{name}` turn healthy within {}s…",
            a.sessions.len(),
            if a.sessions.len() == 1 { "" } else { "s" },
            how.window.as_secs_f64()
        );
        let verdicts = runtime.block_on(confirm(&mut r.conns, name, &a.sessions, how.window));
        let mut bad_nodes: Vec<String> = Vec::new();
        for v in &verdicts {
            if v.healthy {
                eprintln!("healthy: session `{}` on `{}` ({})", v.session, v.node, v.detail);
            } else {
                printer.fail(Failure::error(
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
            eprintln!("Cluster `{name}`: every changed session is healthy; generation {} stands.", a.number);
            continue;
        }
        all_ok = false;
        let target = a.number - 1;
        eprintln!(
            "Rolling node{} {} of cluster `{name}` back to generation {target}{}…",
            if bad_nodes.len() == 1 { "" } else { "s" },
            bad_nodes.join(", "),
            if target == 0 { " (before the first: what bai placed there is removed)" } else { "" }
        );
        let mut back = match reobserve(runtime, name, r, &bad_nodes) {
            Ok(back) => back,
            Err(why) => {
                printer.fail(Failure::error(
                    "bai::confirm::rollback_failed",
                    format!("cannot roll back: {why}; the nodes are left at generation {}", a.number),
                ));
                continue;
            }
        };
        let rolled = rollback::roll_back_now(runtime, c, &mut back, target, how, printer);
        if rolled {
            let (nodes, verb) = if bad_nodes.len() == 1 { ("node", "is") } else { ("nodes", "are") };
            eprintln!(
                "Rolled back: {nodes} {} of cluster `{name}` {verb} as in generation {target} again.",
                bad_nodes.join(", ")
            );
        } else {
            printer.fail(
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
fn reobserve(
    runtime: &tokio::runtime::Runtime,
    cluster: &str,
    r: &mut Observation,
    nodes: &[String],
) -> Result<Observation, String> {
    let mut back = Observation::default();
    for node in nodes {
        let Some(mut conn) = r.conns.remove(node) else {
            return Err(format!("node `{node}` is no longer connected"));
        };
        let snapshot = runtime.block_on(fleet::observe(&mut conn, cluster));
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
