//! Transports reach a node's agent: as a local child process (`local=#true`) or over SSH. Either way the
//! result is a byte stream carrying the JSON-lines RPC of [`crate::protocol`]; nothing above this layer
//! knows which one it has.

pub mod client;
pub mod exec_stdout;
pub mod exit_status;
pub mod known_hosts;
pub mod local;
pub mod ssh;
pub mod ssh_config;
pub mod tunnel;

use tokio::io::{AsyncRead, AsyncWrite};

/// The two directions of an agent's stdio, plus whatever keeps them open (a child process, an SSH
/// channel), dropped last, and the way through the node to its sessions' ports where there is one.
pub struct AgentStream {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    pub keepalive: Box<dyn std::any::Any + Send>,
    pub tunnel: Option<std::sync::Arc<dyn tunnel::Tunnel>>,
}
