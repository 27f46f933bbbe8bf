//! Comment text: found where kdl keeps it (or in the source, past a node's span), and written back
//! re-indented to where it now sits, line and block comments alike.

use super::*;

/// Ends the node's line with `comment` (a `// …` line comment).
pub(super) fn set_eol(node: &mut KdlNode, comment: &str) {
    if let Some(f) = node.format_mut() {
        if !f.before_terminator.ends_with([' ', '\n']) {
            f.before_terminator.push(' ');
        }
        f.terminator = format!("{comment}\n");
    }
}

/// The source text right after the node, where its terminator starts.
pub(super) fn after_span<'a>(node: &KdlNode, src: &'a str) -> &'a str {
    let span = node.span();
    src.get(span.offset() + span.len()..).unwrap_or("")
}

/// The `// …` comment at the start of `text`, without its line break.
pub(super) fn line_comment(text: &str) -> Option<&str> {
    text.starts_with("//").then(|| text.lines().next().map(str::trim_end)).flatten()
}

/// Splits a `// …` comment off the first line of `text`, returning it and
/// whatever follows that line.
pub(super) fn split_line_comment(text: &str) -> Option<(&str, &str)> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let first = first.trim();
    first.starts_with("//").then_some((first, rest))
}

/// What follows a children block's `}` on the node's line. kdl records a
/// `/-{ … }` block there but drops the comments, so the text is read from
/// the source: the `}` sits after the block's last node, that node's
/// terminator and the block's trailing text.
pub(super) fn after_children<'a>(node: &KdlNode, children: &KdlDocument, src: &'a str) -> Option<&'a str> {
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
pub(super) fn wrap(text: &str, cont: &str, open: &str, close: &str) -> Option<String> {
    let (body, breaks) = inline(text, cont)?;
    Some(if breaks { format!("{open}{body}\n{cont}") } else { format!("{open}{body}{close}") })
}

/// Tidies in-line decor, also saying whether it ended with a line break
/// (after a `\ // note` continuation), which must be kept.
pub(super) fn inline(text: &str, cont: &str) -> Option<(String, bool)> {
    if !text.contains('/') {
        return None;
    }
    let breaks = text.contains('\n') && text.rsplit('\n').next().is_some_and(|l| l.trim().is_empty());
    // The whitespace before the value is not part of the decor.
    Some((reflow(text.trim_end(), cont, true, Blanks::None).join("\n"), breaks))
}

/// Which blank lines of comment text survive; a run of them is always kept as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blanks {
    None,
    /// Between lines of text, not before the first (the start of a file or block).
    Inner,
    /// Also before the first line: the text follows a node the author separated it from.
    All,
}

/// Own-line comment text re-indented to `indent`, one `\n` per line.
pub(super) fn block(text: &str, indent: &str, blanks: Blanks) -> String {
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
pub(super) fn reflow(text: &str, indent: &str, inline_first: bool, blanks: Blanks) -> Vec<String> {
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
pub(super) fn shift(line: &str, strip: usize, pad: &str) -> String {
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
pub(super) struct Scan {
    pub(super) comments: usize,
    pub(super) braces: usize,
    /// An open string's closing delimiter, and whether `\` escapes in it.
    pub(super) string: Option<(String, bool)>,
    /// The line ended in a `\` continuation: the next one, even a blank one
    /// (which ends the continued node), must stay.
    pub(super) escline: bool,
}

impl Scan {
    pub(super) fn is_open(&self) -> bool {
        self.comments > 0 || self.braces > 0 || self.string.is_some() || self.escline
    }

    pub(super) fn line(&mut self, line: &str) {
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
