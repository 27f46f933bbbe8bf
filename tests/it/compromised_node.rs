//! A compromised node attacks the controller (issue 11, items 5 and 6): a real sshd node whose agent is
//! replaced by tests/fixtures/agents/compromised.py answers `hello` like bai's own and then lies. The
//! controller must bound what it reads, escape what it prints and fail that node alone, while the
//! healthy node beside it is served as usual.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::lab::SshLab;

/// A lab of two nodes: `node0` honest, `node1` compromised in `mode`.
fn lab(mode: &str) -> SshLab {
    crate::support::images::require_docker();
    let mut lab = SshLab::new("hostile", 2);
    lab.write(&["1", "1"]);
    lab.compromise(1, mode);
    lab
}

/// What one run of the real binary did: its streams, exit code and peak memory (from `wait4`).
struct Run {
    stdout: String,
    stderr: String,
    code: Option<i32>,
    max_rss_kib: i64,
    took: Duration,
}

/// Runs `bai ARGS…`, killing it after `limit` (a hang fails the test; it never hangs the suite).
fn run(args: &[&str], limit: Duration) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_bai"))
        .args(args)
        .current_dir(crate::support::root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("bai runs");
    let pid = child.id() as libc::pid_t;
    // Reaped by `wait4` below, which `Child::wait` cannot do: it gives no resource usage.
    std::mem::forget(child);
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be filled in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child, with pointers to locals that outlive the call.
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if done == pid {
            break;
        }
        if started.elapsed() > limit {
            // SAFETY: kill(2) and wait4 of our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::wait4(pid, &mut status, 0, &mut usage);
            }
            panic!(
                "`bai {}` did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let exit = std::process::ExitStatus::from_raw(status);
    Run {
        stdout: String::from_utf8_lossy(&std::fs::read(&out).expect("stdout")).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err).expect("stderr")).into_owned(),
        code: exit.code(),
        max_rss_kib: usage.ru_maxrss,
        took: started.elapsed(),
    }
}

/// No byte of what was printed can move the cursor, clear a line or start a new one mid-message.
fn assert_inert(text: &str, what: &str) {
    assert!(!text.contains('\u{1b}'), "{what}: an escape character reached the terminal:\n{text}");
    assert!(!text.contains('\r'), "{what}: a carriage return reached the terminal:\n{text}");
    assert!(!text.contains('\u{9b}') && !text.contains('\u{202e}'), "{what}: a control reached the terminal:\n{text}");
    assert!(!text.lines().any(|l| l.starts_with("ok node1 forged")), "{what}: a forged line:\n{text}");
}

#[test]
fn an_agent_that_never_says_it_is_ready_fails_its_node_alone() {
    let lab = lab("never-ready");
    let path = lab.path().display().to_string();
    let r = run(&["plan", path.as_str()], Duration::from_secs(120));
    let all = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(1), "{all}");
    assert!(all.contains("bai::agent::start") && all.contains("node `node1`"), "{all}");
    assert!(all.contains("the agent was installed but does not start"), "{all}");
    assert!(!all.contains("node `node0`"), "the honest node is served: {all}");
}

#[test]
fn a_nodes_error_text_cannot_drive_the_terminal() {
    let lab = lab("escape");
    let path = lab.path().display().to_string();
    for args in [vec!["status", path.as_str()], vec!["plan", path.as_str()], vec!["apply", "--yes", path.as_str()]] {
        let what = args.join(" ");
        let r = run(&args, Duration::from_secs(120));
        assert_eq!(r.code, Some(1), "{what}\n{}\n{}", r.stdout, r.stderr);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert_inert(&all, &what);
        // What the node sent is shown, visibly escaped, on one line.
        assert!(
            all.contains("\\u{1b}[2K\\r\\u{1b}[32mok\\u{1b}[0m node0 \\u{202e}Applied 9 of 9\\nok node1 forged"),
            "{what}:\n{all}"
        );
    }
}

#[test]
fn names_a_node_forges_are_refused_and_never_printed_raw() {
    let lab = lab("forged-names");
    let r = run(&["plan", &lab.path().display().to_string()], Duration::from_secs(120));
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert_inert(&format!("{}{}", r.stdout, r.stderr), "plan");
    assert!(r.stderr.contains("node `node1` refused: its answer to `observe` is not believable"), "{}", r.stderr);
    assert!(r.stderr.contains("bai::agent::unbelievable"), "with its code: {}", r.stderr);
    assert!(r.stderr.contains("not a name bai gives"), "{}", r.stderr);
}

#[test]
fn a_huge_error_is_cut_short() {
    let lab = lab("long-error");
    let r = run(&["status", &lab.path().display().to_string()], Duration::from_secs(120));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("more bytes)"), "the message says it was cut: {}", &r.stderr[..r.stderr.len().min(2000)]);
    assert!(r.stderr.len() < 16 * 1024, "a 1 MB message from the node printed {} bytes", r.stderr.len());
    // The honest node is reported as usual.
    assert!(r.stdout.contains("node0"), "{}", r.stdout);
}

#[test]
fn an_answer_that_never_ends_fails_that_node_alone_in_bounded_memory() {
    let lab = lab("endless");
    let path = lab.path().display().to_string();
    for args in [vec!["status", path.as_str()], vec!["watch", "--once", path.as_str()]] {
        let what = args.join(" ");
        let r = run(&args, Duration::from_secs(120));
        assert_eq!(r.code, Some(1), "{what}\n{}\n{}", r.stdout, r.stderr);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(all.contains("grew past 16 MiB without ending"), "{what}: {all}");
        assert!(all.len() < 64 * 1024, "{what}: printed {} bytes", all.len());
        assert!(r.max_rss_kib < 200 * 1024, "{what}: peak memory {} MiB", r.max_rss_kib / 1024);
        assert!(r.took < Duration::from_secs(60), "{what}: took {:?}", r.took);
        assert!(all.contains("node0"), "{what}: the honest node is reported: {all}");
    }
}

#[test]
fn a_reply_with_too_many_entries_is_not_planned() {
    let lab = lab("many");
    let r = run(&["plan", &lab.path().display().to_string()], Duration::from_secs(120));
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("it reported 100000 sessions, more than the 10000 bai takes from one node"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("ghost-"), "nothing of the node's answer was planned");
}
