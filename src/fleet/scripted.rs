//! A scripted agent for unit tests: it speaks the JSON-lines protocol over an in-process pipe, answers
//! each call as the test's script says (after a delay, with an error, or by hanging up), and logs when
//! each call started and finished, so that the executor's ordering, skipping and broken-node handling, the
//! engine's runs and the watcher's transitions are tested without SSH or Docker. [`Agents`] is a
//! [`Connector`]: every node the engine or the watcher reaches gets a scripted agent of its own. A
//! successful answer has the shape the method answers with, for the node asked (an empty node: no
//! session, no generation). The integration suite drives the real agent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::fleet::connector::{Connector, Starting};
use crate::fleet::{ConnectOptions, NodeConn};
use crate::model::{Cluster, Node};
use crate::protocol::{ErrorKind, Method, Request, Response, RpcError};
use crate::transport::AgentStream;
use crate::transport::client::AgentClient;

/// How the agent answers one call.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Success after the delay.
    Ok(Duration),
    /// Success with this result, whatever its shape.
    With(serde_json::Value),
    /// A failure of this call; the connection stays up.
    Fail(String),
    /// The agent goes away without answering.
    HangUp,
}

/// One call the agent received.
#[derive(Debug, Clone)]
pub struct Call {
    pub node: String,
    /// `create_session`, `ensure_image`, …
    pub method: &'static str,
    /// The resource the call is about (empty where it names none).
    pub subject: String,
    pub started: Instant,
    pub finished: Instant,
}

/// Every call of every scripted agent of a test, in the order they finished.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Call>>>);

impl Log {
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The calls as `node method subject`, in the order they finished.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(|c| format!("{} {} {}", c.node, c.method, c.subject)).collect()
    }

    /// When the call `method subject` on `node` finished.
    pub fn finished(&self, node: &str, method: &str, subject: &str) -> Option<Instant> {
        self.calls().iter().find(|c| c.node == node && c.method == method && c.subject == subject).map(|c| c.finished)
    }
}

/// The resource a call is about.
fn subject(method: &Method) -> String {
    match method {
        Method::EnsureImage(m) => m.name.clone(),
        Method::RemoveImage(m) => m.name.clone(),
        Method::EnsureVfolder(m) => m.name.clone(),
        Method::RemoveVfolder(m) => m.name.clone(),
        Method::CreateSession(m) => m.name.clone(),
        Method::RemoveSession(m) => m.name.clone(),
        _ => String::new(),
    }
}

/// A successful reply of the shape `request` answers with, from the agent of `node`.
fn reply_to(node: &str, request: &Method) -> serde_json::Value {
    use crate::protocol::{BAI_VERSION, PROTOCOL_VERSION};
    match request {
        Method::Hello(h) => serde_json::json!({
            "protocol": PROTOCOL_VERSION, "version": BAI_VERSION, "arch": std::env::consts::ARCH,
            "lease": h.lease, "identity": format!("scripted-{node}"),
        }),
        Method::Ping => serde_json::json!({"uptime_s": 1, "load1": null, "gpus": 0}),
        Method::Observe(o) => serde_json::json!({"name": o.node, "agent": null}),
        Method::Probe(_) => serde_json::json!({"sessions": [], "unowned": [], "health": []}),
        Method::EnsureImage(_) => serde_json::json!({"id": "sha256:scripted"}),
        Method::PutBlob(_) => serde_json::json!({"complete": true}),
        Method::RemoveVfolder(_) => serde_json::json!({"outcome": "deleted"}),
        Method::RecordGeneration(_) => serde_json::json!({"pruned": []}),
        Method::ListGenerations(_) => serde_json::json!({"generations": [], "lowest_pruned": null}),
        _ => serde_json::json!({}),
    }
}

/// How every scripted agent of a test answers: by node, method and subject.
pub type Script = Arc<dyn Fn(&str, &'static str, &str) -> Answer + Send + Sync>;

/// The connector that gives every node a scripted agent answering as `script` says.
#[derive(Clone)]
pub struct Agents {
    pub log: Log,
    pub script: Script,
}

impl Connector for Agents {
    fn start<'a>(&'a self, _: &'a Cluster, node: &'a Node, _: &'a ConnectOptions) -> Starting<'a> {
        let (script, name) = (self.script.clone(), node.name.value.to_string());
        let asked = name.clone();
        let stream = stream(&name, &self.log, move |method, subject| script(&asked, method, subject));
        Box::pin(async move { Ok(stream) })
    }
}

/// Options that reach every node through `connector`.
pub fn options_with(connector: impl Connector + 'static) -> ConnectOptions {
    // The lock hashes the agent binary: the test binary stands in for it.
    let binary = std::env::current_exe().unwrap_or_default();
    ConnectOptions { connector: Arc::new(connector), ..ConnectOptions::new(false, binary) }
}

/// A connection to a scripted agent for `node`: `script` says how each call is answered.
pub fn connect(node: &str, log: &Log, script: impl Fn(&'static str, &str) -> Answer + Send + 'static) -> NodeConn {
    NodeConn {
        node: node.to_string(),
        client: AgentClient::new(stream(node, log, script)),
        vfolder_root: "/vfolders".into(),
        identity: None,
    }
}

/// The stdio of a scripted agent for `node`.
fn stream(node: &str, log: &Log, script: impl Fn(&'static str, &str) -> Answer + Send + 'static) -> AgentStream {
    let (controller, agent) = tokio::io::duplex(1 << 16);
    let (reader, writer) = tokio::io::split(controller);
    let stream =
        AgentStream { reader: Box::new(reader), writer: Box::new(writer), keepalive: Box::new(()), tunnel: None };
    let (log, name) = (log.clone(), node.to_string());
    tokio::spawn(async move {
        let (agent_reader, mut agent_writer) = tokio::io::split(agent);
        let mut lines = BufReader::new(agent_reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(request) = serde_json::from_str::<Request>(&line) else { return };
            let started = Instant::now();
            let (method, about) = (request.method.name(), subject(&request.method));
            let (result, error) = match script(method, &about) {
                Answer::Ok(delay) => {
                    tokio::time::sleep(delay).await;
                    (Some(reply_to(&name, &request.method)), None)
                }
                Answer::With(result) => (Some(result), None),
                Answer::Fail(message) => (None, Some(RpcError::new(ErrorKind::Failed, message))),
                Answer::HangUp => return,
            };
            if let Ok(mut calls) = log.0.lock() {
                calls.push(Call { node: name.clone(), method, subject: about, started, finished: Instant::now() });
            }
            let mut reply = serde_json::to_vec(&Response { id: request.id, result, error }).unwrap_or_default();
            reply.push(b'\n');
            if agent_writer.write_all(&reply).await.is_err() {
                return;
            }
        }
    });
    stream
}

/// The lab the scripted tests share: nodes `a` and `b`; `slow` is a's image, `fast` b's; `after-a` on b
/// depends on `on-a`.
pub const LAB: &str = r#"cluster "t" {
    node "a" address="10.0.0.1"
    node "b" address="10.0.0.2"
    image "slow" ref="example.org/slow:1"
    image "fast" ref="example.org/fast:1"
    vfolder "va" node="a"
    session "on-a" image="slow" node="a" {
        command "run"
    }
    session "on-b" image="fast" node="b" {
        command "run"
    }
    session "after-a" image="fast" node="b" {
        command "run"
        depends-on "on-a"
    }
}
"#;

/// `text` written as `lab.kdl` in a directory of its own, loaded and checked valid.
pub fn lab(text: &str) -> (tempfile::TempDir, std::path::PathBuf, crate::config::Loaded) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lab.kdl");
    std::fs::write(&path, text).expect("write lab");
    let loaded = crate::config::load(&path);
    let mut problems = loaded.problems.clone();
    problems.extend(crate::validate::validate(&loaded.config));
    assert!(problems.iter().all(|p| !p.is_error()), "the test lab is valid: {problems:?}");
    (dir, path, loaded)
}
