//! `bai apply`, `status` and `destroy` on a `local=#true` node: the real binary, its agent as a child
//! process, the machine's real Docker engine and real directories. Each test uses its own cluster name,
//! vfolder root and agent home, and removes what it created.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{bai, json, stderr_of, stdout_of};

/// The shared [`crate::support::lab::LocalLab`] with this file's lab: a workstation node, an image
/// with a default command, two vfolders and two sessions.
struct LocalLab(crate::support::lab::LocalLab);

impl std::ops::Deref for LocalLab {
    type Target = crate::support::lab::LocalLab;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl LocalLab {
    fn new() -> Self {
        let lab = LocalLab(crate::support::lab::LocalLab::new("it"));
        // A tag of its own, built from the Dockerfile with a default command (`side-job` and the stray
        // container rely on it): other labs build `bai-it/box:1` without one on the same engine, concurrently.
        crate::support::images::write_context(&lab.file("img"), crate::support::images::DOCKERFILE);
        lab.write("GREETING=\"hi\"", "");
        lab
    }

    fn vfolders(&self) -> PathBuf {
        self.file("vfolders")
    }

    /// Writes the lab; `env` goes into the session, `extra` into the cluster.
    fn write(&self, env: &str, extra: &str) {
        let text = format!(
            r#"cluster "{cluster}" {{
    node "ws" local=#true {{
        vfolder-root "{root}"
        labels role="workstation"
    }}
    image "box" ref="bai-it/local-box:1" {{
        build context="./img"
    }}
    vfolder "data" node="ws" permission="ro"
    vfolder "ckpt" node="ws" quota="1GiB"
    session "web-1" image="box" node="ws" {{
        env {env}
        mount "data" alias="data" readonly=#true
        mount "ckpt" alias="checkpoints"
        command "/bin/busybox" "sleep" "3600"
        restart "on-failure"
    }}
    session "side-job" image="box" node="ws" {{
        mount "ckpt" alias="ckpt" readonly=#true
        depends-on "web-1"
    }}
    {extra}
}}
"#,
            cluster = self.cluster,
            root = self.vfolders().display(),
        );
        self.write_text(&text);
    }

    fn inspect(&self, session: &str) -> serde_json::Value {
        let out =
            Command::new("docker").args(["inspect", &self.container_name(session)]).output().expect("docker runs");
        assert!(out.status.success(), "container {} exists: {}", self.container_name(session), stderr_of(&out));
        json(&stdout_of(&out))[0].clone()
    }
}

impl Drop for LocalLab {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.container_name("stray")]).output();
    }
}

fn assert_code(out: &std::process::Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout_of(out), stderr_of(out));
}

#[test]
fn apply_creates_everything_and_a_second_apply_changes_nothing() {
    let lab = LocalLab::new();
    let out = lab.expect(0, &["apply", "--yes"]);
    // The whole plan, and the end of the report.
    lab.snapshot("first_apply_plan", &stdout_of(&out));
    let err = stderr_of(&out);
    let report: Vec<&str> = err.lines().filter(|l| l.starts_with("Applied ") || l.starts_with("Nodes: ")).collect();
    lab.snapshot("first_apply_report", &report.join("\n"));

    // The real container, as the session asked.
    let c = lab.inspect("web-1");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["ai.bai.cluster"], lab.cluster.as_str());
    assert_eq!(labels["ai.bai.node"], "ws");
    assert_eq!(labels["ai.bai.session"], "web-1");
    assert_eq!(labels["ai.bai.spec-hash"].as_str().map(str::len), Some(64));
    assert_eq!(c["Config"]["WorkingDir"], "/home/work");
    let env: Vec<&str> = c["Config"]["Env"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    assert!(env.contains(&"GREETING=hi"), "{env:?}");
    assert!(env.contains(&"PATH=/home/work/.local/bin:/bin"), "{env:?}");
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["/bin/busybox", "sleep", "3600"]));
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    let binds: Vec<&str> =
        c["HostConfig"]["Binds"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    let data = format!("{}:/home/work/data:ro", lab.vfolders().join("data").display());
    let ckpt = format!("{}:/home/work/checkpoints", lab.vfolders().join("ckpt").display());
    assert!(binds.contains(&data.as_str()) && binds.contains(&ckpt.as_str()), "{binds:?}");
    assert_eq!(c["State"]["Running"], true);
    // `ro` is honoured inside the container, and the writable mount is writable.
    let write = |path: &str| {
        Command::new("docker")
            .args(["exec", &lab.container_name("web-1"), "/bin/busybox", "sh", "-c", &format!("echo x > {path}")])
            .output()
            .expect("docker exec")
            .status
            .success()
    };
    assert!(!write("/home/work/data/f"), "a readonly mount must refuse writes");
    assert!(write("/home/work/checkpoints/f"));
    assert!(lab.vfolders().join("ckpt/f").is_file());
    // bai's marker lies beside the vfolder, where no session can write, not in it.
    assert!(lab.vfolders().join(".bai-markers/data.json").is_file());
    assert!(!lab.vfolders().join("data/.bai-vfolder.json").exists());

    // Idempotence: nothing to do, by plan against a fresh status and by a second apply.
    let status = lab.run(&["status", "--format", "json"]);
    assert_code(&status, 0);
    let state = lab.dir.path().join("state.json");
    std::fs::write(&state, stdout_of(&status)).expect("write");
    let snapshot = json(&stdout_of(&status));
    assert_eq!(snapshot["clusters"][0]["nodes"][0]["labels"]["role"], "workstation");
    assert_code(&lab.run(&["plan", "--detailed-exitcode", "--state", state.to_str().expect("utf-8")]), 0);
    let again = lab.run(&["apply", "--yes"]);
    assert_code(&again, 0);
    assert!(stdout_of(&again).contains("No changes."), "{}", stdout_of(&again));
}

#[test]
fn a_changed_session_is_replaced_and_nothing_else_is_touched() {
    let lab = LocalLab::new();
    assert_code(&lab.run(&["apply", "--yes"]), 0);
    let before = lab.inspect("web-1")["Id"].clone();
    let side_before = lab.inspect("side-job")["Id"].clone();
    std::fs::write(lab.vfolders().join("ckpt/keep.txt"), "data").expect("write");
    lab.write("GREETING=\"hello\"", "");
    let out = lab.run(&["apply", "--yes"]);
    assert_code(&out, 0);
    let text = stdout_of(&out);
    assert!(text.contains("-/+ session:web-1") && text.contains("`env.GREETING`"), "{text}");
    assert!(text.contains("Plan: 0 to create, 0 to update, 1 to replace, 0 to delete."), "{text}");
    let after = lab.inspect("web-1");
    assert_ne!(after["Id"], before, "replaced");
    assert_eq!(lab.inspect("side-job")["Id"], side_before, "the other session is untouched");
    assert_eq!(std::fs::read_to_string(lab.vfolders().join("ckpt/keep.txt")).expect("kept"), "data");
}

#[test]
fn what_bai_does_not_own_survives_apply_and_destroy() {
    let lab = LocalLab::new();
    assert_code(&lab.run(&["apply", "--yes"]), 0);
    // A container holding a managed name without bai's labels, and a plain directory in the vfolder root.
    let stray = Command::new("docker")
        .args(["run", "-d", "--name", &lab.container_name("stray"), "bai-it/local-box:1"])
        .output()
        .expect("docker run");
    assert!(stray.status.success(), "{}", stderr_of(&stray));
    std::fs::create_dir_all(lab.vfolders().join("mine")).expect("mkdir");
    std::fs::write(lab.vfolders().join("mine/notes.txt"), "mine").expect("write");

    let status = lab.run(&["status"]);
    assert!(stdout_of(&status).contains("stray"), "the conflict is reported: {}", stdout_of(&status));
    assert_code(&lab.run(&["apply", "--yes"]), 0);
    // Both vfolders are empty, so destroy removes everything of bai's — and nothing else.
    assert_code(&lab.run(&["destroy", "--yes"]), 0);
    assert_eq!(lab.inspect("stray")["State"]["Running"], true, "an unowned container is never touched");
    assert!(lab.vfolders().join("mine/notes.txt").is_file(), "an unowned directory is never touched");
}

#[test]
fn destroy_protects_vfolder_data_unless_allowed() {
    let lab = LocalLab::new();
    assert_code(&lab.run(&["apply", "--yes"]), 0);
    std::fs::write(lab.vfolders().join("ckpt/model.bin"), "weights").expect("write");
    // Without --allow-data-loss a destroy ends cleanly: everything goes but the vfolder that holds data
    // (and the agent that manages it), and it says how to let that go too.
    let kept = lab.run(&["destroy", "--yes"]);
    assert_code(&kept, 0);
    let err = stderr_of(&kept);
    assert!(err.contains("bai::destroy::kept_data") && err.contains("vfolder `ckpt` on `ws` holds data"), "{err}");
    assert!(err.contains("bai destroy --allow-data-loss"), "{err}");
    assert!(!stdout_of(&kept).contains("vfolder:ckpt"), "not planned for removal:\n{}", stdout_of(&kept));
    assert!(lab.vfolders().join("ckpt/model.bin").is_file());
    assert!(!lab.vfolders().join("data").exists(), "the empty vfolder was removed");
    // Again: nothing more to do, the data still kept.
    let again = lab.run(&["destroy", "--yes"]);
    assert_code(&again, 0);
    assert!(stdout_of(&again).contains("No changes."), "{}", stdout_of(&again));

    let out = lab.run(&["destroy", "--yes", "--allow-data-loss"]);
    assert_code(&out, 0);
    assert!(!lab.vfolders().join("ckpt").exists());
    let graves: Vec<PathBuf> = std::fs::read_dir(lab.vfolders().join(".bai-tombstones"))
        .expect("tombstones")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(graves.len(), 1);
    assert_eq!(std::fs::read_to_string(graves[0].join("model.bin")).expect("kept"), "weights");
    let gone = Command::new("docker").args(["inspect", &lab.container_name("web-1")]).output().expect("docker");
    assert!(!gone.status.success(), "the session container is gone");
    // Nothing left to destroy.
    let again = lab.run(&["destroy", "--yes"]);
    assert_code(&again, 0);
    assert!(stdout_of(&again).contains("No changes."));
}

#[test]
fn apply_without_a_terminal_needs_yes() {
    let lab = LocalLab::new();
    let out = lab.run(&["apply"]);
    assert_code(&out, 1);
    assert!(stderr_of(&out).contains("pass --yes"), "{}", stderr_of(&out));
    assert!(
        Command::new("docker")
            .args(["inspect", &lab.container_name("web-1")])
            .output()
            .is_ok_and(|o| !o.status.success())
    );
}

/// A lease held by another controller's agent refuses the apply, naming the holder; killing that agent
/// with SIGKILL frees the lease at once.
#[test]
fn a_held_lease_refuses_a_second_apply_until_its_holder_dies() {
    use std::io::{BufRead, BufReader, Write};
    let lab = LocalLab::new();
    let mut holder = Command::new(env!("CARGO_BIN_EXE_bai"))
        .arg("agent")
        .env("BAI_HOME", lab.dir.path().join("agent-home"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("agent starts");
    let hello = format!(
        r#"{{"id":1,"method":"hello","params":{{"protocol":{},"version":"{}","cluster":"{}","node":"ws","lease":true,"holder":"alice@elsewhere pid 4242"}}}}"#,
        bai::protocol::PROTOCOL_VERSION,
        bai::protocol::BAI_VERSION,
        lab.cluster
    );
    let mut stdin = holder.stdin.take().expect("stdin");
    writeln!(stdin, "{hello}").expect("send hello");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout")).read_line(&mut line).expect("reply");
    assert!(line.contains("\"lease\":true"), "{line}");

    let refused = lab.run(&["apply", "--yes"]);
    assert_code(&refused, 1);
    let err = stderr_of(&refused);
    assert!(err.contains("alice@elsewhere pid 4242 since"), "{err}");

    let _ = Command::new("kill").args(["-9", &holder.id().to_string()]).status();
    let _ = holder.wait();
    assert_code(&lab.run(&["apply", "--yes"]), 0);
    drop(stdin);
}

/// The README's first command, exactly: the quickstart lab applies on this machine, twice without change,
/// and is destroyed again. Agent state and vfolders go to a throwaway home.
#[test]
fn the_quickstart_applies_on_this_machine() {
    // Apply writes the lock beside the example; it names this build's agent, so it never outlives the test.
    struct Unlock;
    impl Drop for Unlock {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(crate::support::root().join("examples/quickstart/bai.lock"));
        }
    }
    let _unlock = Unlock;
    drop(Unlock);
    let home = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        bai()
            .env("HOME", home.path())
            .env("BAI_HOME", home.path().join("bai"))
            .args(args)
            .arg("examples/quickstart/lab.kdl")
            .output()
            .expect("bai runs")
    };
    let out = run(&["apply", "--yes"]);
    assert_code(&out, 0);
    assert!(stdout_of(&out).contains("Plan: 6 to create"), "{}", stdout_of(&out));
    let notes = home.path().join(".local/share/bai/vfolders/notes/started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !notes.is_file() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(notes.is_file(), "the note-taker session wrote into its vfolder");
    let again = run(&["apply", "--yes"]);
    assert_code(&again, 0);
    assert!(stdout_of(&again).contains("No changes."), "{}", stdout_of(&again));
    let status = run(&["status"]);
    assert_code(&status, 0);
    assert!(stdout_of(&status).contains("session web-server: running"), "{}", stdout_of(&status));
    // The tour's "it works": the note-taker's log, and the page the lab serves, through a port-forward.
    let logs = bai()
        .env("HOME", home.path())
        .env("BAI_HOME", home.path().join("bai"))
        .args(["logs", "examples/quickstart/lab.kdl", "note-taker"])
        .output()
        .expect("bai runs");
    assert_code(&logs, 0);
    assert_eq!(stdout_of(&logs), "note-taker: start 1 noted in notes/started\n");
    let mut forward = std::process::Command::new(assert_cmd::cargo::cargo_bin("bai"))
        .current_dir(crate::support::root())
        .env("HOME", home.path())
        .env("BAI_HOME", home.path().join("bai"))
        .args(["port-forward", "examples/quickstart/lab.kdl", "web-server", ":http"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bai runs");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(forward.stdout.take().expect("stdout")), &mut line)
        .expect("read");
    let port =
        line.split("127.0.0.1:").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_string();
    let page = Command::new("curl").args(["-sS", "--max-time", "10", &format!("http://127.0.0.1:{port}/")]).output();
    let _ = forward.kill();
    let _ = forward.wait();
    let page = page.expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&page.stdout), "<h1>hello from bai</h1>\n", "{line}");
    // The tour's end: destroy keeps what holds data and says how to let it go too; then it goes.
    let kept = run(&["destroy", "--yes"]);
    assert_code(&kept, 0);
    assert!(stderr_of(&kept).contains("vfolder `notes` on `here` holds data"), "{}", stderr_of(&kept));
    assert!(notes.is_file());
    assert_code(&run(&["destroy", "--yes", "--allow-data-loss"]), 0);
    assert!(!notes.exists());
}

/// Updates in place and deletes of every kind, checked on the real node: node labels and a vfolder's
/// quota change without touching the sessions; an image whose ref changes is replaced together with the
/// session using it; a session, vfolder and image removed from the file are removed from the node.
#[test]
fn every_kind_updates_in_place_or_is_replaced_or_deleted() {
    let lab = LocalLab::new();
    assert_code(&lab.run(&["apply", "--yes"]), 0);
    let web = lab.inspect("web-1")["Id"].clone();

    // In place: node labels and vfolder quota.
    let text = std::fs::read_to_string(lab.path()).expect("read");
    std::fs::write(
        lab.path(),
        text.replace("role=\"workstation\"", "role=\"lab\"").replace("quota=\"1GiB\"", "quota=\"2GiB\""),
    )
    .expect("write");
    let out = lab.run(&["apply", "--yes"]);
    assert_code(&out, 0);
    let plan = stdout_of(&out);
    assert!(plan.contains("  ~ node:ws\n        ~ `labels.role`: \"workstation\" → \"lab\""), "{plan}");
    assert!(plan.contains("  ~ vfolder:ckpt\n        ~ `quota`: 1GiB → 2GiB"), "{plan}");
    assert!(plan.contains("Plan: 0 to create, 2 to update, 0 to replace, 0 to delete."), "{plan}");
    let marker = std::fs::read_to_string(lab.vfolders().join(".bai-markers/ckpt.json")).expect("marker");
    assert!(marker.contains("2147483648"), "{marker}");
    assert_eq!(lab.inspect("web-1")["Id"], web, "in-place updates leave sessions alone");
    let status = json(&stdout_of(&lab.run(&["status", "--format", "json"])));
    assert_eq!(status["clusters"][0]["nodes"][0]["labels"]["role"], "lab");

    // Replace: the image's ref changes, so the image and both sessions using it are replaced.
    let text = std::fs::read_to_string(lab.path()).expect("read");
    std::fs::write(lab.path(), text.replace("bai-it/local-box:1", "bai-it/local-box:2")).expect("write");
    let out = lab.run(&["apply", "--yes"]);
    assert_code(&out, 0);
    let plan = stdout_of(&out);
    assert!(
        plan.contains("-/+ image:ws/box") && plan.contains("`ref`: \"bai-it/local-box:1\" → \"bai-it/local-box:2\""),
        "{plan}"
    );
    assert!(plan.contains("-/+ session:web-1") && plan.contains("-/+ session:side-job"), "{plan}");
    assert_eq!(lab.inspect("web-1")["Config"]["Image"], "bai-it/local-box:2");

    // Delete: drop the side job and the ckpt vfolder it mounts (web-1 keeps only `data`). `ckpt` holds
    // data, so the first apply refuses to remove it; with --allow-data-loss it is moved aside.
    std::fs::write(lab.vfolders().join("ckpt/model.bin"), "weights").expect("write");
    let text = std::fs::read_to_string(lab.path()).expect("read");
    let start = text.find("    session \"side-job\"").expect("side-job in the lab");
    let end = start + text[start..].find("    }\n").expect("end of side-job") + 6;
    let text = format!("{}{}", &text[..start], &text[end..])
        .replace("    vfolder \"ckpt\" node=\"ws\" quota=\"2GiB\"\n", "")
        .replace("        mount \"ckpt\" alias=\"checkpoints\"\n", "");
    std::fs::write(lab.path(), text).expect("write");
    let refused = lab.run(&["apply", "--yes"]);
    assert_code(&refused, 1);
    let plan = stdout_of(&refused);
    assert!(plan.contains("  - session:side-job") && plan.contains("  - vfolder:ckpt"), "{plan}");
    assert!(stderr_of(&refused).contains("vfolder `ckpt` holds data"), "{}", stderr_of(&refused));
    assert!(
        Command::new("docker")
            .args(["inspect", &lab.container_name("side-job")])
            .output()
            .is_ok_and(|o| !o.status.success())
    );
    assert_eq!(std::fs::read_to_string(lab.vfolders().join("ckpt/model.bin")).expect("kept"), "weights");
    assert_code(&lab.run(&["apply", "--yes", "--allow-data-loss"]), 0);
    assert!(!lab.vfolders().join("ckpt").exists());
    let grave = std::fs::read_dir(lab.vfolders().join(".bai-tombstones")).expect("tombstones").flatten().next();
    let grave = grave.expect("one tombstone");
    assert_eq!(std::fs::read_to_string(grave.path().join("model.bin")).expect("kept"), "weights");

    // The last session goes: so does the image it used (bai forgets it; Docker keeps its cache).
    let text = std::fs::read_to_string(lab.path()).expect("read");
    let start = text.find("    session \"web-1\"").expect("web-1 in the lab");
    let end = start + text[start..].find("    }\n").expect("end of web-1") + 6;
    std::fs::write(lab.path(), format!("{}{}", &text[..start], &text[end..])).expect("write");
    let out = lab.run(&["apply", "--yes"]);
    assert_code(&out, 0);
    let plan = stdout_of(&out);
    assert!(plan.contains("  - session:web-1") && plan.contains("  - image:ws/box"), "{plan}");
    let status = json(&stdout_of(&lab.run(&["status", "--format", "json"])));
    assert_eq!(status["clusters"][0]["nodes"][0]["images"], serde_json::json!([]));
    let again = lab.run(&["apply", "--yes"]);
    assert!(stdout_of(&again).contains("No changes."), "{}", stdout_of(&again));
}

/// On a terminal, apply draws a progress bar per node; without one it prints a line per change.
#[test]
fn progress_shows_as_bars_on_a_terminal_and_lines_otherwise() {
    let lab = LocalLab::new();
    let command = format!("{} apply --yes {}", env!("CARGO_BIN_EXE_bai"), lab.path().display());
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("BAI_HOME", lab.dir.path().join("agent-home"))
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) runs");
    let screen = stdout_of(&out);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("ws [") && screen.contains("6/6"), "a bar for node ws: {screen}");
    let plain = lab.run(&["destroy", "--yes"]);
    assert_code(&plain, 0);
    assert!(stderr_of(&plain).contains("ok   ws: - session:web-1"), "{}", stderr_of(&plain));
}
