//! The watcher's shared context: what its node tasks and heals read and write besides their own node.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::watch::WatchOptions;
use crate::watch::event::Event;
use crate::watch::status::{FleetStatus, NodeStatus};

/// What every node task, and each heal, shares with the watcher: the fleet status, the event channel,
/// the options, and the agents seen so far.
#[derive(Clone)]
pub struct WatchContext {
    pub status: Arc<Mutex<FleetStatus>>,
    pub events: mpsc::UnboundedSender<Event>,
    pub options: Arc<WatchOptions>,
    /// (cluster, agent identity) → the node that reached that agent first: two nodes of a lab that
    /// reach one agent home would share its lease, state and generations, so the second is not watched.
    pub agents: Arc<Mutex<BTreeMap<(String, String), String>>>,
}

impl WatchContext {
    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Changes this node's entry of the status (created on first use).
    pub(crate) fn update<R>(&self, cluster: &str, node: &str, f: impl FnOnce(&mut NodeStatus) -> R) -> R {
        let mut status = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Every ping lands here: look the entry up before allocating its key.
        if let Some(entry) = status.clusters.get_mut(cluster).and_then(|c| c.nodes.get_mut(node)) {
            return f(entry);
        }
        let entry = status.clusters.entry(cluster.to_string()).or_default().nodes.entry(node.to_string()).or_default();
        f(entry)
    }
}
