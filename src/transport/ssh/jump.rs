//! Reaching a node through jump hosts, as OpenSSH's `ProxyJump` does but with no second `ssh` process and no
//! shell: log in to the first hop over TCP, ask it for a `direct-tcpip` channel to the next hop's
//! `host:port`, run the next SSH session inside that channel, and so on; the node's own session runs inside
//! the last hop's channel ([`channel_to`]). Every hop is a full SSH session of its own: its host key is
//! checked against known_hosts under its own `[host]:port` (unknown refused unless accept-new, changed
//! always refused) and it authenticates with the same identity and ssh-agent rules as a node, so a hop sees
//! only encrypted bytes of the sessions inside it.
//!
//! One connection per hop is shared by every node behind it, process-wide: a cache keyed by the hop's
//! identity (user, host, port, identity file, known_hosts) and that of every hop before it holds the
//! established connection, and each node opens channels on it. Each key has a slot with an async lock: the
//! first node to need a hop connects it while the others wait for that one connection, so fifty nodes
//! behind one bastion make one login to it. A slot whose connection has closed (the bastion restarted, a
//! keepalive went unanswered, the runtime it ran on ended) is connected again on next use, and a channel
//! that cannot be opened because its hop just died is tried once more over a fresh connection. Slots are
//! taken one hop at a time in chain order and no lock is held while waiting on another, so nothing
//! deadlocks however many nodes connect at once.

use std::collections::HashMap;
use std::sync::LazyLock;

use russh::ChannelStream;

use super::*;

/// A hop as the cache tells hops apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct HopKey {
    user: String,
    host: String,
    port: u16,
    identity: Option<PathBuf>,
    known_hosts: PathBuf,
}

impl HopKey {
    fn of(hop: &Hop) -> HopKey {
        let t = &hop.target;
        HopKey {
            user: t.user.clone(),
            host: t.host.clone(),
            port: t.port,
            identity: t.identity.clone(),
            known_hosts: t.known_hosts.clone(),
        }
    }
}

/// One hop's connection, or none yet (or no more).
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

/// Every hop connection of this process, keyed by the chain that reaches it (the hop last).
static HOPS: LazyLock<Mutex<HashMap<Vec<HopKey>, Slot>>> = LazyLock::new(Default::default);

fn slot(chain: &[Hop]) -> Slot {
    let key: Vec<HopKey> = chain.iter().map(HopKey::of).collect();
    let mut hops = HOPS.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(hops.entry(key).or_default())
}

/// A channel from the last of `target`'s hops to the node's `host:port`, and that hop's connection; the hops
/// connected on the way where they are not already. `reached` is set to the index of the hop being worked
/// on, for the caller's timeout message.
pub(super) async fn channel_to(
    target: &SshTarget,
    keys: &KeySources,
    reached: &Mutex<Option<usize>>,
) -> Result<(ChannelStream<Msg>, Arc<Connection>), SshError> {
    let last = target.jumps.last().expect("channel_to is called with hops");
    let mut retried = false;
    loop {
        let via = hops(target, keys, reached).await?;
        *reached.lock().unwrap_or_else(PoisonError::into_inner) = None;
        match via.channel_open_direct_tcpip(target.host.as_str(), u32::from(target.port), "127.0.0.1", 0).await {
            Ok(channel) => return Ok((channel.into_stream(), via)),
            // The hop's connection died between the cache handing it out and this channel: once more, over
            // a fresh one (the dead one is replaced, as its slot sees it closed).
            Err(_) if via.is_closed() && !retried => retried = true,
            Err(e) => return Err(onwards_error(target, last, &target.host, target.port, e)),
        }
    }
}

/// Every hop of `target` connected, in order; the last one's connection.
async fn hops(
    target: &SshTarget,
    keys: &KeySources,
    reached: &Mutex<Option<usize>>,
) -> Result<Arc<Connection>, SshError> {
    let mut via: Option<Arc<Connection>> = None;
    for (i, hop) in target.jumps.iter().enumerate() {
        *reached.lock().unwrap_or_else(PoisonError::into_inner) = Some(i);
        let slot = slot(&target.jumps[..=i]);
        let mut held = slot.lock().await;
        let live = held.as_ref().filter(|c| !c.is_closed()).cloned();
        let connection = match live {
            Some(connection) => connection,
            None => {
                let previous = i.checked_sub(1).and_then(|p| target.jumps.get(p));
                let connection = Arc::new(connect_hop(target, hop, previous, via.take(), keys).await?);
                *held = Some(Arc::clone(&connection));
                connection
            }
        };
        via = Some(connection);
    }
    Ok(via.expect("at least one hop"))
}

/// Logs in to `hop`: over TCP when it is the first, else inside a channel that `previous` (reached over
/// `via`) opens to it.
async fn connect_hop(
    target: &SshTarget,
    hop: &Hop,
    previous: Option<&Hop>,
    via: Option<Arc<Connection>>,
    keys: &KeySources,
) -> Result<Connection, SshError> {
    let t = &hop.target;
    let explicit = match &t.identity {
        Some(path) => Some((path.as_path(), load_identity(t, path).map_err(|e| hop_error(target, hop, e))?)),
        None => None,
    };
    let (handle, windows) = match (&via, previous) {
        (Some(via), Some(previous)) => {
            let channel = via
                .channel_open_direct_tcpip(t.host.as_str(), u32::from(t.port), "127.0.0.1", 0)
                .await
                .map_err(|e| onwards_error(target, previous, &t.host, t.port, e))?;
            handshake(t, channel.into_stream(), explicit, keys).await
        }
        _ => match open_stream(t).await {
            Ok(stream) => handshake(t, stream, explicit, keys).await,
            Err(e) => Err(connect_error(t, e)),
        },
    }
    .map_err(|e| hop_error(target, hop, e))?;
    Ok(Connection { handle, windows, _via: via })
}

/// A hop's own failure, put as the node's: the hop's message without its `node `x` (host:port): ` lead,
/// which [`SshError::Jump`] says its own way.
fn hop_error(target: &SshTarget, hop: &Hop, inner: SshError) -> SshError {
    let failure = crate::failure::Failure::of(&inner);
    let lead = format!("node `{}` ({}): ", hop.target.node, at(&hop.target.host, &hop.target.port));
    let reason = failure.message.strip_prefix(&lead).unwrap_or(&failure.message).to_string();
    // Connect's own help speaks of "the node": here it is the hop that did not answer.
    let help = match inner {
        SshError::Connect { .. } => {
            Some("check the jump host's address and port, and that sshd runs there".to_string())
        }
        _ => failure.help,
    };
    jump_error(target, hop, reason, help, Some(inner))
}

/// [`SshError::Jump`] for `hop` on the way to `target`.
fn jump_error(
    target: &SshTarget,
    hop: &Hop,
    reason: String,
    help: Option<String>,
    inner: Option<SshError>,
) -> SshError {
    let t = &hop.target;
    let hop = HopFailure { name: hop.name.clone(), host: t.host.clone(), port: t.port, reason, inner };
    SshError::Jump { node: target.node.clone(), hop: Box::new(hop), help }
}

/// `hop` would not open a channel to `host:port` (the next hop, or the node).
fn onwards_error(target: &SshTarget, hop: &Hop, host: &str, port: u16, e: russh::Error) -> SshError {
    let (reason, help) = match e {
        russh::Error::ChannelOpenFailure(why) => (
            format!("it cannot open a connection to {} ({why:?})", at(host, &port)),
            "check that the jump host reaches that address and port, and that its sshd allows TCP forwarding \
             (`AllowTcpForwarding`, `PermitOpen`)",
        ),
        other => (format!("its connection failed: {other}"), "the connection may have dropped; run again"),
    };
    jump_error(target, hop, reason, Some(help.to_string()), None)
}

/// The connect timeout ran out while `hop` was being reached.
pub(super) fn timeout(target: &SshTarget, hop: &Hop, seconds: f64) -> SshError {
    let reason = format!("no SSH session within {seconds}s, the node's connect timeout (it bounds every hop together)");
    let help = format!(
        "check that the jump host is up and that sshd listens on port {}; raise `ssh connect-timeout=` for a slow chain",
        hop.target.port
    );
    jump_error(target, hop, reason, Some(help), None)
}
