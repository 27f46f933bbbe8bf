//! `bai apply --confirm-healthy WINDOW`: after an apply, the sessions it created or replaced are probed
//! on their nodes until every one is healthy, or the window ends.
//!
//! Healthy is what `bai watch` calls healthy, with the same probe model: the container runs and, when the
//! session declares `health`, its check passes; a session turns healthy after its `success-threshold`
//! good probes in a row, and back after `failure-threshold` bad ones. Each session is probed at its own
//! `interval` (its `health` settings over the cluster's `probe`), the first time at once. The wait ends
//! as soon as every session is healthy at the same moment; a session that is not when the window ends
//! fails the confirmation, with the last thing seen (`HTTP 404`, `container exited (code 1)`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::fleet::NodeConn;
use crate::fleet::execute::{ChangeOutcome, ChangeResult};
use crate::graph::Kind;
use crate::model::{Cluster, HealthCheck};
use crate::plan::Action;
use crate::protocol::{HealthCheckSpec, HealthProbe, Method, Probe, ProbeReply};
use crate::state::snapshot::ContainerState;
use crate::transport::client::ClientError;
use crate::watch::settings::{Overrides, Timing, health_timing, node_timing};
use crate::watch::threshold::Threshold;

/// One session to confirm.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionToConfirm {
    pub session: String,
    pub node: String,
    pub check: Option<HealthCheckSpec>,
    pub timing: Timing,
}

/// How a session ended the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub session: String,
    pub node: String,
    pub healthy: bool,
    /// The last thing seen, for people.
    pub detail: String,
}

/// The sessions an apply created or replaced, with their probe settings.
pub fn sessions_to_confirm(cluster: &Cluster, results: &[ChangeResult]) -> Vec<SessionToConfirm> {
    let changed: BTreeSet<&str> = results
        .iter()
        .filter(|r| matches!(r.outcome, ChangeOutcome::Done(_)))
        .filter(|r| r.change.id.kind == Kind::Session && matches!(r.change.action, Action::Create | Action::Replace))
        .map(|r| r.change.id.name.as_str())
        .collect();
    let none = Overrides::default();
    cluster
        .sessions
        .iter()
        .filter(|s| changed.contains(s.name.value.as_str()))
        .map(|s| {
            let node = cluster.nodes.iter().find(|n| n.name.value == s.node.value);
            let (check, timing) = match (&s.health, node) {
                (Some(h), _) => {
                    let check = match &h.check {
                        HealthCheck::Http { port, path } => HealthCheckSpec::Http { port: *port, path: path.clone() },
                        HealthCheck::Exec(argv) => HealthCheckSpec::Exec { argv: argv.clone() },
                    };
                    (Some(check), health_timing(cluster, h, &none))
                }
                (None, Some(n)) => (None, node_timing(cluster, n, &none)),
                (None, None) => (None, health_timing_default()),
            };
            SessionToConfirm { session: s.name.value.to_string(), node: s.node.value.to_string(), check, timing }
        })
        .collect()
}

fn health_timing_default() -> Timing {
    use crate::watch::settings::*;
    Timing {
        interval: DEFAULT_INTERVAL,
        timeout: DEFAULT_TIMEOUT,
        failure_threshold: DEFAULT_FAILURE_THRESHOLD,
        success_threshold: DEFAULT_SUCCESS_THRESHOLD,
    }
}

struct Track {
    threshold: Threshold,
    next: Instant,
    detail: String,
}

/// Probes `watched` over `conns` until all are healthy or `window` ends; one verdict per session, in
/// the order given.
pub async fn confirm(
    conns: &mut BTreeMap<String, NodeConn>,
    cluster: &str,
    watched: &[SessionToConfirm],
    window: Duration,
) -> Vec<Verdict> {
    let start = Instant::now();
    let deadline = start + window;
    let mut tracks: Vec<Track> = watched
        .iter()
        .map(|w| Track {
            threshold: Threshold::new(w.timing.failure_threshold, w.timing.success_threshold),
            next: start,
            detail: "not probed yet".into(),
        })
        .collect();
    loop {
        let now = Instant::now();
        let due: Vec<usize> = (0..watched.len()).filter(|&i| tracks[i].next <= now).collect();
        let mut by_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in &due {
            by_node.entry(watched[i].node.as_str()).or_default().push(i);
        }
        let calls = conns.iter_mut().filter_map(|(node, conn)| {
            let indices = by_node.get(node.as_str())?.clone();
            Some(probe_node(conn, cluster, node.clone(), watched, indices))
        });
        for (indices, outcome) in join_all(calls).await {
            for (i, ok, detail) in judge(watched, &indices, outcome) {
                tracks[i].threshold.record(ok);
                tracks[i].detail = detail;
            }
        }
        for &i in &due {
            tracks[i].next = now + watched[i].timing.interval;
        }
        // A node without a connection cannot confirm its sessions.
        for (i, w) in watched.iter().enumerate() {
            if !conns.contains_key(&w.node) {
                tracks[i].detail = format!("node `{}` is not connected", w.node);
            }
        }
        let all_healthy = tracks.iter().all(|t| t.threshold.verdict() == Some(true));
        let next = tracks.iter().map(|t| t.next).min().unwrap_or(deadline);
        if all_healthy || next >= deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    watched
        .iter()
        .zip(tracks)
        .map(|(w, t)| Verdict {
            session: w.session.clone(),
            node: w.node.clone(),
            healthy: t.threshold.verdict() == Some(true),
            detail: t.detail,
        })
        .collect()
}

/// One `probe` call for the due sessions of one node, under the longest of their timeouts.
async fn probe_node(
    conn: &mut NodeConn,
    cluster: &str,
    node: String,
    watched: &[SessionToConfirm],
    indices: Vec<usize>,
) -> (Vec<usize>, Result<ProbeReply, String>) {
    let checks: Vec<HealthProbe> = indices
        .iter()
        .filter_map(|&i| {
            let w = &watched[i];
            w.check.clone().map(|check| HealthProbe {
                session: w.session.clone(),
                check,
                timeout_ms: w.timing.timeout.as_millis() as u64,
            })
        })
        .collect();
    let longest = indices.iter().map(|&i| watched[i].timing.timeout).max().unwrap_or(Duration::from_secs(2));
    let asked = checks.len();
    let request = Method::Probe(Probe { cluster: cluster.to_string(), node, checks });
    let reply = match conn.client.call_within::<ProbeReply>(request, longest + Duration::from_secs(5)).await {
        Ok(mut reply) => crate::untrusted::check_probe(&mut reply, asked)
            .map(|()| reply)
            .map_err(|why| format!("the node's answer is not believable: {why}")),
        Err(ClientError::Timeout { .. }) => {
            Err(format!("the node did not answer the probe within {}s", (longest.as_secs() + 5)))
        }
        Err(e) => Err(format!("probing failed: {e}")),
    };
    (indices, reply)
}

/// Each due session's result from its node's answer: (index, healthy, what was seen).
fn judge(
    watched: &[SessionToConfirm],
    indices: &[usize],
    reply: Result<ProbeReply, String>,
) -> Vec<(usize, bool, String)> {
    let reply = match reply {
        Ok(reply) => reply,
        Err(why) => return indices.iter().map(|&i| (i, false, why.clone())).collect(),
    };
    indices
        .iter()
        .map(|&i| {
            let w = &watched[i];
            let Some(container) = reply.sessions.iter().find(|s| s.name == w.session) else {
                return (i, false, "container missing".to_string());
            };
            if container.state != ContainerState::Running {
                let code = container.exit_code.map_or(String::new(), |c| format!(" (code {c})"));
                return (i, false, format!("container {}{code}", container.state.as_str()));
            }
            if w.check.is_none() {
                return (i, true, "container running".to_string());
            }
            match reply.health.iter().find(|h| h.session == w.session) {
                Some(h) => (i, h.healthy, h.detail.clone()),
                None => (i, false, "the node did not run the health check".to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HealthResult;
    use crate::state::snapshot::SessionSnapshot;

    fn watched(session: &str, check: bool) -> SessionToConfirm {
        SessionToConfirm {
            session: session.into(),
            node: "n".into(),
            check: check.then(|| HealthCheckSpec::Http { port: 80, path: "/".into() }),
            timing: health_timing_default(),
        }
    }

    fn container(name: &str, state: ContainerState, exit_code: Option<i64>) -> SessionSnapshot {
        SessionSnapshot { name: name.into(), spec_hash: "h".into(), state, exit_code, spec: None }
    }

    #[test]
    fn judging_reads_containers_then_checks() {
        let w = vec![watched("web-a", true), watched("job-a", false), watched("gone", false), watched("dead", false)];
        let reply = ProbeReply {
            sessions: vec![
                container("web-a", ContainerState::Running, None),
                container("job-a", ContainerState::Running, None),
                container("dead", ContainerState::Exited, Some(3)),
            ],
            unowned: vec![],
            health: vec![HealthResult { session: "web-a".into(), healthy: false, detail: "HTTP 404".into() }],
            generation: None,
        };
        let out = judge(&w, &[0, 1, 2, 3], Ok(reply));
        assert_eq!(
            out,
            vec![
                (0, false, "HTTP 404".to_string()),
                (1, true, "container running".to_string()),
                (2, false, "container missing".to_string()),
                (3, false, "container exited (code 3)".to_string()),
            ]
        );
        let failed = judge(&w, &[1], Err("probing failed: closed".into()));
        assert_eq!(failed, vec![(1, false, "probing failed: closed".to_string())]);
    }
}
