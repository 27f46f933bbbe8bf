//! `bai graph FILE`: the resource DAG as Graphviz DOT or Mermaid.

use bai::graph::{build_graph, render_dot, render_mermaid};

use crate::cli::{GraphArgs, GraphFormat};
use crate::commands::{Outcome, Printer, check};

pub fn run(args: &GraphArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let lab = check(&args.file, cluster);
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    if lab.has_errors() {
        return Outcome::Failed;
    }
    let graphs: Vec<_> = lab.config().clusters.iter().map(|c| (c.name.value.clone(), build_graph(c))).collect();
    printer.stdout(&match args.format {
        GraphFormat::Dot => render_dot(&graphs),
        GraphFormat::Mermaid => render_mermaid(&graphs),
    });
    Outcome::Ok
}
