//! One module per command. This layer alone prints, reads the environment and decides exit codes.

pub mod agent;
pub mod apply;
pub mod cp;
pub mod diff;
pub mod exec;
pub mod fmt;
pub mod generations;
pub mod graph;
pub mod lock;
pub mod logs;
pub mod plan;
pub mod port_forward;
pub mod remote;
pub mod report;
pub mod rollback;
pub mod status;
pub mod terminal;
pub mod validate;
pub mod watch;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::OnceLock;

use bai::config::load::LoadOptions;
use bai::config::{self, Loaded};
use bai::diagnostic::{
    Code, DiagnosticObject, Problem, plain_handler, render_document, render_graphical, sort_problems,
};
use bai::failure::Failure;
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
    /// The exit code of a command run in a session (`bai exec`).
    Exit(u8),
}

/// Output settings shared by every command, and the diagnostics a `--format json` run writes at its end.
pub struct Printer {
    pub color: bool,
    /// When the diagnostics document goes to stdout: set by a command run with `--format json`.
    json: Mutex<Option<JsonDiagnostics>>,
    /// Every problem and failure reported, for that document.
    kept: Mutex<Vec<DiagnosticObject>>,
    /// The progress of the changes running now ([`report`]).
    progress: Mutex<Option<report::Progress>>,
}

/// When a command run with `--format json` writes the diagnostics document (schema/diagnostics.schema.json)
/// on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonDiagnostics {
    /// Instead of its own document, when it fails (`plan`, `status`): a script reads the failure the way it
    /// reads `validate`'s problems.
    OnFailure,
    /// Always, as its only output on stdout (`apply`, `destroy`, `rollback`): empty of errors on success.
    Always,
}

impl Printer {
    pub fn new(color: Color) -> Self {
        let color = match color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        };
        Printer { color, json: Mutex::new(None), kept: Mutex::new(Vec::new()), progress: Mutex::new(None) }
    }

    /// `--format json`: the diagnostics document is written on stdout as `when` says, at the end.
    pub fn json_diagnostics(&self, when: JsonDiagnostics) {
        *lock(&self.json) = Some(when);
    }

    fn json(&self) -> Option<JsonDiagnostics> {
        *lock(&self.json)
    }

    /// Whether stdout is the diagnostics document's alone (`apply --format json`).
    pub fn stdout_is_json(&self) -> bool {
        self.json() == Some(JsonDiagnostics::Always)
    }

    fn keep(&self, objects: impl IntoIterator<Item = DiagnosticObject>) {
        if self.json().is_some() {
            lock(&self.kept).extend(objects);
        }
    }

    fn handler(&self) -> miette::GraphicalReportHandler {
        if self.color {
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode()).with_width(100)
        } else {
            plain_handler(100)
        }
    }

    /// Prints diagnostics the way people read them, on stderr.
    pub fn diagnostics(&self, problems: &[Problem], loaded_sources: &bai::source::SourceMap) {
        if problems.is_empty() {
            return;
        }
        self.keep(problems.iter().map(|p| DiagnosticObject::of_problem(p, loaded_sources)));
        let text = render_graphical(problems, loaded_sources, &self.handler());
        let _ = std::io::stderr().write_all(text.as_bytes());
    }

    /// Prints failures met while running, with their codes, the way problems are printed; messages are
    /// not wrapped (they hold paths and commands to copy).
    fn print_failures(&self, failures: &[Failure]) {
        if failures.is_empty() {
            return;
        }
        self.keep(failures.iter().map(DiagnosticObject::of_failure));
        let text = bai::failure::render_graphical(failures, &self.handler().with_wrap_lines(false));
        let _ = std::io::stderr().write_all(text.as_bytes());
    }

    /// The end of a command: the diagnostics document on stdout where `--format json` asks for it.
    pub fn finish(&self, outcome: Outcome) {
        match self.json() {
            Some(JsonDiagnostics::Always) => {}
            Some(JsonDiagnostics::OnFailure) if outcome == Outcome::Failed => {}
            _ => return,
        }
        self.stdout(&render_document(&lock(&self.kept)));
    }

    /// The plan a converging command shows before it acts: on stdout, unless stdout is the diagnostics
    /// document's (`--format json`), then on stderr with the rest of the run's prose.
    pub fn plan_text(&self, text: &str) {
        if self.stdout_is_json() {
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            self.stdout(text);
        }
    }

    /// Writes to stdout; a closed pipe (`bai plan | head`) is not an error worth reporting.
    pub fn stdout(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    }
}

/// Writes what a session sent to this process's stdout or stderr and flushes it, so that it shows as it
/// comes (`bai logs`, `bai exec`); an error means nobody reads any more.
pub fn pass_through(to_stderr: bool, bytes: &[u8]) -> std::io::Result<()> {
    if to_stderr {
        let mut e = std::io::stderr().lock();
        e.write_all(bytes).and_then(|()| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(bytes).and_then(|()| o.flush())
    }
}

/// A printer's mutex: what it guards stays usable after a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A lab read and validated, restricted to the clusters the user selected.
pub struct CheckedLab {
    pub loaded: Loaded,
    /// Every problem, sorted; errors and warnings.
    pub problems: Vec<Problem>,
}

impl CheckedLab {
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
pub fn check(path: &Path, cluster: Option<&str>) -> CheckedLab {
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
    CheckedLab { loaded, problems }
}
