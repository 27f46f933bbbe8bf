//! The text of every configuration file bai read, and the locations that point into it.
//!
//! Every value lowered from KDL keeps a [`Loc`] (file and byte span) so that any later phase can point a
//! diagnostic at what the user wrote. Line and column numbers are computed only when a diagnostic is
//! rendered, from a line index built on first use: a large lab pays nothing for them when it is valid.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use miette::{NamedSource, SourceSpan};

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
}

impl SourceFile {
    pub fn new(name: String, path: PathBuf, text: Arc<str>) -> Self {
        let named = NamedSource::new(&name, text);
        SourceFile { name, path, named, lines: OnceLock::new() }
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
}
