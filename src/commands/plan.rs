//! `bai plan FILE`: the changes `apply` would make, against the nodes as they are (observed over SSH,
//! no lease), nodes that hold nothing (`--offline`) or a snapshot (`--state`); `-o PLAN` saves it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bai::diagnostic::{Code, Problem, sort_problems};
use bai::failure::Failure;
use bai::model::{ClusterName, NodeName};
use bai::plan::saved::Against;
use bai::plan::{Plan, render_json, render_markdown, render_text};
use bai::reconcile::survey::{plan_against, survey};
use bai::reconcile::{Reporter, saved_plan};
use bai::secret::Digests;
use bai::state::ClusterState;
use bai::state::snapshot::{FORMAT_VERSION, NodeSnapshot, Snapshot};
use bai::validate::check_inventory;

use crate::cli::{ConnectArgs, PlanArgs, PlanFormat, PlanOutput};
use crate::commands::{JsonDiagnostics, Outcome, Printer, check, remote};

pub fn run(args: &PlanArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    if args.output.format == PlanFormat::Json {
        printer.json_diagnostics(JsonDiagnostics::OnFailure);
    }
    let mut lab = check(&args.file, cluster);
    if lab.has_errors() {
        printer.diagnostics(&lab.problems, &lab.loaded.sources);
        return Outcome::Failed;
    }
    // Per cluster, the nodes' own reports: what a saved plan fingerprints.
    let mut reports: BTreeMap<String, Vec<NodeSnapshot>> = BTreeMap::new();
    // Per cluster, the secrets' digests under the nodes' keys: known only for a live plan.
    let mut digests: BTreeMap<ClusterName, Digests> = BTreeMap::new();
    let (observed, against) = if let Some(path) = &args.state {
        match read_snapshot(path) {
            Ok(snapshot) => {
                for c in &snapshot.clusters {
                    reports.insert(c.name.clone(), c.nodes.clone());
                }
                (ClusterState::from_snapshot(&snapshot), Against::Snapshot)
            }
            Err(problem) => {
                printer.diagnostics(&[problem], &lab.loaded.sources);
                return Outcome::Failed;
            }
        }
    } else if args.offline {
        (BTreeMap::new(), Against::Offline)
    } else {
        match observe_live(&lab, &args.connect, &mut digests, printer) {
            Some((observed, snapshots)) => {
                reports = snapshots;
                (observed, Against::Live)
            }
            None => return Outcome::Failed,
        }
    };
    for c in &lab.loaded.config.clusters {
        if let Some(state) = observed.get(&c.name.value) {
            lab.problems.extend(check_inventory(c, state));
        }
    }
    sort_problems(&mut lab.problems);
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    // The lab against what the nodes have (a pinned device a node lacks) is wrong as surely as the file.
    if lab.problems.iter().any(Problem::is_error) {
        return Outcome::Failed;
    }
    // A live plan narrowed with --on plans the selected nodes only, as `apply --on` would.
    let only = (against == Against::Live && !args.connect.on.is_empty()).then(|| reached_nodes(&reports));
    let (plan, placement) = plan_against(lab.config(), &observed, only.as_ref(), &digests);
    printer.failures(&placement);
    if placement.iter().any(Failure::is_error) {
        printer.fail(
            Failure::error("bai::plan::unplaceable", "no plan: some sessions cannot be given their GPUs")
                .help("change the sessions above, or free the devices something else holds"),
        );
        return Outcome::Failed;
    }
    if let Some(out) = &args.out {
        let saved = saved_plan::build(
            lab.config(),
            &lab.loaded.sources,
            &args.file,
            cluster,
            against,
            &observed,
            &reports,
            &plan,
        );
        if let Err(e) = saved_plan::write(out, &saved) {
            printer.fail(e);
            return Outcome::Failed;
        }
        eprintln!(
            "Saved the plan to `{}`; `bai apply {}` carries out exactly this plan.",
            out.display(),
            out.display()
        );
    }
    emit(&plan, &args.output, printer)
}

/// Observed state per cluster.
type Observed = BTreeMap<ClusterName, ClusterState>;
/// The nodes' own reports per cluster name: what a saved plan fingerprints.
type Reports = BTreeMap<String, Vec<NodeSnapshot>>;

/// Observes every selected node of every cluster (no lease: planning never waits for an apply).
/// `None` when a node could not be reached: a plan that misses a node would be wrong about it.
fn observe_live(
    lab: &crate::commands::CheckedLab,
    connect: &ConnectArgs,
    digests: &mut BTreeMap<ClusterName, Digests>,
    printer: &Printer,
) -> Option<(Observed, Reports)> {
    let engine = remote::start(connect, lab.config(), printer)?;
    let mut observed = BTreeMap::new();
    let mut reports = BTreeMap::new();
    let mut failed = false;
    // Secrets are digested under the nodes' keys, so that a changed value plans the replace `apply` will
    // make; one that cannot be read here is taken as unchanged.
    for s in survey(&engine, lab.config(), &connect.on, printer) {
        printer.failures(&s.conflicts);
        failed |= !s.failures.is_empty();
        digests.insert(s.cluster.clone(), bai::secret::digests_of(&s.desired));
        reports.insert(s.cluster.to_string(), s.snapshots);
        observed.insert(s.cluster, s.observed);
    }
    if failed {
        printer.fail(
            Failure::error("bai::plan::incomplete", "cannot plan without every node's state")
                .help("fix the nodes above, narrow the run with --on, or plan with --offline"),
        );
        return None;
    }
    Some((observed, reports))
}

/// The nodes that reported, per cluster.
fn reached_nodes(reports: &BTreeMap<String, Vec<NodeSnapshot>>) -> BTreeMap<String, BTreeSet<NodeName>> {
    reports.iter().map(|(c, nodes)| (c.clone(), nodes.iter().map(|n| NodeName(n.name.clone())).collect())).collect()
}

pub fn emit(plan: &Plan, output: &PlanOutput, printer: &Printer) -> Outcome {
    printer.stdout(&match output.format {
        PlanFormat::Text => render_text(plan),
        PlanFormat::Json => render_json(plan),
        PlanFormat::Markdown => render_markdown(plan),
    });
    if output.detailed_exitcode && !plan.summary().is_empty() { Outcome::Changes } else { Outcome::Ok }
}

fn read_snapshot(path: &Path) -> Result<Snapshot, Problem> {
    let name = bai::config::display_name(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problem::error(Code::IoRead, format!("cannot read state snapshot `{name}`: {e}")))?;
    let snapshot: Snapshot = serde_json::from_str(&text).map_err(|e| {
        Problem::error(Code::InvalidState, format!("`{name}` is not a state snapshot: {e}"))
            .help("write one with `bai status --format json`; its format is schema/state.schema.json")
    })?;
    if snapshot.format_version != FORMAT_VERSION {
        return Err(Problem::error(
            Code::InvalidState,
            format!("`{name}` has format_version {}, this bai reads {FORMAT_VERSION}", snapshot.format_version),
        )
        .help("write a new snapshot with this version of bai"));
    }
    Ok(snapshot)
}
