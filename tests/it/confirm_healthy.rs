//! `bai apply --confirm-healthy`: the sessions an apply changed are watched; a session that is not
//! healthy within the window has its node rolled back to the previous generation, and the run fails
//! saying both. A real OpenSSH node, a busybox httpd session with an HTTP health check, the real Docker.

use crate::support::lab::{SshLab, assert_code};
use crate::support::{json, stderr_of, stdout_of};

/// The web session at `version`: it serves `page` and its health check asks for `/index.html`.
fn write(lab: &SshLab, version: &str, page: &str) {
    let mut text = lab.header();
    text.push_str(&lab.node(0));
    text.push_str(&format!(
        "    session \"web-a\" image=\"box\" node=\"node0\" {{\n        env VERSION=\"{version}\"\n        command \"/bin/busybox\" \"sh\" \"-c\" \"mkdir -p /tmp/www && echo ok > /tmp/www/{page} && exec /bin/busybox httpd -f -p 8080 -h /tmp/www\"\n        port http=8080\n        health http=8080 path=\"/index.html\" interval=\"300ms\" timeout=\"1s\" failure-threshold=2\n    }}\n}}\n"
    ));
    lab.write_text(&text);
}

fn version(lab: &SshLab) -> Option<String> {
    let out = crate::support::images::docker(&["inspect", &format!("bai.{}.web-a", lab.cluster)]);
    out.status.success().then(|| {
        let c = json(&String::from_utf8_lossy(&out.stdout))[0].clone();
        let env = c["Config"]["Env"].as_array().cloned().unwrap_or_default();
        env.iter().filter_map(|e| e.as_str()?.strip_prefix("VERSION=")).next().unwrap_or("").to_string()
    })
}

#[test]
fn an_unhealthy_session_rolls_its_node_back_to_the_previous_generation() {
    let lab = SshLab::new("confirm", 1);
    write(&lab, "1", "index.html");
    let out = lab.run(&["apply", "--yes", "--confirm-healthy", "20s"]);
    assert_code(&out, 0, "a healthy apply is confirmed");
    let err = stderr_of(&out);
    assert!(err.contains("healthy: session `web-a` on `node0` (HTTP 200)"), "{err}");
    assert!(err.contains("generation 1 stands"), "{err}");

    // Version 2 serves another page: its health check gets 404 for as long as the window lasts.
    write(&lab, "2", "other.html");
    let out = lab.run(&["apply", "--yes", "--confirm-healthy", "3s"]);
    assert_code(&out, 1, "an unhealthy apply fails");
    let err = stderr_of(&out);
    assert!(err.contains("session `web-a` on `node0` is not healthy after 3s: HTTP 404"), "{err}");
    assert!(err.contains("bai::confirm::unhealthy"), "printed with its code: {err}");
    assert!(err.contains("Rolling node node0 of cluster") && err.contains("back to generation 1"), "{err}");
    assert!(err.contains("Rolled back: node node0"), "{err}");
    assert!(stdout_of(&out).contains("-/+ session:web-a"), "the rollback's plan is shown: {}", stdout_of(&out));
    assert_eq!(version(&lab).as_deref(), Some("1"), "version 1 runs again");

    // The history says what happened: 2 was applied, 3 rolled back to 1.
    let out = lab.run(&["generations", "--format", "json"]);
    assert_code(&out, 0, "generations");
    let text = stdout_of(&out);
    let doc = json(&text);
    let numbers: Vec<u64> = doc["clusters"][0]["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .filter_map(|g| g["number"].as_u64())
        .collect();
    assert_eq!(numbers, vec![3, 2, 1], "{text}");
    assert_eq!(doc["clusters"][0]["generations"][0]["rollback_of"], 1, "{text}");

    // And the file as it stands is still version 2: a plain apply would try it again.
    let out = lab.run(&["plan"]);
    assert!(stdout_of(&out).contains("-/+ session:web-a"), "{}", stdout_of(&out));

    // A first apply that fails its window goes back to nothing.
    assert_code(&lab.run(&["destroy", "--yes"]), 0, "destroy");
    let out = lab.run(&["apply", "--yes", "--confirm-healthy", "2s"]);
    assert_code(&out, 1, "a first unhealthy apply");
    assert!(stderr_of(&out).contains("back to generation"), "{}", stderr_of(&out));
    assert_eq!(version(&lab), None, "the session was removed again");
}

#[test]
fn apply_only_flags_are_refused_by_destroy_and_rollback() {
    // Their `--help` does not offer them, and a command line that gives them is a usage error (clap's
    // exit code 2) before any lab is read.
    for (command, flag) in [
        ("destroy", "--confirm-healthy"),
        ("destroy", "--update-lock"),
        ("rollback", "--confirm-healthy"),
        ("rollback", "--update-lock"),
    ] {
        let value: &[&str] = if flag == "--confirm-healthy" { &[flag, "5s"] } else { &[flag] };
        let out = crate::support::bai().arg(command).args(value).arg("lab.kdl").output().expect("bai runs");
        assert_code(&out, 2, &format!("{command} {flag}"));
        assert!(stderr_of(&out).contains(&format!("unexpected argument '{flag}'")), "{}", stderr_of(&out));
        let help = crate::support::bai().args([command, "--help"]).output().expect("bai runs");
        assert!(!stdout_of(&help).contains(flag), "{command} --help offers {flag}");
    }
}
