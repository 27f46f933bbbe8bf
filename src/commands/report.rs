//! How the CLI shows a run: the engine reports through [`Reporter`], and [`Printer`] renders it: problems
//! and failures with their codes (kept for the diagnostics document under `--format json`), prose on
//! stderr, the plan on stdout, a progress bar per node on a terminal (one line per change otherwise), the
//! confirmation prompt, and the end report.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use bai::diagnostic::Problem;
use bai::failure::Failure;
use bai::fleet::NodeFailure;
use bai::fleet::execute::{ChangeOutcome, ChangeResult};
use bai::plan::{Plan, render_text};
use bai::reconcile::Reporter;
use bai::source::SourceMap;

use crate::commands::{Printer, lock};

impl Reporter for Printer {
    fn problems(&self, problems: &[Problem], sources: &SourceMap) {
        self.diagnostics(problems, sources);
    }

    fn failures(&self, failures: &[Failure]) {
        self.print_failures(failures);
    }

    fn note(&self, text: &str) {
        let _ = writeln!(std::io::stderr(), "{text}");
    }

    fn plan(&self, plan: &Plan) {
        self.plan_text(&render_text(plan));
    }

    fn confirm(&self, verb: &str) -> bool {
        confirm_verb(verb, self)
    }

    fn executing(&self, plan: &Plan) {
        *lock(&self.progress) = Some(Progress::new(plan));
    }

    fn change(&self, result: &ChangeResult) {
        if let Some(progress) = lock(&self.progress).as_ref() {
            progress.report(result);
        }
    }

    fn executed(&self, plan: &Plan, results: &[ChangeResult], unreachable: &[NodeFailure]) {
        if let Some(progress) = lock(&self.progress).take() {
            progress.finish();
        }
        print_report(self, plan, results, unreachable);
    }
}

/// How a run shows its progress: a bar per node on a terminal, one plain line per change otherwise.
pub struct Progress {
    bars: Option<(indicatif::MultiProgress, BTreeMap<String, indicatif::ProgressBar>)>,
}

impl Progress {
    fn new(plan: &Plan) -> Self {
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

    fn report(&self, result: &ChangeResult) {
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

    fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for bar in bars.values() {
                bar.finish();
            }
        }
    }
}

/// Asks on the terminal whether to `verb` the plan shown; no terminal is a refusal.
fn confirm_verb(verb: &str, printer: &Printer) -> bool {
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
fn print_report(printer: &Printer, plan: &Plan, results: &[ChangeResult], unreachable: &[bai::fleet::NodeFailure]) {
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
