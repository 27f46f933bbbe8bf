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

mod comments;
#[cfg(test)]
mod tests;

use comments::*;
