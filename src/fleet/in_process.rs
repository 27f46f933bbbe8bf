//! A connector for unit tests that runs the real agent ([`crate::agent::serve::serve_with`]) inside this
//! process, over an in-memory pipe: each node gets an agent home of its own under `root`, and all share
//! one [`InMemory`] container engine, as nodes on one Docker engine do. The engine's runs go through the
//! agent's real protocol, records, vfolders and lease, without SSH or Docker.

use std::path::PathBuf;

use crate::agent::containers::InMemory;
use crate::agent::home::Home;
use crate::fleet::ConnectOptions;
use crate::fleet::connector::{Connector, Starting};
use crate::model::{Cluster, Node};
use crate::transport::AgentStream;

#[derive(Clone)]
pub struct InProcess {
    /// Node `n`'s home is `root/n` (its agent home `root/n/bai`).
    pub root: PathBuf,
    pub engine: InMemory,
}

impl Connector for InProcess {
    fn start<'a>(&'a self, _: &'a Cluster, node: &'a Node, _: &'a ConnectOptions) -> Starting<'a> {
        let user_home = self.root.join(node.name.value.as_str());
        let home = Home::at(&user_home.join("bai"), &user_home);
        let engine = self.engine.clone();
        let (controller, agent) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let (reader, writer) = tokio::io::split(agent);
            let _ = crate::agent::serve::serve_with(reader, writer, home, Box::new(move || Ok(engine.clone()))).await;
        });
        let (reader, writer) = tokio::io::split(controller);
        Box::pin(async move {
            Ok(AgentStream {
                reader: Box::new(reader),
                writer: Box::new(writer),
                keepalive: Box::new(()),
                tunnel: None,
            })
        })
    }
}
