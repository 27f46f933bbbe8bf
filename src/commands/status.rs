//! `bai status FILE`: desired against observed per node and session, and each node's inventory;
//! `--format json` writes the snapshot `bai plan --state` reads. Takes no lease: it never waits for an apply.

use std::fmt::Write as _;

use bai::config::value::format_size_approx;
use bai::failure::Failure;
use bai::reconcile::Reporter;
use bai::reconcile::survey::{Surveyed, survey};
use bai::secret::without_digests;
use bai::state::snapshot::NodeSnapshot;
use bai::state::snapshot::{ClusterSnapshot, FORMAT_VERSION, Snapshot};
use bai::state::spec::SessionSpec;
use bai::untrusted::escape;

use crate::cli::{StatusArgs, StatusFormat};
use crate::commands::{JsonDiagnostics, Outcome, Printer, check, remote};

pub fn run(args: &StatusArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    if args.format == StatusFormat::Json {
        printer.json_diagnostics(JsonDiagnostics::OnFailure);
    }
    let lab = check(&args.file, cluster);
    printer.diagnostics(&lab.problems, &lab.loaded.sources);
    if lab.has_errors() {
        return Outcome::Failed;
    }
    let Some(engine) = remote::start(&args.connect, lab.config(), printer) else { return Outcome::Failed };
    let mut snapshot = Snapshot { format_version: FORMAT_VERSION, clusters: Vec::new() };
    let mut text = String::new();
    let mut failed = false;
    for surveyed in survey(&engine, lab.config(), &args.connect.on, printer) {
        failed |= !surveyed.failures.is_empty();
        let Surveyed { cluster, mut snapshots, desired, failures, placement, .. } = surveyed;
        // Read-only: what placing would refuse is worth knowing here, not a failure of `status`.
        let notes: Vec<Failure> = placement
            .failures()
            .into_iter()
            .map(|f| Failure { severity: bai::diagnostic::Severity::Warning, ..f })
            .collect();
        printer.failures(&notes);
        let model = lab.config().clusters.iter().find(|c| c.name.value == cluster);
        let _ = writeln!(text, "cluster `{cluster}`");
        for n in &snapshots {
            let inv = n.inventory.as_ref();
            let gpus = inv.map_or_else(String::new, |i| match (&i.gpu_error, i.gpus.len()) {
                (Some(reason), 0) => format!("0 GPUs ({reason})"),
                (_, count) => {
                    let names: Vec<&str> = i.gpus.iter().map(|g| g.name.as_str()).collect();
                    format!("{count} GPUs ({})", names.join(", "))
                }
            });
            let cpus = inv.and_then(|i| i.cpus).map_or(String::new(), |c| format!(", {c} CPUs"));
            let mem =
                inv.and_then(|i| i.memory).map_or(String::new(), |m| format!(", {} memory", format_size_approx(m)));
            let agent = n.agent.as_ref().map_or("not enrolled".to_string(), |a| format!("agent {}", a.version));
            let _ = writeln!(text, "  node {}: {agent}, {gpus}{cpus}{mem}", n.name);
            for line in gpu_lines(n, cluster.as_str()) {
                let _ = writeln!(text, "    {line}");
            }
            let mut names: Vec<&str> = desired
                .sessions
                .iter()
                .filter(|(_, s)| s.node.as_str() == n.name)
                .map(|(k, _)| k.as_str())
                .chain(n.sessions.iter().map(|s| s.name.as_str()))
                .collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                let want = desired.sessions.get(name);
                let have = n.sessions.iter().find(|s| s.name == name);
                let state = match (want, have) {
                    (Some(_), None) => "missing".to_string(),
                    (None, Some(h)) => format!("{:?}, not in the configuration", h.state).to_lowercase(),
                    (Some(w), Some(h)) if w.hash != h.spec_hash => {
                        format!("{:?}, drifted (spec differs)", h.state).to_lowercase()
                    }
                    (Some(_), Some(h)) => match h.exit_code {
                        Some(code) if h.state != bai::state::snapshot::ContainerState::Running => {
                            format!("{:?} with code {code}", h.state).to_lowercase()
                        }
                        _ => format!("{:?}", h.state).to_lowercase(),
                    },
                    (None, None) => continue,
                };
                let extra = have.and_then(|h| h.spec.as_ref()).map_or_else(String::new, |spec| {
                    let address = model.and_then(|m| m.nodes.iter().find(|x| x.name.value.as_str() == n.name));
                    session_extras(spec, address.and_then(|a| a.address.as_ref()).map(|a| a.value.as_str()))
                });
                let _ = writeln!(text, "    session {name}: {state}{extra}");
            }
            for v in &n.vfolders {
                let _ = writeln!(
                    text,
                    "    vfolder {}: {}{}",
                    v.name,
                    v.permission.as_str(),
                    if v.empty { ", empty" } else { "" }
                );
            }
            for u in &n.unowned {
                match &u.reason {
                    Some(why) => {
                        let _ = writeln!(text, "    conflict: vfolder `{}`: {why}; bai leaves it alone", u.name);
                    }
                    None => {
                        let _ = writeln!(
                            text,
                            "    conflict: {:?} `{}` holds a managed name but is not bai's",
                            u.kind, u.name
                        );
                    }
                }
            }
        }
        for f in &failures {
            let _ = writeln!(text, "  node {}: unreachable", f.node);
        }
        // The snapshot shows secrets by reference only: no digest (`bai plan --state` reads an unknown
        // digest as unchanged).
        for session in snapshots.iter_mut().flat_map(|n| n.sessions.iter_mut()) {
            if let Some(spec) = session.spec.as_mut() {
                *spec = without_digests(spec);
            }
        }
        snapshot.clusters.push(ClusterSnapshot { name: cluster.to_string(), nodes: snapshots });
    }
    match args.format {
        StatusFormat::Text => printer.stdout(&text),
        // A snapshot that misses a node would plan that node as empty: a failed run writes the
        // diagnostics document instead (see `Printer::finish`).
        StatusFormat::Json if failed => {}
        StatusFormat::Json => {
            let mut json = serde_json::to_string_pretty(&snapshot).unwrap_or_default();
            json.push('\n');
            printer.stdout(&json);
        }
    }
    if failed { Outcome::Failed } else { Outcome::Ok }
}

/// One line per GPU of a node (and MIG instance): who holds it, from the sessions' recorded devices and
/// what the node reports using it. Node-supplied text is escaped.
fn gpu_lines(node: &NodeSnapshot, cluster: &str) -> Vec<String> {
    let Some(inventory) = &node.inventory else { return Vec::new() };
    let holder_of = |id: &str, index: u32| {
        node.sessions
            .iter()
            .filter(|s| {
                s.spec.as_ref().is_some_and(|spec| spec.resources.devices.iter().any(|d| bai::gpu::names(d, id, index)))
            })
            .map(|s| format!("session {}", s.name))
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    let mut line = |what: String, id: &str, index: u32, memory: u64, holders: &[bai::state::snapshot::GpuHolder]| {
        let mut users = holder_of(id, index);
        users.extend(holders.iter().filter(|h| !h.is_session_of(cluster)).map(|h| h.describe()));
        let users = if users.is_empty() { "free".to_string() } else { users.join("; ") };
        out.push(format!("{what} ({}, {}): {users}", escape(id), format_size_approx(memory)));
    };
    for g in &inventory.gpus {
        if g.mig_mode {
            for m in &g.mig {
                line(
                    format!("gpu {} MIG {}", g.index, escape(&m.profile)),
                    &m.uuid,
                    g.index,
                    m.memory_total,
                    &m.holders,
                );
            }
        } else {
            line(format!("gpu {}", g.index), &g.uuid, g.index, g.memory_total, &g.holders);
        }
    }
    out
}

/// What a session's line adds: its GPUs and its published ports with the address to reach them.
fn session_extras(spec: &SessionSpec, node_address: Option<&str>) -> String {
    let mut out = String::new();
    if !spec.resources.devices.is_empty() {
        let _ = write!(
            out,
            ", gpus {}",
            spec.resources.devices.iter().map(|d| escape(d).into_owned()).collect::<Vec<_>>().join(",")
        );
    }
    for (name, p) in &spec.published {
        let Some(port) = spec.ports.get(name) else { continue };
        let reach = match (p.address.as_str(), node_address) {
            ("0.0.0.0" | "::", Some(host)) => format!("{host}:{}", p.port),
            ("0.0.0.0" | "::", None) => format!("every address of the node, port {}", p.port),
            (a, _) => format!("{}:{} on the node", escape(a), p.port),
        };
        let _ = write!(out, ", {} {port} at {reach}", escape(name));
    }
    out
}
