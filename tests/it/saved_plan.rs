//! Saved plans over SSH: `bai plan LAB -o PLAN` fingerprints the lab and the nodes it changes, and
//! `bai apply PLAN` carries it out, or refuses it, naming what changed, when the lab or a touched node is
//! not what the plan was made against. Real OpenSSH servers, the real binary as agent, the real Docker.

use crate::support::lab::{SshLab, assert_code};
use crate::support::{json, stderr_of, stdout_of};

fn plan_to(lab: &SshLab, name: &str) -> String {
    let plan = lab.file(name).display().to_string();
    let out = lab.run(&["plan", "-o", &plan]);
    assert_code(&out, 0, "bai plan -o");
    assert!(stderr_of(&out).contains("Saved the plan to"), "{}", stderr_of(&out));
    plan
}

#[test]
fn a_plan_is_applied_once_as_saved_and_refused_the_second_time() {
    let lab = SshLab::new("saved", 2);
    lab.write(&["1", "1"]);
    assert_code(&lab.run(&["apply", "--yes"]), 0, "first apply");

    // The change is on node0 alone: node1 is not part of the plan.
    lab.write(&["2", "1"]);
    let plan = plan_to(&lab, "v2.plan");
    let doc = json(&std::fs::read_to_string(&plan).expect("plan file"));
    assert_eq!(doc["format"], "bai-plan");
    let touched: Vec<&String> = doc["nodes"][&lab.cluster].as_object().expect("nodes").keys().collect();
    assert_eq!(touched, vec!["node0"], "only the node with a change is fingerprinted");
    let changes = doc["plan"]["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["id"], "session:job-0");
    let (_, hash1) = lab.container(1).expect("job-1 runs");

    // An untouched node may change, and may even be down: the plan does not depend on it.
    crate::support::images::docker_ok(&["rm", "-f", &format!("bai.{}.job-1", lab.cluster)]);
    let mut lab = lab;
    lab.sshd.stop(1);
    let out = lab.bai(&["apply", &plan]);
    assert_code(&out, 0, "apply the saved plan");
    assert!(stdout_of(&out).contains("session:job-0"), "{}", stdout_of(&out));
    assert_eq!(lab.container(0).map(|c| c.0), Some("2".to_string()), "job-0 replaced as planned");
    assert!(lab.container(1).is_none(), "node1 was left alone (its session is still gone)");
    let _ = hash1;

    // The same plan again: node0 recorded a generation from it, so it is stale and says why.
    let out = lab.bai(&["apply", &plan]);
    assert_code(&out, 1, "a plan applied twice");
    let err = stderr_of(&out);
    assert!(err.contains("is stale"), "{err}");
    assert!(err.contains("this plan was already applied: node `node0` recorded generation"), "{err}");
}

#[test]
fn a_changed_lab_or_a_changed_node_makes_the_plan_stale() {
    let lab = SshLab::new("stale", 2);
    lab.write(&["1", "1"]);
    // Both nodes hold nothing yet: the plan creates everything on both.
    let plan = plan_to(&lab, "first.plan");

    // The lab is edited after the plan was made.
    lab.write(&["1", "9"]);
    let out = lab.bai(&["apply", &plan]);
    assert_code(&out, 1, "a plan for an edited lab");
    let err = stderr_of(&out);
    assert!(err.contains("the configuration changed: `") && err.contains("lab.kdl` was edited"), "{err}");
    assert!(lab.container(0).is_none() && lab.container(1).is_none(), "nothing was created");

    // Back to the planned text, but node0 got its session in the meantime (an apply on it alone).
    lab.write(&["1", "1"]);
    assert_code(&lab.run(&["apply", "--yes", "--on", "node0"]), 0, "apply on node0");
    let out = lab.bai(&["apply", &plan]);
    assert_code(&out, 1, "a plan for a node that changed");
    let err = stderr_of(&out);
    assert!(
        err.contains("node `node0` changed since the plan was made: it held nothing when the plan was made; now it holds session `job-0`"),
        "{err}"
    );
    assert!(!err.contains("node `node1`"), "node1 is as it was: {err}");
    assert!(lab.container(1).is_none(), "a stale plan changes nothing, not even on the node that is as planned");

    // A fresh plan goes through.
    let plan = plan_to(&lab, "second.plan");
    assert_code(&lab.bai(&["apply", &plan]), 0, "apply a fresh plan");
    assert!(lab.container(1).is_some());

    // An offline plan assumes empty nodes: stale against nodes that hold the lab.
    let offline = lab.file("offline.plan").display().to_string();
    assert_code(&lab.run(&["plan", "--offline", "-o", &offline]), 0, "offline plan");
    let out = lab.bai(&["apply", &offline]);
    assert_code(&out, 1, "an offline plan against full nodes");
    assert!(stderr_of(&out).contains("it held nothing when the plan was made"), "{}", stderr_of(&out));
    assert_code(&lab.run(&["destroy", "--yes"]), 0, "destroy");
}

#[test]
fn a_file_that_is_not_a_plan_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.json");
    std::fs::write(&path, "{\"format\": \"something-else\"}").expect("write");
    let out = crate::support::bai().args(["apply", "--yes"]).arg(&path).output().expect("bai runs");
    assert_code(&out, 1, "a JSON file that is not a plan");
    assert!(stderr_of(&out).contains("is JSON but not a bai plan"), "{}", stderr_of(&out));
    std::fs::write(&path, "{\"format\": \"bai-plan\", \"format_version\": 99}").expect("write");
    let out = crate::support::bai().args(["apply", "--yes"]).arg(&path).output().expect("bai runs");
    assert_code(&out, 1, "a plan of another format");
    assert!(stderr_of(&out).contains("format version 99"), "{}", stderr_of(&out));
}
