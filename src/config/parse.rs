//! Parsing KDL text into a document, within bounds the parser itself does not keep.
//!
//! The `kdl` crate's parser descends one level of Rust recursion for every nested `{ }` block and every
//! nested `/* */` comment, so a file of a few thousand nested blocks overflows the stack and aborts the
//! process (exit 134): no `catch_unwind` can stop that. Everything that walks a parsed document (lowering,
//! `bai fmt`, even dropping it) recurses the same way. So before the parser sees a text, [`too_deep`]
//! measures its nesting with a small lexer of its own and refuses past [`MAX_DEPTH`] levels. A lab needs
//! three (`cluster { node { ssh } }`); a hundred leaves room for any KDL a person writes.
//!
//! The lexer knows where strings and comments start and end, so braces inside strings do not count. Where
//! it could disagree with the parser it errs towards counting: a string that runs to the end of a line
//! without its closing quote ends there, and every KDL line break ends a `//` comment.

use std::sync::Arc;

use kdl::KdlDocument;

use crate::diagnostic::{Code, Problem};
use crate::source::{FileId, Loc};

/// The deepest nesting of `{ }` blocks and `/* */` comments bai hands to the KDL parser.
pub const MAX_DEPTH: usize = 100;

/// Why a text is not a document.
#[derive(Debug)]
pub enum ParseError {
    /// The parser's own errors.
    Syntax(kdl::KdlError),
    /// Nested deeper than [`MAX_DEPTH`]: the block or comment opening at `offset` (`len` bytes) is one
    /// level too many. The parser was not run.
    TooDeep { offset: usize, len: usize },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Syntax(e) => write!(f, "{e}"),
            ParseError::TooDeep { offset, .. } => {
                write!(f, "nested deeper than {MAX_DEPTH} levels at byte {offset}")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses KDL v2, refusing text nested deeper than [`MAX_DEPTH`]. The parser is a dependency: if it ever
/// panics on some input, that input gets a diagnostic rather than taking bai down with it.
pub fn parse_document(text: &str) -> Result<KdlDocument, ParseError> {
    if let Some((offset, len)) = too_deep(text) {
        return Err(ParseError::TooDeep { offset, len });
    }
    let openers = openers(text);
    if openers <= INLINE_OPENERS {
        return parse_checked(text);
    }
    // The lexer above is exact on valid KDL, but on invalid text the parser's error recovery may resume
    // inside what the lexer took for a string, and nest there. It can never nest deeper than the text
    // has `{` and `/*`, so it gets a stack that holds that many levels, whatever it makes of them: a
    // stack segment of that size on this very thread (`stacker`, as rustc grows its own), not another
    // thread. A document built on another thread lives in that thread's malloc arena, where the plan
    // that follows cannot reuse it once it is freed: an M lab (1,000 nodes) planned in 149 MB instead of
    // 120 that way.
    let mut stack = STACK_BASE + openers.min(STACK_LEVELS) * STACK_PER_LEVEL;
    loop {
        // `stacker` panics when the system will not map a stack that size (a strict overcommit policy,
        // an address-space limit): try a smaller one; past the smallest, parse where we are.
        match std::panic::catch_unwind(|| stacker::grow(stack, || parse_checked(text))) {
            Ok(result) => return result,
            Err(_) if stack > STACK_BASE => stack /= 2,
            Err(_) => return parse_checked(text),
        }
    }
}

/// Text with at most this many `{` and `/*` is parsed on the caller's stack: even nested all the way,
/// that is well under the 2 MiB of the smallest thread bai parses on (a tokio worker's, when `bai
/// watch` reloads a lab).
const INLINE_OPENERS: usize = 64;
/// The parser's stack beyond its levels of nesting.
const STACK_BASE: usize = 2 << 20;
/// The stack one level of nesting takes in the parser: about 7 KiB in a debug build (measured with
/// `ulimit -s`), doubled.
const STACK_PER_LEVEL: usize = 16 << 10;
/// The most levels a parse thread's stack is sized for: 1 GiB of address space, most of it never
/// touched.
const STACK_LEVELS: usize = 1 << 16;

/// How many `{` and `/*` the text holds: the most levels the parser could nest, whatever it parses.
fn openers(text: &str) -> usize {
    let b = text.as_bytes();
    b.iter().filter(|&&c| c == b'{').count() + b.windows(2).filter(|w| w == b"/*").count()
}

/// Parses, and checks the document's own nesting: what bai does with a document after parsing
/// (lowering, formatting, dropping it) recurses once per level too.
fn parse_checked(text: &str) -> Result<KdlDocument, ParseError> {
    let doc = match std::panic::catch_unwind(|| KdlDocument::parse(text)) {
        Ok(result) => result.map_err(ParseError::Syntax)?,
        Err(_) => return Err(parser_failed(text)),
    };
    match deepest(&doc) {
        Some(span) => Err(ParseError::TooDeep { offset: span.offset(), len: span.len() }),
        None => Ok(doc),
    }
}

/// The name of the first node whose children lie deeper than [`MAX_DEPTH`], found without recursion.
fn deepest(doc: &KdlDocument) -> Option<miette::SourceSpan> {
    let mut todo: Vec<(&KdlDocument, usize)> = vec![(doc, 0)];
    while let Some((doc, depth)) = todo.pop() {
        for node in doc.nodes() {
            if let Some(children) = node.children() {
                if depth + 1 > MAX_DEPTH {
                    return Some(node.name().span());
                }
                todo.push((children, depth + 1));
            }
        }
    }
    None
}

fn parser_failed(text: &str) -> ParseError {
    ParseError::Syntax(kdl::KdlError {
        input: Arc::new(text.to_string()),
        diagnostics: vec![kdl::KdlDiagnostic {
            input: Arc::new(String::new()),
            span: (0..0).into(),
            message: Some("the KDL parser failed on this file".into()),
            label: None,
            help: Some("this is a bug in the parser; please report the file that triggers it".into()),
            severity: miette::Severity::Error,
        }],
    })
}

/// A parse error as diagnostics of ours, in `file`.
pub fn parse_problems(file: FileId, error: &ParseError) -> Vec<Problem> {
    match error {
        ParseError::Syntax(e) => {
            let mut problems: Vec<Problem> =
                e.diagnostics.iter().map(|d| with_hints(syntax_problem(file, d), &e.input)).collect();
            // An unclosed block is reported twice by the parser (at the block and after the nodes), both at
            // the outermost `{`: say it once, where the lines' indentation says it is.
            if let Some(at) = problems.iter().position(|p| p.message.starts_with("No closing '}'")) {
                problems.retain(|p| !p.message.starts_with("Closing '}' was not found"));
                if let Some(open) = unclosed_by_indentation(&e.input) {
                    let p = &mut problems[at];
                    p.labels = vec![crate::diagnostic::Label {
                        loc: Loc::new(file, (open..open + 1).into()),
                        text: Some("this block is not closed: the lines after it are not indented under it".into()),
                        primary: true,
                    }];
                }
            }
            if problems.is_empty() {
                problems.push(
                    Problem::error(Code::KdlSyntax, "invalid KDL").primary(Loc::new(file, (0..0).into()), "here"),
                );
            }
            problems
        }
        ParseError::TooDeep { offset, len } => vec![
            Problem::error(Code::KdlTooDeep, format!("blocks and comments nest deeper than {MAX_DEPTH} levels"))
                .primary(Loc::new(file, (*offset..offset + len).into()), format!("level {} opens here", MAX_DEPTH + 1))
                .help(format!(
                    "bai reads at most {MAX_DEPTH} levels of nested `{{ }}` blocks and `/* */` comments (a lab \
                     needs three); nothing in this file was read"
                )),
        ],
    }
}

/// A KDL parse error as a diagnostic of ours, with the file's name on it.
pub fn syntax_problem(file: FileId, d: &kdl::KdlDiagnostic) -> Problem {
    // kdl 6.7 reports some errors (a bad property value) with a span running from the start of the
    // file to the error (fixed upstream in kdl-rs #172): point at where it ends, which is the error.
    let span = if d.span.offset() == 0 && d.span.len() > 1 { (d.span.len()..d.span.len()).into() } else { d.span };
    let label = d.label.clone().unwrap_or_else(|| "here".into());
    Problem::error(Code::KdlSyntax, d.message.clone().unwrap_or_else(|| "invalid KDL".into()))
        .primary(Loc::new(file, span), label)
        .help_opt(d.help.clone())
}

/// Hints for habits the KDL parser meets with a bare message: KDL v1's `true`, `false` and `null`, which
/// KDL v2 (what bai reads) writes `#true`, `#false`, `#null`.
fn with_hints(problem: Problem, text: &str) -> Problem {
    if problem.help.is_some() {
        return problem;
    }
    let word = problem
        .labels
        .iter()
        .find(|l| l.primary)
        .and_then(|l| {
            let start = l.loc.span.offset();
            let rest = text.get(start..)?;
            Some(rest.split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or_default().to_string())
        })
        .unwrap_or_default();
    match word.as_str() {
        "true" | "false" | "null" | "inf" | "nan" => {
            let hint = format!("KDL v2, which bai reads, writes `#{word}` (KDL v1 wrote `{word}`)");
            problem.help(hint)
        }
        _ => problem,
    }
}

/// The `{` of the innermost block that is likely left open: one whose first following line indented no
/// deeper than the line that opened it is not its closing `}`.
pub fn unclosed_by_indentation(text: &str) -> Option<usize> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut offset = 0;
    let mut lines: Vec<(usize, &str)> = Vec::new();
    for line in text.split_inclusive('\n') {
        lines.push((offset, line));
        offset += line.len();
    }
    let mut found = None;
    for (i, &(start, line)) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or_default().trim_end();
        if !code.ends_with('{') {
            continue;
        }
        // The first line after it that is not indented deeper must be its `}`.
        let next = lines[i + 1..]
            .iter()
            .map(|(_, l)| *l)
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
            .find(|l| indent(l) <= indent(line));
        if next.is_none_or(|n| !n.trim_start().starts_with('}')) {
            found = Some(start + code.len() - 1);
        }
    }
    found
}

/// Where `text` first nests deeper than [`MAX_DEPTH`] (the offset and length of the `{` or `/*` that opens
/// the level too many), or `None`. One pass, no allocation.
pub fn too_deep(text: &str) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut braces = 0usize;
    while i < b.len() {
        match b[i] {
            b'{' => {
                braces += 1;
                if braces > MAX_DEPTH {
                    return Some((i, 1));
                }
                i += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => i = line_end(b, i + 2),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Block comments nest, and the parser recurses into each level.
                let mut comments = 0usize;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        comments += 1;
                        if braces + comments > MAX_DEPTH {
                            return Some((i, 2));
                        }
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        comments -= 1;
                        i += 2;
                        if comments == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'"' | b'#' => i = string_end(b, i),
            _ => i += 1,
        }
    }
    None
}

/// Whether a KDL line break starts at `b[i..]`: CR, LF, VT, FF, NEL, LS, PS (and so CRLF).
fn newline_at(b: &[u8], i: usize) -> bool {
    match b[i] {
        b'\n' | b'\r' | 0x0b | 0x0c => true,
        0xc2 => b.get(i + 1) == Some(&0x85),
        0xe2 => b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xa8 | 0xa9)),
        _ => false,
    }
}

/// The offset of the line break ending the line that `b[i..]` is in (or the end of the text).
fn line_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !newline_at(b, i) {
        i += 1;
    }
    i
}

/// Past the string starting at `b[start]` (`"`, `"""`, `#"`, `##"""`, …); a `#` that starts no string
/// (`#true`) is passed over alone.
fn string_end(b: &[u8], start: usize) -> usize {
    let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
    let open = start + hashes;
    if b.get(open) != Some(&b'"') {
        return open.max(start + 1);
    }
    let multi_line = b[open..].starts_with(b"\"\"\"");
    let mut i = open + if multi_line { 3 } else { 1 };
    let quotes = if multi_line { 3 } else { 1 };
    while i < b.len() {
        if hashes == 0 && b[i] == b'\\' {
            // An escape. `\` then whitespace is one too, running over line breaks to the next character.
            i += 1;
            let start = i;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || newline_at(b, i)) {
                i += 1;
            }
            if i == start {
                i += 1;
            }
        } else if b[i] == b'"'
            && b[i..].iter().take_while(|&&c| c == b'"').count() >= quotes
            && b[i + quotes..].iter().take_while(|&&c| c == b'#').count() >= hashes
        {
            return i + quotes + hashes;
        } else if !multi_line && newline_at(b, i) {
            // A single-line string cannot hold a line break: the parser stops here, and so do we.
            return i;
        } else {
            i += 1;
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unclosed_block_is_found_by_indentation() {
        let text = "cluster \"e\" {\n    image \"i\" ref=\"x\" {\n        digest \"d\"\n    session \"s\"\n}\n";
        assert_eq!(unclosed_by_indentation(text), text.find("\"x\" {").map(|i| i + 4));
        let closed = "cluster \"e\" {\n    image \"i\" {\n        digest \"d\"\n    }\n}\n";
        assert_eq!(unclosed_by_indentation(closed), None);
        // The last block of a file, left open.
        assert_eq!(unclosed_by_indentation("a {\n  b 1\n"), Some(2));
    }

    fn depth_ok(text: &str) -> bool {
        too_deep(text).is_none()
    }

    fn blocks(n: usize) -> String {
        format!("{}{}", "a {".repeat(n), "}".repeat(n))
    }

    #[test]
    fn blocks_up_to_the_limit_pass() {
        assert!(depth_ok(&blocks(MAX_DEPTH)));
        let deep = blocks(MAX_DEPTH + 1);
        assert_eq!(too_deep(&deep), Some((3 * MAX_DEPTH + 2, 1)));
        // Siblings do not add up.
        assert!(depth_ok(&blocks(MAX_DEPTH).repeat(3)));
    }

    #[test]
    fn nested_comments_count_with_the_blocks_around_them() {
        let comment = |n: usize| format!("{}{}", "/*".repeat(n), "*/".repeat(n));
        assert!(depth_ok(&format!("a {}", comment(MAX_DEPTH))));
        assert_eq!(too_deep(&format!("a {}", comment(MAX_DEPTH + 1))), Some((2 + 2 * MAX_DEPTH, 2)));
        assert!(too_deep(&format!("a {{ {} }}", comment(MAX_DEPTH))).is_some());
        // Braces inside a comment are not blocks.
        assert!(depth_ok(&format!("a /* {} */", "{".repeat(500))));
        assert!(depth_ok(&format!("a // {}\nb", "{".repeat(500))));
    }

    #[test]
    fn braces_in_strings_do_not_count() {
        let many = "{".repeat(500);
        for text in [
            format!("a \"{many}\""),
            format!("a \"\\\"{many}\""),
            format!("a #\"{many}\"#"),
            format!("a ##\"\"#{many}\"##"),
            format!("a \"\"\"\n{many}\n\"\"\""),
            format!("a #\"\"\"\n\"\"\" {many}\n\"\"\"#"),
            format!("a \"x\\\n   {many}\""),
        ] {
            assert!(depth_ok(&text), "{text}");
        }
    }

    #[test]
    fn where_the_lexer_is_unsure_it_counts() {
        let deep = blocks(MAX_DEPTH + 1);
        for text in [
            // A single-line string without its closing quote ends at the line break.
            format!("a \"open\n{deep}"),
            format!("a #\"open\n{deep}"),
            // A line comment ends at every KDL line break.
            format!("a // note\u{2028}{deep}"),
            format!("a // note\u{85}{deep}"),
            format!("a // note\r{deep}"),
            // `#` that starts no string.
            format!("a #true {deep}"),
        ] {
            assert!(too_deep(&text).is_some(), "{text:?}");
        }
    }

    #[test]
    fn parse_refuses_without_running_the_parser() {
        let deep = format!("{}{}", "a {".repeat(5_000), "}".repeat(5_000));
        match parse_document(&deep) {
            Err(ParseError::TooDeep { offset, len }) => assert_eq!((offset, len), (3 * MAX_DEPTH + 2, 1)),
            other => panic!("expected TooDeep, got {other:?}"),
        }
        let problems = parse_problems(FileId(0), &parse_document(&deep).unwrap_err());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].code, Code::KdlTooDeep);
        assert!(parse_document(&blocks(MAX_DEPTH)).is_ok());
    }

    #[test]
    fn whitespace_escapes_run_over_line_breaks() {
        let deep = blocks(MAX_DEPTH + 1);
        assert!(depth_ok(&format!("a \"x\\  \r\n  {deep}\"")));
        assert!(depth_ok(&format!("a \"x\\\n{deep}\"")));
    }

    /// Invalid text whose error recovery makes the parser read blocks where the lexer saw a string: the
    /// parser nests thousands of levels deep, on a stack sized for it, and reports syntax errors.
    #[test]
    fn the_parser_recovering_into_deep_blocks_does_not_overflow() {
        let deep = format!("{}{}", "b {".repeat(3_000), "}".repeat(3_000));
        for text in [
            format!("a \"x\"y\" {deep} \"\n"),
            format!("a (x\"y) {deep} \"\n"),
            format!("a \"\"\"\n{deep}\n"),
            format!("a \"x \\q {deep} \"\n"),
        ] {
            assert!(too_deep(&text).is_none(), "the lexer sees a string here");
            assert!(matches!(parse_document(&text), Err(ParseError::Syntax(_))), "{}", &text[..20]);
        }
    }

    #[test]
    fn a_parsed_document_deeper_than_the_limit_is_refused() {
        // Past the lexer (as if it had misjudged), the document itself is measured.
        let text = blocks(MAX_DEPTH + 1);
        assert!(matches!(parse_checked(&text), Err(ParseError::TooDeep { .. })));
        assert!(deepest(&KdlDocument::parse(&blocks(MAX_DEPTH)).expect("valid")).is_none());
    }

    #[test]
    fn openers_counts_every_brace_and_comment_start() {
        assert_eq!(openers("a { /* { */ \"{\" } // /*"), 5);
    }
}
