//! Saved plans: `bai plan FILE -o PLAN` writes the plan with a fingerprint of what it was made against,
//! and `bai apply PLAN` carries out exactly that plan, or refuses it as stale, naming what changed.
//!
//! The fingerprint has two parts, the way Terraform's saved plans pin the configuration and the state:
//!
//! - the configuration: a sha256 per lab file (the includes too) and of `bai.lock` beside the lab, so a
//!   refusal names the file that changed;
//! - per node the plan touches (a change happens there, or a resource moves away from it): what the
//!   diff depended on, as the node reported it: agent version, labels, the node's current generation, and
//!   per image, vfolder and session what decides its change (spec hashes, permission, quota, emptiness),
//!   plus the names squatted by containers bai does not own. Container states, exit codes and the
//!   inventory are left out: a crash-looping session or a busy GPU must not make every plan stale.
//!
//! A node that the plan does not touch is not fingerprinted, so it may change freely. A node that held
//! nothing is fingerprinted as empty, and anything placed on it since makes the plan stale. A saved plan
//! applied once is stale the second time: every node it changed records a new generation.
//!
//! Pure data and comparisons; reading and writing the file is the CLI's job.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::graph::Kind;
use crate::plan::{Action, Change, Plan};
use crate::state::ClusterState;
use crate::state::snapshot::NodeSnapshot;
use crate::state::spec::hex_digest;

/// The `format` field that tells a saved plan from a lab file.
pub const FORMAT: &str = "bai-plan";
pub const FORMAT_VERSION: u32 = 1;

/// What the plan was made against: live nodes, nodes assumed empty, or a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Against {
    Live,
    Offline,
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPlan {
    pub format: String,
    pub format_version: u32,
    /// Random, to recognise the plan in the generations it records.
    pub id: String,
    pub bai_version: String,
    /// The lab file as given to `bai plan`; `bai apply PLAN` reads it from there again.
    pub lab: String,
    /// `--cluster`, when the plan was made for one cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub against: Against,
    pub config: ConfigFingerprint,
    /// Per cluster, per touched node.
    pub nodes: BTreeMap<String, BTreeMap<String, NodeFingerprint>>,
    pub plan: Plan,
}

/// The lab's files and lock, by content.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFingerprint {
    /// The config hash generations record (`generation::config_hash`).
    pub hash: String,
    /// sha256 of each loaded lab file, by the name diagnostics use.
    pub files: BTreeMap<String, String>,
    /// sha256 of `bai.lock` beside the lab, when there is one.
    pub lock: Option<String>,
}

impl ConfigFingerprint {
    /// From (name, text) of every loaded lab file and the lock file's text.
    pub fn of(files: &[(String, &str)], lock: Option<&str>) -> Self {
        ConfigFingerprint {
            hash: crate::generation::config_hash(files, lock),
            files: files.iter().map(|(name, text)| (name.clone(), sha256(text.as_bytes()))).collect(),
            lock: lock.map(|l| sha256(l.as_bytes())),
        }
    }

    /// Why `now` is not the configuration this fingerprint was taken of, one line per file.
    pub fn changes_to(&self, now: &ConfigFingerprint) -> Vec<String> {
        let mut out = Vec::new();
        let names: BTreeSet<&String> = self.files.keys().chain(now.files.keys()).collect();
        for name in names {
            match (self.files.get(name), now.files.get(name)) {
                (Some(a), Some(b)) if a != b => out.push(format!("`{name}` was edited")),
                (Some(_), None) => out.push(format!("`{name}` is no longer part of the lab")),
                (None, Some(_)) => out.push(format!("`{name}` is new in the lab")),
                _ => {}
            }
        }
        match (&self.lock, &now.lock) {
            (Some(a), Some(b)) if a != b => out.push("`bai.lock` was changed".into()),
            (Some(_), None) => out.push("`bai.lock` was removed".into()),
            (None, Some(_)) => out.push("`bai.lock` was created".into()),
            _ => {}
        }
        out
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex_digest(&Sha256::digest(bytes))
}

/// What a plan depends on of one node's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFingerprint {
    /// The installed agent's version; `None`: bai was never there (the node held nothing).
    pub agent: Option<String>,
    pub generation: Option<u64>,
    pub labels: BTreeMap<String, String>,
    /// Image name → spec hash.
    pub images: BTreeMap<String, String>,
    /// Vfolder name → `permission quota empty`, as one comparable word.
    pub vfolders: BTreeMap<String, String>,
    /// Session name → spec hash.
    pub sessions: BTreeMap<String, String>,
    /// Names held by containers or folders bai does not own.
    pub unowned: BTreeSet<String>,
}

impl NodeFingerprint {
    pub fn of(node: &NodeSnapshot) -> Self {
        NodeFingerprint {
            agent: node.agent.as_ref().map(|a| a.version.clone()),
            generation: node.generation,
            labels: node.labels.clone(),
            images: node.images.iter().map(|i| (i.name.clone(), i.spec_hash.clone())).collect(),
            vfolders: node
                .vfolders
                .iter()
                .map(|v| {
                    let quota = v.quota.map_or_else(|| "-".to_string(), |q| q.to_string());
                    let empty = if v.empty { "empty" } else { "holds-data" };
                    (v.name.clone(), format!("{} {quota} {empty}", v.permission.as_str()))
                })
                .collect(),
            sessions: node.sessions.iter().map(|s| (s.name.clone(), s.spec_hash.clone())).collect(),
            unowned: node.unowned.iter().map(|u| u.name.clone()).collect(),
        }
    }

    /// A node that holds nothing of the cluster (what `--offline` plans against).
    pub fn empty() -> Self {
        NodeFingerprint::default()
    }

    /// Why the node is not as it was, one line per difference, for the refusal message.
    pub fn changes_to(&self, now: &NodeFingerprint) -> Vec<String> {
        if self.agent.is_none() && self.images.is_empty() && self.sessions.is_empty() && self.vfolders.is_empty() {
            if now == self {
                return Vec::new();
            }
            let mut held: Vec<String> = Vec::new();
            held.extend(now.sessions.keys().map(|s| format!("session `{s}`")));
            held.extend(now.vfolders.keys().map(|v| format!("vfolder `{v}`")));
            held.extend(now.images.keys().map(|i| format!("image `{i}`")));
            held.extend(now.unowned.iter().map(|u| format!("`{u}` (not bai's)")));
            if held.is_empty() && now.agent.is_some() {
                held.push("bai's agent".into());
            }
            return vec![format!("it held nothing when the plan was made; now it holds {}", held.join(", "))];
        }
        let mut out = Vec::new();
        if self.generation != now.generation {
            out.push(format!("its generation moved from {} to {}", show(self.generation), show(now.generation)));
        }
        if self.agent != now.agent {
            out.push(format!(
                "its agent changed from {} to {}",
                self.agent.as_deref().unwrap_or("none"),
                now.agent.as_deref().unwrap_or("none")
            ));
        }
        if self.labels != now.labels {
            out.push("its labels changed".into());
        }
        compare(&mut out, "image", &self.images, &now.images);
        compare(&mut out, "vfolder", &self.vfolders, &now.vfolders);
        compare(&mut out, "session", &self.sessions, &now.sessions);
        for name in now.unowned.difference(&self.unowned) {
            out.push(format!("`{name}` is now held by something bai does not own"));
        }
        for name in self.unowned.difference(&now.unowned) {
            out.push(format!("`{name}` is no longer held by something bai does not own"));
        }
        out
    }
}

fn show(generation: Option<u64>) -> String {
    generation.map_or_else(|| "none".to_string(), |g| g.to_string())
}

fn compare(out: &mut Vec<String>, kind: &str, before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) {
    let names: BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    for name in names {
        match (before.get(name), now.get(name)) {
            (Some(a), Some(b)) if a != b => out.push(format!("{kind} `{name}` changed")),
            (Some(_), None) => out.push(format!("{kind} `{name}` is gone")),
            (None, Some(_)) => out.push(format!("{kind} `{name}` appeared")),
            _ => {}
        }
    }
}

/// The nodes a plan changes something on: where each change happens, and where a moved session or
/// vfolder leaves from.
pub fn touched_nodes(plan: &Plan, cluster: &str, observed: &ClusterState) -> BTreeSet<String> {
    let mut nodes = BTreeSet::new();
    for change in plan.changes.iter().filter(|c| c.cluster.as_str() == cluster) {
        nodes.extend(change.node.clone());
        let from = match change.id.kind {
            Kind::Session => observed.sessions.get(change.id.name.as_str()).map(|s| s.node.to_string()),
            Kind::Vfolder => observed.vfolders.get(change.id.name.as_str()).map(|v| v.node.to_string()),
            _ => None,
        };
        nodes.extend(from);
    }
    nodes
}

/// Whether two plans make the same changes: same resources, actions, nodes and field changes. The
/// words and the risk markers may differ (a session that crashed since is no longer "running").
pub fn same_changes(a: &Plan, b: &Plan) -> bool {
    let key = |p: &Plan| -> Vec<(String, String, Action, Option<String>, String)> {
        let mut v: Vec<_> = p
            .changes
            .iter()
            .map(|c| {
                let fields = serde_json::to_string(&c.fields).unwrap_or_default();
                (c.cluster.to_string(), c.id.to_string(), c.action, c.node.clone(), fields)
            })
            .collect();
        v.sort();
        v
    };
    key(a) == key(b)
}

/// `saved`'s changes with the states (before and after) of the same changes in `fresh`, the plan made now
/// and found to be the same ([`same_changes`]): a plan file carries no state, and the executor carries
/// out what a change holds.
pub fn carry_states(saved: &Plan, fresh: &Plan) -> Plan {
    let key = |c: &Change| (c.cluster.to_string(), c.id.to_string(), c.action, c.node.clone());
    let states: std::collections::HashMap<_, _> =
        fresh.changes.iter().map(|c| (key(c), (c.before.clone(), c.after.clone()))).collect();
    let mut out = saved.clone();
    for c in &mut out.changes {
        if let Some((before, after)) = states.get(&key(c)) {
            c.before = before.clone();
            c.after = after.clone();
        }
    }
    out
}

/// The changes of `plan` that `now` lacks or makes differently, for the refusal message.
pub fn plan_differences(saved: &Plan, now: &Plan) -> Vec<String> {
    let line = |c: &crate::plan::Change| format!("{} {}", c.action.sign(), c.id);
    let saved_lines: BTreeSet<String> = saved.changes.iter().map(line).collect();
    let now_lines: BTreeSet<String> = now.changes.iter().map(line).collect();
    let mut out: Vec<String> =
        saved_lines.difference(&now_lines).map(|l| format!("planned `{l}` is no longer needed as planned")).collect();
    out.extend(now_lines.difference(&saved_lines).map(|l| format!("`{l}` is needed now but not in the plan")));
    if out.is_empty() {
        out.push(
            "a change's fields differ from the plan (a secret's value or the environment may have changed)".into(),
        );
    }
    out
}

/// A fresh plan id: 16 random bytes in hex.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    for b in &mut bytes {
        *b = fastrand::u8(..);
    }
    hex_digest(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Permission;
    use crate::state::snapshot::{AgentInfo, SessionSnapshot, VfolderSnapshot};

    fn node() -> NodeSnapshot {
        NodeSnapshot {
            name: "n1".into(),
            agent: Some(AgentInfo { version: "0.1.0".into() }),
            generation: Some(2),
            labels: BTreeMap::new(),
            inventory: None,
            images: vec![],
            vfolders: vec![VfolderSnapshot {
                name: "data".into(),
                permission: Permission::Rw,
                quota: None,
                empty: true,
            }],
            sessions: vec![SessionSnapshot {
                name: "job-a".into(),
                spec_hash: "aaa".into(),
                state: crate::state::snapshot::ContainerState::Running,
                exit_code: None,
                spec: None,
            }],
            unowned: vec![],
        }
    }

    #[test]
    fn container_state_does_not_change_the_fingerprint() {
        let a = NodeFingerprint::of(&node());
        let mut crashed = node();
        crashed.sessions[0].state = crate::state::snapshot::ContainerState::Exited;
        crashed.sessions[0].exit_code = Some(1);
        assert_eq!(a, NodeFingerprint::of(&crashed));
        assert!(a.changes_to(&NodeFingerprint::of(&crashed)).is_empty());
    }

    #[test]
    fn changes_are_named() {
        let a = NodeFingerprint::of(&node());
        let mut other = node();
        other.sessions[0].spec_hash = "bbb".into();
        other.vfolders[0].empty = false;
        other.generation = Some(3);
        let lines = a.changes_to(&NodeFingerprint::of(&other));
        assert_eq!(
            lines,
            vec![
                "its generation moved from 2 to 3".to_string(),
                "vfolder `data` changed".to_string(),
                "session `job-a` changed".to_string()
            ]
        );
    }

    #[test]
    fn an_empty_node_that_got_something_is_stale() {
        let empty = NodeFingerprint::empty();
        assert!(empty.changes_to(&NodeFingerprint::empty()).is_empty());
        let lines = empty.changes_to(&NodeFingerprint::of(&node()));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("it held nothing when the plan was made; now it holds session `job-a`"),
            "{lines:?}"
        );
    }

    #[test]
    fn config_changes_name_the_file() {
        let a = ConfigFingerprint::of(&[("lab.kdl".into(), "cluster \"a\" {}"), ("nodes.kdl".into(), "")], None);
        let b = ConfigFingerprint::of(
            &[("lab.kdl".into(), "cluster \"b\" {}"), ("more.kdl".into(), "")],
            Some("version 1"),
        );
        assert_eq!(
            a.changes_to(&b),
            vec![
                "`lab.kdl` was edited".to_string(),
                "`more.kdl` is new in the lab".to_string(),
                "`nodes.kdl` is no longer part of the lab".to_string(),
                "`bai.lock` was created".to_string()
            ]
        );
        assert!(a.changes_to(&a.clone()).is_empty());
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn ids_are_fresh() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
