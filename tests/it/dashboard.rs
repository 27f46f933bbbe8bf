//! The dashboard `bai watch --listen` serves at `/`, in a real headless Chromium: a lab of two real sshd
//! nodes with sessions on the real Docker engine, followed live by one page instance (no reload) as a node
//! goes down and then as the watcher itself goes away; and, from a crafted status served by the same HTTP
//! code, GPUs with their holders and hostile node text that must show as text. Screenshots are left in
//! the test artifacts (target/test-artifacts, or `$BAI_TEST_ARTIFACTS`) for a person to look at.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bai::watch::status::{FleetStatus, GpuStatus, HealthStatus, Liveness, NodeStatus, SessionStatus, Verdict};

use crate::support::browser::Browser;
use crate::support::lab::SshLab;

const SHOWN: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    crate::support::sshd::free_port().unwrap_or_else(|why| panic!("{why}"))
}

/// What the page shows a person: its whole text, and each table row as its cells' text joined by tabs (a
/// cell of several lines on one, ` · ` between them).
struct Shown {
    text: String,
    rows: Vec<String>,
}

const SHOWN_NOW: &str =
    "({ text: document.body ? document.body.innerText : '', rows: [...document.querySelectorAll('tr')]
    .map(tr => [...tr.cells].map(c => c.innerText.trim().replace(/\\s*\\n\\s*/g, ' · ')).join('\\t')) })";

impl Shown {
    fn from(value: &serde_json::Value) -> Shown {
        let rows = value["rows"].as_array().into_iter().flatten();
        Shown {
            text: value["text"].as_str().unwrap_or_default().to_string(),
            rows: rows.map(|r| r.as_str().unwrap_or_default().to_string()).collect(),
        }
    }

    /// The row whose first cells are `cells`.
    fn row(&self, cells: &[&str]) -> Option<&str> {
        self.rows.iter().map(String::as_str).find(|r| r.split('\t').take(cells.len()).eq(cells.iter().copied()))
    }

    fn has(&self, cells: &[&str]) -> bool {
        self.row(cells).is_some()
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n--- rows:\n{}", self.text, self.rows.join("\n"))
    }
}

/// Polls the page until it shows what `done` accepts.
#[track_caller]
fn wait_shown(browser: &mut Browser, what: &str, done: impl Fn(&Shown) -> bool) -> Shown {
    let deadline = Instant::now() + SHOWN;
    loop {
        let shown = Shown::from(&browser.eval(SHOWN_NOW));
        if done(&shown) {
            return shown;
        }
        assert!(Instant::now() < deadline, "the page did not show {what} within {SHOWN:?}; it shows:\n{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `bai watch --listen`, killed when dropped; its output goes to a file, shown when the test fails.
struct Watcher {
    child: Child,
    log: std::path::PathBuf,
}

impl Watcher {
    fn start(lab: &SshLab, addr: &str) -> Watcher {
        let log = lab.file("watch.log");
        let out = std::fs::File::create(&log).expect("a log file for bai watch");
        let err = out.try_clone().expect("a second handle on the log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bai"));
        cmd.arg("watch")
            .arg(lab.path())
            .args(["--listen", addr, "--interval", "500ms", "--timeout", "500ms", "--failure-threshold", "2"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        crate::support::sshd::die_with_parent(&mut cmd);
        Watcher { child: cmd.spawn().expect("bai watch starts"), log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the watcher must be gone within 20 s.
    fn stop(&mut self) {
        // SAFETY: kill(2) of our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "bai watch did not stop within 20s of SIGTERM:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("bai watch said:\n{}", self.output());
        }
    }
}

#[test]
fn the_dashboard_follows_the_lab_live_without_a_reload() {
    let mut lab = SshLab::new("dash", 2);
    let published = free_port();
    // A third session, with a health check and a published port, beside each node's `job-N`.
    let web = format!(
        r#"    session "web-0" image="box" node="node0" {{
        command "/bin/busybox" "sh" "-c" "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/www"
        port web=8080 publish={published}
        health http=8080 path="/index.html"
    }}
"#
    );
    lab.write_with(&["1", "1"], &web);
    lab.expect(0, &["apply", "--yes"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut watcher = Watcher::start(&lab, &addr);
    let mut browser = Browser::start();
    let started = Instant::now();
    browser.navigate(&format!("http://{addr}/"));

    let shown = wait_shown(&mut browser, "both nodes up and every session running and healthy", |s| {
        s.has(&["node0", "up"])
            && s.has(&["node1", "up"])
            && s.has(&["job-0", "node0", "running"])
            && s.has(&["job-1", "node1", "running"])
            && s.has(&["web-0", "node0", "running", "healthy (HTTP 200)"])
    });
    let web_row = shown.row(&["web-0"]).unwrap_or_default();
    assert!(web_row.contains(&format!("\tweb 8080 → 127.0.0.1:{published} on the node\t")), "{shown}");
    assert!(shown.text.contains("All is well."), "{shown}");
    assert!(shown.row(&["node0", "up"]).is_some_and(|r| r.contains(" ms\t")), "a round trip is shown:\n{shown}");
    // What the page read, with the published port the schema now describes, as a script reads it.
    let status = browser.eval("fetch('/status').then(r => r.json())");
    crate::schemas::assert_valid(&crate::schemas::schema("watch-status.schema.json"), &status, "GET /status");
    let ports = &status["clusters"][&lab.cluster]["nodes"]["node0"]["sessions"]["web-0"]["ports"];
    let want =
        serde_json::json!([{ "name": "web", "port": 8080, "host_address": "127.0.0.1", "host_port": published }]);
    assert_eq!(ports, &want, "{status}");
    // A reload would make a new document, without this.
    browser.eval("window.__samePage = 'yes'");

    lab.sshd.stop(1);
    let shown = wait_shown(&mut browser, "node1 down", |s| s.has(&["node1", "down"]));
    assert_eq!(browser.eval("window.__samePage"), "yes", "the page was reloaded");
    assert!(shown.has(&["node0", "up"]), "{shown}");
    assert!(shown.has(&["job-1", "node1", "unknown"]), "a down node's sessions are unknown:\n{shown}");
    assert!(shown.has(&["job-0", "node0", "running"]), "{shown}");
    assert!(shown.text.contains("Nodes: 1 of 2 up"), "{shown}");
    assert!(!shown.text.contains("All is well."), "{shown}");
    browser.screenshot("dashboard.png");

    // On a phone the page keeps to the screen's width; only the tables scroll sideways, each on its own.
    browser.phone(390, 844);
    let overflow = browser.eval("document.documentElement.scrollWidth - document.documentElement.clientWidth");
    assert_eq!(overflow, 0, "the page is wider than a phone's screen");
    browser.screenshot("dashboard-phone.png");
    browser.desktop();

    watcher.stop();
    let shown = wait_shown(&mut browser, "that the watcher is unreachable", |s| {
        s.text.contains("The watcher is unreachable: no connection")
    });
    assert!(shown.has(&["node1", "down"]) && shown.has(&["node0", "up"]), "the last data is kept:\n{shown}");
    assert!(shown.text.contains("The tables show the last status, from "), "{shown}");
    assert_eq!(browser.eval("document.title"), "bai watch: unreachable");
    browser.screenshot("dashboard-unreachable.png");

    assert_eq!(browser.eval("window.__samePage"), "yes", "the page was reloaded");
    assert_eq!(browser.violations(), Vec::<String>::new(), "the page broke its own Content-Security-Policy");
    assert!(browser.exceptions.is_empty(), "the page threw: {:?}", browser.exceptions);
    eprintln!("the browser part took {:.1}s", started.elapsed().as_secs_f64());
}

/// A status with GPUs, a config error and node text written to be taken for markup.
fn crafted_status() -> FleetStatus {
    const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\">";
    let mut node = NodeStatus {
        state: Liveness::Up,
        address: "10.0.0.11:22".into(),
        last_rtt_ms: Some(0.734),
        load1: Some(1.5),
        gpus: Some(2),
        gpu_utilization: Some(45.0),
        gpu_devices: vec![
            GpuStatus {
                index: 0,
                uuid: "GPU-aaaa".into(),
                name: format!("H100 {HOSTILE}"),
                memory_total: 80 << 30,
                memory_used: Some(12 << 30),
                utilization: Some(90),
                session: Some("train".into()),
            },
            GpuStatus {
                index: 1,
                uuid: "GPU-bbbb".into(),
                name: "H100".into(),
                memory_total: 80 << 30,
                ..GpuStatus::default()
            },
        ],
        ..NodeStatus::default()
    };
    node.sessions.insert(
        "train".into(),
        SessionStatus {
            container: "running".into(),
            health: Some(HealthStatus { verdict: Verdict::Unhealthy, detail: Some(format!("HTTP 500 {HOSTILE}")) }),
            drift: Some("<script>document.title='pwned'</script>".into()),
            devices: vec!["GPU-aaaa".into()],
            ports: vec![bai::watch::status::PublishedPort {
                name: "jupyter".into(),
                port: 8888,
                host_address: "0.0.0.0".into(),
                host_port: 18888,
            }],
            ..SessionStatus::default()
        },
    );
    let mut status = FleetStatus {
        version: "9.9.9".into(),
        started_unix: 1_700_000_000,
        config_error: Some(format!("lab.kdl:3: unknown node {HOSTILE}")),
        ..FleetStatus::default()
    };
    status.clusters.entry("lab".into()).or_default().nodes.insert("gpu-01".into(), node);
    status
}

#[test]
fn gpus_show_their_holders_and_node_text_stays_text() {
    let status = Arc::new(Mutex::new(crafted_status()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("an address");
    listener.set_nonblocking(true).expect("a non-blocking listener");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            bai::watch::http::serve(listener, status, async {
                let _ = stopped.await;
            })
            .await
        })
    });
    let mut browser = Browser::start();
    browser.navigate(&format!("http://{addr}/"));
    let shown = wait_shown(&mut browser, "the GPUs", |s| s.has(&["gpu-01", "gpu 0"]));
    let hostile = "<img src=x onerror=\"document.title='pwned'\">";
    let gpu0 = ["gpu-01", "gpu 0", &format!("H100 {hostile}"), "90%", "12.0 GiB of 80.0 GiB", "train"];
    assert!(shown.has(&gpu0), "{shown}");
    assert!(shown.has(&["gpu-01", "gpu 1", "H100", "-", "80.0 GiB", "free"]), "{shown}");
    let train = [
        "train",
        "gpu-01",
        "running",
        &format!("unhealthy (HTTP 500 {hostile})"),
        "gpu 0",
        "jupyter 8888 → 10.0.0.11:18888",
        "<script>document.title='pwned'</script>",
    ];
    assert!(shown.has(&train), "{shown}");
    assert!(shown.text.contains(&format!("lab.kdl:3: unknown node {hostile}")), "{shown}");
    assert!(shown.has(&["gpu-01", "up", "0.73 ms", "1.50", "2 (45%)", "10.0.0.11:22"]), "{shown}");
    assert_eq!(browser.eval("document.querySelectorAll('main img, main script').length"), 0);
    assert_eq!(browser.eval("document.title"), "bai watch: 1 problem");
    browser.screenshot("dashboard-gpus.png");
    assert_eq!(browser.violations(), Vec::<String>::new(), "the page broke its own Content-Security-Policy");
    assert!(browser.exceptions.is_empty(), "the page threw: {:?}", browser.exceptions);
    let _ = stop.send(());
    let served = server.join().expect("the server thread");
    assert!(served.is_ok(), "{served:?}");
}
