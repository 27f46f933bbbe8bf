//! A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for tests of what a
//! person sees in a browser. One page per browser, reached through a flattened session on the browser's
//! own WebSocket: the test navigates it once and then reads the same page instance as it changes, so a
//! reload would show (its marker would be gone). Without chromium the test fails, never skips.
//!
//! Everything runs under a temporary profile and home, in a process group of its own, killed with its
//! profile removed when the [`Browser`] is dropped, on every exit path of a test.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long chromium may take to start, and one DevTools call to answer.
const START: Duration = Duration::from_secs(30);
const CALL: Duration = Duration::from_secs(30);

/// Installed before any script of every document the page loads: Content-Security-Policy violations would
/// otherwise pass unnoticed (a refused style still leaves the text in place).
const RECORD_VIOLATIONS: &str = "window.__cspViolations = []; document.addEventListener('securitypolicyviolation', \
     e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));";

pub struct Browser {
    child: Child,
    profile: Option<tempfile::TempDir>,
    socket: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    stderr: Arc<Mutex<String>>,
    /// Uncaught exceptions in the page so far.
    pub exceptions: Vec<String>,
}

impl Browser {
    /// Starts chromium with an empty page attached; fails loudly when it is missing or does not start.
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().expect("a temporary chromium profile");
        let tmp = profile.path().join("tmp");
        std::fs::create_dir(&tmp).expect("a temporary directory for chromium");
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--window-size=1280,900",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
        .arg("about:blank")
        // What it would write under $HOME (dconf, caches, its crash handler's database) stays in the
        // profile too.
        .env("HOME", profile.path())
        .env("XDG_CONFIG_HOME", profile.path().join("config"))
        .env("XDG_CACHE_HOME", profile.path().join("cache"))
        // Its singleton lock and socket, which only a clean exit removes.
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Chromium refuses to run as root with its sandbox.
            cmd.arg("--no-sandbox");
        }
        // Its own process group, so that the renderer, GPU and utility processes go with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        crate::support::sshd::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start chromium ({e}): the dashboard test needs Debian's `chromium` package; scripts/test installs it")
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (found, url) = mpsc::channel();
        let pipe = child.stderr.take().expect("chromium's stderr");
        let sink = Arc::clone(&stderr);
        // Read to the end, not only to the line wanted: a full pipe would stall chromium.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(ws.trim().to_string());
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let url = match url.recv_timeout(START) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let said = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                panic!("chromium gave no DevTools address within {START:?}; its stderr:\n{said}");
            }
        };
        let host = url.strip_prefix("ws://").and_then(|rest| rest.split('/').next()).unwrap_or_default();
        let stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect to chromium at {url}: {e}"));
        stream.set_read_timeout(Some(CALL)).expect("a read timeout");
        let (socket, _) =
            tungstenite::client(url.as_str(), stream).unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        let mut browser = Browser {
            child,
            profile: Some(profile),
            socket,
            session: String::new(),
            next_id: 0,
            stderr,
            exceptions: Vec::new(),
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("a target id").to_string();
        let attached = browser.call("Target.attachToTarget", json!({ "targetId": target, "flatten": true }));
        browser.session = attached["sessionId"].as_str().expect("a session id").to_string();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser.call("Page.addScriptToEvaluateOnNewDocument", json!({ "source": RECORD_VIOLATIONS }));
        browser
    }

    /// One DevTools call (on the page once attached); its result. Events read on the way are kept where a
    /// test wants them (exceptions), dropped otherwise.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        if let Err(e) = self.socket.send(Message::text(message.to_string())) {
            panic!("send {method} to chromium: {e}\n{}", self.stderr_text());
        }
        let deadline = Instant::now() + CALL;
        loop {
            assert!(Instant::now() < deadline, "chromium did not answer {method} within {CALL:?}");
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(e) => panic!("read chromium's answer to {method}: {e}\n{}", self.stderr_text()),
            };
            let reply: Value = serde_json::from_str(text.as_str()).expect("chromium sends JSON");
            if reply["method"] == "Runtime.exceptionThrown" {
                self.exceptions.push(reply["params"]["exceptionDetails"].to_string());
            }
            if reply["id"] != id {
                continue;
            }
            if !reply["error"].is_null() {
                panic!("chromium refused {method}: {}", reply["error"]);
            }
            return reply["result"].clone();
        }
    }

    pub fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({ "url": url }));
        assert!(result["errorText"].is_null(), "navigating to {url}: {}", result["errorText"]);
    }

    /// The value of a JavaScript expression in the page (of the promise it makes, if it makes one).
    pub fn eval(&mut self, expression: &str) -> Value {
        let params = json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let result = self.call("Runtime.evaluate", params);
        assert!(result["exceptionDetails"].is_null(), "`{expression}` threw: {}", result["exceptionDetails"]);
        result["result"]["value"].clone()
    }

    /// The Content-Security-Policy violations the page has met.
    pub fn violations(&mut self) -> Vec<String> {
        let value = self.eval("window.__cspViolations || ['the violation recorder did not run']");
        value.as_array().into_iter().flatten().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
    }

    /// Shows the page as a phone of `width` CSS pixels would.
    pub fn phone(&mut self, width: u32, height: u32) {
        let metrics = json!({ "width": width, "height": height, "deviceScaleFactor": 2, "mobile": true });
        self.call("Emulation.setDeviceMetricsOverride", metrics);
    }

    pub fn desktop(&mut self) {
        self.call("Emulation.clearDeviceMetricsOverride", json!({}));
    }

    /// A PNG of the page's viewport, saved as `name` in the test artifacts (see [`artifacts`]).
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
        let path = artifacts().join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }

    fn stderr_text(&self) -> String {
        format!("chromium's stderr:\n{}", self.stderr.lock().map(|s| s.clone()).unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        // SAFETY: kill(2) of the process group this test started chromium in (its group id is its pid).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let Some(profile) = self.profile.take() else { return };
        // Its crash handlers run as daemons of their own, outside the group; they and the group's
        // processes that outlive the main one for a moment all name the profile on their command line.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_naming(profile.path());
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                // SAFETY: kill(2) of a process this browser started (it names this test's profile).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = profile.close();
    }
}

/// The processes whose command line mentions `path` (a zombie's is empty: it no longer counts).
fn processes_naming(path: &Path) -> Vec<i32> {
    let needle = path.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// Where tests leave files for a person to look at: `$BAI_TEST_ARTIFACTS`, else `target/test-artifacts`;
/// never inside the repository's sources.
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("BAI_TEST_ARTIFACTS").map(PathBuf::from).unwrap_or_else(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        tmp.parent().unwrap_or(tmp).join("test-artifacts")
    });
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}
