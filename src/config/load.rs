//! Reading a lab from disk: the top file, then its includes, parsed and lowered concurrently.
//!
//! This is the only part of the configuration pipeline that touches the file system. Files are read in
//! waves: a wave's files are parsed and lowered on all cores at once (the KDL parse dominates the cost of a
//! large lab, so spreading it is what makes split labs fast), each document is dropped by the thread that
//! built it, and the includes it names form the next wave. Every file is read once, however often it is
//! included; a file that includes one of its own includers is a cycle, reported at the include.
//!
//! What a file may hold and include is bounded, since a lab may come from a pull request: every file is
//! a regular file of at most [`MAX_FILE_SIZE`] ([`read_source`]), nests at most
//! [`MAX_DEPTH`](crate::config::parse::MAX_DEPTH) levels, and includes stay inside the lab's directory
//! tree and name only `*.kdl` files, found by a bounded walk ([`include`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kdl::KdlDocument;

use crate::config::lower::{Item, RawCluster, assemble, lower_fragment, lower_top};
use crate::config::parse::{parse_document, parse_problems};
use crate::config::reader::{Ctx, absolute_dir};
use crate::diagnostic::{Code, Problem};
use crate::model::{Config, ImageSource};
use crate::source::{FileId, Loc, SourceMap, Spanned};
use include::{Budget, Tree, expand};

mod include;

pub use include::{MAX_GLOB_ENTRIES, MAX_GLOB_MATCHES};

/// The largest file bai reads as a lab (the top file or an included one, and `bai fmt`'s files): 64 MiB,
/// several times the largest lab the `kdl` parser gets through in reasonable time and memory.
pub const MAX_FILE_SIZE: u64 = 64 << 20;

/// A lab as read from disk: its files, its model, and every problem found on the way.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sources: SourceMap,
    pub config: Config,
    pub problems: Vec<Problem>,
}

enum Parsed {
    Top(Vec<RawCluster>),
    Fragment(Vec<Item>),
}

struct Job {
    id: FileId,
    /// The path the lab knows the file by (relative paths inside it are relative to its directory).
    path: PathBuf,
    /// The path that is opened: for an included file, the one resolved and checked to be in the tree.
    read: PathBuf,
    name: String,
    /// The include that asked for this file; `None` for the top file.
    origin: Option<Loc>,
    /// The top file's directory, absolute and normalized: what specs record paths relative to.
    lab_root: Arc<Path>,
}

struct Finished {
    text: Arc<str>,
    parsed: Option<Parsed>,
    problems: Vec<Problem>,
}

/// How a lab is read, beyond its path.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Directories that `include` may reach into besides the lab file's own directory tree
    /// (`--include-root`).
    pub include_roots: Vec<PathBuf>,
}

/// Reads, parses and lowers the lab rooted at `path`.
pub fn load(path: &Path) -> Loaded {
    load_with(path, &LoadOptions::default())
}

/// [`load`], with options.
pub fn load_with(path: &Path, options: &LoadOptions) -> Loaded {
    let tree = Tree::new(path, &options.include_roots);
    let mut budget = Budget::default();
    let mut sources = SourceMap::default();
    let mut problems = Vec::new();
    let mut fragments: HashMap<FileId, Vec<Item>> = HashMap::new();
    let mut by_path: HashMap<PathBuf, FileId> = HashMap::new();
    // (file, include's byte offset) → the files it names, sorted.
    let mut resolved: HashMap<(FileId, usize), Vec<FileId>> = HashMap::new();
    let mut top: Vec<RawCluster> = Vec::new();

    let parent = path.parent().unwrap_or(Path::new(""));
    let lab_root: Arc<Path> = Arc::from(absolute_dir(parent));
    let mut wave = vec![Job {
        id: FileId(0),
        path: path.to_path_buf(),
        read: path.to_path_buf(),
        name: display_name(path),
        origin: None,
        lab_root: lab_root.clone(),
    }];
    by_path.insert(canonical(path), FileId(0));
    let mut next_id = 1u32;
    while !wave.is_empty() {
        let done = run_parallel(&wave, process);
        let mut next = Vec::new();
        for (job, finished) in wave.iter().zip(done) {
            let id = sources.add(job.name.clone(), job.path.clone(), finished.text);
            debug_assert_eq!(id, job.id);
            problems.extend(finished.problems);
            let includes: Vec<Spanned<String>> = match &finished.parsed {
                Some(Parsed::Top(clusters)) => clusters.iter().flat_map(|c| includes_of(&c.items)).collect(),
                Some(Parsed::Fragment(items)) => includes_of(items).collect(),
                None => Vec::new(),
            };
            let base = job.path.parent().map(Path::to_path_buf).unwrap_or_default();
            for include in includes {
                let mut targets = Vec::new();
                for target in expand(&base, &include, &tree, &mut budget, &mut problems) {
                    let target_id = *by_path.entry(target.read.clone()).or_insert_with(|| {
                        let id = FileId(next_id);
                        next_id += 1;
                        let name = display_name(&target.path);
                        next.push(Job {
                            id,
                            name,
                            path: target.path,
                            read: target.read,
                            origin: Some(include.loc),
                            lab_root: lab_root.clone(),
                        });
                        id
                    });
                    targets.push(target_id);
                }
                resolved.insert((job.id, include.loc.span.offset()), targets);
            }
            match finished.parsed {
                Some(Parsed::Top(clusters)) => top = clusters,
                Some(Parsed::Fragment(items)) => {
                    fragments.insert(job.id, items);
                }
                None => {}
            }
        }
        wave = next;
    }

    let shapes: HashMap<FileId, Vec<Piece>> = fragments.iter().map(|(id, items)| (*id, shape(items))).collect();
    let mut uses: HashMap<FileId, usize> = HashMap::new();
    let mut layouts = Vec::new();
    for (i, cluster) in top.iter().enumerate() {
        let mut layout = Layout {
            shapes: &shapes,
            resolved: &resolved,
            sources: &sources,
            problems: &mut problems,
            uses: &mut uses,
        };
        let mut order = Vec::new();
        layout.walk(FileId(0), Slot::Top(i), &shape(&cluster.items), &mut vec![(FileId(0), None)], &mut order);
        layouts.push(order);
    }
    let mut config = Config::default();
    for (cluster, order) in top.into_iter().zip(layouts) {
        let mut own = cluster.items;
        let items = order
            .into_iter()
            .filter_map(|(slot, index)| match slot {
                Slot::Top(_) => own.get_mut(index).map(|item| std::mem::replace(item, placeholder())),
                Slot::File(file) => {
                    let shared = uses.get(&file).is_some_and(|n| *n > 1);
                    let item = fragments.get_mut(&file)?.get_mut(index)?;
                    // A file spliced into one place gives its items up; one spliced into several is copied.
                    Some(if shared { item.clone() } else { std::mem::replace(item, placeholder()) })
                }
            })
            .collect();
        let mut assembled = assemble(cluster.name, cluster.loc, items, &mut problems);
        assembled.root = lab_root.to_path_buf();
        config.clusters.push(assembled);
    }
    check_paths(&config, &mut problems);
    Loaded { sources, config, problems }
}

fn placeholder() -> Item {
    Item::Include(Spanned::new(String::new(), Loc::nowhere()))
}

fn includes_of(items: &[Item]) -> impl Iterator<Item = Spanned<String>> + '_ {
    items.iter().filter_map(|i| match i {
        Item::Include(p) => Some(p.clone()),
        _ => None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Top(usize),
    File(FileId),
}

/// A file's items seen only as positions and includes, so that laying out a cluster moves nothing.
enum Piece {
    Item(usize),
    Include(Spanned<String>),
}

fn shape(items: &[Item]) -> Vec<Piece> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Item::Include(p) => Piece::Include(p.clone()),
            _ => Piece::Item(i),
        })
        .collect()
}

/// Lays out a cluster's items with each included file's items where it was included.
struct Layout<'a> {
    shapes: &'a HashMap<FileId, Vec<Piece>>,
    resolved: &'a HashMap<(FileId, usize), Vec<FileId>>,
    sources: &'a SourceMap,
    problems: &'a mut Vec<Problem>,
    uses: &'a mut HashMap<FileId, usize>,
}

impl Layout<'_> {
    /// `stack` holds the files being spliced, each with the include that brought it in.
    fn walk(
        &mut self,
        file: FileId,
        slot: Slot,
        pieces: &[Piece],
        stack: &mut Vec<(FileId, Option<Loc>)>,
        out: &mut Vec<(Slot, usize)>,
    ) {
        for piece in pieces {
            let pattern = match piece {
                Piece::Item(i) => {
                    out.push((slot, *i));
                    continue;
                }
                Piece::Include(pattern) => pattern,
            };
            let Some(targets) = self.resolved.get(&(file, pattern.loc.span.offset())) else { continue };
            for &target in targets {
                if let Some(start) = stack.iter().position(|(f, _)| *f == target) {
                    self.problems.push(self.cycle(&stack[start..], pattern));
                    continue;
                }
                let Some(target_pieces) = self.shapes.get(&target) else { continue };
                *self.uses.entry(target).or_default() += 1;
                stack.push((target, Some(pattern.loc)));
                self.walk(target, Slot::File(target), target_pieces, stack, out);
                stack.pop();
            }
        }
    }

    /// The error for an include that closes a cycle: the chain of files, every include in it labelled.
    fn cycle(&self, chain: &[(FileId, Option<Loc>)], closing: &Spanned<String>) -> Problem {
        let name = |f: FileId| self.sources.get(f).map_or("?", |s| s.name.as_str()).to_string();
        let mut names: Vec<String> = chain.iter().map(|(f, _)| format!("`{}`", name(*f))).collect();
        names.push(format!("`{}`", name(chain[0].0)));
        let mut p = Problem::error(Code::IncludeCycle, format!("include cycle: {}", names.join(" → ")))
            .primary(closing.loc, format!("includes `{}` again", name(chain[0].0)));
        for (file, include) in &chain[1..] {
            if let Some(loc) = include {
                p = p.label(*loc, format!("includes `{}`", name(*file)));
            }
        }
        p.help("a file may not include itself or any file that includes it")
    }
}

/// Reads, parses and lowers one file. Runs on a worker thread.
fn process(job: &Job) -> Finished {
    let mut problems = Vec::new();
    let text: Arc<str> = match read_source(&job.read) {
        Ok(text) => Arc::from(text),
        Err(e) => {
            let mut p = Problem::error(Code::IoRead, format!("cannot read `{}`: {e}", job.name)).help(e.help());
            if let Some(origin) = job.origin {
                p = p.primary(origin, "included here");
            }
            problems.push(p);
            return Finished { text: Arc::from(""), parsed: None, problems };
        }
    };
    let doc = match parse_document(&text) {
        Ok(doc) => doc,
        Err(e) => {
            problems.extend(parse_problems(job.id, &e));
            return Finished { text, parsed: None, problems };
        }
    };
    let base = job.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut ctx = Ctx::with_root(job.id, base, job.lab_root.to_path_buf());
    let parsed = if job.origin.is_none() {
        Parsed::Top(lower_top(&doc, &mut ctx))
    } else {
        Parsed::Fragment(lower_fragment(&doc, &mut ctx))
    };
    free_in_background(doc, text.len());
    problems.extend(ctx.problems);
    Finished { text, parsed: Some(parsed), problems }
}

/// Frees a large parse tree on its own thread. A KDL document takes about 65 bytes per input byte in
/// millions of small allocations, and freeing them costs a noticeable share of the parse itself; nothing
/// after lowering needs the tree, so validation and planning go on while another core frees it.
fn free_in_background(doc: KdlDocument, source_len: usize) {
    const LARGE: usize = 1 << 20;
    if source_len >= LARGE {
        // When no thread can be had, the closure (and the tree in it) is simply dropped here.
        let _ = std::thread::Builder::new().name("bai-free".into()).spawn(move || drop(doc));
    }
}

/// Why a file could not be read as a lab.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// Not a regular file: what it is instead (`FIFO`, `directory`, …).
    NotRegular(&'static str),
    /// Larger than [`MAX_FILE_SIZE`].
    TooLarge,
    NotUtf8,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular(kind) => write!(f, "it is a {kind}, not a regular file"),
            ReadError::TooLarge => write!(f, "it is larger than {} MiB", MAX_FILE_SIZE >> 20),
            ReadError::NotUtf8 => f.write_str("stream did not contain valid UTF-8"),
        }
    }
}

impl ReadError {
    pub fn help(&self) -> &'static str {
        match self {
            ReadError::Io(_) => "check that the file exists and is readable",
            ReadError::NotRegular(_) => "bai reads labs from regular files only",
            ReadError::TooLarge => "split the lab into several files joined with `include`",
            ReadError::NotUtf8 => "bai reads UTF-8: convert the file (e.g. `iconv -t UTF-8`)",
        }
    }
}

/// Reads a lab file: a regular file (through links) of at most [`MAX_FILE_SIZE`] bytes of UTF-8.
///
/// The file is opened without blocking, so a FIFO (which would wait for a writer) or a device opens at
/// once, and its type is checked on the open handle before anything is read; the read itself stops one
/// byte past the cap, so a file that grows while it is read cannot run on either.
pub fn read_source(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular(if kind.is_fifo() {
            "FIFO"
        } else if kind.is_dir() {
            "directory"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else {
            "special file"
        }));
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The name a path is shown under: relative to the working directory when it lies below it.
pub fn display_name(path: &Path) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        let absolute = if path.is_absolute() { path.to_path_buf() } else { cwd.join(path) };
        if let Ok(rel) = absolute.strip_prefix(&cwd) {
            return rel.display().to_string();
        }
    }
    path.display().to_string()
}

/// Build contexts and archives are read at apply time; a missing one is better caught now.
fn check_paths(config: &Config, problems: &mut Vec<Problem>) {
    for image in config.clusters.iter().flat_map(|c| &c.images) {
        match &image.source {
            ImageSource::Pull => {}
            ImageSource::Build { context, dockerfile } => {
                if !context.value.is_dir() {
                    problems.push(
                        Problem::error(
                            Code::MissingPath,
                            format!(
                                "build context `{}` of image `{}` is not a directory",
                                context.value.display(),
                                image.name.value
                            ),
                        )
                        .primary(context.loc, "no such directory")
                        .help("paths are relative to the file that declares the image"),
                    );
                } else {
                    let file = dockerfile.as_ref().map_or("Dockerfile", |d| d.value.as_str());
                    if !context.value.join(file).is_file() {
                        let at = dockerfile.as_ref().map_or(context.loc, |d| d.loc);
                        problems.push(
                            Problem::error(
                                Code::MissingPath,
                                format!("image `{}` has no `{file}` in its build context", image.name.value),
                            )
                            .primary(at, "missing Dockerfile")
                            .help("add the file, or name another with `dockerfile=\"…\"` (relative to the context)"),
                        );
                    }
                }
            }
            ImageSource::Archive { path } => {
                if !path.value.is_file() {
                    problems.push(
                        Problem::error(
                            Code::MissingPath,
                            format!(
                                "archive `{}` of image `{}` does not exist",
                                path.value.display(),
                                image.name.value
                            ),
                        )
                        .primary(path.loc, "no such file")
                        .help("create it with `docker save IMAGE -o FILE`; paths are relative to the declaring file"),
                    );
                }
            }
        }
    }
}

/// Runs `f` over `jobs` on up to one thread per core, keeping the results in job order.
fn run_parallel<T: Sync, R: Send>(jobs: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len());
    if threads <= 1 {
        return jobs.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let result = f(job);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    results.into_iter().filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).collect()
}
