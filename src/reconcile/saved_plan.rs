//! Saved plan files in a run: writing what `bai plan -o` made, telling a plan file from a lab file, and
//! the checks `bai apply PLAN` runs before it changes anything (the format is [`crate::plan::saved`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::failure::Failure;
use crate::model::Config;
use crate::plan::Plan;
use crate::plan::saved::{self, Against, ConfigFingerprint, NodeFingerprint, SavedPlan};
use crate::protocol::{BAI_VERSION, ListGenerations, ListGenerationsReply, Method};
use crate::reconcile::{Engine, Observation};
use crate::source::SourceMap;
use crate::state::ClusterState;
use crate::state::snapshot::NodeSnapshot;

/// The configuration fingerprint of a loaded lab: its files by the names diagnostics use, and the lock
/// file beside `file`.
pub fn config_of(sources: &SourceMap, file: &Path) -> ConfigFingerprint {
    let lock = crate::config::load::read_source(&crate::reconcile::lockfile::path_for(file)).ok();
    let files: Vec<(String, &str)> = sources.files().map(|(_, f)| (f.name.clone(), f.text())).collect();
    ConfigFingerprint::of(&files, lock.as_deref())
}

/// Builds the saved plan: the touched nodes of each cluster fingerprinted from what they reported
/// (`snapshots`, by cluster), or as empty when the plan was made against empty nodes.
#[allow(clippy::too_many_arguments)]
pub fn build(
    config: &Config,
    sources: &SourceMap,
    file: &Path,
    cluster: Option<&str>,
    against: Against,
    observed: &BTreeMap<crate::model::ClusterName, ClusterState>,
    snapshots: &BTreeMap<String, Vec<NodeSnapshot>>,
    plan: &Plan,
) -> SavedPlan {
    let mut nodes = BTreeMap::new();
    for c in &config.clusters {
        let name = c.name.value.to_string();
        let empty = ClusterState::empty(c.name.value.clone());
        let have = observed.get(&c.name.value).unwrap_or(&empty);
        let reported: BTreeMap<&str, &NodeSnapshot> =
            snapshots.get(&name).into_iter().flatten().map(|s| (s.name.as_str(), s)).collect();
        let touched = saved::touched_nodes(plan, &name, have);
        let prints: BTreeMap<String, NodeFingerprint> = touched
            .into_iter()
            .map(|node| {
                let print = reported.get(node.as_str()).map_or_else(NodeFingerprint::empty, |s| NodeFingerprint::of(s));
                (node, print)
            })
            .collect();
        nodes.insert(name, prints);
    }
    SavedPlan {
        format: saved::FORMAT.to_string(),
        format_version: saved::FORMAT_VERSION,
        id: saved::new_id(),
        bai_version: BAI_VERSION.to_string(),
        lab: file.display().to_string(),
        cluster: cluster.map(str::to_string),
        against,
        config: config_of(sources, file),
        nodes,
        plan: plan.clone(),
    }
}

/// Writes the plan file (pretty JSON: a reviewer may read it).
pub fn write(path: &Path, saved: &SavedPlan) -> Result<(), Failure> {
    let fail = |m: String| Failure::error("bai::plan::write", m);
    let text = serde_json::to_string_pretty(saved).map_err(|e| fail(format!("cannot encode the plan: {e}")))?;
    std::fs::write(path, text + "\n").map_err(|e| fail(format!("cannot write the plan to `{}`: {e}", path.display())))
}

/// A saved plan, when `path` holds one; `None` for anything else (a lab file). A lab file never starts
/// with `{`, so a file that does is read as a plan and must be one.
pub fn read(path: &Path) -> Result<Option<SavedPlan>, String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(None) };
    if !text.trim_start().starts_with('{') {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("`{}` is neither a lab nor a bai plan: {e}", path.display()))?;
    if value.get("format").and_then(serde_json::Value::as_str) != Some(saved::FORMAT) {
        return Err(format!(
            "`{}` is JSON but not a bai plan (no `\"format\": \"{}\"`)",
            path.display(),
            saved::FORMAT
        ));
    }
    let version = value.get("format_version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(saved::FORMAT_VERSION)) {
        return Err(format!(
            "`{}` is a bai plan of format version {}, this bai reads {}: make the plan again with this bai",
            path.display(),
            version.map_or_else(|| "?".to_string(), |v| v.to_string()),
            saved::FORMAT_VERSION
        ));
    }
    let saved: SavedPlan =
        serde_json::from_value(value).map_err(|e| format!("`{}` is not a valid bai plan: {e}", path.display()))?;
    Ok(Some(saved))
}

/// Before connecting: the plan was made by this bai from this very configuration.
pub fn check_config(saved: &SavedPlan, now: &ConfigFingerprint) -> Vec<String> {
    let mut why = Vec::new();
    if saved.bai_version != BAI_VERSION {
        why.push(format!("it was made by bai {}, this is bai {BAI_VERSION}", saved.bai_version));
    }
    why.extend(saved.config.changes_to(now).into_iter().map(|c| format!("the configuration changed: {c}")));
    why
}

/// The node names a saved plan touches in `cluster`.
pub fn touched(saved: &SavedPlan, cluster: &str) -> Vec<String> {
    saved.nodes.get(cluster).map(|n| n.keys().cloned().collect()).unwrap_or_default()
}

/// After observing: every touched node is reachable and as it was. Names each node and what changed;
/// a node whose newer generation was recorded by this very plan makes it "already applied".
pub fn check_nodes(engine: &Engine, saved: &SavedPlan, cluster: &str, reached: &mut Observation) -> Vec<String> {
    let mut why = Vec::new();
    let Some(expected) = saved.nodes.get(cluster) else { return why };
    let reported: BTreeMap<String, NodeFingerprint> =
        reached.snapshots.iter().map(|s| (s.name.clone(), NodeFingerprint::of(s))).collect();
    let failed: BTreeSet<String> = reached.failures.iter().map(|f| f.node.clone()).collect();
    for (node, then) in expected {
        let Some(now) = reported.get(node) else {
            if !failed.contains(node) {
                why.push(format!("node `{node}` is no longer in cluster `{cluster}`"));
            }
            // Unreachable nodes were reported already; the plan cannot be carried out whole.
            continue;
        };
        let changes = then.changes_to(now);
        if changes.is_empty() {
            continue;
        }
        if now.generation > then.generation
            && let Some(applied) = applied_by_this_plan(engine, saved, cluster, node, then.generation, reached)
        {
            why.push(format!("this plan was already applied: node `{node}` {applied}"));
            continue;
        }
        why.push(format!("node `{node}` changed since the plan was made: {}", changes.join("; ")));
    }
    if !failed.is_empty() {
        let names: Vec<&str> = expected.keys().filter(|n| failed.contains(*n)).map(String::as_str).collect();
        if !names.is_empty() {
            why.push(format!("the plan changes unreachable nodes: {}", names.join(", ")));
        }
    }
    why
}

/// `recorded generation N by … at …` when one of the node's generations after `since` came from `saved`.
fn applied_by_this_plan(
    engine: &Engine,
    saved: &SavedPlan,
    cluster: &str,
    node: &str,
    since: Option<u64>,
    reached: &mut Observation,
) -> Option<String> {
    let conn = reached.conns.get_mut(node)?;
    let call = conn
        .client
        .call::<ListGenerationsReply>(Method::ListGenerations(ListGenerations { cluster: cluster.to_string() }));
    let mut reply = engine.block_on(call).ok()?;
    crate::untrusted::check_generations(&mut reply).ok()?;
    reply
        .generations
        .iter()
        .filter(|g| Some(g.number) > since && g.meta.plan_id.as_deref() == Some(saved.id.as_str()))
        .map(|g| format!("recorded generation {} from it at {} ({})", g.number, g.meta.applied_at, g.meta.applied_by))
        .next()
}

/// The refusal of a stale plan: why the saved plan cannot be applied, and what to do.
pub fn refusal(path: &Path, why: &[String]) -> Failure {
    let mut message = format!("refusing to apply the saved plan `{}`: it is stale", path.display());
    for line in why {
        message.push_str("\n  - ");
        message.push_str(line);
    }
    Failure::error("bai::plan::stale", message)
        .help("make a new plan (`bai plan LAB -o PLAN`), review it, and apply that")
}
