//! `bai plan FILE`: the changes `apply` would make, against empty nodes (`--offline`) or a snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use bai::diagnostic::{Code, Problem, sort_problems};
use bai::graph::build_graph;
use bai::model::{ClusterName, Config};
use bai::plan::{Plan, diff, render_json, render_markdown, render_text};
use bai::state::ClusterState;
use bai::state::snapshot::{FORMAT_VERSION, Snapshot};
use bai::validate::check_inventory;

use crate::cli::{PlanArgs, PlanFormat, PlanOutput};
use crate::commands::{Outcome, Printer, check};

pub fn run(args: &PlanArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let mut lab = check(&args.file, cluster);
    if lab.has_errors() {
        printer.diagnostics(&lab.problems, &lab.loaded.sources);
        return Outcome::Failed;
    }
    let observed = if let Some(path) = &args.state {
        match read_snapshot(path) {
            Ok(snapshot) => ClusterState::from_snapshot(&snapshot),
            Err(problem) => {
                printer.diagnostics(&[problem], &lab.loaded.sources);
                return Outcome::Failed;
            }
        }
    } else if args.offline {
        BTreeMap::new()
    } else {
        let problem = Problem::error(Code::InvalidState, "`bai plan` needs `--offline` or `--state SNAPSHOT.json`")
            .help("`--offline` plans against nodes that hold nothing; `--state` against a snapshot written by `bai status --format json`");
        printer.diagnostics(&[problem], &lab.loaded.sources);
        return Outcome::Failed;
    };
    for c in &lab.loaded.config.clusters {
        if let Some(state) = observed.get(&c.name.value) {
            lab.problems.extend(check_inventory(c, state));
        }
    }
    sort_problems(&mut lab.problems);
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    let plan = plan_against(lab.config(), &observed);
    emit(&plan, &args.output, printer)
}

/// Plans every cluster of `config` against what `observed` holds for it (nothing, when absent).
pub fn plan_against(config: &Config, observed: &BTreeMap<ClusterName, ClusterState>) -> Plan {
    let prepared: Vec<_> = config
        .clusters
        .iter()
        .map(|c| {
            let have =
                observed.get(&c.name.value).cloned().unwrap_or_else(|| ClusterState::empty(c.name.value.clone()));
            (ClusterState::desired(c), have, build_graph(c))
        })
        .collect();
    let triples: Vec<_> = prepared.iter().map(|(d, o, g)| (d, o, g)).collect();
    diff(&triples)
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
