//! Failures met while a command runs keep the code of the typed error they came from all the way to the
//! user: printed the way lab problems are, and, with `--format json`, as the same diagnostic objects
//! `bai validate --format json` writes (schema/diagnostics.schema.json). Real OpenSSH nodes and the
//! machine's Docker engine.

use crate::schemas::{assert_valid, schema};
use crate::support::lab::{SshLab, assert_code};
use crate::support::{json, stderr_of, stdout_of};

/// The codes of a diagnostics document, checked against its schema.
fn codes_of(out: &std::process::Output, what: &str) -> Vec<String> {
    let doc = json(&stdout_of(out));
    assert_valid(&schema("diagnostics.schema.json"), &doc, what);
    doc["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .map(|d| d["code"].as_str().expect("code").to_string())
        .collect()
}

#[test]
fn a_node_failure_carries_its_code_in_text_and_in_json() {
    let mut lab = SshLab::new("errors-ssh", 1);
    lab.known_hosts = lab.file("empty_known_hosts");
    std::fs::write(&lab.known_hosts, "").expect("write known_hosts");
    lab.write(&["1"]);

    let out = lab.run(&["status"]);
    assert_code(&out, 1, "status with an unknown host key");
    let err = stderr_of(&out);
    assert!(err.contains("bai::ssh::unknown_host_key"), "{err}");
    assert!(err.contains("unknown host key SHA256:"), "{err}");
    assert!(err.contains("--accept-new-host-keys"), "the help is shown: {err}");

    let out = lab.run(&["plan", "--format", "json"]);
    assert_code(&out, 1, "plan --format json with an unknown host key");
    let codes = codes_of(&out, "plan's failure");
    assert_eq!(codes, ["bai::ssh::unknown_host_key", "bai::plan::incomplete"], "{codes:?}");

    let out = lab.run(&["status", "--format", "json"]);
    assert_code(&out, 1, "status --format json with an unknown host key");
    assert_eq!(codes_of(&out, "status's failure"), ["bai::ssh::unknown_host_key"], "no partial snapshot");

    let out = lab.run(&["apply", "--yes", "--format", "json"]);
    assert_code(&out, 1, "apply --format json with an unknown host key");
    assert_eq!(codes_of(&out, "apply's failure"), ["bai::ssh::unknown_host_key"]);
    lab.snapshot("unknown_host_key_apply_json", &stdout_of(&out));
    assert!(lab.container(0).is_none(), "nothing was made");
}

#[test]
fn a_change_a_node_fails_keeps_the_agents_code() {
    let lab = SshLab::new("errors-build", 1);
    // A build the engine fails at once: the context lacks the file it copies.
    std::fs::write(lab.file("img/Dockerfile"), "FROM scratch\nCOPY no-such-file /x\n").expect("write Dockerfile");
    std::fs::write(
        lab.path(),
        format!(
            "{}{}    session \"job-0\" image=\"box\" node=\"node0\" {{\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }}\n}}\n",
            lab.header().replace("bai-it/box:1", "bai-it/errors-broken:1"),
            lab.node(0)
        ),
    )
    .expect("write lab");

    let out = lab.run(&["apply", "--yes", "--accept-new-host-keys", "--format", "json"]);
    assert_code(&out, 1, "apply with an image that does not build");
    let doc = json(&stdout_of(&out));
    assert_valid(&schema("diagnostics.schema.json"), &doc, "apply's failures");
    let build = doc["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .find(|d| d["code"] == "bai::docker::build")
        .unwrap_or_else(|| panic!("the build's failure keeps the agent's code:\n{doc}"));
    assert_eq!(build["severity"], "error");
    assert!(build["message"].as_str().is_some_and(|m| m.contains("image:node0/box")), "{build}");
    assert_eq!(doc["summary"]["errors"].as_u64(), Some(doc["diagnostics"].as_array().map_or(0, |d| d.len() as u64)));
    let err = stderr_of(&out);
    assert!(err.contains("bai::docker::build"), "printed with its code: {err}");
    assert!(err.contains("Applied ") && err.contains("1 failed"), "the report is on stderr: {err}");
    assert!(lab.container(0).is_none());
}
