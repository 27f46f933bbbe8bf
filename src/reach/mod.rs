//! Reaching what runs: a session's log, a command in it, its ports and its files, for `bai logs`, `exec`,
//! `port-forward` and `cp`. The session is found in the lab (its node and cluster from the file, never
//! from a node), its node's agent is reached the way every command reaches it (no apply lease: nothing
//! here changes what bai owns), and the agent connection is given over to a stream of frames
//! ([`crate::frame`]); a port is reached through the node's SSH connection ([`crate::transport::tunnel`]).
//!
//! Beside it: `copy` (tarballs out of and into a session, extracted so that nothing a session planted
//! writes outside the destination), `forward` (listening here and carrying connections to a session).

pub mod copy;
pub mod forward;

use crate::failure::Failure;
use crate::fleet::{ConnectOptions, NodeConn};
use crate::frame::{self, Frame, FrameError, Kind};
use crate::model::{Cluster, Config, Node, Session};
use crate::protocol::{Method, SessionHealth, SessionHealthReply, Stream, StreamCall};
use crate::transport::client::FrameStream;
use tokio::io::AsyncWriteExt;

/// A session of the lab and where it runs.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub cluster: &'a Cluster,
    pub node: &'a Node,
    pub session: &'a Session,
}

impl<'a> Target<'a> {
    pub fn cluster_name(&self) -> &'a str {
        self.cluster.name.value.as_str()
    }

    pub fn node_name(&self) -> &'a str {
        self.node.name.value.as_str()
    }

    pub fn session_name(&self) -> &'a str {
        self.session.name.value.as_str()
    }
}

/// Every session of `config` (its clusters as `--cluster` left them) with its cluster and node, in file
/// order. Validation refuses a session on an unknown node before any command gets here; such a session
/// would be left out.
pub fn all(config: &Config) -> Vec<Target<'_>> {
    config
        .clusters
        .iter()
        .flat_map(|cluster| {
            cluster.sessions.iter().filter_map(move |session| {
                let node = cluster.nodes.iter().find(|n| n.name.value == session.node.value)?;
                Some(Target { cluster, node, session })
            })
        })
        .collect()
}

/// The session named `name` in `config` (its clusters as `--cluster` left them), or why there is none: an
/// unknown name (with the nearest one), or a name several clusters use (`--cluster` settles it).
pub fn find<'a>(config: &'a Config, name: &str) -> Result<Target<'a>, Failure> {
    let targets = all(config);
    let matching: Vec<&Target<'a>> = targets.iter().filter(|t| t.session_name() == name).collect();
    match matching.as_slice() {
        [] => {
            let help = crate::suggest::help_for(name, targets.iter().map(|t| t.session_name()), "sessions");
            Err(Failure::error("bai::reach::unknown_session", format!("the lab has no session `{name}`"))
                .help_opt(help.or_else(|| Some("`bai status FILE` lists the lab's sessions".into()))))
        }
        [target] => Ok(**target),
        several => {
            let clusters: Vec<&str> = several.iter().map(|t| t.cluster_name()).collect();
            Err(Failure::error(
                "bai::reach::ambiguous_session",
                format!("session `{name}` is in several clusters: {}", clusters.join(", ")),
            )
            .help(format!("name one with `--cluster {}`", clusters[0])))
        }
    }
}

/// Reaches the agent on the target's node, without the apply lease.
pub async fn connect(target: &Target<'_>, options: &ConnectOptions) -> Result<NodeConn, Failure> {
    crate::fleet::open(target.cluster, target.node, options, false).await.map_err(|f| f.failure())
}

/// A failure of the agent connection while reaching a session, naming node and session.
fn agent_failure(target: &Target<'_>, doing: &str, e: &dyn miette::Diagnostic) -> Failure {
    let f = Failure::of(e);
    let message = format!(
        "node `{}`: {doing} session `{}` failed: {}",
        target.node_name(),
        target.session_name(),
        crate::untrusted::excerpt(&f.message, crate::untrusted::MAX_TEXT)
    );
    let help = match f.code.as_str() {
        "bai::reach::no_container" => Some("`bai apply FILE` creates it".to_string()),
        "bai::reach::not_running" => Some(format!(
            "`bai logs FILE {}` shows why it stopped; `bai apply FILE` starts it again",
            target.session_name()
        )),
        _ => f.help,
    };
    Failure { message, help, ..f }
}

/// Starts a stream call on the session; the connection is the stream's from then on.
pub async fn open_stream(target: &Target<'_>, conn: NodeConn, stream: Stream) -> Result<Frames, Failure> {
    let doing = match &stream {
        Stream::Logs(_) => "reading the log of",
        Stream::Exec(_) => "running a command in",
        Stream::CopyOut { .. } => "copying out of",
        Stream::CopyIn { .. } => "copying into",
    };
    // A stream that should keep moving gets a deadline for each frame: a log read to its end by the
    // `observe` one, a copy by the `change` one. A followed log or a command may be quiet for as long as
    // it likes: the person at the terminal decides when to stop it.
    let deadlines = conn.client.deadlines();
    let idle = match &stream {
        Stream::Logs(l) if !l.follow => Some(deadlines.observe),
        Stream::CopyOut { .. } | Stream::CopyIn { .. } => Some(deadlines.change),
        Stream::Logs(_) | Stream::Exec(_) => None,
    };
    let call =
        StreamCall { cluster: target.cluster_name().to_string(), session: target.session_name().to_string(), stream };
    let inner = conn.client.open_stream(call).await.map_err(|e| agent_failure(target, doing, &e))?;
    Ok(Frames { inner, node: target.node_name().to_string(), doing, idle })
}

/// Where the session's container is and how it is: the agent's `session_health`.
pub async fn locate(target: &Target<'_>, conn: &mut NodeConn) -> Result<SessionHealthReply, Failure> {
    let method = Method::SessionHealth(SessionHealth {
        cluster: target.cluster_name().into(),
        name: target.session_name().into(),
    });
    let mut reply: SessionHealthReply =
        conn.client.call(method).await.map_err(|e| agent_failure(target, "locating", &e))?;
    crate::untrusted::clean(&mut reply.state);
    Ok(reply)
}

/// The frames of a stream call from the controller's side.
pub struct Frames {
    inner: FrameStream,
    node: String,
    doing: &'static str,
    /// How long the node may send nothing before the stream is given up.
    idle: Option<std::time::Duration>,
}

impl Frames {
    /// The next frame from the node; `None` when it closed the connection between frames. An `Error`
    /// frame becomes the failure it tells (its text escaped).
    pub async fn next(&mut self) -> Result<Option<Frame>, Failure> {
        let read = frame::read(&mut self.inner.reader);
        let read = match self.idle {
            Some(idle) => match tokio::time::timeout(idle, read).await {
                Ok(read) => read,
                Err(_) => {
                    return Err(Failure::error(
                        "bai::reach::stream_stalled",
                        format!(
                            "node `{}`: nothing came for {}: the stream was given up",
                            self.node,
                            crate::config::value::format_duration(idle)
                        ),
                    )
                    .help("the node or its Docker engine stopped answering; look at the node, or raise `timeouts`"));
                }
            },
            None => read.await,
        };
        match read {
            Ok(Some(f)) if f.kind == Kind::Error => {
                let text = String::from_utf8_lossy(&f.payload);
                Err(Failure::error(
                    "bai::reach::stream_failed",
                    format!(
                        "node `{}`: {} the session failed: {}",
                        self.node,
                        self.doing.trim_end_matches(" of").trim_end_matches(" in").trim_end_matches(" into"),
                        crate::untrusted::excerpt(&text, crate::untrusted::MAX_TEXT)
                    ),
                ))
            }
            Ok(frame) => Ok(frame),
            Err(e) => Err(self.broken(&e)),
        }
    }

    fn broken(&self, e: &FrameError) -> Failure {
        Failure::error("bai::reach::stream_broken", format!("node `{}`: the stream broke off: {e}", self.node))
            .help("the connection to the node dropped, or its agent stopped; run the command again")
    }

    /// Sends one frame to the node.
    pub async fn send(&mut self, kind: Kind, payload: &[u8]) -> Result<(), Failure> {
        frame::write(&mut self.inner.writer, kind, payload).await.map_err(|e| self.broken(&FrameError::Io(e)))
    }

    /// Splits the stream so that input and output can run side by side.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        let FrameStream { reader, writer, keepalive } = self.inner;
        let reader = Frames {
            inner: FrameStream { reader, writer: Box::new(tokio::io::sink()), keepalive },
            node: self.node.clone(),
            doing: self.doing,
            idle: self.idle,
        };
        (FrameReader(reader), FrameWriter { writer, node: self.node })
    }
}

/// The reading half of a split [`Frames`]; it keeps the connection open.
pub struct FrameReader(Frames);

impl FrameReader {
    pub async fn next(&mut self) -> Result<Option<Frame>, Failure> {
        self.0.next().await
    }
}

/// The writing half of a split [`Frames`].
pub struct FrameWriter {
    writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    node: String,
}

impl FrameWriter {
    pub async fn send(&mut self, kind: Kind, payload: &[u8]) -> Result<(), Failure> {
        frame::write(&mut self.writer, kind, payload).await.map_err(|e| {
            Failure::error("bai::reach::stream_broken", format!("node `{}`: the stream broke off: {e}", self.node))
        })
    }

    /// Closes the direction to the node.
    pub async fn close(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// The port `asked` names on the session: a number, or the name of one of its `port` declarations.
pub fn port_of(target: &Target<'_>, asked: &str) -> Result<u16, Failure> {
    if let Ok(port) = asked.parse::<u16>() {
        if port == 0 {
            return Err(Failure::error("bai::reach::no_port", "port 0 is not a port to connect to"));
        }
        return Ok(port);
    }
    let ports = &target.session.ports;
    ports.iter().find(|p| p.name.value == asked).map(|p| p.port.value).ok_or_else(|| {
        let help = crate::suggest::help_for(asked, ports.iter().map(|p| p.name.value.as_str()), "ports")
            .or_else(|| Some("give a port number, or declare it with `port NAME=PORT` in the session".into()));
        Failure::error("bai::reach::no_port", format!("session `{}` declares no port `{asked}`", target.session_name()))
            .help_opt(help)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Config {
        let text = r#"
cluster "a" {
    node "n1" local=#true
    image "img" ref="busybox:1"
    session "web-server" image="img" node="n1" {
        port http=8080
        port metrics=9100
    }
    session "shared" image="img" node="n1"
}
cluster "b" {
    node "n2" local=#true
    image "img" ref="busybox:1"
    session "shared" image="img" node="n2"
}
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.kdl");
        std::fs::write(&path, text).unwrap();
        let loaded = crate::config::load(&path);
        assert!(loaded.problems.iter().all(|p| !p.is_error()), "{:?}", loaded.problems);
        loaded.config
    }

    #[test]
    fn sessions_are_found_with_their_node_or_refused_with_a_suggestion() {
        let config = lab();
        let target = find(&config, "web-server").map_err(|f| f.message).unwrap();
        assert_eq!((target.cluster_name(), target.node_name()), ("a", "n1"));
        let unknown = find(&config, "web-servr").err().unwrap();
        assert_eq!(unknown.code, "bai::reach::unknown_session");
        assert_eq!(unknown.help.as_deref(), Some("did you mean `web-server`?"));
        let ambiguous = find(&config, "shared").err().unwrap();
        assert_eq!(ambiguous.code, "bai::reach::ambiguous_session");
        assert!(ambiguous.message.contains("a, b"), "{}", ambiguous.message);
        // Every session, each with its own cluster and node: a name two clusters share is there twice.
        let every: Vec<(&str, &str, &str)> =
            all(&config).iter().map(|t| (t.cluster_name(), t.node_name(), t.session_name())).collect();
        assert_eq!(every, [("a", "n1", "web-server"), ("a", "n1", "shared"), ("b", "n2", "shared")]);
    }

    #[tokio::test]
    async fn a_stream_that_should_move_is_given_up_when_the_node_goes_quiet() {
        let (_node, controller) = tokio::io::duplex(64);
        let (reader, writer) = tokio::io::split(controller);
        let inner = FrameStream {
            reader: tokio::io::BufReader::new(Box::new(reader)),
            writer: Box::new(writer),
            keepalive: Box::new(()),
        };
        let idle = Some(std::time::Duration::from_millis(20));
        let mut frames = Frames { inner, node: "n".into(), doing: "copying out of", idle };
        let stalled = frames.next().await.err().map(|f| f.code);
        assert_eq!(stalled.as_deref(), Some("bai::reach::stream_stalled"));
    }

    #[tokio::test]
    async fn an_error_frame_from_the_node_is_escaped() {
        let (mut node, controller) = tokio::io::duplex(1024);
        let (reader, writer) = tokio::io::split(controller);
        let inner = FrameStream {
            reader: tokio::io::BufReader::new(Box::new(reader)),
            writer: Box::new(writer),
            keepalive: Box::new(()),
        };
        let mut frames = Frames { inner, node: "n".into(), doing: "reading the log of", idle: None };
        frame::write(&mut node, Kind::Error, b"bad\x1b[31m news\nok").await.unwrap();
        let failure = frames.next().await.err().unwrap();
        assert_eq!(failure.code, "bai::reach::stream_failed");
        assert!(failure.message.contains("bad\\u{1b}[31m news\\nok"), "{}", failure.message);
    }

    #[test]
    fn ports_are_numbers_or_declared_names() {
        let config = lab();
        let target = find(&config, "web-server").map_err(|f| f.message).unwrap();
        assert_eq!(port_of(&target, "http").map_err(|f| f.message), Ok(8080));
        assert_eq!(port_of(&target, "3000").map_err(|f| f.message), Ok(3000));
        let missing = port_of(&target, "metric").err().unwrap();
        assert_eq!(missing.code, "bai::reach::no_port");
        assert_eq!(missing.help.as_deref(), Some("did you mean `metrics`?"));
        assert!(port_of(&target, "0").is_err());
    }
}
