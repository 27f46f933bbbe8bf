//! Mount rules, after the Backend.AI manager's, made stricter.
//!
//! A mount lands at `/home/work/<alias>` (relative alias), at the alias itself (absolute alias), or at
//! `/home/work/<vfolder>` (no alias). Destinations are normalized before any comparison, so `data`,
//! `./data/` and `/home/work/data` are one place and collide.

use crate::diagnostic::{Code, Problem};
use crate::model::{Cluster, Mount, Permission, Session};
use crate::mount_destination::Destination;
use crate::source::Loc;
use crate::validate::ClusterIndex;

/// `text` with its control characters escaped (`\0`, `\n`, `\u{1b}`), everything else as written.
fn escape_controls(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

/// Where a forbidden destination is, in words: the system directory it lands in.
fn system_place(path: &str) -> String {
    let top = path.split('/').find(|p| !p.is_empty());
    match top {
        None => "on the root directory `/`".to_string(),
        Some("home") => "in `/home` outside `/home/work`".to_string(),
        Some(top) if path == format!("/{top}") => format!("on the system directory `/{top}`"),
        Some(top) => format!("in the system directory `/{top}`"),
    }
}

/// Whether `inner` lies strictly below `outer` (component-wise).
fn is_below(inner: &str, outer: &str) -> bool {
    inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
}

/// Where a mount's problems are pointed at: its alias when it has one, else the vfolder it names.
fn mount_loc(m: &Mount) -> Loc {
    m.alias.as_ref().map_or(m.vfolder.loc, |a| a.loc)
}

pub fn check(cluster: &Cluster, index: &ClusterIndex<'_>, problems: &mut Vec<Problem>) {
    for session in &cluster.sessions {
        check_session(session, index, problems);
    }
}

fn check_session(session: &Session, index: &ClusterIndex<'_>, problems: &mut Vec<Problem>) {
    let mut placed: Vec<(&Mount, String)> = Vec::new();
    for m in &session.mounts {
        let alias = m.alias.as_ref().map(|a| a.value.as_str());
        let at = mount_loc(m);
        // Escaped: an alias may hold control characters, which must not reach the terminal raw.
        let shown = escape_controls(alias.unwrap_or(m.vfolder.value.as_str()));
        match m.destination() {
            Destination::Ok(path) => {
                for (other, other_path) in &placed {
                    if *other_path == path {
                        problems.push(
                            Problem::error(
                                Code::DuplicateAlias,
                                format!("two mounts of session `{}` land on `{path}`", session.name.value),
                            )
                            .label(mount_loc(other), format!("`{}` is mounted at `{path}`", other.vfolder.value))
                            .primary(at, format!("`{}` is mounted there too", m.vfolder.value))
                            .help("give one of them another `alias`; aliases are compared after normalization"),
                        );
                    } else if is_below(&path, other_path) || is_below(other_path, &path) {
                        let (outer, inner) = if is_below(&path, other_path) { (other_path, &path) } else { (&path, other_path) };
                        problems.push(
                            Problem::error(
                                Code::NestedMount,
                                format!("mount `{inner}` lies inside mount `{outer}` in session `{}`", session.name.value),
                            )
                            .label(mount_loc(other), format!("mounted at `{other_path}`"))
                            .primary(at, format!("mounted at `{path}`"))
                            .help("one mount would hide part of the other: give them sibling aliases"),
                        );
                    }
                }
                placed.push((m, path));
            }
            Destination::Empty => problems.push(
                Problem::error(Code::EmptyAlias, "a mount alias cannot be empty")
                    .primary(at, "empty alias")
                    .help("name the directory under /home/work, or drop `alias` to use the vfolder's name"),
            ),
            Destination::Invalid(c) => {
                let (what, why) = if c == ':' {
                    ("`:`".to_string(), "Docker's bind syntax uses it to separate `host:destination:ro`")
                } else {
                    (format!("the control character `{}`", c.escape_debug()), "a path has no place for it")
                };
                problems.push(
                    Problem::error(Code::InvalidAlias, format!("alias `{shown}` holds {what}"))
                        .primary(at, "not a possible mount destination")
                        .help(format!("{why}: write the destination without `:` and control characters")),
                );
            }
            Destination::Escapes => problems.push(
                Problem::error(Code::AliasEscapes, format!("alias `{shown}` climbs out with `..`"))
                    .primary(at, "escapes its directory")
                    .help("write the destination without `..`: a relative alias lands under /home/work"),
            ),
            Destination::Workdir => problems.push(
                Problem::error(Code::MountWorkdir, "a vfolder cannot be mounted at /home/work itself")
                    .primary(at, "this is the session's working directory")
                    .help("mount it below: `alias=\"data\"` lands at /home/work/data"),
            ),
            Destination::System(path) => problems.push(
                Problem::error(Code::SystemDir, format!("alias `{shown}` lands {}", system_place(&path)))
                    .primary(at, "system directory")
                    .help("mount under /home/work (a relative alias) or another top-level directory such as /data"),
            ),
            Destination::Reserved(name) => problems.push(
                Problem::error(Code::ReservedName, format!("`{name}` under /home/work is reserved"))
                    .primary(at, "reserved name")
                    .help("the session's tools keep their own files there (shell start-up files, `.local/bin` on PATH, `.ssh`); choose another alias"),
            ),
        }
        if let Some(a) = &m.alias {
            let plain = a.value.trim_start_matches("./").trim_end_matches('/');
            // When the other mount has no alias the two land on one destination: `duplicate_alias` says it.
            if let Some(other) = session
                .mounts
                .iter()
                .find(|o| o.vfolder.value.as_str() == plain && !std::ptr::eq(*o, m) && o.alias.is_some())
                // Two mounts on one alias: `duplicate_alias` says it; this would be the same mistake twice.
                .filter(|o| {
                    o.alias.as_ref().is_some_and(|oa| oa.value.trim_start_matches("./").trim_end_matches('/') != plain)
                })
            {
                problems.push(
                    Problem::error(
                        Code::ShadowsVfolder,
                        format!(
                            "alias `{}` is the name of vfolder `{}`, also mounted in this session",
                            a.value, other.vfolder.value
                        ),
                    )
                    .primary(a.loc, "reads as the other vfolder")
                    .label(other.vfolder.loc, "that vfolder")
                    .help("choose an alias that is not the name of another mounted vfolder"),
                );
            }
        }
        let Some(vfolder) = index.vfolders.get(m.vfolder.value.as_str()) else { continue };
        if vfolder.permission() == Permission::Ro && !m.is_readonly() {
            let perm_loc = vfolder.permission.as_ref().map_or(vfolder.name.loc, |p| p.loc);
            problems.push(
                Problem::error(
                    Code::ReadonlyRequired,
                    format!("vfolder `{}` is read-only but mounted writable", vfolder.name.value),
                )
                .primary(m.readonly.as_ref().map_or(m.vfolder.loc, |r| r.loc), "mounted without `readonly=#true`")
                .label(perm_loc, "declared read-only here")
                .help("add `readonly=#true` to the mount"),
            );
        }
        // A session or vfolder on an unknown node has its own error (`unknown_node`): said once.
        let node_known = index.nodes.contains_key(vfolder.node.value.as_str())
            && index.nodes.contains_key(session.node.value.as_str())
            && !session.node.loc.is_nowhere();
        if node_known && vfolder.node.value != session.node.value {
            problems.push(
                Problem::error(
                    Code::OtherNode,
                    format!(
                        "session `{}` on node `{}` mounts vfolder `{}` on node `{}`",
                        session.name.value, session.node.value, vfolder.name.value, vfolder.node.value
                    ),
                )
                .primary(m.vfolder.loc, "lives on another node")
                .label(vfolder.node.loc, format!("vfolder is on `{}`", vfolder.node.value))
                .label(session.node.loc, format!("session runs on `{}`", session.node.value))
                .help("a vfolder is a directory on one node: run the session there, or declare a vfolder on its node"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(lab: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.kdl");
        std::fs::write(&path, lab).unwrap();
        let loaded = crate::config::load(&path);
        let mut codes: Vec<String> = crate::validate::validate(&loaded.config)
            .iter()
            .filter(|p| p.is_error())
            .map(|p| p.code.to_string())
            .collect();
        codes.sort();
        codes
    }

    #[test]
    fn one_mistake_is_reported_once() {
        let head = "cluster \"e\" {\n    node \"n\" local=#true\n    image \"img\" ref=\"busybox:1\"\n    vfolder \"data\" node=\"n\"\n    vfolder \"more\" node=\"n\"\n";
        // Two mounts on one alias that is also a vfolder's name: the duplicate alias, not also a shadow.
        let dup = format!(
            "{head}    session \"sess\" image=\"img\" node=\"n\" {{\n        mount \"data\" alias=\"more\"\n        mount \"more\" alias=\"more\"\n    }}\n}}\n"
        );
        assert_eq!(codes(&dup), ["bai::mount::duplicate_alias"]);
        // A session on an unknown node: that, not also "mounts a vfolder of another node".
        let lost =
            format!("{head}    session \"sess\" image=\"img\" node=\"nope\" {{\n        mount \"data\"\n    }}\n}}\n");
        assert_eq!(codes(&lost), ["bai::ref::unknown_node"]);
        // Each still fires on its own.
        let shadow = format!(
            "{head}    session \"sess\" image=\"img\" node=\"n\" {{\n        mount \"data\" alias=\"more\"\n        mount \"more\" alias=\"other\"\n    }}\n}}\n"
        );
        assert_eq!(codes(&shadow), ["bai::mount::shadows_vfolder"]);
    }

    #[test]
    fn nesting_is_component_wise() {
        assert!(is_below("/home/work/data/raw", "/home/work/data"));
        assert!(!is_below("/home/work/database", "/home/work/data"));
        assert!(!is_below("/home/work/data", "/home/work/data"));
    }
}
