//! The engine a command that talks to nodes drives: the async runtime, how nodes are reached, and how many
//! are worked on at once. Every step the engine takes (observe, plan, execute, record) goes through one
//! [`Engine`], so that commands only parse arguments, call the engine and render what it reports.

use std::future::Future;

use crate::failure::Failure;
use crate::fleet::ConnectOptions;
use crate::model::Cluster;
use crate::reconcile::Observation;

pub struct Engine {
    runtime: tokio::runtime::Runtime,
    pub options: ConnectOptions,
    /// At most this many nodes are connected, observed or changed at once.
    pub parallel: usize,
}

impl Engine {
    /// An engine that installs `bai-agent` (or, without one of this build beside it, this very program) as
    /// the agent ([`crate::agent::binary`]) and reads `ssh_config` for what the lab leaves out of how a node
    /// is reached.
    pub fn start(
        accept_new_host_keys: bool,
        parallel: usize,
        ssh_config: &crate::transport::ssh_config::Source,
    ) -> Result<Engine, Failure> {
        let controller = std::env::current_exe().map_err(|e| {
            Failure::error("bai::cli::agent_binary", format!("cannot find the bai binary to install as agent: {e}"))
        })?;
        let agent_binary = crate::agent::binary::for_controller(&controller);
        let ssh_config = crate::transport::ssh_config::load(ssh_config).map_err(|e| Failure::of(&e))?;
        Engine::with_options(
            ConnectOptions::new(accept_new_host_keys, agent_binary).with_ssh_config(ssh_config),
            parallel,
        )
    }

    /// An engine that reaches nodes as `options` say (tests: a scripted connector).
    pub fn with_options(options: ConnectOptions, parallel: usize) -> Result<Engine, Failure> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failure::error("bai::cli::runtime", format!("cannot start the async runtime: {e}")))?;
        Ok(Engine { runtime, options, parallel })
    }

    /// Runs `work` to its end on the engine's runtime.
    pub fn block_on<F: Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// Ends the runtime without waiting for its blocking threads: one may be parked in a read of a
    /// terminal that nothing will ever type into again (`bai exec -i`).
    pub fn leave(self) {
        self.runtime.shutdown_background();
    }

    /// The selected nodes of `cluster` reached and observed; with `lease`, each holding the apply lease.
    pub fn reach(&self, cluster: &Cluster, selectors: &[String], lease: bool) -> Observation {
        self.block_on(crate::reconcile::reach(cluster, selectors, &self.options, lease, self.parallel))
    }
}
