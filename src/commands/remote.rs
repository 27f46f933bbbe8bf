//! What the commands that talk to nodes share at the edge: the runtime, the connection options, and how
//! node failures and conflicts are printed. Reaching the nodes is the library's ([`bai::reconcile`]).

use bai::failure::Failure;
use bai::fleet::{self, ConnectOptions, NodeFailure};
use bai::reconcile::Observation;

use crate::commands::Printer;

/// Prints node failures as people read them, each with its code.
pub fn print_failures(printer: &Printer, failures: &[NodeFailure]) {
    printer.failures(&failures.iter().map(NodeFailure::failure).collect::<Vec<_>>());
}

/// Vfolders whose marker a node cannot vouch for (a FIFO, a link, a huge file where the marker was):
/// bai leaves them alone, and says so wherever it plans, since the plan cannot show them.
pub fn print_conflicts(printer: &Printer, reached: &Observation) {
    let conflicts: Vec<Failure> = reached
        .snapshots
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
        .collect();
    printer.failures(&conflicts);
}

/// Secrets a read-only command could not digest: warnings, since their values read as unchanged.
pub fn print_unresolved_as_unchanged(printer: &Printer, unresolved: &bai::fleet::secrets::Unresolved) {
    let warnings: Vec<Failure> = unresolved
        .failures(bai::diagnostic::Severity::Warning)
        .into_iter()
        .map(|f| Failure { message: format!("{} (its value is taken as unchanged)", f.message), ..f })
        .collect();
    printer.failures(&warnings);
}

pub fn options(accept_new_host_keys: bool) -> Result<ConnectOptions, Failure> {
    let agent_binary = std::env::current_exe().map_err(|e| {
        Failure::error("bai::cli::agent_binary", format!("cannot find the bai binary to install as agent: {e}"))
    })?;
    Ok(ConnectOptions { accept_new_host_keys, agent_binary, holder: fleet::holder() })
}

/// The runtime and connection options of a command that talks to nodes; `None` (the reason printed)
/// when either cannot be had.
pub fn start(accept_new_host_keys: bool, printer: &Printer) -> Option<(tokio::runtime::Runtime, ConnectOptions)> {
    match (runtime(), options(accept_new_host_keys)) {
        (Ok(r), Ok(o)) => Some((r, o)),
        (Err(e), _) | (_, Err(e)) => {
            printer.fail(e);
            None
        }
    }
}

/// A runtime for the commands that talk to nodes.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::error("bai::cli::runtime", format!("cannot start the async runtime: {e}")))
}
