//! The controller's side of the agent RPC: requests out, responses in, ids checked.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::protocol::{BAI_VERSION, Hello, HelloReply, Method, PROTOCOL_VERSION, Request, RpcError};
use crate::transport::AgentStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Rpc(#[from] RpcError),
    #[error("the agent connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent closed the connection")]
    Closed,
    #[error("the agent answered something else: {0}")]
    Protocol(String),
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
    _keepalive: Box<dyn std::any::Any + Send>,
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
            _keepalive: stream.keepalive,
        }
    }

    /// One request, one response. Cancel-safe between requests: the answers to calls abandoned while
    /// waiting (a probe that timed out) are skipped when they arrive late.
    pub async fn call<T: DeserializeOwned>(&mut self, method: Method) -> Result<T, ClientError> {
        if self.writing {
            return Err(ClientError::Protocol("an earlier request was cut off mid-write".into()));
        }
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
            self.reader.read_until(b'\n', &mut self.line).await?;
            if self.line.last() != Some(&b'\n') {
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
                reply.version, reply.protocol
            )));
        }
        Ok(reply)
    }
}

/// What one answer line means for the call waiting on request `id`: `None` for a late answer to an
/// earlier, abandoned request.
fn answer_of<T: DeserializeOwned>(line: &[u8], id: u64) -> Option<Result<T, ClientError>> {
    let protocol =
        |e: serde_json::Error| ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(line).trim_end()));
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
    if let Some(error) = response.error {
        return Some(Err(ClientError::Rpc(error)));
    }
    let result = response.result.map_or("null", RawValue::get);
    Some(serde_json::from_str(result).map_err(|e| ClientError::Protocol(e.to_string())))
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
