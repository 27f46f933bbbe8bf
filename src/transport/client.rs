//! The controller's side of the agent RPC: requests out, responses in, ids checked.

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};

use crate::protocol::{BAI_VERSION, Hello, HelloReply, Method, PROTOCOL_VERSION, Request, Response, RpcError};
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
    lines: Lines<BufReader<Box<dyn tokio::io::AsyncRead + Send + Unpin>>>,
    writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    next_id: u64,
    /// Set while a request is being written: a call cancelled there (a timeout) leaves half a line on the
    /// wire, after which the connection is useless.
    writing: bool,
    _keepalive: Box<dyn std::any::Any + Send>,
}

impl AgentClient {
    pub fn new(stream: AgentStream) -> Self {
        AgentClient {
            lines: BufReader::new(stream.reader).lines(),
            writer: stream.writer,
            next_id: 1,
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
        let mut line = serde_json::to_vec(&Request { id, method }).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writing = true;
        self.writer.write_all(&line).await?;
        self.writer.flush().await?;
        self.writing = false;
        let response = loop {
            let Some(reply) = self.lines.next_line().await? else { return Err(ClientError::Closed) };
            let response: Response =
                serde_json::from_str(&reply).map_err(|e| ClientError::Protocol(format!("{e}: {reply}")))?;
            // Ids only grow: a smaller one answers a request this client gave up on.
            if response.id < id {
                continue;
            }
            break response;
        };
        if response.id != id {
            return Err(ClientError::Protocol(format!("response {} to request {id}", response.id)));
        }
        if let Some(error) = response.error {
            return Err(ClientError::Rpc(error));
        }
        let value = response.result.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(value).map_err(|e| ClientError::Protocol(e.to_string()))
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
