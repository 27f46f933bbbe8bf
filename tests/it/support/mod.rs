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
    // No ssh_config of the machine's: a test that wants one names it (`--ssh-config` wins over this).
    cmd.current_dir(root()).env("NO_COLOR", "1").env("BAI_SSH_CONFIG", "none").env_remove("RUST_BACKTRACE");
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

pub mod browser;
#[path = "../../harness/dockerd.rs"]
pub mod dockerd;
pub mod enclave;
pub mod images;
pub mod lab;
pub mod load;
pub mod running;
#[path = "../../harness/sshd.rs"]
pub mod sshd;

pub use dockerd::GpuEngine;

/// Compares `output` whole with the snapshot `<calling test file>__<name>` in tests/it/snapshots, with
/// what differs between runs filtered out: the lab's directory, its cluster name, timings, the sshd
/// harness's ports and host keys.
#[track_caller]
pub fn snapshot(name: &str, output: &str, lab_dir: &Path, cluster: &str) {
    let caller = std::panic::Location::caller();
    let file = Path::new(caller.file()).file_stem().and_then(|s| s.to_str()).unwrap_or("it");
    let name = format!("{file}__{name}");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("tests/it/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(&regex_escape(&lab_dir.display().to_string()), "[LAB]");
    settings.add_filter(&regex_escape(cluster), "[CLUSTER]");
    settings.add_filter(r"\(\d+\.\ds\)", "([T]s)");
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.add_filter(r"-p \d+ 127\.0\.0\.1", "-p [PORT] 127.0.0.1");
    settings.add_filter(r"SHA256:[A-Za-z0-9+/]+", "SHA256:[FINGERPRINT]");
    settings.bind(|| insta::assert_snapshot!(name, output));
}

fn regex_escape(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}
