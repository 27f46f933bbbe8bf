//! Published ports: two sessions of a node may not publish one host port on addresses that overlap
//! (the second container would fail to start), and a session on the host's network publishes nothing.

use crate::diagnostic::{Code, Problem};
use crate::model::{Cluster, Network, Port, Session};

pub fn check(cluster: &Cluster, problems: &mut Vec<Problem>) {
    let mut seen: Vec<(&Session, &Port)> = Vec::new();
    for s in &cluster.sessions {
        for port in &s.ports {
            let Some(publish) = &port.publish else { continue };
            if let Some(network) = s.network.as_ref().filter(|n| n.value == Network::Host) {
                problems.push(
                    Problem::error(
                        Code::Conflict,
                        format!(
                            "session `{}` publishes port `{}` on the host's network",
                            s.name.value, port.name.value
                        ),
                    )
                    .label(network.loc, "the node's own network")
                    .primary(publish.loc, "nothing to publish")
                    .help("on the host's network the port is already the node's: drop `publish`"),
                );
                continue;
            }
            let clash = seen.iter().find(|(other, p)| {
                other.node.value == s.node.value
                    && p.publish.as_ref().is_some_and(|q| q.value.clashes_with(&publish.value))
            });
            if let Some((other, p)) = clash {
                let first = p.publish.as_ref().map_or(p.name.loc, |q| q.loc);
                problems.push(
                    Problem::error(
                        Code::PublishClash,
                        format!("host port {} of node `{}` is published twice", publish.value.port, s.node.value),
                    )
                    .label(first, format!("published by `{}`", other.name.value))
                    .primary(publish.loc, format!("published again by `{}`", s.name.value))
                    .help("publish another host port: one port of a node takes one listener"),
                );
                continue;
            }
            seen.push((s, port));
        }
    }
}
