//! Carrying out a plan on the nodes.
//!
//! Changes run in phases: creates, updates and replaces by graph depth (node agents, then images and
//! vfolders, then sessions, then the sessions that depend on those), deletes after, deepest kind first.
//! Within a phase the nodes work in parallel (at most `parallel` at once), each node's changes one after
//! another on its one agent connection. A change whose predecessor failed or was skipped is skipped; a
//! node whose connection broke fails the rest of its changes; other nodes carry on. The outcome of every
//! change is data, reported at the end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::future::join_all;
use tokio::sync::Semaphore;

use crate::fleet::NodeConn;
use crate::fleet::context;
use crate::graph::{Kind, ResourceGraph, ResourceId};
use crate::model::{Cluster, ImageSource as ConfigSource};
use crate::plan::{Action, Change};
use crate::protocol::*;
use crate::state::ClusterState;
use crate::transport::client::ClientError;

/// What happened to one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(String),
    Failed(String),
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct ChangeResult {
    pub change: Change,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// Everything a change needs besides its node's connection.
pub struct Input<'a> {
    pub cluster: &'a Cluster,
    pub desired: &'a ClusterState,
    pub observed: &'a ClusterState,
    pub graph: &'a ResourceGraph,
    pub allow_data_loss: bool,
    pub parallel: usize,
    /// The cluster's entries of `bai.lock`, enforced on every image made; `None` without a lock.
    pub lock: Option<&'a crate::lock::ClusterLock>,
}

/// A move to another node is a delete on the old node and a create on the new one.
fn split_moves(changes: &[Change], observed: &ClusterState) -> Vec<Change> {
    let mut out = Vec::new();
    for c in changes {
        let old_node = match c.id.kind {
            Kind::Session => observed.sessions.get(c.id.name.as_str()).map(|s| s.node.to_string()),
            Kind::Vfolder => observed.vfolders.get(c.id.name.as_str()).map(|v| v.node.to_string()),
            _ => None,
        };
        match old_node {
            Some(old) if c.action == Action::Replace && Some(&old) != c.node.as_ref() => {
                let mut delete = c.clone();
                delete.action = Action::Delete;
                delete.node = Some(old);
                let mut create = c.clone();
                create.action = Action::Create;
                out.push(create);
                out.push(delete);
            }
            _ => out.push(c.clone()),
        }
    }
    out
}

fn phase_of(c: &Change, levels: &HashMap<ResourceId, usize>) -> (usize, usize) {
    if c.action == Action::Delete {
        let rank = match c.id.kind {
            Kind::Session => 0,
            Kind::Image | Kind::Vfolder => 1,
            Kind::Node => 2,
        };
        (1, rank)
    } else {
        (0, levels.get(&c.id).copied().unwrap_or(0))
    }
}

/// Runs `changes` (one cluster's, in plan order) over `conns`, calling `report` as each finishes.
pub async fn execute(
    input: &Input<'_>,
    changes: &[Change],
    conns: &mut BTreeMap<String, NodeConn>,
    report: &(dyn Fn(&ChangeResult) + Sync),
) -> Vec<ChangeResult> {
    let changes = split_moves(changes, input.observed);
    let levels = input.graph.levels();
    let mut phases: BTreeMap<(usize, usize), Vec<Change>> = BTreeMap::new();
    for c in changes {
        phases.entry(phase_of(&c, &levels)).or_default().push(c);
    }
    let mut results: Vec<ChangeResult> = Vec::new();
    let mut ok: HashMap<(ResourceId, Action), bool> = HashMap::new();
    let mut broken: HashMap<String, String> = HashMap::new();
    let semaphore = Arc::new(Semaphore::new(input.parallel.max(1)));
    for (_, phase) in phases {
        let mut by_node: BTreeMap<String, Vec<Change>> = BTreeMap::new();
        for c in phase {
            by_node.entry(c.node.clone().unwrap_or_default()).or_default().push(c);
        }
        let mut work = Vec::new();
        for (node, node_changes) in by_node {
            let conn = conns.remove(&node);
            let gate = semaphore.clone();
            let failed_before: Vec<ResourceId> =
                ok.iter().filter(|(_, good)| !**good).map(|((id, _), _)| id.clone()).collect();
            let broken_reason = broken.get(&node).cloned();
            work.push(async move {
                let _permit = gate.acquire_owned().await.ok();
                let mut conn = conn;
                let mut done = Vec::new();
                let mut node_failed: Vec<ResourceId> = failed_before;
                let mut broken_reason = broken_reason;
                for change in node_changes {
                    let started = Instant::now();
                    let outcome = if let Some(reason) = &broken_reason {
                        Outcome::Failed(reason.clone())
                    } else if let Some(blocker) = blocked_by(input, &change, &node_failed) {
                        Outcome::Skipped(format!("`{blocker}` failed or was skipped"))
                    } else if let Some(live) = conn.as_mut() {
                        match run_change(input, live, &change).await {
                            Ok(detail) => Outcome::Done(detail),
                            Err(ChangeError::Node(message)) => {
                                let reason = format!("node `{node}` stopped answering: {message}");
                                broken_reason = Some(reason.clone());
                                // Dropping the connection makes the agent stop whatever it was still
                                // doing and free the lease; nothing more is sent to this node.
                                conn = None;
                                Outcome::Failed(reason)
                            }
                            Err(ChangeError::Change(message)) => Outcome::Failed(message),
                        }
                    } else {
                        Outcome::Failed(format!("node `{node}` is not connected"))
                    };
                    if !matches!(outcome, Outcome::Done(_)) {
                        node_failed.push(change.id.clone());
                    }
                    let result = ChangeResult { change, outcome, elapsed: started.elapsed() };
                    report(&result);
                    done.push(result);
                }
                (node, conn, done, broken_reason)
            });
        }
        for (node, conn, done, broken_reason) in join_all(work).await {
            if let Some(conn) = conn {
                conns.insert(node.clone(), conn);
            }
            if let Some(reason) = broken_reason {
                broken.insert(node, reason);
            }
            for r in done {
                ok.insert((r.change.id.clone(), r.change.action), matches!(r.outcome, Outcome::Done(_)));
                results.push(r);
            }
        }
    }
    results
}

/// The first failed predecessor of a change: graph predecessors for what is created, and for deletes,
/// anything of the same node that could not be removed before it.
fn blocked_by(input: &Input<'_>, change: &Change, failed: &[ResourceId]) -> Option<String> {
    if change.action != Action::Delete {
        let index = input.graph.get(&change.id)?;
        return input
            .graph
            .graph
            .neighbors_directed(index, petgraph::Direction::Incoming)
            .map(|p| &input.graph.graph[p])
            .find(|p| failed.contains(p))
            .map(ToString::to_string);
    }
    let depth = |k: Kind| match k {
        Kind::Session => 0,
        Kind::Image | Kind::Vfolder => 1,
        Kind::Node => 2,
    };
    failed
        .iter()
        .find(|f| depth(f.kind) < depth(change.id.kind) && (f.kind != Kind::Image || f.node == change.node))
        .map(ToString::to_string)
}

enum ChangeError {
    /// The connection is gone: the node's remaining changes cannot run.
    Node(String),
    /// This change failed; the node still answers.
    Change(String),
}

impl From<ClientError> for ChangeError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Rpc(e) => ChangeError::Change(e.message),
            e @ ClientError::Timeout { .. } => ChangeError::Node(format!(
                "{e}; the change may be half made there: `bai plan` shows where the node stands"
            )),
            other => ChangeError::Node(other.to_string()),
        }
    }
}

async fn run_change(input: &Input<'_>, conn: &mut NodeConn, change: &Change) -> Result<String, ChangeError> {
    let cluster = input.cluster.name.value.to_string();
    let name = change.id.name.clone();
    match (change.id.kind, change.action) {
        (Kind::Node, Action::Delete) => {
            let _: serde_json::Value = conn.client.call(Method::Leave(Leave { cluster })).await?;
            Ok("left the cluster".into())
        }
        (Kind::Node, _) => {
            let labels = input.desired.nodes.get(name.as_str()).map(|n| n.labels.clone()).unwrap_or_default();
            let _: serde_json::Value = conn.client.call(Method::SetLabels(SetLabels { cluster, labels })).await?;
            Ok("enrolled".into())
        }
        (Kind::Image, Action::Delete) => {
            let _: serde_json::Value = conn.client.call(Method::RemoveImage(RemoveImage { cluster, name })).await?;
            Ok("forgotten (left in Docker's cache)".into())
        }
        (Kind::Image, _) => {
            let node = change.id.node.clone().unwrap_or_default();
            let key = (node.as_str().into(), name.as_str().into());
            let Some(state) = input.desired.images.get(&key) else {
                return Err(ChangeError::Change(format!("image `{name}` is not in the configuration")));
            };
            let entry = input.lock.and_then(|l| l.get(name.as_str()));
            let source = upload_source(input, conn, &name).await?;
            let locked = entry.map(|e| locked_facts(&name, e, &source)).transpose().map_err(ChangeError::Change)?;
            let reply: serde_json::Value = conn
                .client
                .call(Method::EnsureImage(EnsureImage {
                    cluster,
                    name: name.clone(),
                    spec: state.spec.clone(),
                    spec_hash: state.hash.clone(),
                    source,
                    locked,
                }))
                .await?;
            Ok(format!("image {}", reply["id"].as_str().unwrap_or("ready")))
        }
        (Kind::Vfolder, Action::Delete) => {
            let reply: serde_json::Value = conn
                .client
                .call(Method::RemoveVfolder(RemoveVfolder {
                    cluster,
                    name,
                    vfolder_root: conn.vfolder_root.clone(),
                    allow_data_loss: input.allow_data_loss,
                }))
                .await?;
            Ok(match reply["outcome"].as_str() {
                Some("tombstoned") => format!("moved aside to {}", reply["path"].as_str().unwrap_or("a tombstone")),
                Some("absent") => "already gone".into(),
                _ => "removed (it was empty)".into(),
            })
        }
        (Kind::Vfolder, _) => {
            let Some(v) = input.desired.vfolders.get(name.as_str()) else {
                return Err(ChangeError::Change(format!("vfolder `{name}` is not in the configuration")));
            };
            let _: serde_json::Value = conn
                .client
                .call(Method::EnsureVfolder(EnsureVfolder {
                    cluster,
                    name,
                    vfolder_root: conn.vfolder_root.clone(),
                    permission: v.permission,
                    quota: v.quota,
                }))
                .await?;
            Ok("ready".into())
        }
        (Kind::Session, Action::Delete) => {
            let _: serde_json::Value = conn.client.call(Method::RemoveSession(RemoveSession { cluster, name })).await?;
            Ok("removed".into())
        }
        (Kind::Session, action) => {
            let Some(s) = input.desired.sessions.get(name.as_str()) else {
                return Err(ChangeError::Change(format!("session `{name}` is not in the configuration")));
            };
            let Some(spec) = s.spec.clone() else {
                return Err(ChangeError::Change(format!("session `{name}` has no spec")));
            };
            let secrets = crate::fleet::secrets::values_of(&input.cluster.root, &name, &spec.env)
                .map_err(|e| ChangeError::Change(e.to_string()))?;
            if action == Action::Replace {
                let _: serde_json::Value = conn
                    .client
                    .call(Method::RemoveSession(RemoveSession { cluster: cluster.clone(), name: name.clone() }))
                    .await?;
            }
            let _: serde_json::Value = conn
                .client
                .call(Method::CreateSession(Box::new(CreateSession {
                    cluster,
                    node: conn.node.clone(),
                    name,
                    spec,
                    spec_hash: s.hash.clone(),
                    vfolder_root: conn.vfolder_root.clone(),
                    secrets,
                })))
                .await?;
            Ok("running".into())
        }
    }
}

/// What the agent is to enforce for an image with a lock entry. The context or archive about to be sent
/// must be the locked one: it was checked before the run, but the file may have changed since.
fn locked_facts(image: &str, entry: &crate::lock::LockedImage, source: &ImageSource) -> Result<LockedFacts, String> {
    use crate::lock::LockedSource;
    let sent = match source {
        ImageSource::Pull => None,
        ImageSource::Build { context_sha256, .. } => Some(context_sha256.as_str()),
        ImageSource::Archive { sha256 } => Some(sha256.as_str()),
    };
    if sent != entry.source.content() {
        return Err(format!(
            "image `{image}`: bai.lock pins sha256 `{}`, but the {} now hashes to `{}`",
            entry.source.content().unwrap_or("-"),
            if matches!(source, ImageSource::Archive { .. }) { "archive" } else { "build context" },
            sent.unwrap_or("-")
        ));
    }
    Ok(match &entry.source {
        LockedSource::Pull { digest } => LockedFacts { digest: digest.clone(), image_id: None },
        other => LockedFacts { digest: None, image_id: other.image_id().map(str::to_string) },
    })
}

const CHUNK: usize = 1 << 20;

/// Uploads a build context or archive when the image needs one; the agent skips blobs it has.
async fn upload_source(input: &Input<'_>, conn: &mut NodeConn, image: &str) -> Result<ImageSource, ChangeError> {
    let Some(config) = input.cluster.images.iter().find(|i| i.name.value.as_str() == image) else {
        return Err(ChangeError::Change(format!("image `{image}` is not in the configuration")));
    };
    let (bytes, sha, source) = match &config.source {
        ConfigSource::Pull => return Ok(ImageSource::Pull),
        ConfigSource::Build { context, dockerfile } => {
            let (bytes, sha) = context::pack(&context.value).map_err(|e| {
                ChangeError::Change(format!("cannot pack build context `{}`: {e}", context.value.display()))
            })?;
            let dockerfile = dockerfile.as_ref().map_or_else(|| "Dockerfile".to_string(), |d| d.value.clone());
            (bytes, sha.clone(), ImageSource::Build { context_sha256: sha, dockerfile })
        }
        ConfigSource::Archive { path } => {
            let bytes = std::fs::read(&path.value)
                .map_err(|e| ChangeError::Change(format!("cannot read archive `{}`: {e}", path.value.display())))?;
            let sha = crate::state::spec::hex_digest(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            (bytes, sha.clone(), ImageSource::Archive { sha256: sha })
        }
    };
    let chunks: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(CHUNK).collect() };
    let mut offset = 0u64;
    for (i, chunk) in chunks.iter().enumerate() {
        let reply: serde_json::Value = conn
            .client
            .call(Method::PutBlob(PutBlob {
                sha256: sha.clone(),
                offset,
                data: base64::engine::general_purpose::STANDARD.encode(chunk),
                last: i + 1 == chunks.len(),
            }))
            .await?;
        if reply["complete"].as_bool() == Some(true) {
            break;
        }
        offset += chunk.len() as u64;
    }
    Ok(source)
}
