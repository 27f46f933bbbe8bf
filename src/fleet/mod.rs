//! The controller's view of a cluster's nodes: selecting them, reaching their agents (locally or over
//! SSH), observing them in parallel. Failures are data, one per node, so that one bad node never stops
//! the others.

pub mod connector;
pub mod context;
pub mod execute;
#[cfg(test)]
pub mod in_process;
#[cfg(test)]
pub mod scripted;
pub mod secrets;
pub mod select;
pub mod sources;
pub mod ssh_target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::failure::Failure;
use crate::fleet::connector::Connector;
use crate::model::{Cluster, Node};
use crate::protocol::{ErrorKind, Method, Observe};
use crate::state::snapshot::NodeSnapshot;
use crate::transport::client::{AgentClient, ClientError, Deadlines};
use crate::transport::ssh::{SshError, SshTarget, Started, connect};
use crate::transport::ssh_config::SshConfig;

/// The vfolder root of a node without `vfolder-root`.
pub const DEFAULT_VFOLDER_ROOT: &str = "~/.local/share/bai/vfolders";

/// How to reach nodes: flags of the run, the agent binary to install, and how an agent is started.
#[derive(Clone)]
pub struct ConnectOptions {
    pub accept_new_host_keys: bool,
    /// The bai binary to run as the agent: this very program.
    pub agent_binary: PathBuf,
    /// `user@host pid N`, shown to a second controller refused the lease.
    pub holder: String,
    /// [`connector::Real`] but in tests.
    pub connector: Arc<dyn Connector>,
    /// The controller's OpenSSH configuration, read once per run: what the lab leaves out of how a node
    /// is reached.
    pub ssh_config: Arc<SshConfig>,
}

impl ConnectOptions {
    /// Nodes reached the real way, this program installed as their agent.
    pub fn new(accept_new_host_keys: bool, agent_binary: PathBuf) -> Self {
        ConnectOptions {
            accept_new_host_keys,
            agent_binary,
            holder: holder(),
            connector: Arc::new(connector::Real),
            ssh_config: Arc::default(),
        }
    }

    /// The same, with this ssh_config under the lab's SSH settings.
    pub fn with_ssh_config(mut self, config: SshConfig) -> Self {
        self.ssh_config = Arc::new(config);
        self
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("accept_new_host_keys", &self.accept_new_host_keys)
            .field("agent_binary", &self.agent_binary)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// Why a node could not be worked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    pub node: String,
    pub unreachable: bool,
    /// The stable code of the error behind it (`bai::ssh::unknown_host_key`); docs/errors.md.
    pub code: String,
    pub message: String,
    pub help: Option<String>,
}

impl NodeFailure {
    pub fn unreachable(node: &str, code: impl Into<String>, message: String, help: Option<String>) -> Self {
        NodeFailure { node: node.to_string(), unreachable: true, code: code.into(), message, help }
    }

    /// A node that answered but is refused, or whose answer is.
    pub fn refused(node: &str, code: impl Into<String>, message: String, help: Option<String>) -> Self {
        NodeFailure { unreachable: false, ..NodeFailure::unreachable(node, code, message, help) }
    }

    /// The failure as the user reads it: `node `a` unreachable: …`.
    pub fn failure(&self) -> Failure {
        let what = if self.unreachable { "unreachable" } else { "refused" };
        let named = format!("node `{}`", self.node);
        // Most messages name the node already (`node `a` (10.0.0.1:22): …`): say it once.
        let message = match self.message.strip_prefix(&named) {
            Some(rest) => format!("{named} {what}{rest}"),
            None => format!("{named} {what}: {}", self.message),
        };
        Failure::error(self.code.clone(), message).help_opt(self.help.clone())
    }
}

/// An agent session on one node.
pub struct NodeConn {
    pub node: String,
    pub client: AgentClient,
    pub vfolder_root: String,
    /// The agent's identity from its `hello` reply: one per agent home (see `agent::identity`).
    pub identity: Option<String>,
}

pub fn vfolder_root(node: &Node) -> String {
    node.vfolder_root.as_ref().map_or_else(|| DEFAULT_VFOLDER_ROOT.to_string(), |r| r.value.clone())
}

/// Where and how to reach a node over SSH: the lab over the controller's ssh_config over the defaults
/// ([`ssh_target::resolve`]).
pub fn ssh_target(cluster: &Cluster, node: &Node, options: &ConnectOptions) -> Result<SshTarget, SshError> {
    ssh_target::resolve(
        cluster,
        node,
        &options.ssh_config,
        options.accept_new_host_keys,
        &ssh_target::Local::from_env(),
    )
}

/// How long the controller waits for the node's agent: the node's `timeouts` over the cluster's over
/// the defaults.
pub fn deadlines(cluster: &Cluster, node: &Node) -> Deadlines {
    let pick = |n: &Option<crate::source::Spanned<Duration>>, c: &Option<crate::source::Spanned<Duration>>, d| {
        n.as_ref().or(c.as_ref()).map_or(d, |t| t.value)
    };
    let default = Deadlines::default();
    Deadlines {
        observe: pick(&node.timeouts.observe, &cluster.timeouts.observe, default.observe),
        change: pick(&node.timeouts.change, &cluster.timeouts.change, default.change),
        image: pick(&node.timeouts.image, &cluster.timeouts.image, default.image),
    }
}

/// Reaches the node's agent and shakes hands; with `lease`, takes the cluster's apply lease. Connecting
/// is bounded by the SSH connect timeout, installing and starting the agent by the `change` deadline,
/// the handshake by the `observe` one.
pub async fn open(
    cluster: &Cluster,
    node: &Node,
    options: &ConnectOptions,
    lease: bool,
) -> Result<NodeConn, NodeFailure> {
    let name = node.name.value.as_str();
    let deadlines = deadlines(cluster, node);
    let stream = match tokio::time::timeout(deadlines.change, options.connector.start(cluster, node, options)).await {
        Ok(stream) => stream?,
        Err(_) => {
            return Err(NodeFailure::unreachable(
                name,
                "bai::agent::start_timeout",
                format!(
                    "node `{name}`: installing and starting the agent took longer than {}",
                    crate::config::value::format_duration(deadlines.change)
                ),
                Some("the node accepted SSH but its commands do not finish; log in and look, or raise `timeouts change=`".into()),
            ));
        }
    };
    let mut client = AgentClient::new(stream).with_deadlines(deadlines);
    match client.hello(cluster.name.value.as_str(), name, lease, &options.holder).await {
        Ok(reply) => {
            Ok(NodeConn { node: name.to_string(), client, vfolder_root: vfolder_root(node), identity: reply.identity })
        }
        Err(e) => Err(hello_failure(name, e)),
    }
}

/// The agent's stdio on the node: a local child process, or over SSH after installing the agent.
pub(crate) async fn start_agent(
    cluster: &Cluster,
    node: &Node,
    options: &ConnectOptions,
) -> Result<crate::transport::AgentStream, NodeFailure> {
    let name = node.name.value.as_str();
    Ok(if node.is_local() {
        crate::transport::local::spawn(&options.agent_binary).map_err(|e| {
            NodeFailure::unreachable(
                name,
                "bai::agent::local_start",
                format!("node `{name}`: cannot start the local agent: {e}"),
                None,
            )
        })?
    } else {
        let target = ssh_target(cluster, node, options).map_err(|e| ssh_failure(name, &e))?;
        let session = connect(&target).await.map_err(|e| ssh_failure(name, &e))?;
        // The common case costs one exec: the installed agent, started where it is. A fresh node gets the
        // agent uploaded on that same exec. Only when something else is there (or the node is of another
        // architecture) is the agent installed on an exec of its own, then started again: three execs,
        // four when a probe says what is there.
        let stream = match session.start_agent(&options.agent_binary).await {
            Ok(Started::Ready(stream)) => stream,
            Ok(started) => {
                let facts = match &started {
                    Started::Absent(facts) => Some(facts),
                    Started::Ready(_) | Started::NotReady => None,
                };
                let binary = match session.install_agent(&options.agent_binary, facts).await {
                    Ok(_) => options.agent_binary.clone(),
                    // A node of another architecture gets the build the lab names for it (`agent binary="…"`).
                    Err(crate::transport::ssh::SshError::ArchMismatch { .. }) if cluster.agent_binary.is_some() => {
                        let other = cluster.agent_binary.as_ref().map(|b| b.value.clone()).unwrap_or_default();
                        session.install_agent(&other, None).await.map_err(|e| ssh_failure(name, &e))?;
                        other
                    }
                    Err(e) => return Err(ssh_failure(name, &e)),
                };
                match session.start_installed_agent(&binary).await.map(Started::ready) {
                    Ok(Some(stream)) => stream,
                    Ok(None) => {
                        return Err(NodeFailure::unreachable(
                            name,
                            "bai::agent::start",
                            format!("node `{name}`: the agent was installed but does not start"),
                            Some("log in and run the agent under ~/.local/share/bai/agent/ by hand to see why".into()),
                        ));
                    }
                    Err(e) => return Err(ssh_failure(name, &e)),
                }
            }
            Err(e) => return Err(ssh_failure(name, &e)),
        };
        let session = std::sync::Arc::new(session);
        crate::transport::AgentStream {
            reader: stream.reader,
            writer: stream.writer,
            keepalive: Box::new(stream.keepalive),
            tunnel: Some(session),
        }
    })
}

fn hello_failure(name: &str, e: ClientError) -> NodeFailure {
    match e {
        ClientError::Rpc(e) if e.kind == ErrorKind::LeaseHeld => NodeFailure::refused(
            name,
            e.error_code().to_string(),
            e.message,
            Some("a second `bai apply` waits its turn; the lease ends when the other run ends or dies".into()),
        ),
        e => {
            let f = Failure::of(&e);
            NodeFailure::unreachable(name, f.code, format!("node `{name}`: {}", f.message), f.help)
        }
    }
}

/// Takes the cluster's apply lease on a node reached without it (a second `hello`).
pub async fn take_lease(conn: &mut NodeConn, cluster: &str, holder: &str) -> Result<(), NodeFailure> {
    let node = conn.node.clone();
    conn.client.hello(cluster, &node, true, holder).await.map(|_| ()).map_err(|e| hello_failure(&node, e))
}

/// Nodes that reached one and the same agent (one agent home), as pairs in the order given: the first
/// node to tell an identity, then each later one telling it again. Nodes that told none are not compared.
pub fn shared_agents<'a>(identities: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Vec<(String, String)> {
    let mut first: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut pairs = Vec::new();
    for (node, identity) in identities {
        let Some(identity) = identity else { continue };
        match first.get(identity) {
            Some(earlier) => pairs.push((earlier.to_string(), node.to_string())),
            None => {
                first.insert(identity, node);
            }
        }
    }
    pairs
}

/// Why a lab whose nodes `a` and `b` reach one agent home is refused.
pub fn shared_agent_failure(cluster: &str, a: &str, b: &str) -> NodeFailure {
    NodeFailure {
        node: b.to_string(),
        unreachable: false,
        code: "bai::agent::shared_home".into(),
        message: format!(
            "nodes `{a}` and `{b}` reach the same agent (one machine, one agent home): they would share one \
             apply lease, one state and one history, so nothing of cluster `{cluster}` is changed or shown"
        ),
        help: Some(
            "list each machine once per agent home; nodes on one machine need homes of their own (another \
             SSH user, or `BAI_HOME` set for the agent)"
                .into(),
        ),
    }
}

fn ssh_failure(node: &str, e: &crate::transport::ssh::SshError) -> NodeFailure {
    let f = Failure::of(e);
    NodeFailure::unreachable(node, f.code, f.message, f.help)
}

/// What one node holds for the cluster, checked as what a node says must be ([`crate::untrusted`]).
pub async fn observe(conn: &mut NodeConn, cluster: &str) -> Result<NodeSnapshot, NodeFailure> {
    let node = conn.node.clone();
    let mut snapshot: NodeSnapshot = conn
        .client
        .call(Method::Observe(Observe {
            cluster: cluster.to_string(),
            node: node.clone(),
            vfolder_root: conn.vfolder_root.clone(),
        }))
        .await
        .map_err(|e| {
            let help = matches!(e, ClientError::Timeout { .. }).then(|| {
                "the agent answers but its work does not finish (a wedged Docker engine looks like this): \
                 check `docker info` on the node, or raise `timeouts observe=`"
                    .to_string()
            });
            let f = Failure::of(&e);
            NodeFailure::unreachable(
                &node,
                f.code,
                format!("node `{node}`: observing failed: {}", f.message),
                help.or(f.help),
            )
        })?;
    crate::untrusted::check_snapshot(&node, &mut snapshot).map_err(|why| {
        NodeFailure::refused(
            &node,
            "bai::agent::unbelievable",
            format!("node `{node}`: its answer to `observe` is not believable: {why}"),
            Some("the node's agent may be compromised or broken; nothing on it was changed".into()),
        )
    })?;
    Ok(snapshot)
}

/// This process's user as `/etc/passwd` names it (a container or CI job often has no `$USER`), else `uid N`.
fn login_name() -> String {
    // SAFETY: getuid cannot fail and touches no memory of ours.
    let uid = unsafe { libc::getuid() };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
        .next()
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// `user@host pid N` of this controller.
pub fn holder() -> String {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(login_name);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host} pid {}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_telling_one_identity_share_an_agent() {
        let told = [("a", Some("1")), ("b", Some("2")), ("c", Some("1")), ("d", None), ("e", None), ("f", Some("1"))];
        assert_eq!(shared_agents(told), vec![("a".into(), "c".into()), ("a".into(), "f".into())]);
        assert!(shared_agents([("a", Some("1")), ("b", Some("2"))]).is_empty());
        assert!(shared_agents([("a", None), ("b", None)]).is_empty(), "no identity, nothing to compare");
    }

    #[test]
    fn the_login_name_comes_from_passwd() {
        // This process's uid has a name in /etc/passwd on every machine the tests run on (root, a CI user).
        let name = login_name();
        assert!(!name.is_empty() && !name.starts_with("uid "), "{name}");
    }

    #[test]
    fn a_node_failure_names_its_node_once_and_keeps_its_code() {
        let at =
            NodeFailure::unreachable("a", "bai::ssh::connect", "node `a` (10.0.0.1:22): cannot connect".into(), None);
        assert_eq!(at.failure().message, "node `a` unreachable (10.0.0.1:22): cannot connect");
        assert_eq!(at.failure().code, "bai::ssh::connect");
        let other = NodeFailure::refused("b", "bai::agent::lease_held", "held by x".into(), Some("wait".into()));
        assert_eq!(other.failure().message, "node `b` refused: held by x");
        assert_eq!(other.failure().help.as_deref(), Some("wait"));
    }
}
