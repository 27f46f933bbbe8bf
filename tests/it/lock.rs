//! `bai.lock` over real parts: OpenSSH nodes on 127.0.0.1, the real binary as agent, the real Docker
//! engine. Each lab holds a built image and a loaded archive (a `docker save` of a busybox image), one
//! session on each.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::images::{BOX_DOCKERFILE, docker, docker_ok, test_image, write_context};
use crate::support::lab::SshLab;
use crate::support::{json, stderr_of, stdout_of};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One lab: a directory with `lab.kdl`, the build context `img/`, the archive `offline.tar`, and the
/// lock once written; nodes of its own.
struct LockLab {
    lab: SshLab,
    /// Image refs, shared by labs made from the same files.
    box_ref: String,
    archive_ref: String,
}

impl std::ops::Deref for LockLab {
    type Target = SshLab;
    fn deref(&self) -> &SshLab {
        &self.lab
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A `docker save` tarball of an image tagged `reference`, built from busybox with `extra` Dockerfile lines.
fn save_archive(reference: &str, extra: &str, into: &Path) {
    test_image();
    let ctx = tempfile::tempdir().expect("tempdir");
    write_context(ctx.path(), &format!("{BOX_DOCKERFILE}{extra}"));
    docker_ok(&["build", "-q", "-t", reference, &ctx.path().display().to_string()]);
    docker_ok(&["save", "-o", &into.display().to_string(), reference]);
}

impl LockLab {
    /// A lab of one node with fresh files: a new context and archive under refs of its own.
    fn new() -> Self {
        let tag = unique("lock");
        let lab = LockLab::with_refs(format!("bai-it/{tag}-box:1"), format!("bai-it/{tag}-offline:1"));
        save_archive(&lab.archive_ref, "", &lab.dir.path().join("offline.tar"));
        lab.write();
        lab
    }

    /// A lab on nodes of its own with a copy of `other`'s files (context, archive, lock).
    fn copy_of(other: &LockLab) -> Self {
        let lab = LockLab::with_refs(other.box_ref.clone(), other.archive_ref.clone());
        std::fs::copy(other.dir.path().join("offline.tar"), lab.dir.path().join("offline.tar")).expect("copy");
        let lock = std::fs::read_to_string(other.lock_path()).expect("the other lab's lock");
        let renamed = lock.replace(&format!("cluster \"{}\"", other.cluster), &format!("cluster \"{}\"", lab.cluster));
        std::fs::write(lab.lock_path(), renamed).expect("write lock");
        lab.write();
        lab
    }

    fn with_refs(box_ref: String, archive_ref: String) -> Self {
        // The shared lab writes the build context `img/` (busybox, BOX_DOCKERFILE).
        LockLab { lab: SshLab::new("lk", 1), box_ref, archive_ref }
    }

    fn write(&self) {
        let text = format!(
            "cluster \"{cluster}\" {{\n    ssh user=\"bai-test\" identity=\"{key}\" known-hosts=\"{hosts}\" connect-timeout=\"5s\"\n    \
             image \"box\" ref=\"{box_ref}\" {{\n        build context=\"./img\"\n    }}\n    \
             image \"offline\" ref=\"{archive_ref}\" {{\n        archive \"./offline.tar\"\n    }}\n    \
             node \"node0\" address=\"127.0.0.1\" {{\n        ssh port={port}\n    }}\n    \
             session \"job-box\" image=\"box\" node=\"node0\" {{\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }}\n    \
             session \"job-offline\" image=\"offline\" node=\"node0\" {{\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }}\n}}\n",
            cluster = self.cluster,
            key = self.sshd.client_key_path().display(),
            hosts = self.sshd.known_hosts_path().display(),
            box_ref = self.box_ref,
            archive_ref = self.archive_ref,
            port = self.sshd.port(0),
        );
        self.write_text(&text);
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.path().join("bai.lock")
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.lock_path()).unwrap_or_default()
    }

    fn container_id(&self, session: &str) -> String {
        docker_ok(&["inspect", "-f", "{{.Id}}", &format!("bai.{}.{session}", self.cluster)])
    }

    /// `bai status --format json`: the node's images and sessions, without what names the lab.
    fn state(&self) -> (serde_json::Value, serde_json::Value) {
        let out = self.run(&["status", "--format", "json"]);
        assert_ok(&out);
        let status = json(&stdout_of(&out));
        let node = &status["clusters"][0]["nodes"][0];
        let sessions: Vec<serde_json::Value> = node["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|s| serde_json::json!({"name": s["name"], "spec_hash": s["spec_hash"], "spec": s["spec"], "state": s["state"]}))
            .collect();
        (node["images"].clone(), serde_json::Value::Array(sessions))
    }
}

impl Drop for LockLab {
    fn drop(&mut self) {
        // The nodes' agent records too; the shared lab then removes every container left.
        let _ = self.run(&["destroy", "--yes"]);
    }
}

/// Removes the refs a test made, once no lab uses them.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for reference in &self.0 {
            let _ = docker(&["rmi", "-f", reference]);
        }
    }
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", stdout_of(out), stderr_of(out));
}

fn assert_fails(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "stdout:\n{}\nstderr:\n{}", stdout_of(out), stderr_of(out));
    stderr_of(out)
}

#[test]
fn lock_is_stable_and_refuses_another_agent() {
    let lab = LockLab::new();
    let _images = Images(vec![lab.box_ref.clone(), lab.archive_ref.clone()]);
    // Before any apply: local facts only, the image ids unresolved.
    let out = lab.run(&["lock", "--accept-new-host-keys"]);
    assert_ok(&out);
    assert!(stderr_of(&out).contains("is on no node yet"), "{}", stderr_of(&out));
    let first = lab.lock();
    assert!(
        first.contains("agent sha256=") && first.contains("context-sha256=") && !first.contains("image-id="),
        "{first}"
    );
    assert_ok(&lab.run(&["lock"]));
    assert_eq!(lab.lock(), first, "locking again changes no byte");

    // Apply records the image ids; locking again from the nodes gives the same bytes.
    assert_ok(&lab.run(&["apply", "--yes"]));
    let applied = lab.lock();
    assert_eq!(applied.matches("image-id=\"sha256:").count(), 2, "{applied}");
    assert_ok(&lab.run(&["lock"]));
    assert_eq!(lab.lock(), applied);
    assert_ok(&lab.run(&["lock"]));
    assert_eq!(lab.lock(), applied);

    // A lock made by another bai is refused, naming the way forward.
    let agent = applied.lines().find(|l| l.starts_with("agent sha256=")).expect("agent line").to_string();
    std::fs::write(lab.lock_path(), applied.replace(&agent, &format!("agent sha256=\"{}\"", "0".repeat(64))))
        .expect("edit lock");
    let err = assert_fails(&lab.run(&["apply", "--yes"]));
    assert!(err.contains(&"0".repeat(64)) && err.contains("bai apply --update-lock"), "{err}");
    assert_ok(&lab.run(&["apply", "--yes", "--update-lock"]));
    assert_eq!(lab.lock(), applied, "--update-lock moved the agent back to this bai");

    // A lock that does not read is a diagnostic at its span, like a lab's.
    std::fs::write(lab.lock_path(), applied.replace("version 1", "version 1 colour=\"red\"")).expect("edit lock");
    let err = assert_fails(&lab.run(&["apply", "--yes"]));
    assert!(err.contains("bai::lock::invalid") && err.contains("unknown property `colour`"), "{err}");
    assert!(err.contains("bai.lock:4:"), "the report names the file, line and column: {err}");
}

#[test]
fn edited_context_or_swapped_archive_stops_apply_until_update_lock() {
    let lab = LockLab::new();
    let _images = Images(vec![lab.box_ref.clone(), lab.archive_ref.clone()]);
    assert!(!lab.lock_path().exists());
    let out = lab.run(&["apply", "--yes", "--accept-new-host-keys"]);
    assert_ok(&out);
    assert!(stderr_of(&out).contains("bai.lock: created"), "{}", stderr_of(&out));
    let locked = lab.lock();
    let before = (lab.container_id("job-box"), lab.container_id("job-offline"));
    let box_id = docker_ok(&["inspect", "-f", "{{.Id}}", &lab.box_ref]);

    // The context changes and the archive is another image: both are refused before any node changes.
    std::fs::write(lab.dir.path().join("img/Dockerfile"), format!("{BOX_DOCKERFILE}ENV V=2\n")).expect("edit context");
    save_archive(&lab.archive_ref, "LABEL v=2\n", &lab.dir.path().join("offline.tar"));
    let err = assert_fails(&lab.run(&["apply", "--yes"]));
    assert!(err.contains("image `box`: context-sha256 is"), "{err}");
    assert!(err.contains("image `offline`: sha256 is"), "{err}");
    assert!(err.contains(&lab.cluster), "{err}");
    assert_eq!(lab.lock(), locked, "the lock is untouched");
    assert_eq!((lab.container_id("job-box"), lab.container_id("job-offline")), before, "no container replaced");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.Id}}", &lab.box_ref]), box_id, "nothing was built");

    // --update-lock moves both entries and makes the images again from the new files.
    let out = lab.run(&["apply", "--yes", "--update-lock"]);
    assert_ok(&out);
    let said = stderr_of(&out);
    assert!(said.contains("moved cluster") && said.contains("image `box`: context-sha256"), "{said}");
    assert!(stdout_of(&out).contains("bai.lock pins context sha256"), "{}", stdout_of(&out));
    let moved = lab.lock();
    assert_ne!(moved, locked);
    assert_eq!(moved.matches("image-id=\"sha256:").count(), 2, "{moved}");
    let archive_id = docker_ok(&["inspect", "-f", "{{.Id}}", &lab.archive_ref]);
    assert!(moved.contains(&archive_id), "the loaded archive's id is locked: {moved}");
    assert_ne!(docker_ok(&["inspect", "-f", "{{.Id}}", &lab.box_ref]), box_id, "the box was built again");
    // And now the lab is as locked: nothing to do.
    let out = lab.run(&["apply", "--yes"]);
    assert_ok(&out);
    assert_eq!(lab.lock(), moved);
}

#[test]
fn two_labs_from_one_lock_are_identical() {
    let first = LockLab::new();
    let _images = Images(vec![first.box_ref.clone(), first.archive_ref.clone()]);
    assert_ok(&first.run(&["apply", "--yes", "--accept-new-host-keys"]));
    let second = LockLab::copy_of(&first);
    let seeded = second.lock();
    let out = second.run(&["apply", "--yes", "--accept-new-host-keys"]);
    assert_ok(&out);
    assert!(!stderr_of(&out).contains("bai.lock: "), "nothing added or moved: {}", stderr_of(&out));
    assert_eq!(second.lock(), seeded, "the committed lock held for the second lab byte for byte");

    let (images_a, sessions_a) = first.state();
    let (images_b, sessions_b) = second.state();
    assert_eq!(images_a, images_b, "same images: ids, context and archive hashes");
    assert_eq!(sessions_a, sessions_b, "same sessions: spec hashes");
    let archive = images_a.as_array().and_then(|i| i.iter().find(|i| i["name"] == "offline")).expect("archive");
    assert!(seeded.contains(archive["id"].as_str().expect("id")), "the lock's archive id is what both loaded");
    assert!(images_a.as_array().is_some_and(|i| i.iter().all(|i| i["content"].is_string())), "{images_a}");
}
