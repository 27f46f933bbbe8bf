//! Secrets end to end on a `local=#true` node with the real Docker engine: a distinctive value planted in
//! an environment variable and in a file must reach the container's environment and nothing else — no
//! command's output, no label, no file of the agent's — while a changed value still replaces exactly
//! the session that holds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::lab::LocalLab;
use crate::support::{bai, json, stderr_of, stdout_of};

const VAR: &str = "BAI_IT_SECRET_TOKEN";

/// The shared [`LocalLab`] with two sessions holding secrets, and every output seen.
struct SecretLab {
    lab: LocalLab,
    /// Every stdout and stderr seen, to be searched for the planted values.
    seen: Vec<String>,
}

impl std::ops::Deref for SecretLab {
    type Target = LocalLab;
    fn deref(&self) -> &LocalLab {
        &self.lab
    }
}

impl SecretLab {
    fn new() -> Self {
        let lab = LocalLab::new("sec");
        let cluster = &lab.cluster;
        // A tag of its own: other tests build `bai-it/box:1` from other Dockerfiles on the same engine, and
        // a tag moved under a lab's feet reads as a changed image.
        crate::support::images::write_context(&lab.file("img"), crate::support::images::DOCKERFILE);
        let text = format!(
            r#"cluster "{cluster}" {{
    node "ws" local=#true
    image "box" ref="bai-it/secret-box:1" {{
        build context="./img"
    }}
    session "from-env" image="box" node="ws" {{
        env PLAIN="visible"
        env TOKEN from-env="{VAR}"
        command "/bin/busybox" "sleep" "3600"
    }}
    session "from-file" image="box" node="ws" {{
        env FILE_TOKEN from-file="./token.txt"
        command "/bin/busybox" "sleep" "3600"
    }}
}}
"#
        );
        lab.write_text(&text);
        SecretLab { lab, seen: Vec::new() }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("agent-home")
    }

    fn set_file_secret(&self, value: &str) {
        std::fs::write(self.dir.path().join("token.txt"), format!("{value}\n")).expect("write token");
    }

    /// Runs bai with `token` in the controller's environment (unset when `None`), keeping its output.
    fn run(&mut self, token: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut cmd = bai();
        cmd.env("BAI_HOME", self.home()).env_remove(VAR);
        if let Some(token) = token {
            cmd.env(VAR, token);
        }
        let out = cmd.args(args).arg(self.path()).output().expect("bai runs");
        self.seen.push(stdout_of(&out));
        self.seen.push(stderr_of(&out));
        out
    }

    fn inspect(&self, session: &str) -> serde_json::Value {
        let name = format!("bai.{}.{session}", self.cluster);
        let out = Command::new("docker").args(["inspect", &name]).output().expect("docker runs");
        assert!(out.status.success(), "container {name} exists: {}", stderr_of(&out));
        json(&stdout_of(&out))[0].clone()
    }

    fn env_of(&self, session: &str) -> Vec<String> {
        let c = self.inspect(session);
        c["Config"]["Env"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
    }

    /// No output seen so far, no label and no file under the agent's home holds any of `secrets`.
    fn assert_nowhere(&self, secrets: &[&str]) {
        for text in &self.seen {
            for s in secrets {
                assert!(!text.contains(s), "a secret leaked into bai's output:\n{text}");
            }
        }
        for session in ["from-env", "from-file"] {
            let labels = self.inspect(session)["Config"]["Labels"].to_string();
            for s in secrets {
                assert!(!labels.contains(s), "a secret leaked into the labels of {session}: {labels}");
            }
        }
        for file in files_under(&self.home()) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            for s in secrets {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                    "a secret leaked into the agent's file {}",
                    file.display()
                );
            }
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_code(out: &std::process::Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout_of(out), stderr_of(out));
}

fn planted(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("pl4nted-{what}-{}-{nanos}-zq", std::process::id())
}

#[test]
fn secrets_reach_the_container_and_nothing_else_and_a_changed_value_replaces_its_session() {
    let mut lab = SecretLab::new();
    let (v1, v2, v3) = (planted("env-one"), planted("env-two"), planted("env-three"));
    let (f1, f2) = (planted("file-one"), planted("file-two"));
    lab.set_file_secret(&f1);

    // The offline commands: no value is read, none is shown.
    assert_code(&lab.run(Some(&v1), &["validate"]), 0);
    let text = lab.run(Some(&v1), &["plan", "--offline"]);
    assert_code(&text, 0);
    let json_plan = lab.run(Some(&v1), &["plan", "--offline", "--format", "json"]);
    assert_code(&json_plan, 0);
    assert_code(&lab.run(Some(&v1), &["plan", "--offline", "--format", "markdown"]), 0);
    let diff = bai().env(VAR, &v1).arg("diff").arg(lab.path()).arg(lab.path()).output().expect("bai runs");
    lab.seen.push(stdout_of(&diff));
    lab.seen.push(stderr_of(&diff));
    assert_code(&diff, 0);

    // Apply: the container gets the values; the node has a private key.
    let apply = lab.run(Some(&v1), &["apply", "--yes"]);
    assert_code(&apply, 0);
    let env = lab.env_of("from-env");
    assert!(env.contains(&format!("TOKEN={v1}")) && env.contains(&"PLAIN=visible".to_string()), "{env:?}");
    assert!(lab.env_of("from-file").contains(&format!("FILE_TOKEN={f1}")), "the file's trailing newline is dropped");
    let key = lab.home().join("state").join(&lab.cluster).join("secret-key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).expect("the node made its key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Status, its snapshot, the watcher and a plan against the snapshot: nothing drifted, nothing to do.
    let status = lab.run(Some(&v1), &["status"]);
    assert_code(&status, 0);
    assert!(stdout_of(&status).contains("session from-env: running\n"), "{}", stdout_of(&status));
    let snapshot = lab.run(Some(&v1), &["status", "--format", "json"]);
    assert_code(&snapshot, 0);
    assert!(!stdout_of(&snapshot).contains("digest\": \""), "no digest in the snapshot: {}", stdout_of(&snapshot));
    let state = lab.dir.path().join("state.json");
    std::fs::write(&state, stdout_of(&snapshot)).expect("write");
    let state = state.to_str().expect("utf-8").to_string();
    assert_code(&lab.run(Some(&v1), &["plan", "--detailed-exitcode", "--state", &state]), 0);
    assert_code(&lab.run(Some(&v1), &["watch", "--once"]), 0);
    let again = lab.run(Some(&v1), &["apply", "--yes"]);
    assert_code(&again, 0);
    assert!(stdout_of(&again).contains("No changes."), "{}", stdout_of(&again));

    // A value this machine cannot read: status takes it as unchanged; apply refuses before any change.
    let unset = lab.run(None, &["status"]);
    assert_code(&unset, 0);
    assert!(stdout_of(&unset).contains("session from-env: running\n"), "{}", stdout_of(&unset));
    assert!(stderr_of(&unset).contains(VAR), "{}", stderr_of(&unset));
    let id = lab.inspect("from-env")["Id"].clone();
    let refused = lab.run(None, &["apply", "--yes"]);
    assert_code(&refused, 1);
    let why = stderr_of(&refused);
    assert!(why.contains(&format!("session `from-env`: env `TOKEN` reads `{VAR}`")), "{why}");
    assert!(why.contains("nothing was changed"), "{why}");
    assert_eq!(lab.inspect("from-env")["Id"], id, "nothing changed");

    // Another value in the controller's environment: status sees drift, apply replaces that session only.
    let drifted = lab.run(Some(&v3), &["status"]);
    assert!(stdout_of(&drifted).contains("session from-env: running, drifted"), "{}", stdout_of(&drifted));
    let watched = lab.run(Some(&v3), &["watch", "--once"]);
    assert_code(&watched, 1);
    assert_code(&lab.run(None, &["watch", "--once"]), 0);
    let file_id = lab.inspect("from-file")["Id"].clone();
    // A live plan sees the change too; saved, it applies as planned (apply re-plans the same replace).
    assert_code(&lab.run(Some(&v1), &["plan", "--detailed-exitcode"]), 0);
    let live = lab.run(Some(&v2), &["plan", "--detailed-exitcode", "--format", "json"]);
    assert_code(&live, 2);
    assert!(stdout_of(&live).contains("(sensitive)"), "{}", stdout_of(&live));
    let saved = lab.dir.path().join("token.plan");
    let saved = saved.to_str().expect("utf-8").to_string();
    assert_code(&lab.run(Some(&v2), &["plan", "-o", &saved]), 0);
    let plan_file = std::fs::read_to_string(&saved).expect("the plan is saved");
    lab.seen.push(plan_file);
    let replace = bai().env("BAI_HOME", lab.home()).env(VAR, &v2).args(["apply", &saved]).output().expect("runs");
    lab.seen.push(stdout_of(&replace));
    lab.seen.push(stderr_of(&replace));
    assert_code(&replace, 0);
    let plan = stdout_of(&replace);
    assert!(plan.contains("-/+ session:from-env"), "{plan}");
    assert!(plan.contains("`env.TOKEN`: (sensitive) → (sensitive) (the secret's value changed)"), "{plan}");
    assert!(plan.contains("Plan: 0 to create, 0 to update, 1 to replace, 0 to delete."), "{plan}");
    assert_ne!(lab.inspect("from-env")["Id"], id, "replaced");
    assert_eq!(lab.inspect("from-file")["Id"], file_id, "the other session is untouched");
    assert!(lab.env_of("from-env").contains(&format!("TOKEN={v2}")));

    // A changed file: its session alone is replaced.
    lab.set_file_secret(&f2);
    let replace = lab.run(Some(&v2), &["apply", "--yes"]);
    assert_code(&replace, 0);
    let plan = stdout_of(&replace);
    assert!(plan.contains("-/+ session:from-file") && !plan.contains("session:from-env"), "{plan}");
    assert!(lab.env_of("from-file").contains(&format!("FILE_TOKEN={f2}")));
    assert_code(&lab.run(Some(&v2), &["watch", "--once"]), 0);

    // The watcher heals a changed value as apply does, and then sees nothing amiss.
    let v4 = planted("env-four");
    let healed = lab.run(Some(&v4), &["watch", "--once", "--heal"]);
    assert!(stdout_of(&healed).contains("from-env"), "{}\n{}", stdout_of(&healed), stderr_of(&healed));
    assert!(lab.env_of("from-env").contains(&format!("TOKEN={v4}")), "healed with the new value");
    assert_code(&lab.run(Some(&v4), &["watch", "--once"]), 0);

    // A rollback reads the values again: with them unchanged since, it replaces nothing.
    let ids = (lab.inspect("from-env")["Id"].clone(), lab.inspect("from-file")["Id"].clone());
    let back = lab.run(Some(&v4), &["rollback", "--yes"]);
    assert_code(&back, 0);
    assert!(!stdout_of(&back).contains("session:"), "{}", stdout_of(&back));
    assert_eq!((lab.inspect("from-env")["Id"].clone(), lab.inspect("from-file")["Id"].clone()), ids);

    lab.assert_nowhere(&[&v1, &v2, &v3, &v4, &f1, &f2]);
    assert_code(&lab.run(Some(&v4), &["destroy", "--yes"]), 0);
}

/// A secret value with a NUL cannot be an environment value: runc refuses it and echoes the whole
/// variable in Go's quoted form (`"FILE_TOKEN=…\"…\\…\n…\x00"`), which no redaction of the raw value
/// recognises. bai refuses such a value when it reads it, before anything changes, naming the variable
/// and the file, never the value; quotes, backslashes and newlines are fine.
#[test]
fn a_secret_holding_a_nul_is_refused_before_anything_changes_and_never_shown() {
    let mut lab = SecretLab::new();
    let v = planted("env-quoted");
    let f = planted("file-nul");
    std::fs::write(lab.dir.path().join("token.txt"), format!("{f}\"q'\\b\nline\0tail")).expect("write token");

    let refused = lab.run(Some(&format!("{v}\"q\\b\nx")), &["apply", "--yes"]);
    assert_code(&refused, 1);
    let why = stderr_of(&refused);
    assert!(why.contains("session `from-file`: env `FILE_TOKEN` reads file"), "{why}");
    assert!(why.contains("NUL"), "{why}");
    assert!(why.contains("nothing was changed"), "{why}");
    let filter = format!("label=ai.bai.cluster={}", lab.cluster);
    let listed = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output().expect("docker runs");
    assert!(stdout_of(&listed).trim().is_empty(), "no container was made: {}", stdout_of(&listed));

    // Without the NUL, quotes, backslashes and newlines reach the container as written.
    let value = format!("{f}\"q'\\b\nline");
    std::fs::write(lab.dir.path().join("token.txt"), &value).expect("write token");
    let env_value = format!("{v}\"q\\b\nx");
    assert_code(&lab.run(Some(&env_value), &["apply", "--yes"]), 0);
    assert!(lab.env_of("from-file").contains(&format!("FILE_TOKEN={value}")), "{:?}", lab.env_of("from-file"));
    assert!(lab.env_of("from-env").contains(&format!("TOKEN={env_value}")), "{:?}", lab.env_of("from-env"));
    lab.assert_nowhere(&[&v, &f]);
    assert_code(&lab.run(Some(&env_value), &["destroy", "--yes"]), 0);
}

/// Where bai runs does not change a session: applied from the lab's directory (`bai apply lab.kdl`),
/// planned from elsewhere with the lab's absolute path, a `from-file` secret's session is no change.
#[test]
fn a_from_file_session_is_the_same_wherever_bai_runs() {
    let mut lab = SecretLab::new();
    lab.set_file_secret(&planted("file-cwd"));
    let token = planted("env-cwd");
    let applied = bai()
        .current_dir(lab.dir.path())
        .env("BAI_HOME", lab.home())
        .env(VAR, &token)
        .args(["apply", "--yes", "lab.kdl"])
        .output()
        .expect("bai runs");
    assert_code(&applied, 0);
    // From the repository root, with the absolute path: nothing to do.
    let planned = lab.run(Some(&token), &["plan", "--detailed-exitcode"]);
    assert_code(&planned, 0);
    assert!(stdout_of(&planned).contains("No changes."), "{}", stdout_of(&planned));
    assert_code(&lab.run(Some(&token), &["destroy", "--yes"]), 0);
}
