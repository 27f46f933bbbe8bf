//! `--on SELECTOR`: which nodes a run touches — a name, a glob (`gpu-*`), or `@label=value`.

use crate::failure::Failure;
use crate::model::{Config, Node};

/// Whether `node` matches any selector; no selectors match every node.
pub fn selected(node: &Node, selectors: &[String]) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| matches(node, s))
}

/// Each selector that matches no node of `config` (its clusters as `--cluster` left them), as an error:
/// a run narrowed to nothing would otherwise succeed having done nothing, and a typo would pass unseen.
pub fn unmatched(config: &Config, selectors: &[String]) -> Vec<Failure> {
    let nodes: Vec<&Node> = config.clusters.iter().flat_map(|c| &c.nodes).collect();
    selectors
        .iter()
        .filter(|s| !nodes.iter().any(|n| matches(n, s)))
        .map(|selector| {
            let help = match selector.strip_prefix('@') {
                Some(label) => {
                    let key = label.split_once('=').map_or(label, |(k, _)| k);
                    let mut values: Vec<String> =
                        nodes.iter().filter_map(|n| n.labels.get(key).map(|v| format!("@{key}={}", v.value))).collect();
                    values.sort();
                    values.dedup();
                    let keys = nodes.iter().flat_map(|n| n.labels.keys().map(String::as_str));
                    match values.as_slice() {
                        [] => crate::suggest::help_for(key, keys, "labels"),
                        some => crate::suggest::help_for(selector, some.iter().map(String::as_str), "selectors"),
                    }
                }
                None => crate::suggest::help_for(selector, nodes.iter().map(|n| n.name.value.as_str()), "nodes"),
            };
            Failure::error("bai::select::no_match", format!("--on {selector} matches no node of the lab")).help_opt(
                help.or_else(|| Some("name a node, a glob of names (`gpu-*`) or a label (`@rack=r1`)".into())),
            )
        })
        .collect()
}

fn matches(node: &Node, selector: &str) -> bool {
    if let Some(label) = selector.strip_prefix('@') {
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        return node.labels.get(key).is_some_and(|v| v.value == value);
    }
    match glob::Pattern::new(selector) {
        Ok(pattern) => pattern.matches(node.name.value.as_str()),
        Err(_) => node.name.value.as_str() == selector,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeName;
    use crate::source::{Loc, Spanned};

    fn node(name: &str, rack: &str) -> Node {
        Node {
            name: Spanned::new(NodeName(name.into()), Loc::nowhere()),
            loc: Loc::nowhere(),
            address: None,
            local: None,
            ssh: Default::default(),
            ssh_loc: None,
            gpus: None,
            labels: [("rack".to_string(), Spanned::new(rack.to_string(), Loc::nowhere()))].into(),
            vfolder_root: None,
            probe: Default::default(),
            timeouts: Default::default(),
        }
    }

    #[test]
    fn names_globs_and_labels() {
        let n = node("gpu-01", "r1");
        assert!(selected(&n, &[]));
        assert!(selected(&n, &["gpu-01".into()]));
        assert!(selected(&n, &["gpu-*".into()]));
        assert!(selected(&n, &["cpu-*".into(), "@rack=r1".into()]));
        assert!(!selected(&n, &["@rack=r2".into()]));
        assert!(!selected(&n, &["gpu-02".into()]));
    }

    #[test]
    fn a_selector_matching_nothing_is_named_with_a_suggestion() {
        let config = Config {
            clusters: vec![crate::model::Cluster {
                nodes: vec![node("gpu-01", "r1"), node("gpu-02", "r2")],
                ..crate::fleet::scripted::lab(crate::fleet::scripted::LAB).2.config.clusters[0].clone()
            }],
        };
        let failures = unmatched(&config, &["gpu-*".into(), "gpu-1".into(), "@rack=r3".into(), "@rak=r1".into()]);
        let got: Vec<(&str, Option<&str>)> = failures.iter().map(|f| (f.message.as_str(), f.help.as_deref())).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, "--on gpu-1 matches no node of the lab");
        assert_eq!(got[0].1, Some("did you mean `gpu-01`?"));
        assert!(got[1].1.is_some_and(|h| h.contains("@rack=r1") || h.contains("@rack=r2")), "{got:?}");
        assert_eq!(got[2].1, Some("did you mean `rack`?"));
        assert!(failures.iter().all(|f| f.code == "bai::select::no_match"));
        assert!(unmatched(&config, &[]).is_empty());
    }
}
