//! `bai status FILE`: desired against observed per node and session, and each node's inventory;
//! `--format json` writes the snapshot `bai plan --state` reads. Takes no lease: it never waits for an apply.

use std::fmt::Write as _;

use bai::config::value::format_size_approx;
use bai::reconcile::survey::{Surveyed, survey};
use bai::secret::without_digests;
use bai::state::snapshot::{ClusterSnapshot, FORMAT_VERSION, Snapshot};

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
    let Some(engine) = remote::start(&args.connect, printer) else { return Outcome::Failed };
    let mut snapshot = Snapshot { format_version: FORMAT_VERSION, clusters: Vec::new() };
    let mut text = String::new();
    let mut failed = false;
    for surveyed in survey(&engine, lab.config(), &args.connect.on, printer) {
        failed |= !surveyed.failures.is_empty();
        let Surveyed { cluster, mut snapshots, desired, failures, .. } = surveyed;
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
                let _ = writeln!(text, "    session {name}: {state}");
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
