//! Typed, span-keeping access to one KDL node, checked against what that node may hold.
//!
//! Lowering never stops at the first problem: a wrong value is reported at its entry and read as absent, so
//! every other mistake in the file is still found in the same run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kdl::{KdlEntry, KdlNode, KdlValue};

use crate::config::value::{parse_duration, parse_size};
use crate::diagnostic::{Code, Problem};
use crate::source::{FileId, Loc, Spanned};
use crate::suggest;

/// How many arguments a node takes.
#[derive(Debug, Clone, Copy)]
pub enum Args {
    None,
    /// Exactly one, described for the error message (`a name`).
    One(&'static str),
    /// One or more.
    Many(&'static str),
    /// Zero or more.
    Any,
}

/// What one kind of KDL node may hold.
#[derive(Debug, Clone, Copy)]
pub struct NodeSpec {
    pub kind: &'static str,
    pub props: &'static [&'static str],
    pub args: Args,
    /// Properties are a user-named map (`labels`, `env`, `port`): any key is allowed.
    pub free_props: bool,
    pub children: bool,
}

/// Per-file lowering state: where values come from and the problems found so far.
pub struct Ctx {
    pub file: FileId,
    pub base_dir: PathBuf,
    /// The top lab file's directory, absolute: what paths recorded in specs are relative to.
    pub lab_root: PathBuf,
    pub problems: Vec<Problem>,
}

impl Ctx {
    pub fn new(file: FileId, base_dir: PathBuf) -> Self {
        let lab_root = absolute_dir(&base_dir);
        Ctx { file, base_dir, lab_root, problems: Vec::new() }
    }

    /// The same, for a file of a lab whose top file lies in `lab_root`.
    pub fn with_root(file: FileId, base_dir: PathBuf, lab_root: PathBuf) -> Self {
        Ctx { lab_root, ..Ctx::new(file, base_dir) }
    }

    /// A path written in the file as a spec records it, the same wherever bai runs and wherever the lab
    /// is checked out: a relative path becomes relative to the lab file's directory (not to this file's,
    /// nor to the working directory), lexically normalized; an absolute one is normalized; `~/…` stays.
    pub fn spec_path(&self, written: &str) -> String {
        if written.starts_with("~/") {
            return written.to_string();
        }
        let p = Path::new(written);
        if p.is_absolute() {
            return normalize(p).display().to_string();
        }
        relative_to(&normalize(&absolute_dir(&self.base_dir).join(p)), &normalize(&self.lab_root))
    }

    pub fn loc(&self, span: miette::SourceSpan) -> Loc {
        Loc::new(self.file, span)
    }

    pub fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// A path written in the file, resolved against the file's directory.
    pub fn resolve_path(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        // Dropping `.` components keeps messages free of `dir/./x`.
        let joined = if p.is_absolute() { p.to_path_buf() } else { self.base_dir.join(p) };
        joined.components().collect()
    }

    /// Checks a node against its spec; reports every unknown or repeated property and wrong argument count.
    pub fn open<'a>(&mut self, node: &'a KdlNode, spec: &NodeSpec) -> Reader<'a> {
        let mut seen: Vec<(&str, &KdlEntry)> = Vec::new();
        let mut args: Vec<&'a KdlEntry> = Vec::new();
        for entry in node.entries() {
            let Some(key) = entry.name() else {
                args.push(entry);
                continue;
            };
            let key = key.value();
            if !spec.free_props && !spec.props.contains(&key) {
                let help = if spec.props.is_empty() {
                    Some(format!("`{}` takes no properties", spec.kind))
                } else {
                    suggest::help_for(key, spec.props.iter().copied(), "properties")
                };
                self.push(
                    Problem::error(Code::UnknownProperty, format!("unknown property `{key}` on `{}`", spec.kind))
                        .primary(self.loc(entry.span()), "not a property of this node")
                        .help_opt(help),
                );
                continue;
            }
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                self.push(
                    Problem::error(
                        Code::DuplicateProperty,
                        format!("property `{key}` is given twice on `{}`", spec.kind),
                    )
                    .label(self.loc(first.span()), "first given here")
                    .primary(self.loc(entry.span()), "given again here")
                    .help("keep one of them: KDL would silently use the last"),
                );
                continue;
            }
            seen.push((key, entry));
        }
        match spec.args {
            Args::None => {
                for extra in &args {
                    self.push(
                        Problem::error(Code::UnexpectedArgument, format!("`{}` takes no arguments", spec.kind))
                            .primary(self.loc(extra.span()), "unexpected argument")
                            .help_opt(spec_help(spec)),
                    );
                }
            }
            Args::One(what) => {
                if args.is_empty() {
                    self.push(
                        Problem::error(Code::MissingArgument, format!("`{}` needs {what}", spec.kind))
                            .primary(self.loc(node.name().span()), format!("{what} is missing"))
                            .help(format!("write it after the node name: `{} {}`", spec.kind, example_arg(spec.kind))),
                    );
                }
                for extra in args.iter().skip(1) {
                    self.push(
                        Problem::error(
                            Code::UnexpectedArgument,
                            format!("`{}` takes one argument ({what})", spec.kind),
                        )
                        .primary(self.loc(extra.span()), "unexpected argument")
                        .help_opt(spec_help(spec)),
                    );
                }
            }
            Args::Any => {}
            Args::Many(what) => {
                if args.is_empty() {
                    self.push(
                        Problem::error(Code::MissingArgument, format!("`{}` needs {what}", spec.kind))
                            .primary(self.loc(node.name().span()), format!("{what} is missing")),
                    );
                }
            }
        }
        if !spec.children
            && let Some(children) = node.children()
        {
            for child in children.nodes() {
                let name = child.name().value();
                self.push(
                    Problem::error(Code::UnknownNode, format!("`{}` takes no children, found `{name}`", spec.kind))
                        .primary(self.loc(child.name().span()), "not allowed here")
                        .help(format!("move `{name}` out of the `{}` block", spec.kind)),
                );
            }
        }
        Reader { node, props: seen.into_iter().map(|(_, e)| e).collect(), args }
    }

    pub fn string(&mut self, entry: &KdlEntry, what: &str) -> Option<Spanned<String>> {
        match entry.value() {
            KdlValue::String(s) => Some(Spanned::new(s.clone(), self.loc(entry.span()))),
            other => {
                self.wrong_type(entry, what, "a string", other);
                None
            }
        }
    }

    pub fn bool(&mut self, entry: &KdlEntry, what: &str) -> Option<Spanned<bool>> {
        match entry.value() {
            KdlValue::Bool(b) => Some(Spanned::new(*b, self.loc(entry.span()))),
            other => {
                self.wrong_type(entry, what, "a boolean (`#true` or `#false`)", other);
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn int(&mut self, entry: &KdlEntry, what: &str, min: i128, max: i128) -> Option<Spanned<i128>> {
        match entry.value() {
            KdlValue::Integer(i) if (min..=max).contains(i) => Some(Spanned::new(*i, self.loc(entry.span()))),
            KdlValue::Integer(i) => {
                self.push(
                    Problem::error(Code::OutOfRange, format!("`{what}` must be between {min} and {max}, found {i}"))
                        .primary(self.loc(entry.span()), "out of range"),
                );
                None
            }
            other => {
                self.wrong_type(entry, what, "an integer", other);
                None
            }
        }
    }

    /// A non-negative number, integer or decimal.
    pub fn positive_number(&mut self, entry: &KdlEntry, what: &str) -> Option<Spanned<f64>> {
        let value = match entry.value() {
            KdlValue::Integer(i) => *i as f64,
            KdlValue::Float(f) => *f,
            other => {
                self.wrong_type(entry, what, "a number", other);
                return None;
            }
        };
        if !(value.is_finite() && value > 0.0 && value <= 1e6) {
            self.push(
                Problem::error(Code::OutOfRange, format!("`{what}` must be a positive number, found {value}"))
                    .primary(self.loc(entry.span()), "out of range"),
            );
            return None;
        }
        Some(Spanned::new(value, self.loc(entry.span())))
    }

    pub fn duration(&mut self, entry: &KdlEntry, what: &str) -> Option<Spanned<Duration>> {
        let KdlValue::String(text) = entry.value() else {
            let found = entry.value().clone();
            self.push(
                Problem::error(
                    Code::Duration,
                    format!("`{what}` must be a duration string, found {}", type_name(&found)),
                )
                .primary(self.loc(entry.span()), "not a duration")
                .help("write it with a unit, as a string: `\"5s\"`, `\"500ms\"`"),
            );
            return None;
        };
        match parse_duration(text) {
            Ok(d) => Some(Spanned::new(d, self.loc(entry.span()))),
            Err(e) => {
                self.push(
                    Problem::error(Code::Duration, format!("invalid `{what}`: {}", e.message))
                        .primary(self.loc(entry.span()), "not a duration")
                        .help(e.help),
                );
                None
            }
        }
    }

    pub fn size(&mut self, entry: &KdlEntry, what: &str) -> Option<Spanned<u64>> {
        let parsed = match entry.value() {
            KdlValue::Integer(i) if *i >= 0 && *i <= u64::MAX as i128 => Ok(*i as u64),
            KdlValue::String(text) => parse_size(text),
            other => {
                let found = other.clone();
                self.push(
                    Problem::error(Code::Size, format!("`{what}` must be a size, found {}", type_name(&found)))
                        .primary(self.loc(entry.span()), "not a size")
                        .help("write bytes as an integer or a string with a unit: `\"64GiB\"`"),
                );
                return None;
            }
        };
        match parsed {
            Ok(bytes) => Some(Spanned::new(bytes, self.loc(entry.span()))),
            Err(e) => {
                self.push(
                    Problem::error(Code::Size, format!("invalid `{what}`: {}", e.message))
                        .primary(self.loc(entry.span()), "not a size")
                        .help(e.help),
                );
                None
            }
        }
    }

    fn wrong_type(&mut self, entry: &KdlEntry, what: &str, expected: &str, found: &KdlValue) {
        let help = match found {
            KdlValue::Integer(_) | KdlValue::Float(_) | KdlValue::Bool(_) if expected == "a string" => {
                Some(format!("quote it: `\"{}\"`", display_value(found)))
            }
            KdlValue::String(s) if expected.starts_with("a boolean") && (s == "true" || s == "false") => {
                Some(format!("KDL v2 writes booleans as `#{s}`"))
            }
            KdlValue::String(s) if expected == "an integer" && s.parse::<i128>().is_ok() => {
                Some(format!("drop the quotes: `{s}`"))
            }
            _ => None,
        };
        self.push(
            Problem::error(Code::WrongType, format!("`{what}` must be {expected}, found {}", type_name(found)))
                .primary(self.loc(entry.span()), format!("expected {expected}"))
                .help_opt(help),
        );
    }
}

/// An example argument for a node, for help texts.
fn example_arg(kind: &str) -> &'static str {
    match kind {
        "gpus" => "8",
        "min-gpus" => "1",
        "restart" => "\"on-failure\"",
        "shm-size" => "\"16GiB\"",
        "network" => "\"host\"",
        "digest" => "\"sha256:…\"",
        _ => "\"…\"",
    }
}

fn spec_help(spec: &NodeSpec) -> Option<String> {
    if spec.props.is_empty() {
        return None;
    }
    let props = spec.props.iter().map(|p| format!("`{p}=…`")).collect::<Vec<_>>().join(", ");
    Some(format!("`{}` takes properties: {props}", spec.kind))
}

pub fn type_name(value: &KdlValue) -> &'static str {
    match value {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "an integer",
        KdlValue::Float(_) => "a decimal number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "`#null`",
    }
}

fn display_value(value: &KdlValue) -> String {
    match value {
        KdlValue::String(s) => s.clone(),
        KdlValue::Integer(i) => i.to_string(),
        KdlValue::Float(f) => f.to_string(),
        KdlValue::Bool(b) => b.to_string(),
        KdlValue::Null => "null".into(),
    }
}

/// A node whose entries were checked against its spec.
pub struct Reader<'a> {
    pub node: &'a KdlNode,
    props: Vec<&'a KdlEntry>,
    args: Vec<&'a KdlEntry>,
}

impl<'a> Reader<'a> {
    pub fn prop(&self, key: &str) -> Option<&'a KdlEntry> {
        self.props.iter().copied().find(|e| e.name().is_some_and(|n| n.value() == key))
    }

    /// Every known property, in written order.
    pub fn props(&self) -> &[&'a KdlEntry] {
        &self.props
    }

    pub fn args(&self) -> &[&'a KdlEntry] {
        &self.args
    }

    pub fn arg(&self, i: usize) -> Option<&'a KdlEntry> {
        self.args.get(i).copied()
    }

    pub fn children(&self) -> &'a [KdlNode] {
        self.node.children().map_or(&[], |c| c.nodes())
    }

    pub fn name_span(&self) -> miette::SourceSpan {
        self.node.name().span()
    }
}

/// A directory as an absolute, normalized path; the empty path (a file named without a directory) is the
/// working directory.
pub fn absolute_dir(dir: &Path) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    normalize(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// `path` with `.` dropped and each `..` taking away the component before it, without asking the file
/// system (a symlinked directory followed by `..` is read as its parent in the lab's tree, as includes are).
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    out.iter().collect()
}

/// `path` relative to `base` (both absolute and normalized), `/`-separated: `secrets/token`,
/// `../shared/token`, `.` for `base` itself.
pub fn relative_to(path: &Path, base: &Path) -> String {
    let path: Vec<_> = path.components().collect();
    let base: Vec<_> = base.components().collect();
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_string(), base.len() - common).collect();
    parts.extend(path[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()));
    if parts.is_empty() { ".".to_string() } else { parts.join("/") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../a")), PathBuf::from("/a"));
        assert_eq!(normalize(Path::new("../a/../../b")), PathBuf::from("../../b"));
        assert_eq!(relative_to(Path::new("/lab/secrets/t"), Path::new("/lab")), "secrets/t");
        assert_eq!(relative_to(Path::new("/shared/t"), Path::new("/lab/x")), "../../shared/t");
        assert_eq!(relative_to(Path::new("/lab"), Path::new("/lab")), ".");
        assert!(absolute_dir(Path::new("")).is_absolute());
    }

    #[test]
    fn spec_paths_are_relative_to_the_lab_not_to_the_file_or_the_working_directory() {
        let ctx = Ctx::with_root(FileId(1), PathBuf::from("/labs/x/nodes"), PathBuf::from("/labs/x"));
        assert_eq!(ctx.spec_path("../secrets/./t"), "secrets/t");
        assert_eq!(ctx.spec_path("t"), "nodes/t");
        assert_eq!(ctx.spec_path("../../shared/t"), "../shared/t");
        assert_eq!(ctx.spec_path("/run/secrets/../t"), "/run/t");
        assert_eq!(ctx.spec_path("~/tokens/t"), "~/tokens/t");
        // A lab named from its own directory: the working directory is its root.
        let here = Ctx::with_root(FileId(0), PathBuf::new(), absolute_dir(Path::new("")));
        assert_eq!(here.spec_path("./secrets/t"), "secrets/t");
    }
}
