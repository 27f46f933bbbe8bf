//! The agent's HTTP/1.1 client for the Docker engine's API, on the socket `DOCKER_HOST` names (`unix://…`
//! or a plain `tcp://host:port`), else `/var/run/docker.sock`. Requests carry no API version in their path,
//! so each engine answers in its own current API (as bollard 0.21 sent them, see CRATES.md). Replies are
//! read bounded, every call that waits on the engine has a deadline for each step that makes no progress
//! (connecting, each piece of a request body, the reply's head), and a connection whose reply was read
//! to its end is kept for the next call.
//!
//! Small on purpose: it goes to every node inside the agent. bollard, with hyper, url and its models,
//! was a fifth of the agent's code and made every install unpack it (docs/performance.md); the engine
//! calls the agent makes need a request line, a few headers, a JSON or tar body, and a reply read by
//! length, in chunks, or as the raw stream of an attached `exec`.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Where the engine listens when `DOCKER_HOST` is unset.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The longest the engine may take over one step of a call (connecting, taking one piece of a request
/// body, starting its reply): bollard's default for a whole request. Streamed replies (a followed log, an
/// attached command, build output) may then go on as long as they go on; their callers bound them.
const DEADLINE: Duration = Duration::from_secs(120);

/// The most a reply's head (status line and headers) may hold.
const MAX_HEAD: usize = 64 * 1024;

/// The most a reply read whole may hold: a container listing carries every session's spec label.
const MAX_REPLY: u64 = 64 << 20;

/// The most an error reply is read for its message.
const MAX_ERROR: u64 = 64 * 1024;

/// The most one line of a JSON progress stream, or one frame of a multiplexed stream, may hold.
const MAX_PIECE: usize = 16 << 20;

/// Idle connections kept for the next call.
const MAX_IDLE: usize = 4;

/// A failure of the engine's API: the socket, the engine's answer, or its reply.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("DOCKER_HOST `{}` is neither unix:// nor tcp://", .0.escape_debug())]
    Host(String),
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error("the engine did not {step} within {} s", DEADLINE.as_secs())]
    Timeout { step: &'static str },
    /// The engine answered with an error status; `message` is its own words.
    #[error("the engine answered {status}: {message}")]
    Status { status: u16, message: String },
    /// An error the engine reported inside a streamed reply (a pull, a build, a load).
    #[error("{message}")]
    Stream { message: String },
    #[error("the engine's reply is not understood: {0}")]
    Reply(String),
}

impl EngineError {
    /// The engine says there is no such thing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::Status { status: 404, .. })
    }

    /// The engine's own words for the failure, where it gave some.
    pub fn message(&self) -> String {
        match self {
            EngineError::Status { message, .. } | EngineError::Stream { message } => message.trim().to_string(),
            other => other.to_string(),
        }
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| EngineError::Io { what, source }
}

async fn within<T>(step: &'static str, future: impl Future<Output = Result<T, EngineError>>) -> Result<T, EngineError> {
    tokio::time::timeout(DEADLINE, future).await.unwrap_or(Err(EngineError::Timeout { step }))
}

/// Both directions of a connection to the engine.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection to the engine, read through a buffer.
pub type Conn = BufReader<Box<dyn Io>>;

#[derive(Debug, Clone)]
enum Host {
    Unix(PathBuf),
    Tcp(String),
}

/// A request's body.
pub enum Body {
    Empty,
    /// A JSON document.
    Json(Vec<u8>),
    /// A tar archive in memory.
    Tar(Vec<u8>),
    /// A tar archive read from a file, sent in chunks as it is read.
    TarFile(tokio::fs::File),
    /// A tar archive as it arrives, sent in chunks; the end of the channel ends it.
    TarChunks(tokio::sync::mpsc::Receiver<Vec<u8>>),
}

impl Body {
    fn content_type(&self) -> Option<&'static str> {
        match self {
            Body::Empty => None,
            Body::Json(_) => Some("application/json"),
            Body::Tar(_) | Body::TarFile(_) | Body::TarChunks(_) => Some("application/x-tar"),
        }
    }

    /// A body that can be sent again on a fresh connection.
    fn replay(&self) -> Option<Body> {
        match self {
            Body::Empty => Some(Body::Empty),
            Body::Json(b) => Some(Body::Json(b.clone())),
            Body::Tar(b) => Some(Body::Tar(b.clone())),
            Body::TarFile(_) | Body::TarChunks(_) => None,
        }
    }
}

/// The engine's API.
pub struct Client {
    host: Host,
    idle: Mutex<Vec<Conn>>,
}

impl Client {
    /// The engine `DOCKER_HOST` names, or the local socket. Nothing is connected yet.
    pub fn from_env() -> Result<Client, EngineError> {
        let named = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
        Client::new(named.as_deref().unwrap_or(DEFAULT_HOST))
    }

    fn new(address: &str) -> Result<Client, EngineError> {
        let host = if let Some(path) = address.strip_prefix("unix://") {
            Host::Unix(PathBuf::from(path))
        } else if let Some(rest) = address.strip_prefix("tcp://").or_else(|| address.strip_prefix("http://")) {
            Host::Tcp(rest.trim_end_matches('/').to_string())
        } else {
            return Err(EngineError::Host(address.to_string()));
        };
        Ok(Client { host, idle: Mutex::new(Vec::new()) })
    }

    async fn connect(&self) -> Result<Conn, EngineError> {
        let failed = |source| {
            let address = match &self.host {
                Host::Unix(path) => format!("unix://{}", path.display()),
                Host::Tcp(address) => format!("tcp://{address}"),
            };
            EngineError::Connect { address, source }
        };
        let stream: Box<dyn Io> = match &self.host {
            Host::Unix(path) => {
                within("accept a connection", async {
                    Ok(Box::new(tokio::net::UnixStream::connect(path).await.map_err(failed)?))
                })
                .await?
            }
            Host::Tcp(address) => {
                within("accept a connection", async {
                    Ok(Box::new(tokio::net::TcpStream::connect(address).await.map_err(failed)?))
                })
                .await?
            }
        };
        Ok(BufReader::new(stream))
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn keep(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Sends a request and reads the head of its reply; an error status is read for the engine's message
    /// and returned as [`EngineError::Status`]. `path` holds the query, already encoded.
    pub async fn send(&self, method: &'static str, path: &str, body: Body) -> Result<Reply, EngineError> {
        let reply = self.exchange(method, path, body, false).await?;
        reply.checked().await
    }

    /// A request whose reply is read whole (bounded) and the connection kept: the reply's body.
    pub async fn call(&self, method: &'static str, path: &str, body: Body) -> Result<Vec<u8>, EngineError> {
        let mut reply = self.send(method, path, body).await?;
        let bytes = within("finish its reply", reply.read_all(MAX_REPLY)).await?;
        if let Some(conn) = reply.reusable() {
            self.keep(conn);
        }
        Ok(bytes)
    }

    /// A request whose reply is a JSON document.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: Body,
    ) -> Result<T, EngineError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| EngineError::Reply(format!("{method} {path}: {e}")))
    }

    /// `GET` of a JSON document.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        self.json("GET", path, Body::Empty).await
    }

    /// A request the engine answers by taking over the connection (`POST /exec/{id}/start`, attached):
    /// the connection as it is once the engine's head is read, to read and write both ways.
    pub async fn upgrade(&self, path: &str, body: Body) -> Result<Conn, EngineError> {
        let reply = self.exchange("POST", path, body, true).await?.checked().await?;
        if !matches!(reply.status, 101 | 200) {
            return Err(EngineError::Reply(format!("POST {path}: status {} where a stream was due", reply.status)));
        }
        Ok(reply.conn)
    }

    async fn exchange(
        &self,
        method: &'static str,
        path: &str,
        body: Body,
        upgrade: bool,
    ) -> Result<Reply, EngineError> {
        // A kept connection the engine has closed meanwhile fails before any reply: the request goes
        // again on a fresh one where its body can be sent again.
        if let Some(again) = body.replay()
            && let Some(conn) = self.take_idle()
        {
            match self.exchange_on(conn, method, path, again, upgrade).await {
                Err(EngineError::Io { .. }) => {}
                done => return done,
            }
        }
        let conn = self.connect().await?;
        self.exchange_on(conn, method, path, body, upgrade).await
    }

    async fn exchange_on(
        &self,
        mut conn: Conn,
        method: &'static str,
        path: &str,
        body: Body,
        upgrade: bool,
    ) -> Result<Reply, EngineError> {
        let host = match &self.host {
            Host::Unix(_) => "docker",
            Host::Tcp(address) => address.as_str(),
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bai-agent\r\n");
        if let Some(content_type) = body.content_type() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        if upgrade {
            head.push_str("Connection: Upgrade\r\nUpgrade: tcp\r\n");
        }
        let sent = match body {
            Body::Empty => {
                head.push_str("\r\n");
                write(&mut conn, head.as_bytes()).await
            }
            Body::Json(bytes) | Body::Tar(bytes) => {
                head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
                let mut whole = head.into_bytes();
                whole.extend_from_slice(&bytes);
                write(&mut conn, &whole).await
            }
            Body::TarFile(mut file) => {
                head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                let mut sent = write(&mut conn, head.as_bytes()).await;
                let mut buf = vec![0; super::CHUNK];
                while sent.is_ok() {
                    let n = file.read(&mut buf).await.map_err(io("reading the file it was sent"))?;
                    sent = write_chunk(&mut conn, &buf[..n]).await;
                    if n == 0 {
                        break;
                    }
                }
                sent
            }
            Body::TarChunks(mut chunks) => {
                head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                let mut sent = write(&mut conn, head.as_bytes()).await;
                while sent.is_ok() {
                    match chunks.recv().await {
                        Some(chunk) if chunk.is_empty() => {}
                        Some(chunk) => sent = write_chunk(&mut conn, &chunk).await,
                        None => {
                            sent = write_chunk(&mut conn, b"").await;
                            break;
                        }
                    }
                }
                sent
            }
        };
        // An engine that refused the request may stop reading its body: its reply says why, where there is
        // one.
        match (sent, read_head(&mut conn).await) {
            (_, Ok((status, headers))) => Ok(Reply::new(status, headers, conn, method == "HEAD")),
            (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(e),
        }
    }
}

async fn write(conn: &mut Conn, bytes: &[u8]) -> Result<(), EngineError> {
    within("take the request", async { conn.write_all(bytes).await.map_err(io("sending the request")) }).await
}

/// One piece of a chunked body; an empty one ends it.
async fn write_chunk(conn: &mut Conn, piece: &[u8]) -> Result<(), EngineError> {
    write(conn, format!("{:x}\r\n", piece.len()).as_bytes()).await?;
    write(conn, piece).await?;
    write(conn, b"\r\n").await?;
    if piece.is_empty() {
        within("take the request", async { conn.flush().await.map_err(io("sending the request")) }).await?;
    }
    Ok(())
}

/// The status and the headers bai reads of a reply.
#[derive(Debug, Default)]
struct Headers {
    length: Option<u64>,
    chunked: bool,
    close: bool,
    path_stat: Option<String>,
}

async fn read_head(conn: &mut Conn) -> Result<(u16, Headers), EngineError> {
    within("start its reply", async {
        let mut bytes = Vec::new();
        loop {
            let before = bytes.len();
            let n = (&mut *conn)
                .take((MAX_HEAD - before) as u64)
                .read_until(b'\n', &mut bytes)
                .await
                .map_err(io("reading its reply"))?;
            if n == 0 {
                return Err(EngineError::Io {
                    what: "reading its reply",
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            if bytes.len() >= MAX_HEAD {
                return Err(EngineError::Reply(format!("a reply's head is longer than {MAX_HEAD} bytes")));
            }
            let line = &bytes[before..];
            // 1xx replies other than 101 go before the real one.
            if (line == b"\r\n" || line == b"\n") && before > 0 {
                let (status, headers) = parse_head(&bytes)?;
                if (100..200).contains(&status) && status != 101 {
                    bytes.clear();
                    continue;
                }
                return Ok((status, headers));
            }
        }
    })
    .await
}

fn parse_head(bytes: &[u8]) -> Result<(u16, Headers), EngineError> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(EngineError::Reply("a reply's head ended early".into())),
        Err(e) => return Err(EngineError::Reply(format!("a reply's head: {e}"))),
    }
    let status = response.code.ok_or_else(|| EngineError::Reply("a reply without a status".into()))?;
    let mut headers = Headers::default();
    for field in response.headers.iter() {
        let value = String::from_utf8_lossy(field.value).trim().to_string();
        match field.name.to_ascii_lowercase().as_str() {
            "content-length" => {
                headers.length = Some(value.parse().map_err(|_| EngineError::Reply("a bad Content-Length".into()))?);
            }
            "transfer-encoding" => headers.chunked = value.to_ascii_lowercase().ends_with("chunked"),
            "connection" => headers.close = value.eq_ignore_ascii_case("close"),
            "x-docker-container-path-stat" => headers.path_stat = Some(value),
            _ => {}
        }
    }
    Ok((status, headers))
}

/// How a reply's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// In chunks, each after its size line; `0` left: the next size line is due.
    Chunked { left: u64 },
    /// When the engine closes the connection (or never, for a stream).
    Close,
    /// It has ended.
    Done,
}

/// A reply, its head read; its body read as it comes.
pub struct Reply {
    pub status: u16,
    headers: Headers,
    conn: Conn,
    framing: Framing,
}

impl Reply {
    fn new(status: u16, headers: Headers, conn: Conn, head_request: bool) -> Reply {
        let framing = if head_request || status == 204 || status == 304 {
            Framing::Done
        } else if status == 101 {
            Framing::Close
        } else if headers.chunked {
            Framing::Chunked { left: 0 }
        } else {
            headers.length.map_or(Framing::Close, Framing::Length)
        };
        let framing = if framing == Framing::Length(0) { Framing::Done } else { framing };
        Reply { status, headers, conn, framing }
    }

    /// The reply itself when its status is a success (2xx, 101, or 304, which the engine answers to a
    /// start or stop with nothing to do), else its message as [`EngineError::Status`].
    async fn checked(mut self) -> Result<Reply, EngineError> {
        if (200..300).contains(&self.status) || matches!(self.status, 101 | 304) {
            return Ok(self);
        }
        let body = within("finish its reply", self.read_all(MAX_ERROR)).await.unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Message {
            message: String,
        }
        let message = match serde_json::from_slice::<Message>(&body) {
            Ok(m) => m.message,
            Err(_) => crate::untrusted::excerpt(String::from_utf8_lossy(&body).trim(), 1000),
        };
        Err(EngineError::Status { status: self.status, message })
    }

    /// The `X-Docker-Container-Path-Stat` header of an archive reply.
    pub fn path_stat(&self) -> Option<&str> {
        self.headers.path_stat.as_deref()
    }

    /// The connection, when the reply has ended cleanly and the engine keeps it open.
    fn reusable(self) -> Option<Conn> {
        (self.framing == Framing::Done && !self.headers.close && self.status != 101).then_some(self.conn)
    }

    /// Reads some of the body into `buf`; `0` at its end.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, EngineError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let reading = io("reading its reply");
        loop {
            match self.framing {
                Framing::Done => return Ok(0),
                Framing::Close => {
                    let n = self.conn.read(buf).await.map_err(reading)?;
                    if n == 0 {
                        self.framing = Framing::Done;
                    }
                    return Ok(n);
                }
                Framing::Length(left) | Framing::Chunked { left } if left > 0 => {
                    let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let n = self.conn.read(&mut buf[..want]).await.map_err(reading)?;
                    if n == 0 {
                        return Err(EngineError::Reply("the reply ended early".into()));
                    }
                    let left = left - n as u64;
                    self.framing = match self.framing {
                        Framing::Length(_) if left == 0 => Framing::Done,
                        Framing::Length(_) => Framing::Length(left),
                        _ if left == 0 => {
                            let line = self.line(8).await?;
                            if !line.is_empty() {
                                return Err(EngineError::Reply("a chunk of the reply is longer than it said".into()));
                            }
                            Framing::Chunked { left: 0 }
                        }
                        _ => Framing::Chunked { left },
                    };
                    return Ok(n);
                }
                Framing::Length(_) => self.framing = Framing::Done,
                Framing::Chunked { .. } => {
                    let line = self.line(1024).await?;
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size)
                        .ok()
                        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                        .ok_or_else(|| EngineError::Reply("a chunk of the reply has no size".into()))?;
                    if size == 0 {
                        // Trailers, up to the empty line.
                        while !self.line(MAX_HEAD).await?.is_empty() {}
                        self.framing = Framing::Done;
                    } else {
                        self.framing = Framing::Chunked { left: size };
                    }
                }
            }
        }
    }

    /// One line of the connection without its line end, at most `limit` bytes.
    async fn line(&mut self, limit: usize) -> Result<Vec<u8>, EngineError> {
        let mut line = Vec::new();
        (&mut self.conn).take(limit as u64 + 2).read_until(b'\n', &mut line).await.map_err(io("reading its reply"))?;
        if line.last() != Some(&b'\n') {
            return Err(EngineError::Reply("a line of the reply is cut short or too long".into()));
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    /// The whole body, at most `limit` bytes.
    pub async fn read_all(&mut self, limit: u64) -> Result<Vec<u8>, EngineError> {
        let mut body = Vec::new();
        // On the heap: a buffer held across an await is part of the future, which a caller may keep on a
        // small stack.
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = self.read(&mut buf).await?;
            if n == 0 {
                return Ok(body);
            }
            if body.len() as u64 + n as u64 > limit {
                return Err(EngineError::Reply(format!("a reply is longer than {limit} bytes")));
            }
            body.extend_from_slice(&buf[..n]);
        }
    }

    /// Exactly `buf.len()` bytes; `false` when the body ended before the first of them.
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool, EngineError> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read(&mut buf[filled..]).await?;
            if n == 0 {
                return if filled == 0 { Ok(false) } else { Err(EngineError::Reply("the reply ended early".into())) };
            }
            filled += n;
        }
        Ok(true)
    }

    /// The next JSON message of a progress stream (a pull, a build, a load): `None` at its end, an error
    /// the engine reported in it as [`EngineError::Stream`].
    pub async fn message(&mut self, pending: &mut Vec<u8>) -> Result<Option<super::models::Progress>, EngineError> {
        loop {
            if let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.trim_ascii().is_empty() {
                    continue;
                }
                return progress(&line).map(Some);
            }
            let mut buf = vec![0u8; 16 * 1024];
            let n = self.read(&mut buf).await?;
            if n == 0 {
                if pending.trim_ascii().is_empty() {
                    return Ok(None);
                }
                let line = std::mem::take(pending);
                return progress(&line).map(Some);
            }
            if pending.len() + n > MAX_PIECE {
                return Err(EngineError::Reply(format!("a progress message is longer than {MAX_PIECE} bytes")));
            }
            pending.extend_from_slice(&buf[..n]);
        }
    }

    /// The next frame of a multiplexed stream (a log, an attached command without a terminal): which
    /// stream (0 stdin, 1 stdout, 2 stderr) and its bytes; `None` at its end.
    pub async fn frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, EngineError> {
        let mut header = [0u8; 8];
        if !self.read_exact(&mut header).await? {
            return Ok(None);
        }
        let (stream, size) = frame_header(&header)?;
        let mut payload = vec![0; size];
        if !self.read_exact(&mut payload).await? && size > 0 {
            return Err(EngineError::Reply("a frame of the stream ended early".into()));
        }
        Ok(Some((stream, payload)))
    }
}

/// A multiplexed stream's frame header: the stream, three zero bytes, the size (big-endian).
pub fn frame_header(header: &[u8; 8]) -> Result<(u8, usize), EngineError> {
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if header[0] > 2 || header[1..4] != [0, 0, 0] {
        return Err(EngineError::Reply("the stream is not multiplexed".into()));
    }
    if size > MAX_PIECE {
        return Err(EngineError::Reply(format!("a frame of the stream is longer than {MAX_PIECE} bytes")));
    }
    Ok((header[0], size))
}

/// The next frame of a multiplexed stream read straight off a connection (an attached command).
pub async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> Result<Option<(u8, Vec<u8>)>, EngineError> {
    let reading = |source| EngineError::Io { what: "reading the command's output", source };
    let mut header = [0u8; 8];
    let mut filled = 0;
    while filled < header.len() {
        let n = reader.read(&mut header[filled..]).await.map_err(reading)?;
        if n == 0 {
            return if filled == 0 { Ok(None) } else { Err(EngineError::Reply("a frame header ended early".into())) };
        }
        filled += n;
    }
    let (stream, size) = frame_header(&header)?;
    let mut payload = vec![0; size];
    reader.read_exact(&mut payload).await.map_err(reading)?;
    Ok(Some((stream, payload)))
}

fn progress(line: &[u8]) -> Result<super::models::Progress, EngineError> {
    let message: super::models::Progress =
        serde_json::from_slice(line).map_err(|e| EngineError::Reply(format!("a progress message is not JSON: {e}")))?;
    match message.error() {
        Some(error) => Err(EngineError::Stream { message: error }),
        None => Ok(message),
    }
}

/// A query string (`?a=1&b=x%2Fy`), every value percent-encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        out.push_str(&crate::reference::path_segment(value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose every connection is one end of an in-memory pipe the test writes `reply` into.
    async fn reply_of(raw: &'static [u8]) -> Reply {
        let (mut engine, agent) = tokio::io::duplex(1 << 16);
        engine.write_all(raw).await.unwrap();
        drop(engine);
        let mut conn: Conn = BufReader::new(Box::new(agent));
        let (status, headers) = read_head(&mut conn).await.unwrap();
        Reply::new(status, headers, conn, false)
    }

    #[tokio::test]
    async fn bodies_by_length_in_chunks_and_to_the_end() {
        let mut r = reply_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA").await;
        assert_eq!(r.read_all(100).await.unwrap(), b"hello");
        let mut r = reply_of(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-T: 1\r\n\r\n",
        )
        .await;
        assert_eq!(r.read_all(100).await.unwrap(), b"abcdefg");
        assert_eq!(r.framing, Framing::Done);
        let mut r = reply_of(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
        assert_eq!(r.read_all(100).await.unwrap(), b"until the end");
        let mut r = reply_of(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!((r.status, r.read_all(100).await.unwrap()), (204, vec![]));
    }

    #[tokio::test]
    async fn bad_bodies_are_errors_not_hangs() {
        let mut r = reply_of(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort").await;
        assert!(r.read_all(100).await.is_err());
        let mut r = reply_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc").await;
        assert!(r.read_all(100).await.is_err());
        let mut r = reply_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n").await;
        assert!(r.read_all(100).await.is_err(), "a chunk longer than its size");
        let mut r = reply_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789").await;
        assert!(r.read_all(4).await.is_err(), "past the limit");
    }

    #[tokio::test]
    async fn error_statuses_carry_the_engines_message() {
        let r = reply_of(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n{\"message\":\"No such container: x\"}\n",
        )
        .await;
        let e = r.checked().await.err().unwrap();
        assert!(e.is_not_found());
        assert_eq!(e.message(), "No such container: x");
        let r = reply_of(b"HTTP/1.1 500 Oops\r\nContent-Length: 7\r\n\r\nbroken\n").await;
        assert_eq!(r.checked().await.err().unwrap().message(), "broken");
        let r = reply_of(b"HTTP/1.1 304 Not Modified\r\n\r\n").await;
        assert!(r.checked().await.is_ok(), "a start or stop with nothing to do");
    }

    #[tokio::test]
    async fn frames_and_progress_messages() {
        let mut r = reply_of(b"HTTP/1.1 200 OK\r\n\r\n\x01\0\0\0\0\0\0\x03out\x02\0\0\0\0\0\0\x03err").await;
        assert_eq!(r.frame().await.unwrap(), Some((1, b"out".to_vec())));
        assert_eq!(r.frame().await.unwrap(), Some((2, b"err".to_vec())));
        assert_eq!(r.frame().await.unwrap(), None);
        let mut r = reply_of(b"HTTP/1.1 200 OK\r\n\r\nnot a frame").await;
        assert!(r.frame().await.is_err());
        let mut r = reply_of(
            b"HTTP/1.1 200 OK\r\n\r\n{\"stream\":\"Step 1/2\\n\"}\r\n\r\n{\"errorDetail\":{\"message\":\"no\"},\"error\":\"it failed\"}\r\n",
        )
        .await;
        let mut pending = Vec::new();
        assert_eq!(r.message(&mut pending).await.unwrap().and_then(|m| m.stream), Some("Step 1/2\n".into()));
        assert_eq!(r.message(&mut pending).await.err().map(|e| e.message()), Some("it failed".into()));
    }

    /// An engine on a real socket that answers `{"n":K}` to the K-th request on each connection, and
    /// closes every connection after `per_connection` requests.
    async fn engine(
        per_connection: usize,
    ) -> (tempfile::TempDir, Client, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut conn = BufReader::new(stream);
                    for k in 1..=per_connection {
                        let mut head = Vec::new();
                        while !head.ends_with(b"\r\n\r\n") {
                            if conn.read_until(b'\n', &mut head).await.unwrap_or(0) == 0 {
                                return;
                            }
                        }
                        let body = format!("{{\"n\":{k}}}");
                        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        conn.get_mut().write_all(reply.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        let client = Client::new(&format!("unix://{}", socket.display())).unwrap();
        (dir, client, accepted)
    }

    #[derive(serde::Deserialize)]
    struct N {
        n: usize,
    }

    #[tokio::test]
    async fn a_connection_is_kept_for_the_next_call_and_a_closed_one_replaced() {
        let (_dir, client, accepted) = engine(2).await;
        let n = |r: Result<N, EngineError>| r.map(|n| n.n).map_err(|e| e.to_string());
        assert_eq!(n(client.get("/a").await), Ok(1));
        assert_eq!(n(client.get("/b").await), Ok(2), "the same connection");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The engine closed that one after two: the kept connection fails, and the call goes again.
        assert_eq!(n(client.get("/c").await), Ok(1));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error_naming_it() {
        let client = Client::new("unix:///nonexistent/docker.sock").unwrap();
        let err = client.get::<N>("/version").await.err().unwrap();
        assert!(err.to_string().starts_with("cannot connect to unix:///nonexistent/docker.sock: "), "{err}");
    }

    #[test]
    fn queries_are_encoded_and_hosts_checked() {
        assert_eq!(query(&[("name", "^/bai\\.x"), ("t", "a b&c=d")]), "?name=%5E%2Fbai%5C.x&t=a%20b%26c%3Dd");
        assert!(matches!(Client::new("ssh://node").err(), Some(EngineError::Host(_))));
        assert!(Client::new("tcp://127.0.0.1:2375").is_ok());
        assert!(Client::new("unix:///var/run/docker.sock").is_ok());
    }
}
