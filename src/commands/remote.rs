//! What the commands that talk to nodes share at the edge: the runtime, the connection options, and how
//! node failures and conflicts are printed. Reaching the nodes is the library's ([`bai::reconcile`]).

use bai::fleet::{self, ConnectOptions, NodeFailure};
use bai::reconcile::Observation;

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
pub fn print_conflicts(reached: &Observation) {
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
