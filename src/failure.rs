//! What went wrong while a command ran, as data with a stable code: a node that cannot be reached, a
//! change a node refused, a saved plan gone stale, a file that cannot be written. Lab problems are
//! [`crate::diagnostic::Problem`]s, found before anything runs and pointing into the lab's files; a
//! `Failure` has no span, but carries its code (`bai::ssh::unknown_host_key`, `bai::docker::image_missing`)
//! from the typed error it came from all the way to the user, and renders the way problems do: through
//! miette for people, as the same diagnostic objects for `--format json` (schema/diagnostics.schema.json).
//!
//! The codes are listed, with what each means and what to do, in docs/errors.md.

use std::fmt;

use miette::Diagnostic;

use crate::diagnostic::Severity;

/// The code of a failure whose error carried none: it should not happen, and says so by its name.
pub const UNCLASSIFIED: &str = "bai::error::unclassified";

/// One failure or warning met while running, with its stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
}

impl Failure {
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        Failure { code: code.into(), severity: Severity::Error, message: message.into(), help: None }
    }

    pub fn warning(code: impl Into<String>, message: impl Into<String>) -> Self {
        Failure { severity: Severity::Warning, ..Failure::error(code, message) }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help.or(self.help);
        self
    }

    /// A typed error as a failure: its code, its message with the errors it wraps (`cannot connect:
    /// Connection refused`), and its help.
    pub fn of(error: &dyn Diagnostic) -> Self {
        let mut message = error.to_string();
        let mut cause = error.source();
        while let Some(e) = cause {
            let text = e.to_string();
            // Wrappers that repeat their cause's text (`{0}`) add nothing.
            if !message.ends_with(&text) {
                message = format!("{message}: {text}");
            }
            cause = e.source();
        }
        Failure { code: code_of(error), severity: Severity::Error, message, help: error.help().map(|h| h.to_string()) }
    }

    /// The same failure with its message put in context (`node `a`: …`).
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The code of a typed error, or [`UNCLASSIFIED`].
pub fn code_of(error: &dyn Diagnostic) -> String {
    error.code().map_or_else(|| UNCLASSIFIED.to_string(), |c| c.to_string())
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Diagnostic for Failure {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

/// Whether `code` is a well-formed code (`bai::area::what`, lowercase, short): what a node sends as the
/// code of its error is used only when it is.
pub fn well_formed(code: &str) -> bool {
    let parts: Vec<&str> = code.split("::").collect();
    code.len() <= 64
        && parts.len() == 3
        && parts[0] == "bai"
        && parts[1..].iter().all(|p| {
            p.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Renders failures the way [`crate::diagnostic::render_graphical`] renders problems; messages are not
/// wrapped (they hold node names, paths and commands to copy).
pub fn render_graphical(failures: &[Failure], handler: &miette::GraphicalReportHandler) -> String {
    let mut out = String::new();
    for failure in failures {
        if handler.render_report(&mut out, failure).is_err() {
            out.push_str(&format!("{}: {}\n", failure.code, failure.message));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error, Diagnostic)]
    #[error("the thing broke")]
    #[diagnostic(code(bai::thing::broke), help("mend it"))]
    struct Broke;

    #[test]
    fn a_typed_error_keeps_its_code_and_help() {
        let f = Failure::of(&Broke).context("node `a`");
        assert_eq!(f.code, "bai::thing::broke");
        assert_eq!(f.message, "node `a`: the thing broke");
        assert_eq!(f.help.as_deref(), Some("mend it"));
    }

    #[test]
    fn it_renders_with_its_code_and_unwrapped() {
        let long = "x ".repeat(80);
        let f = Failure::error("bai::thing::broke", format!("it broke: {long}end")).help("mend it");
        let text = render_graphical(&[f], &crate::diagnostic::plain_handler(100).with_wrap_lines(false));
        assert!(text.contains("bai::thing::broke"), "{text}");
        assert!(text.contains(&format!("it broke: {long}end")), "one line: {text}");
        assert!(text.contains("help: mend it"), "{text}");
    }

    #[test]
    fn only_well_formed_codes_are_taken_from_a_node() {
        assert!(well_formed("bai::docker::image_missing"));
        for bad in [
            "",
            "bai",
            "bai::x",
            "bai::x::y::z",
            "evil::x::y",
            "bai::X::y",
            "bai::1x::y",
            "bai::x::\u{1b}[2J",
            "bai::::y",
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
        assert!(!well_formed(&format!("bai::x::{}", "y".repeat(80))));
    }
}
