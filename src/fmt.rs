//! Canonical formatting of bai's KDL files for `bai fmt`.
//!
//! The layout is kdl's own canonical form ([`KdlDocument::autoformat`]): four
//! spaces per level, one node per line, values in their plainest spelling.
//! Using kdl's form rather than a home-grown printer means `bai fmt` never
//! disagrees with the parser about what a value looks like.
//!
//! A formatter that eats comments cannot be run on hand-written config, and
//! kdl 6.7 loses several kinds (upstream issue #179, plus parser gaps):
//!
//! - `autoformat` replaces a node's terminator with `"\n"`, dropping the
//!   end-of-line `// comment` stored there;
//! - it resets every entry's format, dropping `/* inline */` comments and
//!   `/-` slashdashed entries kept in an entry's leading text;
//! - it resets the text before `{`, dropping comments and `/-{ … }` blocks;
//! - it never prints the decor inside a node's `(type)` annotation;
//! - the parser keeps nothing but a `/-{ … }` block of what follows a
//!   children block's `}` on its line (`node { … } // note`), so even a
//!   plain round trip loses it;
//! - the comment lines closing a block or the file come out mis-indented,
//!   and multi-line comments are flattened line by line.
//!
//! So [`format_source`] keeps the parsed original, lets kdl format a copy,
//! then walks both trees in lockstep and writes every piece of comment text
//! back, re-indented to where it now sits; what follows a `}` is read from
//! the source through the node's span. Only whitespace around comments
//! changes, so the document's data does not. One fix is not about
//! comments: kdl prints some characters raw inside quotes that its own
//! parser rejects (`"\u{2028}"`), so such strings are written with escapes.

use kdl::{KdlDocument, KdlEntryFormat, KdlIdentifier, KdlNode, KdlValue};

use crate::config::parse::{ParseError, parse_document};

const INDENT: &str = "    ";

/// Formats a KDL document into bai's canonical layout, keeping all comments.
///
/// The result is stable (`format_source` of the output returns it unchanged)
/// and ends in exactly one newline, or is empty for a document with neither
/// nodes nor comments.
/// Text nested deeper than [`MAX_DEPTH`](crate::config::parse::MAX_DEPTH) is refused unparsed.
pub fn format_source(source: &str) -> Result<String, ParseError> {
    // A byte-order mark carries no content and would otherwise be kept as
    // document "leading" text that never re-indents cleanly.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    // KDL has eight line breaks; the comment handling below knows `\n`. The others only end lines (in
    // multi-line strings too, whose values have them as `\n`), so they become `\n` first: a `//`
    // comment ended by a form feed would otherwise swallow the `}` after it.
    let unified;
    let source = if source.contains(['\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}']) {
        unified =
            source.replace("\r\n", "\n").replace(['\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}'], "\n");
        unified.as_str()
    } else {
        source
    };
    let original: KdlDocument = parse_document(source)?;
    let mut doc = original.clone();
    doc.autoformat();
    restore_doc(&original, &mut doc, 0, source);
    let out = doc.to_string();
    let body = out.trim_end();
    Ok(if body.is_empty() { String::new() } else { format!("{body}\n") })
}

/// Writes the comments of `orig` back into its formatted copy `new`, whose
/// nodes sit `depth` levels deep.
fn restore_doc(orig: &KdlDocument, new: &mut KdlDocument, depth: usize, src: &str) {
    let indent = INDENT.repeat(depth);
    let nested = depth > 0;
    let (leading, trailing) = orig.format().map_or(("", ""), |f| (f.leading.as_str(), f.trailing.as_str()));
    // Text straight after `{` (or after a `;`) starts mid-line; a `// note`
    // there belongs to that line, not to the node below it.
    let mut mid_line = nested;
    let mut head = None;
    let mut leading = leading;
    if let Some((comment, rest)) = mid_line.then(|| split_line_comment(leading)).flatten() {
        head = Some(comment);
        leading = rest;
    }
    let nodes = new.nodes_mut();
    for (i, o) in orig.nodes().iter().enumerate() {
        let mut node_leading = o.format().map_or("", |f| f.leading.as_str());
        if let Some((comment, rest)) = mid_line.then(|| split_line_comment(node_leading)).flatten() {
            node_leading = rest;
            match i.checked_sub(1).and_then(|p| nodes.get_mut(p)) {
                Some(prev) => set_eol(prev, comment),
                None => head = Some(comment),
            }
        }
        if let Some(n) = nodes.get_mut(i) {
            // A blank line the author left between nodes stays (one at most); none right after `{`.
            // Text before a later node starts right after the previous node's line break, so a
            // blank line at its start is one the author left.
            let blanks = if i > 0 { Blanks::All } else { Blanks::Inner };
            restore_node(o, n, node_leading, blanks, depth, src);
        }
        mid_line = after_span(o, src).starts_with(';');
    }
    let mut trailing = trailing;
    if let Some((comment, rest)) = mid_line.then(|| split_line_comment(trailing)).flatten()
        && let Some(last) = nodes.last_mut()
    {
        set_eol(last, comment);
        trailing = rest;
    }
    let leading = block(leading, &indent, Blanks::Inner);
    let mut trailing = block(trailing, &indent, Blanks::None);
    let leading = if !nested {
        leading
    } else if nodes.is_empty() && head.is_none() && leading.is_empty() && trailing.is_empty() {
        // An empty block stays `{}` rather than `{` and `}` on two lines.
        String::new()
    } else {
        trailing.push_str(&INDENT.repeat(depth - 1));
        head.map_or_else(|| "\n".to_owned(), |c| format!(" {c}\n")) + &leading
    };
    match new.format_mut() {
        Some(f) => (f.leading, f.trailing) = (leading, trailing),
        None => new.set_format(kdl::KdlDocumentFormat { leading, trailing }),
    }
}

/// Restores the comments of one node; `leading` is its own-line comment text
/// (minus any `// note` already moved up to the previous line).
fn restore_node(o: &KdlNode, n: &mut KdlNode, leading: &str, blanks: Blanks, depth: usize, src: &str) {
    let indent = INDENT.repeat(depth);
    let cont = format!("{indent}{INDENT}");
    let eol = line_comment(after_span(o, src));
    let of = o.format().cloned().unwrap_or_default();
    // kdl prints a node's type annotation without the decor around it, so
    // comments there ride along in the identifiers' printed form instead.
    let ty_before = wrap(&of.before_ty_name, &cont, "", " ").unwrap_or_default();
    let ty_after = wrap(&of.after_ty_name, &cont, " ", "").unwrap_or_default();
    if let Some(ty) = n.ty_mut() {
        ty.set_repr(format!("{ty_before}{}{ty_after}", ident(ty)));
    }
    let after_ty = wrap(&of.after_ty, &cont, " ", " ").unwrap_or_default();
    let name = n.name_mut();
    name.set_repr(format!("{after_ty}{}", ident(name)));
    if let Some(nf) = n.format_mut() {
        nf.leading = block(leading, &indent, blanks) + &indent;
        nf.before_children = wrap(&of.before_children, &cont, " ", " ").unwrap_or_else(|| " ".to_owned());
        let before_terminator = o.children().and_then(|c| after_children(o, c, src)).unwrap_or(&of.before_terminator);
        // A trailing line break (from a `\ // note` continuation) already ends
        // the line; indenting after it would leave trailing whitespace.
        nf.before_terminator = match inline(before_terminator, &cont) {
            Some((text, true)) => format!(" {text}\n"),
            Some((text, false)) => format!(" {text}"),
            None => String::new(),
        };
        nf.terminator = "\n".to_owned();
    }
    if let Some(comment) = eol {
        set_eol(n, comment);
    }
    for (oe, ne) in o.entries().iter().zip(n.entries_mut()) {
        if let Some(key) = ne.name_mut() {
            key.set_repr(ident(key));
        }
        if let Some(ty) = ne.ty_mut() {
            ty.set_repr(ident(ty));
        }
        let Some(ef) = oe.format() else { continue };
        let parts = [
            &ef.leading,
            &ef.trailing,
            &ef.after_key,
            &ef.after_eq,
            &ef.before_ty_name,
            &ef.after_ty_name,
            &ef.after_ty,
        ];
        // String values stay quoted, as written in every example and doc: kdl's canonical form would
        // print `node gpu-01`, silently rewriting what the user wrote. Other values keep kdl's form.
        let quoted_value = ne.value().as_string().map(quoted);
        if quoted_value.is_none() && !parts.iter().any(|p| p.contains('/')) {
            continue;
        }
        let value_repr = quoted_value.unwrap_or_else(|| ne.value().to_string());
        ne.set_format(KdlEntryFormat {
            value_repr,
            leading: wrap(&ef.leading, &cont, " ", " ").unwrap_or_else(|| " ".to_owned()),
            trailing: wrap(&ef.trailing, &cont, " ", "").unwrap_or_default(),
            after_key: wrap(&ef.after_key, &cont, " ", " ").unwrap_or_default(),
            after_eq: wrap(&ef.after_eq, &cont, " ", " ").unwrap_or_default(),
            before_ty_name: wrap(&ef.before_ty_name, &cont, "", " ").unwrap_or_default(),
            after_ty_name: wrap(&ef.after_ty_name, &cont, " ", "").unwrap_or_default(),
            after_ty: wrap(&ef.after_ty, &cont, " ", " ").unwrap_or_default(),
            autoformat_keep: false,
        });
    }
    if let (Some(oc), Some(nc)) = (o.children(), n.children_mut().as_mut()) {
        restore_doc(oc, nc, depth + 1, src);
    }
}

/// The canonical spelling of an identifier (kdl's, unless it needs escapes).
fn ident(id: &KdlIdentifier) -> String {
    escape(id.value()).unwrap_or_else(|| KdlValue::String(id.value().to_owned()).to_string())
}

/// A quoted spelling of `s` when kdl's would be unparsable: kdl writes some
/// characters raw between quotes (`"\u{2028}"` would come back as a line
/// break) that its parser rejects there.
fn escape(s: &str) -> Option<String> {
    let kdl_escapes = |c: char| matches!(c, '\n' | '\r' | '\t' | '\u{8}' | '\u{c}');
    if !s.chars().any(|c| unprintable(c) && !kdl_escapes(c)) {
        return None;
    }
    Some(quoted(s))
}

/// `s` as a quoted KDL string, escaped where it must be.
fn quoted(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '\\' | '"' => out.extend(['\\', c]),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Characters KDL forbids literally inside a single-line string: controls,
/// line and paragraph separators, bidi marks and a stray BOM.
fn unprintable(c: char) -> bool {
    let special = [0x200E..=0x200F, 0x2028..=0x202E, 0x2066..=0x2069, 0xFEFF..=0xFEFF];
    c.is_control() || special.iter().any(|r| r.contains(&u32::from(c)))
}

/// Ends the node's line with `comment` (a `// …` line comment).
fn set_eol(node: &mut KdlNode, comment: &str) {
    if let Some(f) = node.format_mut() {
        if !f.before_terminator.ends_with([' ', '\n']) {
            f.before_terminator.push(' ');
        }
        f.terminator = format!("{comment}\n");
    }
}

/// The source text right after the node, where its terminator starts.
fn after_span<'a>(node: &KdlNode, src: &'a str) -> &'a str {
    let span = node.span();
    src.get(span.offset() + span.len()..).unwrap_or("")
}

/// The `// …` comment at the start of `text`, without its line break.
fn line_comment(text: &str) -> Option<&str> {
    text.starts_with("//").then(|| text.lines().next().map(str::trim_end)).flatten()
}

/// Splits a `// …` comment off the first line of `text`, returning it and
/// whatever follows that line.
fn split_line_comment(text: &str) -> Option<(&str, &str)> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let first = first.trim();
    first.starts_with("//").then_some((first, rest))
}

/// What follows a children block's `}` on the node's line. kdl records a
/// `/-{ … }` block there but drops the comments, so the text is read from
/// the source: the `}` sits after the block's last node, that node's
/// terminator and the block's trailing text.
fn after_children<'a>(node: &KdlNode, children: &KdlDocument, src: &'a str) -> Option<&'a str> {
    let span = children.span();
    let mut brace = span.offset() + span.len();
    if !children.nodes().is_empty() {
        let rest = src.get(brace..).unwrap_or_default();
        brace += if rest.starts_with("//") {
            rest.find('\n').map_or(rest.len(), |i| i + 1)
        } else if rest.starts_with("\r\n") {
            2
        } else {
            // `;` or one of KDL's newline characters.
            let terminators = ";\n\r\u{b}\u{c}\u{85}\u{2028}\u{2029}";
            rest.chars().next().filter(|&c| terminators.contains(c)).map_or(0, char::len_utf8)
        };
    }
    brace += children.format().map_or(0, |f| f.trailing.len());
    let end = node.span().offset() + node.span().len();
    src.get(brace..end)?.strip_prefix('}')
}

/// Formats decor that sits within a node's line (around entries, before `{`)
/// as `open` + text + `close`; `None` when it holds no comment, so canonical
/// spacing applies. Every comment or slashdash in decor contains a `/`.
fn wrap(text: &str, cont: &str, open: &str, close: &str) -> Option<String> {
    let (body, breaks) = inline(text, cont)?;
    Some(if breaks { format!("{open}{body}\n{cont}") } else { format!("{open}{body}{close}") })
}

/// Tidies in-line decor, also saying whether it ended with a line break
/// (after a `\ // note` continuation), which must be kept.
fn inline(text: &str, cont: &str) -> Option<(String, bool)> {
    if !text.contains('/') {
        return None;
    }
    let breaks = text.contains('\n') && text.rsplit('\n').next().is_some_and(|l| l.trim().is_empty());
    // The whitespace before the value is not part of the decor.
    Some((reflow(text.trim_end(), cont, true, Blanks::None).join("\n"), breaks))
}

/// Which blank lines of comment text survive; a run of them is always kept as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blanks {
    None,
    /// Between lines of text, not before the first (the start of a file or block).
    Inner,
    /// Also before the first line: the text follows a node the author separated it from.
    All,
}

/// Own-line comment text re-indented to `indent`, one `\n` per line.
fn block(text: &str, indent: &str, blanks: Blanks) -> String {
    // What follows the last line break only indents the next node or `}`.
    let text = text.trim_end_matches(|c: char| c.is_whitespace() && c != '\n');
    reflow(text, indent, false, blanks).into_iter().map(|line| line + "\n").collect()
}

/// Re-indents comment text line by line. Lines that start a comment or a
/// slashdashed node go to `indent`; blank ones are kept as `blanks` says. Lines inside
/// a multi-line comment, string or `/-` block move by the same amount as the
/// line that opened it: that keeps their shape, and a multi-line string's
/// lines keep the common prefix the closing `"""` line demands. With
/// `inline_first`, the first line continues an existing line and is left in
/// place.
fn reflow(text: &str, indent: &str, inline_first: bool, blanks: Blanks) -> Vec<String> {
    let mut out = Vec::new();
    let mut scan = Scan::default();
    let (mut strip, mut pad) = (0, "");
    for (i, line) in text.lines().enumerate() {
        let body = line.trim_end();
        if i == 0 && inline_first {
            out.push(body.trim_start().to_owned());
            (strip, pad) = (0, "");
        } else if scan.is_open() {
            out.push(shift(body, strip, pad));
        } else {
            let content = body.trim_start();
            if content.is_empty() {
                let after_text = out.last().is_some_and(|l: &String| !l.is_empty());
                let keep = match blanks {
                    Blanks::None => false,
                    Blanks::Inner => after_text,
                    Blanks::All => after_text || out.is_empty(),
                };
                if keep {
                    out.push(String::new());
                }
                continue;
            }
            strip = body.chars().count() - content.chars().count();
            pad = indent;
            out.push(format!("{indent}{content}"));
        }
        scan.line(body);
    }
    out
}

/// `line` with up to `strip` leading whitespace characters replaced by `pad`.
fn shift(line: &str, strip: usize, pad: &str) -> String {
    let cut = line
        .char_indices()
        .take_while(|(_, c)| c.is_whitespace())
        .take(strip)
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    match line.get(cut..) {
        Some(rest) if !line.is_empty() => format!("{pad}{rest}"),
        _ => String::new(),
    }
}

/// Just enough of a KDL lexer to know whether a line of decor text starts
/// inside a block comment, a string or a slashdashed children block.
#[derive(Default)]
struct Scan {
    comments: usize,
    braces: usize,
    /// An open string's closing delimiter, and whether `\` escapes in it.
    string: Option<(String, bool)>,
    /// The line ended in a `\` continuation: the next one, even a blank one
    /// (which ends the continued node), must stay.
    escline: bool,
}

impl Scan {
    fn is_open(&self) -> bool {
        self.comments > 0 || self.braces > 0 || self.string.is_some() || self.escline
    }

    fn line(&mut self, line: &str) {
        let bytes = line.as_bytes();
        let mut i = 0;
        self.escline = false;
        while let Some(rest) = bytes.get(i..).filter(|r| !r.is_empty()) {
            i += if self.comments > 0 {
                let delta = match rest.get(..2) {
                    Some(b"*/") => -1,
                    Some(b"/*") => 1,
                    _ => 0,
                };
                self.comments = self.comments.saturating_add_signed(delta);
                if delta == 0 { 1 } else { 2 }
            } else if let Some((close, escapes)) = &self.string {
                if *escapes && rest.starts_with(b"\\") {
                    2
                } else if rest.starts_with(close.as_bytes()) {
                    let len = close.len();
                    self.string = None;
                    len
                } else {
                    1
                }
            } else if rest.starts_with(b"//") {
                return;
            } else if rest.starts_with(b"/*") {
                self.comments = 1;
                2
            } else {
                let first = rest.first().copied().unwrap_or_default();
                self.escline = first == b'\\' || (self.escline && first.is_ascii_whitespace());
                let hashes = rest.iter().take_while(|&&c| c == b'#').count();
                let quotes = rest.iter().skip(hashes).take(3).take_while(|&&c| c == b'"');
                let quotes = match quotes.count() {
                    0 => 0,
                    3 => 3,
                    _ => 1,
                };
                match rest.first() {
                    _ if quotes > 0 => {
                        let close = "\"".repeat(quotes) + &"#".repeat(hashes);
                        self.string = Some((close, hashes == 0));
                    }
                    Some(b'{') => self.braces += 1,
                    Some(b'}') => self.braces = self.braces.saturating_sub(1),
                    _ => {}
                }
                (hashes + quotes).max(1)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format_source;
    use kdl::KdlDocument;
    use proptest::prelude::*;

    const LAB: &str = r#"// A lab
cluster "lab" {
    ssh user="bai" identity="~/.ssh/id_ed25519"   // login
    probe interval="5s"   timeout="2s" failure-threshold=3
  node "gpu-01" address="10.0.0.11" {
        gpus 8 // declared
        labels rack="r1" /* the rack */ model="h100"
    }
    /- node "old" address="10.0.0.9"
    session "train-resnet" image="pytorch" node="gpu-01" {
        mount "datasets" alias="data" readonly=#true
        command "python" "train.py"
        // trailing comment in block
    }
}
"#;

    const LAB_FORMATTED: &str = r#"// A lab
cluster "lab" {
    ssh user="bai" identity="~/.ssh/id_ed25519" // login
    probe interval="5s" timeout="2s" failure-threshold=3
    node "gpu-01" address="10.0.0.11" {
        gpus 8 // declared
        labels rack="r1" /* the rack */ model="h100"
    }
    /- node "old" address="10.0.0.9"
    session "train-resnet" image="pytorch" node="gpu-01" {
        mount "datasets" alias="data" readonly=#true
        command "python" "train.py"
        // trailing comment in block
    }
}
"#;

    fn fmt(source: &str) -> String {
        format_source(source).expect("test input is valid KDL")
    }

    /// The document's data with all formatting (comments included) dropped.
    fn data(source: &str) -> KdlDocument {
        fn strip(doc: &mut KdlDocument) {
            doc.clear_format_recursive();
            for node in doc.nodes_mut() {
                // `clear_format_recursive` leaves a node's type annotation.
                if let Some(ty) = node.ty_mut() {
                    ty.clear_format();
                }
                if let Some(children) = node.children_mut() {
                    strip(children);
                }
            }
        }
        let mut doc: KdlDocument = source.parse().expect("output parses");
        strip(&mut doc);
        doc
    }

    #[test]
    fn lab_fixture_formats_canonically() {
        assert_eq!(fmt(LAB), LAB_FORMATTED);
    }

    #[test]
    fn lab_fixture_is_idempotent_and_keeps_data() {
        let once = fmt(LAB);
        assert_eq!(fmt(&once), once);
        assert_eq!(data(&once), data(LAB));
    }

    #[test]
    fn blank_lines_between_nodes_collapse_to_one() {
        let src = "a {\n\n  x\n\n\n  y // c\n\n  // about z\n  z\n\n}\n\n\nb\n";
        assert_eq!(fmt(src), "a {\n    x\n\n    y // c\n\n    // about z\n    z\n}\n\nb\n");
    }

    #[test]
    fn own_line_comments_are_reindented() {
        let src = "  // top\nx {\n// one\n        // two\n  y\n}\n";
        assert_eq!(fmt(src), "// top\nx {\n    // one\n    // two\n    y\n}\n");
    }

    #[test]
    fn end_of_line_comment_after_node() {
        assert_eq!(fmt("a 1   // note\nb\n"), "a 1 // note\nb\n");
        assert_eq!(fmt("a 1 // at eof"), "a 1 // at eof\n");
    }

    #[test]
    fn end_of_line_comment_after_children_block() {
        // kdl's parser records nothing after `}`; the text comes from the span.
        assert_eq!(fmt("a { b } // note\nc\n"), "a {\n    b\n} // note\nc\n");
        assert_eq!(fmt("a { b } /* one */ // two\n"), "a {\n    b\n} /* one */ // two\n");
    }

    #[test]
    fn comment_after_semicolon_stays_on_its_line() {
        assert_eq!(fmt("a 1; // note\nb\n"), "a 1 // note\nb\n");
        assert_eq!(fmt("x {\n  a; b; // note\n}\n"), "x {\n    a\n    b // note\n}\n");
    }

    #[test]
    fn inline_comments_between_entries() {
        assert_eq!(
            fmt("a   1 /* one */ 2 /* two */   k=3 /* three */\n"),
            "a 1 /* one */ 2 /* two */ k=3 /* three */\n"
        );
        assert_eq!(fmt("a /* first */ \"x\"\n"), "a /* first */ \"x\"\n");
    }

    #[test]
    fn comments_around_equals_and_type_annotations() {
        assert_eq!(fmt("a k /* x */ = /* y */ 1\n"), "a k /* x */ = /* y */ 1\n");
        assert_eq!(fmt("( /* t */ ty)a (/* u */ \"ty\")1\n"), "(/* t */ ty)a (/* u */ ty)1\n");
    }

    #[test]
    fn comments_inside_children_block() {
        let src = "a { // after brace\n  /* before b */ b\n    // own line\n  c 1 /* mid */ 2\n}\n";
        let want = "a { // after brace\n    /* before b */\n    b\n    // own line\n    c 1 /* mid */ 2\n}\n";
        assert_eq!(fmt(src), want);
        assert_eq!(fmt("a { // only\n}\n"), "a { // only\n}\n");
    }

    #[test]
    fn comment_at_end_of_block() {
        let src = "a {\n  b\n      // last\n  /* very last */\n}\n// end of file\n";
        let want = "a {\n    b\n    // last\n    /* very last */\n}\n// end of file\n";
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn slashdash_nodes_entries_and_children() {
        assert_eq!(fmt("a {\n  /- b 1\n  c\n  /- d\n}\n"), "a {\n    /- b 1\n    c\n    /- d\n}\n");
        assert_eq!(fmt("a /-1 2 /-k=3\n"), "a /-1 2 /-k=3\n");
        assert_eq!(fmt("a /-{ x } { y }\n"), "a /-{ x } {\n    y\n}\n");
        assert_eq!(fmt("a { y } /-{ x }\n"), "a {\n    y\n} /-{ x }\n");
    }

    #[test]
    fn multi_line_comments_keep_their_shape() {
        let src =
            "a {\n        /* one\n         * two */\n        /- b \"\"\"\n          text\n          \"\"\"\n  c\n}\n";
        let want = "a {\n    /* one\n     * two */\n    /- b \"\"\"\n      text\n      \"\"\"\n    c\n}\n";
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn slashdashed_strings_keep_their_shape() {
        // Re-indenting must keep each multi-line string's common prefix and
        // must not mistake quotes, `{` or `/*` inside strings for syntax.
        let src = r##"a {
        /- b """
              say "hi" and ""
           /* not a comment
           """
        /- c #"""
              raw \ "" no
            """#
        /- d "esc \" { " {
                e
            }
    f
}
"##;
        let want = r##"a {
    /- b """
          say "hi" and ""
       /* not a comment
       """
    /- c #"""
          raw \ "" no
        """#
    /- d "esc \" { " {
            e
        }
    f
}
"##;
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn line_continuation_comments_are_kept() {
        assert_eq!(fmt("a 1 \\ // why\n      2\n"), "a 1 \\ // why\n    2\n");
        assert_eq!(fmt("a 1 \\\n  2\n"), "a 1 2\n");
        assert_eq!(fmt("a { b } \\ // why\n"), "a {\n    b\n} \\ // why\n");
        // The blank line ends the slashdashed `node1`; dropping it would
        // make `node2` an argument of that commented-out node.
        let src = "/-\\\nnode1 \\ // why\n\nnode2\n";
        assert_eq!(fmt(src), src);
        assert_eq!(data(&fmt(src)), data(src));
    }

    #[test]
    fn empty_and_comment_only_documents() {
        assert_eq!(fmt(""), "");
        assert_eq!(fmt(" \n\n"), "");
        assert_eq!(fmt("\n// just this\n\n"), "// just this\n");
        assert_eq!(fmt("a {}\nb {\n}\n"), "a {}\nb {}\n");
    }

    #[test]
    fn strings_kdl_would_print_raw_are_escaped() {
        let src = "\"n\\u{2028}\" \"\\u{7f}\" k=\"\\u{85}\\n\"\n";
        let out = fmt(src);
        assert_eq!(out, "\"n\\u{2028}\" \"\\u{7f}\" k=\"\\u{85}\\n\"\n");
        assert_eq!(data(&out), data(src));
    }

    #[test]
    fn every_kdl_line_break_ends_a_comment() {
        // Found by the fuzz target (fuzz/corpus/pipeline/fmt-form-feed.kdl): the comment swallowed `}`.
        for br in ["\r\n", "\r", "\u{b}", "\u{c}", "\u{85}", "\u{2028}", "\u{2029}"] {
            let src = format!("\"\"{{t//{br}}}");
            assert_eq!(fmt(&src), "\"\" {\n    t //\n}\n", "{br:?}");
            let src = format!("a {{{br}  b // c{br}  d \"\"\"{br}  x{br}  \"\"\"{br}}}{br}");
            let out = fmt(&src);
            assert_eq!(fmt(&out), out, "{br:?}");
            assert_eq!(data(&out), data(&src), "{br:?}");
        }
    }

    #[test]
    fn unparsable_input_is_an_error() {
        assert!(format_source("a {").is_err());
        assert!(format_source("a \"unterminated").is_err());
        assert!(format_source("a /* open").is_err());
    }

    // Random documents: node and entry soup with comments in every position
    // the formatter handles. Each comment carries a unique tag `t<n>_`.
    const NAMES: [&str; 6] = ["node", "ssh", "probe", "gpus", "labels", "session"];
    const KEYS: [&str; 4] = ["user", "address", "readonly", "n"];
    const STRINGS: [&str; 6] = ["bai", "10.0.0.11", "two words", "", "a\"q", "h100"];

    #[derive(Debug, Clone)]
    enum Value {
        Str(usize),
        Int(i64),
        Bool(bool),
    }

    #[derive(Debug, Clone)]
    struct Entry {
        key: Option<usize>,
        value: Value,
        /// 0: plain, 1: `/* */` before, 2: slashdashed entry before,
        /// 3: `\ // comment` continuation before.
        deco: u8,
    }

    #[derive(Debug, Clone)]
    struct Node {
        name: usize,
        entries: Vec<Entry>,
        /// 0: nothing, 1: `// comment`, 2: multi-line `/* */`, 3: `/- node`,
        /// 4: a slashdashed node with a multi-line string.
        above: u8,
        /// 0: newline, 1: `// comment`, 2: `/* comment */`, 3: `; // comment`,
        /// 4: `\ // comment` continuation ended by a blank line.
        end: u8,
        indent: usize,
        /// Children with flags: `/* */` and `/-{ }` before `{`, a comment
        /// after `{`, one before `}`.
        children: Option<(Vec<Node>, [bool; 4])>,
    }

    struct Writer {
        out: String,
        tags: Vec<String>,
    }

    impl Writer {
        fn tag(&mut self) -> String {
            let tag = format!("t{}_", self.tags.len());
            self.tags.push(tag.clone());
            tag
        }

        fn node(&mut self, node: &Node, depth: usize) {
            let pad = " ".repeat(depth * 2 + node.indent);
            let above = match node.above {
                1 => format!("{pad}// {}\n", self.tag()),
                2 => format!("{pad}/* {}\n{pad}   more */\n", self.tag()),
                3 => format!("{pad}/- node \"{}\" 1\n", self.tag()),
                4 => format!("{pad}/- x \"\"\"\n{pad}  {}\n{pad}  \"\"\"\n", self.tag()),
                _ => String::new(),
            };
            self.out += &above;
            self.out += &format!("{pad}{}", NAMES[node.name]);
            for entry in &node.entries {
                let deco = match entry.deco {
                    1 => format!(" /* {} */ ", self.tag()),
                    2 => format!("  /-\"{}\" ", self.tag()),
                    3 => format!(" \\ // {}\n{pad}      ", self.tag()),
                    _ => " ".to_owned(),
                };
                self.out += &deco;
                if let Some(key) = entry.key {
                    self.out += &format!("{}=", KEYS[key]);
                }
                self.out += &match entry.value {
                    Value::Str(i) => format!("{:?}", STRINGS[i]),
                    Value::Int(n) => n.to_string(),
                    Value::Bool(b) => format!("#{b}"),
                };
            }
            if let Some((children, [before, slashdash, after, closing])) = &node.children {
                if *before {
                    let tag = self.tag();
                    self.out += &format!(" /* {tag} */");
                }
                if *slashdash {
                    let tag = self.tag();
                    self.out += &format!(" /-{{ {tag} }}");
                }
                self.out += " {";
                if *after {
                    let tag = self.tag();
                    self.out += &format!(" // {tag}");
                }
                self.out += "\n";
                for child in children {
                    self.node(child, depth + 1);
                }
                if *closing {
                    let tag = self.tag();
                    self.out += &format!("{pad}  // {tag}\n");
                }
                self.out += &format!("{pad}}}");
            }
            let end = match node.end {
                1 => format!("   // {}\n", self.tag()),
                2 => format!(" /* {} */\n", self.tag()),
                3 => format!("; // {}\n", self.tag()),
                4 => format!(" \\ // {}\n\n", self.tag()),
                _ => "\n".to_owned(),
            };
            self.out += &end;
        }
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let value = prop_oneof![
            (0..STRINGS.len()).prop_map(Value::Str),
            (-1000i64..1000).prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
        ];
        (proptest::option::of(0..KEYS.len()), value, 0..4u8).prop_map(|(key, value, deco)| Entry { key, value, deco })
    }

    fn leaf() -> impl Strategy<Value = Node> {
        (0..NAMES.len(), prop::collection::vec(entry(), 0..4), 0..5u8, 0..5u8, 0..3usize)
            .prop_map(|(name, entries, above, end, indent)| Node { name, entries, above, end, indent, children: None })
    }

    fn node() -> impl Strategy<Value = Node> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            (leaf(), prop::collection::vec(inner, 0..4), any::<[bool; 4]>()).prop_map(|(mut node, children, flags)| {
                node.children = Some((children, flags));
                node
            })
        })
    }

    proptest! {
        #[test]
        fn random_documents_keep_comments_and_data(
            nodes in prop::collection::vec(node(), 0..5),
            closing in any::<bool>(),
        ) {
            let mut w = Writer { out: String::new(), tags: Vec::new() };
            for node in &nodes {
                w.node(node, 0);
            }
            if closing {
                let tag = w.tag();
                w.out += &format!("  // {tag}");
            }
            let out = format_source(&w.out).expect("generated KDL is valid");
            prop_assert_eq!(&fmt(&out), &out, "not idempotent for:\n{}", w.out);
            prop_assert_eq!(data(&out), data(&w.out));
            prop_assert!(out.is_empty() || (out.ends_with('\n') && !out.ends_with("\n\n")));
            for line in out.lines() {
                prop_assert_eq!(line, line.trim_end(), "trailing whitespace in:\n{}", out);
            }
            for tag in &w.tags {
                prop_assert_eq!(out.matches(tag.as_str()).count(), 1, "{} lost in:\n{}", tag, out);
            }
        }
    }
}
