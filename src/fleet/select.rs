//! `--on SELECTOR`: which nodes a run touches — a name, a glob (`gpu-*`), or `@label=value`.

use crate::model::Node;

/// Whether `node` matches any selector; no selectors match every node.
pub fn selected(node: &Node, selectors: &[String]) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| matches(node, s))
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
}
