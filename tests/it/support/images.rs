//! The local test image and the docker CLI, for tests that run containers on the machine's real engine.
//! No registry is reachable in tests, so the image is built here `FROM scratch` with Debian's static
//! busybox; without a reachable engine these helpers fail the test loudly, never skip it.

use std::process::{Command, Output};
use std::sync::OnceLock;

/// The shared test image: busybox on an empty base, `PATH=/bin`, sleeping by default.
pub const IMAGE: &str = "bai-test/busybox:1";

/// The test image's Dockerfile; its context holds `busybox` next to it (see [`context`]).
pub const DOCKERFILE: &str =
    "FROM scratch\nCOPY busybox /bin/busybox\nENV PATH=/bin\nCMD [\"/bin/busybox\",\"sleep\",\"3600\"]\n";

/// A box with busybox and nothing to run by default: the labs' sessions say what to run.
pub const BOX_DOCKERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nENV PATH=/bin\n";

/// Fails the test loudly when the Docker engine does not answer: never a silent skip.
pub fn require_docker() {
    let output = Command::new("docker").arg("info").output();
    assert!(
        output.as_ref().is_ok_and(|o| o.status.success()),
        "these tests need the Docker engine: `docker info` failed ({output:?})"
    );
}

/// Removes every container of `cluster`, found by bai's ownership label: a test lab's clean-up, run from
/// `Drop` and so also after a failed test; it never panics.
pub fn remove_cluster_containers(cluster: &str) {
    let filter = format!("label=ai.bai.cluster={cluster}");
    if let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() {
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

/// Runs the docker CLI; a missing CLI fails the test.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI ({e}); these tests need Docker installed and running"))
}

/// Runs the docker CLI and returns its trimmed stdout, failing the test with its stderr otherwise.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A build context in a fresh temporary directory (see [`write_context`]).
pub fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_context(dir.path(), dockerfile);
    dir
}

/// A build context at `dir` (created): `dockerfile` as `Dockerfile`, and `/bin/busybox` as `busybox`.
pub fn write_context(dir: &std::path::Path, dockerfile: &str) {
    std::fs::create_dir_all(dir).expect("the context directory is created");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("the Dockerfile is written");
    std::fs::copy("/bin/busybox", dir.join("busybox"))
        .expect("/bin/busybox exists (Debian's busybox-static; .ci/run installs it)");
}

/// Builds [`IMAGE`] once per test run and returns its reference; concurrent callers wait for the one
/// build. Fails the test when the engine is not reachable.
pub fn test_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = docker(&["version", "--format", "{{.Server.Version}}"]);
        assert!(
            out.status.success(),
            "the Docker engine is not reachable; these tests need it running: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ctx = context(DOCKERFILE);
        docker_ok(&["build", "-q", "-t", IMAGE, &ctx.path().display().to_string()]);
    });
    IMAGE
}
