//! A compromised node attacks the controller: what its agent says is not trusted. Real OpenSSH nodes on
//! 127.0.0.1, the real binary as the agent, the machine's Docker engine; the node is "compromised" by
//! writing into its agent home, as a root on that node could.

use std::path::{Path, PathBuf};

use crate::support::images::docker;
use crate::support::lab::{SshLab, assert_code};
use crate::support::{stderr_of, stdout_of};

/// The agent home of node `i`, as the harness's sshd sets `$HOME`.
fn agent_home(lab: &SshLab, i: usize) -> PathBuf {
    lab.sshd.home(i).join(".local/share/bai")
}

/// Whether any file under `dir` holds `needle`.
fn any_file_holds(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            any_file_holds(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

/// Item 4: a generation record that gives an image a build context of a controller directory (here one
/// holding a planted secret) and no hash. `bai rollback` takes sources from the lab alone: it refuses,
/// names why, and never packs, uploads or builds that directory. An honest rollback that rebuilds an
/// image from the lab's own context still works.
#[test]
fn rollback_never_packs_a_controller_path_a_record_names() {
    let lab = SshLab::new("hn", 1);
    lab.write(&["1"]);
    assert_code(&lab.run(&["apply", "--yes"]), 0, "generation 1");
    // Generation 2 names another image ref, so that going back to 1 rebuilds `bai-it/box:1` from the lab.
    let other_ref = format!("bai-it/box-{}:2", lab.cluster);
    let text = std::fs::read_to_string(lab.path()).expect("read lab").replace("bai-it/box:1", &other_ref);
    lab.write_text(&text.replace("VERSION=\"1\"", "VERSION=\"2\""));
    assert_code(&lab.run(&["apply", "--yes"]), 0, "generation 2");
    let back = lab.run(&["rollback", "--yes", "--to", "1"]);
    assert_code(&back, 0, "an honest rollback rebuilds from the lab's own context");
    assert!(stdout_of(&back).contains("-/+ image:node0/box"), "{}", stdout_of(&back));
    assert_eq!(lab.container(0).expect("job-0 runs").0, "1");
    let _ = docker(&["rmi", &other_ref]);

    // The compromised node rewrites generation 1: its image now comes from a controller directory that
    // holds a secret, with no hash to check it against.
    let secret = tempfile::tempdir().expect("tempdir");
    let token = format!("TOPSECRET-{}", lab.cluster);
    std::fs::write(secret.path().join("secret.txt"), &token).expect("write the secret");
    std::fs::write(secret.path().join("Dockerfile"), "FROM scratch\nCOPY secret.txt /secret.txt\n").expect("write");
    let stolen = format!("bai-it/stolen-{}:1", lab.cluster);
    let record_path = agent_home(&lab, 0).join("generations").join(&lab.cluster).join("1.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).expect("record 1")).expect("json");
    let image = &mut record["images"]["box"];
    image["spec"]["ref"] = stolen.clone().into();
    image["hash"] = "0".repeat(64).into();
    image["source"] =
        serde_json::json!({"kind": "build", "context": secret.path().display().to_string(), "sha256": null});
    std::fs::write(&record_path, record.to_string()).expect("rewrite record 1");

    let refused = lab.run(&["rollback", "--yes", "--to", "1"]);
    assert_code(&refused, 1, "the hostile record is refused");
    let err = stderr_of(&refused);
    assert!(err.contains("image `box` cannot be restored"), "{err}");
    assert!(err.contains("no sha256"), "{err}");
    assert!(!err.contains(&secret.path().display().to_string()), "the node's path is never used: {err}");
    assert!(!docker(&["image", "inspect", &stolen]).status.success(), "nothing was built from the secret");
    let _ = docker(&["rmi", &stolen]);
    assert!(!any_file_holds(&agent_home(&lab, 0), token.as_bytes()), "the secret never reached the node");
    assert_eq!(lab.container(0).expect("job-0 still runs").0, "1", "nothing changed");

    // With a hash, the record still cannot name a path: the lab's context is what is checked and sent.
    record["images"]["box"]["source"]["sha256"] = "ab".repeat(32).into();
    std::fs::write(&record_path, record.to_string()).expect("rewrite record 1");
    let refused = lab.run(&["rollback", "--yes", "--to", "1"]);
    assert_code(&refused, 1, "a hash that the lab's context does not have is refused");
    assert!(stderr_of(&refused).contains("changed since generation 1"), "{}", stderr_of(&refused));
    assert!(!any_file_holds(&agent_home(&lab, 0), token.as_bytes()), "the secret never reached the node");
}

/// Item 4, for secrets: a record whose session reads an env from a controller file (or variable) that
/// the lab does not name. A rollback would read it and send its value to the node in the container's
/// environment; it refuses instead, naming the session and the source, and the value never leaves.
#[test]
fn rollback_never_reads_a_secret_source_a_record_names() {
    let lab = SshLab::new("hs", 1);
    lab.write(&["1"]);
    assert_code(&lab.run(&["apply", "--yes"]), 0, "generation 1");
    lab.write(&["2"]);
    assert_code(&lab.run(&["apply", "--yes"]), 0, "generation 2");

    let secret = tempfile::tempdir().expect("tempdir");
    let token = format!("CONTROLLER-ONLY-{}", lab.cluster);
    let file = secret.path().join("id_rsa");
    std::fs::write(&file, &token).expect("write the secret");
    let record_path = agent_home(&lab, 0).join("generations").join(&lab.cluster).join("1.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).expect("record 1")).expect("json");
    record["sessions"]["job-0"]["spec"]["env"]["STOLEN"] = serde_json::json!({"from_file": file.display().to_string()});
    std::fs::write(&record_path, record.to_string()).expect("rewrite record 1");

    let refused = lab.run(&["rollback", "--yes", "--to", "1"]);
    assert_code(&refused, 1, "a secret source the lab does not name is refused");
    let err = stderr_of(&refused);
    assert!(err.contains("env `STOLEN` would be read from the file"), "{err}");
    assert!(!err.contains(&token), "{err}");
    assert!(!any_file_holds(&agent_home(&lab, 0), token.as_bytes()), "the value never reached the node");
    assert_eq!(lab.container(0).expect("job-0 still runs").0, "2", "nothing changed");
}
