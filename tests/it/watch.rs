//! `bai watch` against real OpenSSH servers on 127.0.0.1 and the real Docker engine: nodes going down
//! and coming back, a killed session reported and healed, an HTTP health check turning unhealthy, the
//! `--listen` endpoint over real HTTP (its metrics through Prometheus's own parser), a node that
//! accepts TCP but never speaks SSH, `--once`, reloads and a clean stop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::images::docker;
use crate::support::{bai, json, stderr_of, stdout_of};

/// A lab of real sshd nodes, written to a file the test can rewrite: the shared
/// [`crate::support::lab::SshLab`] (servers, directory, cluster name, clean-up) with its own text.
struct Lab(crate::support::lab::SshLab);

impl std::ops::Deref for Lab {
    type Target = crate::support::lab::SshLab;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Lab {
    fn new(nodes: usize) -> Lab {
        Lab(crate::support::lab::SshLab::new("watch", nodes))
    }

    /// Writes the lab: the nodes `0..nodes` (plus `extra` KDL inside the cluster).
    fn write(&self, nodes: usize, extra: &str) {
        let image = if extra.contains("image=\"box\"") {
            "    image \"box\" ref=\"bai-it/watch-box:1\" {\n        build context=\"./img\"\n    }\n"
        } else {
            ""
        };
        let mut text = format!(
            "cluster \"{}\" {{\n    ssh user=\"bai-test\" identity=\"{}\" known-hosts=\"{}\" connect-timeout=\"3s\"\n{image}",
            self.cluster,
            self.sshd.client_key_path().display(),
            self.sshd.known_hosts_path().display()
        );
        for i in 0..nodes {
            text.push_str(&format!(
                "    node \"node{i}\" address=\"127.0.0.1\" {{\n        ssh port={}\n    }}\n",
                self.sshd.port(i)
            ));
        }
        text.push_str(extra);
        text.push_str("}\n");
        std::fs::write(self.path(), text).expect("write lab");
    }

    fn apply(&self) {
        let out = bai().args(["apply", "--yes"]).arg(self.path()).output().expect("bai runs");
        assert_eq!(out.status.code(), Some(0), "apply failed:\n{}\n{}", stdout_of(&out), stderr_of(&out));
    }

    fn container(&self, session: &str) -> String {
        format!("bai.{}.{session}", self.cluster)
    }

    fn watch(&self, args: &[&str]) -> Watcher {
        Watcher::start(&self.path(), args)
    }
}

/// A running `bai watch --format json`: its events, parsed, arrive on a channel.
struct Watcher {
    child: Child,
    events: mpsc::Receiver<Value>,
    /// Every event so far, and those no `wait_for` has taken yet.
    seen: Vec<Value>,
    pending: std::collections::VecDeque<Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Watcher {
    fn start(path: &std::path::Path, args: &[&str]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bai"))
            .arg("watch")
            .arg(path)
            .args(["--format", "json"])
            .args(args)
            .current_dir(crate::support::root())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bai watch starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(json(&line)).is_err() {
                    return;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    return;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Watcher { child, events: rx, seen: Vec::new(), pending: Default::default(), stderr }
    }

    /// Takes the first event not taken before that `want` accepts, waiting for it at most `limit`.
    fn wait_for(&mut self, what: &str, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(at) = self.pending.iter().position(&want) {
            return self.pending.remove(at).unwrap_or_default();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if want(&event) {
                        return event;
                    }
                    self.pending.push_back(event);
                }
                Err(_) => panic!(
                    "no {what} within {limit:?}; events:\n{}\nstderr:\n{}",
                    self.seen.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"),
                    self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
                ),
            }
        }
    }

    /// SIGTERM, then the exit status and stderr; every event seen must have matched its schema.
    fn stop(mut self) -> (Option<i32>, String) {
        let validator = crate::schemas::schema("watch-event.schema.json");
        for event in &self.seen {
            crate::schemas::assert_valid(&validator, event, "a watch event");
        }
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) of our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            assert!(Instant::now() < deadline, "bai watch did not stop within 20s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        let err = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        (status.code(), err)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(event: &Value, kind: &str, node: &str) -> bool {
    event["event"] == kind && event["node"] == node
}

/// A plain HTTP/1.1 GET: the status code, the headers and the body.
fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

#[test]
fn a_stopped_node_goes_down_within_the_thresholds_and_comes_back_up() {
    let mut lab = Lab::new(2);
    lab.write(2, "");
    let (interval, timeout, failures) = (0.5, 0.5, 3u32);
    let mut w = lab.watch(&["--interval", "500ms", "--timeout", "500ms", "--failure-threshold", "3"]);
    for node in ["node0", "node1"] {
        let up = w.wait_for(&format!("{node} up"), Duration::from_secs(30), |e| is(e, "node_up", node));
        assert!(up["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0 && ms < 1000.0), "{up}");
    }
    // Every core busy with something else, as on a loaded CI machine: the node still goes down in time.
    let load = crate::support::load::Burners::saturate();
    lab.sshd.kill(1);
    let killed = Instant::now();
    let down = w.wait_for("node1 down", Duration::from_secs(30), |e| is(e, "node_down", "node1"));
    let took = killed.elapsed().as_secs_f64();
    drop(load);
    let bound = f64::from(failures) * interval + timeout;
    // Scheduling on a saturated 2-core machine gets a little grace; the model itself is what is checked.
    assert!(took <= bound + 1.0, "down after {took:.2}s, bound {bound}s: {down}");
    assert_eq!(down["misses"], failures, "{down}");
    assert!(down["last"].as_str().is_some_and(|l| !l.is_empty()), "{down}");
    lab.sshd.restart(1);
    w.wait_for("node1 up again", Duration::from_secs(30), |e| is(e, "node_up", "node1"));
    assert!(!w.seen.iter().any(|e| is(e, "node_down", "node0")), "the healthy node never went down: {:?}", w.seen);
    let (code, stderr) = w.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("every connection closed"), "{stderr}");
}

#[test]
fn a_reconnect_that_hangs_still_counts_misses_under_load() {
    let mut lab = Lab::new(1);
    lab.write(1, "");
    let (interval, timeout, failures) = (0.5, 0.5, 3u32);
    let mut w = lab.watch(&["--interval", "500ms", "--timeout", "500ms", "--failure-threshold", "3"]);
    w.wait_for("node0 up", Duration::from_secs(30), |e| is(e, "node_up", "node0"));
    let load = crate::support::load::Burners::saturate();
    // The node dies and its port is taken by something that accepts TCP and never speaks: every
    // reconnect now hangs in the SSH handshake until the connect timeout (3s).
    let port = lab.sshd.port(0);
    lab.sshd.kill(0);
    let killed = Instant::now();
    let mute = TcpListener::bind(("127.0.0.1", port)).expect("the dead node's port is free");
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in mute.incoming().map_while(Result::ok) {
            if let Ok(mut v) = keep.lock() {
                v.push(stream);
            }
        }
    });
    let down = w.wait_for("node0 down", Duration::from_secs(30), |e| is(e, "node_down", "node0"));
    let took = killed.elapsed().as_secs_f64();
    drop(load);
    let bound = f64::from(failures) * interval + timeout;
    assert!(took <= bound + 1.0, "down after {took:.2}s (bound {bound}s) while reconnecting: {down}");
    assert_eq!(down["misses"], failures, "{down}");
    let (code, stderr) = w.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_killed_session_is_reported_and_healed() {
    let lab = Lab::new(1);
    lab.write(
        1,
        "    session \"job-a\" image=\"box\" node=\"node0\" {\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }\n",
    );
    lab.apply();
    let container = lab.container("job-a");
    let id_before = crate::support::images::docker_ok(&["inspect", "-f", "{{.Id}}", &container]);
    let mut w = lab.watch(&["--interval", "300ms", "--heal"]);
    w.wait_for("node up", Duration::from_secs(30), |e| is(e, "node_up", "node0"));
    crate::support::images::docker_ok(&["kill", &container]);
    let state = w.wait_for("container exited", Duration::from_secs(15), |e| e["event"] == "container");
    assert_eq!((state["session"].as_str(), state["state"].as_str()), (Some("job-a"), Some("exited")), "{state}");
    let drift = w.wait_for("drift", Duration::from_secs(15), |e| e["event"] == "drift");
    assert_eq!(drift["kind"], "stopped", "{drift}");
    let heal = w.wait_for("heal", Duration::from_secs(60), |e| e["event"] == "heal");
    assert_eq!(heal["outcome"], "healed", "{heal}");
    w.wait_for("drift resolved", Duration::from_secs(15), |e| e["event"] == "drift_resolved");
    let running = crate::support::images::docker_ok(&["inspect", "-f", "{{.State.Running}} {{.Id}}", &container]);
    assert!(running.starts_with("true "), "{running}");
    assert!(!running.ends_with(&id_before), "a new container replaced the killed one");
    w.stop();
}

#[test]
fn heals_are_limited_per_minute() {
    let lab = Lab::new(1);
    // Exits at once, every time: healing it can never stick.
    lab.write(
        1,
        "    session \"crash\" image=\"box\" node=\"node0\" {\n        command \"/bin/busybox\" \"false\"\n    }\n",
    );
    lab.apply();
    let mut w = lab.watch(&["--interval", "300ms", "--heal", "--heal-limit", "2"]);
    let mut healed = 0;
    let held =
        w.wait_for("heal held back", Duration::from_secs(60), |e| e["event"] == "heal" && e["outcome"] == "held_back");
    healed += w.seen.iter().filter(|e| e["event"] == "heal" && e["outcome"] == "healed").count();
    assert_eq!(healed, 2, "two heals, then the limit: {:?}", w.seen);
    assert!(held["detail"].as_str().is_some_and(|d| d.contains("2 heals in the last minute")), "{held}");
    // Held back means held back: no third heal in the next seconds.
    std::thread::sleep(Duration::from_secs(2));
    while let Ok(e) = w.events.try_recv() {
        assert!(!(e["event"] == "heal" && e["outcome"] == "healed"), "healed past the limit: {e}");
    }
    w.stop();
}

#[test]
fn an_http_health_check_turns_unhealthy_when_its_file_is_removed() {
    let lab = Lab::new(1);
    lab.write(
        1,
        "    session \"web-a\" image=\"box\" node=\"node0\" {\n        command \"/bin/busybox\" \"sh\" \"-c\" \"mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/www\"\n        port http=8080\n        health http=8080 path=\"/index.html\" interval=\"300ms\" timeout=\"1s\" failure-threshold=2\n    }\n",
    );
    lab.apply();
    let mut w = lab.watch(&["--interval", "300ms"]);
    let healthy = w.wait_for("healthy", Duration::from_secs(30), |e| e["event"] == "healthy");
    assert_eq!(healthy["detail"], "HTTP 200", "{healthy}");
    crate::support::images::docker_ok(&["exec", &lab.container("web-a"), "/bin/busybox", "rm", "/tmp/www/index.html"]);
    let sick = w.wait_for("unhealthy", Duration::from_secs(15), |e| e["event"] == "unhealthy");
    assert_eq!((sick["session"].as_str(), sick["last"].as_str()), (Some("web-a"), Some("HTTP 404")), "{sick}");
    assert_eq!(sick["failures"], 2, "{sick}");
    w.stop();
}

#[test]
fn ping_status_and_metrics_answer_over_http() {
    let lab = Lab::new(1);
    lab.write(
        1,
        "    session \"job-a\" image=\"box\" node=\"node0\" {\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n        health \"/bin/busybox\" \"true\"\n    }\n",
    );
    lab.apply();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut w = lab.watch(&["--interval", "300ms", "--listen", &addr]);
    w.wait_for("healthy", Duration::from_secs(30), |e| e["event"] == "healthy");
    let (code, head, body) = http_get(&addr, "/ping");
    assert_eq!(code, 200, "{head}");
    let ping = json(&body);
    assert_eq!(ping["details"], "Success");
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));
    let (code, _, body) = http_get(&addr, "/status");
    assert_eq!(code, 200);
    let status = json(&body);
    crate::schemas::assert_valid(&crate::schemas::schema("watch-status.schema.json"), &status, "GET /status");
    let node = &status["clusters"][&lab.cluster]["nodes"]["node0"];
    assert_eq!(node["state"], "up", "{status}");
    assert_eq!(node["sessions"]["job-a"]["container"], "running", "{status}");
    assert_eq!(node["sessions"]["job-a"]["health"]["verdict"], "healthy", "{status}");
    let (code, head, metrics) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let node_up = format!("bai_node_up{{cluster=\"{}\",node=\"node0\"}} 1", lab.cluster);
    assert!(metrics.lines().any(|l| l == node_up), "{metrics}");
    assert!(metrics.contains("bai_ping_rtt_seconds_bucket{"), "{metrics}");
    crate::metrics::promtool_check(&metrics);
    let (code, _, _) = http_get(&addr, "/nope");
    assert_eq!(code, 404);
    w.stop();
}

#[test]
fn a_node_that_never_speaks_ssh_is_timed_out_and_the_others_go_on() {
    let lab = Lab::new(1);
    // Accepts TCP and then says nothing, forever.
    let mute = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mute_port = mute.local_addr().expect("addr").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in mute.incoming().map_while(Result::ok) {
            if let Ok(mut v) = keep.lock() {
                v.push(stream);
            }
        }
    });
    lab.write(
        1,
        &format!(
            "    node \"mute\" address=\"127.0.0.1\" {{\n        ssh port={mute_port} connect-timeout=\"1s\"\n    }}\n"
        ),
    );
    let mut w = lab.watch(&["--interval", "300ms", "--failure-threshold", "2"]);
    w.wait_for("node0 up", Duration::from_secs(30), |e| is(e, "node_up", "node0"));
    let lost = w.wait_for("mute connection lost", Duration::from_secs(15), |e| is(e, "connection_lost", "mute"));
    assert!(lost["error"].as_str().is_some_and(|m| m.contains("mute")), "{lost}");
    w.wait_for("mute down", Duration::from_secs(15), |e| is(e, "node_down", "mute"));
    assert!(held.lock().map(|v| !v.is_empty()).unwrap_or(false), "the watcher did connect to the mute port");
    let (code, stderr) = w.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn once_exits_zero_when_all_is_well_and_one_otherwise() {
    let mut lab = Lab::new(2);
    lab.write(
        2,
        "    session \"job-a\" image=\"box\" node=\"node0\" {\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }\n",
    );
    lab.apply();
    let out = bai().args(["watch", "--once"]).arg(lab.path()).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    let table = stdout_of(&out);
    assert!(
        table.starts_with("NODE") && table.contains("node0") && table.contains("session job-a: running"),
        "{table}"
    );

    let out = bai().args(["watch", "--once", "--format", "json"]).arg(lab.path()).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    let status = json(&text[text.find("{\n").unwrap_or(0)..]);
    crate::schemas::assert_valid(&crate::schemas::schema("watch-status.schema.json"), &status, "--once --format json");
    assert_eq!(status["clusters"][&lab.cluster]["nodes"]["node1"]["state"], "up", "{status}");

    crate::support::images::docker_ok(&["kill", &lab.container("job-a")]);
    let out = bai().args(["watch", "--once"]).arg(lab.path()).output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    assert!(stdout_of(&out).contains("drift: session job-a on node0: container exited"), "{}", stdout_of(&out));

    lab.sshd.stop(1);
    let out = bai().args(["watch", "--once", "--timeout", "1s"]).arg(lab.path()).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout_of(&out).contains("node node1 down after 1 missed ping"), "{}", stdout_of(&out));
}

#[test]
fn the_lab_is_reloaded_on_change_and_on_sighup_and_a_broken_file_keeps_the_old_one() {
    let lab = Lab::new(2);
    lab.write(1, "");
    let mut w = lab.watch(&["--interval", "300ms"]);
    w.wait_for("node0 up", Duration::from_secs(30), |e| is(e, "node_up", "node0"));
    lab.write(2, "");
    let reloaded = w.wait_for("reload", Duration::from_secs(10), |e| e["event"] == "reloaded");
    assert_eq!(reloaded["added"], serde_json::json!([format!("{}/node1", lab.cluster)]), "{reloaded}");
    w.wait_for("node1 up", Duration::from_secs(30), |e| is(e, "node_up", "node1"));

    std::fs::write(lab.path(), "cluster \"broken\" {\n    node \"x\" adress=\"1.2.3.4\"\n}\n").expect("write");
    let rejected = w.wait_for("rejection", Duration::from_secs(10), |e| e["event"] == "config_rejected");
    assert!(rejected["diagnostics"].as_str().is_some_and(|d| d.contains("adress")), "{rejected}");

    // The old lab kept running meanwhile; fixing the file reloads it, and so does a SIGHUP.
    lab.write(1, "");
    let reloaded = w.wait_for("reload", Duration::from_secs(10), |e| e["event"] == "reloaded");
    assert_eq!(reloaded["removed"], serde_json::json!([format!("{}/node1", lab.cluster)]), "{reloaded}");
    // SAFETY: kill(2) of our own child process.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
    let again = w.wait_for("reload on SIGHUP", Duration::from_secs(10), |e| e["event"] == "reloaded");
    assert_eq!(again["added"], serde_json::json!([]), "{again}");
    let (code, stderr) = w.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn on_a_terminal_the_table_is_redrawn_in_place_and_sigint_stops_it() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lab.kdl");
    let cluster = format!("watch-tty-{}", std::process::id());
    std::fs::write(&path, format!("cluster \"{cluster}\" {{\n    node \"here\" local=#true\n}}\n")).expect("write");
    let command = format!("exec {} watch {} --interval 200ms", env!("CARGO_BIN_EXE_bai"), path.display());
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("script(1) from util-linux runs");
    let mut out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                return;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Two frames at least, the second drawn over the first, and the node up in the table.
    while !(seen.contains("\x1b[") && seen.matches("NODE").count() >= 2 && seen.contains("node here up")) {
        assert!(Instant::now() < deadline, "no live table within 30s:\n{seen}");
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&chunk);
        }
    }
    let last = seen.rsplit("NODE").next().unwrap_or_default();
    assert!(last.lines().nth(1).is_some_and(|l| l.starts_with("here") && l.contains(" up ")), "{last}");
    // SAFETY: kill(2) of the process group we created for this child.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "bai watch did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{seen}");
}

#[test]
fn a_container_squatting_a_managed_name_is_reported_and_never_touched() {
    let lab = Lab::new(1);
    lab.write(
        1,
        "    session \"squat\" image=\"box\" node=\"node0\" {\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }\n",
    );
    let name = lab.container("squat");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = docker(&["rm", "-f", &self.0]);
        }
    }
    let _guard = Remove(name.clone());
    let image = crate::support::images::test_image();
    let id = crate::support::images::docker_ok(&["run", "-d", "--name", &name, image]);
    let mut w = lab.watch(&["--interval", "300ms", "--heal"]);
    let drift = w.wait_for("drift", Duration::from_secs(30), |e| e["event"] == "drift");
    assert_eq!(drift["kind"], "name_taken", "{drift}");
    let refused = w.wait_for("refusal", Duration::from_secs(5), |e| e["event"] == "heal");
    assert_eq!(refused["outcome"], "refused", "{refused}");
    std::thread::sleep(Duration::from_secs(1));
    let after = crate::support::images::docker_ok(&["inspect", "-f", "{{.State.Running}} {{.Id}}", &name]);
    assert_eq!(after, format!("true {id}"), "the foreign container is left alone");
    assert!(!w.seen.iter().any(|e| e["event"] == "heal" && e["outcome"] == "healed"), "{:?}", w.seen);
    w.stop();
}

#[test]
fn an_edited_file_is_drift_and_heal_rolls_the_session_forward() {
    let lab = Lab::new(1);
    let session = |version: &str| {
        format!(
            "    session \"job-b\" image=\"box\" node=\"node0\" {{\n        env VERSION=\"{version}\"\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }}\n"
        )
    };
    lab.write(1, &session("1"));
    lab.apply();
    let mut w = lab.watch(&["--interval", "300ms", "--heal"]);
    w.wait_for("node up", Duration::from_secs(30), |e| is(e, "node_up", "node0"));
    lab.write(1, &session("2"));
    w.wait_for("reload", Duration::from_secs(10), |e| e["event"] == "reloaded");
    let drift = w.wait_for("drift", Duration::from_secs(10), |e| e["event"] == "drift");
    assert_eq!(drift["kind"], "changed", "{drift}");
    let heal = w.wait_for("heal", Duration::from_secs(60), |e| e["event"] == "heal");
    assert_eq!(heal["outcome"], "healed", "{heal}");
    w.wait_for("drift resolved", Duration::from_secs(15), |e| e["event"] == "drift_resolved");
    let env = crate::support::images::docker_ok(&["inspect", "-f", "{{json .Config.Env}}", &lab.container("job-b")]);
    assert!(env.contains("VERSION=2"), "{env}");
    w.stop();
}

/// The watched session `job-b` on `box`, with its own vfolder, at `version`.
fn session_with_data(version: &str) -> String {
    format!(
        "    vfolder \"data-b\" node=\"node0\"\n    session \"job-b\" image=\"box\" node=\"node0\" {{\n        env VERSION=\"{version}\"\n        mount \"data-b\"\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }}\n"
    )
}

#[test]
fn a_destroy_is_the_nodes_new_truth_and_heal_never_undoes_it() {
    let lab = Lab::new(1);
    lab.write(1, &session_with_data("1"));
    lab.apply();
    let mut w = lab.watch(&["--interval", "300ms", "--heal"]);
    w.wait_for("node up", Duration::from_secs(30), |e| is(e, "node_up", "node0"));
    let out = bai().args(["destroy", "--yes"]).arg(lab.path()).output().expect("bai runs");
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout_of(&out), stderr_of(&out));
    let followed = w.wait_for("superseded", Duration::from_secs(15), |e| e["event"] == "superseded");
    assert_eq!(followed["destroyed"], true, "{followed}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(!w.seen.iter().any(|e| e["event"] == "heal" && e["outcome"] == "healed"), "{:?}", w.seen);
    let gone = docker(&["inspect", &lab.container("job-b")]);
    assert!(!gone.status.success(), "the destroyed session was not recreated: {:?}", w.seen);
    let vfolder = lab.sshd.home(0).join(".local/share/bai/vfolders/data-b");
    assert!(!vfolder.exists(), "the destroyed vfolder was not recreated: {:?}", w.seen);
    let (code, stderr) = w.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn another_controllers_apply_is_followed_not_healed_back_until_the_file_changes() {
    let lab = Lab::new(1);
    lab.write(1, &session_with_data("1"));
    lab.apply();
    let mut w = lab.watch(&["--interval", "300ms", "--heal"]);
    w.wait_for("node up", Duration::from_secs(30), |e| is(e, "node_up", "node0"));
    // Another checkout of the lab, one version ahead, applied by another controller.
    let watched_text = std::fs::read_to_string(lab.path()).expect("read lab");
    let other = lab.file("other.kdl");
    std::fs::write(&other, watched_text.replace("VERSION=\"1\"", "VERSION=\"2\"")).expect("write other lab");
    let out = bai().args(["apply", "--yes"]).arg(&other).output().expect("bai runs");
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout_of(&out), stderr_of(&out));
    let followed = w.wait_for("superseded", Duration::from_secs(15), |e| e["event"] == "superseded");
    assert_eq!(followed["destroyed"], false, "{followed}");
    let env = || crate::support::images::docker_ok(&["inspect", "-f", "{{json .Config.Env}}", &lab.container("job-b")]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(env().contains("VERSION=2"), "not healed back to the watched file: {:?}", w.seen);
    // Drift against that generation is reported, and heal says why it does not act.
    crate::support::images::docker_ok(&["kill", &lab.container("job-b")]);
    // (A heal tried while the other apply held the lease failed saying so; that is not this.)
    let refused = w.wait_for("heal refused", Duration::from_secs(15), |e| {
        e["event"] == "heal" && e["outcome"] == "refused" && e["session"] == "job-b"
    });
    assert!(refused["detail"].as_str().is_some_and(|d| d.contains("follows generation")), "{refused}");
    // The watched file changes: it is the truth again, and heal rolls the node forward to it.
    lab.write(1, &session_with_data("3"));
    let heal = w.wait_for("heal", Duration::from_secs(60), |e| e["event"] == "heal" && e["outcome"] == "healed");
    assert_eq!(heal["session"], "job-b", "{heal}");
    assert!(env().contains("VERSION=3"), "{}", env());
    w.stop();
}

#[test]
fn a_heal_that_hangs_times_out_says_so_and_the_next_one_runs() {
    let lab = Lab::new(1);
    let image = format!("bai-it/slow-heal-{}:1", lab.cluster);
    let context = lab.file("slow");
    let fast = "FROM scratch\nCOPY busybox /bin/busybox\n";
    crate::support::images::write_context(&context, fast);
    let extra = format!(
        "    timeouts image=\"8s\"\n    image \"slow\" ref=\"{image}\" {{\n        build context=\"./slow\"\n    }}\n    session \"job-s\" image=\"slow\" node=\"node0\" {{\n        command \"/bin/busybox\" \"sleep\" \"3600\"\n    }}\n"
    );
    lab.write(1, &extra);
    lab.apply();
    struct RemoveImage(String);
    impl Drop for RemoveImage {
        fn drop(&mut self) {
            let _ = docker(&["rmi", "-f", &self.0]);
        }
    }
    let _image = RemoveImage(image.clone());
    let mut w = lab.watch(&["--interval", "300ms", "--heal", "--heal-limit", "10"]);
    w.wait_for("node up", Duration::from_secs(30), |e| is(e, "node_up", "node0"));
    // The session and its image go; rebuilding the image now takes an hour.
    std::fs::write(context.join("Dockerfile"), format!("{fast}RUN [\"/bin/busybox\", \"sleep\", \"3600\"]\n"))
        .expect("write Dockerfile");
    crate::support::images::docker_ok(&["rm", "-f", &lab.container("job-s")]);
    crate::support::images::docker_ok(&["rmi", "-f", &image]);
    let busy = w.wait_for("a heal still running", Duration::from_secs(30), |e| e["event"] == "heal_running");
    assert_eq!(busy["waiting"], serde_json::json!(["job-s"]), "{busy}");
    let failed =
        w.wait_for("heal failed", Duration::from_secs(30), |e| e["event"] == "heal" && e["outcome"] == "failed");
    assert!(failed["detail"].as_str().is_some_and(|d| d.contains("no answer to `ensure_image` within 8s")), "{failed}");
    // The hung heal let its lease go: once the image builds quickly again, a later heal succeeds.
    std::fs::write(context.join("Dockerfile"), fast).expect("write Dockerfile");
    let healed = w.wait_for("healed", Duration::from_secs(60), |e| e["event"] == "heal" && e["outcome"] == "healed");
    assert_eq!(healed["session"], "job-s", "{healed}");
    w.stop();
}

/// Item 13 of the hardening issue: a lab edited into thousands of nested blocks once overflowed the
/// stack of a running watcher. It is now a rejected change like any broken file: the watcher says so,
/// keeps watching the previous lab, and takes the next good version.
#[test]
fn a_lab_edited_into_thousands_of_nested_blocks_is_rejected_and_the_watch_goes_on() {
    let lab = Lab::new(1);
    lab.write(1, "");
    let good = std::fs::read_to_string(lab.path()).expect("read lab");
    let mut w = lab.watch(&["--interval", "300ms"]);
    w.wait_for("node up", Duration::from_secs(30), |e| is(e, "node_up", "node0"));
    let deep = format!("cluster \"deep\" {{\n{}{}}}\n", "node \"n\" {\n".repeat(5000), "}\n".repeat(5000));
    std::fs::write(lab.path(), deep).expect("write the deep lab");
    let rejected = w.wait_for("rejected", Duration::from_secs(15), |e| e["event"] == "config_rejected");
    assert!(rejected["diagnostics"].as_str().is_some_and(|d| d.contains("bai::kdl::too_deep")), "{rejected}");
    std::fs::write(lab.path(), good.replace("connect-timeout=\"3s\"", "connect-timeout=\"4s\"")).expect("write");
    w.wait_for("reloaded", Duration::from_secs(15), |e| e["event"] == "reloaded");
    let (code, stderr) = w.stop();
    assert_eq!(code, Some(0), "the watcher lived on: {stderr}");
}
