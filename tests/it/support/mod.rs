//! Shared helpers: the real binary, fixture paths, and the pipeline run in-process.

use std::path::{Path, PathBuf};

use bai::diagnostic::{Problem, plain_handler, render_graphical, sort_problems};
use bai::source::SourceMap;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real `bai` binary, run from the repository root without colour.
pub fn bai() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("bai").expect("the bai binary is built for tests");
    cmd.current_dir(root()).env("NO_COLOR", "1").env_remove("RUST_BACKTRACE");
    cmd
}

/// Output of a finished command as text.
pub fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Loads and validates a lab in-process, problems sorted as the CLI prints them.
pub fn check(path: &Path) -> (Vec<Problem>, SourceMap, bai::model::Config) {
    let mut loaded = bai::config::load(path);
    let mut problems = std::mem::take(&mut loaded.problems);
    problems.extend(bai::validate::validate(&loaded.config));
    sort_problems(&mut problems);
    (problems, loaded.sources, loaded.config)
}

/// The report a person sees, in the fixed no-colour theme at width 100.
pub fn render(problems: &[Problem], sources: &SourceMap) -> String {
    render_graphical(problems, sources, &plain_handler(100))
}

/// A path relative to the repository root, as the CLI shows it when run from there.
pub fn rel(path: &Path) -> PathBuf {
    path.strip_prefix(root()).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}

/// Parses JSON printed by bai.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bai printed invalid JSON ({e}):\n{text}"))
}

pub mod images;
pub mod load;
#[path = "../../harness/sshd.rs"]
pub mod sshd;
pub mod sshlab;
