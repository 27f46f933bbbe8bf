//! A hostile lab file or pull request (issue 11): what `validate`, `fmt` and `diff` do with labs written
//! to hurt the machine that reads them or to leak what it holds. Every test runs the real binary, as the
//! CI review job (`examples/ci/review.sh`) does, with a deadline: a hang fails the test instead of it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{bai, stderr_of, stdout_of};

/// Long enough for a debug build on a loaded 2-core machine; far shorter than any of the hangs.
const DEADLINE: Duration = Duration::from_secs(30);

/// A token such as the one CI checkouts persist in `.git/config`.
const TOKEN: &str = "ghs_SECRETTOKEN0123456789abcdef";

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
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

/// A checkout whose `.git/config` holds a token, with a lab in `labs/`.
fn checkout() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        &dir.path().join(".git/config"),
        &format!("[http \"https://github.com/\"]\n\textraheader = AUTHORIZATION: basic {TOKEN}\n"),
    );
    let lab = dir.path().join("labs/lab.kdl");
    write(&lab, "cluster \"lab\" {\n    node \"n\" local=#true\n}\n");
    (dir, lab)
}

fn lab_including(lab: &Path, include: &str) {
    write(lab, &format!("cluster \"lab\" {{\n    node \"n\" local=#true\n    include \"{include}\"\n}}\n"));
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

// ---- item 11: `include` stays inside the lab's tree and never echoes a file that is not a lab ----

#[test]
fn include_of_git_config_never_prints_the_token() {
    let (dir, lab) = checkout();
    // Through `..`, an absolute path, a symbolic link with a lab's name, and a file named like a lab.
    std::os::unix::fs::symlink("../.git/config", dir.path().join("labs/nodes.kdl")).expect("symlink");
    let absolute = dir.path().join(".git/config");
    for include in ["../.git/config", s(&absolute), "nodes.kdl", "../.git/*", "../**/config"] {
        lab_including(&lab, include);
        for args in [
            vec!["validate", s(&lab)],
            vec!["validate", "--deny-warnings", "--color", "never", s(&lab)],
            vec!["validate", "--format", "json", s(&lab)],
            vec!["diff", s(&lab), s(&lab)],
            vec!["plan", "--offline", s(&lab)],
        ] {
            let (out, _) = run(&args);
            let text = all_output(&out);
            assert_eq!(out.status.code(), Some(1), "{include}: {args:?} fails:\n{text}");
            assert!(!text.contains(TOKEN), "{include}: {args:?} printed the token:\n{text}");
            assert!(!text.contains("extraheader"), "{include}: {args:?} echoed the file:\n{text}");
            assert!(text.contains("bai::include::outside_tree"), "{include}: {args:?}:\n{text}");
        }
    }
}

#[test]
fn include_of_a_file_that_is_not_a_lab_is_refused_unread() {
    let (dir, lab) = checkout();
    // Inside the tree, but not a lab: a secret beside it, and a link named like a lab that points at it.
    write(&dir.path().join("labs/token.txt"), &format!("{TOKEN}\n"));
    std::os::unix::fs::symlink("token.txt", dir.path().join("labs/token.kdl")).expect("symlink");
    for include in ["token.txt", "token.kdl", "*.txt"] {
        lab_including(&lab, include);
        let (out, _) = run(&["validate", s(&lab)]);
        let text = all_output(&out);
        assert!(!text.contains(TOKEN), "{include}: printed the token:\n{text}");
        if include != "*.txt" {
            assert_eq!(out.status.code(), Some(1), "{include}:\n{text}");
            assert!(text.contains("bai::include::not_kdl"), "{include}:\n{text}");
        }
    }
}

#[test]
fn include_of_proc_and_absolute_paths_is_refused_at_the_include() {
    let (_dir, lab) = checkout();
    for include in ["/proc/self/environ", "/etc/passwd", "/proc/self/cwd/../x.kdl", "../../../../../../etc/x.kdl"] {
        lab_including(&lab, include);
        let (out, _) = run(&["validate", "--color", "never", s(&lab)]);
        let text = all_output(&out);
        assert_eq!(out.status.code(), Some(1), "{include}:\n{text}");
        assert!(text.contains("bai::include::outside_tree"), "{include}:\n{text}");
        // The diagnostic points at the include itself.
        assert!(text.contains(&format!("include \"{include}\"")), "{include}: no snippet of the include:\n{text}");
        assert!(!text.contains("root:"), "{include}: echoed /etc/passwd:\n{text}");
    }
}

#[test]
fn include_root_widens_the_tree() {
    let (dir, lab) = checkout();
    write(&dir.path().join("common/nodes.kdl"), "node \"m\" address=\"10.0.0.2\"\n");
    lab_including(&lab, "../common/*.kdl");
    let (out, _) = run(&["validate", s(&lab)]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(all_output(&out).contains("bai::include::outside_tree"), "{}", all_output(&out));
    for args in [
        vec!["validate", "--include-root", s(dir.path()), s(&lab)],
        vec!["--include-root", s(dir.path()), "plan", "--offline", s(&lab)],
        vec!["diff", "--include-root", s(dir.path()), s(&lab), s(&lab)],
    ] {
        let (out, _) = run(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}:\n{}", all_output(&out));
    }
    // `.git/config` is in that wider tree, and still not a lab.
    lab_including(&lab, "../.git/config");
    let (out, _) = run(&["validate", "--include-root", s(dir.path()), s(&lab)]);
    assert!(!all_output(&out).contains(TOKEN), "{}", all_output(&out));
    assert!(all_output(&out).contains("bai::include::not_kdl"), "{}", all_output(&out));
}

#[test]
fn a_glob_over_the_whole_file_system_fails_fast() {
    let (_dir, lab) = checkout();
    for include in ["/**/*.kdl", "../../../../../../../**/*.kdl", "/proc/**/*.kdl"] {
        lab_including(&lab, include);
        let (out, took) = run(&["validate", s(&lab)]);
        assert_eq!(out.status.code(), Some(1), "{include}:\n{}", all_output(&out));
        assert!(all_output(&out).contains("bai::include::outside_tree"), "{include}:\n{}", all_output(&out));
        assert!(took < Duration::from_secs(10), "{include} took {took:?}");
    }
}

#[test]
fn a_glob_does_not_follow_a_link_out_of_the_tree() {
    let (dir, lab) = checkout();
    write(&dir.path().join("outside/secret.kdl"), &format!("node \"{TOKEN}\"\n"));
    write(&dir.path().join("labs/nodes/a.kdl"), "node \"a\" address=\"10.0.0.3\"\n");
    std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("labs/nodes/out")).expect("symlink");
    lab_including(&lab, "nodes/**/*.kdl");
    let (out, _) = run(&["validate", s(&lab)]);
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("bai::include::outside_tree"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[test]
fn a_glob_matching_too_many_files_is_refused() {
    let (dir, lab) = checkout();
    let many = dir.path().join("labs/many");
    std::fs::create_dir_all(&many).expect("mkdir");
    for i in 0..=bai::config::load::MAX_GLOB_MATCHES {
        std::fs::write(many.join(format!("{i:05}.kdl")), "").expect("write");
    }
    lab_including(&lab, "many/*.kdl");
    let (out, _) = run(&["validate", s(&lab)]);
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("bai::include::too_many"), "{text}");
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

#[test]
fn an_included_fifo_is_refused_without_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    mkfifo(&dir.path().join("pipe.kdl"));
    let lab = dir.path().join("lab.kdl");
    for include in ["pipe.kdl", "*.kdl"] {
        lab_including(&lab, include);
        let (out, took) = run(&["validate", s(&lab)]);
        let text = all_output(&out);
        assert_eq!(out.status.code(), Some(1), "{include}:\n{text}");
        assert!(text.contains("FIFO"), "{include}:\n{text}");
        assert!(took < Duration::from_secs(10), "{include} took {took:?}");
    }
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

// ---- item 14: many diagnostics render in linear time ----

#[test]
fn twenty_thousand_errors_render_in_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = dir.path().join("many.kdl");
    let body: String = (0..20_000).map(|i| format!("    bogus{i} 1\n")).collect();
    write(&lab, &format!("cluster \"c\" {{\n{body}}}\n"));
    let (out, took) = run(&["validate", "--color", "never", s(&lab)]);
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.ends_with("20000 errors, 0 warnings\n"), "{}", &text[text.len().saturating_sub(300)..]);
    // The last one is rendered like the first, with its line number and its neighbours.
    assert!(text.contains("20002 │ }"), "{}", &text[text.len().saturating_sub(600)..]);
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn twenty_thousand_errors_on_one_line_print_a_window_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = dir.path().join("one-line.kdl");
    let body: String = (0..20_000).map(|i| format!("bogus{i} 1; ")).collect();
    write(&lab, &format!("cluster \"c\" {{ {body}}}\n"));
    let (out, took) = run(&["validate", "--color", "never", s(&lab)]);
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.ends_with("20000 errors, 0 warnings\n"), "{}", &text[text.len().saturating_sub(300)..]);
    // Each label shows a window of the line around it (the whole line would be 270 KB, 5 GB in all), and
    // the header still gives its column.
    assert!(text.len() < 20 << 20, "{} bytes", text.len());
    let last = format!("one-line.kdl:1:{}]", body.find("bogus19999").expect("there") + 15);
    assert!(text.contains(&last), "no `{last}` in {}", &text[text.len().saturating_sub(600)..]);
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
