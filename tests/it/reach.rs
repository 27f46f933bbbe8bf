//! Reaching what runs, as a lab's people do: `bai logs`, `exec`, `port-forward` and `cp` against a real
//! OpenSSH node (the agent runs as its SSH user) and the machine's Docker engine; `exec -it` driven
//! through a real terminal (tmux); the forwarded port read by a real HTTP client (curl).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::images::docker_ok;
use crate::support::lab::{SshLab, text};
use crate::support::running::Running;
use crate::support::{stderr_of, stdout_of};

fn bai_path() -> PathBuf {
    assert_cmd::cargo::cargo_bin("bai")
}

/// A lab of one real sshd node holding `sessions` (KDL lines inside the cluster), applied.
fn lab_with(prefix: &str, sessions: &str) -> SshLab {
    let lab = SshLab::new(prefix, 1);
    lab.write_text(&format!("{}{}{sessions}}}\n", lab.header(), lab.node(0)));
    lab.expect(0, &["apply", "--yes", "--accept-new-host-keys"]);
    lab
}

/// `bai ARGS…` with the lab file first after the command, as every reaching command takes it.
fn reach(lab: &SshLab, command: &str, rest: &[&str]) -> std::process::Output {
    let lab_path = lab.path();
    let mut args = vec![command, lab_path.to_str().expect("utf-8 path")];
    args.extend_from_slice(rest);
    lab.bai(&args)
}

/// `bai COMMAND LAB REST…` running, its stdout lines read as they come.
fn running(lab: &SshLab, command: &str, rest: &[&str]) -> Running {
    let lab_path = lab.path();
    let mut args = vec![command, lab_path.to_str().expect("utf-8 path")];
    args.extend_from_slice(rest);
    Running::start(&args)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

const TALKER: &str = r#"    session "talker" image="box" node="node0" {
        command "/bin/busybox" "sh" "-c" "i=0; while [ $i -lt 5 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done; exec /bin/busybox sleep 3600"
    }
    session "bouncer" image="box" node="node0" {
        restart "on-failure"
        command "/bin/busybox" "sh" "-c" "echo boot; /bin/busybox sleep 1; exit 1"
    }
"#;

#[test]
fn logs_tail_since_follow_and_restarts() {
    let lab = lab_with("logs", TALKER);
    // Whole log, streams apart.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let out = reach(&lab, "logs", &["talker"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        if stdout_of(&out).contains("out 4") && stderr_of(&out).contains("err 4") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stdout_of(&all), "out 0\nout 1\nout 2\nout 3\nout 4\n", "{}", text(&all));
    assert_eq!(stderr_of(&all), "err 0\nerr 1\nerr 2\nerr 3\nerr 4\n", "{}", text(&all));

    // --tail counts lines of both streams, as `docker logs` does; --timestamps leads each with its time.
    let tail = reach(&lab, "logs", &["talker", "--tail", "2", "--timestamps"]);
    let (out, err) = (stdout_of(&tail), stderr_of(&tail));
    assert_eq!(out.lines().count() + err.lines().count(), 2, "{}", text(&tail));
    assert!(out.lines().chain(err.lines()).all(|l| l.starts_with("20") && l.contains("Z ")), "{}", text(&tail));
    // The engine writes the two streams from two copiers: which of the last lines are last is its call.
    let last = ["out 3", "out 4", "err 3", "err 4"];
    assert!(out.lines().chain(err.lines()).all(|l| last.iter().any(|w| l.ends_with(w))), "{}", text(&tail));
    assert!(out.lines().all(|l| l.contains("out")) && err.lines().all(|l| l.contains("err")), "{}", text(&tail));

    // --since: a time after every line gives nothing; an hour ago gives everything.
    let later = reach(&lab, "logs", &["talker", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!((stdout_of(&later).as_str(), later.status.code()), ("", Some(0)), "{}", text(&later));
    let hour = reach(&lab, "logs", &["talker", "--since", "1h"]);
    assert_eq!(stdout_of(&hour), stdout_of(&all));

    // --follow sees a new line within a second, and ends by itself when the container stops.
    // (Without --tail: which stream's line is the log's last is the engine's call.)
    let mut follow = running(&lab, "logs", &["talker", "--follow"]);
    follow.wait_for("the last line", Duration::from_secs(10), |l| l == "out 4");
    let written = Instant::now();
    let said = reach(&lab, "exec", &["talker", "--", "/bin/busybox", "sh", "-c", "echo fresh line > /proc/1/fd/1"]);
    assert_eq!(said.status.code(), Some(0), "{}", text(&said));
    follow.wait_for("the new line", Duration::from_secs(5), |l| l == "fresh line");
    let took = written.elapsed();
    assert!(took < Duration::from_secs(2), "the new line took {took:?} (exec included)");
    docker_ok(&["stop", "-t", "1", &lab.container_name("talker")]);
    assert_eq!(follow.ends_within(Duration::from_secs(15)), Some(0), "follow ends when the container stops");

    // --all: every session, each line led by its name, padded to the longest; whole lines only.
    let all = reach(&lab, "logs", &["--all", "--since", "1h"]);
    assert_eq!(all.status.code(), Some(0), "{}", text(&all));
    let out = stdout_of(&all);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"talker  | out 4") && lines.contains(&"bouncer | boot"), "{}", text(&all));
    assert!(lines.iter().all(|l| l.starts_with("talker  | ") || l.starts_with("bouncer | ")), "{}", text(&all));
    assert!(stderr_of(&all).lines().any(|l| l == "talker  | err 0"), "{}", text(&all));

    // A follow stops cleanly on SIGINT (Ctrl-C), exit 0.
    let mut interrupted = running(&lab, "logs", &["bouncer", "--follow", "--tail", "1"]);
    interrupted.wait_for("a boot line", Duration::from_secs(10), |l| l == "boot");
    let pid = interrupted.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().expect("kill runs").success());
    assert_eq!(interrupted.ends_within(Duration::from_secs(5)), Some(0), "SIGINT ends a follow cleanly");

    // A container the engine restarts is followed across its restarts: each new run's `boot` line, once.
    let restarts_before = restart_count(&lab, "bouncer");
    let mut bouncing = running(&lab, "logs", &["bouncer", "--follow", "--tail", "0"]);
    for _ in 0..2 {
        bouncing.wait_for("a boot after a restart", Duration::from_secs(20), |l| l == "boot");
    }
    // The engine counts a restart when a run exits, before the next one starts: the first `boot` seen may
    // be the run that was already under way when the count was read, so only the second is sure to be new.
    assert!(restart_count(&lab, "bouncer") > restarts_before, "the engine restarted the container meanwhile");
    assert!(bouncing.child.try_wait().expect("wait").is_none(), "still following: {:?}", bouncing.seen);
    assert_eq!(bouncing.seen, ["boot", "boot"], "no line twice, none of before");
}

fn restart_count(lab: &SshLab, session: &str) -> u64 {
    docker_ok(&["inspect", "-f", "{{.RestartCount}}", &lab.container_name(session)]).trim().parse().unwrap_or(0)
}

const SHELL: &str = r#"    session "shell" image="box" node="node0" {
        command "/bin/busybox" "sleep" "3600"
    }
"#;

#[test]
fn exec_codes_streams_and_copies_both_ways() {
    let lab = lab_with("exec", SHELL);
    let code =
        reach(&lab, "exec", &["shell", "--", "/bin/busybox", "sh", "-c", "echo to-out; echo to-err >&2; exit 3"]);
    assert_eq!(code.status.code(), Some(3), "{}", text(&code));
    assert_eq!((stdout_of(&code).as_str(), stderr_of(&code).as_str()), ("to-out\n", "to-err\n"));
    // Arguments cross as data: nothing is read by a shell on the way.
    let literal = reach(&lab, "exec", &["shell", "--", "/bin/busybox", "echo", "$HOME; `id`", "a  b"]);
    assert_eq!(stdout_of(&literal), "$HOME; `id` a  b\n", "{}", text(&literal));

    // Binary input in and out, byte for byte.
    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut cat = Command::new(bai_path())
        .args(["exec", "-i"])
        .arg(lab.path())
        .args(["shell", "--", "/bin/busybox", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bai starts");
    let mut stdin = cat.stdin.take().expect("stdin");
    let feed = input.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let out = cat.wait_with_output().expect("bai ends");
    writer.join().expect("writer").expect("input written");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(out.stdout.len(), input.len());
    assert_eq!(sha256(&out.stdout), sha256(&input));

    // `bai exec … tar c | tar x` works: stdout is a byte stream.
    let tar = reach(&lab, "exec", &["shell", "--", "/bin/busybox", "tar", "c", "-C", "/", "bin"]);
    assert_eq!(tar.status.code(), Some(0), "{}", stderr_of(&tar));
    let names: Vec<String> = tar::Archive::new(&tar.stdout[..])
        .entries()
        .expect("a tar archive")
        .map(|e| e.expect("entry").path().expect("path").display().to_string())
        .collect();
    assert!(names.contains(&"bin/busybox".to_string()), "{names:?}");

    // A tree with a symlink, modes and an empty directory, in and back out, compared by hash.
    let src = lab.file("tree");
    std::fs::create_dir_all(src.join("sub/empty")).expect("mkdir");
    std::fs::write(src.join("run.sh"), b"#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::fs::write(src.join("sub/data.bin"), &input[..100_000]).expect("write");
    std::os::unix::fs::symlink("../run.sh", src.join("sub/link")).expect("symlink");
    let into = reach(&lab, "cp", &[src.to_str().unwrap(), "shell:/home/work"]);
    assert_eq!(into.status.code(), Some(0), "{}", text(&into));
    let inside = reach(&lab, "exec", &["shell", "--", "/bin/busybox", "sha256sum", "/home/work/tree/sub/data.bin"]);
    assert!(stdout_of(&inside).starts_with(&sha256(&input[..100_000])), "{}", text(&inside));
    let mode = reach(&lab, "exec", &["shell", "--", "/bin/busybox", "stat", "-c", "%a", "/home/work/tree/run.sh"]);
    assert_eq!(stdout_of(&mode).trim(), "750");
    // As a new name (the destination does not exist), then back out under another.
    let renamed = reach(&lab, "cp", &[src.to_str().unwrap(), "shell:copy"]);
    assert_eq!(renamed.status.code(), Some(0), "{}", text(&renamed));
    let back = lab.file("back");
    let out = reach(&lab, "cp", &["shell:copy", back.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stderr_of(&out).contains("copied 2 files, 3 directories, 1 link"), "{}", text(&out));
    assert_eq!(tree_digest(&src), tree_digest(&back));
    // Into an existing directory: it goes inside, under its own name.
    let dir = lab.file("into");
    std::fs::create_dir(&dir).expect("mkdir");
    let out = reach(&lab, "cp", &["shell:/home/work/tree", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(tree_digest(&src), tree_digest(&dir.join("tree")));

    // A session that plants links: copied as links, never followed, nothing written outside DST.
    let victim = lab.file("victim");
    std::fs::create_dir(&victim).expect("mkdir");
    std::fs::write(victim.join("secret"), b"untouched").expect("write");
    let plant = format!(
        "mkdir -p /home/work/out && ln -s {} /home/work/out/link && ln -s / /home/work/out/root && echo data > /home/work/out/file",
        victim.display()
    );
    let planted = reach(&lab, "exec", &["shell", "--", "/bin/busybox", "sh", "-c", &plant]);
    assert_eq!(planted.status.code(), Some(0), "{}", text(&planted));
    let dest = lab.file("dest");
    std::fs::create_dir(&dest).expect("mkdir");
    let first = reach(&lab, "cp", &["shell:out", dest.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(std::fs::read_link(dest.join("out/link")).expect("a link"), victim);
    // The session turns the link into a directory holding a file: copied again over the first copy, the
    // file would land in the victim through the link left here. Refused instead.
    let swap = "rm /home/work/out/link && mkdir /home/work/out/link && echo owned > /home/work/out/link/secret";
    let swapped = reach(&lab, "exec", &["shell", "--", "/bin/busybox", "sh", "-c", swap]);
    assert_eq!(swapped.status.code(), Some(0), "{}", text(&swapped));
    let second = reach(&lab, "cp", &["shell:out", dest.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(stderr_of(&second).contains("bai::cp::failed"), "{}", text(&second));
    assert_eq!(std::fs::read(victim.join("secret")).expect("read"), b"untouched");
    assert_eq!(std::fs::read_dir(&victim).expect("ls").count(), 1, "nothing new in the victim");
}

/// Every entry under `root`: relative name, kind, mode, and content hash or link target, sorted.
fn tree_digest(root: &Path) -> Vec<String> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(at).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(root).expect("under root").display().to_string();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                out.push(format!("{rel} link {}", std::fs::read_link(&path).expect("link").display()));
            } else if meta.is_dir() {
                out.push(format!("{rel} dir {mode:o}"));
                walk(root, &path, out);
            } else {
                out.push(format!("{rel} file {mode:o} {}", sha256(&std::fs::read(&path).expect("read"))));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn exec_with_a_terminal_in_tmux() {
    let lab = lab_with("tty", SHELL);
    let socket = lab.file("tmux.sock");
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux runs (scripts/test installs it)");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let after = lab.file("after");
    let script = format!(
        "{} exec -it {} shell -- /bin/busybox sh; echo \"rc=$?\" > {}; stty -a >> {}; sleep 60",
        bai_path().display(),
        lab.path().display(),
        after.display(),
        after.display()
    );
    tmux(&["new-session", "-d", "-x", "80", "-y", "24", "-s", "t", &script]);
    let _kill = KillTmux(socket.clone());
    let screen = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pane = tmux(&["capture-pane", "-p", "-t", "t"]);
            if pane.contains(want) {
                return pane;
            }
            assert!(Instant::now() < deadline, "no `{want}` on the screen:\n{pane}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // A prompt answered.
    screen("#");
    tmux(&["send-keys", "-t", "t", "read x; echo got:$x", "Enter"]);
    tmux(&["send-keys", "-t", "t", "hello", "Enter"]);
    screen("got:hello");
    // The window's size, then a change of it, seen by the terminal in the container.
    tmux(&["send-keys", "-t", "t", "stty size", "Enter"]);
    screen("24 80");
    tmux(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["send-keys", "-t", "t", "clear; stty size", "Enter"]);
    screen("30 100");
    // Ctrl-C reaches the remote command (its terminal's SIGINT), not bai.
    tmux(&["send-keys", "-t", "t", "/bin/busybox sleep 100", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", "t", "C-c", ""]);
    tmux(&["send-keys", "-t", "t", "echo after:$?", "Enter"]);
    screen("after:130");
    // The remote exit code becomes bai's, and the terminal is restored.
    tmux(&["send-keys", "-t", "t", "exit 5", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&after).is_ok_and(|t| t.contains("rows")) {
        assert!(Instant::now() < deadline, "bai exec -it did not end:\n{}", tmux(&["capture-pane", "-p", "-t", "t"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = std::fs::read_to_string(&after).expect("read");
    assert!(after.starts_with("rc=5\n"), "{after}");
    assert!(after.contains(" icanon") && after.contains(" echo "), "the terminal is cooked again:\n{after}");
}

struct KillTmux(PathBuf);

impl Drop for KillTmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.0).arg("kill-server").output();
    }
}

const WEB: &str = r#"    session "webserver" image="box" node="node0" {
        command "/bin/busybox" "sh" "-c" "mkdir -p /www && echo hello > /www/index.html && /bin/busybox dd if=/dev/urandom of=/www/big bs=1048576 count=16 2>/dev/null && exec /bin/busybox httpd -f -p 8080 -h /www"
        port http=8080
        port admin=9090
    }
    session "stopped" image="box" node="node0" {
        command "/bin/busybox" "true"
    }
"#;

#[test]
fn port_forward_carries_http_and_bad_input_is_refused_clearly() {
    let lab = lab_with("fwd", WEB);
    let mut forward = running(&lab, "port-forward", &["webserver", ":http", ":8080"]);
    let mut ports = Vec::new();
    for _ in 0..2 {
        let line =
            forward.wait_for("the forwarding line", Duration::from_secs(20), |l| l.starts_with("Forwarding from"));
        assert!(line.contains("-> 8080 (session `webserver` on node `node0`)"), "{line}");
        let port: u16 = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("a port");
        ports.push(port);
    }
    // A real HTTP client through the forward.
    let url = format!("http://127.0.0.1:{}/index.html", ports[0]);
    let page = Command::new("curl").args(["-sS", "--max-time", "10", &url]).output().expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&page.stdout), "hello\n", "{}", String::from_utf8_lossy(&page.stderr));
    // Two connections at once, interleaved.
    let mut a = TcpStream::connect(("127.0.0.1", ports[0])).expect("connect");
    let mut b = TcpStream::connect(("127.0.0.1", ports[1])).expect("connect");
    a.write_all(b"GET /index.html HTTP/1.0\r\n").expect("write");
    b.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").expect("write");
    a.write_all(b"\r\n").expect("write");
    for s in [&mut a, &mut b] {
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("HTTP/1.") && answer.ends_with("hello\n"), "{answer}");
    }
    // A large download, checked by hash against the file in the session.
    let big = lab.file("big");
    let url = format!("http://127.0.0.1:{}/big", ports[1]);
    let got = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o", big.to_str().unwrap(), &url])
        .output()
        .expect("curl");
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let there = reach(&lab, "exec", &["webserver", "--", "/bin/busybox", "sha256sum", "/www/big"]);
    let bytes = std::fs::read(&big).expect("read");
    assert_eq!(bytes.len(), 16 << 20);
    assert!(stdout_of(&there).starts_with(&sha256(&bytes)), "{}", text(&there));
    drop(forward);

    // Bad input: each a clear error, its code, the node named, exit 1.
    let refused = |lab: &SshLab, args: &[&str], code: &str, words: &[&str]| {
        let out = reach(lab, args[0], &args[1..]);
        assert_eq!(out.status.code(), Some(1), "{args:?}\n{}", text(&out));
        let err = stderr_of(&out);
        assert!(err.contains(code), "{args:?}: no {code}\n{err}");
        for w in words {
            assert!(err.contains(w), "{args:?}: no `{w}`\n{err}");
        }
    };
    refused(&lab, &["logs", "websrver"], "bai::reach::unknown_session", &["did you mean `webserver`?"]);
    refused(&lab, &["exec", "webservr", "--", "/bin/busybox", "true"], "bai::reach::unknown_session", &["webserver"]);
    refused(&lab, &["port-forward", "webserver", "admn"], "bai::reach::no_port", &["did you mean `admin`?"]);
    refused(&lab, &["port-forward", "webserver", ":admin"], "bai::reach::port_closed", &["node `node0`", "port 9090"]);
    let stopped = Instant::now() + Duration::from_secs(10);
    while !docker_ok(&["inspect", "-f", "{{.State.Status}}", &lab.container_name("stopped")]).contains("exited") {
        assert!(Instant::now() < stopped, "the `stopped` session never stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    refused(
        &lab,
        &["exec", "stopped", "--", "/bin/busybox", "true"],
        "bai::reach::not_running",
        &["node `node0`", "exit code 0"],
    );
    refused(&lab, &["port-forward", "stopped", "80"], "bai::reach::not_running", &["node `node0`"]);
    refused(&lab, &["cp", "nothere:/x", "/tmp"], "bai::cp::no_session", &[]);
    // The node down: its sshd stopped.
    let mut lab = lab;
    lab.sshd.stop(0);
    let lab = lab;
    refused(&lab, &["logs", "webserver"], "bai::ssh::", &["node `node0`"]);
    refused(&lab, &["exec", "webserver", "--", "/bin/busybox", "true"], "bai::ssh::", &["node `node0`"]);
}
