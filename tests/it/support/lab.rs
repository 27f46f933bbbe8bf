//! The one lab builder of the integration tests: a lab file and what it names in a temporary directory,
//! a cluster name unique per test run, on nodes of one of two kinds: real OpenSSH servers on 127.0.0.1
//! ([`SshLab`]: a busybox image built from a local context, and per node one vfolder and one session whose
//! env carries a version string, so that a test changes one node's session by changing its version), or
//! this machine's own node ([`LocalLab`]: `local=#true`, the agent a child process with a home of its own
//! in the lab's directory). Checks report at the caller's line (`#[track_caller]`) with both output
//! streams; [`Lab::snapshot`] compares a command's whole output with insta, what differs between runs
//! filtered out. Dropping a lab removes every container of its cluster, so a failed test leaves nothing
//! running.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::sshd::Sshd;
use crate::support::{bai, json, stderr_of, stdout_of};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A lab on nodes `N`; its fields (`sshd`, `known_hosts`) read through to the nodes.
pub struct Lab<N> {
    pub dir: tempfile::TempDir,
    pub cluster: String,
    pub nodes: N,
}

/// N real OpenSSH servers.
pub struct SshNodes {
    pub sshd: Sshd,
    /// The `known-hosts` file the lab names: the servers' own, until a test swaps it.
    pub known_hosts: PathBuf,
}

/// This machine's own node.
pub struct LocalNode;

pub type SshLab = Lab<SshNodes>;
pub type LocalLab = Lab<LocalNode>;

impl<N> std::ops::Deref for Lab<N> {
    type Target = N;
    fn deref(&self) -> &N {
        &self.nodes
    }
}

impl<N> std::ops::DerefMut for Lab<N> {
    fn deref_mut(&mut self) -> &mut N {
        &mut self.nodes
    }
}

impl<N> Lab<N> {
    /// A lab on `nodes` of any kind; the cluster name starts with `prefix`.
    pub fn with(prefix: &str, nodes: N) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        Lab { dir, cluster, nodes }
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

    /// `bai ARGS… LAB`; a local node's agent has its home inside the lab's directory.
    pub fn run(&self, args: &[&str]) -> Output {
        bai().env("BAI_HOME", self.file("agent-home")).args(args).arg(self.path()).output().expect("bai runs")
    }

    /// `bai ARGS…` exactly as given.
    pub fn bai(&self, args: &[&str]) -> Output {
        bai().args(args).output().expect("bai runs")
    }

    /// [`run`](Self::run), which must exit `code`.
    #[track_caller]
    pub fn expect(&self, code: i32, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "bai {args:?}\n{}", text(&out));
        out
    }

    /// The container of `session`.
    pub fn container_name(&self, session: &str) -> String {
        format!("bai.{}.{session}", self.cluster)
    }

    /// Compares `output` whole with a snapshot ([`crate::support::snapshot`]).
    #[track_caller]
    pub fn snapshot(&self, name: &str, output: &str) {
        crate::support::snapshot(name, output, self.dir.path(), &self.cluster);
    }
}

impl<N> Drop for Lab<N> {
    fn drop(&mut self) {
        crate::support::images::remove_cluster_containers(&self.cluster);
    }
}

impl LocalLab {
    /// An empty lab on this machine's node; fails loudly without a Docker engine.
    pub fn new(prefix: &str) -> Self {
        crate::support::images::require_docker();
        Lab::with(prefix, LocalNode)
    }
}

impl SshLab {
    /// `nodes` servers; the cluster name starts with `prefix` and is unique per test run.
    pub fn new(prefix: &str, nodes: usize) -> Self {
        let sshd = Sshd::start(nodes);
        let known_hosts = sshd.known_hosts_path().to_path_buf();
        let lab = Lab::with(prefix, SshNodes { sshd, known_hosts });
        crate::support::images::write_context(&lab.file("img"), crate::support::images::BOX_DOCKERFILE);
        lab
    }

    /// Writes the lab: node i's session `job-i` has `env VERSION=versions[i]`.
    pub fn write(&self, versions: &[&str]) {
        self.write_with(versions, "");
    }

    /// [`write`](Self::write) with `extra` (whole lines) inside the cluster, after its header.
    pub fn write_with(&self, versions: &[&str], extra: &str) {
        let mut text = self.header() + extra;
        for (i, version) in versions.iter().enumerate() {
            text.push_str(&self.node(i));
            text.push_str(&format!(
                "    vfolder \"data-{i}\" node=\"node{i}\"\n    session \"job-{i}\" image=\"box\" node=\"node{i}\" {{\n        env VERSION=\"{version}\"\n        mount \"data-{i}\" alias=\"data\"\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }}\n"
            ));
        }
        self.write_text(&(text + "}\n"));
    }

    /// The cluster's opening: SSH settings and the `box` image; close it with `}`.
    pub fn header(&self) -> String {
        format!(
            "cluster \"{}\" {{\n    ssh user=\"bai-test\" identity=\"{}\" known-hosts=\"{}\" connect-timeout=\"5s\"\n    image \"box\" ref=\"bai-it/box:1\" {{\n        build context=\"./img\"\n    }}\n",
            self.cluster,
            self.sshd.client_key_path().display(),
            self.known_hosts.display()
        )
    }

    /// Node i, `node{i}`, on its sshd.
    pub fn node(&self, i: usize) -> String {
        format!("    node \"node{i}\" address=\"127.0.0.1\" {{\n        ssh port={}\n    }}\n", self.sshd.port(i))
    }

    /// Node i's session container: its VERSION and its spec hash label; `None` when there is none.
    pub fn container(&self, i: usize) -> Option<(String, String)> {
        let name = format!("bai.{}.job-{i}", self.cluster);
        let out = Command::new("docker").args(["inspect", &name]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let c = json(&stdout_of(&out))[0].clone();
        let env = c["Config"]["Env"].as_array().cloned().unwrap_or_default();
        let version = env.iter().filter_map(|e| e.as_str()?.strip_prefix("VERSION=")).next().unwrap_or("").to_string();
        let hash = c["Config"]["Labels"]["ai.bai.spec-hash"].as_str().unwrap_or("").to_string();
        Some((version, hash))
    }
}

impl SshLab {
    /// Makes node `i` a compromised node: its sshd runs every command as asked but the agent's start
    /// (`… agent --expect-size N`), which tests/fixtures/agents/compromised.py answers in `mode` (see there),
    /// as a replaced agent binary would.
    pub fn compromise(&mut self, i: usize, mode: &str) {
        let dir = self.sshd.scratch().join(format!("compromised{i}"));
        std::fs::create_dir_all(&dir).expect("a directory for the compromised agent");
        let script = dir.join("agent.py");
        std::fs::write(&script, include_str!("../../fixtures/agents/compromised.py")).expect("write the agent");
        let dispatch = dir.join("dispatch.sh");
        std::fs::write(
            &dispatch,
            format!(
                "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n  *\" agent --expect-size \"*) exec /usr/bin/python3 {} {mode} {ready} ;;\n  *) exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\" ;;\nesac\n",
                script.display(),
                ready = bai::protocol::AGENT_READY,
            ),
        )
        .expect("write the dispatcher");
        use std::os::unix::fs::PermissionsExt;
        for path in [&dir, &dispatch, &script] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        self.sshd.reconfigure(i, &format!("ForceCommand {}\n", dispatch.display()), &[]);
    }
}

/// Both streams of a finished command, for failure messages.
pub fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout_of(out), stderr_of(out))
}

/// Asserts an exit code, showing both streams when it is another.
pub fn assert_code(out: &std::process::Output, code: i32, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}\nstdout:\n{}\nstderr:\n{}", stdout_of(out), stderr_of(out));
}
