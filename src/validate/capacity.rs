//! GPU capacity: sessions on a node may not ask for more GPUs than it declares, and a GPU image needs
//! its `min-gpus`.

use std::collections::HashMap;

use crate::diagnostic::{Code, Problem};
use crate::model::{Cluster, Session};
use crate::validate::ClusterIndex;

pub fn check(cluster: &Cluster, index: &ClusterIndex<'_>, problems: &mut Vec<Problem>) {
    let mut by_node: HashMap<&str, Vec<&Session>> = HashMap::new();
    for s in &cluster.sessions {
        if s.gpus() > 0 {
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

/// Warns where a node's declared `gpus` differs from the GPUs its agent last reported.
pub fn check_inventory(cluster: &Cluster, observed: &crate::state::ClusterState) -> Vec<Problem> {
    let mut out = Vec::new();
    for (name, inventory) in observed.inventories() {
        let Some(node) = cluster.nodes.iter().find(|n| &n.name.value == name) else { continue };
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
