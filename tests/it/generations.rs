//! Generations over SSH: applies record numbered generations on the nodes they touch, `bai generations`
//! lists them, `bai rollback` restores an earlier one (recorded as a new generation), and pruning keeps
//! the newest few. A real OpenSSH server on 127.0.0.1, the real binary as the agent, the real Docker.

use crate::support::lab::{SshLab, assert_code};
use crate::support::{bai, json, stderr_of, stdout_of};

/// One node with one vfolder and one session whose env carries the lab's version (the shared
/// [`SshLab`]), plus `generations keep=…` when asked.
struct GenLab {
    lab: SshLab,
    cluster: String,
}

impl GenLab {
    fn new() -> Self {
        let lab = SshLab::new("gen", 1);
        let cluster = lab.cluster.clone();
        GenLab { lab, cluster }
    }

    /// The lab at `version`; `keep` writes `generations keep=…`.
    fn write(&self, version: &str, keep: Option<u32>) {
        let keep = keep.map_or(String::new(), |k| format!("    generations keep={k}\n"));
        self.lab.write_with(&[version], &keep);
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.lab.run(args)
    }

    fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.run(args);
        assert_code(&out, 0, &format!("bai {args:?}"));
        out
    }

    /// The session's container: its VERSION and its spec hash label.
    fn container(&self) -> Option<(String, String)> {
        self.lab.container(0)
    }

    /// `bai generations --format json`: this cluster's (number, current on node0) newest first.
    fn generations(&self) -> Vec<(u64, bool, serde_json::Value)> {
        let out = self.ok(&["generations", "--format", "json"]);
        let doc = json(&stdout_of(&out));
        doc["clusters"][0]["generations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|g| (g["number"].as_u64().unwrap_or(0), g["nodes"][0]["current"] == true, g))
            .collect()
    }
}

#[test]
fn applies_record_generations_and_rollback_restores_them() {
    let lab = GenLab::new();
    lab.write("1", None);
    let first = lab.ok(&["apply", "--yes"]);
    assert!(stderr_of(&first).contains("Recorded generation 1 of cluster"), "{}", stderr_of(&first));
    let v1 = lab.container().expect("job-0 runs");
    assert_eq!(v1.0, "1");
    // Nothing to change: nothing recorded.
    let again = lab.ok(&["apply", "--yes"]);
    assert!(!stderr_of(&again).contains("Recorded generation"), "{}", stderr_of(&again));

    lab.write("2", None);
    lab.ok(&["apply", "--yes"]);
    let v2 = lab.container().expect("job-0 runs");
    assert_eq!(v2.0, "2");
    assert_ne!(v1.1, v2.1);

    // Listed newest first, the current one marked, in text and JSON.
    let listed = lab.generations();
    assert_eq!(listed.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(), vec![(2, true), (1, false)]);
    let g = &listed[0].2;
    assert!(g["applied_by"].as_str().is_some_and(|b| b.contains(" pid ")), "{g}");
    assert!(g["applied_at"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{g}");
    assert_eq!(g["bai_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(g["config_hash"].as_str().map(str::len), Some(64));
    assert_ne!(g["config_hash"], listed[1].2["config_hash"], "the lab changed between them");
    let text = stdout_of(&lab.ok(&["generations"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains(&lab.cluster), "{text}");
    assert!(lines[1].trim_start().starts_with("2 ") && lines[1].contains("node0 (current)"), "{text}");
    assert!(lines[2].trim_start().starts_with("1 ") && !lines[2].contains("(current)"), "{text}");

    // Rollback to the previous generation: the v1 container is back, recorded as generation 3.
    let back = lab.ok(&["rollback", "--yes"]);
    let err = stderr_of(&back);
    assert!(err.contains("restores what bai owns, not data") && err.contains("generation 1"), "{err}");
    assert!(err.contains("Recorded generation 3"), "{err}");
    assert!(stdout_of(&back).contains("1 to replace"), "{}", stdout_of(&back));
    assert_eq!(lab.container().expect("job-0 runs"), v1);
    let listed = lab.generations();
    assert_eq!(listed.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(), vec![(3, true), (2, false), (1, false)]);
    assert_eq!(listed[0].2["rollback_of"], 1);
    assert_eq!(listed[0].2["config_hash"], listed[2].2["config_hash"], "generation 3 is generation 1's lab");
    // The lab file still says v2: an apply now would roll forward; rolling back again is a no-op.
    let same = lab.ok(&["rollback", "--yes", "--to", "3"]);
    assert!(stderr_of(&same).contains("already matches generation 3"), "{}", stderr_of(&same));

    // Explicit targets, either way.
    lab.ok(&["rollback", "--yes", "--to", "2"]);
    assert_eq!(lab.container().expect("job-0 runs"), v2);
    lab.ok(&["rollback", "--yes", "--to", "1"]);
    assert_eq!(lab.container().expect("job-0 runs"), v1);
    assert_eq!(lab.generations()[0].0, 5);
    let beyond = lab.run(&["rollback", "--yes", "--to", "9"]);
    assert_eq!(beyond.status.code(), Some(1));
    assert!(stderr_of(&beyond).contains("there is no generation 9"), "{}", stderr_of(&beyond));

    // Destroy records an empty generation; rolling back brings the session back.
    let gone = lab.ok(&["destroy", "--yes"]);
    assert!(stderr_of(&gone).contains("Recorded generation 6"), "{}", stderr_of(&gone));
    assert!(lab.container().is_none());
    lab.ok(&["rollback", "--yes"]);
    assert_eq!(lab.container().expect("job-0 is back"), v1);
    lab.ok(&["destroy", "--yes"]);
    assert!(lab.container().is_none());
}

#[test]
fn pruned_generations_are_refused_and_the_newest_kept() {
    let lab = GenLab::new();
    for v in 1..=4 {
        lab.write(&v.to_string(), Some(2));
        let out = lab.ok(&["apply", "--yes"]);
        if v == 3 {
            assert!(stderr_of(&out).contains("pruned generations 1"), "{}", stderr_of(&out));
        }
    }
    let listed = lab.generations();
    assert_eq!(listed.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(), vec![(4, true), (3, false)]);
    let refused = lab.run(&["rollback", "--yes", "--to", "1"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr_of(&refused);
    assert!(err.contains("node `node0` cannot be restored to generation 1") && err.contains("pruned"), "{err}");
    assert_eq!(lab.container().expect("job-0 runs").0, "4", "nothing changed");
    // The previous generation is still there.
    lab.ok(&["rollback", "--yes"]);
    assert_eq!(lab.container().expect("job-0 runs").0, "3");
    lab.ok(&["destroy", "--yes"]);
    assert!(lab.container().is_none());
}

#[test]
fn generations_keep_is_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lab.kdl");
    for (line, expect) in [("generations keep=0", "between 1 and"), ("generations kep=3", "keep")] {
        std::fs::write(&path, format!("cluster \"lab\" {{\n    {line}\n    node \"n1\" local=#true\n}}\n"))
            .expect("write");
        let out = bai().args(["validate"]).arg(&path).output().expect("runs");
        assert_eq!(out.status.code(), Some(1), "{line}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains(expect), "{line}: {}", stderr_of(&out));
    }
    std::fs::write(&path, "cluster \"lab\" {\n    generations keep=3\n    node \"n1\" local=#true\n}\n")
        .expect("write");
    let out = bai().args(["validate"]).arg(&path).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}
