//! The controller's side of the agent RPC: requests out, responses in, ids checked.
//!
//! The agent is on the far side of a trust boundary: every call has a deadline ([`Deadlines`]), an
//! answer line may not grow past [`MAX_REPLY`] bytes, and the text of an error the node sends is
//! escaped and cut before anyone prints it ([`crate::untrusted`]).

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::protocol::{BAI_VERSION, CallKind, Hello, HelloReply, Method, PROTOCOL_VERSION, Request, RpcError};
use crate::transport::AgentStream;
use crate::untrusted;

/// The longest answer line taken from an agent. The largest real answers (an `observe` of a node with
/// thousands of sessions, a generation record with its lock file) are a few megabytes.
pub const MAX_REPLY: usize = 16 << 20;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ClientError {
    #[error("{0}")]
    #[diagnostic(transparent)]
    Rpc(#[from] RpcError),
    #[error("the agent connection failed: {0}")]
    #[diagnostic(code(bai::agent::io), help("the connection to the node dropped; run again"))]
    Io(#[from] std::io::Error),
    #[error("the agent closed the connection")]
    #[diagnostic(
        code(bai::agent::closed),
        help("the agent on the node stopped (killed, out of memory, or the node rebooted); run again")
    )]
    Closed,
    #[error("the agent answered something else: {0}")]
    #[diagnostic(
        code(bai::agent::protocol),
        help("the node runs something else than this bai's agent, or a broken one; nothing more is asked of it")
    )]
    Protocol(String),
    #[error("the agent's answer to `{method}` grew past {} MiB without ending: the node's reply is not used", MAX_REPLY >> 20)]
    #[diagnostic(code(bai::agent::too_long))]
    TooLong { method: &'static str },
    #[error("no answer to `{method}` within {}", crate::config::value::format_duration(*after))]
    #[diagnostic(code(bai::agent::timeout))]
    Timeout { method: &'static str, after: Duration },
    #[error("the connection is not usable after an earlier call ({0})")]
    #[diagnostic(code(bai::agent::unusable))]
    Unusable(String),
}

/// How long the controller waits for each kind of call before it gives the node up: short for
/// reading, longer for changing, longest for making an image (a pull of tens of gigabytes). The lab
/// sets them with `timeouts` (schema/README.md); these are the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// `hello`, `observe`, `inventory`, `probe`, reading generations and keys.
    pub observe: Duration,
    /// Every change but an image: sessions, vfolders, labels, records, each upload chunk.
    pub change: Duration,
    /// `ensure_image`: a pull, a build or a load.
    pub image: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            observe: Duration::from_secs(30),
            change: Duration::from_secs(5 * 60),
            image: Duration::from_secs(60 * 60),
        }
    }
}

impl Deadlines {
    /// The deadline of one call.
    pub fn of(&self, method: &Method) -> Duration {
        match method.kind() {
            CallKind::Read => self.observe,
            CallKind::Change => self.change,
            CallKind::Image => self.image,
        }
    }
}

pub struct AgentClient {
    reader: BufReader<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    next_id: u64,
    /// The request being written, reused: a watcher sends hundreds of pings a second.
    out: Vec<u8>,
    /// The answer line being read, reused. A call cancelled mid-line leaves its start here, and the next
    /// call completes it (`read_until` keeps what it read), so no byte of the stream is ever lost.
    line: Vec<u8>,
    /// Set while a request is being written: a call cancelled there (a timeout) leaves half a line on the
    /// wire, after which the connection is useless.
    writing: bool,
    /// Why the connection may not be used again (an answer that was too long, a change that timed out).
    unusable: Option<String>,
    deadlines: Deadlines,
    tunnel: Option<std::sync::Arc<dyn crate::transport::tunnel::Tunnel>>,
    _keepalive: Box<dyn std::any::Any + Send>,
}

/// An agent connection given over to a stream call: frames both ways ([`crate::frame`]) until it closes.
pub struct FrameStream {
    pub reader: BufReader<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    pub writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    pub keepalive: Box<dyn std::any::Any + Send>,
}

/// A response whose result is left unparsed until the caller's type is known: one pass over the line
/// rather than a `serde_json::Value` tree built and then converted.
#[derive(Deserialize)]
struct RawResponse<'a> {
    id: u64,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcError>,
}

impl AgentClient {
    pub fn new(stream: AgentStream) -> Self {
        AgentClient {
            reader: BufReader::new(stream.reader),
            writer: stream.writer,
            next_id: 1,
            out: Vec::with_capacity(256),
            line: Vec::with_capacity(256),
            writing: false,
            unusable: None,
            deadlines: Deadlines::default(),
            tunnel: stream.tunnel,
            _keepalive: stream.keepalive,
        }
    }

    /// The deadlines of this connection's calls.
    pub fn with_deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    /// The way through the node to its sessions' ports, where the transport has one.
    pub fn tunnel(&self) -> Option<std::sync::Arc<dyn crate::transport::tunnel::Tunnel>> {
        self.tunnel.clone()
    }

    /// Starts a stream call: once the agent said yes, the connection is the stream's alone.
    pub async fn open_stream(mut self, call: crate::protocol::StreamCall) -> Result<FrameStream, ClientError> {
        let _: serde_json::Value = self.call(Method::Stream(Box::new(call))).await?;
        // The answer line was read whole: what the reader holds beyond it are the first frames.
        Ok(FrameStream {
            reader: self.reader,
            writer: self.writer,
            keepalive: Box::new((self._keepalive, self.tunnel)),
        })
    }

    /// One request, one response, within the method's deadline. Cancel-safe between requests: the
    /// answers to calls abandoned while waiting (a probe that timed out) are skipped when they arrive late.
    pub async fn call<T: DeserializeOwned>(&mut self, method: Method) -> Result<T, ClientError> {
        let deadline = self.deadlines.of(&method);
        self.call_within(method, deadline).await
    }

    /// [`call`](Self::call) with a deadline of the caller's (the watcher's ping timeout).
    pub async fn call_within<T: DeserializeOwned>(
        &mut self,
        method: Method,
        deadline: Duration,
    ) -> Result<T, ClientError> {
        let name = method.name();
        // A change that timed out leaves the node in a state nobody knows: the connection is not used
        // again (dropping it makes the agent stop the call and free the lease).
        let changes = method.kind() != CallKind::Read;
        match tokio::time::timeout(deadline, self.exchange(method)).await {
            Ok(Err(e @ ClientError::TooLong { .. })) => {
                self.unusable = Some(e.to_string());
                Err(e)
            }
            Ok(result) => result,
            Err(_) => {
                let e = ClientError::Timeout { method: name, after: deadline };
                if changes {
                    self.unusable = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    async fn exchange<T: DeserializeOwned>(&mut self, method: Method) -> Result<T, ClientError> {
        if let Some(why) = &self.unusable {
            return Err(ClientError::Unusable(why.clone()));
        }
        if self.writing {
            return Err(ClientError::Protocol("an earlier request was cut off mid-write".into()));
        }
        let name = method.name();
        let id = self.next_id;
        self.next_id += 1;
        self.out.clear();
        serde_json::to_writer(&mut self.out, &Request { id, method })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.out.push(b'\n');
        self.writing = true;
        self.writer.write_all(&self.out).await?;
        self.writer.flush().await?;
        self.writing = false;
        loop {
            if !read_line(&mut self.reader, &mut self.line, MAX_REPLY).await? {
                if self.line.len() > MAX_REPLY {
                    return Err(ClientError::TooLong { method: name });
                }
                // End of stream, with or without half a line before it.
                return Err(ClientError::Closed);
            }
            let answer = answer_of::<T>(&self.line, id);
            self.line.clear();
            // Ids only grow: a smaller one answers a request this client gave up on.
            if let Some(answer) = answer {
                return answer;
            }
        }
    }

    /// The handshake; refuses an agent of another version even if it did not.
    pub async fn hello(
        &mut self,
        cluster: &str,
        node: &str,
        lease: bool,
        holder: &str,
    ) -> Result<HelloReply, ClientError> {
        let reply: HelloReply = self
            .call(Method::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                version: BAI_VERSION.to_string(),
                cluster: cluster.to_string(),
                node: node.to_string(),
                lease,
                holder: holder.to_string(),
            }))
            .await?;
        if reply.protocol != PROTOCOL_VERSION || reply.version != BAI_VERSION {
            return Err(ClientError::Protocol(format!(
                "node runs bai {} (protocol {}), this controller is bai {BAI_VERSION} (protocol {PROTOCOL_VERSION})",
                untrusted::excerpt(&reply.version, 80),
                reply.protocol
            )));
        }
        Ok(reply)
    }
}

/// Reads one line into `line` (appending: a read cancelled mid-line is continued by the next call), at
/// most `max` bytes of it. `true` when the line is complete; `false` at the end of the stream, or when
/// the line grew past `max` (then `line` holds more than `max` bytes, and the stream is mid-line).
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, line: &mut Vec<u8>, max: usize) -> std::io::Result<bool> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(false);
        }
        let (taken, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if line.len() > max + usize::from(complete) {
            return Ok(false);
        }
        if complete {
            return Ok(true);
        }
    }
}

/// What one answer line means for the call waiting on request `id`: `None` for a late answer to an
/// earlier, abandoned request. What the node wrote is echoed escaped and cut short.
fn answer_of<T: DeserializeOwned>(line: &[u8], id: u64) -> Option<Result<T, ClientError>> {
    let protocol = |e: serde_json::Error| {
        // serde's message quotes what it could not take: escaped too.
        let line = String::from_utf8_lossy(line);
        ClientError::Protocol(format!(
            "{}: {}",
            untrusted::text(&e.to_string()),
            untrusted::excerpt(line.trim_end(), 200)
        ))
    };
    let response: RawResponse<'_> = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return Some(Err(protocol(e))),
    };
    if response.id < id {
        return None;
    }
    if response.id != id {
        return Some(Err(ClientError::Protocol(format!("response {} to request {id}", response.id))));
    }
    if let Some(mut error) = response.error {
        untrusted::clean(&mut error.message);
        // A code is shown and matched on: one that is not a well-formed code is the kind's.
        error.code = error.code.filter(|c| crate::failure::well_formed(c));
        return Some(Err(ClientError::Rpc(error)));
    }
    let result = response.result.map_or("null", RawValue::get);
    Some(serde_json::from_str(result).map_err(|e| ClientError::Protocol(untrusted::text(&e.to_string()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_matched_to_their_request() {
        let ok: Option<Result<u32, _>> = answer_of(b"{\"id\":3,\"result\":7}\n", 3);
        assert!(matches!(ok, Some(Ok(7))));
        let late: Option<Result<u32, _>> = answer_of(b"{\"id\":2,\"result\":7}\n", 3);
        assert!(late.is_none(), "an answer to an abandoned request is skipped");
        let ahead: Option<Result<u32, _>> = answer_of(b"{\"id\":4,\"result\":7}\n", 3);
        assert!(matches!(ahead, Some(Err(ClientError::Protocol(_)))));
        let none: Option<Result<(), _>> = answer_of(b"{\"id\":3}\n", 3);
        assert!(matches!(none, Some(Ok(()))), "no result reads as null");
        let refused: Option<Result<u32, _>> =
            answer_of(b"{\"id\":3,\"error\":{\"kind\":\"refused\",\"message\":\"no\"}}\n", 3);
        assert!(matches!(refused, Some(Err(ClientError::Rpc(e))) if e.message == "no"));
        let garbage: Option<Result<u32, _>> = answer_of(b"not json\n", 3);
        assert!(matches!(garbage, Some(Err(ClientError::Protocol(m))) if m.contains("not json")));
    }
}
