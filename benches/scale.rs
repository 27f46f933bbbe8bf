//! Scale benchmark for `bai`: how `validate` and `plan --offline` behave on labs of 100, 1,000 and
//! 10,000 nodes, compared with the cost of just parsing the same KDL.
//!
//! ```text
//! cargo bench --bench scale -- [S] [M] [L] [--runs N] [--keep]
//! ```
//!
//! Without a size, all three run; `--runs` defaults to 3 and the median of the runs is reported;
//! `--keep` leaves the generated labs on disk and prints where.
//!
//! # What is generated
//!
//! | size | nodes  | sessions | vfolders | single file |
//! |------|--------|----------|----------|-------------|
//! | S    | 100    | 500      | 200      | ~0.15 MB    |
//! | M    | 1,000  | 5,000    | 2,000    | ~1.5 MB     |
//! | L    | 10,000 | 50,000   | 20,000   | ~15 MB      |
//!
//! Every lab is valid under bai's rules and produces no warning: one cluster `lab` with `ssh` and
//! `probe` settings and four images (`pytorch` has `min-gpus 1`), every one of them used; nodes
//! `gpu-00001`… with an address, `gpus 8` and labels; per node a read-only `data-<node>` and a
//! read-write `ckpt-<node>` vfolder on that node, and five sessions on that node asking one GPU each
//! (5 ≤ 8), each with resources, an env var, both vfolders mounted (`data` read-only) and a command.
//!
//! Each size is written in two layouts: `single/lab.kdl`, and `split/cluster.kdl` holding the
//! cluster settings and images plus `include "part-*.kdl"`, with eight part files each holding an
//! eighth of the nodes, vfolders and sessions (children of the cluster, without a `cluster` wrapper).
//!
//! # What is measured
//!
//! Every measurement is a separate child process, so that its peak memory is its own: the bench
//! reaps the child with `wait4(2)`, takes `ru_maxrss` from it and the wall time (spawn to reap) from
//! an [`Instant`]. Stdout goes to `/dev/null`; stderr is kept and, when a child exits non-zero, its
//! first 2 KB are printed and the bench exits non-zero without reporting a number for that run.
//!
//! - `parse`: the floor. The bench re-executes itself with `BAI_BENCH_CHILD=parse` and the lab's
//!   files; in that mode it reads each file, calls [`kdl::KdlDocument::parse`], keeps the texts and
//!   documents alive (as any loader that reports spanned diagnostics must) and exits. The `kdl`
//!   crate parses only a few MB/s (1.5 to 2.5 MB/s on the 2-core development machine), so the parse
//!   of a large lab is most of what `bai` can cost: the targets below say how close to it to stay.
//!   For the split layout, all nine files are parsed one after the other in one process.
//! - `validate`: `bai validate FILE`, which must exit 0.
//! - `plan`: `bai plan --offline FILE`, which must exit 0.
//!
//! For the split layout, `FILE` is `cluster.kdl`.
//!
//! # Targets (marked PASS or MISS in the report; a MISS does not fail the bench)
//!
//! - plan time / parse time ≤ 1.2 on M and L: lowering, validation, the graph and the plan must be
//!   cheap next to the parse.
//! - plan peak memory / parse peak memory ≤ 1.3 on M and L: the typed model must not multiply the
//!   memory the KDL documents already take.
//! - single-file plan time / split plan time ≥ 1.6 on L: included files are parsed in parallel.
//!
//! # Caveat on peak memory
//!
//! Linux charges the high-water RSS of the memory image a process leaves at `exec` to the new
//! program, and `std::process::Command` spawns through `posix_spawn` (a vfork sharing the parent's
//! memory), so every child's `ru_maxrss` is at least the bench's own peak. The labs are therefore
//! generated in a child process (`BAI_BENCH_CHILD=gen`) and the bench itself stays at a few MiB,
//! which it prints next to the table.

use std::env;
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Environment variable selecting a child mode of this binary (`gen` or `parse`).
const CHILD_ENV: &str = "BAI_BENCH_CHILD";

/// The `bai` binary under test, built by cargo for this bench.
const BAI: &str = env!("CARGO_BIN_EXE_bai");

/// Sessions per node, each asking one GPU of the node's eight.
const SESSIONS_PER_NODE: usize = 5;

/// Number of part files in the split layout.
const PARTS: usize = 8;

/// How much of a failed child's stderr to print.
const STDERR_LIMIT: usize = 2048;

/// Images shared by all sessions: (name, ref, min-gpus).
const IMAGES: [(&str, &str, u32); 4] = [
    ("pytorch", "cr.backend.ai/stable/python-pytorch:2.3-py312-cuda12.4", 1),
    ("tensorflow", "cr.backend.ai/stable/python-tensorflow:2.15-py312-cuda12.3", 0),
    ("jax", "cr.backend.ai/stable/python-jax:0.4.30-py312-cuda12.4", 0),
    ("tools", "lab/tools:1", 0),
];

#[derive(Clone, Copy, PartialEq, Eq)]
struct Size {
    name: &'static str,
    nodes: usize,
}

impl Size {
    fn sessions(self) -> usize {
        self.nodes * SESSIONS_PER_NODE
    }

    /// Whether the time and memory targets apply to this size.
    fn targeted(self) -> bool {
        self.name != "S"
    }
}

const SIZES: [Size; 3] =
    [Size { name: "S", nodes: 100 }, Size { name: "M", nodes: 1_000 }, Size { name: "L", nodes: 10_000 }];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Single,
    Split,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Single => "single",
            Layout::Split => "split",
        }
    }
}

const MAX_PLAN_PARSE_TIME: f64 = 1.2;
const MAX_PLAN_PARSE_PEAK: f64 = 1.3;
const MIN_SINGLE_SPLIT_PLAN: f64 = 1.6;

fn main() -> ExitCode {
    let result = match env::var(CHILD_ENV) {
        Ok(mode) => child_main(&mode),
        Err(_) => bench_main(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("scale: {message}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child modes
// ---------------------------------------------------------------------------------------------

fn child_main(mode: &str) -> Result<(), String> {
    let args: Vec<String> = env::args().skip(1).collect();
    match mode {
        "gen" => {
            let [size, dir] = args.as_slice() else {
                return Err(format!("{CHILD_ENV}=gen expects SIZE DIR, got {args:?}"));
            };
            let size = SIZES
                .iter()
                .copied()
                .find(|s| s.name == size)
                .ok_or_else(|| format!("{CHILD_ENV}=gen: unknown size {size:?}"))?;
            generate(size, Path::new(dir))
        }
        "parse" => {
            if args.is_empty() {
                return Err(format!("{CHILD_ENV}=parse expects FILE..."));
            }
            parse_files(&args)
        }
        other => Err(format!("unknown {CHILD_ENV} mode {other:?}")),
    }
}

/// The parse floor: read and parse every file, keeping all texts and documents alive together.
fn parse_files(paths: &[String]) -> Result<(), String> {
    let mut loaded = Vec::with_capacity(paths.len());
    for path in paths {
        let text = fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let doc = kdl::KdlDocument::parse(&text).map_err(|e| describe_kdl_error(path, &text, &e))?;
        loaded.push((text, doc));
    }
    let nodes: usize = loaded.iter().map(|(_, doc)| doc.nodes().len()).sum();
    std::hint::black_box(&loaded);
    println!("parsed {} files, {nodes} top-level nodes", loaded.len());
    Ok(())
}

/// The parser's diagnostics as `path:line:column: message (label)`, at most ten of them.
fn describe_kdl_error(path: &str, text: &str, error: &kdl::KdlError) -> String {
    let mut out = format!("{path}: not a valid KDL v2 document");
    for diagnostic in error.diagnostics.iter().take(10) {
        let offset = diagnostic.span.offset().min(text.len());
        let before = &text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        let message = diagnostic.message.as_deref().unwrap_or("syntax error");
        out.push_str(&format!("\n  {path}:{line}:{column}: {message}"));
        if let Some(label) = &diagnostic.label {
            out.push_str(&format!(" ({label})"));
        }
    }
    if error.diagnostics.len() > 10 {
        out.push_str(&format!("\n  … and {} more", error.diagnostics.len() - 10));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------

/// Writes `DIR/single/lab.kdl` and `DIR/split/{cluster,part-1..8}.kdl` for `size`.
fn generate(size: Size, dir: &Path) -> Result<(), String> {
    let single_dir = dir.join(Layout::Single.name());
    let split_dir = dir.join(Layout::Split.name());
    for d in [&single_dir, &split_dir] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let fmt_err = |e: fmt::Error| format!("formatting the generated lab failed: {e}");

    // Single file.
    let mut out = String::with_capacity(estimate_bytes(size.nodes) + 4096);
    write_cluster_open(&mut out, size, Layout::Single).map_err(fmt_err)?;
    for node in 0..size.nodes {
        write_node_block(&mut out, node, "    ").map_err(fmt_err)?;
    }
    out.push_str("}\n");
    write_file(&single_dir.join("lab.kdl"), &out)?;

    // Split: cluster.kdl with the settings and an include, then eight parts.
    out.clear();
    write_cluster_open(&mut out, size, Layout::Split).map_err(fmt_err)?;
    out.push_str("\n    include \"part-*.kdl\"\n}\n");
    write_file(&split_dir.join("cluster.kdl"), &out)?;
    for part in 0..PARTS {
        let (first, end) = part_range(size.nodes, part);
        out.clear();
        writeln!(
            out,
            "// Part {} of {PARTS}: nodes {} to {}, included by cluster.kdl.",
            part + 1,
            node_name(first),
            node_name(end.saturating_sub(1)),
        )
        .map_err(fmt_err)?;
        for node in first..end {
            write_node_block(&mut out, node, "").map_err(fmt_err)?;
        }
        write_file(&split_dir.join(part_file(part)), &out)?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Nodes `[first, end)` of part `part` (0-based); parts differ in size by at most one node.
fn part_range(nodes: usize, part: usize) -> (usize, usize) {
    (part * nodes / PARTS, (part + 1) * nodes / PARTS)
}

fn part_file(part: usize) -> String {
    format!("part-{}.kdl", part + 1)
}

/// A generous estimate of the generated size, so the buffer never grows.
fn estimate_bytes(nodes: usize) -> usize {
    nodes * (420 + SESSIONS_PER_NODE * 320)
}

fn node_name(node: usize) -> String {
    format!("gpu-{:05}", node + 1)
}

/// `cluster "lab" {`, its settings and the images (the cluster stays open).
fn write_cluster_open(out: &mut String, size: Size, layout: Layout) -> fmt::Result {
    writeln!(
        out,
        "// Generated by benches/scale.rs: size {}, {} nodes, {} sessions, layout {}.",
        size.name,
        size.nodes,
        size.sessions(),
        layout.name(),
    )?;
    out.push_str(concat!(
        "cluster \"lab\" {\n",
        "    ssh user=\"bai\" identity=\"~/.ssh/id_ed25519\" known-hosts=\"~/.ssh/known_hosts\" ",
        "connect-timeout=\"10s\"\n",
        "    probe interval=\"5s\" timeout=\"2s\" failure-threshold=3 success-threshold=1\n",
        "\n",
    ));
    for (name, reference, min_gpus) in IMAGES {
        if min_gpus > 0 {
            writeln!(out, "    image \"{name}\" ref=\"{reference}\" {{\n        min-gpus {min_gpus}\n    }}")?;
        } else {
            writeln!(out, "    image \"{name}\" ref=\"{reference}\"")?;
        }
    }
    Ok(())
}

/// One node (0-based index `node`), its two vfolders and its sessions, each line prefixed by `ind`.
fn write_node_block(out: &mut String, node: usize, ind: &str) -> fmt::Result {
    let n = node + 1;
    // 10.a.b.c with c in 1..=250: no network or broadcast-looking addresses.
    let (a, b, c) = (node / 62_500 % 250, node / 250 % 250, node % 250 + 1);
    let rack = node / 32 + 1;
    writeln!(
        out,
        "\n{ind}node \"gpu-{n:05}\" address=\"10.{a}.{b}.{c}\" {{\n\
         {ind}    gpus 8\n\
         {ind}    labels rack=\"r{rack:04}\" model=\"h100\"\n\
         {ind}}}\n\
         {ind}vfolder \"data-gpu-{n:05}\" node=\"gpu-{n:05}\" permission=\"ro\" quota=\"2TiB\"\n\
         {ind}vfolder \"ckpt-gpu-{n:05}\" node=\"gpu-{n:05}\""
    )?;
    for k in 0..SESSIONS_PER_NODE {
        let session = node * SESSIONS_PER_NODE + k;
        let (image, _, min_gpus) = IMAGES[session % IMAGES.len()];
        let gpus = min_gpus.max(1);
        writeln!(
            out,
            "{ind}session \"sess-{s:06}\" image=\"{image}\" node=\"gpu-{n:05}\" {{\n\
             {ind}    resources cpus=4 memory=\"32GiB\" gpus={gpus}\n\
             {ind}    env KEY=\"v\"\n\
             {ind}    mount \"data-gpu-{n:05}\" alias=\"data\" readonly=#true\n\
             {ind}    mount \"ckpt-gpu-{n:05}\" alias=\"ckpt\"\n\
             {ind}    command \"python\" \"train.py\"\n\
             {ind}}}",
            s = session + 1,
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    peak_kib: u64,
}

/// Medians over the runs of one tool on one lab.
#[derive(Clone, Copy)]
struct Stat {
    secs: f64,
    peak_mib: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.is_empty() {
        f64::NAN
    } else if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn summarize(samples: &[Sample]) -> Stat {
    Stat {
        secs: median(samples.iter().map(|s| s.wall.as_secs_f64()).collect()),
        peak_mib: median(samples.iter().map(|s| s.peak_kib as f64 / 1024.0).collect()),
    }
}

/// Renders a command for the report and for error messages.
fn show(cmd: &Command) -> String {
    let mut text = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            text.push_str(&format!("{}={} ", key.to_string_lossy(), value.to_string_lossy()));
        }
    }
    text.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` once as a child with stdout to /dev/null and stderr to `stderr_path`; fails, with the
/// child's stderr, unless it exits 0.
fn measure(cmd: &mut Command, stderr_path: &Path) -> Result<Sample, String> {
    let stderr = File::create(stderr_path).map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("cannot start `{}`: {e}", show(cmd)))?;
    let (exit, peak_kib) = reap(child.id())?;
    let wall = start.elapsed();
    drop(child); // already reaped by `reap`; dropping a Child neither waits nor kills.
    if exit == Exit::Code(0) {
        return Ok(Sample { wall, peak_kib });
    }
    let (head, total) = read_head(stderr_path, STDERR_LIMIT);
    let mut message = format!("`{}` {exit}; its stderr", show(cmd));
    if total > head.len() {
        message.push_str(&format!(" (first {} of {total} bytes)", head.len()));
    }
    message.push_str(":\n");
    message.push_str(&String::from_utf8_lossy(&head));
    Err(message)
}

/// The first `limit` bytes of a file and its total length (empty when it cannot be read).
fn read_head(path: &Path, limit: usize) -> (Vec<u8>, usize) {
    let mut head = Vec::new();
    let Ok(file) = File::open(path) else {
        return (head, 0);
    };
    let total = file.metadata().map_or(0, |m| usize::try_from(m.len()).unwrap_or(usize::MAX));
    let _ = file.take(limit as u64).read_to_end(&mut head);
    (head, total)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Exit {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => write!(f, "was killed by signal {signal}"),
        }
    }
}

/// Waits for the child `pid` with `wait4(2)`: its exit and its peak resident set in KiB.
#[cfg(unix)]
fn reap(pid: u32) -> Result<(Exit, u64), String> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| format!("child pid {pid} out of range"))?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, exclusively borrowed locals for the whole call.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4 on child {pid} failed: {err}"));
        }
    }
    let exit = if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        return Err(format!("child {pid} ended with unexpected status {status:#x}"));
    };
    let maxrss = u64::try_from(usage.ru_maxrss).unwrap_or(0);
    // Linux reports KiB, macOS bytes.
    let peak_kib = if cfg!(target_os = "macos") { maxrss / 1024 } else { maxrss };
    Ok((exit, peak_kib))
}

#[cfg(not(unix))]
fn reap(_pid: u32) -> Result<(Exit, u64), String> {
    Err("this benchmark needs wait4(2), which only Unix systems have".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

struct Options {
    sizes: Vec<Size>,
    runs: usize,
    keep: bool,
}

const USAGE: &str = "usage: cargo bench --bench scale -- [S] [M] [L] [--runs N] [--keep]";

fn parse_args() -> Result<Options, String> {
    let mut wanted = Vec::new();
    let mut runs = 3;
    let mut keep = false;
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let runs_value = if arg == "--runs" {
            Some(args.next().ok_or("--runs needs a value")?)
        } else {
            arg.strip_prefix("--runs=").map(str::to_owned)
        };
        if let Some(value) = runs_value {
            runs = value
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| format!("--runs: expected a positive integer, got {value:?}"))?;
            continue;
        }
        match arg.as_str() {
            // cargo passes `--bench` to every bench target run by `cargo bench`.
            "--bench" => {}
            "--keep" => keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            name => {
                let size = SIZES
                    .iter()
                    .copied()
                    .find(|s| s.name.eq_ignore_ascii_case(name))
                    .ok_or_else(|| format!("unknown argument {name:?}\n{USAGE}"))?;
                wanted.push(size);
            }
        }
    }
    let sizes = SIZES.iter().copied().filter(|s| wanted.is_empty() || wanted.contains(s)).collect();
    Ok(Options { sizes, runs, keep })
}

/// Results for one size and layout.
struct Row {
    size: Size,
    layout: Layout,
    bytes: u64,
    parse: Stat,
    validate: Stat,
    plan: Stat,
}

fn bench_main() -> Result<(), String> {
    let options = parse_args()?;
    if !Path::new(BAI).is_file() {
        return Err(format!("the bai binary is missing at {BAI}"));
    }
    let exe = env::current_exe().map_err(|e| format!("cannot locate this benchmark: {e}"))?;
    let tmp = tempfile::Builder::new()
        .prefix("bai-scale-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let root = tmp.path().to_path_buf();
    let stderr_path = root.join("stderr.txt");

    let mut rows = Vec::new();
    for &size in &options.sizes {
        let dir = root.join(size.name);
        let started = Instant::now();
        let mut gen_cmd = Command::new(&exe);
        gen_cmd.env(CHILD_ENV, "gen").arg(size.name).arg(&dir);
        measure(&mut gen_cmd, &stderr_path)?;
        eprintln!(
            "[{}] generated {} nodes / {} sessions in {:.2} s",
            size.name,
            size.nodes,
            size.sessions(),
            started.elapsed().as_secs_f64()
        );
        for layout in [Layout::Single, Layout::Split] {
            let layout_dir = dir.join(layout.name());
            let files: Vec<PathBuf> = match layout {
                Layout::Single => vec![layout_dir.join("lab.kdl")],
                Layout::Split => std::iter::once(layout_dir.join("cluster.kdl"))
                    .chain((0..PARTS).map(|p| layout_dir.join(part_file(p))))
                    .collect(),
            };
            let mut bytes = 0;
            for file in &files {
                bytes += fs::metadata(file).map_err(|e| format!("cannot stat {}: {e}", file.display()))?.len();
            }
            let entry = &files[0];
            let mut parse_cmd = Command::new(&exe);
            parse_cmd.env(CHILD_ENV, "parse").args(&files);
            let mut validate_cmd = Command::new(BAI);
            validate_cmd.arg("validate").arg(entry);
            let mut plan_cmd = Command::new(BAI);
            plan_cmd.arg("plan").arg("--offline").arg(entry);

            let label = format!("{} {}", size.name, layout.name());
            let mut stats = Vec::new();
            for (tool, cmd) in [("parse", &mut parse_cmd), ("validate", &mut validate_cmd), ("plan", &mut plan_cmd)] {
                let mut samples = Vec::with_capacity(options.runs);
                for run in 1..=options.runs {
                    let sample =
                        measure(cmd, &stderr_path).map_err(|e| format!("[{label}] {tool} run {run} failed: {e}"))?;
                    eprintln!(
                        "[{label}] {tool} run {run}/{}: {:.3} s, peak {:.1} MiB",
                        options.runs,
                        sample.wall.as_secs_f64(),
                        sample.peak_kib as f64 / 1024.0
                    );
                    samples.push(sample);
                }
                stats.push(summarize(&samples));
            }
            rows.push(Row { size, layout, bytes, parse: stats[0], validate: stats[1], plan: stats[2] });
        }
    }

    print_report(&options, &rows, &exe);
    if options.keep {
        let kept = tmp.keep();
        println!("\nGenerated labs kept in {}", kept.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn verdict(value: f64, ok: bool, applies: bool) -> String {
    if !applies {
        format!("{value:.2}")
    } else if ok {
        format!("{value:.2} PASS")
    } else {
        format!("{value:.2} MISS")
    }
}

fn print_report(options: &Options, rows: &[Row], exe: &Path) {
    let args: Vec<String> = env::args().skip(1).filter(|a| a != "--bench").collect();
    println!("## bai scale benchmark\n");
    println!("- command: `cargo bench --bench scale -- {}`", args.join(" "));
    println!("- bench binary: `{}` (argv: `{}`)", exe.display(), env::args().collect::<Vec<_>>().join(" "));
    println!("- machine: {}", machine());
    println!("- bai: `{BAI}`, `bai --version`: {}", bai_version());
    println!("- runs: {} per measurement, median reported; peak = `ru_maxrss` of the child", options.runs);
    println!("- bench's own peak RSS (a floor under every child's peak, see the module doc): {}", own_peak());
    println!("- measured commands (FILE = `lab.kdl` single, `cluster.kdl` split):");
    println!("  - parse: `{CHILD_ENV}=parse {} FILE...`", exe.display());
    println!("  - validate: `{BAI} validate FILE`");
    println!("  - plan: `{BAI} plan --offline FILE`");
    println!();

    println!(
        "| size | layout | input MB | parse s | parse MB/s | parse peak MiB | validate s | \
         validate peak MiB | plan s | plan peak MiB | plan/parse time (≤ {MAX_PLAN_PARSE_TIME}) | \
         plan/parse peak (≤ {MAX_PLAN_PARSE_PEAK}) |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let mb = row.bytes as f64 / 1e6;
        let time_ratio = row.plan.secs / row.parse.secs;
        let peak_ratio = row.plan.peak_mib / row.parse.peak_mib;
        let applies = row.size.targeted();
        println!(
            "| {} ({} nodes / {} sessions) | {} | {:.2} | {:.3} | {:.2} | {:.1} | {:.3} | {:.1} | \
             {:.3} | {:.1} | {} | {} |",
            row.size.name,
            row.size.nodes,
            row.size.sessions(),
            row.layout.name(),
            mb,
            row.parse.secs,
            mb / row.parse.secs,
            row.parse.peak_mib,
            row.validate.secs,
            row.validate.peak_mib,
            row.plan.secs,
            row.plan.peak_mib,
            verdict(time_ratio, time_ratio <= MAX_PLAN_PARSE_TIME, applies),
            verdict(peak_ratio, peak_ratio <= MAX_PLAN_PARSE_PEAK, applies),
        );
    }

    println!();
    println!("| size | single plan s | split plan s | single/split plan time (≥ {MIN_SINGLE_SPLIT_PLAN} on L) |");
    println!("|---|--:|--:|--:|");
    for size in &options.sizes {
        let find = |layout| rows.iter().find(|r| r.size == *size && r.layout == layout);
        if let (Some(single), Some(split)) = (find(Layout::Single), find(Layout::Split)) {
            let ratio = single.plan.secs / split.plan.secs;
            println!(
                "| {} | {:.3} | {:.3} | {} |",
                size.name,
                single.plan.secs,
                split.plan.secs,
                verdict(ratio, ratio >= MIN_SINGLE_SPLIT_PLAN, size.name == "L")
            );
        }
    }
    println!("\nTargets apply to M and L (the split speed-up to L only); S is shown for reference.");
}

/// CPU model, `nproc`, memory and kernel, from /proc where available.
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, v)| v.trim())
        .to_owned();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or_else(|| "unknown memory".to_owned(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    let kernel =
        fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
    format!("{model}, nproc {nproc}, {memory}, Linux {kernel}")
}

/// The first line `bai --version` prints, or why there is none.
fn bai_version() -> String {
    match Command::new(BAI).arg("--version").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map_or_else(|| "(printed nothing)".to_owned(), |l| format!("`{}`", l.trim())),
        Ok(out) => format!("(failed: {})", out.status),
        Err(e) => format!("(cannot run: {e})"),
    }
}

/// This process's high-water RSS (VmHWM), or "unknown".
fn own_peak() -> String {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or_else(|| "unknown".to_owned(), |kib| format!("{:.1} MiB", kib / 1024.0))
}
