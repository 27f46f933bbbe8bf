//! Paths in specs do not depend on where bai runs or where the lab is checked out: a `from-file` path is
//! recorded relative to the lab file's directory, so the same lab planned from another working
//! directory, or a copy of it elsewhere (the CI review's base-branch checkout), asks for no change.

use std::path::Path;

use crate::support::{bai, check, stderr_of, stdout_of};

/// A lab whose sessions read one secret file, from the lab file and from an included file.
fn write_lab(dir: &Path) {
    std::fs::create_dir_all(dir.join("sessions")).expect("mkdir");
    std::fs::create_dir_all(dir.join("secrets")).expect("mkdir");
    std::fs::write(dir.join("secrets/token"), "not-shown\n").expect("write");
    std::fs::write(
        dir.join("lab.kdl"),
        r#"cluster "lab" {
    node "ws" local=#true
    image "box" ref="bai-it/box:1"
    include "sessions/*.kdl"
    session "top-file" image="box" node="ws" {
        env TOKEN from-file="./secrets/token"
    }
}
"#,
    )
    .expect("write");
    std::fs::write(
        dir.join("sessions/one.kdl"),
        r#"session "inc-file" image="box" node="ws" {
    env TOKEN from-file="../secrets/./token"
}
"#,
    )
    .expect("write");
}

#[test]
fn a_from_file_path_is_recorded_relative_to_the_lab_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_lab(dir.path());
    let (problems, _, config) = check(&dir.path().join("lab.kdl"));
    assert!(problems.is_empty(), "{problems:?}");
    let specs = bai::state::spec::session_specs(&config.clusters[0]);
    for (session, spec) in &specs {
        let env = serde_json::to_string(&spec.env).unwrap_or_default();
        assert_eq!(env, r#"{"TOKEN":{"from_file":"secrets/token"}}"#, "{session}");
    }
}

#[test]
fn a_copy_of_the_lab_elsewhere_and_another_working_directory_plan_no_change() {
    let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    write_lab(a.path());
    write_lab(b.path());
    for format in ["text", "json"] {
        let out = bai()
            .args(["diff", "--detailed-exitcode", "--format", format])
            .arg(a.path().join("lab.kdl"))
            .arg(b.path().join("lab.kdl"))
            .output()
            .expect("bai runs");
        assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    }
    // The old lab named relative to the working directory, the new one absolute, from elsewhere.
    let out = bai()
        .current_dir(a.path())
        .args(["diff", "--detailed-exitcode", "lab.kdl"])
        .arg(b.path().join("lab.kdl"))
        .output()
        .expect("bai runs");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    assert!(stdout_of(&out).contains("No changes."), "{}", stdout_of(&out));
    // A moved secret file is a change, and says so.
    std::fs::write(
        b.path().join("lab.kdl"),
        std::fs::read_to_string(b.path().join("lab.kdl")).expect("read").replace("./secrets/token", "./other"),
    )
    .expect("write");
    let out =
        bai().args(["diff"]).arg(a.path().join("lab.kdl")).arg(b.path().join("lab.kdl")).output().expect("bai runs");
    let text = stdout_of(&out);
    assert!(text.contains("-/+ session:top-file") && !text.contains("inc-file"), "{text}");
    assert!(text.contains(r#""from_file":"secrets/token""#) && text.contains(r#""from_file":"other""#), "{text}");
}

#[test]
fn an_include_glob_matches_when_the_lab_is_named_without_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_lab(dir.path());
    // `lab.kdl` from its own directory: the glob `sessions/*.kdl` once became `/sessions/*.kdl`.
    let out = bai().current_dir(dir.path()).args(["plan", "--offline", "lab.kdl"]).output().expect("bai runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("+ session:inc-file"), "{}", stdout_of(&out));
    assert!(!stderr_of(&out).contains("bai::include::no_match"), "{}", stderr_of(&out));
}
