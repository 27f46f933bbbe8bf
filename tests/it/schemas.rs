//! The JSON that bai prints matches the schemas it documents in `schema/`.

use crate::support::{bai, json, root, stdout_of};

pub(crate) fn schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("schema").join(name)).expect("schema file exists");
    jsonschema::validator_for(&json(&text)).unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
}

pub(crate) fn assert_valid(validator: &jsonschema::Validator, doc: &serde_json::Value, what: &str) {
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{what} does not match its schema:\n{}\n{doc}", errors.join("\n"));
}

#[test]
fn diagnostics_match_their_schema() {
    let validator = schema("diagnostics.schema.json");
    let mut files: Vec<String> = std::fs::read_dir(root().join("tests/fixtures/rules"))
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
        .map(|p| p.strip_prefix(root()).map(|r| r.display().to_string()).unwrap_or_default())
        .collect();
    files.sort();
    let out = bai().args(["validate", "--format", "json"]).args(&files).output().expect("runs");
    let doc = json(&stdout_of(&out));
    assert!(doc["diagnostics"].as_array().is_some_and(|d| d.len() > 40));
    assert_valid(&validator, &doc, "validate --format json");
    let clean = bai().args(["validate", "--format", "json", "examples/workstation.kdl"]).output().expect("runs");
    assert_valid(&validator, &json(&stdout_of(&clean)), "validate --format json of a valid lab");
}

#[test]
fn plans_match_their_schema() {
    let validator = schema("plan.schema.json");
    for args in [
        vec!["plan", "--offline", "--format", "json", "examples/gpu-lab/cluster.kdl"],
        vec!["diff", "--format", "json", "tests/fixtures/diff/old.kdl", "tests/fixtures/diff/new.kdl"],
        vec!["diff", "--format", "json", "examples/workstation.kdl", "examples/workstation.kdl"],
        // Every kind of risk.
        vec!["diff", "--format", "json", "tests/fixtures/diff/review-old.kdl", "tests/fixtures/diff/review-new.kdl"],
    ] {
        let out = bai().args(&args).output().expect("runs");
        assert_valid(&validator, &json(&stdout_of(&out)), &args.join(" "));
    }
}

#[test]
fn state_snapshots_match_their_schema() {
    let validator = schema("state.schema.json");
    let example = std::fs::read_to_string(root().join("schema/examples/state-drifted.json")).expect("example");
    assert_valid(&validator, &json(&example), "schema/examples/state-drifted.json");
    // What bai itself writes as a snapshot (the shape `bai status --format json` emits).
    let (_, _, config) = crate::support::check(&root().join("examples/gpu-lab/cluster.kdl"));
    let snapshot = bai::state::snapshot::Snapshot {
        format_version: bai::state::snapshot::FORMAT_VERSION,
        clusters: config.clusters.iter().map(|c| bai::state::ClusterState::desired(c).to_snapshot()).collect(),
    };
    let doc = serde_json::to_value(&snapshot).expect("serializes");
    assert_valid(&validator, &doc, "a snapshot written by bai");
    // A node that reports its current generation.
    let mut with_generation = snapshot.clone();
    with_generation.clusters[0].nodes[0].generation = Some(3);
    let doc = serde_json::to_value(&with_generation).expect("serializes");
    assert_eq!(doc["clusters"][0]["nodes"][0]["generation"], 3);
    assert_valid(&validator, &doc, "a snapshot with a generation");
    let back: bai::state::snapshot::Snapshot = serde_json::from_value(doc).expect("reads back");
    assert_eq!(back, with_generation);
    // And the example is one bai reads.
    let parsed: Result<bai::state::snapshot::Snapshot, _> = serde_json::from_str(&example);
    assert!(parsed.is_ok(), "{parsed:?}");
}

#[test]
fn schemas_reject_what_bai_would_not_print() {
    let validator = schema("plan.schema.json");
    let bad = serde_json::json!({"format_version": 1, "changes": [{"id": "x"}], "summary": {}});
    assert!(!validator.is_valid(&bad));
}
