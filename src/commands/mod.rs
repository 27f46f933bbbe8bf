//! One module per command. This layer alone prints, reads the environment and decides exit codes.

pub mod agent;
pub mod apply;
pub mod confirm;
pub mod diff;
pub mod fmt;
pub mod generations;
pub mod graph;
pub mod lock;
pub mod plan;
pub mod remote;
pub mod rollback;
pub mod saved_plan;
pub mod status;
pub mod validate;
pub mod watch;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::OnceLock;

use bai::config::load::LoadOptions;
use bai::config::{self, Loaded};
use bai::diagnostic::{Code, Problem, plain_handler, render_graphical, sort_problems};
use bai::model::Config;
use bai::suggest;
use bai::validate::validate;

use crate::cli::Color;

/// How a command ended; `main` turns it into the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success, nothing to report (exit 0).
    Ok,
    /// A problem was reported (exit 1).
    Failed,
    /// Success with changes pending, under `--detailed-exitcode` (exit 2).
    Changes,
}

/// Output settings shared by every command.
pub struct Printer {
    pub color: bool,
}

impl Printer {
    pub fn new(color: Color) -> Self {
        let color = match color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        };
        Printer { color }
    }

    /// Prints diagnostics the way people read them, on stderr.
    pub fn diagnostics(&self, problems: &[Problem], loaded_sources: &bai::source::SourceMap) {
        if problems.is_empty() {
            return;
        }
        let handler = if self.color {
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode()).with_width(100)
        } else {
            plain_handler(100)
        };
        let text = render_graphical(problems, loaded_sources, &handler);
        let _ = std::io::stderr().write_all(text.as_bytes());
    }

    /// Writes to stdout; a closed pipe (`bai plan | head`) is not an error worth reporting.
    pub fn stdout(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    }
}

/// A lab read and validated, restricted to the clusters the user selected.
pub struct Lab {
    pub loaded: Loaded,
    /// Every problem, sorted; errors and warnings.
    pub problems: Vec<Problem>,
}

impl Lab {
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }

    pub fn config(&self) -> &Config {
        &self.loaded.config
    }
}

/// How every command reads a lab: `--include-root`, set once by `main` from the command line before any
/// command runs. A process-wide setting rather than a parameter, since every command that loads a lab
/// (and the watcher's reloads) would otherwise carry it through.
static LOAD_OPTIONS: OnceLock<LoadOptions> = OnceLock::new();

pub fn set_load_options(options: LoadOptions) {
    let _ = LOAD_OPTIONS.set(options);
}

/// Loads and validates a lab; `--cluster` keeps one cluster (an unknown name is a problem).
pub fn check(path: &Path, cluster: Option<&str>) -> Lab {
    let mut loaded = match LOAD_OPTIONS.get() {
        Some(options) => config::load::load_with(path, options),
        None => config::load(path),
    };
    let mut problems = std::mem::take(&mut loaded.problems);
    if let Some(name) = cluster {
        let known: Vec<String> = loaded.config.clusters.iter().map(|c| c.name.value.to_string()).collect();
        loaded.config.clusters.retain(|c| c.name.value.as_str() == name);
        // A file that did not parse has no clusters to choose from: its syntax errors say enough.
        if loaded.config.clusters.is_empty() && !problems.iter().any(Problem::is_error) {
            let help = suggest::help_for(name, known.iter().map(String::as_str), "clusters");
            problems.push(
                Problem::error(
                    Code::UnknownCluster,
                    format!("`{}` has no cluster `{name}`", config::display_name(path)),
                )
                .help_opt(help),
            );
        }
    }
    problems.extend(validate(&loaded.config));
    sort_problems(&mut problems);
    Lab { loaded, problems }
}
