//! A lab on this machine's own node (`local=#true`: the agent a child process with a home of its own) for
//! the tests that apply on the real Docker engine without SSH: a unique cluster name, the lab file and
//! what it names in a temporary directory, every container of the cluster removed on drop. Its checks
//! report at the caller's line (`#[track_caller]`) with both output streams, and [`LocalLab::snapshot`]
//! compares a command's whole output with insta, what differs between runs filtered out.

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::{bai, stderr_of, stdout_of};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct LocalLab {
    pub dir: tempfile::TempDir,
    pub cluster: String,
}

impl LocalLab {
    /// An empty lab whose cluster name starts with `prefix`; fails loudly without a Docker engine.
    pub fn new(prefix: &str) -> Self {
        crate::support::images::require_docker();
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        LocalLab { dir, cluster }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("lab.kdl")
    }

    /// A file next to the lab.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_text(&self, text: &str) {
        std::fs::write(self.path(), text).expect("write lab");
    }

    /// `bai ARGS… LAB`, the local agent's home inside the lab's directory.
    pub fn run(&self, args: &[&str]) -> Output {
        bai().env("BAI_HOME", self.file("agent-home")).args(args).arg(self.path()).output().expect("bai runs")
    }

    /// [`run`](Self::run), which must exit `code`.
    #[track_caller]
    pub fn expect(&self, code: i32, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "bai {args:?}\n{}", text(&out));
        out
    }

    /// The container of `session`.
    pub fn container(&self, session: &str) -> String {
        format!("bai.{}.{session}", self.cluster)
    }

    /// Compares `output` whole with a snapshot ([`crate::support::snapshot`]).
    #[track_caller]
    pub fn snapshot(&self, name: &str, output: &str) {
        crate::support::snapshot(name, output, self.dir.path(), &self.cluster);
    }
}

impl Drop for LocalLab {
    fn drop(&mut self) {
        crate::support::images::remove_cluster_containers(&self.cluster);
    }
}

/// Both streams of a finished command, for failure messages.
pub fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout_of(out), stderr_of(out))
}
