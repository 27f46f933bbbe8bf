//! `bai apply FILE` (and `bai destroy FILE`): observe every selected node, plan, show the plan, confirm,
//! execute, report. Destroy is the same walk towards an empty lab.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use bai::fleet::execute::{self, ChangeContext, ChangeOutcome, ChangeResult};
use bai::fleet::secrets::SecretValues;
use bai::fleet::sources::Sources;
use bai::generation::Extras;
use bai::graph::{ResourceGraph, build_graph};
use bai::plan::{Plan, diff, render_text};
use bai::reconcile::{self, KeyMaking};
use bai::state::ClusterState;

use bai::failure::Failure;

use crate::cli::{ConvergeArgs, StatusFormat};
use crate::commands::confirm;
use crate::commands::generations;
use crate::commands::lock as lockfile;
use crate::commands::remote;
use crate::commands::saved_plan;
use crate::commands::{JsonDiagnostics, Outcome, Printer, check};
use bai::reconcile::Observation;

/// A command line that asks for what cannot be done.
pub(crate) const USAGE: &str = "bai::cli::usage";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Goal {
    Apply,
    Destroy,
}

pub fn run(args: &ConvergeArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    converge(args, Goal::Apply, cluster, printer)
}

pub fn run_destroy(args: &ConvergeArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    converge(args, Goal::Destroy, cluster, printer)
}

fn converge(args: &ConvergeArgs, goal: Goal, cluster: Option<&str>, printer: &Printer) -> Outcome {
    if args.format == StatusFormat::Json {
        printer.json_diagnostics(JsonDiagnostics::Always);
    }
    let (connect, allow_data_loss) = (&args.connect, args.allow_data_loss);
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
    if goal == Goal::Destroy && args.confirm_healthy.is_some() {
        printer
            .fail(Failure::error(USAGE, "--confirm-healthy is for `bai apply`: a destroy leaves no session to watch"));
        return Outcome::Failed;
    }
    if saved.is_some() && (!connect.on.is_empty() || cluster.is_some()) {
        printer
            .fail(Failure::error(USAGE, "a saved plan names its clusters and nodes itself: drop --on and --cluster"));
        return Outcome::Failed;
    }
    let lab_path = saved.as_ref().map_or_else(|| args.file.clone(), |s| std::path::PathBuf::from(&s.lab));
    let (file, yes) = (&lab_path, args.yes || saved.is_some());
    let lab = check(file, saved.as_ref().map_or(cluster, |s| s.cluster.as_deref()));
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    if lab.has_errors() {
        return Outcome::Failed;
    }
    // Why a saved plan is stale: the configuration first; the touched nodes are still looked at, so
    // that the refusal names everything that moved.
    let mut stale = match &saved {
        Some(saved) => saved_plan::check_config(saved, &saved_plan::config_of(&lab, file)),
        None => Vec::new(),
    };
    let Some((runtime, options)) = remote::start(connect.accept_new_host_keys, printer) else { return Outcome::Failed };
    // The lock is checked before any node is reached: a mismatch changes nothing anywhere.
    let mut lock = match goal {
        Goal::Apply => match lockfile::prepare(
            file,
            lab.config(),
            &options.agent_binary,
            cluster.is_none() && saved.as_ref().is_none_or(|s| s.cluster.is_none()),
            args.update_lock,
            printer,
        ) {
            Ok(prepared) => Some(prepared),
            Err(()) => return Outcome::Failed,
        },
        Goal::Destroy => None,
    };
    let clusters = &lab.config().clusters;
    // Node images the lock says were made from other content: the plan replaces them.
    let mut lock_stale = Vec::new();
    // Observe everything first, holding each node's lease, so that the plan shown is the plan executed.
    let mut reached: Vec<Observation> = Vec::new();
    let mut prepared: Vec<(ClusterState, ClusterState, ResourceGraph, SecretValues)> = Vec::new();
    let mut unresolved_secrets = false;
    for c in clusters {
        let mut r = match &saved {
            // Only the nodes the plan changes: the others may change, or be down, without harm.
            Some(s) => {
                let touched = saved_plan::touched(s, c.name.value.as_str());
                if touched.is_empty() {
                    Observation::default()
                } else {
                    runtime.block_on(bai::reconcile::reach(c, &touched, &options, true, connect.parallel))
                }
            }
            None => runtime.block_on(bai::reconcile::reach(c, &connect.on, &options, true, connect.parallel)),
        };
        remote::print_failures(printer, &r.failures);
        remote::print_conflicts(printer, &r);
        if let Some(s) = &saved {
            stale.extend(saved_plan::check_nodes(&runtime, s, c.name.value.as_str(), &mut r));
        }
        let mut observed = r.observed(c);
        if let Some(entries) = lock.as_ref().and_then(|l| l.update.lock.clusters.get(c.name.value.as_str())) {
            lock_stale.extend(lockfile::mark_stale(&mut observed, entries, &r.snapshots));
        }
        let (desired, secrets) = match goal {
            Goal::Apply => {
                // Secrets are read once and digested under each node's key (made now if the node has
                // none) before the diff, so that a changed value plans a replace; one that cannot be read
                // stops the run before anything changes.
                let wanted = ClusterState::desired(c).restrict(&r.reachable());
                let desired = runtime.block_on(reconcile::desired(&c.root, wanted, &mut r, &observed, KeyMaking::Make));
                printer.failures(&desired.unresolved.failures(bai::diagnostic::Severity::Error));
                unresolved_secrets |= !desired.unresolved.is_empty();
                (desired.state, desired.secrets)
            }
            Goal::Destroy => (ClusterState::empty(c.name.value.clone()), SecretValues::default()),
        };
        let graph = match goal {
            Goal::Apply => build_graph(c),
            Goal::Destroy => ResourceGraph::default(),
        };
        prepared.push((desired, observed, graph, secrets));
        reached.push(r);
    }
    if unresolved_secrets {
        printer.fail(Failure::error(
            "bai::secret::unresolved",
            "nothing was changed: every secret must be readable on the controller to apply",
        ));
        return Outcome::Failed;
    }
    let unreachable: usize = reached.iter().map(|r| r.failures.len()).sum();
    let triples: Vec<_> = prepared.iter().map(|(d, o, g, _)| (d, o, g)).collect();
    let mut plan = diff(&triples);
    lockfile::explain_stale(&mut plan, &lock_stale);
    if let Some(s) = &saved {
        if stale.is_empty() && !bai::plan::saved::same_changes(&s.plan, &plan) {
            stale.extend(bai::plan::saved::plan_differences(&s.plan, &plan));
        }
        if !stale.is_empty() {
            printer.fail(saved_plan::refusal(&args.file, &stale));
            return Outcome::Failed;
        }
        plan = s.plan.clone();
    }
    printer.plan_text(&render_text(&plan));
    if plan.summary().is_empty() {
        if unreachable > 0 {
            return Outcome::Failed;
        }
        return match lock.as_mut().map(|l| lockfile::finish(l, clusters, &mut reached, &runtime, false, printer)) {
            Some(Err(())) => Outcome::Failed,
            _ => Outcome::Ok,
        };
    }
    if !yes && !confirm(goal, printer) {
        return Outcome::Failed;
    }
    let mut results: Vec<ChangeResult> = Vec::new();
    let progress = Progress::new(&plan);
    // Generations: every node a run touched records this run's number (see `generations::record`).
    let mut stamp = generations::Stamp::new(&lab, file);
    stamp.meta.plan_id = saved.as_ref().map(|s| s.id.clone());
    let mut recorded = true;
    let mut applied: Vec<confirm::Applied> = Vec::new();
    for ((c, r), (desired, observed, graph, secrets)) in clusters.iter().zip(reached.iter_mut()).zip(&prepared) {
        let changes: Vec<_> = plan.changes.iter().filter(|ch| ch.cluster == c.name.value).cloned().collect();
        let entries = lock.as_ref().and_then(|l| l.update.lock.clusters.get(c.name.value.as_str()));
        let sources = Sources::new(c);
        let input = ChangeContext {
            cluster: c,
            desired,
            observed,
            graph,
            allow_data_loss,
            parallel: connect.parallel,
            lock: entries,
            secrets,
            sources: &sources,
        };
        let report = |result: &ChangeResult| progress.report(result);
        let done = runtime.block_on(execute::execute(&input, &changes, &mut r.conns, &report));
        // Destroy records an empty generation: a later rollback can bring the cluster back. The sources
        // are hashed only when some node of the cluster records a generation.
        let extras = match goal {
            Goal::Apply if !generations::touched(&done).is_empty() => Extras::from_cluster(c, &stamp.lab_dir, &sources),
            Goal::Apply | Goal::Destroy => Extras::default(),
        };
        let number = generations::current(r).unwrap_or(0) + 1;
        let not_recorded = generations::record(&runtime, c, desired, &extras, &mut r.conns, &done, number, &stamp.meta);
        recorded &= not_recorded.is_empty();
        printer.failures(&not_recorded);
        applied.push(confirm::Applied { sessions: bai::watch::confirm::sessions_to_confirm(c, &done), number });
        results.extend(done);
    }
    progress.finish();
    let failures: Vec<_> = reached.iter().flat_map(|r| r.failures.clone()).collect();
    print_report(printer, &plan, &results, &failures);
    let failed = results.iter().any(|r| !matches!(r.outcome, ChangeOutcome::Done(_)));
    if failed || !failures.is_empty() || !recorded {
        return Outcome::Failed;
    }
    if let (Goal::Apply, Some(window)) = (goal, args.confirm_healthy) {
        let how = confirm::How { window, stamp: &stamp, allow_data_loss, parallel: connect.parallel };
        if !confirm::confirm_or_roll_back(&runtime, clusters, &mut reached, &applied, &how, printer) {
            return Outcome::Failed;
        }
    }
    match lock.as_mut().map(|l| lockfile::finish(l, clusters, &mut reached, &runtime, true, printer)) {
        Some(Err(())) => Outcome::Failed,
        _ => Outcome::Ok,
    }
}

/// How a run shows its progress: a bar per node on a terminal, one plain line per change otherwise.
pub(crate) struct Progress {
    bars: Option<(indicatif::MultiProgress, BTreeMap<String, indicatif::ProgressBar>)>,
}

impl Progress {
    pub(crate) fn new(plan: &Plan) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bars: None };
        }
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:24}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for c in &plan.changes {
            *counts.entry(c.node.clone().unwrap_or_default()).or_default() += 1;
        }
        let bars = counts
            .into_iter()
            .map(|(node, n)| {
                let bar = multi.add(indicatif::ProgressBar::new(n).with_style(style.clone()).with_prefix(node.clone()));
                (node, bar)
            })
            .collect();
        Progress { bars: Some((multi, bars)) }
    }

    pub(crate) fn report(&self, result: &ChangeResult) {
        let (mark, detail) = match &result.outcome {
            ChangeOutcome::Done(d) => ("ok  ", d.as_str()),
            ChangeOutcome::Failed(f) => ("FAIL", f.message.as_str()),
            ChangeOutcome::Skipped(d) => ("skip", d.as_str()),
        };
        let node = result.change.node.as_deref().unwrap_or("-");
        let line = format!(
            "{mark} {node}: {} {} — {detail} ({:.1}s)",
            result.change.action.sign(),
            result.change.id,
            result.elapsed.as_secs_f64()
        );
        match &self.bars {
            Some((multi, bars)) => {
                if let Some(bar) = bars.get(node) {
                    // A move splits into two changes: let the bar grow rather than overflow.
                    if bar.position() >= bar.length().unwrap_or(0) {
                        bar.inc_length(1);
                    }
                    bar.inc(1);
                    bar.set_message(format!("{} {}", result.change.action.sign(), result.change.id));
                }
                if !matches!(result.outcome, ChangeOutcome::Done(_)) {
                    let _ = multi.println(&line);
                }
            }
            None => {
                let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for bar in bars.values() {
                bar.finish();
            }
        }
    }
}

fn confirm(goal: Goal, printer: &Printer) -> bool {
    let verb = match goal {
        Goal::Apply => "apply",
        Goal::Destroy => "destroy",
    };
    confirm_verb(verb, printer)
}

/// Asks on the terminal whether to `verb` the plan shown; no terminal is a refusal.
pub(crate) fn confirm_verb(verb: &str, printer: &Printer) -> bool {
    if !std::io::stdin().is_terminal() {
        printer.fail(
            Failure::error(
                "bai::cli::not_confirmed",
                format!("refusing to {verb} without confirmation: there is no terminal to ask"),
            )
            .help("pass --yes to go ahead"),
        );
        return false;
    }
    eprint!("Do you want to {verb} these changes? Only `yes` is accepted: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() || answer.trim() != "yes" {
        eprintln!("{verb} cancelled");
        return false;
    }
    true
}

/// The end report: changes by outcome, then nodes as succeeded, failed, skipped or unreachable.
pub(crate) fn print_report(
    printer: &Printer,
    plan: &Plan,
    results: &[ChangeResult],
    unreachable: &[bai::fleet::NodeFailure],
) {
    let count = |f: fn(&ChangeOutcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
    let done = count(|o| matches!(o, ChangeOutcome::Done(_)));
    let failed = count(|o| matches!(o, ChangeOutcome::Failed(_)));
    let skipped = count(|o| matches!(o, ChangeOutcome::Skipped(_)));
    let mut nodes: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for r in results {
        let entry = nodes.entry(r.change.node.clone().unwrap_or_default()).or_default();
        match r.outcome {
            ChangeOutcome::Done(_) => entry.0 += 1,
            ChangeOutcome::Failed(_) => entry.1 += 1,
            ChangeOutcome::Skipped(_) => entry.2 += 1,
        }
    }
    let pick = |f: &dyn Fn(&(usize, usize, usize)) -> bool| -> Vec<String> {
        nodes.iter().filter(|(_, c)| f(c)).map(|(n, _)| n.clone()).collect()
    };
    let succeeded = pick(&|c| c.1 == 0 && c.2 == 0);
    let failed_nodes = pick(&|c| c.1 > 0);
    let skipped_nodes = pick(&|c| c.1 == 0 && c.2 > 0);
    let unreachable: Vec<String> = unreachable.iter().map(|f| f.node.clone()).collect();
    let list = |v: &[String]| if v.is_empty() { String::new() } else { format!(" ({})", v.join(", ")) };
    eprintln!("\nApplied {done} of {} changes: {failed} failed, {skipped} skipped.", plan.changes.len());
    eprintln!(
        "Nodes: {} succeeded{}, {} failed{}, {} skipped{}, {} unreachable{}.",
        succeeded.len(),
        list(&succeeded),
        failed_nodes.len(),
        list(&failed_nodes),
        skipped_nodes.len(),
        list(&skipped_nodes),
        unreachable.len(),
        list(&unreachable)
    );
    let failed: Vec<Failure> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            ChangeOutcome::Failed(f) => Some(f.clone().context(format_args!(
                "{} {} on `{}` failed",
                r.change.action.sign(),
                r.change.id,
                r.change.node.as_deref().unwrap_or("-")
            ))),
            _ => None,
        })
        .collect();
    printer.failures(&failed);
}
