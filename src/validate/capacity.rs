//! GPU capacity: sessions on a node may not ask for more GPUs than it declares, and a GPU image needs
//! its `min-gpus`.

use std::collections::HashMap;

use crate::diagnostic::{Code, Problem};
use crate::model::{Cluster, Node, Session};
use crate::state::snapshot::Inventory;
use crate::validate::ClusterIndex;

pub fn check(cluster: &Cluster, index: &ClusterIndex<'_>, problems: &mut Vec<Problem>) {
    let mut by_node: HashMap<&str, Vec<&Session>> = HashMap::new();
    for s in &cluster.sessions {
        // A MIG instance is a slice of a GPU: how many a node has is known from its inventory only.
        if s.gpus() > 0 && s.resources.mig.is_none() {
            by_node.entry(s.node.value.as_str()).or_default().push(s);
        }
        let Some(image) = index.images.get(s.image.value.as_str()) else { continue };
        let Some(min) = &image.min_gpus else { continue };
        if s.gpus() < min.value {
            let at = s.resources.gpus.as_ref().map_or(s.name.loc, |g| g.loc);
            problems.push(
                Problem::error(
                    Code::MinGpus,
                    format!(
                        "session `{}` asks for {} GPU(s) but image `{}` needs at least {}",
                        s.name.value,
                        s.gpus(),
                        image.name.value,
                        min.value
                    ),
                )
                .primary(at, format!("{} GPU(s)", s.gpus()))
                .label(min.loc, format!("needs at least {}", min.value))
                .help(format!("set `resources gpus={}` or more, or use an image without `min-gpus`", min.value)),
            );
        }
    }
    let mut nodes: Vec<_> = by_node.into_iter().collect();
    nodes.sort_by_key(|(name, _)| *name);
    for (name, sessions) in nodes {
        let Some(node) = index.nodes.get(name) else { continue };
        let Some(declared) = &node.gpus else { continue };
        let asked: u64 = sessions.iter().map(|s| u64::from(s.gpus())).sum();
        if asked <= u64::from(declared.value) {
            continue;
        }
        let mut p = Problem::error(
            Code::GpusExceeded,
            format!("sessions on node `{name}` ask for {asked} GPUs but it has {}", declared.value),
        )
        .label(declared.loc, format!("{} GPU(s) declared", declared.value));
        for s in &sessions {
            let at = s.resources.gpus.as_ref().map_or(s.name.loc, |g| g.loc);
            p = p.primary(at, format!("`{}` asks for {}", s.name.value, s.gpus()));
        }
        problems.push(p.help("move a session to another node or lower its `gpus`"));
    }
}

/// Pinned UUIDs the node's inventory does not list (indices are checked against the declared `gpus`).
fn pins_in_inventory(cluster: &Cluster, node: &Node, inventory: &Inventory, out: &mut Vec<Problem>) {
    let known = |id: &str| inventory.gpus.iter().any(|g| g.uuid == id || g.mig.iter().any(|m| m.uuid == id));
    for s in cluster.sessions.iter().filter(|s| s.node.value == node.name.value) {
        let Some(pins) = &s.resources.gpu_devices else { continue };
        for pin in pins.value.iter().filter(|p| p.parse::<u32>().is_err() && !known(p)) {
            out.push(
                Problem::error(
                    Code::PinAbsent,
                    format!(
                        "session `{}` pins device {pin}, which node `{}` does not have",
                        s.name.value, node.name.value
                    ),
                )
                .label(node.name.loc, format!("its agent lists {} GPU(s)", inventory.gpus.len()))
                .primary(pins.loc, format!("{} is not among them", crate::untrusted::escape(pin)))
                .help("pin a UUID that `bai status` lists for the node, or an index"),
            );
        }
    }
}

/// Warns where a node's declared `gpus` differs from the GPUs its agent last reported; errors where a
/// pinned UUID is not among them.
pub fn check_inventory(cluster: &Cluster, observed: &crate::state::ClusterState) -> Vec<Problem> {
    let mut out = Vec::new();
    for (name, inventory) in observed.inventories() {
        let Some(node) = cluster.nodes.iter().find(|n| &n.name.value == name) else { continue };
        if inventory.gpu_error.is_none() {
            pins_in_inventory(cluster, node, inventory, &mut out);
        }
        let Some(declared) = &node.gpus else { continue };
        let seen = inventory.gpus.len();
        if seen as u64 != u64::from(declared.value) {
            let why = inventory.gpu_error.as_ref().map_or(String::new(), |e| format!(" ({e})"));
            out.push(
                Problem::warning(
                    Code::InventoryMismatch,
                    format!("node `{name}` declares {} GPU(s) but its agent reported {seen}{why}", declared.value),
                )
                .primary(declared.loc, format!("the last inventory saw {seen}"))
                .help("fix the declaration, or check the node's driver with `nvidia-smi`"),
            );
        }
    }
    out
}
