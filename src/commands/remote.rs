//! What the commands that talk to nodes share at the edge: the engine, started from the connection flags.

use bai::model::Config;
use bai::reconcile::{Engine, Reporter};

use crate::cli::ConnectArgs;
use crate::commands::Printer;

/// The engine of a command that talks to nodes of `config`; `None` (the reason printed) when it cannot
/// start, or when an `--on` selector names no node of the lab.
pub fn start(connect: &ConnectArgs, config: &Config, printer: &Printer) -> Option<Engine> {
    let unmatched = bai::fleet::select::unmatched(config, &connect.on);
    if !unmatched.is_empty() {
        unmatched.into_iter().for_each(|f| printer.fail(f));
        return None;
    }
    Engine::start(connect.accept_new_host_keys, connect.parallel).map_err(|e| printer.fail(e)).ok()
}
