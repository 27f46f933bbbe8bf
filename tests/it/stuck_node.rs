//! A stuck node (issue 11, items 7 and 8): every call to a node's agent has a deadline, the node that
//! misses it is reported with what it was doing while the others finish, and the apply lease never
//! outlives the controller that took it — the agent notices its connection closing in the middle of a
//! call. Real sshd nodes, the real agent (or tests/fixtures/agents/compromised.py where the agent itself
//! must hang), the real Docker engine building an image whose `RUN` takes an hour.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::lab::SshLab;
use crate::support::{stderr_of, stdout_of};

/// Runs `bai ARGS…` and fails the test (rather than hanging the suite) when it takes over `limit`.
fn bai_within(args: &[&str], limit: Duration) -> std::process::Output {
    crate::support::bai().args(args).timeout(limit).output().expect("bai runs")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", stdout_of(out), stderr_of(out))
}

/// `bai ARGS…` finished (was not killed at `limit`), exited 1, and said `needle`.
fn assert_failed_saying(out: &std::process::Output, needle: &str, what: &str) {
    assert!(out.status.code().is_some(), "{what} hung and was killed:\n{}", text(out));
    assert_eq!(out.status.code(), Some(1), "{what}:\n{}", text(out));
    assert!(text(out).contains(needle), "{what} should say `{needle}`:\n{}", text(out));
}

fn running(container: &str) -> bool {
    let out = crate::support::images::docker(&["inspect", "-f", "{{.State.Running}}", container]);
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

#[test]
fn a_mute_agent_is_given_up_at_its_deadline_and_the_other_nodes_finish() {
    crate::support::images::require_docker();
    let mut lab = SshLab::new("mute", 2);
    lab.write_with(&["1", "1"], "    timeouts observe=\"2s\"\n");
    lab.compromise(1, "mute");
    let path = lab.path().display().to_string();
    let limit = Duration::from_secs(90);
    let said = "node `node1` unreachable: observing failed: no answer to `observe` within 2s";

    let plan = bai_within(&["plan", &path], limit);
    assert_failed_saying(&plan, said, "plan");
    let status = bai_within(&["status", &path], limit);
    assert_failed_saying(&status, said, "status");
    assert!(stdout_of(&status).contains("node0"), "the other node is reported:\n{}", text(&status));

    let started = Instant::now();
    let apply = bai_within(&["apply", "--yes", &path], limit);
    assert_failed_saying(&apply, said, "apply");
    assert!(started.elapsed() < Duration::from_secs(60), "apply took {:?}", started.elapsed());
    let job0 = format!("bai.{}.job-0", lab.cluster);
    assert!(running(&job0), "the healthy node was applied:\n{}", text(&apply));

    let destroy = bai_within(&["destroy", "--yes", &path], limit);
    assert_failed_saying(&destroy, said, "destroy");
    assert!(!running(&job0), "the healthy node was destroyed:\n{}", text(&destroy));
}

#[test]
fn a_node_that_stops_answering_in_the_middle_of_an_apply_fails_alone() {
    crate::support::images::require_docker();
    let mut lab = SshLab::new("midway", 2);
    lab.write_with(&["1", "1"], "    timeouts change=\"2s\"\n");
    lab.compromise(1, "mute-after-observe");
    let apply = bai_within(&["apply", "--yes", &lab.path().display().to_string()], Duration::from_secs(90));
    assert_failed_saying(&apply, "no answer to `set_labels` within 2s", "apply");
    assert!(text(&apply).contains("the change may be half made there"), "{}", text(&apply));
    assert!(running(&format!("bai.{}.job-0", lab.cluster)), "the healthy node was applied:\n{}", text(&apply));
}

/// A lab whose node `slow_node` builds an image with an hour-long `RUN`, its session on it; every other
/// node runs the usual session on `box`.
fn slow_lab(prefix: &str, nodes: usize, slow_node: usize, extra: &str) -> SshLab {
    crate::support::images::require_docker();
    let lab = SshLab::new(prefix, nodes);
    crate::support::images::write_context(
        &lab.file("slow"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"3600\"]\n",
    );
    let mut text = lab.header() + extra;
    text.push_str(&format!(
        "    image \"slow\" ref=\"bai-it/slow-{}:1\" {{\n        build context=\"./slow\"\n    }}\n",
        lab.cluster
    ));
    for i in 0..nodes {
        let image = if i == slow_node { "slow" } else { "box" };
        text.push_str(&lab.node(i));
        text.push_str(&format!(
            "    session \"job-{i}\" image=\"{image}\" node=\"node{i}\" {{\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }}\n"
        ));
    }
    lab.write_text(&(text + "}\n"));
    lab
}

#[test]
fn an_image_that_takes_too_long_fails_its_node_and_frees_the_lease() {
    let lab = slow_lab("slowimg", 2, 1, "    timeouts image=\"3s\"\n");
    let path = lab.path().display().to_string();
    let started = Instant::now();
    let apply = bai_within(&["apply", "--yes", &path], Duration::from_secs(120));
    assert_failed_saying(&apply, "no answer to `ensure_image` within 3s", "apply");
    assert!(started.elapsed() < Duration::from_secs(60), "apply took {:?}", started.elapsed());
    assert!(running(&format!("bai.{}.job-0", lab.cluster)), "the other node was applied:\n{}", text(&apply));
    // The controller dropped the connection at the deadline: the agent stopped the build and let go.
    let destroy = bai_within(&["destroy", "--yes", &path], Duration::from_secs(60));
    assert_eq!(destroy.status.code(), Some(0), "the lease was freed:\n{}", text(&destroy));
}

/// `bai apply --yes PATH`, running while the test goes on.
fn apply_in_background(path: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_bai"))
        .args(["apply", "--yes", path])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bai runs")
}

/// The cluster's lease file on node `i`.
fn lease_file(lab: &SshLab, i: usize) -> std::path::PathBuf {
    lab.sshd.home(i).join(".local/share/bai/leases").join(format!("{}.lock", lab.cluster))
}

#[test]
fn a_killed_controller_leaves_no_lease_behind_and_a_refusal_says_who_is_still_there() {
    let lab = slow_lab("killed", 1, 0, "");
    let path = lab.path().display().to_string();
    let mut first = apply_in_background(&path);
    // Wait until the agent is inside the hour-long build.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let held = std::fs::read_to_string(lease_file(&lab, 0)).unwrap_or_default();
        if held.contains("doing `ensure_image` `slow`") {
            break;
        }
        assert!(Instant::now() < deadline, "the first apply never reached the build; lease file: {held:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = bai_within(&["apply", "--yes", &path], Duration::from_secs(60));
    assert_failed_saying(&second, "is being applied by", "a second apply");
    assert!(
        stderr_of(&second).contains("it is still connected (its agent, pid")
            && stderr_of(&second).contains("is running: `ensure_image` `slow` since"),
        "the refusal says the holder is there and what it does:\n{}",
        text(&second)
    );

    let _ = first.kill();
    let _ = first.wait();
    destroy_once_the_lease_is_freed(&path);
}

/// Destroys the lab at `path`, retrying while the lease of a killed controller is still held: the agent
/// notices its connection closing although it is blocked in a build, and lets go within seconds.
fn destroy_once_the_lease_is_freed(path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let destroy = bai_within(&["destroy", "--yes", path], Duration::from_secs(60));
        if destroy.status.code() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline && text(&destroy).contains("is being applied by"),
            "the lease outlived its killed controller:\n{}",
            text(&destroy)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Issue 12: apply walks the plan resource by resource, not level by level across the fleet. While one
/// node builds an image for an hour, the other nodes' sessions are created and running.
#[test]
fn a_slow_image_on_one_node_holds_back_no_other_nodes_session() {
    let lab = slow_lab("slownode", 3, 2, "");
    let path = lab.path().display().to_string();
    let mut apply = apply_in_background(&path);
    let others = [format!("bai.{}.job-0", lab.cluster), format!("bai.{}.job-1", lab.cluster)];
    let deadline = Instant::now() + Duration::from_secs(90);
    while !others.iter().all(|c| running(c)) {
        assert!(apply.try_wait().expect("wait").is_none(), "the apply ended before the other sessions ran");
        assert!(Instant::now() < deadline, "the other nodes' sessions waited for the slow node's image");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!running(&format!("bai.{}.job-2", lab.cluster)), "the slow node's session waits for its image");
    // It is the hour-long build that the slow node is at (the lease file says what its agent is doing).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = std::fs::read_to_string(lease_file(&lab, 2)).unwrap_or_default();
        if held.contains("doing `ensure_image` `slow`") {
            break;
        }
        assert!(Instant::now() < deadline, "the slow node never reached its build: {held:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let _ = apply.kill();
    let _ = apply.wait();
    destroy_once_the_lease_is_freed(&path);
}
