//! The controller's OpenSSH client configuration (`~/.ssh/config`, or the file `--ssh-config` names), read
//! as `ssh` reads it for the keywords that say how to reach a host: `Host` blocks (patterns with `*`, `?`
//! and `!` negation, several per line), `HostName` (`%h` expanded), `User`, `Port`, `IdentityFile`,
//! `UserKnownHostsFile`, `ProxyJump`, `ProxyCommand` (recorded so that it can be refused: bai runs no local
//! shell line), `StrictHostKeyChecking`, `ConnectTimeout`, `ServerAliveInterval`, `ServerAliveCountMax`,
//! `Compression` (whether the agent crosses compressed, see `transport::ssh::install`),
//! and `Include`. For each keyword the first value that applies wins (`IdentityFile` lines add up), as in
//! ssh_config(5). Every other keyword is ignored; `Match` blocks never apply, but `Match all`.
//!
//! Written here rather than taken from a crate: `russh-config` folds `StrictHostKeyChecking accept-new`
//! into `yes`, splits a line at its first space only (`Port=22` and tabs are lost), rejects options before
//! the first `Host`, and lets a `Match` block's options leak into the `Host` above it; `ssh2-config` keeps
//! neither `UserKnownHostsFile` nor `StrictHostKeyChecking`. Both would pull in their own glob matcher,
//! where OpenSSH's `*`/`?` is the one [`crate::transport::known_hosts`] already implements.
//!
//! [`parse`] is pure: the files an `Include` names come through a reader it is given ([`load`] reads the
//! real ones). [`SshConfig::query`] answers for one host name.

mod load;
mod parse;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use load::{Source, load};
pub use parse::parse;

use crate::jump::JumpHost;

/// A parsed ssh_config: every setting in file order, each with the `Host` (or `Match`) conditions it sits
/// under. Empty when there is no file.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    directives: Vec<Directive>,
}

/// Where a line came from, for messages: `~/.ssh/config line 12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file, self.line)
    }
}

#[derive(Debug, Clone)]
struct Directive {
    /// Every block the line sits in: its own `Host`, and the `Host` around the `Include` that read it.
    guards: Vec<Arc<Guard>>,
    setting: Setting,
    origin: Origin,
}

/// A block's condition.
#[derive(Debug)]
enum Guard {
    /// `Host p1 !p2 …`: some pattern matches and no negated one does.
    Host(Vec<(bool, String)>),
    /// `Match all`.
    Always,
    /// Any other `Match`: bai evaluates none of its criteria, so its options never apply.
    Never,
}

impl Guard {
    fn matches(&self, host: &str) -> bool {
        match self {
            Guard::Always => true,
            Guard::Never => false,
            Guard::Host(patterns) => {
                let mut positive = false;
                for (negated, pattern) in patterns {
                    if crate::transport::known_hosts::glob_matches(host.as_bytes(), pattern.as_bytes()) {
                        if *negated {
                            return false;
                        }
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

/// One keyword's value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Setting {
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(String),
    UserKnownHostsFile(String),
    Proxy(Proxy),
    StrictHostKeyChecking(StrictHostKeyChecking),
    ConnectTimeout(Duration),
    ServerAliveInterval(Duration),
    ServerAliveCountMax(usize),
    Compression(bool),
}

/// How a host is reached: `ProxyJump` and `ProxyCommand` share one slot (the first given wins, as in
/// OpenSSH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// Through these hops; none (`ProxyJump none`, `ProxyCommand none`): directly.
    Jump(Vec<JumpHost>),
    /// A local shell line bai refuses to run.
    Command(String),
}

/// `StrictHostKeyChecking`. Only `accept-new` changes what bai does (it learns an unknown host's key, as
/// `--accept-new-host-keys`); `no` and `off` do not turn checking off: bai always refuses an unknown key
/// unless told to accept new ones, and always refuses a changed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    Yes,
    Ask,
    AcceptNew,
    No,
}

/// What ssh_config says for one host; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOptions {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// As written (`~/.ssh/id_lab`, `%d/.ssh/id_%h`): [`expand_path`] when the host is known.
    pub identity_files: Vec<String>,
    pub known_hosts: Option<String>,
    pub proxy: Option<(Proxy, Origin)>,
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    pub connect_timeout: Option<Duration>,
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: Option<usize>,
    /// `Compression yes`: the agent crosses compressed (OpenSSH's default, and bai's, is no).
    pub compression: Option<bool>,
}

impl SshConfig {
    /// What applies to `host` (the name as the lab writes it: a node's address, a hop's host): for each
    /// keyword the first value whose blocks all match. `HostName`'s `%h` is `host`.
    pub fn query(&self, host: &str) -> HostOptions {
        let host = host.to_ascii_lowercase();
        let mut out = HostOptions::default();
        for directive in &self.directives {
            if !directive.guards.iter().all(|g| g.matches(&host)) {
                continue;
            }
            fn first<T>(slot: &mut Option<T>, value: T) {
                if slot.is_none() {
                    *slot = Some(value);
                }
            }
            match &directive.setting {
                Setting::HostName(name) => {
                    first(&mut out.hostname, expand_tokens(name, |c| (c == 'h').then(|| host.clone())))
                }
                Setting::User(user) => first(&mut out.user, user.clone()),
                Setting::Port(port) => first(&mut out.port, *port),
                Setting::IdentityFile(path) => out.identity_files.push(path.clone()),
                Setting::UserKnownHostsFile(path) => first(&mut out.known_hosts, path.clone()),
                Setting::Proxy(proxy) => first(&mut out.proxy, (proxy.clone(), directive.origin.clone())),
                Setting::StrictHostKeyChecking(s) => first(&mut out.strict_host_key_checking, *s),
                Setting::ConnectTimeout(d) => first(&mut out.connect_timeout, *d),
                Setting::ServerAliveInterval(d) => first(&mut out.server_alive_interval, *d),
                Setting::ServerAliveCountMax(n) => first(&mut out.server_alive_count_max, *n),
                Setting::Compression(on) => first(&mut out.compression, *on),
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.directives.is_empty()
    }
}

/// What `%` tokens in a path stand for, as ssh_config(5) defines them.
#[derive(Debug, Clone, Default)]
pub struct PathTokens {
    /// `%d`, and what `~/` expands to.
    pub home: Option<PathBuf>,
    /// `%u`: the local user.
    pub local_user: String,
    /// `%h`: the remote host name (after `HostName`).
    pub host: String,
    /// `%n`: the name as given, before `HostName`.
    pub alias: String,
    /// `%r`: the remote user.
    pub user: String,
    /// `%p`
    pub port: u16,
}

/// The tokens a path may hold; [`parse`] refuses any other.
pub(crate) const PATH_TOKENS: &str = "%dhnrpu";

/// A path of ssh_config with `~/` and its `%` tokens expanded.
pub fn expand_path(raw: &str, tokens: &PathTokens) -> PathBuf {
    let home = tokens.home.as_ref().map(|h| h.display().to_string());
    let expanded = expand_tokens(raw, |c| match c {
        'd' => home.clone(),
        'h' => Some(tokens.host.clone()),
        'n' => Some(tokens.alias.clone()),
        'r' => Some(tokens.user.clone()),
        'p' => Some(tokens.port.to_string()),
        'u' => Some(tokens.local_user.clone()),
        _ => None,
    });
    match (expanded.strip_prefix("~/"), &tokens.home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(expanded),
    }
}

/// `%%` as `%`, `%c` as `value(c)`; a token without a value is left as written.
fn expand_tokens(text: &str, value: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match value(t) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push('%');
                    out.push(t);
                }
            },
            None => out.push('%'),
        }
    }
    out
}

/// An ssh_config that cannot be used: unreadable, or a line that does not parse. OpenSSH stops on either,
/// and so does bai, before it reaches any node.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
#[error("ssh_config {file}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
#[diagnostic(
    code(bai::ssh::config),
    help(
        "fix the line (ssh_config(5)), point --ssh-config (or BAI_SSH_CONFIG) at another file, or `none` for no file"
    )
)]
pub struct SshConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

#[cfg(test)]
mod tests;
