//! Diffing desired against observed state: each resource becomes create, update, replace, delete or
//! nothing, with the field-level reasons a reviewer needs.
//!
//! What is updated in place and what is replaced: a session whose spec hash differs is replaced (a
//! container cannot change its mounts or image in place); an image whose ref, source or digest differs is
//! replaced; a vfolder that moves to another node is replaced, one whose quota or permission changes is
//! updated; a node's labels and agent version are updated. Everything else about a node (address, SSH,
//! probe, declared GPUs) is how bai reaches or checks it, not state on it, and plans nothing.
//!
//! Each change also carries its risks (rules in `risk.rs`: data a vfolder removal destroys, a running GPU
//! session interrupted, a node added or removed), and the plan the dependency edges from every changed
//! resource to what depends on it (`dependants.rs`), so that renderings need nothing but the plan.

use std::collections::BTreeMap;

use crate::config::value::format_size;
use crate::graph::{Kind, ResourceGraph, ResourceId};
use crate::plan::dependants::dependant_edges;
use crate::plan::fields::{is_secret_change, reason, secret_changes, session_fields};
use crate::plan::risk::risks_of;
use crate::plan::{Action, Change, FieldChange, Plan, ResourceState, show_value};
use crate::state::spec::SourceKind;
use crate::state::{ClusterState, SessionState};

/// The plan that takes each cluster from `observed` to `desired`. Clusters are given as
/// (desired, observed, graph of desired) triples, in the order they should be reported.
pub fn diff(clusters: &[(&ClusterState, &ClusterState, &ResourceGraph)]) -> Plan {
    let mut plan = Plan::default();
    for (desired, observed, graph) in clusters {
        plan.clusters.push(desired.name.clone());
        let mut changes = diff_cluster(desired, observed);
        for c in &mut changes {
            c.risks = risks_of(c, desired, observed);
            c.before = ResourceState::of(observed, &c.id);
            c.after = if c.action == Action::Delete { None } else { ResourceState::of(desired, &c.id) };
        }
        order(&mut changes, graph);
        plan.edges.extend(dependant_edges(&desired.name, &changes, graph, observed));
        plan.gpus.extend(crate::gpu::place::placed(desired, observed));
        plan.changes.extend(changes);
    }
    plan
}

fn change(cluster: &ClusterState, id: ResourceId, node: Option<&str>, action: Action) -> Change {
    Change::new(cluster.name.clone(), id, node.map(str::to_string), action)
}

fn field(path: &str, before: Option<serde_json::Value>, after: Option<serde_json::Value>) -> FieldChange {
    FieldChange { path: path.to_string(), before, after }
}

fn reason_of(f: &FieldChange) -> String {
    if is_secret_change(f) {
        return reason(f);
    }
    // Sizes read better in the units a lab is written in; the JSON `fields` keep exact bytes.
    let show = |v: Option<&serde_json::Value>| match (f.path.as_str(), v.and_then(serde_json::Value::as_u64)) {
        ("quota" | "resources.memory" | "shm_size", Some(bytes)) => format_size(bytes),
        (path, _) if path.starts_with("env.") => show_env(v),
        _ => show_value(v),
    };
    format!("`{}`: {} → {}", f.path, show(f.before.as_ref()), show(f.after.as_ref()))
}

/// An environment variable as the lab writes it (`"abc"`, `from-env="TOKEN"`), not as the spec stores it.
fn show_env(v: Option<&serde_json::Value>) -> String {
    let Some(spec) = v.and_then(|v| serde_json::from_value::<crate::state::spec::EnvSpec>(v.clone()).ok()) else {
        return show_value(v);
    };
    let quoted = |text: &str| show_value(Some(&serde_json::Value::String(text.to_string())));
    match spec {
        crate::state::spec::EnvSpec::Value(value) => quoted(&value),
        crate::state::spec::EnvSpec::FromEnv { var, .. } => format!("from-env={}", quoted(&var)),
        crate::state::spec::EnvSpec::FromFile { path, .. } => format!("from-file={}", quoted(&path)),
    }
}

fn with_fields(mut c: Change, fields: Vec<FieldChange>) -> Change {
    c.reasons.extend(fields.iter().map(reason_of));
    c.fields = fields;
    c
}

/// The fields that differ between two field tables.
fn changed_fields(
    before: &BTreeMap<String, serde_json::Value>,
    after: &BTreeMap<String, serde_json::Value>,
) -> Vec<FieldChange> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| field(k, before.get(k).cloned(), after.get(k).cloned()))
        .collect()
}

fn diff_cluster(desired: &ClusterState, observed: &ClusterState) -> Vec<Change> {
    let mut out = Vec::new();
    let d = desired;
    for (name, want) in &d.nodes {
        let id = ResourceId::node(name.as_str());
        match observed.nodes.get(name) {
            None => {
                let mut c = change(d, id, Some(name.as_str()), Action::Create);
                c.reasons.push(format!("install agent {}", want.agent.as_deref().unwrap_or("?")));
                out.push(c);
            }
            Some(have) => {
                let mut fields = Vec::new();
                if have.agent != want.agent {
                    fields.push(field("agent", have.agent.clone().map(Into::into), want.agent.clone().map(Into::into)));
                }
                let label = |m: &BTreeMap<String, String>| -> BTreeMap<String, serde_json::Value> {
                    m.iter().map(|(k, v)| (format!("labels.{k}"), v.clone().into())).collect()
                };
                fields.extend(changed_fields(&label(&have.labels), &label(&want.labels)));
                if !fields.is_empty() {
                    out.push(with_fields(change(d, id, Some(name.as_str()), Action::Update), fields));
                }
            }
        }
    }
    for name in observed.nodes.keys().filter(|n| !d.nodes.contains_key(*n)) {
        let mut c = change(d, ResourceId::node(name.as_str()), Some(name.as_str()), Action::Delete);
        c.reasons.push("node removed from the configuration: bai's agent is removed".into());
        out.push(c);
    }

    for ((node, name), want) in &d.images {
        let id = ResourceId::image(node.as_str(), name.as_str());
        let spec = &want.spec;
        match observed.images.get(&(node.clone(), name.clone())) {
            None => {
                let mut c = change(d, id, Some(node.as_str()), Action::Create);
                let how = match spec.source {
                    SourceKind::Pull => "pull",
                    SourceKind::Build => "build",
                    SourceKind::Archive => "load",
                };
                c.reasons.push(format!("{how} `{}`", spec.reference));
                out.push(c);
            }
            Some(have) if have.hash != want.hash => {
                let mut fields = Vec::new();
                if have.spec.reference != spec.reference {
                    fields.push(field(
                        "ref",
                        Some(have.spec.reference.clone().into()),
                        Some(spec.reference.clone().into()),
                    ));
                }
                if have.spec.source != spec.source {
                    let j = |s: SourceKind| serde_json::to_value(s).ok();
                    fields.push(field("source", j(have.spec.source), j(spec.source)));
                }
                if have.spec.digest != spec.digest {
                    fields.push(field(
                        "digest",
                        have.spec.digest.clone().map(Into::into),
                        spec.digest.clone().map(Into::into),
                    ));
                }
                let mut c = with_fields(change(d, id, Some(node.as_str()), Action::Replace), fields);
                if c.reasons.is_empty() {
                    c.reasons.push(hash_reason(&have.hash, &want.hash));
                }
                out.push(c);
            }
            Some(_) => {}
        }
    }
    for (node, name) in observed.images.keys().filter(|k| !d.images.contains_key(*k)) {
        let mut c = change(d, ResourceId::image(node.as_str(), name.as_str()), Some(node.as_str()), Action::Delete);
        c.reasons.push("no session on this node uses it any more".into());
        out.push(c);
    }

    for (name, want) in &d.vfolders {
        let id = ResourceId::vfolder(name.as_str());
        match observed.vfolders.get(name) {
            None => {
                let mut c = change(d, id, Some(want.node.as_str()), Action::Create);
                let quota = want.quota.map_or(String::new(), |q| format!(", quota {}", format_size(q)));
                c.reasons.push(format!("{} on `{}`{quota}", want.permission.as_str(), want.node));
                out.push(c);
            }
            Some(have) => {
                let mut fields = Vec::new();
                if have.node != want.node {
                    fields.push(field("node", Some(have.node.as_str().into()), Some(want.node.as_str().into())));
                }
                if have.permission != want.permission {
                    fields.push(field(
                        "permission",
                        Some(have.permission.as_str().into()),
                        Some(want.permission.as_str().into()),
                    ));
                }
                if have.quota != want.quota {
                    fields.push(field("quota", have.quota.map(Into::into), want.quota.map(Into::into)));
                }
                if fields.is_empty() {
                    continue;
                }
                let moved = have.node != want.node;
                let action = if moved { Action::Replace } else { Action::Update };
                let mut c = with_fields(change(d, id, Some(want.node.as_str()), action), fields);
                if moved && have.empty != Some(true) {
                    c.reasons.push(format!("its data stays behind on `{}` (moved aside, not erased)", have.node));
                }
                out.push(c);
            }
        }
    }
    for (name, have) in observed.vfolders.iter().filter(|(k, _)| !d.vfolders.contains_key(*k)) {
        let mut c = change(d, ResourceId::vfolder(name.as_str()), Some(have.node.as_str()), Action::Delete);
        c.reasons.push(match have.empty {
            Some(true) => "not in the configuration (empty)".into(),
            Some(false) => {
                "not in the configuration: holds data, needs --allow-data-loss (moved aside, not erased)".into()
            }
            None => "not in the configuration".into(),
        });
        out.push(c);
    }

    for (name, want) in &d.sessions {
        let id = ResourceId::session(name.as_str());
        match observed.sessions.get(name) {
            None => {
                let mut c = change(d, id, Some(want.node.as_str()), Action::Create);
                c.reasons.push(describe_session(want));
                out.push(c);
            }
            Some(have) if have.hash != want.hash => {
                let fields = match (&have.spec, &want.spec) {
                    (Some(a), Some(b)) => {
                        let mut fields = changed_fields(&session_fields(a), &session_fields(b));
                        fields.extend(secret_changes(a, b));
                        fields.sort_by(|x, y| x.path.cmp(&y.path));
                        fields
                    }
                    _ => Vec::new(),
                };
                let mut c = with_fields(change(d, id, Some(want.node.as_str()), Action::Replace), fields);
                if c.reasons.is_empty() {
                    c.reasons.push(hash_reason(&have.hash, &want.hash));
                }
                if have.node != want.node {
                    c.reasons.push(format!("moves from `{}` to `{}`", have.node, want.node));
                }
                out.push(c);
            }
            Some(_) => {}
        }
    }
    for (name, have) in observed.sessions.iter().filter(|(k, _)| !d.sessions.contains_key(*k)) {
        let mut c = change(d, ResourceId::session(name.as_str()), Some(have.node.as_str()), Action::Delete);
        c.reasons.push("not in the configuration".into());
        out.push(c);
    }
    out
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn hash_reason(before: &str, after: &str) -> String {
    format!("spec hash {} → {}", short(before), short(after))
}

fn describe_session(s: &SessionState) -> String {
    let Some(spec) = &s.spec else { return format!("on `{}`", s.node) };
    let mut out = format!("`{}` on `{}`", spec.image, spec.node);
    if spec.resources.gpus > 0 {
        out.push_str(&format!(", {} GPU{}", spec.resources.gpus, if spec.resources.gpus == 1 { "" } else { "s" }));
    }
    if !spec.mounts.is_empty() {
        let mounts: Vec<&str> = spec.mounts.iter().map(|m| m.destination.as_str()).collect();
        out.push_str(&format!(", mounts {}", mounts.join(" ")));
    }
    out
}

/// Execution order: creates, updates and replaces by graph depth (then id); deletes after, deepest kind
/// first (sessions before the images, vfolders and nodes they stand on).
fn order(changes: &mut [Change], graph: &ResourceGraph) {
    let levels = graph.levels();
    let rank = |k: Kind| match k {
        Kind::Session => 0,
        Kind::Image | Kind::Vfolder => 1,
        Kind::Node => 2,
    };
    changes.sort_by(|a, b| {
        let key = |c: &Change| {
            if c.action == Action::Delete {
                (1usize, rank(c.id.kind))
            } else {
                (0, levels.get(&c.id).copied().unwrap_or(0))
            }
        };
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_read_as_the_lab_writes_them() {
        let show = |j: serde_json::Value| show_env(Some(&j));
        assert_eq!(show(serde_json::json!({ "value": "abc" })), "\"abc\"");
        assert_eq!(show(serde_json::json!({ "from_env": "TOKEN" })), "from-env=\"TOKEN\"");
        assert_eq!(show(serde_json::json!({ "from_file": "/k" })), "from-file=\"/k\"");
        assert_eq!(show_env(None), "(none)");
    }
}
