//! `bai apply`, `status` and `destroy` over SSH: three real OpenSSH servers on 127.0.0.1 (one port each,
//! their own `$HOME` each), the real binary installing itself as the agent, the real Docker engine.

use std::io::{BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{json, stderr_of, stdout_of};

/// The shared [`crate::support::lab::SshLab`] with every session at one version, the way these tests
/// change the whole lab at once.
struct SshLab(crate::support::lab::SshLab);

impl std::ops::Deref for SshLab {
    type Target = crate::support::lab::SshLab;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for SshLab {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl SshLab {
    fn new(nodes: usize) -> Self {
        let lab = SshLab(crate::support::lab::SshLab::new("ssh", nodes));
        lab.write("1");
        lab
    }

    /// The lab: one vfolder and one session per node; `version` goes into every session's env.
    fn write(&self, version: &str) {
        self.0.write(&vec![version; self.sshd.len()]);
    }

    fn container(&self, i: usize) -> String {
        format!("bai.{}.job-{i}", self.cluster)
    }

    fn inspect(&self, i: usize) -> Option<serde_json::Value> {
        let out = Command::new("docker").args(["inspect", &self.container(i)]).output().ok()?;
        out.status.success().then(|| json(&stdout_of(&out))[0].clone())
    }

    /// `bai apply` on a pseudo-terminal: it observes, takes the leases, prints the plan and waits at
    /// the confirmation prompt until `confirm` is called.
    fn apply_waiting_for_confirmation(&self) -> Interactive {
        let command = format!("{} apply {}", env!("CARGO_BIN_EXE_bai"), self.path().display());
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .current_dir(crate::support::root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("script(1) from util-linux runs");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.contains("Only `yes` is accepted") {
            assert!(Instant::now() < deadline, "apply never asked for confirmation:\n{seen}");
            let mut buf = [0u8; 256];
            let n = out.read(&mut buf).expect("read the terminal");
            assert!(n > 0, "apply ended before asking:\n{seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        Interactive { child, out, seen }
    }
}

struct Interactive {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    seen: String,
}

impl Interactive {
    fn confirm(mut self) -> (Option<i32>, String) {
        let mut stdin = self.child.stdin.take().expect("stdin");
        writeln!(stdin, "yes").expect("answer");
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let status = self.child.wait().expect("apply ends");
        (status.code(), format!("{}{rest}", self.seen))
    }

    /// SIGKILL of the whole controller (script and bai): nothing of it gets to clean up.
    fn kill(mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: a plain kill(2) of the process group we created for this child.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn assert_code(out: &std::process::Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout_of(out), stderr_of(out));
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn apply_over_ssh_creates_reads_updates_and_deletes() {
    let lab = SshLab::new(3);
    let agent_hash =
        bai::transport::ssh::agent_sha256(std::path::Path::new(env!("CARGO_BIN_EXE_bai-agent"))).expect("hash");
    let out = lab.run(&["apply", "--yes"]);
    assert_code(&out, 0);
    assert!(stdout_of(&out).contains("Plan: 12 to create"), "{}", stdout_of(&out));
    for i in 0..3 {
        let c = lab.inspect(i).expect("the session container exists");
        assert_eq!(c["Config"]["Labels"]["ai.bai.node"], format!("node{i}"));
        assert_eq!(c["State"]["Running"], true);
        // The vfolder is a directory in that node's home, bind-mounted where the session asked.
        let dir = lab.sshd.home(i).join(".local/share/bai/vfolders").join(format!("data-{i}"));
        assert!(dir.is_dir(), "{}", dir.display());
        let marker = lab.sshd.home(i).join(format!(".local/share/bai/vfolders/.bai-markers/data-{i}.json"));
        assert!(marker.is_file(), "bai's marker lies beside the vfolder: {}", marker.display());
        let bind = format!("{}:/home/work/data", dir.display());
        assert!(c["HostConfig"]["Binds"].as_array().is_some_and(|b| b.iter().any(|v| v == &bind)), "{c}");
        // The agent was installed content-addressed in the node's home.
        // It is `bai-agent`, the agent alone, not the whole of `bai`.
        let agents: Vec<_> = std::fs::read_dir(lab.sshd.home(i).join(".local/share/bai/agent"))
            .expect("agent dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // The agents' own stamp of when they were last looked over.
            .filter(|name| !name.starts_with('.'))
            .collect();
        assert_eq!(agents, [agent_hash.as_str()]);
    }

    // Read: status as a snapshot, and planning against it finds nothing to do.
    let status = lab.run(&["status", "--format", "json"]);
    assert_code(&status, 0);
    let snapshot = json(&stdout_of(&status));
    assert_eq!(snapshot["clusters"][0]["nodes"].as_array().map(Vec::len), Some(3));
    let state = lab.dir.path().join("state.json");
    std::fs::write(&state, stdout_of(&status)).expect("write");
    assert_code(&lab.run(&["plan", "--detailed-exitcode", "--state", state.to_str().expect("utf-8")]), 0);
    let again = lab.run(&["apply", "--yes"]);
    assert_code(&again, 0);
    assert!(stdout_of(&again).contains("No changes."), "{}", stdout_of(&again));

    // Update: only the sessions change; only on the selected node with --on.
    let before: Vec<_> = (0..3).map(|i| lab.inspect(i).expect("exists")["Id"].clone()).collect();
    lab.write("2");
    let out = lab.run(&["apply", "--yes", "--on", "node1"]);
    assert_code(&out, 0);
    assert!(
        stdout_of(&out).contains("Plan: 0 to create, 0 to update, 1 to replace, 0 to delete."),
        "{}",
        stdout_of(&out)
    );
    assert_ne!(lab.inspect(1).expect("exists")["Id"], before[1]);
    assert_eq!(lab.inspect(0).expect("exists")["Id"], before[0]);
    assert_eq!(lab.inspect(2).expect("exists")["Id"], before[2]);

    // Delete: everything bai owns goes, in reverse order.
    let out = lab.run(&["destroy", "--yes"]);
    assert_code(&out, 0);
    for i in 0..3 {
        assert!(lab.inspect(i).is_none(), "job-{i} removed");
        assert!(!lab.sshd.home(i).join(".local/share/bai/vfolders").join(format!("data-{i}")).exists());
    }
}

#[test]
fn host_keys_are_verified_through_the_binary() {
    let mut lab = SshLab::new(2);
    // A known_hosts that knows nothing.
    lab.known_hosts = lab.dir.path().join("empty_known_hosts");
    std::fs::write(&lab.known_hosts, "").expect("write");
    lab.write("1");
    let refused = lab.run(&["status"]);
    assert_code(&refused, 1);
    let err = stderr_of(&refused);
    let fingerprint =
        Command::new("ssh-keygen").arg("-lf").arg(lab.sshd.host_pubkey_path(0)).output().expect("ssh-keygen");
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout).split_whitespace().nth(1).unwrap_or("?").to_string();
    assert!(err.contains(&fingerprint) && err.contains("--accept-new-host-keys"), "{err}");

    assert_code(&lab.run(&["status", "--accept-new-host-keys"]), 0);
    let learned = std::fs::read_to_string(&lab.known_hosts).expect("read");
    assert_eq!(learned.lines().filter(|l| !l.trim().is_empty()).count(), 2, "{learned}");
    assert_code(&lab.run(&["status"]), 0);

    // The key of node0's port changes (here: node1's key claims it): refused, even with the flag.
    let port0 = lab.sshd.port(0);
    let forged: String = learned
        .lines()
        .filter(|l| !l.contains(&format!("]:{port0} ")))
        .map(|l| format!("{l}\n{}\n", l.replace(&format!("]:{} ", lab.sshd.port(1)), &format!("]:{port0} "))))
        .collect();
    std::fs::write(&lab.known_hosts, forged).expect("write");
    let changed = lab.run(&["status", "--accept-new-host-keys"]);
    assert_code(&changed, 1);
    assert!(stderr_of(&changed).contains("node0"), "{}", stderr_of(&changed));
    assert!(stderr_of(&changed).to_lowercase().contains("changed"), "{}", stderr_of(&changed));
}

#[test]
fn a_revoked_host_key_is_refused_through_the_binary_and_never_learnt() {
    let mut lab = SshLab::new(2);
    // node0's key revoked for every host, node1's listed: OpenSSH refuses node0 even when accepting new keys.
    lab.known_hosts = lab.dir.path().join("revoking_known_hosts");
    let contents = format!("@revoked * {}\n{}\n", lab.sshd.host_pubkey(0), lab.sshd.known_hosts_line(1));
    std::fs::write(&lab.known_hosts, &contents).expect("write");
    lab.write("1");
    let refused = lab.run(&["status", "--accept-new-host-keys"]);
    assert_code(&refused, 1);
    let err = stderr_of(&refused);
    assert!(err.contains("node0") && err.contains("revoked"), "{err}");
    assert!(!err.contains("node1"), "node1 is reached: {err}");
    assert_eq!(std::fs::read_to_string(&lab.known_hosts).expect("read"), contents, "no key learnt");

    // Listed on one line and revoked for its host on another: refused all the same.
    let port0 = lab.sshd.port(0);
    let contents = format!(
        "{}\n{}\n@revoked [127.0.0.1]:{port0} {}\n",
        lab.sshd.known_hosts_line(0),
        lab.sshd.known_hosts_line(1),
        lab.sshd.host_pubkey(0)
    );
    std::fs::write(&lab.known_hosts, &contents).expect("write");
    let refused = lab.run(&["status"]);
    assert_code(&refused, 1);
    let err = stderr_of(&refused);
    assert!(err.contains("node0") && err.contains("revoked") && err.contains("line 3"), "{err}");
}

#[test]
fn a_second_apply_is_refused_until_the_first_is_killed() {
    let lab = SshLab::new(1);
    let first = lab.apply_waiting_for_confirmation();
    let second = lab.run(&["apply", "--yes"]);
    assert_code(&second, 1);
    let err = stderr_of(&second);
    assert!(err.contains("is being applied by") && err.contains(" since "), "{err}");
    first.kill();
    // The first controller's connection dies with it, and its agent (and lease) with the connection.
    wait_for("the lease to be released", || lab.run(&["apply", "--yes"]).status.success());
    assert!(lab.inspect(0).is_some());
}

#[test]
fn a_node_lost_mid_apply_fails_alone_and_a_later_apply_converges() {
    let mut lab = SshLab::new(3);
    let apply = lab.apply_waiting_for_confirmation();
    // Planned against all three; node1 dies before anything runs.
    lab.sshd.kill(1);
    let (code, output) = apply.confirm();
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("1 failed (node1)"), "{output}");
    assert!(output.contains("2 succeeded (node0, node2)"), "{output}");
    assert!(lab.inspect(0).is_some() && lab.inspect(2).is_some());
    assert!(lab.inspect(1).is_none());

    lab.sshd.restart(1);
    let out = lab.run(&["apply", "--yes"]);
    assert_code(&out, 0);
    assert!(lab.inspect(1).is_some());
    let status = lab.run(&["status", "--format", "json"]);
    let state = lab.dir.path().join("state.json");
    std::fs::write(&state, stdout_of(&status)).expect("write");
    assert_code(&lab.run(&["plan", "--detailed-exitcode", "--state", state.to_str().expect("utf-8")]), 0);
}

/// `bai` installs the `bai-agent` beside it only when it is of the same build: one left from an older build
/// (cargo relinks only the binaries a command names) is passed over for `bai` itself.
#[test]
fn an_agent_of_another_build_beside_bai_is_passed_over_for_bai_itself() {
    let lab = SshLab::new(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let bai = dir.path().join("bai");
    std::fs::copy(env!("CARGO_BIN_EXE_bai"), &bai).expect("copy bai");
    let agent = dir.path().join("bai-agent");
    std::fs::write(&agent, "#!/bin/sh\n# bai-build:0123456789abcdef\nexit 1\n").expect("write");
    let executable = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&agent, executable).expect("chmod");
    let plan = || {
        // As `support::bai()` runs it, but this copy.
        Command::new(&bai)
            .current_dir(crate::support::root())
            .env("NO_COLOR", "1")
            .env("BAI_SSH_CONFIG", "none")
            .env("BAI_HOME", lab.file("agent-home"))
            .arg("plan")
            .arg(lab.path())
            .output()
            .expect("bai runs")
    };
    let installed = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(lab.sshd.home(0).join(".local/share/bai/agent"))
            .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.retain(|name| !name.starts_with('.'));
        names.sort();
        names
    };
    let hash = |path: &std::path::Path| bai::transport::ssh::agent_sha256(path).expect("hash");

    assert_code(&plan(), 0);
    assert_eq!(installed(), [hash(&bai)], "bai itself, not the stale bai-agent");

    std::fs::copy(env!("CARGO_BIN_EXE_bai-agent"), &agent).expect("copy bai-agent");
    assert_code(&plan(), 0);
    let mut both = vec![hash(&bai), hash(&agent)];
    both.sort();
    assert_eq!(installed(), both, "the bai-agent of this build, once it is there");
}

/// Every build of bai that reaches a node installs its own agent; one unused for a month is removed by
/// the agent the controller starts there (once a day), and nothing else is: not a recent one, not the
/// running one, not a link in an agent's place.
#[test]
fn agents_unused_for_a_month_are_removed_from_the_node() {
    let lab = SshLab::new(1);
    let plan = || lab.run(&["plan"]);
    assert_code(&plan(), 0);
    let root = lab.sshd.home(0).join(".local/share/bai/agent");
    let (uid, gid) = crate::support::sshd::test_user().expect("the test user");
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let aged = |path: &std::path::Path, by: Duration| {
        std::fs::File::open(path).expect("open").set_modified(now - by).expect("age");
    };
    // What earlier builds of bai left: installed by the node's user, as the controller installs.
    let earlier = |c: char, unused: Duration| {
        let dir = root.join(c.to_string().repeat(64));
        std::fs::create_dir(&dir).expect("dir");
        std::fs::write(dir.join("bai"), b"an earlier agent").expect("agent");
        for path in [dir.join("bai"), dir.clone()] {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
            aged(&path, unused);
        }
        dir
    };
    let old = earlier('e', 45 * day);
    let recent = earlier('f', 3 * day);
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::fs::write(elsewhere.path().join("bai"), b"not bai's").expect("write");
    let link = root.join("d".repeat(64));
    std::os::unix::fs::symlink(elsewhere.path(), &link).expect("symlink");
    std::os::unix::fs::lchown(&link, Some(uid), Some(gid)).expect("lchown");
    // The agents were looked over at the first plan (or were about to be); the day has passed since.
    let stamp = root.join(".looked-over");
    if !stamp.exists() {
        std::fs::write(&stamp, b"").expect("stamp");
        std::os::unix::fs::chown(&stamp, Some(uid), Some(gid)).expect("chown");
    }
    aged(&stamp, 2 * day);

    assert_code(&plan(), 0);
    wait_for("the month-old agent to go", || !old.exists());
    let running: Vec<_> = std::fs::read_dir(&root)
        .expect("agent root")
        .flatten()
        .filter(|e| e.path().join("bai").is_file() && !e.path().is_symlink())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(running.len(), 2, "the running agent and the recent one: {running:?}");
    assert!(recent.join("bai").is_file());
    assert!(link.is_symlink());
    assert_eq!(std::fs::read(elsewhere.path().join("bai")).expect("kept"), b"not bai's");
}
