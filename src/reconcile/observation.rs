//! Reaching a cluster's nodes: opening every selected node's agent in parallel, refusing a cluster whose
//! nodes reach one agent home, taking the apply lease where asked, and observing. Every command that talks
//! to nodes, and `bai watch --heal`, starts here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::future::join_all;
use tokio::sync::Semaphore;

use crate::failure::Failure;
use crate::fleet::{self, ConnectOptions, NodeConn, NodeFailure, select};
use crate::model::{Cluster, NodeName};
use crate::state::ClusterState;
use crate::state::snapshot::NodeSnapshot;

/// One cluster's selected nodes as reached: the open agent connections, what each node reported, and
/// the nodes that could not be reached or were refused (one failure each, never the whole run).
#[derive(Default)]
pub struct Observation {
    pub conns: BTreeMap<String, NodeConn>,
    pub snapshots: Vec<NodeSnapshot>,
    pub failures: Vec<NodeFailure>,
}

impl Observation {
    pub fn reachable(&self) -> BTreeSet<NodeName> {
        self.conns.keys().map(|n| NodeName(n.clone())).collect()
    }

    pub fn observed(&self, cluster: &Cluster) -> ClusterState {
        ClusterState::observed(&cluster.name.value, self.snapshots.clone())
    }

    /// Vfolders whose marker a node cannot vouch for (a FIFO, a link, a huge file where the marker was),
    /// as warnings: bai leaves them alone, and says so wherever it plans, since the plan cannot show them.
    pub fn conflicts(&self) -> Vec<Failure> {
        self.snapshots
            .iter()
            .flat_map(|n| {
                n.unowned.iter().filter_map(move |u| {
                    u.reason.as_ref().map(|why| {
                        Failure::warning(
                            "bai::vfolder::conflict",
                            format!("node `{}`: vfolder `{}`: {why}; bai leaves it alone", n.name, u.name),
                        )
                    })
                })
            })
            .collect()
    }
}

/// Connects to every selected node (at most `parallel` at once) and observes it; with `lease`, holding
/// the cluster's apply lease on each.
///
/// Every node is reached without the lease first, to learn which agent answers: two nodes that reach one
/// agent home would share its lease, state and generation records, so such a cluster is refused before
/// any lease is taken or anything observed, naming both nodes. Then the leases, then observing.
pub async fn reach(
    cluster: &Cluster,
    selectors: &[String],
    options: &ConnectOptions,
    lease: bool,
    parallel: usize,
) -> Observation {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let name = cluster.name.value.as_str();
    let opening = cluster.nodes.iter().filter(|n| select::selected(n, selectors)).map(|node| {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire_owned().await.ok();
            fleet::open(cluster, node, options, false).await
        }
    });
    let mut reached = Observation { conns: BTreeMap::new(), snapshots: Vec::new(), failures: Vec::new() };
    let mut opened = Vec::new();
    for result in join_all(opening).await {
        match result {
            Ok(conn) => opened.push(conn),
            Err(failure) => reached.failures.push(failure),
        }
    }
    let shared = fleet::shared_agents(opened.iter().map(|c| (c.node.as_str(), c.identity.as_deref())));
    if !shared.is_empty() {
        reached.failures.extend(shared.iter().map(|(a, b)| fleet::shared_agent_failure(name, a, b)));
        return reached;
    }
    let work = opened.into_iter().map(|mut conn| {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire_owned().await.ok();
            if lease {
                fleet::take_lease(&mut conn, name, &options.holder).await?;
            }
            let snapshot = fleet::observe(&mut conn, name).await?;
            Ok::<_, NodeFailure>((conn, snapshot))
        }
    });
    for result in join_all(work).await {
        match result {
            Ok((conn, snapshot)) => {
                reached.snapshots.push(snapshot);
                reached.conns.insert(conn.node.clone(), conn);
            }
            Err(failure) => reached.failures.push(failure),
        }
    }
    reached
}
