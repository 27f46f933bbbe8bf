//! `bai apply FILE`, `bai apply PLAN` and `bai destroy FILE`: the arguments, checked, turned into a request
//! for the engine's [`converge`].

use bai::failure::Failure;
use bai::reconcile::Reporter;
use bai::reconcile::converge::{ConvergeRequest, Goal, converge};
use bai::reconcile::saved_plan;

use crate::cli::{ApplyArgs, ConvergeArgs, StatusFormat};
use crate::commands::{JsonDiagnostics, Outcome, Printer, check, remote};

/// A command line that asks for what cannot be done.
const USAGE: &str = "bai::cli::usage";

pub fn run(args: &ApplyArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    run_goal(&args.converge, Some(args), Goal::Apply, cluster, printer)
}

pub fn run_destroy(args: &ConvergeArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    run_goal(args, None, Goal::Destroy, cluster, printer)
}

/// `apply` is `destroy`'s flags and its own (`apply`); `destroy` has no `apply` part, so its `--help` does not
/// offer flags that mean nothing to it.
fn run_goal(
    args: &ConvergeArgs,
    apply: Option<&ApplyArgs>,
    goal: Goal,
    cluster: Option<&str>,
    printer: &Printer,
) -> Outcome {
    if args.format == StatusFormat::Json {
        printer.json_diagnostics(JsonDiagnostics::Always);
    }
    // `bai apply PLAN`: the lab comes from the plan, which was reviewed already (no prompt, like
    // `terraform apply PLANFILE`), and must still be what the plan was made against.
    let saved = match goal {
        Goal::Apply => match saved_plan::read(&args.file) {
            Ok(saved) => saved,
            Err(e) => {
                printer.fail(Failure::error("bai::plan::unreadable", e));
                return Outcome::Failed;
            }
        },
        Goal::Destroy => None,
    };
    if saved.is_some() && (!args.connect.on.is_empty() || cluster.is_some()) {
        printer
            .fail(Failure::error(USAGE, "a saved plan names its clusters and nodes itself: drop --on and --cluster"));
        return Outcome::Failed;
    }
    let file = saved.as_ref().map_or_else(|| args.file.clone(), |s| std::path::PathBuf::from(&s.lab));
    let cluster = saved.as_ref().map_or(cluster, |s| s.cluster.as_deref());
    let lab = check(&file, cluster);
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    if lab.has_errors() {
        return Outcome::Failed;
    }
    let Some(engine) = remote::start(&args.connect, lab.config(), printer) else { return Outcome::Failed };
    let request = ConvergeRequest {
        goal,
        config: lab.config(),
        sources: &lab.loaded.sources,
        file: &file,
        saved: saved.as_ref(),
        plan_file: &args.file,
        selectors: &args.connect.on,
        prune_lock: cluster.is_none(),
        update_lock: apply.is_some_and(|a| a.update_lock),
        yes: args.yes || saved.is_some(),
        allow_data_loss: args.allow_data_loss,
        confirm_healthy: apply.and_then(|a| a.confirm_healthy),
    };
    if converge(&engine, &request, printer) { Outcome::Ok } else { Outcome::Failed }
}
