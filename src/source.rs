//! The text of every configuration file bai read, and the locations that point into it.
//!
//! Every value lowered from KDL keeps a [`Loc`] (file and byte span) so that any later phase can point a
//! diagnostic at what the user wrote. Line and column numbers are computed only when a diagnostic is
//! rendered, from a line index built on first use: a large lab pays nothing for them when it is valid.
//!
//! Rendering goes through the same index. miette's own [`SourceCode`] for text finds a label's lines by
//! scanning the text from its first byte, once per label, so reporting N problems in a file of N lines took
//! time in N² (20,000 errors: 24 s in a debug build). [`SourceFile`] hands miette only the few lines around
//! a label, found by binary search, and miette's answer is shifted back into the whole file: the same
//! contents, line and column as before, in time that does not grow with the file.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use miette::{MietteError, MietteSpanContents, NamedSource, SourceCode, SourceSpan, SpanContents};

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// Where something was written: a file and a byte span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Loc {
    pub file: FileId,
    pub span: SourceSpan,
}

impl Loc {
    pub fn new(file: FileId, span: SourceSpan) -> Self {
        Loc { file, span }
    }

    /// A location for things that have no text of their own (generated values, tests).
    pub fn nowhere() -> Self {
        Loc { file: FileId(u32::MAX), span: SourceSpan::from(0..0) }
    }

    /// Whether this marks a value the user did not write: a required value that was missing or
    /// invalid (already reported), kept so that one mistake does not cascade into others.
    pub fn is_nowhere(&self) -> bool {
        self.file == FileId(u32::MAX)
    }
}

/// A value together with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub loc: Loc,
}

impl<T> Spanned<T> {
    pub fn new(value: T, loc: Loc) -> Self {
        Spanned { value, loc }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// One file that was read.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user should see it (relative to the working directory when it can be).
    pub name: String,
    /// The path used to read it, absolute where it could be made so.
    pub path: PathBuf,
    pub named: NamedSource<Arc<str>>,
    lines: OnceLock<Vec<usize>>,
    /// Where each line starts as miette counts lines (after `\n`, `\r\n` and a lone `\r`).
    miette_lines: OnceLock<Vec<usize>>,
}

impl SourceFile {
    pub fn new(name: String, path: PathBuf, text: Arc<str>) -> Self {
        let named = NamedSource::new(&name, text);
        SourceFile { name, path, named, lines: OnceLock::new(), miette_lines: OnceLock::new() }
    }

    pub fn text(&self) -> &str {
        self.named.inner()
    }

    /// 1-based line and column (in characters) of a byte offset; offsets past the end clamp to it.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let text = self.text();
        let lines =
            self.lines.get_or_init(|| std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect());
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = lines.partition_point(|&start| start <= offset).saturating_sub(1);
        let column = text[lines[line]..offset].chars().count() + 1;
        (line + 1, column)
    }
}

/// A line longer than this (in bytes) is shown clipped around the label, without the lines beside it: a
/// minified lab, or one written to flood the report, would otherwise print the whole line once per label.
const LONG_LINE: usize = 512;
/// How much of a long line is shown on either side of a label, in bytes.
const CLIP: usize = 80;

impl SourceFile {
    /// A label on a long line: a window of that line around it, from `clip` bytes before it (so that, as
    /// with miette's own reading, a read without context starts at the label and gives its column).
    fn clipped(
        &self,
        span: &SourceSpan,
        clip: usize,
        line: usize,
        line_start: usize,
        line_end: usize,
    ) -> MietteSpanContents<'_> {
        let text = self.text();
        let mut from = span.offset().saturating_sub(clip).max(line_start);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let content_end = line_start + text[line_start..line_end].trim_end_matches(['\n', '\r']).len();
        let mut to = (span.offset() + span.len() + CLIP).min(content_end).max(span.offset() + span.len());
        while !text.is_char_boundary(to) {
            to += 1;
        }
        MietteSpanContents::new_named(
            self.name.clone(),
            &text.as_bytes()[from..to],
            SourceSpan::new(from.into(), to - from),
            line,
            from - line_start,
            line,
        )
    }
}

impl SourceCode for SourceFile {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let text = self.text().as_bytes();
        if span.offset() > text.len() {
            // miette's own reading panics on an empty span one byte past the end: refuse what lies beyond.
            return Err(MietteError::OutOfBounds);
        }
        let starts = self.miette_lines.get_or_init(|| {
            let mut starts = vec![0];
            for (i, &b) in text.iter().enumerate() {
                if b == b'\n' || (b == b'\r' && text.get(i + 1) != Some(&b'\n')) {
                    starts.push(i + 1);
                }
            }
            starts
        });
        let line_of = |offset: usize| starts.partition_point(|&start| start <= offset).saturating_sub(1);
        let line = line_of(span.offset());
        let (line_start, line_end) = (starts[line], starts.get(line + 1).copied().unwrap_or(text.len()));
        if line_end - line_start > LONG_LINE && span.offset() + span.len() <= line_end {
            let clip = if context_lines_before == 0 { 0 } else { CLIP };
            return Ok(Box::new(self.clipped(span, clip, line, line_start, line_end)));
        }
        // Context lines stop short of a long line: each label would otherwise print it whole. (A line past
        // the end is short: there is nothing to print.)
        let is_short = |l: usize| match (starts.get(l), starts.get(l + 1)) {
            (Some(&start), end) => end.copied().unwrap_or(text.len()) - start <= LONG_LINE,
            (None, _) => true,
        };
        let end_line = line_of(span.offset() + span.len());
        let before = (1..=context_lines_before.min(line)).take_while(|&n| is_short(line - n)).count();
        let after = (1..=context_lines_after).take_while(|&n| is_short(end_line + n)).count();
        // With its whole context, one line more before (where there is a short one): miette then starts
        // counting at a line start before the context, exactly as it would in the whole text; after the
        // context it stops by itself, and two lines of margin let it stop inside the excerpt. With less
        // context, the excerpt ends where the context does and miette is asked for at least one line, so
        // that it shows whole lines rather than starting or ending at the label.
        let (first, before) = if before < context_lines_before {
            (line - before, before.max(1))
        } else if line > before && is_short(line - before - 1) {
            (line - before - 1, before)
        } else {
            (line - before, before)
        };
        let last = if after < context_lines_after { end_line + after + 1 } else { end_line + after + 3 };
        let from = starts[first];
        let to = starts.get(last).copied().unwrap_or(text.len());
        let local = SourceSpan::new((span.offset() - from).into(), span.len());
        let inner = text[from..to].read_span(&local, before, context_lines_after)?;
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            SourceSpan::new((inner.span().offset() + from).into(), inner.span().len()),
            inner.line() + first,
            inner.column(),
            inner.line_count() + first,
        )))
    }
}

/// Every file read for one command, addressed by [`FileId`].
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, name: String, path: PathBuf, text: Arc<str>) -> FileId {
        self.files.push(SourceFile::new(name, path, text));
        FileId((self.files.len() - 1) as u32)
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn line_and_column_count_characters() {
        let f = SourceFile::new("a".into(), "a".into(), Arc::from("ab\nçé x\n"));
        assert_eq!(f.line_column(0), (1, 1));
        assert_eq!(f.line_column(3), (2, 1));
        // `x` sits after two 2-byte characters and a space.
        assert_eq!(f.line_column(8), (2, 4));
        assert_eq!(f.line_column(1000), (3, 1));
        // Inside a multi-byte character: clamp back to its start.
        assert_eq!(f.line_column(4), (2, 1));
    }

    /// What miette reads for a span, as comparable data.
    fn contents(source: &dyn SourceCode, span: SourceSpan, before: usize, after: usize) -> Option<String> {
        let c = source.read_span(&span, before, after).ok()?;
        Some(format!(
            "{:?} {:?} line={} column={} count={} name={:?}",
            String::from_utf8_lossy(c.data()),
            c.span(),
            c.line(),
            c.column(),
            c.line_count(),
            c.name()
        ))
    }

    #[test]
    fn a_long_line_is_clipped_around_the_label() {
        let long = format!("{}é target {}\n", "x".repeat(2_000), "y".repeat(2_000));
        let text = format!("first\n{long}last\n");
        let file = SourceFile::new("f.kdl".into(), "f.kdl".into(), Arc::from(text.as_str()));
        let at = text.find("target").expect("there");
        let span = SourceSpan::new(at.into(), 6);
        let c = file.read_span(&span, 1, 1).expect("reads");
        let data = std::str::from_utf8(c.data()).expect("cut at character boundaries");
        assert!(data.contains("é target ") && !data.contains('\n'), "{data}");
        assert!(data.len() <= 2 * CLIP + 6 + 1, "{}", data.len());
        assert_eq!((c.line(), c.span().offset() + c.data().len() > at + 6), (1, true));
        // Without context, the read starts at the label and gives its line and byte column, as miette does.
        let c = file.read_span(&span, 0, 0).expect("reads");
        assert_eq!((c.line(), c.column(), c.span().offset()), (1, at - 6, at));
    }

    #[test]
    fn long_lines_beside_a_label_are_left_out_of_its_context() {
        let long = "x".repeat(LONG_LINE + 1);
        let text = format!("{long}\nshort one\n{long}\nend\n");
        let file = SourceFile::new("f.kdl".into(), "f.kdl".into(), Arc::from(text.as_str()));
        let at = text.find("one").expect("there");
        let c = file.read_span(&SourceSpan::new(at.into(), 3), 1, 1).expect("reads");
        assert_eq!(std::str::from_utf8(c.data()).expect("utf-8"), "short one\n");
        assert_eq!((c.line(), c.span().offset()), (1, LONG_LINE + 2));
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// The excerpt is what miette reads from the whole text, for any span and context, whatever the
        /// line breaks.
        #[test]
        fn excerpts_read_as_the_whole_text_does(
            pieces in prop::collection::vec(prop_oneof![
                Just("a"), Just("bc"), Just("\n"), Just("\r\n"), Just("\r"), Just("é"), Just("  "), Just("{}"),
            ], 0..60),
            offset in 0usize..200,
            len in 0usize..40,
            before in 0usize..4,
            after in 0usize..4,
        ) {
            let text: String = pieces.concat();
            let file = SourceFile::new("f.kdl".into(), "f.kdl".into(), Arc::from(text.as_str()));
            let span = SourceSpan::new(offset.min(text.len() + 2).into(), len);
            if span.offset() > text.len() {
                prop_assert_eq!(contents(&file, span, before, after), None);
                return Ok(());
            }
            prop_assert_eq!(
                contents(&file, span, before, after),
                contents(&file.named, span, before, after),
                "text {:?} span {:?} context {}/{}", text, span, before, after
            );
        }

        /// Around long lines the excerpt differs by design; it never panics and always holds the label.
        #[test]
        fn excerpts_around_long_lines_hold_the_label(
            pieces in prop::collection::vec(prop_oneof![
                Just("a"), Just("\n"), Just("\r\n"), Just("é"), Just("LONG"),
            ], 0..40),
            offset in 0usize..3000,
            len in 0usize..40,
            before in 0usize..4,
            after in 0usize..4,
        ) {
            let long = "x".repeat(LONG_LINE + 3);
            let text: String = pieces.iter().map(|p| if *p == "LONG" { long.as_str() } else { p }).collect();
            let file = SourceFile::new("f.kdl".into(), "f.kdl".into(), Arc::from(text.as_str()));
            let offset = offset.min(text.len());
            let span = SourceSpan::new(offset.into(), len.min(text.len() - offset));
            if let Ok(c) = file.read_span(&span, before, after) {
                let start = c.span().offset();
                prop_assert!(start <= span.offset() && span.offset() + span.len() <= start + c.data().len());
            }
        }
    }
}
