//! The pull-request review of examples/ci run for real: a throwaway git repository with a base commit and
//! a change, `examples/ci/review.sh` with the real `bai` first on PATH, and the Markdown it writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{root, stderr_of, stdout_of};

const MARKER: &str = "<!-- bai-plan -->";

const BASE_LAB: &str = r#"cluster "review" {
    node "here" local=#true
    image "busybox" ref="busybox:1.36"
    vfolder "data" node="here"
    session "web-server" image="busybox" node="here" {
        mount "data"
        command "/bin/sh" "-c" "sleep 1000"
    }
}
"#;

/// The base lab with one more vfolder, mounted so that `--deny-warnings` has nothing to say.
const CHANGED_LAB: &str = r#"cluster "review" {
    node "here" local=#true
    image "busybox" ref="busybox:1.36"
    vfolder "data" node="here"
    vfolder "scratch" node="here" quota="1GiB"
    session "web-server" image="busybox" node="here" {
        mount "data"
        mount "scratch"
        command "/bin/sh" "-c" "sleep 1000"
    }
}
"#;

/// A git repository in a temporary directory, committing as a fixed author.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let repo = Repo { dir: tempfile::tempdir().expect("a temporary directory") };
        repo.git(&["init", "--quiet"]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=bai test", "-c", "user.email=bai-test@example.invalid"])
            .args(["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run git ({e}): the CI example needs it"));
        assert!(out.status.success(), "git {args:?} failed:\n{}", stderr_of(&out));
        stdout_of(&out).trim().to_owned()
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("a file in a directory")).expect("mkdir");
        std::fs::write(path, text).expect("write the lab");
    }

    /// Commits everything; the new commit's id.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Runs the review script against `base` for `labs`: its output and the Markdown it wrote, if any.
    fn review(&self, base: &str, labs: &[&str]) -> (Output, Option<String>) {
        let out_file = self.path().join("review.md");
        let out = Command::new("bash")
            .arg(root().join("examples/ci/review.sh"))
            .args(["--base", base, "--out"])
            .arg(&out_file)
            .args(labs)
            .current_dir(self.path())
            .env("PATH", path_with_bai())
            .output()
            .expect("bash runs the review script");
        (out, std::fs::read_to_string(out_file).ok())
    }
}

/// PATH with the directory of the `bai` built for these tests first.
fn path_with_bai() -> std::ffi::OsString {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_bai"));
    let dir = bin.parent().expect("the binary is in a directory").to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).expect("a valid PATH")
}

fn report(out: &Output, md: Option<&str>) -> String {
    format!("stdout:\n{}\nstderr:\n{}\nmarkdown:\n{}", stdout_of(out), stderr_of(out), md.unwrap_or("(none)"))
}

#[test]
fn review_plans_the_change_from_the_base_commit() {
    let repo = Repo::new();
    repo.write("labs/lab.kdl", BASE_LAB);
    let base = repo.commit("base");
    repo.write("labs/lab.kdl", CHANGED_LAB);
    repo.commit("add a scratch vfolder");

    let (out, md) = repo.review(&base, &["labs/lab.kdl"]);
    let context = report(&out, md.as_deref());
    assert_eq!(out.status.code(), Some(0), "{context}");
    let md = md.expect("the Markdown is written");
    assert!(md.starts_with(&format!("{MARKER}\n")), "{context}");
    assert!(md.contains("to create"), "no plan summary: {context}");
    assert!(md.contains("vfolder:scratch"), "the new vfolder is not in the plan: {context}");
    // Only the change: what the base commit already had is not planned again.
    assert!(!md.contains("vfolder:data") && !md.contains("node:here"), "{context}");
    // The script's checkout of the base commit is gone.
    assert!(!repo.git(&["worktree", "list"]).contains('\n'), "a worktree was left behind");
}

#[test]
fn review_of_a_new_lab_starts_from_an_empty_lab() {
    let repo = Repo::new();
    let base = repo.commit("empty base");
    repo.write("lab.kdl", BASE_LAB);
    repo.commit("a first lab");

    let (out, md) = repo.review(&base, &["lab.kdl"]);
    let context = report(&out, md.as_deref());
    assert_eq!(out.status.code(), Some(0), "{context}");
    let md = md.expect("the Markdown is written");
    assert!(md.starts_with(MARKER), "{context}");
    assert!(md.contains("empty lab") && md.contains("to create"), "{context}");
    assert!(md.contains("vfolder:data") && md.contains("session:web-server"), "{context}");
}

#[test]
fn review_fails_on_an_invalid_lab_and_says_so() {
    let repo = Repo::new();
    repo.write("lab.kdl", BASE_LAB);
    let base = repo.commit("base");
    // A vfolder on a node the lab does not declare.
    repo.write("lab.kdl", &CHANGED_LAB.replace(r#"vfolder "scratch" node="here""#, r#"vfolder "scratch" node="gone""#));
    repo.commit("a broken change");

    let (out, md) = repo.review(&base, &["lab.kdl"]);
    let context = report(&out, md.as_deref());
    assert_eq!(out.status.code(), Some(1), "{context}");
    let md = md.expect("the Markdown is written when validation fails");
    assert!(md.starts_with(MARKER), "{context}");
    assert!(md.contains("`bai validate --deny-warnings` failed") && md.contains("gone"), "{context}");
}

/// Issue 11: a pull request whose lab includes the checkout's `.git/config`, where actions/checkout keeps
/// the job's token, must not get the token posted back in the review comment.
#[test]
fn review_of_a_lab_including_git_config_never_posts_the_token() {
    const TOKEN: &str = "ghs_0123456789SECRETabcdefghijklmnopqr";
    let repo = Repo::new();
    repo.git(&["config", "http.https://github.com/.extraheader", &format!("AUTHORIZATION: basic {TOKEN}")]);
    repo.write("labs/lab.kdl", BASE_LAB);
    let base = repo.commit("base");
    // `..` out of the lab's directory, and a committed link named like a lab.
    repo.write(
        "labs/lab.kdl",
        &BASE_LAB.replace("    node", "    include \"../.git/config\"\n    include \"nodes.kdl\"\n    node"),
    );
    std::os::unix::fs::symlink("../.git/config", repo.path().join("labs/nodes.kdl")).expect("symlink");
    repo.commit("include the checkout's git config");

    let (out, md) = repo.review(&base, &["labs/lab.kdl"]);
    let context = report(&out, md.as_deref());
    assert_eq!(out.status.code(), Some(1), "{context}");
    assert!(!context.contains(TOKEN) && !context.contains("extraheader"), "the token leaked: {context}");
    let md = md.expect("the Markdown is written when validation fails");
    assert!(md.contains("bai::include::outside_tree"), "{context}");
}

#[test]
fn review_fails_on_an_unformatted_lab() {
    let repo = Repo::new();
    let base = repo.commit("empty base");
    repo.write("lab.kdl", &BASE_LAB.replace("    node", "node"));
    repo.commit("a lab off the canonical form");

    let (out, md) = repo.review(&base, &["lab.kdl"]);
    let context = report(&out, md.as_deref());
    assert_eq!(out.status.code(), Some(1), "{context}");
    let md = md.expect("the Markdown is written");
    assert!(md.contains("`bai fmt --check` failed"), "{context}");
    // Formatting does not stop the plan.
    assert!(md.contains("to create"), "{context}");
}

#[test]
fn review_refuses_a_base_that_is_not_a_commit() {
    let repo = Repo::new();
    repo.write("lab.kdl", BASE_LAB);
    repo.commit("base");
    let (out, md) = repo.review("no-such-branch", &["lab.kdl"]);
    assert_eq!(out.status.code(), Some(64), "{}", report(&out, md.as_deref()));
    assert!(stderr_of(&out).contains("fetch-depth: 0"), "{}", stderr_of(&out));
}

#[test]
fn the_workflow_looks_for_the_scripts_marker() {
    let workflow = std::fs::read_to_string(root().join("examples/ci/bai-review.yml")).expect("the workflow");
    let script = std::fs::read_to_string(root().join("examples/ci/review.sh")).expect("the script");
    assert!(workflow.contains(MARKER) && script.contains(MARKER));
    assert!(workflow.contains("examples/ci/review.sh") && workflow.contains("fetch-depth: 0"));
}
