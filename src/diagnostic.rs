//! Problems found in a lab: stable codes, severities, labelled locations, and their two renderings
//! (miette's graphical report for people, JSON for machines).
//!
//! Validation collects every problem before reporting, so a [`Problem`] is plain data. It becomes a
//! [`miette::Diagnostic`] only when rendered against the [`SourceMap`]; labels in other files than the
//! primary one become related notes, each with its own file name.

use std::fmt;

use miette::{Diagnostic, LabeledSpan, Severity as MietteSeverity, SourceCode};
use serde::Serialize;

use crate::source::{FileId, Loc, SourceMap};

macro_rules! codes {
    ($($variant:ident => $code:literal,)*) => {
        /// Every diagnostic code bai emits. The strings are stable: scripts and docs rely on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, for documentation and for tests that check each has a fixture.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }
        }
    };
}

codes! {
    IoRead => "bai::io::read",
    KdlSyntax => "bai::kdl::syntax",
    KdlTooDeep => "bai::kdl::too_deep",
    IncludeNotFound => "bai::include::not_found",
    IncludeNoMatch => "bai::include::no_match",
    IncludeCycle => "bai::include::cycle",
    IncludeInvalidPattern => "bai::include::invalid_pattern",
    IncludeClusterInInclude => "bai::include::cluster_in_include",
    IncludeOutsideTree => "bai::include::outside_tree",
    IncludeNotKdl => "bai::include::not_kdl",
    IncludeTooMany => "bai::include::too_many",
    UnknownNode => "bai::schema::unknown_node",
    UnknownProperty => "bai::schema::unknown_property",
    UnexpectedArgument => "bai::schema::unexpected_argument",
    MissingArgument => "bai::schema::missing_argument",
    MissingProperty => "bai::schema::missing_property",
    WrongType => "bai::schema::wrong_type",
    DuplicateProperty => "bai::schema::duplicate_property",
    DuplicateChild => "bai::schema::duplicate_child",
    Conflict => "bai::schema::conflict",
    Duration => "bai::value::duration",
    Size => "bai::value::size",
    Jump => "bai::value::jump",
    OutOfRange => "bai::value::out_of_range",
    InvalidValue => "bai::value::invalid",
    InvalidName => "bai::name::invalid",
    DuplicateName => "bai::name::duplicate",
    ReservedVfolderName => "bai::name::reserved",
    UnknownNodeRef => "bai::ref::unknown_node",
    UnknownImageRef => "bai::ref::unknown_image",
    UnknownVfolderRef => "bai::ref::unknown_vfolder",
    UnknownSessionRef => "bai::ref::unknown_session",
    Cycle => "bai::graph::cycle",
    GpusExceeded => "bai::capacity::gpus_exceeded",
    MinGpus => "bai::capacity::min_gpus",
    PinTwice => "bai::gpu::pinned_twice",
    PinAbsent => "bai::gpu::pinned_absent",
    PinCount => "bai::gpu::pin_count",
    PublishClash => "bai::port::published_twice",
    DuplicateAlias => "bai::mount::duplicate_alias",
    NestedMount => "bai::mount::nested",
    EmptyAlias => "bai::mount::empty_alias",
    InvalidAlias => "bai::mount::invalid_alias",
    AliasEscapes => "bai::mount::escapes",
    MountWorkdir => "bai::mount::workdir",
    SystemDir => "bai::mount::system_dir",
    ReservedName => "bai::mount::reserved",
    ShadowsVfolder => "bai::mount::shadows_vfolder",
    ReadonlyRequired => "bai::mount::readonly_required",
    OtherNode => "bai::mount::other_node",
    DuplicateEnv => "bai::session::duplicate_env",
    ReservedEnv => "bai::session::reserved_env",
    InvalidEnvName => "bai::session::invalid_env_name",
    InvalidEnvValue => "bai::session::invalid_env_value",
    MissingPath => "bai::image::missing_path",
    InvalidRef => "bai::image::invalid_ref",
    MultipleLocal => "bai::node::multiple_local",
    NoAddress => "bai::node::no_address",
    UnusedImage => "bai::unused::image",
    UnusedVfolder => "bai::unused::vfolder",
    InventoryMismatch => "bai::capacity::inventory_mismatch",
    UnknownCluster => "bai::cluster::unknown",
    InvalidState => "bai::state::invalid",
    LockInvalid => "bai::lock::invalid",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A span of user text with what to say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub loc: Loc,
    pub text: Option<String>,
    pub primary: bool,
}

/// One problem in a lab, in any phase from reading files to planning.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
    pub labels: Vec<Label>,
}

impl Problem {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Problem { code, severity: Severity::Error, message: message.into(), help: None, labels: Vec::new() }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Problem { severity: Severity::Warning, ..Problem::error(code, message) }
    }

    /// The main location; the first label added this way is the one the report centres on.
    pub fn primary(mut self, loc: Loc, text: impl Into<String>) -> Self {
        self.labels.push(Label { loc, text: Some(text.into()), primary: true });
        self
    }

    pub fn label(mut self, loc: Loc, text: impl Into<String>) -> Self {
        self.labels.push(Label { loc, text: Some(text.into()), primary: false });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help.or(self.help);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The file and offset a report is sorted by: its primary label's (else its first label's).
    fn sort_key(&self) -> (FileId, usize, usize) {
        match self.labels.iter().find(|l| l.primary).or(self.labels.first()) {
            Some(l) => (l.loc.file, l.loc.span.offset(), l.loc.span.len()),
            None => (FileId(0), 0, 0),
        }
    }
}

/// Orders problems as a reader meets them: by file, then position, then code, so output is stable.
pub fn sort_problems(problems: &mut [Problem]) {
    problems.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()).then(a.code.cmp(&b.code)).then(a.message.cmp(&b.message)));
}

/// Counts of a set of problems.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub errors: usize,
    pub warnings: usize,
}

impl Tally {
    pub fn of(problems: &[Problem]) -> Self {
        let errors = problems.iter().filter(|p| p.is_error()).count();
        Tally { errors, warnings: problems.len() - errors }
    }
}

/// A problem seen against the files it points into: the [`Diagnostic`] miette renders.
pub struct Rendered<'a> {
    problem: &'a Problem,
    sources: &'a SourceMap,
    file: Option<FileId>,
    /// Labels in other files, one note per file.
    notes: Vec<Note<'a>>,
}

struct Note<'a> {
    file: FileId,
    sources: &'a SourceMap,
    labels: Vec<&'a Label>,
}

impl<'a> Rendered<'a> {
    pub fn new(problem: &'a Problem, sources: &'a SourceMap) -> Self {
        let file = problem
            .labels
            .iter()
            .find(|l| l.primary)
            .or(problem.labels.first())
            .map(|l| l.loc.file)
            .filter(|f| sources.get(*f).is_some());
        let mut notes: Vec<Note<'a>> = Vec::new();
        for label in &problem.labels {
            if Some(label.loc.file) == file || sources.get(label.loc.file).is_none() {
                continue;
            }
            match notes.iter_mut().find(|n| n.file == label.loc.file) {
                Some(note) => note.labels.push(label),
                None => notes.push(Note { file: label.loc.file, sources, labels: vec![label] }),
            }
        }
        Rendered { problem, sources, file, notes }
    }
}

fn labeled(label: &Label) -> LabeledSpan {
    LabeledSpan::new_with_span(label.text.clone(), label.loc.span)
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.problem, f)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl std::error::Error for Rendered<'_> {}

impl Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.problem.code.as_str()))
    }

    fn severity(&self) -> Option<MietteSeverity> {
        Some(match self.problem.severity {
            Severity::Error => MietteSeverity::Error,
            Severity::Warning => MietteSeverity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.problem.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.file.and_then(|f| self.sources.get(f)).map(|f| f as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let file = self.file?;
        let labels = self.problem.labels.iter().filter(move |l| l.loc.file == file).map(|l| {
            if l.primary { LabeledSpan::new_primary_with_span(l.text.clone(), l.loc.span) } else { labeled(l) }
        });
        Some(Box::new(labels))
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn Diagnostic> + 'b>> {
        if self.notes.is_empty() {
            return None;
        }
        Some(Box::new(self.notes.iter().map(|n| n as &dyn Diagnostic)))
    }
}

impl fmt::Debug for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Note({:?})", self.file)
    }
}

impl fmt::Display for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.sources.get(self.file).map(|s| s.name.as_str()).unwrap_or("?");
        write!(f, "see also `{name}`")
    }
}

impl std::error::Error for Note<'_> {}

impl Diagnostic for Note<'_> {
    fn severity(&self) -> Option<MietteSeverity> {
        Some(MietteSeverity::Advice)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.sources.get(self.file).map(|f| f as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().map(|l| labeled(l))))
    }
}

/// Renders problems the way a person reads them, with a fixed handler (tests pass a no-colour one).
pub fn render_graphical(problems: &[Problem], sources: &SourceMap, handler: &miette::GraphicalReportHandler) -> String {
    let mut out = String::new();
    for problem in problems {
        let rendered = Rendered::new(problem, sources);
        if handler.render_report(&mut out, &rendered).is_err() {
            // The handler failed on this one (it only fails on fmt errors): fall back to the bare message.
            out.push_str(&format!("{}: {}\n", problem.code, problem.message));
        }
        out.push('\n');
    }
    out
}

/// A handler that renders the same bytes everywhere: no colour, no links, fixed width.
pub fn plain_handler(width: usize) -> miette::GraphicalReportHandler {
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_links(false)
        .with_width(width)
}

/// A label as the JSON document shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelObject {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub offset: usize,
    pub length: usize,
    pub text: Option<String>,
}

/// One diagnostic as the JSON document shows it (schema/diagnostics.schema.json): a lab problem with its
/// labels, or a failure met while running, with none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiagnosticObject {
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
    pub labels: Vec<LabelObject>,
}

impl DiagnosticObject {
    pub fn of_problem(p: &Problem, sources: &SourceMap) -> Self {
        DiagnosticObject {
            code: p.code.as_str().to_string(),
            severity: p.severity,
            message: p.message.clone(),
            help: p.help.clone(),
            labels: p
                .labels
                .iter()
                .filter_map(|l| {
                    let file = sources.get(l.loc.file)?;
                    let (line, column) = file.line_column(l.loc.span.offset());
                    Some(LabelObject {
                        file: file.name.clone(),
                        line,
                        column,
                        offset: l.loc.span.offset(),
                        length: l.loc.span.len(),
                        text: l.text.clone(),
                    })
                })
                .collect(),
        }
    }

    pub fn of_failure(f: &crate::failure::Failure) -> Self {
        DiagnosticObject {
            code: f.code.clone(),
            severity: f.severity,
            message: f.message.clone(),
            help: f.help.clone(),
            labels: Vec::new(),
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    format_version: u32,
    diagnostics: &'a [DiagnosticObject],
    summary: Tally,
}

/// The `validate --format json` document (schema/diagnostics.schema.json) for one or more files.
pub fn render_json(reports: &[(&[Problem], &SourceMap)]) -> String {
    let objects: Vec<DiagnosticObject> = reports
        .iter()
        .flat_map(|(problems, sources)| problems.iter().map(|p| DiagnosticObject::of_problem(p, sources)))
        .collect();
    render_document(&objects)
}

/// The diagnostics document for any set of diagnostics: `validate`'s, and every command's under
/// `--format json` when it fails (the lab's problems, then what failed while it ran).
pub fn render_document(diagnostics: &[DiagnosticObject]) -> String {
    let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let summary = Tally { errors, warnings: diagnostics.len() - errors };
    let report = JsonReport { format_version: 1, diagnostics, summary };
    let mut s = serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}
