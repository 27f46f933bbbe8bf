//! A hostile lab file or pull request (issue 11): what `validate`, `fmt` and `diff` do with labs written
//! to hurt the machine that reads them or to leak what it holds. Every test runs the real binary, as the
//! CI review job (`examples/ci/review.sh`) does, with a deadline: a hang fails the test instead of it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{bai, stderr_of, stdout_of};

/// Long enough for a debug build on a loaded 2-core machine; far shorter than any of the hangs.
const DEADLINE: Duration = Duration::from_secs(30);

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// Runs bai with the deadline; the output, and how long it took.
fn run(args: &[&str]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = bai().args(args).timeout(DEADLINE).output().expect("bai runs");
    (out, start.elapsed())
}

fn all_output(out: &std::process::Output) -> String {
    format!("{}{}", stdout_of(out), stderr_of(out))
}

fn lab_including(lab: &Path, include: &str) {
    write(lab, &format!("cluster \"lab\" {{\n    node \"n\" local=#true\n    include \"{include}\"\n}}\n"));
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

// ---- item 17: a FIFO, a device or a huge file given as FILE ----

#[test]
fn a_fifo_given_as_the_lab_is_refused_without_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("lab.kdl");
    mkfifo(&fifo);
    for args in [vec!["validate", s(&fifo)], vec!["fmt", "--check", s(&fifo)], vec!["plan", "--offline", s(&fifo)]] {
        let (out, took) = run(&args);
        let text = all_output(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}:\n{text}");
        assert!(text.contains("not a regular file") && text.contains("FIFO"), "{args:?}:\n{text}");
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    }
}

#[test]
fn a_device_or_a_directory_given_as_the_lab_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, kind) in [("/dev/zero", "character device"), (s(dir.path()), "directory")] {
        for args in [vec!["validate", path], vec!["fmt", "--check", path]] {
            let (out, _) = run(&args);
            let text = all_output(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}:\n{text}");
            assert!(text.contains(kind), "{args:?}:\n{text}");
        }
    }
}

#[test]
fn a_lab_file_over_the_size_cap_is_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.kdl");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(bai::config::load::MAX_FILE_SIZE + 1).expect("a sparse file");
    let lab = dir.path().join("lab.kdl");
    lab_including(&lab, "big.kdl");
    for (args, file) in [
        (vec!["validate", s(&big)], &big),
        (vec!["fmt", "--check", s(&big)], &big),
        (vec!["validate", "--color", "never", s(&lab)], &lab),
    ] {
        let (out, _) = run(&args);
        let text = all_output(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?} ({}):\n{text}", file.display());
        assert!(text.contains("larger than 64 MiB"), "{args:?}:\n{text}");
    }
    // The included one is reported at its include.
    let (out, _) = run(&["validate", "--color", "never", s(&lab)]);
    assert!(all_output(&out).contains("include \"big.kdl\""), "{}", all_output(&out));
}

// ---- item 13: deep nesting is a diagnostic, not a stack overflow ----

fn nested(depth: usize) -> String {
    format!("cluster \"c\" {{\n{}{}\n}}\n", "node \"a\" {".repeat(depth), "}".repeat(depth))
}

#[test]
fn deeply_nested_labs_are_refused_not_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = dir.path().join("blocks.kdl");
    write(&blocks, &nested(2_000));
    let comments = dir.path().join("comments.kdl");
    write(&comments, &format!("a {}{}\n", "/*".repeat(100_000), "*/".repeat(100_000)));
    let slashdash = dir.path().join("slashdash.kdl");
    write(&slashdash, &format!("a {}{}\n", "/-{".repeat(5_000), "}".repeat(5_000)));
    let ok = dir.path().join("ok.kdl");
    write(&ok, "cluster \"c\" {\n    node \"n\" local=#true\n}\n");
    for file in [&blocks, &comments, &slashdash] {
        for args in [
            vec!["validate", s(file)],
            vec!["validate", "--format", "json", s(file)],
            vec!["fmt", "--check", s(file)],
            vec!["diff", s(&ok), s(file)],
            vec!["diff", s(file), s(&ok)],
        ] {
            let (out, _) = run(&args);
            let text = all_output(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}:\n{text}");
            assert!(text.contains("bai::kdl::too_deep"), "{args:?}:\n{text}");
        }
    }
    // An included file too.
    let lab = dir.path().join("lab.kdl");
    write(&dir.path().join("deep/part.kdl"), &format!("{}{}\n", "node \"a\" {".repeat(2_000), "}".repeat(2_000)));
    lab_including(&lab, "deep/*.kdl");
    let (out, _) = run(&["validate", s(&lab)]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(all_output(&out).contains("bai::kdl::too_deep"), "{}", all_output(&out));
}

#[test]
fn nesting_up_to_the_limit_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deep.kdl");
    // The cluster's block is level 1.
    write(&file, &nested(bai::config::parse::MAX_DEPTH - 1));
    let (out, _) = run(&["validate", s(&file)]);
    let text = all_output(&out);
    assert!(!text.contains("bai::kdl::too_deep"), "{text}");
    assert!(text.contains("bai::schema::"), "lowered and checked:\n{text}");
    write(&file, &nested(bai::config::parse::MAX_DEPTH));
    let (out, _) = run(&["validate", s(&file)]);
    assert!(all_output(&out).contains("bai::kdl::too_deep"), "{}", all_output(&out));
}
