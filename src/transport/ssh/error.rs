//! What can go wrong between the controller and a node over SSH: every message names the node and its
//! address, every variant has its code (docs/errors.md).

/// `host:port` as messages show it, bracketing IPv6 addresses.
pub(super) fn at(host: &str, port: &u16) -> String {
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

    /// A jump host on the way to the node failed: its host key, its login, its connection, or its refusal
    /// to open a channel onwards. `help` is what to do about it.
    #[error("node `{node}`: jump host {}: {}", .hop.named(), .hop.reason)]
    #[diagnostic(code(bai::ssh::jump))]
    Jump {
        node: String,
        hop: Box<HopFailure>,
        #[help]
        help: Option<String>,
    },

    /// The jump hosts of a node do not make a way to it: a loop of `ProxyJump`s, or too many hops.
    #[error("node `{node}`: {reason}")]
    #[diagnostic(
        code(bai::ssh::jump),
        help("check the `ProxyJump` lines of ssh_config for the hosts named, and the lab's `ssh jump=`")
    )]
    JumpRoute { node: String, reason: String },

    #[error("node `{node}`: ssh_config gives `{host}` a ProxyCommand ({origin}), which bai does not run")]
    #[diagnostic(
        code(bai::ssh::proxy_command),
        help(
            "bai runs no local shell line to reach a node: name the jump hosts with `ProxyJump` (or the lab's `ssh jump=`), which bai follows over `direct-tcpip` channels, or write `ProxyCommand none` in a block for this host"
        )
    )]
    ProxyCommand { node: String, host: String, origin: String },

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

/// Which jump host failed and how.
#[derive(Debug)]
pub struct HopFailure {
    /// The hop as written (`login.lab`, `bai@gw:2222`).
    pub name: String,
    pub host: String,
    pub port: u16,
    /// What went wrong there.
    pub reason: String,
    /// The hop's own error, as it would read for a node (`UnknownHostKey`, `AuthFailed`, …); `None` when
    /// the hop itself was fine and would not go on.
    pub inner: Option<SshError>,
}

impl HopFailure {
    /// `` `login.lab` (10.0.0.2:22) ``, or `` `10.0.0.2:22` `` alone where that is how the hop was written.
    fn named(&self) -> String {
        let at = at(&self.host, &self.port);
        if self.name == at || self.name.ends_with(&format!("@{at}")) {
            format!("`{}`", self.name)
        } else {
            format!("`{}` ({at})", self.name)
        }
    }
}

pub(super) fn tried_list(tried: &[String]) -> String {
    if tried.is_empty() { "no key to offer".to_owned() } else { format!("tried {}", tried.join(", ")) }
}

/// The node's stderr as the end of a message: escaped and cut short, since the node wrote it.
pub(super) fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() { String::new() } else { format!(": {}", crate::untrusted::excerpt(stderr, 2048)) }
}
