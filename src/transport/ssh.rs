//! The SSH transport: how the controller reaches a node. A russh client connects with OpenSSH's host-key
//! rules (`known_hosts`, `accept-new` on request, a changed key always refused), authenticates with an
//! identity file or ssh-agent, runs fixed commands, starts the agent as a byte stream ([`AgentStream`]), and
//! installs the agent binary Nix-style under a content address.
//!
//! Security rule of this module: no remote command is ever built from user data. Every command is a fixed
//! string, at most completed with a hex SHA-256 this module computed itself; everything else crosses the
//! channel as bytes (stdin) and never meets a shell.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use std::time::SystemTime;

use futures_util::TryFutureExt;
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
    /// Limit for TCP connect, key exchange and authentication together.
    pub connect_timeout: Duration,
}

/// `host:port` as messages show it, bracketing IPv6 addresses.
fn at(host: &str, port: &u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Everything that can go wrong between the controller and a node. Every message names the node and its
/// address.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SshError {
    #[error("node `{node}` ({}): unknown host key {fingerprint}", at(.host, .port))]
    #[diagnostic(
        code(bai::ssh::unknown_host_key),
        help(
            "verify it, then run again with --accept-new-host-keys (or add it with `ssh-keyscan -p {port} {host} >> {known_hosts}`)"
        )
    )]
    UnknownHostKey { node: String, host: String, port: u16, fingerprint: String, known_hosts: String },

    #[error("node `{node}` ({}): the host key changed: the server now presents {fingerprint}", at(.host, .port))]
    #[diagnostic(
        code(bai::ssh::host_key_changed),
        help(
            "{known_hosts} line {line} holds another key for this host: someone may be intercepting the connection, or the node was reinstalled. A changed key is never accepted automatically: verify the new key, then remove line {line}"
        )
    )]
    HostKeyChanged { node: String, host: String, port: u16, fingerprint: String, known_hosts: String, line: usize },

    #[error("node `{node}` ({}): the host key {fingerprint} is revoked", at(.host, .port))]
    #[diagnostic(
        code(bai::ssh::host_key_revoked),
        help(
            "{known_hosts} line {line} marks this key `@revoked`: its private key is known to be compromised, so it is never accepted, whatever other lines say. Give the node a new host key and trust that one"
        )
    )]
    HostKeyRevoked { node: String, host: String, port: u16, fingerprint: String, known_hosts: String, line: usize },

    #[error("node `{node}` ({}): cannot use known_hosts file {known_hosts}: {reason}", at(.host, .port))]
    #[diagnostic(
        code(bai::ssh::known_hosts),
        help("fix or remove the malformed entry, or check the file's permissions")
    )]
    KnownHosts { node: String, host: String, port: u16, known_hosts: String, reason: String },

    #[error("node `{node}` ({}): no SSH session within {seconds}s", at(.host, .port))]
    #[diagnostic(
        code(bai::ssh::connect_timeout),
        help("check that the node is up and that sshd listens on port {port}")
    )]
    ConnectTimeout { node: String, host: String, port: u16, seconds: f64 },

    #[error("node `{node}` ({}): cannot connect", at(.host, .port))]
    #[diagnostic(code(bai::ssh::connect), help("check the node's address and port, and that sshd runs there"))]
    Connect {
        node: String,
        host: String,
        port: u16,
        #[source]
        source: Box<russh::Error>,
    },

    #[error("node `{node}` ({}): user `{user}` was refused ({})", at(.host, .port), tried_list(.tried))]
    #[diagnostic(
        code(bai::ssh::auth_failed),
        help(
            "add the public key to the authorized_keys of `{user}` on the node, name the right key as the node's identity, or load it into ssh-agent"
        )
    )]
    AuthFailed { node: String, host: String, port: u16, user: String, tried: Vec<String> },

    #[error(
        "node `{node}` ({}): identity file {path} is encrypted and there is no terminal to ask its passphrase",
        at(.host, .port)
    )]
    #[diagnostic(
        code(bai::ssh::encrypted_key),
        help("load it into ssh-agent first (`ssh-add {path}`): bai uses the agent's keys")
    )]
    EncryptedKey { node: String, host: String, port: u16, path: String },

    #[error("node `{node}` ({}): cannot read identity file {path}: {reason}", at(.host, .port))]
    #[diagnostic(code(bai::ssh::identity), help("check the path, or leave it out to use ssh-agent and ~/.ssh/id_*"))]
    Identity { node: String, host: String, port: u16, path: String, reason: String },

    #[error("node `{node}` ({}) runs on {remote}, but the agent binary is built for {local}", at(.host, .port))]
    #[diagnostic(
        code(bai::ssh::arch_mismatch),
        help("build bai for {remote} and name it in the node's config: agent binary=\"…\"")
    )]
    ArchMismatch { node: String, host: String, port: u16, local: String, remote: String },

    #[error("node `{node}` ({}): `{command}` failed ({status}){}", at(.host, .port), stderr_suffix(.stderr))]
    #[diagnostic(code(bai::ssh::remote))]
    Remote { node: String, host: String, port: u16, command: String, status: String, stderr: String },

    #[error("node `{node}` ({}): the SSH session failed", at(.host, .port))]
    #[diagnostic(code(bai::ssh::session), help("the connection may have dropped; run again"))]
    Session {
        node: String,
        host: String,
        port: u16,
        #[source]
        source: Box<russh::Error>,
    },

    #[error("node `{node}` ({}): {what}", at(.host, .port))]
    #[diagnostic(code(bai::ssh::io))]
    Io {
        node: String,
        host: String,
        port: u16,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn tried_list(tried: &[String]) -> String {
    if tried.is_empty() { "no key to offer".to_owned() } else { format!("tried {}", tried.join(", ")) }
}

/// The node's stderr as the end of a message: escaped and cut short, since the node wrote it.
fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() { String::new() } else { format!(": {}", crate::untrusted::excerpt(stderr, 2048)) }
}

/// What a finished remote command left behind.
#[derive(Clone, Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// The host-key decision taken inside the handshake, kept so that [`connect`] can say precisely why it
/// refused: russh itself only reports "unknown key".
#[derive(Debug)]
enum HostKeyVerdict {
    Known,
    Learned,
    Unknown { fingerprint: String },
    Changed { fingerprint: String, line: usize },
    Revoked { fingerprint: String, line: usize },
    Certificate,
    Unreadable { reason: String },
}

/// The russh handler: verifies the server's host key against `known_hosts`.
struct Client {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_new: bool,
    verdict: Arc<Mutex<Option<HostKeyVerdict>>>,
}

impl Client {
    fn decide(&self, key: &PublicKey) -> HostKeyVerdict {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        // `@revoked` first: it wins over a line that lists the key, and a revoked key is never learnt.
        // russh's check skips those lines (see `known_hosts`).
        let text = match std::fs::read_to_string(&self.known_hosts) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return HostKeyVerdict::Unreadable { reason: e.to_string() },
        };
        let blob = key.to_openssh().ok().and_then(|k| k.split_whitespace().nth(1).map(str::to_string));
        if let Some(line) = blob.and_then(|b| known_hosts::revoked_line(&text, &self.host, self.port, &b)) {
            return HostKeyVerdict::Revoked { fingerprint, line };
        }
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => HostKeyVerdict::Known,
            Ok(false) if self.accept_new => {
                match russh::keys::known_hosts::learn_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
                    Ok(()) => HostKeyVerdict::Learned,
                    Err(e) => HostKeyVerdict::Unreadable { reason: format!("cannot record the new key: {e}") },
                }
            }
            Ok(false) => HostKeyVerdict::Unknown { fingerprint },
            Err(russh::keys::Error::KeyChanged { line }) => {
                HostKeyVerdict::Changed { fingerprint, line: file_line(&self.known_hosts, line) }
            }
            Err(e) => HostKeyVerdict::Unreadable { reason: e.to_string() },
        }
    }
}

/// The line of `path` that russh calls `line`: russh skips `#` comment lines when it counts, a person
/// removing the line counts every line.
fn file_line(path: &Path, line: usize) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else { return line };
    text.split('\n')
        .enumerate()
        .filter(|(_, content)| !content.starts_with('#'))
        .nth(line.saturating_sub(1))
        .map_or(line, |(index, _)| index + 1)
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server_public_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let verdict = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.decide(key),
            // We never advertise certificate algorithms, so a certificate here is a misbehaving server.
            PublicKeyOrCertificate::Certificate(_) => HostKeyVerdict::Certificate,
        };
        let accept = matches!(verdict, HostKeyVerdict::Known | HostKeyVerdict::Learned);
        *self.verdict.lock().unwrap_or_else(PoisonError::into_inner) = Some(verdict);
        Ok(accept)
    }
}

/// One authenticated SSH connection to a node. Channels open concurrently on it (`&self`).
pub struct SshSession {
    handle: Arc<Handle<Client>>,
    node: String,
    host: String,
    port: u16,
}

/// russh's own list with AES-256-GCM moved ahead of ChaCha20-Poly1305.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

fn client_config() -> client::Config {
    client::Config {
        // TCP_NODELAY is set by `open_stream` (russh's `nodelay` applies only when russh connects itself).
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
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

/// Where keys come from when a target names no identity file: what OpenSSH reads from its environment.
#[derive(Clone, Debug, Default)]
pub struct KeySources {
    /// ssh-agent's socket (`SSH_AUTH_SOCK`).
    pub agent_socket: Option<PathBuf>,
    /// The home holding `.ssh/id_ed25519` and `.ssh/id_rsa`.
    pub home: Option<PathBuf>,
}

impl KeySources {
    /// `SSH_AUTH_SOCK` and `HOME`, as a command line tool finds them.
    pub fn from_env() -> KeySources {
        KeySources {
            agent_socket: std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()).map(PathBuf::from),
            home: std::env::var_os("HOME").filter(|s| !s.is_empty()).map(PathBuf::from),
        }
    }
}

/// Opens and authenticates a connection; the whole of it bounded by `target.connect_timeout`. Without an
/// identity file, keys come from [`KeySources::from_env`].
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
    let verdict = Arc::new(Mutex::new(None));
    let handler = Client {
        host: target.host.clone(),
        port: target.port,
        known_hosts: target.known_hosts.clone(),
        accept_new: target.accept_new_host_keys,
        verdict: Arc::clone(&verdict),
    };
    let attempt = async {
        let mut handle = open_stream(target)
            .and_then(|stream| client::connect_stream(Arc::new(client_config()), stream, handler))
            .await
            .map_err(|source| {
                let verdict = verdict.lock().unwrap_or_else(PoisonError::into_inner).take();
                host_key_error(target, verdict).unwrap_or_else(|| SshError::Connect {
                    node: target.node.clone(),
                    host: target.host.clone(),
                    port: target.port,
                    source: Box::new(source),
                })
            })?;
        authenticate(&mut handle, target, explicit, keys).await?;
        Ok(handle)
    };
    let handle = match tokio::time::timeout(target.connect_timeout, attempt).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(SshError::ConnectTimeout {
                node: target.node.clone(),
                host: target.host.clone(),
                port: target.port,
                seconds: target.connect_timeout.as_secs_f64(),
            });
        }
    };
    Ok(SshSession { handle: Arc::new(handle), node: target.node.clone(), host: target.host.clone(), port: target.port })
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

/// The precise error for a refused host key, or `None` when the handshake failed for another reason.
fn host_key_error(target: &SshTarget, verdict: Option<HostKeyVerdict>) -> Option<SshError> {
    let node = target.node.clone();
    let known_hosts = target.known_hosts.display().to_string();
    Some(match verdict? {
        HostKeyVerdict::Known | HostKeyVerdict::Learned => return None,
        HostKeyVerdict::Unknown { fingerprint } => {
            SshError::UnknownHostKey { node, host: target.host.clone(), port: target.port, fingerprint, known_hosts }
        }
        HostKeyVerdict::Changed { fingerprint, line } => SshError::HostKeyChanged {
            node,
            host: target.host.clone(),
            port: target.port,
            fingerprint,
            known_hosts,
            line,
        },
        HostKeyVerdict::Revoked { fingerprint, line } => SshError::HostKeyRevoked {
            node,
            host: target.host.clone(),
            port: target.port,
            fingerprint,
            known_hosts,
            line,
        },
        HostKeyVerdict::Certificate => SshError::KnownHosts {
            node,
            host: target.host.clone(),
            port: target.port,
            known_hosts,
            reason: "the server presented a host certificate, which bai does not verify".to_owned(),
        },
        HostKeyVerdict::Unreadable { reason } => {
            SshError::KnownHosts { node, host: target.host.clone(), port: target.port, known_hosts, reason }
        }
    })
}

fn load_identity(target: &SshTarget, path: &Path) -> Result<PrivateKey, SshError> {
    russh::keys::load_secret_key(path, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => SshError::EncryptedKey {
            node: target.node.clone(),
            host: target.host.clone(),
            port: target.port,
            path: path.display().to_string(),
        },
        russh::keys::Error::IO(io) => SshError::Identity {
            node: target.node.clone(),
            host: target.host.clone(),
            port: target.port,
            path: path.display().to_string(),
            reason: io.to_string(),
        },
        other => SshError::Identity {
            node: target.node.clone(),
            host: target.host.clone(),
            port: target.port,
            path: path.display().to_string(),
            reason: format!("not a usable private key: {other}"),
        },
    })
}

/// Tries the explicit identity alone when there is one; otherwise ssh-agent's keys, then the default key
/// files, like OpenSSH without `-i`.
async fn authenticate(
    handle: &mut Handle<Client>,
    target: &SshTarget,
    explicit: Option<(&Path, PrivateKey)>,
    keys: &KeySources,
) -> Result<(), SshError> {
    let session_error = |source: russh::Error| SshError::Session {
        node: target.node.clone(),
        host: target.host.clone(),
        port: target.port,
        source: Box::new(source),
    };
    let mut tried = Vec::new();
    if let Some((path, key)) = explicit {
        if try_key(handle, &target.user, key).await.map_err(session_error)? {
            return Ok(());
        }
        tried.push(format!("key {}", path.display()));
        return Err(auth_failed(target, tried));
    }

    if let Some(socket) = &keys.agent_socket {
        match AgentClient::connect_uds(socket).await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(identities) => {
                    for identity in identities {
                        let AgentIdentity::PublicKey { key, comment } = identity else { continue };
                        let hash = if key.algorithm().is_rsa() { rsa_hash(handle).await } else { None };
                        let result = handle.authenticate_publickey_with(&target.user, key, hash, &mut agent).await;
                        // An agent that declines to sign is a refusal of that key, not of the session.
                        if matches!(result, Ok(AuthResult::Success)) {
                            return Ok(());
                        }
                        tried.push(format!(
                            "ssh-agent key {}",
                            if comment.is_empty() { "(no comment)" } else { &comment }
                        ));
                    }
                }
                Err(e) => tried.push(format!("ssh-agent (cannot list keys: {e})")),
            },
            Err(e) => tried.push(format!("ssh-agent (unreachable: {e})")),
        }
    }

    let mut encrypted = None;
    if let Some(home) = &keys.home {
        for name in ["id_ed25519", "id_rsa"] {
            let path = home.join(".ssh").join(name);
            if !path.exists() {
                continue;
            }
            match russh::keys::load_secret_key(&path, None) {
                Ok(key) => {
                    if try_key(handle, &target.user, key).await.map_err(session_error)? {
                        return Ok(());
                    }
                    tried.push(format!("key {}", path.display()));
                }
                Err(russh::keys::Error::KeyIsEncrypted) => {
                    tried.push(format!("key {} (encrypted)", path.display()));
                    encrypted.get_or_insert(path);
                }
                Err(e) => tried.push(format!("key {} (unreadable: {e})", path.display())),
            }
        }
    }
    // A passphrase-protected default key may well be the right one: say so rather than "refused".
    if let Some(path) = encrypted {
        return Err(SshError::EncryptedKey {
            node: target.node.clone(),
            host: target.host.clone(),
            port: target.port,
            path: path.display().to_string(),
        });
    }
    Err(auth_failed(target, tried))
}

fn auth_failed(target: &SshTarget, tried: Vec<String>) -> SshError {
    SshError::AuthFailed {
        node: target.node.clone(),
        host: target.host.clone(),
        port: target.port,
        user: target.user.clone(),
        tried,
    }
}

/// The signature hash for an RSA key: the best the server announced, or `None` (legacy `ssh-rsa`, SHA-1)
/// when it announced nothing, as servers from before RFC 8332 do.
async fn rsa_hash(handle: &Handle<Client>) -> Option<HashAlg> {
    handle.best_supported_rsa_hash().await.ok().flatten().flatten()
}

async fn try_key(handle: &mut Handle<Client>, user: &str, key: PrivateKey) -> Result<bool, russh::Error> {
    let hash = if key.algorithm().is_rsa() { rsa_hash(handle).await } else { None };
    let result = handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash)).await?;
    Ok(matches!(result, AuthResult::Success))
}

/// How much of a command's stdin is read and queued at once.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// A long-running remote command: its stdio as an [`AgentStream`] and a view of how it is doing.
pub struct RemoteProcess {
    pub stream: AgentStream,
    pub status: RemoteStatus,
}

/// Remote stderr (its last 64 KiB) and exit status of a command started with [`SshSession::spawn`].
/// Clones share the same state.
#[derive(Clone)]
pub struct RemoteStatus {
    stderr: Arc<Mutex<Vec<u8>>>,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl RemoteStatus {
    /// What the command wrote to stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr()).into_owned()
    }

    /// How the command ended, once its channel closed.
    pub fn exit(&self) -> Option<ExitStatus> {
        self.exit.borrow().clone()
    }

    /// Waits until the channel closes: stderr and the status are filed as the stream's reader reads, so
    /// this resolves once the reader has read to its end (or was dropped: then `Unknown`).
    pub async fn wait(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or(ExitStatus::Unknown),
            Err(_) => ExitStatus::Unknown,
        }
    }
}

/// Kept in [`AgentStream::keepalive`]: the channel's write half and the connection itself, so the
/// stream outlives a dropped [`SshSession`].
struct ExecChannel {
    write: Option<ChannelWriteHalf<Msg>>,
    _session: Arc<Handle<Client>>,
}

impl Drop for ExecChannel {
    fn drop(&mut self) {
        // Closing the channel makes sshd close the remote command's stdin and stdout: the agent sees EOF
        // and exits. Sending it needs the runtime, which is gone only when the whole program is ending
        // (and the connection with it).
        if let (Some(write), Ok(runtime)) = (self.write.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = write.close().await;
            });
        }
    }
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

    /// Runs a fixed command; returns exit status, stdout, stderr. `stdin` (if any) is sent, then EOF.
    /// A non-zero exit is not an error here: the caller decides.
    pub async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<Output, SshError> {
        self.run_with(command, stdin).await
    }

    async fn run_with<R: AsyncRead + Unpin>(&self, command: &str, stdin: Option<R>) -> Result<Output, SshError> {
        let (mut read, write) = self.open(command).await?.split();
        let send = async {
            let fed = feed(&write, stdin).await;
            if fed.is_err() {
                // Without the rest of its input (and an EOF) the command would wait forever.
                let _ = write.close().await;
            }
            fed
        };
        let receive = collect(&mut read);
        tokio::pin!(send, receive);
        // Send and receive at once: a command may answer, or exit, before it has read all of its input.
        // Once the channel has closed, input still unsent has nowhere to go (and would wait forever for a
        // window): the output is the answer.
        let mut sent = None;
        let (output, refused) = loop {
            tokio::select! {
                fed = &mut send, if sent.is_none() => sent = Some(fed),
                received = &mut receive => break received,
            }
        };
        if refused {
            return Err(SshError::Remote {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                command: command.to_owned(),
                status: "the server refused to run it".to_owned(),
                stderr: String::new(),
            });
        }
        match sent {
            Some(Err(FeedError::Local(source))) => Err(SshError::Io {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                what: format!("cannot read the input for `{command}`"),
                source,
            }),
            // Without an exit status the failed write is all we know; with one, the status says more.
            Some(Err(FeedError::Channel(e))) if output.status == ExitStatus::Unknown => Err(self.session_error(e)),
            _ => Ok(output),
        }
    }

    /// Like [`run`](Self::run), but a non-zero exit is a [`SshError::Remote`] named `what`.
    async fn run_checked<R: AsyncRead + Unpin>(
        &self,
        what: &str,
        command: &str,
        stdin: Option<R>,
    ) -> Result<Output, SshError> {
        let output = self.run_with(command, stdin).await?;
        if output.success() {
            Ok(output)
        } else {
            Err(SshError::Remote {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                command: what.to_owned(),
                status: output.status.to_string(),
                stderr: output.stderr_text(),
            })
        }
    }

    /// Starts a long-running command (the agent) and returns its stdio as an [`AgentStream`]: reader =
    /// remote stdout, writer = remote stdin (shutting it down sends EOF). Remote stderr is collected; use
    /// [`spawn`](Self::spawn) to read it.
    pub async fn exec_stream(&self, command: &str) -> Result<AgentStream, SshError> {
        Ok(self.spawn(command).await?.stream)
    }

    /// [`exec_stream`](Self::exec_stream) plus the command's stderr and exit status.
    pub async fn spawn(&self, command: &str) -> Result<RemoteProcess, SshError> {
        let (mut read, write) = self.open(command).await?.split();
        // sshd answers the exec request before the command's first output: a refusal is known here, and
        // would otherwise leave a stream that never ends.
        let first = match read.wait().await {
            Some(ChannelMsg::Success) => None,
            Some(ChannelMsg::Failure) | None => {
                return Err(SshError::Remote {
                    node: self.node.clone(),
                    host: self.host.clone(),
                    port: self.port,
                    command: command.to_owned(),
                    status: "the server refused to run it".to_owned(),
                    stderr: String::new(),
                });
            }
            Some(other) => Some(other),
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (exit_tx, exit_rx) = watch::channel(None);
        let stdout = ExecStdout::new(read, first, Arc::clone(&stderr), exit_tx);
        let writer = write.make_writer();
        let keepalive = ExecChannel { write: Some(write), _session: Arc::clone(&self.handle) };
        Ok(RemoteProcess {
            stream: AgentStream { reader: Box::new(stdout), writer: Box::new(writer), keepalive: Box::new(keepalive) },
            status: RemoteStatus { stderr, exit: exit_rx },
        })
    }

    /// Installs the agent Nix-style: the file at `local_binary` goes to
    /// `~/.local/share/bai/agent/<sha256>/bai` on the node unless a copy of the right size is already
    /// there (only a verified upload ever lands at that path). An upload lands under a temporary name, is
    /// verified with `sha256sum` on the node, made
    /// executable and renamed into place: an installed agent is never rewritten in place. Returns the
    /// absolute remote path (it holds the node's `$HOME`: pass it through [`shell_word`] to build a
    /// command).
    ///
    /// The node's `uname -m` must match the binary's architecture (read from its ELF header; the
    /// controller's own when the file is no ELF executable).
    pub async fn install_agent(&self, local_binary: &Path) -> Result<String, SshError> {
        let (hash, local_arch) = self.hash_binary(local_binary).await?;
        // `hash` is 64 hex digits computed here: the only variable part of these commands.
        let dir = format!("\"$HOME\"/.local/share/bai/agent/{hash}");
        let probe = format!(
            "sh -c 'uname -m; printf \"%s\\n\" \"$HOME\"; f={dir}/bai; if [ -f \"$f\" ] && [ -x \"$f\" ]; then wc -c < \"$f\" || true; fi'"
        );
        let output = self.run_checked("uname -m; wc -c (agent probe)", &probe, None::<&[u8]>).await?;
        let text = output.stdout_text();
        let mut lines = text.lines();
        let (Some(remote_arch), Some(home)) = (lines.next(), lines.next()) else {
            return Err(SshError::Remote {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                command: "uname -m (agent probe)".to_owned(),
                status: format!("unexpected output \"{}\"", crate::untrusted::excerpt(&text, 200)),
                stderr: output.stderr_text(),
            });
        };
        let remote_arch = remote_arch.trim();
        if normalize_arch(remote_arch) != normalize_arch(local_arch) {
            return Err(SshError::ArchMismatch {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                local: local_arch.to_owned(),
                remote: remote_arch.to_owned(),
            });
        }
        let remote_path = format!("{home}/.local/share/bai/agent/{hash}/bai");
        // The content-addressed path is only ever written by a rename after the uploaded copy hashed
        // right, so a copy of the right size is trusted: hashing it again on every connection cost the
        // node a quarter of a second (most of a no-op apply). A truncated or rewritten copy is replaced.
        let local_size = std::fs::metadata(local_binary).map(|m| m.len()).ok();
        let remote_size = lines.next().and_then(|line| line.trim().parse::<u64>().ok());
        let present = remote_size.is_some() && remote_size == local_size;
        if present {
            return Ok(remote_path);
        }

        let upload = format!(
            "sh -c 'set -e; d={dir}; mkdir -p \"$d\"; t=\"$d/.bai.upload.$$\"; \
             if ! cat > \"$t\"; then rm -f \"$t\"; exit 1; fi; h=$(sha256sum < \"$t\"); h=${{h%% *}}; \
             if [ \"$h\" != {hash} ]; then rm -f \"$t\"; echo \"the uploaded copy hashes to $h, not {hash}\" >&2; exit 1; fi; \
             chmod 755 \"$t\"; mv -f \"$t\" \"$d/bai\"'"
        );
        let file = tokio::fs::File::open(local_binary).await.map_err(|source| SshError::Io {
            node: self.node.clone(),
            host: self.host.clone(),
            port: self.port,
            what: format!("cannot read the agent binary {}", local_binary.display()),
            source,
        })?;
        self.run_checked("upload of the agent binary", &upload, Some(file)).await?;
        Ok(remote_path)
    }

    /// SHA-256 (hex) and architecture of the binary to install.
    async fn hash_binary(&self, path: &Path) -> Result<(String, &'static str), SshError> {
        let owned = path.to_owned();
        let identified = tokio::task::spawn_blocking(move || identify_binary(&owned)).await;
        let io_error = |source| SshError::Io {
            node: self.node.clone(),
            host: self.host.clone(),
            port: self.port,
            what: format!("cannot read the agent binary {}", path.display()),
            source,
        };
        match identified {
            Ok(Ok(id)) => Ok((id.sha256, id.arch)),
            Ok(Err(e)) => Err(io_error(e)),
            Err(join) => Err(io_error(std::io::Error::other(join.to_string()))),
        }
    }

    /// Ends the connection politely; channels still open on it end too.
    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

/// The sha256 (hex) under which [`SshSession::install_agent`] installs `path` on nodes: what `bai.lock`
/// records as the agent.
pub fn agent_sha256(path: &Path) -> std::io::Result<String> {
    identify_binary(path).map(|id| id.sha256)
}

/// What [`SshSession::install_agent`] needs to know of a local binary.
#[derive(Clone)]
struct BinaryId {
    sha256: String,
    arch: &'static str,
}

/// Hashes a binary and reads its architecture (the controller's own when it is no ELF file). Cached by
/// path, size and modification time: an apply installs the same binary on every node at once, and hashing
/// a debug build takes a noticeable fraction of a second.
fn identify_binary(path: &Path) -> std::io::Result<BinaryId> {
    type Cache = Mutex<HashMap<(PathBuf, u64, SystemTime), BinaryId>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let metadata = std::fs::metadata(path)?;
    let key = (path.to_owned(), metadata.len(), metadata.modified()?);
    // Held while hashing: an apply reaches every node at once, and all but the first wait for its result
    // rather than hashing the same file again.
    let mut cached = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(id) = cached.get(&key) {
        return Ok(id.clone());
    }

    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut header = Vec::with_capacity(ELF_HEADER);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|chunk| !chunk.is_empty()) else { break };
        let wanted = ELF_HEADER.saturating_sub(header.len()).min(n);
        header.extend_from_slice(chunk.get(..wanted).unwrap_or_default());
        hasher.update(chunk);
    }
    let id = BinaryId {
        sha256: hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        arch: elf_arch(&header).unwrap_or(std::env::consts::ARCH),
    };
    cached.insert(key, id.clone());
    Ok(id)
}

/// Bytes of an ELF header up to and including `e_machine`.
const ELF_HEADER: usize = 20;

enum FeedError {
    /// Reading the local input failed.
    Local(std::io::Error),
    /// The channel refused the data.
    Channel(russh::Error),
}

/// Sends a command's stdin, if any, then EOF.
async fn feed<R: AsyncRead + Unpin>(write: &ChannelWriteHalf<Msg>, stdin: Option<R>) -> Result<(), FeedError> {
    if let Some(mut stdin) = stdin {
        // Large chunks handed over as owned bytes: russh's `data` copies through an 8 KiB buffer, one SSH
        // packet per 8 KiB where OpenSSH takes 32 KiB; the agent upload took 60% longer that way.
        loop {
            let mut chunk = vec![0u8; UPLOAD_CHUNK];
            let n = stdin.read(&mut chunk).await.map_err(FeedError::Local)?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            write.data_bytes(chunk).await.map_err(FeedError::Channel)?;
        }
    }
    write.eof().await.map_err(FeedError::Channel)
}

/// The most of a fixed command's stdout and of its stderr kept: bai's own commands print a few lines,
/// and a node that prints more is not believed for longer.
const MAX_OUTPUT: usize = 64 * 1024;

fn keep(buffer: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

/// Collects a finished command's output (each stream cut at [`MAX_OUTPUT`]). Returns it and whether the
/// server refused the exec request.
async fn collect(read: &mut ChannelReadHalf) -> (Output, bool) {
    let mut output = Output { status: ExitStatus::Unknown, stdout: Vec::new(), stderr: Vec::new() };
    let mut refused = false;
    // The exit status may arrive before the last data: read until the channel closes.
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::Data { data } => keep(&mut output.stdout, &data),
            ChannelMsg::ExtendedData { data, ext: 1 } => keep(&mut output.stderr, &data),
            ChannelMsg::ExitStatus { exit_status } => output.status = ExitStatus::Code(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => output.status = ExitStatus::Signal(signal_text(&signal_name)),
            // A refused exec leaves the channel open with nothing to wait for.
            ChannelMsg::Failure => {
                refused = true;
                break;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    (output, refused)
}

/// `word` as one literal word for a POSIX login shell: as is when it holds only safe characters, else
/// single quoted (`'\''` for a quote inside). For paths the node itself reported, such as
/// [`SshSession::install_agent`]'s; never a license to pass config values to a shell.
pub fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The architecture an ELF executable is built for, named as `uname -m` names it.
fn elf_arch(header: &[u8]) -> Option<&'static str> {
    if header.get(..4)? != b"\x7fELF" {
        return None;
    }
    let little_endian = *header.get(5)? == 1;
    let bytes = [*header.get(18)?, *header.get(19)?];
    let machine = if little_endian { u16::from_le_bytes(bytes) } else { u16::from_be_bytes(bytes) };
    Some(match machine {
        0x03 => "i686",
        0x28 => "arm",
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0xf3 => "riscv64",
        0x15 => "ppc64",
        0x16 => "s390x",
        _ => return None,
    })
}

/// One name per architecture: `uname -m` and Rust disagree on some (`arm64`/`aarch64`, `amd64`/`x86_64`).
fn normalize_arch(arch: &str) -> &str {
    match arch {
        "amd64" | "x64" => "x86_64",
        "arm64" | "armv8" | "armv8l" => "aarch64",
        "ppc64le" => "ppc64",
        "i386" | "i486" | "i586" | "x86" => "i686",
        other if other.starts_with("armv") => "arm",
        other => other,
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
