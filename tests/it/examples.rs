//! The shipped examples validate without a single warning and plan cleanly.

use crate::support::{bai, check, root, stderr_of, stdout_of};

const EXAMPLES: [&str; 4] = [
    "examples/quickstart/lab.kdl",
    "examples/workstation.kdl",
    "examples/gpu-lab/cluster.kdl",
    "examples/local-build/cluster.kdl",
];

#[test]
fn examples_validate_cleanly() {
    for example in EXAMPLES {
        let (problems, _, config) = check(&root().join(example));
        assert!(problems.is_empty(), "{example}: {problems:#?}");
        assert!(!config.clusters.is_empty());
    }
}

#[test]
fn examples_plan_cleanly() {
    for example in EXAMPLES {
        let out = bai().args(["plan", "--offline", example]).output().expect("runs");
        assert_eq!(out.status.code(), Some(0), "{example}: {}", stderr_of(&out));
        assert!(stderr_of(&out).is_empty(), "{example} printed: {}", stderr_of(&out));
        let text = stdout_of(&out);
        assert!(text.contains("to create") && !text.contains("to create, 0 to update, 0 to replace, 1 to delete"));
    }
}

#[test]
fn the_gpu_lab_is_split_into_included_files() {
    let (problems, sources, config) = check(&root().join("examples/gpu-lab/cluster.kdl"));
    assert!(problems.is_empty());
    assert!(sources.files().count() >= 5, "the lab and its four node files");
    let cluster = &config.clusters[0];
    assert_eq!(cluster.nodes.len(), 4);
    assert!(cluster.sessions.len() >= 6);
}

#[test]
fn the_local_build_example_builds_from_local_contexts() {
    let (_, _, config) = check(&root().join("examples/local-build/cluster.kdl"));
    let built =
        config.clusters[0].images.iter().filter(|i| matches!(i.source, bai::model::ImageSource::Build { .. })).count();
    assert!(built >= 2);
}
