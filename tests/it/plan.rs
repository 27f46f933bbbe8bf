//! Plans and diffs through the real binary: every action, every format, exit codes and stale input.

use bai::state::ClusterState;
use bai::state::snapshot::{FORMAT_VERSION, Snapshot};

use crate::support::{bai, check, json, root, stderr_of, stdout_of};

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = bai().args(args).output().expect("bai runs");
    (out.status.code(), stdout_of(&out), stderr_of(&out))
}

#[test]
fn offline_plan_creates_everything_in_graph_order() {
    let (code, text, err) = run(&["plan", "--offline", "examples/workstation.kdl"]);
    assert_eq!(code, Some(0), "{err}");
    insta::assert_snapshot!("plan_offline_workstation", text);
    let pos = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} missing:\n{text}"));
    assert!(pos("+ node:ws") < pos("+ image:ws/pytorch"));
    assert!(pos("+ image:ws/pytorch") < pos("+ session:jupyter"));
    assert!(text.ends_with("Plan: 6 to create, 0 to update, 0 to replace, 0 to delete.\n"), "{text}");
}

#[test]
fn detailed_exitcode() {
    assert_eq!(run(&["plan", "--offline", "--detailed-exitcode", "examples/workstation.kdl"]).0, Some(2));
    assert_eq!(run(&["plan", "--offline", "--detailed-exitcode", "tests/fixtures/rules/mount.nested.kdl"]).0, Some(1));
    let (code, text, _) = run(&["diff", "--detailed-exitcode", "examples/workstation.kdl", "examples/workstation.kdl"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("No changes."), "{text}");
}

#[test]
fn a_live_plan_that_cannot_reach_a_node_explains_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = dir.path().join("lab.kdl");
    // Port 1 on loopback refuses at once: a node that is down.
    std::fs::write(
        &lab,
        "cluster \"down\" {\n    node \"gpu-01\" address=\"127.0.0.1\" {\n        ssh port=1\n    }\n}\n",
    )
    .expect("write lab");
    let (code, _, err) = run(&["plan", lab.to_str().expect("utf-8 path")]);
    assert_eq!(code, Some(1));
    assert!(err.contains("node `gpu-01` unreachable"), "{err}");
    assert!(err.contains("cannot plan without every node's state") && err.contains("--offline"), "{err}");
}

#[test]
fn diff_shows_every_kind_of_change() {
    let (code, text, err) =
        run(&["diff", "--detailed-exitcode", "tests/fixtures/diff/old.kdl", "tests/fixtures/diff/new.kdl"]);
    assert_eq!(code, Some(2), "{err}");
    insta::assert_snapshot!("diff_text", text);
    assert!(text.contains("  ~ node:gpu-01\n        ~ `labels.rack`: \"r1\" → \"r2\""), "{text}");
    assert!(text.contains("  ~ vfolder:ckpt\n        ~ `quota`: 100GiB → 200GiB"), "{text}");
    assert!(text.contains("-/+ session:train-resnet"), "{text}");
    assert!(text.contains("`resources.gpus`: 2 → 4"), "{text}");
    assert!(text.contains("+ session:eval-vit") && !text.contains("+ image:gpu-02/pytorch"), "{text}");
    assert!(text.contains("  - session:old-sweep") && text.contains("  - vfolder:scratch"), "{text}");
    // The notebook did not change: it is not in the plan at all.
    assert!(!text.contains("notebook"), "{text}");
    // Deletes come after everything else, sessions before what they stand on.
    assert!(text.find("- session:old-sweep") < text.find("- vfolder:scratch"));
    assert!(text.ends_with("Plan: 1 to create, 2 to update, 1 to replace, 2 to delete.\n"), "{text}");

    let (_, md, _) =
        run(&["diff", "--format", "markdown", "tests/fixtures/diff/old.kdl", "tests/fixtures/diff/new.kdl"]);
    insta::assert_snapshot!("diff_markdown", md);
    let (_, js, _) = run(&["diff", "--format", "json", "tests/fixtures/diff/old.kdl", "tests/fixtures/diff/new.kdl"]);
    let doc = json(&js);
    assert_eq!(doc["summary"], serde_json::json!({"create": 1, "update": 2, "replace": 1, "delete": 2}));
    let replace =
        doc["changes"].as_array().and_then(|c| c.iter().find(|c| c["action"] == "replace")).expect("a replace");
    assert_eq!(replace["id"], "session:train-resnet");
    assert!(
        replace["fields"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["path"] == "resources.gpus" && f["before"] == 2 && f["after"] == 4))
    );
}

#[test]
fn diff_is_deterministic() {
    let a = run(&["diff", "--format", "json", "tests/fixtures/diff/old.kdl", "tests/fixtures/diff/new.kdl"]).1;
    let b = run(&["diff", "--format", "json", "tests/fixtures/diff/old.kdl", "tests/fixtures/diff/new.kdl"]).1;
    assert_eq!(a, b);
}

/// A snapshot of the lab exactly as its file asks.
fn snapshot_of(path: &str) -> Snapshot {
    let (problems, _, config) = check(&root().join(path));
    assert!(problems.iter().all(|p| !p.is_error()), "{problems:?}");
    Snapshot {
        format_version: FORMAT_VERSION,
        clusters: config.clusters.iter().map(|c| ClusterState::desired(c).to_snapshot()).collect(),
    }
}

fn plan_with(snapshot: &Snapshot, file: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    std::fs::write(&path, serde_json::to_string_pretty(snapshot).expect("serializes")).expect("write");
    run(&["plan", "--detailed-exitcode", "--state", path.to_str().expect("utf-8 path"), file])
}

#[test]
fn plan_against_a_matching_snapshot_has_no_changes() {
    let snapshot = snapshot_of("examples/gpu-lab/cluster.kdl");
    let (code, text, err) = plan_with(&snapshot, "examples/gpu-lab/cluster.kdl");
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("No changes."), "{text}");
}

#[test]
fn plan_against_a_drifted_snapshot() {
    let mut snapshot = snapshot_of("examples/gpu-lab/cluster.kdl");
    let cluster = &mut snapshot.clusters[0];
    // One node was never reached; on another, a session runs an older spec and a stray one exists.
    cluster.nodes[0].agent = None;
    let node = &mut cluster.nodes[1];
    let session = node.sessions.first_mut().expect("a session");
    let name = session.name.clone();
    if let Some(spec) = session.spec.as_mut() {
        spec.resources.gpus += 1;
        session.spec_hash = bai::state::spec::hash_of(spec);
    }
    let mut stray = node.sessions[0].clone();
    stray.name = "stray-session".into();
    node.sessions.push(stray);
    let (code, text, err) = plan_with(&snapshot, "examples/gpu-lab/cluster.kdl");
    assert_eq!(code, Some(2), "{err}");
    assert!(text.contains(&format!("-/+ session:{name}")), "{text}");
    assert!(text.contains("`resources.gpus`"), "{text}");
    assert!(text.contains("  - session:stray-session"), "{text}");
    assert!(text.contains(&format!("  + node:{}", snapshot.clusters[0].nodes[0].name)), "{text}");
}

#[test]
fn inventory_mismatch_warns() {
    let mut snapshot = snapshot_of("examples/workstation.kdl");
    snapshot.clusters[0].nodes[0].inventory = Some(bai::state::snapshot::Inventory {
        gpus: Vec::new(),
        gpu_error: Some("NVML not found".into()),
        cpus: Some(16),
        memory: None,
        docker_version: None,
    });
    let (code, _, err) = plan_with(&snapshot, "examples/workstation.kdl");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("bai::capacity::inventory_mismatch") && err.contains("NVML not found"), "{err}");
}

#[test]
fn a_bad_snapshot_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    std::fs::write(&path, r#"{"format_version": 1, "clusters": [{"name": "x"}]}"#).expect("write");
    let (code, _, err) = run(&["plan", "--state", path.to_str().expect("utf-8"), "examples/workstation.kdl"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("bai::state::invalid") && err.contains("missing field `nodes`"), "{err}");
    std::fs::write(&path, r#"{"format_version": 9, "clusters": []}"#).expect("write");
    let (code, _, err) = run(&["plan", "--state", path.to_str().expect("utf-8"), "examples/workstation.kdl"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("format_version 9"), "{err}");
}

#[test]
fn plan_formats_for_the_workstation() {
    let (_, md, _) = run(&["plan", "--offline", "--format", "markdown", "examples/workstation.kdl"]);
    insta::assert_snapshot!("plan_markdown_workstation", md);
    let (_, js, _) = run(&["plan", "--offline", "--format", "json", "examples/workstation.kdl"]);
    let doc = json(&js);
    assert_eq!(doc["format_version"], 1);
    assert_eq!(doc["summary"]["create"], 6);
    assert!(doc["changes"].as_array().is_some_and(|c| c.iter().all(|c| c["action"] == "create")));
}

#[test]
fn the_documented_drift_example_plans_as_the_readme_says() {
    let (code, text, err) = run(&[
        "plan",
        "--detailed-exitcode",
        "--state",
        "schema/examples/state-drifted.json",
        "examples/gpu-lab/cluster.kdl",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(text.contains("  ~ vfolder:ckpt-01\n        ~ `quota`: 250GiB → 500GiB"), "{text}");
    assert!(text.contains("-/+ session:train-resnet50") && text.contains("`resources.gpus`: 2 → 4"), "{text}");
    assert!(text.contains("  - session:train-resnet18-baseline"), "{text}");
    assert!(text.ends_with("Plan: 9 to create, 1 to update, 1 to replace, 1 to delete.\n"), "{text}");
}

const REVIEW_OLD: &str = "tests/fixtures/diff/review-old.kdl";
const REVIEW_NEW: &str = "tests/fixtures/diff/review-new.kdl";

#[test]
fn review_comment_in_markdown() {
    let (code, md, err) = run(&["diff", "--format", "markdown", REVIEW_OLD, REVIEW_NEW]);
    assert_eq!(code, Some(0), "{err}");
    insta::assert_snapshot!("diff_markdown_review", md);
    // Every risk is named once in the warning, on its line of the diff and on its node's section.
    assert!(md.contains("> - **destroys vfolder data**: `vfolder:scratch`\n"), "{md}");
    assert!(md.contains("> - **interrupts a running GPU session**: `session:train`\n"), "{md}");
    assert!(md.contains("> - **adds a node**: `node:gpu-02`\n> - **removes a node**: `node:cpu-01`\n"), "{md}");
    assert!(md.contains("- vfolder:scratch (delete) (!) destroys vfolder data\n"), "{md}");
    assert!(md.contains("<details open><summary>node <code>cpu-01</code>: 3 to delete ⚠️ removes a node</summary>"));
    // `report` is unchanged but depends on the replaced `train`: it is drawn, grey.
    assert!(md.contains("    n11[\"session:report\"]\n") && md.contains("    n12 --> n11\n"), "{md}");
    assert_eq!(md.matches("```mermaid").count(), 1, "{md}");
    // The same plan gives the same comment, byte for byte.
    assert_eq!(run(&["diff", "--format", "markdown", REVIEW_OLD, REVIEW_NEW]).1, md);

    let (_, text, _) = run(&["diff", REVIEW_OLD, REVIEW_NEW]);
    assert!(text.contains("  -/+ session:train  (!) interrupts a running GPU session\n"), "{text}");
    assert!(text.contains("    - node:cpu-01  (!) removes a node\n"), "{text}");
    let (_, js, _) = run(&["diff", "--format", "json", REVIEW_OLD, REVIEW_NEW]);
    let risks: Vec<(String, serde_json::Value)> = json(&js)["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["risks"] != serde_json::json!([]))
        .map(|c| (c["id"].as_str().unwrap_or_default().to_string(), c["risks"].clone()))
        .collect();
    assert_eq!(
        risks,
        vec![
            ("node:gpu-02".to_string(), serde_json::json!(["adds_node"])),
            ("session:train".to_string(), serde_json::json!(["interrupts_gpu_session"])),
            ("vfolder:scratch".to_string(), serde_json::json!(["destroys_data"])),
            ("node:cpu-01".to_string(), serde_json::json!(["removes_node"])),
        ]
    );
}

#[test]
fn review_comment_without_changes() {
    let (code, md, err) = run(&["diff", "--format", "markdown", REVIEW_NEW, REVIEW_NEW]);
    assert_eq!(code, Some(0), "{err}");
    insta::assert_snapshot!("diff_markdown_no_changes", md);
}

#[test]
fn risks_follow_what_the_nodes_report() {
    // Against a snapshot the folder's contents and the container's state are known.
    let mut snapshot = snapshot_of(REVIEW_OLD);
    let gpu = snapshot.clusters[0].nodes.iter_mut().find(|n| n.name == "gpu-01").expect("gpu-01");
    gpu.vfolders.iter_mut().filter(|v| v.name == "scratch").for_each(|v| v.empty = true);
    let (_, text, err) = plan_with(&snapshot, REVIEW_NEW);
    assert!(text.contains("    - vfolder:scratch\n"), "an empty folder loses nothing:\n{text}{err}");
    assert!(text.contains("-/+ session:train  (!) interrupts a running GPU session\n"), "{text}");

    let gpu = snapshot.clusters[0].nodes.iter_mut().find(|n| n.name == "gpu-01").expect("gpu-01");
    gpu.vfolders.iter_mut().filter(|v| v.name == "scratch").for_each(|v| v.empty = false);
    let train = gpu.sessions.iter_mut().find(|s| s.name == "train").expect("train");
    train.state = bai::state::snapshot::ContainerState::Exited;
    let (_, text, err) = plan_with(&snapshot, REVIEW_NEW);
    assert!(text.contains("    - vfolder:scratch  (!) destroys vfolder data\n"), "{text}{err}");
    assert!(text.contains("  -/+ session:train\n"), "an exited session holds no GPU:\n{text}");
}

#[test]
fn a_saved_plan_reads_back_as_the_same_plan() {
    let states = |path: &str| {
        let (problems, _, config) = check(&root().join(path));
        assert!(problems.iter().all(|p| !p.is_error()), "{problems:?}");
        config.clusters.iter().map(|c| (ClusterState::desired(c), bai::graph::build_graph(c))).collect::<Vec<_>>()
    };
    let (old, new) = (states(REVIEW_OLD), states(REVIEW_NEW));
    let triples: Vec<_> = new.iter().zip(&old).map(|((d, g), (o, _))| (d, o, g)).collect();
    let plan = bai::plan::diff(&triples);
    assert!(!plan.edges.is_empty() && plan.changes.iter().any(|c| !c.risks.is_empty()));
    let saved = serde_json::to_string_pretty(&plan).expect("serializes");
    let back: bai::plan::Plan = serde_json::from_str(&saved).expect("deserializes");
    assert_eq!(back, plan);
    assert_eq!(bai::plan::render_markdown(&back), bai::plan::render_markdown(&plan));
}
