//! What `apply`, `destroy` and `status` share: reaching the selected nodes of a cluster in parallel and
//! observing them, with a failure per node rather than for the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bai::fleet::{self, ConnectOptions, NodeConn, NodeFailure, select};
use bai::model::{Cluster, NodeName};
use bai::state::ClusterState;
use bai::state::snapshot::NodeSnapshot;
use futures_util::future::join_all;
use tokio::sync::Semaphore;

/// The reachable nodes of one cluster, their observed state, and the ones that failed.
#[derive(Default)]
pub struct Reached {
    pub conns: BTreeMap<String, NodeConn>,
    pub snapshots: Vec<NodeSnapshot>,
    pub failures: Vec<NodeFailure>,
}

impl Reached {
    pub fn reachable(&self) -> BTreeSet<NodeName> {
        self.conns.keys().map(|n| NodeName(n.clone())).collect()
    }

    pub fn observed(&self, cluster: &Cluster) -> ClusterState {
        ClusterState::observed(&cluster.name.value, self.snapshots.clone())
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
) -> Reached {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let name = cluster.name.value.as_str();
    let opening = cluster.nodes.iter().filter(|n| select::selected(n, selectors)).map(|node| {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire_owned().await.ok();
            fleet::open(cluster, node, options, false).await
        }
    });
    let mut reached = Reached { conns: BTreeMap::new(), snapshots: Vec::new(), failures: Vec::new() };
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

/// Prints node failures as people read them.
pub fn print_failures(failures: &[NodeFailure]) {
    for f in failures {
        let what = if f.unreachable { "unreachable" } else { "refused" };
        eprintln!("error: node `{}` {what}: {}", f.node, f.message);
        if let Some(help) = &f.help {
            eprintln!("  help: {help}");
        }
    }
}

/// Vfolders whose marker a node cannot vouch for (a FIFO, a link, a huge file where the marker was):
/// bai leaves them alone, and says so wherever it plans, since the plan cannot show them.
pub fn print_conflicts(reached: &Reached) {
    for n in &reached.snapshots {
        for u in &n.unowned {
            if let Some(why) = &u.reason {
                eprintln!("warning: node `{}`: vfolder `{}`: {why}; bai leaves it alone", n.name, u.name);
            }
        }
    }
}

pub fn options(accept_new_host_keys: bool) -> Result<ConnectOptions, String> {
    let agent_binary =
        std::env::current_exe().map_err(|e| format!("cannot find the bai binary to install as agent: {e}"))?;
    Ok(ConnectOptions { accept_new_host_keys, agent_binary, holder: fleet::holder() })
}

/// The runtime and connection options of a command that talks to nodes; `None` (the reason printed)
/// when either cannot be had.
pub fn start(accept_new_host_keys: bool) -> Option<(tokio::runtime::Runtime, ConnectOptions)> {
    match (runtime(), options(accept_new_host_keys)) {
        (Ok(r), Ok(o)) => Some((r, o)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// A runtime for the commands that talk to nodes.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}
