//! References between resources (sessions → images, nodes, vfolders, sessions), node settings that
//! conflict, and the warnings about what is declared but unused.

use std::collections::HashSet;

use crate::diagnostic::{Code, Problem};
use crate::model::{Cluster, EnvValue};
use crate::source::Loc;
use crate::suggest;
use crate::validate::ClusterIndex;

fn unknown<T>(code: Code, kind: &str, name: &str, loc: Loc, known: &std::collections::HashMap<&str, T>) -> Problem {
    let mut sorted: Vec<&str> = known.keys().copied().collect();
    sorted.sort_unstable();
    let help = suggest::help_for(name, sorted.iter().copied(), &format!("{kind}s"))
        .or_else(|| Some(format!("declare it with `{kind} \"{name}\" …` in this cluster")));
    Problem::error(code, format!("unknown {kind} `{name}`"))
        .primary(loc, format!("no {kind} of this name"))
        .help_opt(help)
}

pub fn check(cluster: &Cluster, index: &ClusterIndex<'_>, problems: &mut Vec<Problem>) {
    for v in &cluster.vfolders {
        if !v.node.loc.is_nowhere() && !index.nodes.contains_key(v.node.value.as_str()) {
            problems.push(unknown(Code::UnknownNodeRef, "node", v.node.value.as_str(), v.node.loc, &index.nodes));
        }
    }
    let mut used_images = HashSet::new();
    let mut used_vfolders = HashSet::new();
    for s in &cluster.sessions {
        used_images.insert(s.image.value.as_str());
        if !s.image.loc.is_nowhere() && !index.images.contains_key(s.image.value.as_str()) {
            problems.push(unknown(Code::UnknownImageRef, "image", s.image.value.as_str(), s.image.loc, &index.images));
        }
        if !s.node.loc.is_nowhere() && !index.nodes.contains_key(s.node.value.as_str()) {
            problems.push(unknown(Code::UnknownNodeRef, "node", s.node.value.as_str(), s.node.loc, &index.nodes));
        }
        for m in &s.mounts {
            used_vfolders.insert(m.vfolder.value.as_str());
            if !index.vfolders.contains_key(m.vfolder.value.as_str()) {
                problems.push(unknown(
                    Code::UnknownVfolderRef,
                    "vfolder",
                    m.vfolder.value.as_str(),
                    m.vfolder.loc,
                    &index.vfolders,
                ));
            }
        }
        for d in &s.depends_on {
            if !index.sessions.contains_key(d.value.as_str()) {
                problems.push(unknown(Code::UnknownSessionRef, "session", d.value.as_str(), d.loc, &index.sessions));
            }
        }
        for var in s.env.iter().filter(|v| v.name.value == "PATH") {
            problems.push(
                Problem::error(Code::ReservedEnv, format!("session `{}` sets `PATH`, which bai composes itself", s.name.value))
                    .primary(var.name.loc, "`PATH` is set by bai")
                    .help("every session gets `/home/work/.local/bin` followed by its image's own PATH; put tools in `/home/work/.local/bin` or bake them into the image"),
            );
        }
        for var in &s.env {
            if !crate::protocol::is_env_name(&var.name.value) {
                problems.push(
                    Problem::error(
                        Code::InvalidEnvName,
                        match var.name.value.as_str() {
                            "" => "an environment variable name cannot be empty".to_string(),
                            name => format!("`{}` is not an environment variable name", name.escape_debug()),
                        },
                    )
                    .primary(var.name.loc, "invalid name")
                    .help(
                        "a name is one or more printable ASCII characters other than `=` and space \
                         (`A-Z a-z 0-9 _` is the portable choice): `X=Y` would set `X` to `Y=…`",
                    ),
                );
            }
            if let EnvValue::Literal(value) = &var.value
                && value.contains('\0')
            {
                problems.push(
                    Problem::error(
                        Code::InvalidEnvValue,
                        format!("the value of env `{}` holds a NUL character", var.name.value.escape_debug()),
                    )
                    .primary(var.name.loc, "holds `\\0`")
                    .help("no environment value can hold a NUL: the container would not start"),
                );
            }
        }
        for (i, var) in s.env.iter().enumerate() {
            if let Some(first) = s.env[..i].iter().find(|e| e.name.value == var.name.value) {
                problems.push(
                    Problem::error(
                        Code::DuplicateEnv,
                        format!("session `{}` sets `{}` twice", s.name.value, var.name.value),
                    )
                    .label(first.name.loc, "first set here")
                    .primary(var.name.loc, "set again here")
                    .help("keep one: the container would see only one value"),
                );
            }
            // Empty, or holding `=` or a NUL: no environment holds such a variable.
            if let EnvValue::FromEnv(source) = &var.value
                && (source.is_empty() || source.contains(['=', '\0']))
            {
                problems.push(
                    Problem::error(
                        Code::InvalidValue,
                        format!("env `{}` reads a variable name no environment holds", var.name.value.escape_debug()),
                    )
                    .primary(var.name.loc, "`from-env` is empty or holds `=` or a NUL"),
                );
            }
        }
    }
    for image in &cluster.images {
        if !used_images.contains(image.name.value.as_str()) {
            problems.push(
                Problem::warning(Code::UnusedImage, format!("image `{}` is not used by any session", image.name.value))
                    .primary(image.name.loc, "declared here")
                    .help("bai places an image only on nodes that run a session using it; remove it or use it"),
            );
        }
    }
    for v in &cluster.vfolders {
        if !used_vfolders.contains(v.name.value.as_str()) {
            problems.push(
                Problem::warning(
                    Code::UnusedVfolder,
                    format!("vfolder `{}` is not mounted by any session", v.name.value),
                )
                .primary(v.name.loc, "declared here")
                .help("it is still created on its node; mount it in a session or remove it"),
            );
        }
    }
    check_nodes(cluster, problems);
}

fn check_nodes(cluster: &Cluster, problems: &mut Vec<Problem>) {
    let locals: Vec<_> = cluster.nodes.iter().filter(|n| n.is_local()).collect();
    if let [first, rest @ ..] = locals.as_slice() {
        for other in rest {
            problems.push(
                Problem::error(
                    Code::MultipleLocal,
                    format!("nodes `{}` and `{}` are both local", first.name.value, other.name.value),
                )
                .label(first.local.as_ref().map_or(first.loc, |l| l.loc), "local here")
                .primary(other.local.as_ref().map_or(other.loc, |l| l.loc), "and here")
                .help("`local=#true` means the machine bai runs on; a cluster has at most one such node"),
            );
        }
    }
    for node in &cluster.nodes {
        if node.is_local() {
            let local_loc = node.local.as_ref().map_or(node.loc, |l| l.loc);
            if let Some(address) = &node.address {
                problems.push(
                    Problem::error(Code::Conflict, format!("local node `{}` has an address", node.name.value))
                        .label(local_loc, "runs the agent as a local process")
                        .primary(address.loc, "but is also given an address")
                        .help("remove `address` (or `local=#true` to reach the node over SSH)"),
                );
            }
            if let Some(ssh) = node.ssh_loc {
                problems.push(
                    Problem::error(Code::Conflict, format!("local node `{}` has SSH settings", node.name.value))
                        .label(local_loc, "runs the agent as a local process")
                        .primary(ssh, "SSH settings are never used")
                        .help("remove the `ssh` block (or `local=#true` to reach the node over SSH)"),
                );
            }
        } else if node.address.is_none() {
            problems.push(
                Problem::warning(Code::NoAddress, format!("node `{}` has no address", node.name.value))
                    .primary(node.name.loc, "reachable only by this name")
                    .help(format!(
                        "bai will connect to the host name `{}`; add `address=\"…\"`, or `local=#true` for this machine",
                        node.name.value
                    )),
            );
        }
    }
}
