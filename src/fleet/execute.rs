//! Carrying out a plan on the nodes.
//!
//! The plan is walked as a DAG of changes, one resource at a time: a change starts as soon as the changes
//! it must follow are finished, whatever the rest of the fleet is doing, so one node's hour-long image
//! build holds back only what depends on that image. Creates, updates and replaces follow the resource
//! graph (node agents, then images and vfolders, then sessions, then the sessions that depend on those).
//! A node's deletes follow every other change on that node, deepest kind first (sessions, then images and
//! vfolders, then leaving the cluster), and the delete half of a move follows its create half.
//!
//! Each node works one change at a time on its one agent connection; at most `parallel` changes run at
//! once across the fleet. A change whose predecessor failed or was skipped is skipped; a node whose
//! connection broke fails the rest of its changes; other nodes carry on. The outcome of every change is
//! data, reported as it finishes and returned in plan order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::failure::Failure;
use crate::fleet::NodeConn;
use crate::fleet::sources::Sources;
use crate::graph::{Kind, ResourceGraph, ResourceId};
use crate::model::Cluster;
use crate::plan::{Action, Change, ResourceState};
use crate::protocol::*;
use crate::transport::client::ClientError;

/// What happened to one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    Done(String),
    /// With the code of what failed (`bai::docker::image_missing`, `bai::agent::timeout`).
    Failed(Failure),
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct ChangeResult {
    pub change: Change,
    pub outcome: ChangeOutcome,
    pub elapsed: Duration,
}

/// Everything a change needs besides its node's connection and what it carries (its desired state).
pub struct ChangeContext<'a> {
    pub cluster: &'a Cluster,
    pub graph: &'a ResourceGraph,
    pub allow_data_loss: bool,
    pub parallel: usize,
    /// The cluster's entries of `bai.lock`, enforced on every image made; `None` without a lock.
    pub lock: Option<&'a crate::lock::ClusterLock>,
    /// The secret values read for the desired state's digests: what the containers get.
    pub secrets: &'a crate::fleet::secrets::SecretValues,
    /// The images' contexts and archives, packed and hashed once for every node.
    pub sources: &'a Sources<'a>,
}

/// One change to run and what it waits for, by index into the walk's list.
#[derive(Debug)]
struct Step {
    change: Change,
    /// The node whose connection runs it.
    node: String,
    /// Steps that must have finished (in any way) before this one starts.
    after: Vec<usize>,
    /// Those of `after` whose failure or skip skips this one.
    needs: Vec<usize>,
}

/// A move to another node is a delete on the old node and a create on the new one. Returns the changes
/// with, for each delete half, the index of its create half.
fn split_moves(changes: &[Change]) -> Vec<(Change, Option<usize>)> {
    let mut out: Vec<(Change, Option<usize>)> = Vec::new();
    for c in changes {
        let old_node = match &c.before {
            Some(ResourceState::Session(s)) => Some(s.node.to_string()),
            Some(ResourceState::Vfolder(v)) => Some(v.node.to_string()),
            _ => None,
        };
        match old_node {
            Some(old) if c.action == Action::Replace && Some(&old) != c.node.as_ref() => {
                let mut delete = c.clone();
                delete.action = Action::Delete;
                delete.node = Some(old);
                delete.after = None;
                let mut create = c.clone();
                create.action = Action::Create;
                create.before = None;
                out.push((create, None));
                out.push((delete, Some(out.len() - 1)));
            }
            _ => out.push((c.clone(), None)),
        }
    }
    out
}

/// How deep a kind sits for deletes: what is removed first has the lowest depth.
fn delete_depth(kind: Kind) -> usize {
    match kind {
        Kind::Session => 0,
        Kind::Image | Kind::Vfolder => 1,
        Kind::Node => 2,
    }
}

/// The walk: each change with what it follows.
fn steps(changes: &[Change], graph: &ResourceGraph) -> Vec<Step> {
    let split = split_moves(changes);
    let node_of = |c: &Change| c.node.clone().unwrap_or_default();
    let making: HashMap<&ResourceId, usize> = split
        .iter()
        .enumerate()
        .filter(|(_, (c, _))| c.action != Action::Delete)
        .map(|(i, (c, _))| (&c.id, i))
        .collect();
    // Each node's changes, so that a delete looks at its own node's only (a fleet has many).
    let mut on_node: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (c, _)) in split.iter().enumerate() {
        on_node.entry(node_of(c)).or_default().push(i);
    }
    split
        .iter()
        .enumerate()
        .map(|(i, (change, create_half))| {
            let node = node_of(change);
            let (mut after, mut needs) = (Vec::new(), Vec::new());
            if change.action != Action::Delete {
                // What the resource graph puts before it, where the plan changes that too.
                if let Some(index) = graph.get(&change.id) {
                    for p in graph.graph.neighbors_directed(index, petgraph::Direction::Incoming) {
                        if let Some(&j) = making.get(&graph.graph[p]) {
                            after.push(j);
                            needs.push(j);
                        }
                    }
                }
            } else {
                let depth = delete_depth(change.id.kind);
                for &j in on_node.get(&node).into_iter().flatten() {
                    let other = &split[j].0;
                    if j == i {
                        continue;
                    }
                    if other.action != Action::Delete {
                        after.push(j);
                    }
                    // A vfolder or image still used by a session that could not be changed, or a node still
                    // holding what could not be removed, stays.
                    if delete_depth(other.id.kind) < depth {
                        after.push(j);
                        needs.push(j);
                    }
                }
                // The old place of a move goes only once the new one is made.
                if let Some(j) = *create_half {
                    after.push(j);
                    needs.push(j);
                }
            }
            after.sort_unstable();
            after.dedup();
            needs.sort_unstable();
            needs.dedup();
            Step { change: change.clone(), node, after, needs }
        })
        .collect()
}

/// Where the walk stands: which steps are finished and how, and whose turn has come on which node.
struct Walk<'s> {
    steps: &'s [Step],
    /// Per step: `None` until finished, then whether it was done.
    done: Vec<Option<bool>>,
    results: Vec<Option<ChangeResult>>,
    /// Per step, how many of its `after` have not finished.
    pending: Vec<usize>,
    /// Per step, the steps that have it in their `after`.
    dependents: Vec<Vec<usize>>,
    /// Steps whose turn has come, per node, in plan order.
    ready: HashMap<&'s str, BTreeSet<usize>>,
    /// Nodes running no change that have a step whose turn has come.
    startable: BTreeSet<&'s str>,
    busy: HashSet<&'s str>,
    /// Nodes whose connection broke, with why.
    broken: HashMap<&'s str, Failure>,
}

impl<'s> Walk<'s> {
    fn new(steps: &'s [Step], report: &(dyn Fn(&ChangeResult) + Sync)) -> Self {
        let mut dependents = vec![Vec::new(); steps.len()];
        for (i, step) in steps.iter().enumerate() {
            for &j in &step.after {
                dependents[j].push(i);
            }
        }
        let mut walk = Walk {
            steps,
            done: vec![None; steps.len()],
            results: vec![None; steps.len()],
            pending: steps.iter().map(|s| s.after.len()).collect(),
            dependents,
            ready: HashMap::new(),
            startable: BTreeSet::new(),
            busy: HashSet::new(),
            broken: HashMap::new(),
        };
        let first: Vec<usize> = (0..steps.len()).filter(|&i| walk.pending[i] == 0).collect();
        walk.turn_comes(first, report);
        walk
    }

    /// Records how step `i` ended and lets the steps that waited for it take their turn.
    fn finish(&mut self, i: usize, outcome: ChangeOutcome, elapsed: Duration, report: &(dyn Fn(&ChangeResult) + Sync)) {
        self.record(i, outcome, elapsed, report);
        let mut turn = Vec::new();
        self.release(i, &mut turn);
        self.turn_comes(turn, report);
    }

    fn record(&mut self, i: usize, outcome: ChangeOutcome, elapsed: Duration, report: &(dyn Fn(&ChangeResult) + Sync)) {
        self.done[i] = Some(matches!(outcome, ChangeOutcome::Done(_)));
        let result = ChangeResult { change: self.steps[i].change.clone(), outcome, elapsed };
        report(&result);
        self.results[i] = Some(result);
    }

    /// Adds to `turn` the dependents of finished step `i` whose last wait it was.
    fn release(&mut self, i: usize, turn: &mut Vec<usize>) {
        for &d in &self.dependents[i] {
            self.pending[d] -= 1;
            if self.pending[d] == 0 {
                turn.push(d);
            }
        }
    }

    /// Steps whose turn has come: a step that cannot run is settled at once (which may let others take
    /// their turn: a worklist, not recursion, since chains of `depends-on` may be long); the others queue
    /// on their node.
    fn turn_comes(&mut self, mut turn: Vec<usize>, report: &(dyn Fn(&ChangeResult) + Sync)) {
        while let Some(i) = turn.pop() {
            let step = &self.steps[i];
            let node = step.node.as_str();
            // A broken node's own failure says more than the skip it causes.
            let settled = if let Some(reason) = self.broken.get(node) {
                Some(ChangeOutcome::Failed(reason.clone()))
            } else {
                step.needs
                    .iter()
                    .find(|&&j| self.done[j] == Some(false))
                    .map(|&j| ChangeOutcome::Skipped(format!("`{}` failed or was skipped", self.steps[j].change.id)))
            };
            match settled {
                Some(outcome) => {
                    self.record(i, outcome, Duration::ZERO, report);
                    self.release(i, &mut turn);
                }
                None => {
                    self.ready.entry(node).or_default().insert(i);
                    if !self.busy.contains(node) {
                        self.startable.insert(node);
                    }
                }
            }
        }
    }

    /// Whether `node` has a step whose turn has come.
    fn has_ready(&self, node: &str) -> bool {
        self.ready.get(node).is_some_and(|q| !q.is_empty())
    }
}

/// Runs `changes` (one cluster's, in plan order) over `conns`, calling `report` as each finishes.
pub async fn execute(
    input: &ChangeContext<'_>,
    changes: &[Change],
    conns: &mut BTreeMap<String, NodeConn>,
    report: &(dyn Fn(&ChangeResult) + Sync),
) -> Vec<ChangeResult> {
    let steps = steps(changes, input.graph);
    let mut walk = Walk::new(&steps, report);
    let mut running = FuturesUnordered::new();
    let parallel = input.parallel.max(1);
    loop {
        while running.len() < parallel {
            let Some(node) = walk.startable.pop_first() else { break };
            let Some(i) = walk.ready.get_mut(node).and_then(BTreeSet::pop_first) else { continue };
            let unable = match (walk.broken.get(node), conns.remove(node)) {
                (Some(reason), conn) => Err((ChangeOutcome::Failed(reason.clone()), conn)),
                (None, None) => Err((
                    ChangeOutcome::Failed(Failure::error(
                        "bai::agent::not_connected",
                        format!("node `{node}` is not connected"),
                    )),
                    None,
                )),
                (None, Some(conn)) => Ok(conn),
            };
            match unable {
                Err((outcome, conn)) => {
                    if let Some(conn) = conn {
                        conns.insert(node.to_string(), conn);
                    }
                    walk.finish(i, outcome, Duration::ZERO, report);
                    if walk.has_ready(node) {
                        walk.startable.insert(node);
                    }
                }
                Ok(mut conn) => {
                    walk.busy.insert(node);
                    let step = &steps[i];
                    running.push(async move {
                        let started = Instant::now();
                        let outcome = run_change(input, &mut conn, &step.change).await;
                        (i, conn, outcome, started.elapsed())
                    });
                }
            }
        }
        let Some((i, conn, outcome, elapsed)) = running.next().await else { break };
        let node = steps[i].node.as_str();
        walk.busy.remove(node);
        let outcome = match outcome {
            Ok(detail) => {
                conns.insert(node.to_string(), conn);
                ChangeOutcome::Done(detail)
            }
            Err(ChangeError::Change(failure)) => {
                conns.insert(node.to_string(), conn);
                ChangeOutcome::Failed(failure)
            }
            Err(ChangeError::Node(failure)) => {
                // Dropping the connection makes the agent stop whatever it was still doing and free the
                // lease; nothing more is sent to this node.
                drop(conn);
                let reason = failure.context(format_args!("node `{node}` stopped answering"));
                walk.broken.insert(node, reason.clone());
                ChangeOutcome::Failed(reason)
            }
        };
        walk.finish(i, outcome, elapsed, report);
        if walk.has_ready(node) {
            walk.startable.insert(node);
        }
    }
    // The walk follows a DAG and settles what cannot run, so every step finishes; were one ever left, it
    // is reported rather than lost.
    steps
        .iter()
        .zip(walk.results)
        .map(|(step, result)| {
            result.unwrap_or_else(|| ChangeResult {
                change: step.change.clone(),
                outcome: ChangeOutcome::Skipped("it waited on a change that never finished".into()),
                elapsed: Duration::ZERO,
            })
        })
        .collect()
}

enum ChangeError {
    /// The connection is gone: the node's remaining changes cannot run.
    Node(Failure),
    /// This change failed; the node still answers.
    Change(Failure),
}

impl ChangeError {
    /// A change the controller could not even send, with its code.
    fn change(code: &str, message: impl Into<String>) -> Self {
        ChangeError::Change(Failure::error(code, message))
    }
}

impl From<ClientError> for ChangeError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Rpc(e) => ChangeError::Change(Failure::of(&e)),
            e @ ClientError::Timeout { .. } => {
                let mut f = Failure::of(&e);
                f.message.push_str("; the change may be half made there: `bai plan` shows where the node stands");
                ChangeError::Node(f)
            }
            other => ChangeError::Node(Failure::of(&other)),
        }
    }
}

/// A change that carries no desired state to make (a bai bug: every plan's creates, updates and replaces
/// carry theirs).
fn unplanned(change: &Change) -> ChangeError {
    ChangeError::change("bai::apply::not_planned", format!("{} carries no desired state to make", change.id))
}
/// A build context or archive that cannot be packed or read on the controller.
const SOURCE: &str = "bai::image::source";

async fn run_change(input: &ChangeContext<'_>, conn: &mut NodeConn, change: &Change) -> Result<String, ChangeError> {
    let cluster = input.cluster.name.value.to_string();
    let name = change.id.name.clone();
    match (change.id.kind, change.action) {
        (Kind::Node, Action::Delete) => {
            let _: Ack = conn.client.call(Method::Leave(Leave { cluster })).await?;
            Ok("left the cluster".into())
        }
        (Kind::Node, _) => {
            let Some(ResourceState::Node(state)) = &change.after else { return Err(unplanned(change)) };
            let labels = state.labels.clone();
            let _: Ack = conn.client.call(Method::SetLabels(SetLabels { cluster, labels })).await?;
            Ok("enrolled".into())
        }
        (Kind::Image, Action::Delete) => {
            let _: Ack = conn.client.call(Method::RemoveImage(RemoveImage { cluster, name })).await?;
            Ok("forgotten (left in Docker's cache)".into())
        }
        (Kind::Image, _) => {
            let Some(ResourceState::Image(state)) = &change.after else { return Err(unplanned(change)) };
            let entry = input.lock.and_then(|l| l.get(name.as_str()));
            let source = upload_source(input, conn, &name).await?;
            let locked = entry
                .map(|e| locked_facts(&name, e, &source))
                .transpose()
                .map_err(|m| ChangeError::change("bai::lock::changed", m))?;
            let reply: EnsureImageReply = conn
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
            Ok(format!("image {}", crate::untrusted::excerpt(&reply.id, 80)))
        }
        (Kind::Vfolder, Action::Delete) => {
            let reply: RemoveVfolderReply = conn
                .client
                .call(Method::RemoveVfolder(RemoveVfolder {
                    cluster,
                    name,
                    vfolder_root: conn.vfolder_root.clone(),
                    allow_data_loss: input.allow_data_loss,
                }))
                .await?;
            Ok(match reply {
                RemoveVfolderReply::Tombstoned { path } => {
                    format!("moved aside to {}", crate::untrusted::excerpt(&path, 400))
                }
                RemoveVfolderReply::Absent => "already gone".into(),
                RemoveVfolderReply::Deleted => "removed (it was empty)".into(),
            })
        }
        (Kind::Vfolder, _) => {
            let Some(ResourceState::Vfolder(v)) = &change.after else { return Err(unplanned(change)) };
            let _: Ack = conn
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
            let _: Ack = conn.client.call(Method::RemoveSession(RemoveSession { cluster, name })).await?;
            Ok("removed".into())
        }
        (Kind::Session, _) => {
            let Some(ResourceState::Session(s)) = &change.after else { return Err(unplanned(change)) };
            let Some(spec) = s.spec.clone() else { return Err(unplanned(change)) };
            let secrets = input.secrets.of_session(&name).map_err(|e| ChangeError::Change(Failure::of(&e)))?;
            // A replace is one `create_session`: the agent makes the new container before the old one goes
            // and keeps the old one when the engine refuses the new.
            let _: Ack = conn
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
fn locked_facts(image: &str, entry: &crate::lock::LockedImage, source: &ImageRecipe) -> Result<LockedFacts, String> {
    use crate::lock::LockedSource;
    let sent = match source {
        ImageRecipe::Pull => None,
        ImageRecipe::Build { context_sha256, .. } => Some(context_sha256.as_str()),
        ImageRecipe::Archive { sha256 } => Some(sha256.as_str()),
    };
    if sent != entry.source.content() {
        return Err(format!(
            "image `{image}`: bai.lock pins sha256 `{}`, but the {} now hashes to `{}`",
            entry.source.content().unwrap_or("-"),
            if matches!(source, ImageRecipe::Archive { .. }) { "archive" } else { "build context" },
            sent.unwrap_or("-")
        ));
    }
    Ok(match &entry.source {
        LockedSource::Pull { digest } => LockedFacts { digest: digest.clone(), image_id: None },
        other => LockedFacts { digest: None, image_id: other.image_id().map(str::to_string) },
    })
}

const CHUNK: usize = 1 << 20;

/// Uploads a build context or archive when the image needs one, prepared once for the run
/// ([`Sources`]); the agent skips a blob it has.
async fn upload_source(
    input: &ChangeContext<'_>,
    conn: &mut NodeConn,
    image: &str,
) -> Result<ImageRecipe, ChangeError> {
    let prepared = input.sources.get(image);
    let prepared = prepared.as_ref().as_ref().map_err(|why| ChangeError::change(SOURCE, why.clone()))?;
    let Some((blob, sha)) = &prepared.blob else { return Ok(prepared.source.clone()) };
    let mut offset = 0u64;
    loop {
        let chunk =
            blob.chunk(offset, CHUNK).map_err(|e| ChangeError::change(SOURCE, format!("image `{image}`: {e}")))?;
        let last = offset + chunk.len() as u64 >= blob.len() || chunk.is_empty();
        let reply: PutBlobReply = conn
            .client
            .call(Method::PutBlob(PutBlob {
                sha256: sha.clone(),
                offset,
                data: base64::engine::general_purpose::STANDARD.encode(&chunk),
                last,
            }))
            .await?;
        if reply.complete || last {
            break;
        }
        offset += chunk.len() as u64;
    }
    Ok(prepared.source.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::scripted::{self, Answer, LAB, Log};
    use crate::graph::build_graph;
    use crate::model::Config;
    use crate::plan::diff;
    use crate::state::ClusterState;

    fn config(text: &str) -> Config {
        scripted::lab(text).2.config
    }

    /// Applies the plan from `observed` to the lab over scripted agents for `a` and `b`.
    async fn walk(
        observed: impl FnOnce(&ClusterState) -> ClusterState,
        script: impl Fn(&str, &'static str, &str) -> Answer + Send + Sync + Clone + 'static,
    ) -> (Vec<ChangeResult>, Log) {
        walk_plan(observed, |_| {}, script).await
    }

    /// [`walk`], with the plan altered by `tamper` before it runs.
    async fn walk_plan(
        observed: impl FnOnce(&ClusterState) -> ClusterState,
        tamper: impl FnOnce(&mut crate::plan::Plan),
        script: impl Fn(&str, &'static str, &str) -> Answer + Send + Sync + Clone + 'static,
    ) -> (Vec<ChangeResult>, Log) {
        let config = config(LAB);
        let cluster = &config.clusters[0];
        let desired = ClusterState::desired(cluster);
        let observed = observed(&desired);
        let graph = build_graph(cluster);
        let mut plan = diff(&[(&desired, &observed, &graph)]);
        tamper(&mut plan);
        let input = ChangeContext {
            cluster,
            graph: &graph,
            allow_data_loss: false,
            parallel: 8,
            lock: None,
            secrets: &Default::default(),
            sources: &Sources::new(cluster),
        };
        let log = Log::default();
        let mut conns = BTreeMap::new();
        for node in ["a", "b"] {
            let script = script.clone();
            conns.insert(node.to_string(), scripted::connect(node, &log, move |m, s| script(node, m, s)));
        }
        let results = execute(&input, &plan.changes, &mut conns, &|_| {}).await;
        (results, log)
    }

    fn outcome_of<'r>(results: &'r [ChangeResult], id: &str, node: &str) -> &'r ChangeOutcome {
        results
            .iter()
            .find(|r| r.change.id.to_string() == id && r.change.node.as_deref() == Some(node))
            .map(|r| &r.outcome)
            .unwrap_or_else(|| panic!("no change of {id} on {node} in {results:?}"))
    }

    fn nothing(_: &ClusterState) -> ClusterState {
        ClusterState::empty(crate::model::ClusterName("t".into()))
    }

    #[tokio::test]
    async fn a_slow_image_on_one_node_holds_back_only_what_depends_on_it() {
        let slow = Duration::from_millis(400);
        let (results, log) = walk(nothing, move |node, method, subject| match (node, method, subject) {
            ("a", "ensure_image", "slow") => Answer::Ok(slow),
            _ => Answer::Ok(Duration::ZERO),
        })
        .await;
        assert!(results.iter().all(|r| matches!(r.outcome, ChangeOutcome::Done(_))), "{results:?}");
        let image_done = log.finished("a", "ensure_image", "slow").expect("the slow image was made");
        let other = log.finished("b", "create_session", "on-b").expect("b's session was made");
        assert!(other < image_done, "b's session waited for a's image: {:?}", log.lines());
        // What depends on the slow work waits for it, across nodes too.
        let on_a = log.finished("a", "create_session", "on-a").expect("on-a");
        let after = log.calls().into_iter().find(|c| c.subject == "after-a").expect("after-a");
        assert!(on_a > image_done && after.started >= on_a, "{:?}", log.lines());
    }

    #[tokio::test]
    async fn a_failed_change_skips_what_depends_on_it_and_nothing_else() {
        let (results, log) = walk(nothing, |node, method, _| match (node, method) {
            ("a", "ensure_image") => Answer::Fail("no such image".into()),
            _ => Answer::Ok(Duration::ZERO),
        })
        .await;
        assert!(
            matches!(outcome_of(&results, "image:a/slow", "a"), ChangeOutcome::Failed(f)
                if f.message == "no such image" && f.code == "bai::agent::failed"),
            "{results:?}"
        );
        assert_eq!(
            outcome_of(&results, "session:on-a", "a"),
            &ChangeOutcome::Skipped("`image:a/slow` failed or was skipped".into())
        );
        assert_eq!(
            outcome_of(&results, "session:after-a", "b"),
            &ChangeOutcome::Skipped("`session:on-a` failed or was skipped".into())
        );
        assert!(matches!(outcome_of(&results, "session:on-b", "b"), ChangeOutcome::Done(_)), "{results:?}");
        assert!(matches!(outcome_of(&results, "vfolder:va", "a"), ChangeOutcome::Done(_)), "a still answers");
        assert!(!log.lines().iter().any(|l| l.contains("on-a") || l.contains("after-a")), "{:?}", log.lines());
    }

    #[tokio::test]
    async fn a_node_that_hangs_up_fails_its_remaining_changes_and_the_others_finish() {
        // `a` enrolls, then goes away at its next call: its image or its vfolder, whichever comes first.
        let (results, _) = walk(nothing, |node, method, _| match (node, method) {
            ("a", "set_labels") | ("b", _) => Answer::Ok(Duration::ZERO),
            _ => Answer::HangUp,
        })
        .await;
        assert!(matches!(outcome_of(&results, "node:a", "a"), ChangeOutcome::Done(_)), "{results:?}");
        for id in ["vfolder:va", "image:a/slow"] {
            let outcome = outcome_of(&results, id, "a");
            assert!(
                matches!(outcome, ChangeOutcome::Failed(f) if f.message.starts_with("node `a` stopped answering")),
                "{id}: {outcome:?}"
            );
        }
        assert!(matches!(outcome_of(&results, "session:on-b", "b"), ChangeOutcome::Done(_)), "{results:?}");
        assert!(matches!(outcome_of(&results, "session:after-a", "b"), ChangeOutcome::Skipped(_)), "{results:?}");
        assert_eq!(results.len(), 8, "every change is reported once: {results:?}");
    }

    /// Everything as desired, except session `on-b`, which runs another spec on `node`.
    fn on_b_differs_on(node: &'static str) -> impl FnOnce(&ClusterState) -> ClusterState {
        move |desired| {
            let mut observed = desired.clone();
            let on_b = observed.sessions.get_mut("on-b").expect("on-b");
            on_b.hash = "0".repeat(64);
            on_b.node = crate::model::NodeName(node.to_string());
            observed
        }
    }

    #[tokio::test]
    async fn a_replace_is_one_create_session_so_the_agent_can_keep_the_old_container() {
        let (results, log) = walk(on_b_differs_on("b"), |_, _, _| Answer::Ok(Duration::ZERO)).await;
        assert_eq!(results.len(), 1, "{results:?}");
        assert_eq!(results[0].change.action, Action::Replace);
        assert_eq!(log.lines(), ["b create_session on-b"], "no remove_session before the create");
    }

    #[tokio::test]
    async fn a_move_removes_the_old_session_only_once_the_new_one_runs() {
        let (results, log) = walk(on_b_differs_on("a"), |_, _, _| Answer::Ok(Duration::ZERO)).await;
        assert!(results.iter().all(|r| matches!(r.outcome, ChangeOutcome::Done(_))), "{results:?}");
        assert_eq!(log.lines(), ["b create_session on-b", "a remove_session on-b"]);

        let (results, log) = walk(on_b_differs_on("a"), |node, method, _| match (node, method) {
            ("b", "create_session") => Answer::Fail("the engine said no".into()),
            _ => Answer::Ok(Duration::ZERO),
        })
        .await;
        assert_eq!(
            outcome_of(&results, "session:on-b", "a"),
            &ChangeOutcome::Skipped("`session:on-b` failed or was skipped".into()),
            "the old session stays where the new one could not be made"
        );
        assert_eq!(log.lines(), ["b create_session on-b"], "nothing was removed: {results:?}");
    }

    #[tokio::test]
    async fn replies_are_decoded_as_their_types_and_node_text_is_escaped() {
        // Everything as desired, but vfolder `gone` is on node a and must go.
        let extra = |desired: &ClusterState| {
            let mut observed = desired.clone();
            let mut gone = observed.vfolders.get("va").expect("va").clone();
            gone.node = crate::model::NodeName("a".into());
            observed.vfolders.insert(crate::model::VfolderName("gone".into()), gone);
            observed
        };
        let (results, _) = walk(extra, |_, method, _| match method {
            "remove_vfolder" => Answer::With(serde_json::json!({"outcome": "tombstoned", "path": "/t\u{1b}[2J\nok"})),
            _ => Answer::Ok(Duration::ZERO),
        })
        .await;
        let ChangeOutcome::Done(detail) = outcome_of(&results, "vfolder:gone", "a") else { panic!("{results:?}") };
        assert!(!detail.contains('\u{1b}') && !detail.contains('\n'), "escaped: {detail:?}");

        // An answer of the wrong shape is not taken for success.
        let (results, _) = walk(nothing, |_, method, _| match method {
            "ensure_image" => Answer::With(serde_json::json!({"nothing": "here"})),
            _ => Answer::Ok(Duration::ZERO),
        })
        .await;
        assert!(matches!(outcome_of(&results, "image:a/slow", "a"), ChangeOutcome::Failed(_)), "{results:?}");
    }

    #[test]
    fn every_change_carries_its_states_and_a_saved_plan_gets_them_back() {
        let config = config(LAB);
        let cluster = &config.clusters[0];
        let desired = ClusterState::desired(cluster);
        let mut observed = desired.clone();
        observed.sessions.get_mut("on-b").expect("on-b").hash = "other".into();
        observed.sessions.remove("on-a");
        let mut gone = observed.vfolders.get("va").expect("va").clone();
        gone.node = crate::model::NodeName("a".into());
        observed.vfolders.insert(crate::model::VfolderName("gone".into()), gone);
        let plan = diff(&[(&desired, &observed, &build_graph(cluster))]);
        let of = |id: &str| plan.changes.iter().find(|c| c.id.to_string() == id).expect(id);
        let session = |s: &Option<ResourceState>| match s {
            Some(ResourceState::Session(s)) => s.hash.clone(),
            other => panic!("{other:?}"),
        };
        let create = of("session:on-a");
        assert!(create.before.is_none() && create.after.is_some(), "{create:?}");
        let replace = of("session:on-b");
        assert_eq!(session(&replace.before), "other");
        assert_eq!(session(&replace.after), desired.sessions["on-b"].hash);
        let delete = of("vfolder:gone");
        assert!(matches!(delete.before, Some(ResourceState::Vfolder(_))) && delete.after.is_none(), "{delete:?}");
        // A plan file holds no state; the states of the plan made now are carried over.
        let text = serde_json::to_string(&plan).expect("serializes");
        let read: crate::plan::Plan = serde_json::from_str(&text).expect("reads");
        assert!(read.changes.iter().all(|c| c.before.is_none() && c.after.is_none()));
        let carried = crate::plan::saved::carry_states(&read, &plan);
        for (c, p) in carried.changes.iter().zip(&plan.changes) {
            assert_eq!((&c.before, &c.after), (&p.before, &p.after), "{}", c.id);
        }
    }

    #[tokio::test]
    async fn a_change_without_its_desired_state_fails_and_sends_nothing() {
        let strip = |plan: &mut crate::plan::Plan| {
            for c in plan.changes.iter_mut().filter(|c| c.id.to_string() == "session:on-b") {
                c.after = None;
            }
        };
        let (results, log) = walk_plan(nothing, strip, |_, _, _| Answer::Ok(Duration::ZERO)).await;
        assert!(
            matches!(outcome_of(&results, "session:on-b", "b"), ChangeOutcome::Failed(f) if f.code == "bai::apply::not_planned"),
            "{results:?}"
        );
        assert!(!log.lines().contains(&"b create_session on-b".to_string()), "{:?}", log.lines());
        assert_eq!(outcome_of(&results, "session:on-a", "a"), &ChangeOutcome::Done("running".into()));
    }
}
