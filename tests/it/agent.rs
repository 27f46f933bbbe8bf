//! The agent's RPC as a controller meets it: the real `bai agent` process, JSON lines on its stdio.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::support::json;

struct Agent {
    child: std::process::Child,
    reader: BufReader<std::process::ChildStdout>,
    _home: tempfile::TempDir,
}

impl Agent {
    fn start() -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bai"))
            .arg("agent")
            .env("BAI_HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("agent starts");
        let reader = BufReader::new(child.stdout.take().expect("stdout"));
        Agent { child, reader, _home: home }
    }

    fn call(&mut self, line: &str) -> serde_json::Value {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("send");
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("reply");
        json(&reply)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hello(version: &str, lease: bool) -> String {
    format!(
        r#"{{"id":1,"method":"hello","params":{{"protocol":{},"version":"{version}","cluster":"lab","node":"n1","lease":{lease},"holder":"test"}}}}"#,
        bai::protocol::PROTOCOL_VERSION
    )
}

#[test]
fn the_agent_refuses_another_version_with_a_clear_message() {
    let mut agent = Agent::start();
    let reply = agent.call(&hello("0.0.1", false));
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["error"]["kind"], "version_mismatch");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("bai 0.0.1") && message.contains(bai::protocol::BAI_VERSION), "{message}");
}

#[test]
fn requests_need_a_hello_and_changes_need_the_lease() {
    let mut agent = Agent::start();
    let early =
        agent.call(r#"{"id":5,"method":"observe","params":{"cluster":"lab","node":"n1","vfolder_root":"/tmp/x"}}"#);
    assert_eq!(early["error"]["kind"], "bad_request", "{early}");
    let ok = agent.call(&hello(bai::protocol::BAI_VERSION, false));
    assert_eq!(ok["result"]["lease"], false, "{ok}");
    let ping = agent.call(r#"{"id":2,"method":"ping"}"#);
    assert!(ping["result"]["uptime_s"].as_u64().is_some(), "{ping}");
    let change = agent.call(r#"{"id":3,"method":"leave","params":{"cluster":"lab"}}"#);
    assert_eq!(change["error"]["kind"], "no_lease", "{change}");
    let other = agent.call(r#"{"id":4,"method":"leave","params":{"cluster":"other"}}"#);
    assert_eq!(other["error"]["kind"], "bad_request", "{other}");
    let garbage = agent.call(r#"{"id":9,"method":"format_disk"}"#);
    assert_eq!(
        (garbage["id"].clone(), garbage["error"]["kind"].clone()),
        (serde_json::json!(9), serde_json::json!("bad_request"))
    );
    let inventory = agent.call(r#"{"id":6,"method":"inventory"}"#);
    // Without NVML the inventory has zero GPUs and says why; it is never an error.
    let gpus = inventory["result"]["gpus"].as_array().map(Vec::len);
    assert!(gpus.is_some(), "{inventory}");
    if gpus == Some(0) {
        assert!(inventory["result"]["gpu_error"].as_str().is_some_and(|r| !r.is_empty()), "{inventory}");
    }
}
