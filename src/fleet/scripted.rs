//! A scripted agent for unit tests: it speaks the JSON-lines protocol over an in-process pipe, answers
//! each call as the test's script says (after a delay, with an error, or by hanging up), and logs when
//! each call started and finished, so that the executor's ordering, skipping and broken-node handling are
//! tested without SSH or Docker. The integration suite drives the real agent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::fleet::NodeConn;
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

/// A successful reply of the shape `method` answers with.
fn reply_to(method: &str) -> serde_json::Value {
    match method {
        "ensure_image" => serde_json::json!({"id": "sha256:scripted"}),
        "put_blob" => serde_json::json!({"complete": true}),
        "remove_vfolder" => serde_json::json!({"outcome": "deleted"}),
        _ => serde_json::json!({}),
    }
}

/// A connection to a scripted agent for `node`: `script` says how each call is answered.
pub fn connect(node: &str, log: &Log, script: impl Fn(&'static str, &str) -> Answer + Send + 'static) -> NodeConn {
    let (controller, agent) = tokio::io::duplex(1 << 16);
    let (reader, writer) = tokio::io::split(controller);
    let stream = AgentStream { reader: Box::new(reader), writer: Box::new(writer), keepalive: Box::new(()) };
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
                    (Some(reply_to(method)), None)
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
    NodeConn {
        node: node.to_string(),
        client: AgentClient::new(stream),
        vfolder_root: "/vfolders".into(),
        identity: None,
    }
}
