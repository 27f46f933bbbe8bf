//! `bai fmt FILE…`: rewrite files in canonical form (comments kept); `--check` only reports.

use std::path::Path;
use std::sync::Arc;

use bai::diagnostic::Problem;
use bai::source::{FileId, SourceMap};

use crate::cli::FmtArgs;
use crate::commands::{Outcome, Printer};
use bai::failure::Failure;
use bai::reconcile::Reporter;

pub fn run(args: &FmtArgs, printer: &Printer) -> Outcome {
    let mut failed = false;
    let mut unformatted = Vec::new();
    for path in &args.files {
        let name = bai::config::display_name(path);
        let text = match bai::config::load::read_source(path) {
            Ok(t) => t,
            Err(e) => {
                printer.fail(Failure::error("bai::fmt::read", format!("cannot read `{name}`: {e}")));
                failed = true;
                continue;
            }
        };
        let formatted = match bai::fmt::format_source(&text) {
            Ok(f) => f,
            Err(e) => {
                // An unparsable file is left exactly as it was.
                let mut sources = SourceMap::default();
                let id: FileId = sources.add(name.clone(), path.to_path_buf(), Arc::from(text.as_str()));
                let problems: Vec<Problem> = bai::config::parse::parse_problems(id, &e);
                printer.diagnostics(&problems, &sources);
                eprintln!("{name}: not formatted (it does not parse)");
                failed = true;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if args.check {
            unformatted.push(name);
            continue;
        }
        if let Err(e) = write_atomically(path, &formatted) {
            printer.fail(Failure::error("bai::fmt::write", format!("cannot write `{name}`: {e}")));
            failed = true;
        } else {
            eprintln!("formatted {name}");
        }
    }
    if !unformatted.is_empty() {
        for name in &unformatted {
            printer.stdout(&format!("{name}\n"));
        }
        eprintln!("{} file(s) would be reformatted; run `bai fmt` on them", unformatted.len());
        failed = true;
    }
    if failed { Outcome::Failed } else { Outcome::Ok }
}

/// Replaces the file in one rename, so an interrupted `fmt` never leaves half a file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.bai-fmt.tmp"));
    std::fs::write(&tmp, text)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path)
}
