//! Replacing a session on the machine's real Docker engine: the new container is made before the old one
//! goes, so a replacement the engine refuses leaves the running session as it was, and says so.

use std::process::Command;

use crate::support::images::{BOX_DOCKERFILE, docker_ok};
use crate::support::lab::{LocalLab, text};
use crate::support::stdout_of;

/// The shared [`LocalLab`] with one session, `keep`.
struct ReplaceLab(LocalLab);

impl std::ops::Deref for ReplaceLab {
    type Target = LocalLab;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl ReplaceLab {
    fn new() -> Self {
        let lab = ReplaceLab(LocalLab::new("replace"));
        crate::support::images::write_context(&lab.file("img"), BOX_DOCKERFILE);
        lab
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
        self.write_text(&text);
    }

    fn keep(&self) -> String {
        self.container_name("keep")
    }

    /// The id and state of the session's container.
    fn id_and_state(&self) -> (String, String) {
        let out = docker_ok(&["inspect", "--format", "{{.Id}} {{.State.Status}}", &self.keep()]);
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

#[test]
fn a_replacement_the_engine_refuses_leaves_the_running_session_as_it_was() {
    let lab = ReplaceLab::new();
    lab.write(r#""/bin/busybox" "sleep" "3600""#);
    lab.expect(0, &["apply", "--yes"]);
    let (old_id, state) = lab.id_and_state();
    assert_eq!(state, "running");

    // No command, and the image has none: Docker refuses to create the new container.
    lab.write("");
    let refused = lab.expect(1, &["apply", "--yes"]);
    let out = text(&refused);
    assert!(out.contains("-/+ session:keep"), "a replace was planned: {out}");
    assert!(out.contains("Docker refused the new container for") && out.contains("the running one is kept"), "{out}");
    assert!(out.contains("bai::docker::replacement_refused"), "with the agent's code: {out}");
    assert_eq!(lab.id_and_state(), (old_id.clone(), "running".to_string()), "the old container still runs: {out}");
    assert_eq!(lab.containers(), vec![lab.keep()], "nothing else is left behind: {out}");

    // A replacement left half way (an agent killed between creating it and taking the old one away) is
    // neither the session nor a conflict, and the next replace clears it.
    let leftover = format!("{}-next-", lab.keep());
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
        !stdout_of(&status).contains("-next-"),
        "a leftover is not shown as a session or a conflict: {}",
        text(&status)
    );

    lab.write(r#""/bin/busybox" "sleep" "3601""#);
    let fixed = lab.run(&["apply", "--yes"]);
    assert_eq!(fixed.status.code(), Some(0), "{}", text(&fixed));
    let (new_id, state) = lab.id_and_state();
    assert_ne!(new_id, old_id, "the session was replaced");
    assert_eq!(state, "running");
    assert_eq!(lab.containers(), vec![lab.keep()], "the leftover is gone: {}", text(&fixed));
    let plan = lab.run(&["plan"]);
    assert!(stdout_of(&plan).contains("No changes"), "{}", text(&plan));

    let destroy = lab.run(&["destroy", "--yes"]);
    assert_eq!(destroy.status.code(), Some(0), "{}", text(&destroy));
    assert!(lab.containers().is_empty(), "destroy removed the session");
    let _ = Command::new("docker").args(["rm", "-f", &leftover]).output();
}
