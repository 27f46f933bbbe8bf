//! Container names are `bai.<cluster>.<session>`, and session names may hold a `.`: were cluster names
//! allowed one too, cluster `a` with session `x.train` and cluster `a.x` with session `train` would both be
//! `bai.a.x.train`. The lab is refused at validation, and the agent refuses such a cluster name itself.

use bai::agent::docker::{DockerError, Engine};
use bai::protocol::{ErrorKind, RpcError};

use crate::docker::{Cleanup, request, spec, unique};
use crate::support::images::test_image;
use crate::support::{bai, stderr_of};

#[test]
fn clusters_whose_container_names_would_collide_are_refused_at_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = dir.path().join("lab.kdl");
    let text = r#"cluster "a" {
    node "ws" local=#true
    image "box" ref="bai-it/box:1"
    session "x.train" image="box" node="ws"
}
cluster "a.x" {
    node "ws" local=#true
    image "box" ref="bai-it/box:1"
    session "train" image="box" node="ws"
}
"#;
    std::fs::write(&lab, text).expect("write lab");
    let out = bai().arg("validate").arg(&lab).output().expect("bai runs");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bai::name::invalid"), "{err}");
    assert!(err.contains("`a.x` is not a valid cluster name"), "{err}");
    assert!(err.contains("bai.<cluster>.<session>"), "the help says why a `.` is refused: {err}");
    // Only the dotted cluster is refused: `a` and its session `x.train` are fine.
    assert!(!err.contains("`a` is not"), "{err}");
    assert!(!err.contains("`x.train` is not"), "{err}");
    assert!(err.contains("1 error"), "{err}");
}

#[tokio::test]
async fn the_agent_refuses_a_cluster_name_that_makes_container_names_ambiguous() {
    test_image();
    let engine = Engine::connect().unwrap_or_else(|e| panic!("the Docker engine is not reachable: {e}"));
    let base = unique("t");
    let dotted = format!("{base}.x");
    let _cleanup = (Cleanup::new(&base), Cleanup::new(&dotted));

    let req = request(&dotted, "train", spec(&["/bin/busybox", "sleep", "300"], vec![]));
    let refused =
        engine.create_session(&req, &|_| panic!("no vfolder")).await.expect_err("a dotted cluster is refused");
    assert!(matches!(refused, DockerError::Invalid { .. }), "{refused:?}");
    assert!(refused.to_string().contains("`.`"), "{refused}");
    assert_eq!(RpcError::from(refused).kind, ErrorKind::BadRequest);
    for refused in [
        engine.remove_session(&dotted, "train").await.map(drop),
        engine.session_state(&dotted, "train").await.map(drop),
        engine.exec(&dotted, "train", &["true".to_string()]).await.map(drop),
    ] {
        assert!(matches!(refused, Err(DockerError::Invalid { .. })), "{refused:?}");
    }

    // The plain cluster's session `x.train` still gets its container, under the name the dotted one wanted.
    let req = request(&base, "x.train", spec(&["/bin/busybox", "sleep", "300"], vec![]));
    engine.create_session(&req, &|_| panic!("no vfolder")).await.expect("created");
    let listed = engine.containers(&base, "n1").await.expect("containers").sessions;
    assert_eq!(listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["x.train"]);
    assert!(engine.containers(&base, "n1").await.expect("containers").unowned.is_empty());
}
