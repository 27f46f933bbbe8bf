//! GPU requests that can be judged from the file alone: pinned devices (`gpu-devices`) named twice on
//! one node, or past the node's declared `gpus`; a pin list that disagrees with `gpus`; MIG and pins at
//! once. What the node really has is judged when it is known ([`crate::gpu::place`]).

use std::collections::BTreeMap;

use crate::diagnostic::{Code, Problem};
use crate::model::Cluster;
use crate::source::Loc;
use crate::validate::ClusterIndex;

pub fn check(cluster: &Cluster, index: &ClusterIndex<'_>, problems: &mut Vec<Problem>) {
    // Per node, each pinned device as written, with the session and span that pinned it first.
    let mut pinned: BTreeMap<(&str, &str), (&str, Loc)> = BTreeMap::new();
    for s in &cluster.sessions {
        let res = &s.resources;
        let Some(pins) = &res.gpu_devices else { continue };
        if let Some(mig) = &res.mig {
            problems.push(
                Problem::error(
                    Code::Conflict,
                    format!("session `{}` pins devices and asks for a MIG profile", s.name.value),
                )
                .label(mig.loc, "a MIG profile")
                .primary(pins.loc, "pinned devices")
                .help("pin MIG instances by their UUIDs in `gpu-devices`, or ask for the profile alone"),
            );
        }
        if let Some(gpus) = &res.gpus
            && gpus.value as usize != pins.value.len()
        {
            problems.push(
                Problem::error(
                    Code::PinCount,
                    format!("session `{}` asks for {} GPU(s) but pins {}", s.name.value, gpus.value, pins.value.len()),
                )
                .label(gpus.loc, format!("{} GPU(s)", gpus.value))
                .primary(pins.loc, format!("{} device(s)", pins.value.len()))
                .help("drop `gpus` (the pins say how many), or make them agree"),
            );
        }
        let node = index.nodes.get(s.node.value.as_str());
        for pin in &pins.value {
            if let Some((first, at)) = pinned.get(&(s.node.value.as_str(), pin.as_str())) {
                let who =
                    if *first == s.name.value.as_str() { "this session".to_string() } else { format!("`{first}`") };
                problems.push(
                    Problem::error(Code::PinTwice, format!("device {pin} of node `{}` is pinned twice", s.node.value))
                        .label(*at, format!("pinned by {who}"))
                        .primary(pins.loc, format!("pinned again by `{}`", s.name.value))
                        .help("a device belongs to one session: pin another, or let bai place one (`gpus=N`)"),
                );
                continue;
            }
            pinned.insert((s.node.value.as_str(), pin.as_str()), (s.name.value.as_str(), pins.loc));
            let (Some(node), Ok(index)) = (node, pin.parse::<u32>()) else { continue };
            let Some(declared) = &node.gpus else { continue };
            if index >= declared.value {
                problems.push(
                    Problem::error(
                        Code::PinAbsent,
                        format!(
                            "session `{}` pins GPU {index}, which node `{}` does not have",
                            s.name.value, s.node.value
                        ),
                    )
                    .label(
                        declared.loc,
                        format!("{} GPU(s) declared: 0 to {}", declared.value, declared.value.saturating_sub(1)),
                    )
                    .primary(pins.loc, format!("GPU {index}"))
                    .help("pin a device the node has (indices count from 0), or a UUID from `bai status`"),
                );
            }
        }
    }
}
