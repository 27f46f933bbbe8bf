//! A session container attacks its node through the vfolders it mounts: it writes anything there —
//! symbolic links, FIFOs, huge sparse files — and the agent (the node's user) must follow none of it,
//! read none of it without bounds, and let none of it hide a vfolder. The real binary, a `local=#true`
//! node (the agent as a child process), the machine's real Docker engine and a real session container
//! that plants what it plants from inside its mount.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::lab::LocalLab;
use crate::support::{json, stderr_of, stdout_of};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// How long a command may take before the test calls it hung.
const LIMIT: Duration = Duration::from_secs(90);

/// The shared [`LocalLab`] with an attacking session.
struct HostileLab(LocalLab);

impl std::ops::Deref for HostileLab {
    type Target = LocalLab;
    fn deref(&self) -> &LocalLab {
        &self.0
    }
}

impl HostileLab {
    fn new() -> Self {
        let lab = LocalLab::new("hs");
        crate::support::images::write_context(&lab.file("img"), crate::support::images::BOX_DOCKERFILE);
        HostileLab(lab)
    }

    fn vfolders(&self) -> PathBuf {
        self.file("vfolders")
    }

    /// One node; vfolder `data` with `quota`, and `legacy` vfolders too; one session `attacker` mounting
    /// them all read-write that, once the test says go ([`HostileLab::plant`]), runs `script` in a shell.
    fn write(&self, quota: &str, legacy: &[&str], script: &str) {
        let mut vfolders = format!("    vfolder \"data\" node=\"ws\" quota=\"{quota}\"\n");
        let mut mounts = "        mount \"data\" alias=\"data\"\n".to_string();
        for name in legacy {
            vfolders.push_str(&format!("    vfolder \"{name}\" node=\"ws\"\n"));
            mounts.push_str(&format!("        mount \"{name}\" alias=\"{name}\"\n"));
        }
        let script = format!(
            "while [ ! -e /home/work/data/go ]; do sleep 0.1; done; {script}; touch /home/work/data/planted; exec sleep 3600"
        )
        .replace('"', "\\\"");
        let text = format!(
            "cluster \"{cluster}\" {{\n    node \"ws\" local=#true {{\n        vfolder-root \"{root}\"\n    }}\n    image \"box\" ref=\"bai-it/box:1\" {{\n        build context=\"./img\"\n    }}\n{vfolders}    session \"attacker\" image=\"box\" node=\"ws\" {{\n{mounts}        command \"/bin/busybox\" \"sh\" \"-c\" \"{script}\"\n    }}\n}}\n",
            cluster = self.cluster,
            root = self.vfolders().display(),
        );
        self.write_text(&text);
    }

    /// A vfolder as an earlier bai made it: the directory with its marker inside.
    fn plant_legacy(&self, name: &str) {
        let dir = self.vfolders().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let marker = serde_json::json!({"cluster": self.cluster, "name": name, "permission": "rw", "quota": null});
        std::fs::write(dir.join(".bai-vfolder.json"), marker.to_string()).expect("write the old marker");
    }

    /// `bai ARGS… LAB`, killed after [`LIMIT`]: `None` when it had to be.
    fn run(&self, args: &[&str]) -> Option<std::process::Output> {
        let out = self.dir.path().join(format!("out-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let (stdout, stderr) = (out.with_extension("stdout"), out.with_extension("stderr"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_bai"))
            .current_dir(crate::support::root())
            .env("NO_COLOR", "1")
            .env("BAI_HOME", self.dir.path().join("agent-home"))
            .args(args)
            .arg(self.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("bai runs");
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                // The agent it left behind is stuck opening a FIFO: give it a writer so that it ends.
                unblock_fifos(&self.vfolders());
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let status = status?;
        let read = |p: &Path| std::fs::read(p).unwrap_or_default();
        Some(std::process::Output { status, stdout: read(&stdout), stderr: read(&stderr) })
    }

    /// Runs and expects the exit code; fails the test when the command hung.
    fn run_ok(&self, args: &[&str], code: i32) -> std::process::Output {
        let out = self.run(args).unwrap_or_else(|| panic!("`bai {args:?}` hung for {LIMIT:?}"));
        assert_eq!(
            out.status.code(),
            Some(code),
            "bai {args:?}\nstdout:\n{}\nstderr:\n{}",
            stdout_of(&out),
            stderr_of(&out)
        );
        out
    }

    /// Lets the session plant what it plants, and waits until it has.
    fn plant(&self) {
        std::fs::write(self.vfolders().join("data/go"), "").expect("say go");
        let flag = self.vfolders().join("data/planted");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !flag.exists() {
            assert!(Instant::now() < deadline, "the session never finished planting");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Opens every FIFO under `root` (two levels) for writing without blocking, and closes it again: a
/// reader blocked on one returns.
fn unblock_fifos(root: &Path) {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_fifo()) {
                let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(entry.path());
            }
        }
    }
}

/// Item 1: a session plants a symbolic link where the agent used to write its marker's temporary file; a
/// quota change must not write through it (the link reaches a file of the node's user outside the
/// vfolder, as it could reach `~/.ssh/authorized_keys`).
#[test]
fn a_quota_change_never_writes_through_a_link_the_session_planted() {
    let lab = HostileLab::new();
    let victim = lab.dir.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").expect("write the victim");
    // From `<root>/data/`, `../../victim.txt` is the victim.
    let plant = "ln -s ../../victim.txt /home/work/data/.bai-vfolder.json.tmp";
    lab.write("1GiB", &[], plant);
    lab.run_ok(&["apply", "--yes"], 0);
    lab.plant();
    assert!(
        std::fs::symlink_metadata(lab.vfolders().join("data/.bai-vfolder.json.tmp")).is_ok_and(|m| m.is_symlink()),
        "the session planted its link"
    );

    lab.write("2GiB", &[], plant);
    let out = lab.run_ok(&["apply", "--yes"], 0);
    assert!(stdout_of(&out).contains("~ `quota`: 1GiB → 2GiB"), "{}", stdout_of(&out));
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious\n", "the link's target is untouched");
    let status = json(&stdout_of(&lab.run_ok(&["status", "--format", "json"], 0)));
    let vfolders = &status["clusters"][0]["nodes"][0]["vfolders"];
    assert_eq!(vfolders[0]["name"], "data", "{status}");
    assert_eq!(vfolders[0]["quota"], 2_147_483_648u64, "{status}");
    // The links are the session's own files: still there, still links.
    assert!(std::fs::symlink_metadata(lab.vfolders().join("data/.bai-vfolder.json.tmp")).is_ok_and(|m| m.is_symlink()));
}

/// Item 2: a session turns the marker of the vfolders it mounts into a FIFO, a 2 GiB sparse file and a
/// link to `/dev/zero`. `status` and `plan` neither hang nor read it all, nothing silently vanishes: each
/// such vfolder is reported as a conflict with the reason, and `apply` refuses to touch it, naming why.
#[test]
fn a_marker_made_a_fifo_a_huge_file_or_a_link_is_a_conflict_not_a_hang() {
    let lab = HostileLab::new();
    // Vfolders made by an earlier bai keep their marker inside the directory, where the session writes.
    for name in ["old-fifo", "old-big", "old-link"] {
        lab.plant_legacy(name);
    }
    let plant = "cd /home/work; rm -f data/.bai-vfolder.json && mkfifo data/.bai-vfolder.json; \
                 rm old-fifo/.bai-vfolder.json && mkfifo old-fifo/.bai-vfolder.json; \
                 truncate -s 2G old-big/.bai-vfolder.json; \
                 ln -sf /dev/zero old-link/.bai-vfolder.json";
    let legacy = ["old-fifo", "old-big", "old-link"];
    lab.write("1GiB", &legacy, plant);
    let first = lab.run_ok(&["apply", "--yes"], 0);
    let plan = stdout_of(&first);
    assert!(
        plan.contains("Plan: 4 to create") && !plan.contains("vfolder:old-"),
        "the old vfolders are adopted: {plan}"
    );
    lab.plant();

    let status = lab.run_ok(&["status"], 0);
    let text = stdout_of(&status);
    assert!(text.contains("vfolder data: rw"), "a planted FIFO in a vfolder is just data: {text}");
    for (name, why) in [
        ("old-fifo", "its marker is a FIFO, not a regular file"),
        ("old-big", "its marker is 2147483648 bytes, more than a marker may hold"),
        ("old-link", "its marker is a symbolic link"),
    ] {
        assert!(text.contains(&format!("conflict: vfolder `{name}`: {why}")), "{name}: {text}");
    }
    let snapshot = json(&stdout_of(&lab.run_ok(&["status", "--format", "json"], 0)));
    let unowned = &snapshot["clusters"][0]["nodes"][0]["unowned"];
    assert_eq!(unowned.as_array().map(Vec::len), Some(3), "{snapshot}");
    assert_eq!(unowned[0]["kind"], "vfolder", "{snapshot}");

    let plan = lab.run_ok(&["plan"], 0);
    assert!(stderr_of(&plan).contains("vfolder `old-fifo`: its marker is a FIFO"), "{}", stderr_of(&plan));

    // Apply does not take them over: the agent refuses each, naming why, and the session is left alone.
    let refused = lab.run_ok(&["apply", "--yes"], 1);
    let err = stderr_of(&refused);
    assert!(err.contains("vfolder `old-big`: its marker is 2147483648 bytes"), "{err}");
    assert!(err.contains("bai leaves it alone"), "{err}");
    assert!(
        std::fs::metadata(lab.vfolders().join("old-big/.bai-vfolder.json")).is_ok_and(|m| m.len() == 2 << 30),
        "the session's file is left as it is"
    );
}
