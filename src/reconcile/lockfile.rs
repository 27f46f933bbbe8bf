//! The lock file's part in a run: reading and writing `bai.lock` beside the lab, the local facts it is
//! checked against (packed contexts, archives, the agent binary), and what nodes report for it.
//!
//! Cargo's rules: `apply` without a lock writes one after it succeeds; a lock lacking an image gains it;
//! an entry that would change (context edited, archive replaced, another digest pinned, another bai) stops
//! `apply` before any node is touched, unless `--update-lock`. `bai lock` writes the lock again from the
//! local facts and what the nodes hold now (no lease); values already recorded for an entry whose content
//! did not change are kept, so locking twice gives the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::load::ReadError;
use crate::failure::Failure;
use crate::fleet::context;
use crate::lock::{self, ClusterLock, Lock, LockedImage, LockedSource, Update};
use crate::model::{Cluster, Config, ImageSource};
use crate::reconcile::report::Reported;
use crate::reconcile::{Engine, Observation, Reporter};
use crate::source::SourceMap;
use crate::state::ClusterState;
use crate::state::snapshot::{ImageSnapshot, NodeSnapshot};

/// `bai.lock` in the directory of the lab file.
pub fn path_for(file: &Path) -> PathBuf {
    file.parent().unwrap_or(Path::new("")).join(lock::FILE_NAME)
}

/// The lock at `path`; `Ok(None)` when there is none. Problems are reported.
pub fn read(path: &Path, reporter: &dyn Reporter) -> Result<Option<Lock>, Reported> {
    let text = match crate::config::load::read_source(path) {
        Ok(text) => text,
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            reporter.fail(Failure::error("bai::lock::read", format!("cannot read `{}`: {e}", path.display())));
            return Err(Reported);
        }
    };
    let mut sources = SourceMap::default();
    let id = sources.add(path.display().to_string(), path.to_path_buf(), Arc::from(text.as_str()));
    lock::parse::parse(&text, id).map(Some).map_err(|problems| {
        reporter.problems(&problems, &sources);
        Reported
    })
}

/// Writes the lock when its text changed; says so.
pub fn write(path: &Path, lock: &Lock, reporter: &dyn Reporter) -> Result<(), Reported> {
    let text = lock::format::format(lock);
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let tmp = path.with_extension("lock.tmp");
    std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| {
        reporter.fail(Failure::error("bai::lock::write", format!("cannot write `{}`: {e}", path.display())));
        Reported
    })?;
    reporter.note(&format!("wrote {}", path.display()));
    Ok(())
}

/// What the lab would lock now from local facts alone: the agent binary's hash and, for every image a
/// session uses, its ref and the hash of its context or archive (pulled images: the config's pin).
pub fn wanted(config: &Config, agent_binary: &Path) -> Result<Lock, Failure> {
    let agent = crate::transport::ssh::agent_sha256(agent_binary).map_err(|e| {
        Failure::error(LOCAL_FACTS, format!("cannot hash the agent binary `{}`: {e}", agent_binary.display()))
    })?;
    let mut lock = Lock { agent: Some(agent), clusters: BTreeMap::new() };
    for cluster in &config.clusters {
        lock.clusters.insert(cluster.name.value.to_string(), wanted_images(cluster)?);
    }
    Ok(lock)
}

/// A context, archive or agent binary that cannot be read to lock it.
const LOCAL_FACTS: &str = "bai::lock::local_facts";

fn wanted_images(cluster: &Cluster) -> Result<ClusterLock, Failure> {
    let used: std::collections::BTreeSet<String> =
        ClusterState::desired(cluster).images.keys().map(|(_, image)| image.to_string()).collect();
    let mut images = ClusterLock::new();
    for image in cluster.images.iter().filter(|i| used.contains(i.name.value.as_str())) {
        let name = image.name.value.to_string();
        let source = match &image.source {
            ImageSource::Pull => LockedSource::Pull { digest: image.digest.as_ref().map(|d| d.value.clone()) },
            ImageSource::Build { context: dir, dockerfile } => {
                let (_, sha) = context::pack(&dir.value).map_err(|e| {
                    Failure::error(
                        LOCAL_FACTS,
                        format!("image `{name}`: cannot pack build context `{}`: {e}", dir.value.display()),
                    )
                })?;
                LockedSource::Build {
                    context_sha256: sha,
                    dockerfile: dockerfile.as_ref().map_or_else(|| "Dockerfile".into(), |d| d.value.clone()),
                    image_id: None,
                }
            }
            ImageSource::Archive { path } => LockedSource::Archive {
                sha256: context::file_sha256(&path.value).map_err(|e| {
                    Failure::error(
                        LOCAL_FACTS,
                        format!("image `{name}`: cannot read archive `{}`: {e}", path.value.display()),
                    )
                })?,
                image_id: None,
            },
        };
        images.insert(name, LockedImage { reference: image.reference.value.clone(), source });
    }
    Ok(images)
}

/// The lock an apply works with, decided before any node is reached.
pub struct Prepared {
    pub path: PathBuf,
    pub update: Update,
    /// Whether there was a lock file before the run (a new one is announced when written).
    pub existed: bool,
}

/// Reads the lock and checks it against the local facts. A mismatch without `update_lock` is printed and
/// stops the run (`Err`); with it, or for entries the lock lacks, the new values are taken and printed.
pub fn prepare(
    file: &Path,
    config: &Config,
    agent_binary: &Path,
    prune: bool,
    update_lock: bool,
    reporter: &dyn Reporter,
) -> Result<Prepared, Reported> {
    let path = path_for(file);
    let old = read(&path, reporter)?;
    let wanted = wanted(config, agent_binary).map_err(|e| {
        reporter.fail(e);
        Reported
    })?;
    if let Some(old) = &old {
        let mismatches = lock::compare(old, &wanted);
        if !mismatches.is_empty() && !update_lock {
            let help = format!(
                "nothing was changed on any node; `bai apply --update-lock` moves {} to what the lab has now",
                path.display()
            );
            let failures: Vec<Failure> =
                mismatches.iter().map(|m| Failure::error("bai::lock::mismatch", m.to_string()).help(&help)).collect();
            reporter.failures(&failures);
            return Err(Reported);
        }
    }
    let mut update = lock::merge(old.as_ref(), &wanted, prune);
    if update_lock {
        // `--update-lock` lets a pulled tag resolve again (unless the config pins a digest).
        for (cluster, images) in &mut update.lock.clusters {
            for (name, image) in images.iter_mut() {
                let pinned = wanted
                    .clusters
                    .get(cluster)
                    .and_then(|c| c.get(name))
                    .is_some_and(|w| matches!(&w.source, LockedSource::Pull { digest: Some(_) }));
                if let LockedSource::Pull { digest } = &mut image.source
                    && !pinned
                {
                    *digest = None;
                }
            }
        }
    }
    if old.is_some() {
        report_update(&update, reporter);
    }
    Ok(Prepared { path, update, existed: old.is_some() })
}

/// What merging moved in the lock, a line each.
pub fn report_update(update: &lock::Update, reporter: &dyn Reporter) {
    for (verb, lines) in [("added", &update.added), ("moved", &update.moved), ("removed", &update.removed)] {
        for line in lines {
            reporter.note(&format!("{}: {verb} {line}", lock::FILE_NAME));
        }
    }
}

/// The images of each node, as [`lock::record`] and [`lock::stale`] take them.
pub fn node_images(snapshots: &[NodeSnapshot]) -> Vec<(String, Vec<ImageSnapshot>)> {
    snapshots.iter().map(|s| (s.name.clone(), s.images.clone())).collect()
}

/// Records what the nodes report and says which entries are still unresolved.
pub fn record(lock: &mut Lock, cluster: &str, snapshots: &[NodeSnapshot], reporter: &dyn Reporter) {
    let unresolved = lock::record(lock, cluster, &node_images(snapshots));
    for image in unresolved {
        reporter.note(&format!(
            "{}: cluster `{cluster}`: image `{image}` is on no node yet: its image id or digest is not recorded",
            lock::FILE_NAME
        ));
    }
}

/// Makes the plan replace the images on nodes that differ from the lock (built from another context,
/// loaded from another archive, pulled at another digest): their observed hash is set apart so that the
/// diff sees a change. Returns (resource id, why) for [`explain_stale`].
pub fn mark_stale(
    observed: &mut ClusterState,
    entries: &ClusterLock,
    snapshots: &[NodeSnapshot],
) -> Vec<(String, String, String)> {
    let stale = lock::stale(entries, &node_images(snapshots));
    let mut out = Vec::new();
    for (node, image, why) in stale {
        let key = (crate::model::NodeName(node.clone()), crate::model::ImageName(image.clone()));
        if let Some(state) = observed.images.get_mut(&key) {
            state.hash = format!("stale:{}", state.hash);
            out.push((observed.name.to_string(), crate::graph::ResourceId::image(&node, &image).to_string(), why));
        }
    }
    out
}

/// Puts the lock's reason on the changes [`mark_stale`] caused, in place of a hash difference.
pub fn explain_stale(plan: &mut crate::plan::Plan, stale: &[(String, String, String)]) {
    for change in &mut plan.changes {
        let id = change.id.to_string();
        if let Some((_, _, why)) = stale.iter().find(|(c, i, _)| *c == change.cluster.to_string() && *i == id) {
            change.reasons = vec![why.clone()];
        }
    }
}

/// After a successful apply: records what the nodes now hold (observed again when something ran) and
/// writes the lock.
pub fn finish(
    engine: &Engine,
    prepared: &mut Prepared,
    clusters: &[Cluster],
    reached: &mut [Observation],
    observe_again: bool,
    reporter: &dyn Reporter,
) -> Result<(), Reported> {
    for (c, r) in clusters.iter().zip(reached.iter_mut()) {
        let name = c.name.value.as_str();
        let snapshots = if observe_again {
            engine.block_on(async {
                let mut out = Vec::new();
                for conn in r.conns.values_mut() {
                    match crate::fleet::observe(conn, name).await {
                        Ok(s) => out.push(s),
                        Err(f) => reporter.fail(Failure {
                            severity: crate::diagnostic::Severity::Warning,
                            ..f.failure().context(format_args!("{} not updated from this node", lock::FILE_NAME))
                        }),
                    }
                }
                out
            })
        } else {
            r.snapshots.clone()
        };
        record(&mut prepared.update.lock, name, &snapshots, reporter);
    }
    if !prepared.existed {
        reporter.note(&format!("{}: created beside the lab; commit it with the lab", lock::FILE_NAME));
    }
    write(&prepared.path, &prepared.update.lock, reporter)
}

/// `bai lock`: the lock beside `file` written again from the local facts and what the selected nodes hold
/// now (no lease); `prune` drops the entries of clusters the lab no longer has. False when something
/// failed (a node unreachable, the lock unreadable or unwritable): what could be recorded still is.
pub fn relock(
    engine: &Engine,
    config: &Config,
    file: &Path,
    selectors: &[String],
    prune: bool,
    reporter: &dyn Reporter,
) -> bool {
    let path = path_for(file);
    let Ok(old) = read(&path, reporter) else { return false };
    let wanted = match wanted(config, &engine.options.agent_binary) {
        Ok(w) => w,
        Err(e) => {
            reporter.fail(e);
            return false;
        }
    };
    let update = lock::merge(old.as_ref(), &wanted, prune);
    report_update(&update, reporter);
    let mut lock = update.lock;
    let mut failed = false;
    for c in &config.clusters {
        let reached = engine.reach(c, selectors, false);
        reporter.node_failures(&reached.failures);
        failed |= !reached.failures.is_empty();
        record(&mut lock, c.name.value.as_str(), &reached.snapshots, reporter);
    }
    write(&path, &lock, reporter).is_ok() && !failed
}
