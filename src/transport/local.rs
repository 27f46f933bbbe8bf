//! The local transport: the agent as a child process of the controller (`local=#true` nodes). Same RPC,
//! no SSH: what lets a newcomer apply a lab on their own workstation with nothing but Docker.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::transport::AgentStream;

/// Starts `<binary> agent`; the child is killed when the stream is dropped.
pub fn spawn(binary: &Path) -> std::io::Result<AgentStream> {
    let mut child = Command::new(binary)
        .arg("agent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(writer), Some(reader)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("the agent process has no stdio"));
    };
    Ok(AgentStream {
        reader: Box::new(reader),
        writer: Box::new(writer),
        keepalive: Box::new(child),
        tunnel: Some(std::sync::Arc::new(super::tunnel::Direct)),
    })
}
