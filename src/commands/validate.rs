//! `bai validate FILE…`: every problem of every file, as a report or as JSON.

use bai::diagnostic::{Problem, Severity, render_json};
use bai::source::SourceMap;

use crate::cli::{DiagnosticFormat, ValidateArgs};
use crate::commands::{Outcome, Printer, check};

pub fn run(args: &ValidateArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let mut failed = false;
    let mut all: Vec<(Vec<Problem>, SourceMap)> = Vec::new();
    for file in &args.files {
        let lab = check(file, cluster);
        let mut problems = lab.problems;
        if args.deny_warnings {
            for p in &mut problems {
                p.severity = Severity::Error;
            }
        }
        let tally = bai::diagnostic::Tally::of(&problems);
        failed |= tally.errors > 0;
        let name = bai::config::display_name(file);
        if args.format == DiagnosticFormat::Human {
            printer.diagnostics(&problems, &lab.loaded.sources);
            let line = match (tally.errors, tally.warnings) {
                (0, 0) => format!("{name}: valid\n"),
                (0, w) => format!("{name}: valid, {w} warning{}\n", plural(w)),
                (e, w) => format!("{name}: {e} error{}, {w} warning{}\n", plural(e), plural(w)),
            };
            eprint!("{line}");
        }
        all.push((problems, lab.loaded.sources));
    }
    if args.format == DiagnosticFormat::Json {
        let reports: Vec<_> = all.iter().map(|(p, s)| (p.as_slice(), s)).collect();
        printer.stdout(&render_json(&reports));
    }
    if failed { Outcome::Failed } else { Outcome::Ok }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
