//! How the engine tells what it is doing: every run reports through one [`Reporter`], which the CLI
//! renders (text on a terminal or in a log, or the diagnostics document of `--format json`) and tests
//! record. The engine never prints.

use crate::diagnostic::Problem;
use crate::failure::Failure;
use crate::fleet::NodeFailure;
use crate::fleet::execute::ChangeResult;
use crate::plan::Plan;
use crate::source::SourceMap;

/// A step failed and has said why through the reporter: the caller stops, with nothing more to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported;

/// What a run reports, in the order it happens.
pub trait Reporter: Sync {
    /// Problems in a file the run read (the lock file), pointing into `sources`.
    fn problems(&self, problems: &[Problem], sources: &SourceMap);

    /// Failures and warnings met while running, each with its code.
    fn failures(&self, failures: &[Failure]);

    /// One line of what the run does or did, for people (`wrote bai.lock`, `Recorded generation 3 …`).
    fn note(&self, text: &str);

    /// The plan a converging run is about to carry out (or found empty).
    fn plan(&self, plan: &Plan);

    /// Whether to go ahead and `verb` (`apply`, `destroy`, `roll back`) the plan shown; a run with no one
    /// to ask refuses.
    fn confirm(&self, verb: &str) -> bool;

    /// Changes of `plan` are about to run.
    fn executing(&self, plan: &Plan);

    /// One change finished (in whatever way): called as it happens, from the walk.
    fn change(&self, result: &ChangeResult);

    /// The run's end: every change's outcome and the nodes that could not be reached.
    fn executed(&self, plan: &Plan, results: &[ChangeResult], unreachable: &[NodeFailure]);

    /// Node failures, each as the user reads it.
    fn node_failures(&self, failures: &[NodeFailure]) {
        self.failures(&failures.iter().map(NodeFailure::failure).collect::<Vec<_>>());
    }

    /// One failure.
    fn fail(&self, failure: Failure) {
        self.failures(&[failure]);
    }
}

/// A reporter that keeps everything, for tests of the engine.
#[cfg(test)]
#[derive(Default)]
pub struct Recorded {
    pub lines: std::sync::Mutex<Vec<String>>,
    /// What it answers when asked to go ahead.
    pub go_ahead: bool,
}

#[cfg(test)]
impl Recorded {
    fn push(&self, line: String) {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
impl Reporter for Recorded {
    fn problems(&self, problems: &[Problem], _: &SourceMap) {
        for p in problems {
            self.push(format!("problem {}: {}", p.code, p.message));
        }
    }

    fn failures(&self, failures: &[Failure]) {
        for f in failures {
            self.push(format!("failure {}: {}", f.code, f.message));
        }
    }

    fn note(&self, text: &str) {
        self.push(format!("note {text}"));
    }

    fn plan(&self, plan: &Plan) {
        self.push(format!("plan {} changes", plan.changes.len()));
    }

    fn confirm(&self, verb: &str) -> bool {
        self.push(format!("confirm {verb}"));
        self.go_ahead
    }

    fn executing(&self, _: &Plan) {}

    fn change(&self, result: &ChangeResult) {
        let outcome = match &result.outcome {
            crate::fleet::execute::ChangeOutcome::Done(_) => "done".to_string(),
            crate::fleet::execute::ChangeOutcome::Failed(f) => format!("failed {}", f.code),
            crate::fleet::execute::ChangeOutcome::Skipped(_) => "skipped".to_string(),
        };
        self.push(format!("change {} {outcome}", result.change.id));
    }

    fn executed(&self, _: &Plan, results: &[ChangeResult], unreachable: &[NodeFailure]) {
        self.push(format!("executed {} results, {} unreachable", results.len(), unreachable.len()));
    }
}
