//! What the commands that talk to nodes share at the edge: the engine, started from the connection flags.

use bai::model::Config;
use bai::reconcile::{Engine, Reporter};

use crate::cli::ConnectArgs;
use crate::commands::{CheckedLab, Printer, check};

/// The engine of a command that talks to nodes of `config`; `None` (the reason printed) when it cannot
/// start, or when an `--on` selector names no node of the lab.
pub fn start(connect: &ConnectArgs, config: &Config, printer: &Printer) -> Option<Engine> {
    let unmatched = bai::fleet::select::unmatched(config, &connect.on);
    if !unmatched.is_empty() {
        unmatched.into_iter().for_each(|f| printer.fail(f));
        return None;
    }
    Engine::start(connect.accept_new_host_keys, connect.parallel, &ssh_config(connect))
        .map_err(|e| printer.fail(e))
        .ok()
}

/// Which ssh_config to read: `--ssh-config` (or `BAI_SSH_CONFIG`), `none` for none, else `~/.ssh/config`.
fn ssh_config(connect: &ConnectArgs) -> bai::transport::ssh_config::Source {
    use bai::transport::ssh_config::Source;
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(std::path::PathBuf::from);
    match &connect.ssh_config {
        Some(path) if path.as_os_str() == "none" => Source::None,
        Some(path) => Source::File { path: path.clone(), home },
        None => Source::User { home },
    }
}

/// What a command that reaches sessions (`logs`, `exec`, `port-forward`, `cp`) starts from: the lab read
/// and valid, and the engine; `None` when either failed (and was reported).
pub fn lab(
    file: &std::path::Path,
    cluster: Option<&str>,
    connect: &ConnectArgs,
    printer: &Printer,
) -> Option<(CheckedLab, Engine)> {
    let lab = check(file, cluster);
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    if lab.has_errors() {
        return None;
    }
    let engine = start(connect, lab.config(), printer)?;
    Some((lab, engine))
}

/// The session named `name`, on a node `--on` selects; `None` (reported) otherwise.
pub fn target<'a>(
    lab: &'a CheckedLab,
    name: &str,
    connect: &ConnectArgs,
    printer: &Printer,
) -> Option<bai::reach::Target<'a>> {
    let target = bai::reach::find(lab.config(), name).map_err(|f| printer.fail(f)).ok()?;
    if !bai::fleet::select::selected(target.node, &connect.on) {
        printer.fail(bai::failure::Failure::error(
            "bai::select::no_match",
            format!("session `{name}` is on node `{}`, which --on leaves out", target.node_name()),
        ));
        return None;
    }
    Some(target)
}
