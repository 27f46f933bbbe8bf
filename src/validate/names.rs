//! Name rules: what a name may look like, and that each is defined once per kind.

use std::collections::HashMap;

use crate::diagnostic::{Code, Problem};
use crate::model::{Cluster, Config};
use crate::source::Loc;

/// Cluster, node and image names end up in container names, labels and resource ids.
pub fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Backend.AI's session-name rule, `^\w[\w.-]*\w$`, with `\w` kept to ASCII: the name becomes part of a
/// Docker container name, which allows nothing else.
pub fn is_session_name(name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    (4..=64).contains(&name.chars().count())
        && name.starts_with(word)
        && name.ends_with(word)
        && name.chars().all(|c| word(c) || c == '.' || c == '-')
}

pub fn is_vfolder_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name != "."
        && name != ".."
}

fn invalid(kind: &str, name: &str, loc: Loc, rule: &str) -> Problem {
    Problem::error(Code::InvalidName, format!("`{name}` is not a valid {kind} name"))
        .primary(loc, "invalid name")
        .help(rule.to_string())
}

const PLAIN_RULE: &str = "use 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit";

/// A cluster name is a plain name without `.`: containers are named `bai.<cluster>.<session>` and session
/// names may hold a `.`, so a dot in a cluster name would let cluster `a` with session `x.train` and cluster
/// `a.x` with session `train` claim one container (`bai.a.x.train`). Without it, the cluster is exactly
/// what stands between a container name's first two dots.
pub fn is_cluster_name(name: &str) -> bool {
    is_plain_name(name) && !name.contains('.')
}

const CLUSTER_RULE: &str = "use 1 to 64 of `A-Z a-z 0-9 _ -`, starting with a letter or digit; no `.`: \
     containers are named `bai.<cluster>.<session>` and session names may hold a `.`, so a dotted cluster \
     name could claim another cluster's container (cluster `a` with session `x.train` and cluster `a.x` \
     with session `train` are both `bai.a.x.train`)";

fn duplicates<'a>(kind: &str, names: impl Iterator<Item = (&'a str, Loc)>, problems: &mut Vec<Problem>) {
    let mut first: HashMap<&str, Loc> = HashMap::new();
    for (name, loc) in names {
        match first.get(name) {
            Some(&earlier) => problems.push(
                Problem::error(Code::DuplicateName, format!("{kind} `{name}` is defined twice"))
                    .label(earlier, "first defined here")
                    .primary(loc, "defined again here")
                    .help(format!("{kind} names are unique within a cluster: rename or remove one")),
            ),
            None => {
                first.insert(name, loc);
            }
        }
    }
}

pub fn check_clusters(config: &Config, problems: &mut Vec<Problem>) {
    for c in &config.clusters {
        if !is_cluster_name(c.name.value.as_str()) {
            problems.push(invalid("cluster", c.name.value.as_str(), c.name.loc, CLUSTER_RULE));
        }
    }
    let mut first: HashMap<&str, Loc> = HashMap::new();
    for c in &config.clusters {
        let name = c.name.value.as_str();
        match first.get(name) {
            Some(&earlier) => problems.push(
                Problem::error(Code::DuplicateName, format!("cluster `{name}` is defined twice"))
                    .label(earlier, "first defined here")
                    .primary(c.name.loc, "defined again here")
                    .help("cluster names are unique in a configuration: rename or merge one"),
            ),
            None => {
                first.insert(name, c.name.loc);
            }
        }
    }
}

pub fn check(cluster: &Cluster, problems: &mut Vec<Problem>) {
    for n in &cluster.nodes {
        if !is_plain_name(n.name.value.as_str()) {
            problems.push(invalid("node", n.name.value.as_str(), n.name.loc, PLAIN_RULE));
        }
    }
    for i in &cluster.images {
        if !is_plain_name(i.name.value.as_str()) {
            problems.push(invalid("image", i.name.value.as_str(), i.name.loc, PLAIN_RULE));
        }
    }
    for v in &cluster.vfolders {
        if !is_vfolder_name(v.name.value.as_str()) {
            problems.push(invalid("vfolder", v.name.value.as_str(), v.name.loc, "use 1 to 64 of `A-Z a-z 0-9 . _ -`"));
        } else if crate::protocol::is_reserved_vfolder_name(v.name.value.as_str()) {
            problems.push(
                Problem::error(Code::ReservedVfolderName, format!("vfolder name `{}` is reserved", v.name.value))
                    .primary(v.name.loc, "bai's own name")
                    .help(
                        "names starting with `.bai` (in any case) belong to bai's own directories under the vfolder \
                         root, such as `.bai-tombstones/` where removed vfolders are kept: choose another name",
                    ),
            );
        }
    }
    for s in &cluster.sessions {
        if !is_session_name(s.name.value.as_str()) {
            problems.push(invalid(
                "session",
                s.name.value.as_str(),
                s.name.loc,
                "use 4 to 64 of `A-Z a-z 0-9 _ . -`, starting and ending with a letter, digit or `_`",
            ));
        }
    }
    duplicates("node", cluster.nodes.iter().map(|n| (n.name.value.as_str(), n.name.loc)), problems);
    duplicates("image", cluster.images.iter().map(|n| (n.name.value.as_str(), n.name.loc)), problems);
    duplicates("vfolder", cluster.vfolders.iter().map(|n| (n.name.value.as_str(), n.name.loc)), problems);
    duplicates("session", cluster.sessions.iter().map(|n| (n.name.value.as_str(), n.name.loc)), problems);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_follow_backend_ai() {
        for ok in ["train", "a_b-c.d", "sess-00001", "_x_y"] {
            assert!(is_session_name(ok), "{ok}");
        }
        for bad in ["abc", "-abc", "abcd-", "ab cd", "séance", &"x".repeat(65)] {
            assert!(!is_session_name(bad), "{bad}");
        }
    }

    #[test]
    fn plain_and_vfolder_names() {
        assert!(is_plain_name("gpu-01"));
        assert!(!is_plain_name("-gpu"));
        assert!(!is_plain_name("gpu/01"));
        assert!(is_cluster_name("gpu-lab_2"));
        assert!(!is_cluster_name("a.x"), "a dotted cluster name makes container names ambiguous");
        assert!(is_plain_name("a.x"), "node and image names may hold a dot");
        assert!(is_vfolder_name(".hidden"));
        assert!(!is_vfolder_name(".."));
        assert!(!is_vfolder_name("a/b"));
    }
}
