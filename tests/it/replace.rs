//! Replacing a session on the machine's real Docker engine: the new container is made before the old one
//! goes, so a replacement the engine refuses leaves the running session as it was, and says so.

use std::process::Command;

use crate::support::images::{BOX_DOCKERFILE, docker_ok, remove_cluster_containers, require_docker};
use crate::support::{bai, stderr_of, stdout_of};

struct ReplaceLab {
    dir: tempfile::TempDir,
    cluster: String,
}

impl ReplaceLab {
    fn new() -> Self {
        require_docker();
        let dir = tempfile::tempdir().expect("tempdir");
        crate::support::images::write_context(&dir.path().join("img"), BOX_DOCKERFILE);
        ReplaceLab { dir, cluster: format!("replace-{}", std::process::id()) }
    }

    /// The lab with session `keep` running `command` (KDL arguments; none leaves it to the image, which
    /// has no default command, so that the engine refuses to create it).
    fn write(&self, command: &str) {
        let command = if command.is_empty() { String::new() } else { format!("        command {command}\n") };
        let text = format!(
            "cluster \"{}\" {{\n    node \"ws\" local=#true\n    image \"box\" ref=\"bai-it/replace-box:1\" {{\n        \
             build context=\"./img\"\n    }}\n    session \"keep\" image=\"box\" node=\"ws\" {{\n{command}    }}\n}}\n",
            self.cluster
        );
        std::fs::write(self.dir.path().join("lab.kdl"), text).expect("write lab");
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        bai()
            .env("BAI_HOME", self.dir.path().join("agent-home"))
            .args(args)
            .arg(self.dir.path().join("lab.kdl"))
            .output()
            .expect("bai runs")
    }

    fn container(&self) -> String {
        format!("bai.{}.keep", self.cluster)
    }

    /// The id and state of the session's container.
    fn id_and_state(&self) -> (String, String) {
        let out = docker_ok(&["inspect", "--format", "{{.Id}} {{.State.Status}}", &self.container()]);
        let (id, state) = out.split_once(' ').expect("id and state");
        (id.to_string(), state.to_string())
    }

    /// Every container, by name, that carries this cluster's label.
    fn containers(&self) -> Vec<String> {
        let filter = format!("label=ai.bai.cluster={}", self.cluster);
        let names = docker_ok(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
        let mut names: Vec<String> = names.lines().map(str::to_string).collect();
        names.sort();
        names
    }
}

impl Drop for ReplaceLab {
    fn drop(&mut self) {
        remove_cluster_containers(&self.cluster);
    }
}

fn text(out: &std::process::Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout_of(out), stderr_of(out))
}

#[test]
fn a_replacement_the_engine_refuses_leaves_the_running_session_as_it_was() {
    let lab = ReplaceLab::new();
    lab.write(r#""/bin/busybox" "sleep" "3600""#);
    let first = lab.run(&["apply", "--yes"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let (old_id, state) = lab.id_and_state();
    assert_eq!(state, "running");

    // No command, and the image has none: Docker refuses to create the new container.
    lab.write("");
    let refused = lab.run(&["apply", "--yes"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let out = text(&refused);
    assert!(out.contains("-/+ session:keep"), "a replace was planned: {out}");
    assert!(out.contains("Docker refused the new container for") && out.contains("the running one is kept"), "{out}");
    assert_eq!(lab.id_and_state(), (old_id.clone(), "running".to_string()), "the old container still runs: {out}");
    assert_eq!(lab.containers(), vec![lab.container()], "nothing else is left behind: {out}");

    // A replacement left half way (an agent killed between creating it and taking the old one away) is
    // neither the session nor a conflict, and the next replace clears it.
    let leftover = format!("{}_next", lab.container());
    let labels =
        [format!("ai.bai.cluster={}", lab.cluster), "ai.bai.node=ws".to_string(), "ai.bai.session=keep".to_string()];
    let mut create = vec!["create", "--name", &leftover];
    for l in &labels {
        create.extend(["--label", l]);
    }
    create.extend(["bai-it/replace-box:1", "/bin/busybox", "true"]);
    docker_ok(&create);
    let status = lab.run(&["status", "--format", "json"]);
    assert!(
        !stdout_of(&status).contains("_next"),
        "a leftover is not shown as a session or a conflict: {}",
        text(&status)
    );

    lab.write(r#""/bin/busybox" "sleep" "3601""#);
    let fixed = lab.run(&["apply", "--yes"]);
    assert_eq!(fixed.status.code(), Some(0), "{}", text(&fixed));
    let (new_id, state) = lab.id_and_state();
    assert_ne!(new_id, old_id, "the session was replaced");
    assert_eq!(state, "running");
    assert_eq!(lab.containers(), vec![lab.container()], "the leftover is gone: {}", text(&fixed));
    let plan = lab.run(&["plan"]);
    assert!(stdout_of(&plan).contains("No changes"), "{}", text(&plan));

    let destroy = lab.run(&["destroy", "--yes"]);
    assert_eq!(destroy.status.code(), Some(0), "{}", text(&destroy));
    assert!(lab.containers().is_empty(), "destroy removed the session");
    let _ = Command::new("docker").args(["rm", "-f", &leftover]).output();
}
