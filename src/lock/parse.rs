//! Reading a lock file: KDL v2 in the shape [`format`](crate::lock::format::format) writes, every problem
//! a diagnostic with a span, the way a lab file's problems are reported.

use std::collections::BTreeMap;

use kdl::{KdlDocument, KdlEntry, KdlNode};

use crate::config::parse::{ParseError, parse_document, parse_problems};
use crate::diagnostic::{Code, Problem};
use crate::lock::{ClusterLock, Lock, LockedImage, LockedSource, VERSION};
use crate::source::{FileId, Loc};

/// Parses a lock file's text; `file` is its id in the caller's source map, for the diagnostics' spans.
pub fn parse(text: &str, file: FileId) -> Result<Lock, Vec<Problem>> {
    let doc = match parse_document(text) {
        Ok(doc) => doc,
        Err(ParseError::Syntax(e)) if e.diagnostics.is_empty() => {
            return Err(vec![invalid(file, (0..0).into(), "invalid KDL", "here")]);
        }
        Err(e) => return Err(parse_problems(file, &e)),
    };
    let mut p = Parser { file, problems: Vec::new() };
    let lock = p.document(&doc);
    if p.problems.is_empty() { Ok(lock) } else { Err(p.problems) }
}

fn invalid(file: FileId, span: miette::SourceSpan, message: impl Into<String>, label: &str) -> Problem {
    Problem::error(Code::LockInvalid, message)
        .primary(Loc::new(file, span), label)
        .help("`bai lock FILE` writes the lock file again from the lab and its nodes")
}

struct Parser {
    file: FileId,
    problems: Vec<Problem>,
}

impl Parser {
    fn error(&mut self, span: miette::SourceSpan, message: impl Into<String>, label: &str) {
        self.problems.push(invalid(self.file, span, message, label));
    }

    fn document(&mut self, doc: &KdlDocument) -> Lock {
        let mut lock = Lock::default();
        let mut version_seen = false;
        for node in doc.nodes() {
            match node.name().value() {
                "version" => {
                    version_seen = true;
                    self.only(node, &[], 1);
                    match node.entry(0).map(|e| (e, e.value().as_integer())) {
                        Some((_, Some(VERSION))) => {}
                        Some((e, _)) => self.error(
                            e.span(),
                            format!("this bai reads lock files of version {VERSION}"),
                            "unsupported version",
                        ),
                        None => self.error(node.span(), "`version` needs a number", "here"),
                    }
                }
                "agent" => {
                    self.only(node, &["sha256"], 0);
                    lock.agent = self.string_prop(node, "sha256", true);
                }
                "cluster" => {
                    self.only(node, &[], 1);
                    let Some(name) = self.string_arg(node, 0, "a cluster name") else { continue };
                    if lock.clusters.contains_key(&name) {
                        self.error(node.span(), format!("cluster `{name}` is locked twice"), "again here");
                        continue;
                    }
                    let images = self.cluster(node);
                    lock.clusters.insert(name, images);
                }
                other => self.error(
                    node.name().span(),
                    format!("unknown node `{other}` in a lock file"),
                    "expected `version`, `agent` or `cluster`",
                ),
            }
        }
        if !version_seen {
            self.error((0..0).into(), "the lock file has no `version` line", "expected `version 1`");
        }
        lock
    }

    fn cluster(&mut self, node: &KdlNode) -> ClusterLock {
        let mut images = BTreeMap::new();
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            if child.name().value() != "image" {
                self.error(
                    child.name().span(),
                    format!("unknown node `{}` in a cluster", child.name().value()),
                    "expected `image`",
                );
                continue;
            }
            let Some(name) = self.string_arg(child, 0, "an image name") else { continue };
            let Some(kind) = self.string_arg(child, 1, "`pull`, `build` or `archive`") else { continue };
            let allowed: &[&str] = match kind.as_str() {
                "pull" => &["ref", "digest"],
                "build" => &["ref", "context-sha256", "dockerfile", "image-id"],
                "archive" => &["ref", "sha256", "image-id"],
                _ => {
                    let span = child.entry(1).map_or(child.span(), KdlEntry::span);
                    self.error(
                        span,
                        format!("`{kind}` is not an image source"),
                        "expected `pull`, `build` or `archive`",
                    );
                    continue;
                }
            };
            self.only(child, allowed, 2);
            let reference = self.string_prop(child, "ref", true);
            let source = match kind.as_str() {
                "pull" => Some(LockedSource::Pull { digest: self.string_prop(child, "digest", false) }),
                "build" => {
                    match (self.string_prop(child, "context-sha256", true), self.string_prop(child, "dockerfile", true))
                    {
                        (Some(context_sha256), Some(dockerfile)) => Some(LockedSource::Build {
                            context_sha256,
                            dockerfile,
                            image_id: self.string_prop(child, "image-id", false),
                        }),
                        _ => None,
                    }
                }
                _ => self.string_prop(child, "sha256", true).map(|sha256| LockedSource::Archive {
                    sha256,
                    image_id: self.string_prop(child, "image-id", false),
                }),
            };
            if images.contains_key(&name) {
                self.error(child.span(), format!("image `{name}` is locked twice"), "again here");
                continue;
            }
            if let (Some(reference), Some(source)) = (reference, source) {
                images.insert(name, LockedImage { reference, source });
            }
        }
        images
    }

    /// Reports properties outside `allowed` and arguments past the first `args`.
    fn only(&mut self, node: &KdlNode, allowed: &[&str], args: usize) {
        let mut positional = 0;
        for entry in node.entries() {
            match entry.name() {
                Some(key) if !allowed.contains(&key.value()) => {
                    self.error(entry.span(), format!("unknown property `{}`", key.value()), "not part of a lock file")
                }
                Some(_) => {}
                None => {
                    positional += 1;
                    if positional > args {
                        self.error(entry.span(), "unexpected argument", "not part of a lock file");
                    }
                }
            }
        }
        if node.children().is_some() && node.name().value() != "cluster" {
            self.error(node.span(), format!("`{}` takes no children", node.name().value()), "here");
        }
    }

    fn string_arg(&mut self, node: &KdlNode, index: usize, what: &str) -> Option<String> {
        match node.entry(index) {
            Some(e) => match e.value().as_string() {
                Some(s) => Some(s.to_string()),
                None => {
                    self.error(e.span(), format!("expected {what}"), "not a string");
                    None
                }
            },
            None => {
                self.error(node.span(), format!("`{}` needs {what}", node.name().value()), "here");
                None
            }
        }
    }

    fn string_prop(&mut self, node: &KdlNode, key: &str, required: bool) -> Option<String> {
        match node.entry(key) {
            Some(e) => match e.value().as_string() {
                Some(s) => match well_formed(key, s) {
                    Ok(()) => Some(s.to_string()),
                    Err(expected) => {
                        self.error(e.span(), format!("`{key}` must be {expected}"), "malformed");
                        None
                    }
                },
                None => {
                    self.error(e.span(), format!("`{key}` must be a string"), "not a string");
                    None
                }
            },
            None => {
                if required {
                    self.error(node.span(), format!("`{}` needs `{key}=…`", node.name().value()), "here");
                }
                None
            }
        }
    }
}

/// Hashes and digests reach the agent and Docker's API: only their exact shapes are let through.
fn well_formed(key: &str, value: &str) -> Result<(), &'static str> {
    let hex64 = |v: &str| v.len() == 64 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match key {
        "sha256" | "context-sha256" if !hex64(value) => Err("64 lowercase hexadecimal digits"),
        "digest" | "image-id" if !value.strip_prefix("sha256:").is_some_and(hex64) => {
            Err("`sha256:` and 64 lowercase hexadecimal digits")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(text, FileId(0)) {
            Ok(lock) => panic!("parsed: {lock:?}"),
            Err(problems) => problems.iter().map(|p| format!("{}: {}", p.code, p.message)).collect(),
        }
    }

    #[test]
    fn problems_carry_spans_and_codes() {
        let text = format!(
            "version 1\ncluster \"lab\" {{\n    image \"t\" build ref=\"a:1\" context-sha256=\"{}\" colour=\"red\"\n}}\n",
            "0".repeat(64)
        );
        let problems = parse(&text, FileId(0)).expect_err("invalid");
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages, vec!["unknown property `colour`", "`image` needs `dockerfile=…`"]);
        let span = problems[0].labels[0].loc.span;
        assert_eq!(&text[span.offset()..span.offset() + span.len()].trim(), &"colour=\"red\"");
        assert_eq!(problems[0].code, Code::LockInvalid);
    }

    #[test]
    fn versions_sources_and_syntax_are_checked() {
        assert_eq!(errors("version 2\n"), vec!["bai::lock::invalid: this bai reads lock files of version 1"]);
        assert_eq!(errors("cluster \"c\"\n"), vec!["bai::lock::invalid: the lock file has no `version` line"]);
        assert_eq!(
            errors("version 1\ncluster \"c\" {\n image \"i\" fetch ref=\"r\"\n}\n"),
            vec!["bai::lock::invalid: `fetch` is not an image source"]
        );
        assert!(errors("version 1\ncluster \"c\" {\n")[0].starts_with("bai::kdl::syntax"));
        assert_eq!(
            errors("version 1\nagent sha256=\"abc\"\n"),
            vec!["bai::lock::invalid: `sha256` must be 64 lowercase hexadecimal digits"]
        );
    }
}
