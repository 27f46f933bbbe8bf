//! What an `include` may name: files of the lab's own directory tree, called `*.kdl`, found by a bounded
//! walk.
//!
//! A lab file is trusted, but a pull request that edits one is not, and CI posts `bai validate`'s output
//! where the pull request can read it. So an include never reaches outside the tree (the directory of the
//! lab file given on the command line, plus any `--include-root`), whatever the path says: `..`, an
//! absolute path, `/proc`, or a symbolic link inside the tree that points out of it (links are resolved
//! before the check). It never opens a file that is not called `*.kdl`, under its own name and under the
//! name a link resolves to, so `.git/config` cannot be included and echoed back as a syntax error. A glob
//! is walked by hand rather than by the `glob` crate, which follows links anywhere and cannot be bounded:
//! every directory it enters is resolved and checked, links that leave the tree are an error, and one lab's
//! globs look at no more than [`MAX_GLOB_ENTRIES`] directory entries and each matches no more than
//! [`MAX_GLOB_MATCHES`] files.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::config::load::display_name;
use crate::diagnostic::{Code, Problem};
use crate::source::Spanned;

/// The most files one `include` glob may match.
pub const MAX_GLOB_MATCHES: usize = 10_000;

/// The most directory entries the `include` globs of one lab may look at, all together.
pub const MAX_GLOB_ENTRIES: usize = 100_000;

/// The directories includes may reach into, resolved.
#[derive(Debug)]
pub struct Tree {
    roots: Vec<PathBuf>,
}

impl Tree {
    /// The tree of the lab file `top` (its directory), widened by `extra` directories.
    pub fn new(top: &Path, extra: &[PathBuf]) -> Self {
        let dir = top.parent().unwrap_or(Path::new(""));
        let roots = std::iter::once(dir).chain(extra.iter().map(PathBuf::as_path)).filter_map(resolve).collect();
        Tree { roots }
    }

    fn contains(&self, path: &Path) -> bool {
        self.roots.iter().any(|root| path.starts_with(root))
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self.roots.iter().map(|r| format!("`{}`", shown(r))).collect();
        match names.as_slice() {
            [] => "the lab file's directory".into(),
            [one] => format!("{one}, the lab file's directory"),
            [first, rest @ ..] => format!("{first} (the lab file's directory) and {}", rest.join(", ")),
        }
    }
}

/// A file an include names: the path it is known by (relative to the including file, as written) and the
/// resolved path that was checked and is read.
#[derive(Debug)]
pub struct Target {
    pub path: PathBuf,
    pub read: PathBuf,
}

/// How many directory entries the lab's globs may still look at.
#[derive(Debug)]
pub struct Budget(pub usize);

impl Default for Budget {
    fn default() -> Self {
        Budget(MAX_GLOB_ENTRIES)
    }
}

/// The files `include` names from a file in `base`: a literal path, or a glob's matches in sorted order.
pub fn expand(
    base: &Path,
    include: &Spanned<String>,
    tree: &Tree,
    budget: &mut Budget,
    problems: &mut Vec<Problem>,
) -> Vec<Target> {
    let written = include.value.as_str();
    let Some(base_real) = resolve(base) else { return Vec::new() };
    let result = if written.contains(['*', '?', '[']) {
        glob(base, &base_real, written, tree, budget)
    } else {
        literal(base, &base_real, written, tree).map(|t| vec![t])
    };
    match result {
        Ok(targets) if targets.is_empty() && written.contains(['*', '?', '[']) => {
            problems.push(
                Problem::warning(Code::IncludeNoMatch, format!("`include \"{written}\"` matches no file"))
                    .primary(include.loc, "matches nothing")
                    .help(format!(
                        "paths are relative to the including file's directory (`{}`); a glob matches only \
                         files named `*.kdl`",
                        shown(base)
                    )),
            );
            targets
        }
        Ok(targets) => targets,
        Err(refusal) => {
            problems.push(refusal.problem(include, base, tree));
            Vec::new()
        }
    }
}

/// Why an include names nothing.
enum Refusal {
    NotFound,
    InvalidPattern(String),
    /// Outside the tree: the path as written leaves it (`None`), or a link on the way does (`Some`).
    Outside(Option<PathBuf>),
    /// Not called `*.kdl`, as written (`None`) or where a link leads (`Some`).
    NotKdl(Option<PathBuf>),
    TooManyMatches,
    TooManyEntries,
}

impl Refusal {
    fn problem(self, include: &Spanned<String>, base: &Path, tree: &Tree) -> Problem {
        let written = include.value.as_str();
        let widen = "`--include-root DIR` lets includes reach DIR too";
        match self {
            Refusal::NotFound => {
                Problem::error(Code::IncludeNotFound, format!("included file `{written}` does not exist"))
                    .primary(include.loc, "no such file")
                    .help(format!("paths are relative to the including file's directory (`{}`)", shown(base)))
            }
            Refusal::InvalidPattern(msg) => {
                Problem::error(Code::IncludeInvalidPattern, format!("`{written}` is not a valid glob: {msg}"))
                    .primary(include.loc, "invalid pattern")
            }
            Refusal::Outside(link) => {
                let (message, label) = match link {
                    None => (
                        format!("`include \"{written}\"` reaches outside the lab's directory tree"),
                        "outside the tree".to_string(),
                    ),
                    Some(link) => (
                        format!("`include \"{written}\"` leads out of the lab's directory tree through a link"),
                        format!("`{}` is a link out of the tree", shown(&link)),
                    ),
                };
                Problem::error(Code::IncludeOutsideTree, message)
                    .primary(include.loc, label)
                    .help(format!("includes stay inside {}; {widen}", tree.describe()))
            }
            Refusal::NotKdl(link) => {
                let message = match &link {
                    None => format!("`include \"{written}\"` names a file that is not a lab (`*.kdl`)"),
                    Some(target) => format!(
                        "`include \"{written}\"` leads through a link to `{}`, which is not a lab (`*.kdl`)",
                        shown(target)
                    ),
                };
                Problem::error(Code::IncludeNotKdl, message)
                    .primary(include.loc, "not a `.kdl` file")
                    .help("bai includes only files named `*.kdl`, and never reads any other")
            }
            Refusal::TooManyMatches => Problem::error(
                Code::IncludeTooMany,
                format!("`include \"{written}\"` matches more than {MAX_GLOB_MATCHES} files"),
            )
            .primary(include.loc, "too many files")
            .help("split the lab's files over several directories and include each"),
            Refusal::TooManyEntries => Problem::error(
                Code::IncludeTooMany,
                format!(
                    "the lab's include globs look at more than {MAX_GLOB_ENTRIES} directory entries, this \
                     one among them"
                ),
            )
            .primary(include.loc, "the walk stopped here")
            .help("name the directories to include more narrowly (`nodes/*.kdl` rather than `**/*.kdl`)"),
        }
    }
}

fn literal(base: &Path, base_real: &Path, written: &str, tree: &Tree) -> Result<Target, Refusal> {
    let joined = normalize(&base_real.join(written));
    if !tree.contains(&joined) {
        return Err(Refusal::Outside(None));
    }
    if !is_kdl(Path::new(written)) {
        return Err(Refusal::NotKdl(None));
    }
    let real = resolve(&joined).ok_or(Refusal::NotFound)?;
    if !tree.contains(&real) {
        return Err(Refusal::Outside(Some(base.join(written))));
    }
    if !is_kdl(&real) {
        return Err(Refusal::NotKdl(Some(real)));
    }
    Ok(Target { path: base.join(written), read: real })
}

fn glob(
    base: &Path,
    base_real: &Path,
    written: &str,
    tree: &Tree,
    budget: &mut Budget,
) -> Result<Vec<Target>, Refusal> {
    glob::Pattern::new(written).map_err(|e| Refusal::InvalidPattern(e.msg.to_string()))?;
    let parts: Vec<Component<'_>> = Path::new(written).components().collect();
    let first_glob = parts.iter().position(|c| is_pattern(c.as_os_str())).unwrap_or(parts.len());
    let prefix: PathBuf = parts[..first_glob].iter().collect();
    // The fixed part of the pattern is checked before anything is listed: `/**/*.kdl` stops here.
    let start = normalize(&base_real.join(&prefix));
    if !tree.contains(&start) {
        return Err(Refusal::Outside(None));
    }
    let Some(start_real) = resolve(&start) else { return Ok(Vec::new()) };
    if !tree.contains(&start_real) {
        return Err(Refusal::Outside(Some(base.join(&prefix))));
    }
    let mut rest = Vec::new();
    for part in &parts[first_glob..] {
        let text = part.as_os_str().to_str().unwrap_or_default();
        rest.push(match text {
            "**" => Part::Any,
            _ if is_pattern(part.as_os_str()) => {
                Part::Pattern(glob::Pattern::new(text).map_err(|e| Refusal::InvalidPattern(e.msg.to_string()))?)
            }
            _ => Part::Literal(part.as_os_str().to_owned()),
        });
    }
    let mut walk = Walk { tree, budget, matches: Vec::new(), seen: HashSet::new() };
    walk.dir(&base.join(&prefix), &start_real, &rest)?;
    let mut matches = walk.matches;
    matches.sort_by(|a, b| a.path.cmp(&b.path));
    matches.dedup_by(|a, b| a.path == b.path);
    Ok(matches)
}

/// One component of a glob after its fixed prefix.
enum Part {
    /// `**`: this directory and every one below it.
    Any,
    Pattern(glob::Pattern),
    Literal(std::ffi::OsString),
}

struct Walk<'a> {
    tree: &'a Tree,
    budget: &'a mut Budget,
    matches: Vec<Target>,
    /// Directories already walked with a given number of components left, so that links cannot loop.
    seen: HashSet<(PathBuf, usize)>,
}

impl Walk<'_> {
    /// Matches `rest` in the directory known as `shown` (as the include names it), resolved to `real`.
    fn dir(&mut self, shown: &Path, real: &Path, rest: &[Part]) -> Result<(), Refusal> {
        let Some((part, after)) = rest.split_first() else { return Ok(()) };
        if !self.seen.insert((real.to_path_buf(), rest.len())) {
            return Ok(());
        }
        match part {
            Part::Literal(name) => {
                self.spend()?;
                self.entry(&shown.join(name), &real.join(name), after)
            }
            Part::Any => {
                // Zero directories deep, then each subdirectory with `**` still ahead.
                self.dir(shown, real, after)?;
                for (name, _) in self.list(real)? {
                    self.entry(&shown.join(&name), &real.join(&name), rest)?;
                }
                Ok(())
            }
            Part::Pattern(pattern) => {
                for (name, text) in self.list(real)? {
                    if pattern.matches_with(&text, glob::MatchOptions::new()) {
                        self.entry(&shown.join(&name), &real.join(&name), after)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// A directory's entries, each counted against the budget.
    fn list(&mut self, dir: &Path) -> Result<Vec<(std::ffi::OsString, String)>, Refusal> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            self.spend()?;
            let name = entry.file_name();
            let text = name.to_string_lossy().into_owned();
            out.push((name, text));
        }
        Ok(out)
    }

    fn spend(&mut self) -> Result<(), Refusal> {
        self.budget.0 = self.budget.0.checked_sub(1).ok_or(Refusal::TooManyEntries)?;
        Ok(())
    }

    /// An entry that matched a component: a file when no component is left, else a directory to enter.
    fn entry(&mut self, shown: &Path, path: &Path, rest: &[Part]) -> Result<(), Refusal> {
        let is_last = rest.is_empty();
        // Files not called `*.kdl` are passed over unopened; so is anything that does not resolve.
        if is_last && !is_kdl(shown) {
            return Ok(());
        }
        let Some(real) = resolve(path) else { return Ok(()) };
        if !self.tree.contains(&real) {
            return Err(Refusal::Outside(Some(shown.to_path_buf())));
        }
        let is_dir = real.is_dir();
        if !is_last {
            return if is_dir { self.dir(shown, &real, rest) } else { Ok(()) };
        }
        if is_dir {
            return Ok(());
        }
        if !is_kdl(&real) {
            return Err(Refusal::NotKdl(Some(real)));
        }
        self.matches.push(Target { path: shown.to_path_buf(), read: real });
        if self.matches.len() > MAX_GLOB_MATCHES {
            return Err(Refusal::TooManyMatches);
        }
        Ok(())
    }
}

fn is_pattern(part: &OsStr) -> bool {
    part.to_str().is_some_and(|s| s.contains(['*', '?', '[']))
}

fn is_kdl(path: &Path) -> bool {
    path.extension() == Some(OsStr::new("kdl"))
}

/// The path with every link resolved, or `None` when it does not exist. An empty path is the working
/// directory.
fn resolve(path: &Path) -> Option<PathBuf> {
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    std::fs::canonicalize(path).ok()
}

/// `.` and `..` taken away without looking at the file system (`..` of `/` is `/`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A directory as messages show it: relative to the working directory when below it, `.` for that.
fn shown(path: &Path) -> String {
    let name = display_name(path);
    if name.is_empty() { ".".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{FileId, Loc};

    fn include(text: &str) -> Spanned<String> {
        Spanned::new(text.to_string(), Loc::new(FileId(0), (0..0).into()))
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, "").expect("write");
    }

    /// The include's targets, relative to the tree, and the codes of its problems.
    fn run(root: &Path, text: &str, budget: usize) -> (Vec<String>, Vec<&'static str>) {
        let tree = Tree::new(&root.join("lab.kdl"), &[]);
        let mut problems = Vec::new();
        let targets = expand(root, &include(text), &tree, &mut Budget(budget), &mut problems);
        let names =
            targets.iter().map(|t| t.path.strip_prefix(root).unwrap_or(&t.path).display().to_string()).collect();
        (names, problems.iter().map(|p| p.code.as_str()).collect())
    }

    #[test]
    fn normalize_drops_dots_lexically() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
        assert_eq!(normalize(Path::new("/a/../../..")), PathBuf::from("/"));
    }

    #[test]
    fn globs_match_kdl_files_in_sorted_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for f in ["nodes/b.kdl", "nodes/a.kdl", "nodes/README.md", "nodes/sub/c.kdl", "nodes/sub/deeper/d.kdl"] {
            touch(&root.join(f));
        }
        assert_eq!(run(root, "nodes/*.kdl", 100).0, ["nodes/a.kdl", "nodes/b.kdl"]);
        assert_eq!(run(root, "nodes/*", 100).0, ["nodes/a.kdl", "nodes/b.kdl"]);
        assert_eq!(
            run(root, "nodes/**/*.kdl", 100).0,
            ["nodes/a.kdl", "nodes/b.kdl", "nodes/sub/c.kdl", "nodes/sub/deeper/d.kdl"]
        );
        assert_eq!(run(root, "*/sub/*.kdl", 100).0, ["nodes/sub/c.kdl"]);
        assert_eq!(run(root, "nodes/s?b/../a.kdl", 100).0, ["nodes/sub/../a.kdl"]);
        assert_eq!(run(root, "none/*.kdl", 100), (vec![], vec!["bai::include::no_match"]));
    }

    #[test]
    fn the_walk_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for i in 0..20 {
            touch(&root.join(format!("d{i}/x.kdl")));
        }
        assert_eq!(run(root, "**/*.kdl", 1_000).0.len(), 20);
        assert_eq!(run(root, "**/*.kdl", 30), (vec![], vec!["bai::include::too_many"]));
    }

    #[test]
    fn link_loops_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        touch(&root.join("a/x.kdl"));
        std::os::unix::fs::symlink("..", root.join("a/up")).expect("symlink");
        std::os::unix::fs::symlink(".", root.join("a/here")).expect("symlink");
        let (names, problems) = run(root, "**/*.kdl", 10_000);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(names.contains(&"a/x.kdl".to_string()), "{names:?}");
        assert!(names.len() <= 4, "{names:?}");
    }

    #[test]
    fn paths_out_of_the_tree_are_refused_before_they_are_looked_at() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("lab");
        std::fs::create_dir_all(&root).expect("mkdir");
        for text in ["../x.kdl", "/etc/x.kdl", "/**/*.kdl", "../*/*.kdl", "/proc/self/root/x.kdl"] {
            assert_eq!(run(&root, text, 0), (vec![], vec!["bai::include::outside_tree"]), "{text}");
        }
    }
}
