//! `bai lock FILE`: write `bai.lock` again from the local facts and what the nodes hold now (no lease);
//! the lock's part in `apply` is the engine's ([`bai::reconcile::lockfile`]).

use bai::reconcile::lockfile;

use crate::cli::LockArgs;
use crate::commands::remote;
use crate::commands::{Outcome, Printer, check};

pub fn run(args: &LockArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let lab = check(&args.file, cluster);
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    if lab.has_errors() {
        return Outcome::Failed;
    }
    let Some(engine) = remote::start(&args.connect, lab.config(), printer) else { return Outcome::Failed };
    let done = lockfile::relock(&engine, lab.config(), &args.file, &args.connect.on, cluster.is_none(), printer);
    if done { Outcome::Ok } else { Outcome::Failed }
}
