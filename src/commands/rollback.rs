//! `bai rollback FILE [--to N]`: the nodes back to the state of an earlier generation (the engine's
//! [`bai::reconcile::rollback`] says how).

use bai::reconcile::rollback::{RollbackRequest, rollback};

use crate::cli::{RollbackArgs, StatusFormat};
use crate::commands::{JsonDiagnostics, Outcome, Printer, check, remote};

pub fn run(args: &RollbackArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let converge = &args.converge;
    if converge.format == StatusFormat::Json {
        printer.json_diagnostics(JsonDiagnostics::Always);
    }
    let lab = check(&converge.file, cluster);
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    if lab.has_errors() {
        return Outcome::Failed;
    }
    let Some(engine) = remote::start(&converge.connect, lab.config(), printer) else { return Outcome::Failed };
    let request = RollbackRequest {
        config: lab.config(),
        sources: &lab.loaded.sources,
        file: &converge.file,
        to: args.to,
        selectors: &converge.connect.on,
        yes: converge.yes,
        allow_data_loss: converge.allow_data_loss,
    };
    if rollback(&engine, &request, printer) { Outcome::Ok } else { Outcome::Failed }
}
