//! The SSH transport: how the controller reaches a node. A russh client connects with OpenSSH's host-key
//! rules (`known_hosts`, `accept-new` on request, a changed key always refused), authenticates with an
//! identity file or ssh-agent, runs fixed commands, starts the agent as a byte stream ([`AgentStream`]), and
//! installs the agent binary Nix-style under a content address.
//!
//! Security rule of this module: no remote command is ever built from user data. Every command is a fixed
//! string, at most completed with a hex SHA-256 this module computed itself; everything else crosses the
//! channel as bytes (stdin) and never meets a shell.
//!
//! Here: the target, the session and connecting. Beside it: `error` (every failure, with its code),
//! `host_key` (checking inside the handshake), `auth` (identity file or ssh-agent), `jump` (through jump
//! hosts, one shared connection per hop), `exec` (fixed commands, processes, the agent's stream),
//! `install` (the agent binary under its content address).
//!
//! A node behind jump hosts gets the same [`SshSession`] as any: its session runs inside a `direct-tcpip`
//! channel of the last hop instead of a TCP connection, so everything built on a session (the agent's
//! stream, `port-forward`'s channels through [`super::tunnel::Tunnel`]) works through the hops unchanged.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use std::time::SystemTime;

use russh::client::{self, AuthResult, Handle, Msg};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::AgentStream;
use super::exec_stdout::{ExecStdout, signal_text};
pub use super::exit_status::ExitStatus;
use super::known_hosts;

/// Where and how to reach one node.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// The node's name in the lab, for messages.
    pub node: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `None`: the keys of ssh-agent, then `~/.ssh/id_ed25519`, then `~/.ssh/id_rsa` (see [`KeySources`]).
    pub identity: Option<PathBuf>,
    /// An OpenSSH `known_hosts` file (hashed entries and `[host]:port` forms understood).
    pub known_hosts: PathBuf,
    /// Trust and record a host key never seen before, like OpenSSH's `StrictHostKeyChecking=accept-new`.
    /// A changed key is refused regardless.
    pub accept_new_host_keys: bool,
    /// Limit for TCP connect, key exchange and authentication together, every jump host included.
    pub connect_timeout: Duration,
    /// How often an idle connection asks the server whether it is there (`None`: never), and after how
    /// many unanswered asks it is given up: OpenSSH's `ServerAliveInterval` and `ServerAliveCountMax`.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_max: usize,
    /// The jump hosts passed through, first hop first; empty: directly.
    pub jumps: Vec<Hop>,
    /// The agent crosses compressed (ssh_config's `Compression yes`); else as it is, as OpenSSH sends
    /// everything unless told otherwise (see [`install`] for why that is the default).
    pub compression: bool,
}

impl SshTarget {
    /// bai's keepalive when ssh_config says nothing: a dead connection is noticed within a minute.
    pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
    pub const KEEPALIVE_MAX: usize = 3;
}

/// One jump host on the way to a node.
#[derive(Clone, Debug)]
pub struct Hop {
    /// The hop as the lab or ssh_config wrote it (`login.lab`, `bai@gw:2222`), for messages.
    pub name: String,
    /// How to log in to it: its host, port, user, keys and known_hosts (its `jumps` are empty: the hops
    /// before it are the ones before it in [`SshTarget::jumps`]).
    pub target: SshTarget,
}

mod auth;
mod compressed;
mod error;
mod exec;
mod flow;
mod host_key;
mod install;
mod jump;

pub use auth::*;
pub use error::*;
pub use exec::*;
use host_key::*;
pub use install::*;

/// One authenticated SSH connection to a node. Channels open concurrently on it (`&self`).
pub struct SshSession {
    handle: Arc<Connection>,
    node: String,
    host: String,
    port: u16,
    /// [`SshTarget::compression`].
    compression: bool,
}

/// An authenticated connection, and the jump host's connection it runs inside (none when it was made
/// directly): held so that the hops under a connection live as long as it does, whatever the cache of
/// [`jump`] does meanwhile.
struct Connection {
    handle: Handle<Client>,
    windows: Arc<flow::Windows>,
    _via: Option<Arc<Connection>>,
}

impl std::ops::Deref for Connection {
    type Target = Handle<Client>;
    fn deref(&self) -> &Handle<Client> {
        &self.handle
    }
}

/// russh's own list with AES-256-GCM moved ahead of ChaCha20-Poly1305.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

fn client_config(target: &SshTarget) -> client::Config {
    client::Config {
        // TCP_NODELAY is set by `open_stream` (russh's `nodelay` applies only when russh connects itself).
        keepalive_interval: target.keepalive_interval,
        keepalive_max: target.keepalive_max,
        // AES-GCM first: with AES-NI it seals a small packet (a ping, its answer) for less than ring's
        // ChaCha20-Poly1305, whose software path showed in the watcher's profile; both are AEADs OpenSSH
        // offers by default (BENCHMARKS.md has the A/B, within the run-to-run noise).
        preferred: russh::Preferred { cipher: std::borrow::Cow::Borrowed(CIPHERS), ..russh::Preferred::default() },
        // russh's default key-exchange order is kept on purpose: it starts with mlkem768x25519 (cheap, and
        // post-quantum where the server has it) then curve25519; it has no sntrup761, the one expensive
        // exchange OpenSSH's own client prefers. OpenSSH 9.2 thus settles on curve25519.
        ..client::Config::default()
    }
}

/// Opens and authenticates a connection, through the target's jump hosts if it has any; the whole of it
/// bounded by `target.connect_timeout`. Without an identity file, keys come from [`KeySources::from_env`].
pub async fn connect(target: &SshTarget) -> Result<SshSession, SshError> {
    connect_with(target, &KeySources::from_env()).await
}

/// [`connect`] with the key sources given rather than read from the environment.
pub async fn connect_with(target: &SshTarget, keys: &KeySources) -> Result<SshSession, SshError> {
    // Read an explicit identity before touching the network: a typo in its path is the user's to fix.
    let explicit = match &target.identity {
        Some(path) => Some((path.as_path(), load_identity(target, path)?)),
        None => None,
    };
    // Which hop the chain has reached, to say where the time went when it runs out.
    let reached = Mutex::new(None);
    let attempt = async {
        if target.jumps.is_empty() {
            let stream = open_stream(target).await.map_err(|e| connect_error(target, e))?;
            let (handle, windows) = handshake(target, stream, explicit, keys).await?;
            Ok(Connection { handle, windows, _via: None })
        } else {
            let (stream, via) = jump::channel_to(target, keys, &reached).await?;
            let (handle, windows) = handshake(target, stream, explicit, keys).await?;
            Ok(Connection { handle, windows, _via: Some(via) })
        }
    };
    let connection = match tokio::time::timeout(target.connect_timeout, attempt).await {
        Ok(result) => result?,
        Err(_) => {
            let seconds = target.connect_timeout.as_secs_f64();
            let hop = reached.lock().unwrap_or_else(PoisonError::into_inner).and_then(|i| target.jumps.get(i));
            return Err(match hop {
                Some(hop) => jump::timeout(target, hop, seconds),
                None => SshError::ConnectTimeout {
                    node: target.node.clone(),
                    host: target.host.clone(),
                    port: target.port,
                    seconds,
                },
            });
        }
    };
    Ok(SshSession {
        handle: Arc::new(connection),
        node: target.node.clone(),
        host: target.host.clone(),
        port: target.port,
        compression: target.compression,
    })
}

/// The SSH handshake over `stream` (a TCP connection, or a channel through a jump host): host key checked
/// against `target`'s known_hosts under its own `[host]:port`, then authentication.
async fn handshake<S>(
    target: &SshTarget,
    stream: S,
    explicit: Option<(&Path, PrivateKey)>,
    keys: &KeySources,
) -> Result<(Handle<Client>, Arc<flow::Windows>), SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let verdict = Arc::new(Mutex::new(None));
    let handler = Client {
        host: target.host.clone(),
        port: target.port,
        known_hosts: target.known_hosts.clone(),
        accept_new: target.accept_new_host_keys,
        verdict: Arc::clone(&verdict),
        windows: Arc::default(),
    };
    let windows = Arc::clone(&handler.windows);
    let mut handle =
        client::connect_stream(Arc::new(client_config(target)), stream, handler).await.map_err(|source| {
            let verdict = verdict.lock().unwrap_or_else(PoisonError::into_inner).take();
            host_key_error(target, verdict).unwrap_or_else(|| connect_error(target, source))
        })?;
    authenticate(&mut handle, target, explicit, keys).await?;
    Ok((handle, windows))
}

fn connect_error(target: &SshTarget, source: russh::Error) -> SshError {
    SshError::Connect {
        node: target.node.clone(),
        host: target.host.clone(),
        port: target.port,
        source: Box::new(source),
    }
}

/// How much of the server's output one read takes in: a whole packet or several, where russh alone reads
/// a packet's length and its body separately and then once more to learn there is nothing left.
const READ_BUFFER: usize = 4 * 1024;

/// The TCP connection under an SSH session, reads through [`READ_BUFFER`], and TCP_NODELAY: without it
/// every request/response on a warm connection waits ~40 ms for delayed ACKs.
async fn open_stream(target: &SshTarget) -> Result<BufReader<TcpStream>, russh::Error> {
    let socket = TcpStream::connect((target.host.as_str(), target.port)).await?;
    socket.set_nodelay(true)?;
    Ok(BufReader::with_capacity(READ_BUFFER, socket))
}

impl SshSession {
    pub fn node(&self) -> &str {
        &self.node
    }

    async fn open(&self, command: &str) -> Result<russh::Channel<Msg>, SshError> {
        let channel = self.handle.channel_open_session().await.map_err(|e| self.session_error(e))?;
        channel.exec(true, command).await.map_err(|e| self.session_error(e))?;
        Ok(channel)
    }

    fn session_error(&self, source: russh::Error) -> SshError {
        SshError::Session {
            node: self.node.clone(),
            host: self.host.clone(),
            port: self.port,
            source: Box::new(source),
        }
    }
    /// A `direct-tcpip` channel: the node's sshd connects to `host:port` and carries the bytes, as for
    /// `ssh -L`. Refused (`ConnectionRefused`) with sshd's reason when it cannot connect there or does not
    /// allow forwarding.
    pub async fn forward(&self, host: &str, port: u16) -> std::io::Result<russh::ChannelStream<Msg>> {
        match self.handle.channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0).await {
            Ok(channel) => Ok(channel.into_stream()),
            Err(russh::Error::ChannelOpenFailure(reason)) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("the node's sshd could not open a connection to {host}:{port} ({reason:?})"),
            )),
            Err(e) => Err(std::io::Error::other(format!("node `{}`: {e}", self.node))),
        }
    }

    /// Ends the connection politely; channels still open on it end too.
    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

impl super::tunnel::Tunnel for SshSession {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> super::tunnel::Connecting<'a> {
        Box::pin(async move { Ok(Box::new(self.forward(host, port).await?) as Box<dyn super::tunnel::Duplex>) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/home/me/.local/share/bai/agent/ab12/bai"), "/home/me/.local/share/bai/agent/ab12/bai");
        assert_eq!(shell_word("/home/my user/bai"), "'/home/my user/bai'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("$HOME`x`"), "'$HOME`x`'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn sessions_cross_tasks() {
        // The executor and the probe share sessions between tasks.
        fn shareable<T: Send + Sync>() {}
        shareable::<SshSession>();
        shareable::<RemoteStatus>();
        shareable::<SshError>();
    }

    #[test]
    fn known_hosts_lines_count_comments() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, "# one\nhost-a ssh-ed25519 AAAA\n# three\n\nhost-e ssh-ed25519 AAAA\n").expect("write");
        assert_eq!(file_line(&path, 1), 2);
        assert_eq!(file_line(&path, 3), 5);
        assert_eq!(file_line(&dir.path().join("absent"), 3), 3);
    }

    #[test]
    fn arch_names_agree() {
        assert_eq!(normalize_arch("arm64"), normalize_arch("aarch64"));
        assert_eq!(normalize_arch("amd64"), normalize_arch("x86_64"));
        assert_ne!(normalize_arch("x86_64"), normalize_arch("aarch64"));
    }

    #[test]
    fn elf_header_names_the_machine() {
        let mut header = [0u8; 20];
        header[..4].copy_from_slice(b"\x7fELF");
        header[5] = 1;
        header[18] = 0xb7;
        assert_eq!(elf_arch(&header), Some("aarch64"));
        header[18] = 0x3e;
        assert_eq!(elf_arch(&header), Some("x86_64"));
        assert_eq!(elf_arch(b"#!/bin/sh\n"), None);
    }
}
