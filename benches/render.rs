//! How long `bai validate` takes to report many problems: the human report against the JSON one.
//!
//! ```text
//! cargo bench --bench render -- [N…] [--runs R]
//! ```
//!
//! For each N (default 1000 5000 20000), two labs of one cluster holding N unknown nodes (`bogus0 1`, …),
//! so N errors `bai::schema::unknown_node`, each with a label and a help: `lines` has one per line, the
//! way people write labs; `one-line` has all N on a single line, the way a minified or hostile file
//! would. Each is validated with `--format human` (stderr to /dev/null: it is still rendered) and `--format
//! json`; every figure is the median wall time of R runs (default 3) of the real binary. The report
//! should grow linearly with N: the last column is the time per error.

use std::env;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const BAI: &str = env!("CARGO_BIN_EXE_bai");

fn main() -> ExitCode {
    let mut sizes = Vec::new();
    let mut runs = 3usize;
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|r| r.parse().ok()).unwrap_or(runs),
            "--bench" => {}
            other => match other.parse() {
                Ok(n) => sizes.push(n),
                Err(_) => {
                    eprintln!("render: unknown argument {other:?}");
                    return ExitCode::FAILURE;
                }
            },
        }
    }
    if sizes.is_empty() {
        sizes = vec![1_000, 5_000, 20_000];
    }
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("render: no temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("| errors | layout | human s | json s | human µs per error |");
    println!("|--:|---|--:|--:|--:|");
    for &n in &sizes {
        for (layout, separator) in [("lines", "\n    "), ("one-line", " ")] {
            let path = dir.path().join(format!("{layout}-{n}.kdl"));
            let body: Vec<String> = (0..n).map(|i| format!("bogus{i} 1;")).collect();
            let text = format!("cluster \"c\" {{{separator}{}\n}}\n", body.join(separator));
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("render: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            let human = median(runs, || validate(&path, "human"));
            let json = median(runs, || validate(&path, "json"));
            match (human, json) {
                (Some(h), Some(j)) => println!(
                    "| {n} | {layout} | {:.3} | {:.3} | {:.1} |",
                    h.as_secs_f64(),
                    j.as_secs_f64(),
                    h.as_secs_f64() * 1e6 / n as f64
                ),
                _ => return ExitCode::FAILURE,
            }
        }
    }
    ExitCode::SUCCESS
}

/// One `bai validate` of `path`, which must report errors (exit 1); its wall time.
fn validate(path: &Path, format: &str) -> Option<Duration> {
    let start = Instant::now();
    let status = Command::new(BAI)
        .args(["validate", "--color", "never", "--format", format])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let took = start.elapsed();
    match status {
        Ok(s) if s.code() == Some(1) => Some(took),
        other => {
            eprintln!("render: `bai validate --format {format} {}` ended with {other:?}", path.display());
            None
        }
    }
}

fn median(runs: usize, mut f: impl FnMut() -> Option<Duration>) -> Option<Duration> {
    let mut times = (0..runs.max(1)).map(|_| f()).collect::<Option<Vec<_>>>()?;
    times.sort();
    Some(times[times.len() / 2])
}
