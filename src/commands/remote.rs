//! What the commands that talk to nodes share at the edge: the engine, started from the connection flags.

use bai::reconcile::{Engine, Reporter};

use crate::cli::ConnectArgs;
use crate::commands::Printer;

/// The engine of a command that talks to nodes; `None` (the reason printed) when it cannot start.
pub fn start(connect: &ConnectArgs, printer: &Printer) -> Option<Engine> {
    Engine::start(connect.accept_new_host_keys, connect.parallel).map_err(|e| printer.fail(e)).ok()
}
