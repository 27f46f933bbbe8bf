//! Where and how a node is reached over SSH, settled once per connection from three layers, the first that
//! says something winning: the lab (the node's `ssh`, then the cluster's), the controller's ssh_config
//! (looked up under the node's `address`, or its name when it has none, as `ssh ADDRESS` would), and
//! bai's defaults (port 22, `$USER`, ssh-agent then `~/.ssh/id_*`, `~/.ssh/known_hosts`, 10 s).
//!
//! Jump hosts come from the lab's `jump=` (node's, then cluster's) or else ssh_config's `ProxyJump`. Each
//! hop is a host of its own: its `user@` and `:port` as written, then ssh_config's block for its name, then
//! the node's user, identity and known_hosts (a login node usually takes the same account and key as the
//! nodes behind it), then port 22. As with OpenSSH, the first hop's own `ProxyJump` is followed too (a
//! gateway in front of the login node); a loop, or more than [`MAX_HOPS`] hops, is refused. A
//! `ProxyCommand` that applies is refused: bai runs no local shell line.
//!
//! Pure but for `$HOME` and `$USER`, read as a command line tool reads them.

use std::path::PathBuf;
use std::time::Duration;

use crate::jump::{JumpHost, MAX_HOPS};
use crate::model::{Cluster, Node};
use crate::source::Spanned;
use crate::transport::ssh::{Hop, SshError, SshTarget};
use crate::transport::ssh_config::{HostOptions, PathTokens, Proxy, SshConfig, StrictHostKeyChecking, expand_path};

/// The connect timeout when neither the lab nor ssh_config names one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The controller's side of the lookup: `$HOME` and `$USER`.
#[derive(Debug, Clone, Default)]
pub struct Local {
    pub home: Option<PathBuf>,
    pub user: Option<String>,
}

impl Local {
    pub fn from_env() -> Local {
        Local {
            home: std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from),
            user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
        }
    }

    fn expand_tilde(&self, path: &str) -> PathBuf {
        match (path.strip_prefix("~/"), &self.home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(path),
        }
    }
}

/// How to reach `node`: the lab over ssh_config over the defaults; `accept_new` is the run's
/// `--accept-new-host-keys`.
pub fn resolve(
    cluster: &Cluster,
    node: &Node,
    config: &SshConfig,
    accept_new: bool,
    local: &Local,
) -> Result<SshTarget, SshError> {
    let pick =
        |n: &Option<Spanned<String>>, c: &Option<Spanned<String>>| n.as_ref().or(c.as_ref()).map(|s| s.value.clone());
    let name = node.name.value.to_string();
    let alias = node.address.as_ref().map_or_else(|| name.clone(), |a| a.value.clone());
    let options = config.query(&alias);
    let host = options.hostname.clone().unwrap_or_else(|| alias.clone());
    let port = node.ssh.port.as_ref().or(cluster.ssh.port.as_ref()).map(|p| p.value).or(options.port).unwrap_or(22);
    let user = pick(&node.ssh.user, &cluster.ssh.user)
        .or_else(|| options.user.clone())
        .or_else(|| local.user.clone())
        .unwrap_or_else(|| "root".to_string());
    let tokens = tokens(local, &host, &alias, &user, port);
    let identity = pick(&node.ssh.identity, &cluster.ssh.identity)
        .map(|p| local.expand_tilde(&p))
        .or_else(|| options.identity_files.first().map(|p| expand_path(p, &tokens)));
    let known_hosts = pick(&node.ssh.known_hosts, &cluster.ssh.known_hosts)
        .map(|p| local.expand_tilde(&p))
        .or_else(|| options.known_hosts.as_ref().map(|p| expand_path(p, &tokens)))
        .unwrap_or_else(|| local.expand_tilde("~/.ssh/known_hosts"));
    let connect_timeout = node
        .ssh
        .connect_timeout
        .as_ref()
        .or(cluster.ssh.connect_timeout.as_ref())
        .map(|d| d.value)
        .or(options.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let mut target = SshTarget {
        node: name.clone(),
        host,
        port,
        user,
        identity,
        known_hosts,
        accept_new_host_keys: accept_new || options.strict_host_key_checking == Some(StrictHostKeyChecking::AcceptNew),
        connect_timeout,
        keepalive_interval: None,
        keepalive_max: 0,
        jumps: Vec::new(),
        compression: options.compression.unwrap_or(false),
    };
    keepalive(&mut target, &options);

    let written = match node.ssh.jump.as_ref().or(cluster.ssh.jump.as_ref()) {
        Some(hops) => hops.value.clone(),
        None => match options.proxy {
            None => Vec::new(),
            Some((Proxy::Jump(hops), _)) => hops,
            Some((Proxy::Command(_), origin)) => {
                return Err(SshError::ProxyCommand { node: name, host: alias, origin: origin.to_string() });
            }
        },
    };
    target.jumps = chain(&target, written, config, accept_new, local)?;
    Ok(target)
}

fn tokens(local: &Local, host: &str, alias: &str, user: &str, port: u16) -> PathTokens {
    PathTokens {
        home: local.home.clone(),
        local_user: local.user.clone().unwrap_or_default(),
        host: host.to_string(),
        alias: alias.to_string(),
        user: user.to_string(),
        port,
    }
}

/// ServerAliveInterval (0 turns keepalives off) and ServerAliveCountMax, else bai's own.
fn keepalive(target: &mut SshTarget, options: &HostOptions) {
    target.keepalive_interval = match options.server_alive_interval {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => Some(SshTarget::KEEPALIVE_INTERVAL),
    };
    target.keepalive_max = options.server_alive_count_max.unwrap_or(SshTarget::KEEPALIVE_MAX);
}

/// The hops `written` for the node `target`, the first hop's own `ProxyJump`s in front of it.
fn chain(
    target: &SshTarget,
    written: Vec<JumpHost>,
    config: &SshConfig,
    accept_new: bool,
    local: &Local,
) -> Result<Vec<Hop>, SshError> {
    let mut hops: Vec<JumpHost> = written;
    let mut seen: Vec<String> = hops.iter().map(|h| h.host.to_ascii_lowercase()).collect();
    loop {
        if hops.len() > MAX_HOPS {
            return Err(SshError::JumpRoute {
                node: target.node.clone(),
                reason: format!("its jump hosts make a chain of more than {MAX_HOPS} hops"),
            });
        }
        let Some(first) = hops.first() else { return Ok(Vec::new()) };
        match config.query(&first.host).proxy {
            Some((Proxy::Jump(before), _)) if !before.is_empty() => {
                if let Some(again) = before.iter().find(|h| seen.contains(&h.host.to_ascii_lowercase())) {
                    return Err(SshError::JumpRoute {
                        node: target.node.clone(),
                        reason: format!("its jump hosts loop: `{}` is reached through itself", again.host),
                    });
                }
                seen.extend(before.iter().map(|h| h.host.to_ascii_lowercase()));
                hops.splice(0..0, before);
            }
            Some((Proxy::Command(_), origin)) => {
                return Err(SshError::ProxyCommand {
                    node: target.node.clone(),
                    host: first.host.clone(),
                    origin: origin.to_string(),
                });
            }
            _ => break,
        }
    }
    Ok(hops.into_iter().map(|h| hop(target, h, config, accept_new, local)).collect())
}

/// One hop: as written, then its ssh_config block, then the node's user, identity and known_hosts.
fn hop(node: &SshTarget, written: JumpHost, config: &SshConfig, accept_new: bool, local: &Local) -> Hop {
    let options = config.query(&written.host);
    let host = options.hostname.clone().unwrap_or_else(|| written.host.clone());
    let port = written.port.or(options.port).unwrap_or(22);
    let user = written.user.clone().or_else(|| options.user.clone()).unwrap_or_else(|| node.user.clone());
    let tokens = tokens(local, &host, &written.host, &user, port);
    let mut target = SshTarget {
        node: node.node.clone(),
        identity: options.identity_files.first().map(|p| expand_path(p, &tokens)).or_else(|| node.identity.clone()),
        known_hosts: options.known_hosts.as_ref().map_or_else(|| node.known_hosts.clone(), |p| expand_path(p, &tokens)),
        accept_new_host_keys: accept_new || options.strict_host_key_checking == Some(StrictHostKeyChecking::AcceptNew),
        connect_timeout: node.connect_timeout,
        host,
        port,
        user,
        keepalive_interval: None,
        keepalive_max: 0,
        jumps: Vec::new(),
        // Nothing is installed on a jump host.
        compression: false,
    };
    keepalive(&mut target, &options);
    Hop { name: written.to_string(), target }
}

#[cfg(test)]
mod tests;
