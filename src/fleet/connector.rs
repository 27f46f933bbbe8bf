//! The connector seam: how the controller starts a node's agent and gets its stdio. The real connector
//! runs a child process for `local=#true` and goes over SSH for every other node; tests put a
//! scripted agent (`fleet::scripted`) in its place, so that the engine's runs and the watcher are driven end
//! to end in one process, without SSH or Docker.

use std::future::Future;
use std::pin::Pin;

use crate::fleet::{ConnectOptions, NodeFailure};
use crate::model::{Cluster, Node};
use crate::transport::AgentStream;

/// An agent starting: its stdio, or why the node could not be reached.
pub type Starting<'a> = Pin<Box<dyn Future<Output = Result<AgentStream, NodeFailure>> + Send + 'a>>;

/// How a node's agent is started.
pub trait Connector: Send + Sync {
    fn start<'a>(&'a self, cluster: &'a Cluster, node: &'a Node, options: &'a ConnectOptions) -> Starting<'a>;
}

/// The real connector: a local child process, or the agent installed and run over SSH.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real;

impl Connector for Real {
    fn start<'a>(&'a self, cluster: &'a Cluster, node: &'a Node, options: &'a ConnectOptions) -> Starting<'a> {
        Box::pin(crate::fleet::start_agent(cluster, node, options))
    }
}
