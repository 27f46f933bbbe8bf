//! The command line as users meet it: exit codes, output streams, `--cluster`, `fmt`, `graph`, `--help`.

use crate::support::{bai, json, stderr_of, stdout_of};

#[test]
fn validate_exit_codes() {
    bai().args(["validate", "examples/workstation.kdl"]).assert().success();
    bai().args(["validate", "tests/fixtures/rules/mount.duplicate_alias.kdl"]).assert().code(1);
    // Warnings alone pass, unless denied.
    let out = bai().args(["validate", "tests/fixtures/cli/warnings.kdl"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let err = stderr_of(&out);
    assert!(err.contains("bai::unused::image") && err.contains("bai::node::no_address"), "{err}");
    assert!(err.contains("valid, 2 warnings"), "{err}");
    bai().args(["validate", "--deny-warnings", "tests/fixtures/cli/warnings.kdl"]).assert().code(1);
}

#[test]
fn validate_reports_every_file_and_names_it() {
    let out = bai()
        .args(["validate", "tests/fixtures/rules/ref.unknown_node.kdl", "tests/fixtures/rules/mount.nested.kdl"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("tests/fixtures/rules/ref.unknown_node.kdl:"), "{err}");
    assert!(err.contains("tests/fixtures/rules/mount.nested.kdl:"), "{err}");
    assert!(err.contains("did you mean"), "{err}");
}

#[test]
fn validate_json_goes_to_stdout_alone() {
    let out = bai()
        .args(["validate", "--format", "json", "tests/fixtures/rules/mount.duplicate_alias.kdl"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&stdout_of(&out));
    let first = &doc["diagnostics"][0];
    for key in ["code", "severity", "message", "help", "labels"] {
        assert!(first.get(key).is_some(), "diagnostic lacks {key}: {first}");
    }
    assert!(
        doc["diagnostics"].as_array().is_some_and(|d| d.iter().any(|d| d["code"] == "bai::mount::duplicate_alias"))
    );
    assert!(stderr_of(&out).is_empty(), "json mode prints nothing else: {}", stderr_of(&out));
}

#[test]
fn cluster_flag_selects_one_cluster() {
    // `beta` has a duplicate session; `alpha` alone is valid.
    bai().args(["validate", "tests/fixtures/cli/two-clusters.kdl"]).assert().code(1);
    bai().args(["--cluster", "alpha", "validate", "tests/fixtures/cli/two-clusters.kdl"]).assert().success();
    let out = bai()
        .args(["plan", "--offline", "--cluster", "alpha", "tests/fixtures/cli/two-clusters.kdl"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("cluster `alpha`") && !text.contains("beta"), "{text}");
    let out =
        bai().args(["--cluster", "alpah", "validate", "tests/fixtures/cli/two-clusters.kdl"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("bai::cluster::unknown") && err.contains("did you mean `alpha`?"), "{err}");
}

#[test]
fn graph_formats() {
    let out = bai().args(["graph", "examples/workstation.kdl"]).output().expect("runs");
    assert!(out.status.success());
    insta::assert_snapshot!("graph_dot_workstation", stdout_of(&out));
    let out = bai().args(["graph", "--format", "mermaid", "examples/workstation.kdl"]).output().expect("runs");
    assert!(out.status.success());
    insta::assert_snapshot!("graph_mermaid_workstation", stdout_of(&out));
    bai().args(["graph", "tests/fixtures/rules/graph.cycle.kdl"]).assert().code(1);
}

#[test]
fn graph_orders_dependencies() {
    let out = bai().args(["graph", "examples/gpu-lab/cluster.kdl"]).output().expect("runs");
    let dot = stdout_of(&out);
    // Every session hangs off its image, which hangs off its node.
    assert!(dot.contains("\"gpu-lab/node:gpu-01\" -> \"gpu-lab/image:gpu-01/"), "{dot}");
    assert!(dot.lines().filter(|l| l.contains("-> \"gpu-lab/session:")).count() >= 8, "{dot}");
}

#[test]
fn fmt_check_rewrite_and_idempotence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let messy = dir.path().join("messy.kdl");
    let source = "// lab\ncluster \"lab\" {\n  node \"gpu-01\"   address=\"10.0.0.1\" // the box\n    image \"py\" ref=\"python:3\"\n}\n";
    std::fs::write(&messy, source).expect("write");
    let out = bai().args(["fmt", "--check"]).arg(&messy).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout_of(&out).contains("messy.kdl"), "{}", stdout_of(&out));
    assert_eq!(std::fs::read_to_string(&messy).expect("read"), source, "--check changes nothing");

    bai().arg("fmt").arg(&messy).assert().success();
    let formatted = std::fs::read_to_string(&messy).expect("read");
    assert_ne!(formatted, source);
    assert!(formatted.contains("// lab") && formatted.contains("// the box"), "comments kept:\n{formatted}");
    assert!(formatted.contains("\n    node \"gpu-01\" address=\"10.0.0.1\""), "{formatted}");
    bai().args(["fmt", "--check"]).arg(&messy).assert().success();
    bai().arg("fmt").arg(&messy).assert().success();
    assert_eq!(std::fs::read_to_string(&messy).expect("read"), formatted, "formatting is idempotent");
}

#[test]
fn fmt_leaves_unparsable_files_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.kdl");
    std::fs::write(&broken, "cluster \"lab\" {\n  node \"x\n").expect("write");
    let out = bai().arg("fmt").arg(&broken).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("bai::kdl::syntax"), "{}", stderr_of(&out));
    assert_eq!(std::fs::read_to_string(&broken).expect("read"), "cluster \"lab\" {\n  node \"x\n");
}

#[test]
fn examples_are_formatted() {
    let mut files = vec![
        "examples/quickstart/lab.kdl".to_string(),
        "examples/workstation.kdl".to_string(),
        "examples/local-build/cluster.kdl".to_string(),
    ];
    files.push("examples/gpu-lab/cluster.kdl".into());
    for entry in std::fs::read_dir(crate::support::root().join("examples/gpu-lab/nodes")).expect("dir") {
        files.push(format!("examples/gpu-lab/nodes/{}", entry.expect("entry").file_name().to_string_lossy()));
    }
    let out = bai().arg("fmt").arg("--check").args(&files).output().expect("runs");
    assert!(out.status.success(), "run `bai fmt` on: {}", stdout_of(&out));
}

#[test]
fn help_explains_each_command() {
    for cmd in ["validate", "plan", "diff", "graph", "fmt"] {
        let out = bai().args([cmd, "--help"]).output().expect("runs");
        assert!(out.status.success());
        assert!(stdout_of(&out).contains("Usage: bai"), "{cmd} --help");
    }
    let out = bai().arg("--help").output().expect("runs");
    assert!(stdout_of(&out).contains("--cluster"));
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = bai().args(["validate", "no/such/lab.kdl"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("cannot read `no/such/lab.kdl`"), "{}", stderr_of(&out));
}

#[test]
fn an_on_selector_that_matches_no_node_is_an_error_before_any_node_is_reached() {
    // The gpu-lab's nodes are not reachable from here: the run must stop before trying.
    let lab = "examples/gpu-lab/cluster.kdl";
    for (args, hint) in [
        (vec!["plan", "--on", "gpu-1"], "did you mean `gpu-01`?"),
        (vec!["status", "--on", "gpu-*", "--on", "@rack=r9"], "@rack=r1"),
        (vec!["watch", "--once", "--on", "@rak=r1"], "did you mean `rack`?"),
        (vec!["apply", "--yes", "--on", "cpu-2"], "known nodes: `cpu-01`, `gpu-01`"),
    ] {
        let out = bai().args(&args).arg(lab).output().expect("runs");
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("bai::select::no_match") && err.contains(hint), "{args:?}: {err}");
        assert!(!err.contains("unreachable") && !err.contains("connect"), "no node was tried: {err}");
    }
    // A selector that matches (a glob) is no error of its own.
    let out = bai().args(["plan", "--offline", "--on", "gpu-*", lab]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}
