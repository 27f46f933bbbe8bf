//! Generations, the Nix way: every successful apply leaves a numbered record on each node it touched, and
//! `bai rollback` turns an old record back into desired state.
//!
//! Numbering is per cluster: one apply takes ONE number, 1 + the highest current generation among the
//! cluster's reachable nodes, and writes it on every node where at least one change succeeded, so that
//! `--to N` names the same moment on every node. A node's state at generation N is its newest record
//! numbered N or less; a node whose records up to N were pruned cannot be restored to N, and a node with
//! no record up to N (and none pruned) held nothing of the cluster then.
//!
//! A record carries the node's part of the desired state (labels, images with spec and hash, vfolders,
//! sessions with spec and hash) and what that state cannot carry but a rollback needs: each session's
//! `depends-on`, each image's controller-side source. Everything here is pure; the agent stores records
//! (`agent::generations`) and the engine moves them (`reconcile::record`, `reconcile::rollback`).
//!
//! Here: the record format and a desired state made into a record. Beside it: `restore` (a record back
//! into desired state) and `choose` (which record, which target, what to prune).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::graph::{ResourceGraph, ResourceId};
use crate::model::{
    Cluster, ClusterName, Image, ImageName, ImageSource, NodeName, Permission, SessionName, VfolderName,
};
use crate::source::{Loc, Spanned};
use crate::state::spec::{EnvSpec, ImageSpec, SessionSpec, SourceKind, hex_digest};
use crate::state::{AGENT_VERSION, ClusterState, ImageState, NodeState, SessionState, VfolderState};

/// One node's record of one generation: `state/…` on the node keeps it as `<number>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub number: u64,
    pub cluster: String,
    pub node: String,
    #[serde(flatten)]
    pub meta: Meta,
    /// Whether the node was part of the cluster (its agent enrolled); false for what `destroy` leaves.
    pub enrolled: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub images: BTreeMap<String, RecordedImage>,
    #[serde(default)]
    pub vfolders: BTreeMap<String, RecordedVfolder>,
    #[serde(default)]
    pub sessions: BTreeMap<String, RecordedSession>,
}

/// What is the same for every node of one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// RFC 3339, UTC.
    pub applied_at: String,
    /// `user@host pid N` of the controller that applied it.
    pub applied_by: String,
    pub bai_version: String,
    /// SHA-256 over the lab's source files (sorted by path) and its `bai.lock`.
    pub config_hash: String,
    /// The text of `bai.lock` beside the lab, when there was one.
    #[serde(default)]
    pub lock: Option<String>,
    /// The saved plan this apply executed, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The generation a rollback restored; `None` for a plain apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedImage {
    pub spec: ImageSpec,
    pub hash: String,
    pub source: RecordedSource,
}

/// Where an image came from on the controller. Paths are relative to the lab file's directory where they
/// lie under it, so that a rollback from another checkout of the lab finds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordedSource {
    Pull,
    Build {
        context: String,
        #[serde(default)]
        dockerfile: Option<String>,
        /// The packed context's sha256 when it was applied; `None` when it could not be read.
        sha256: Option<String>,
    },
    Archive {
        path: String,
        sha256: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedVfolder {
    pub permission: Permission,
    pub quota: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedSession {
    pub spec: SessionSpec,
    pub hash: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// A record without its content: what `list_generations` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationSummary {
    pub number: u64,
    #[serde(flatten)]
    pub meta: Meta,
}

impl GenerationRecord {
    pub fn summary(&self) -> GenerationSummary {
        GenerationSummary { number: self.number, meta: self.meta.clone() }
    }
}

/// What the desired state leaves out but a record keeps: session dependencies and image sources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordExtras {
    pub depends_on: BTreeMap<String, Vec<String>>,
    pub sources: BTreeMap<String, RecordedSource>,
}

impl RecordExtras {
    /// From the lab as loaded: `lab_dir` is the lab file's directory. Contexts and archives are hashed
    /// as `sources` prepared them for the nodes (the same sha256 the nodes were sent); one that cannot be
    /// read gets no hash (the apply that used it would have failed on it).
    pub fn from_cluster(cluster: &Cluster, lab_dir: &Path, sources: &crate::fleet::sources::Sources<'_>) -> Self {
        let depends_on = cluster
            .sessions
            .iter()
            .map(|s| (s.name.value.to_string(), s.depends_on.iter().map(|d| d.value.to_string()).collect()))
            .collect();
        let sources = cluster
            .images
            .iter()
            .map(|i| {
                let source = match &i.source {
                    ImageSource::Pull => RecordedSource::Pull,
                    ImageSource::Build { context, dockerfile } => RecordedSource::Build {
                        context: relative(&context.value, lab_dir),
                        dockerfile: dockerfile.as_ref().map(|d| d.value.clone()),
                        sha256: sources.sha256(i.name.value.as_str()),
                    },
                    ImageSource::Archive { path } => RecordedSource::Archive {
                        path: relative(&path.value, lab_dir),
                        sha256: sources.sha256(i.name.value.as_str()),
                    },
                };
                (i.name.value.to_string(), source)
            })
            .collect();
        RecordExtras { depends_on, sources }
    }
}

/// The sha256 of a packed build context as it is now, `None` when it cannot be read.
pub fn context_sha(dir: &Path) -> Option<String> {
    crate::fleet::context::pack(dir).ok().map(|(_, sha)| sha)
}

/// The sha256 of an archive as it is now, `None` when it cannot be read.
pub fn archive_sha(path: &Path) -> Option<String> {
    crate::fleet::context::file_sha256(path).ok()
}

fn relative(path: &Path, lab_dir: &Path) -> String {
    path.strip_prefix(lab_dir).unwrap_or(path).display().to_string()
}

mod choose;
mod restore;

pub use choose::*;
pub use restore::*;

/// `node`'s part of `state` as generation `number`.
pub fn record_of(
    state: &ClusterState,
    node: &NodeName,
    extras: &RecordExtras,
    number: u64,
    meta: Meta,
) -> GenerationRecord {
    let n = state.nodes.get(node);
    GenerationRecord {
        number,
        cluster: state.name.to_string(),
        node: node.to_string(),
        meta,
        enrolled: n.is_some(),
        labels: n.map(|n| n.labels.clone()).unwrap_or_default(),
        images: state
            .images
            .iter()
            .filter(|((on, _), _)| on == node)
            .map(|((_, name), i)| {
                let source = extras.sources.get(name.as_str()).cloned().unwrap_or(match i.spec.source {
                    // A pulled image needs nothing from the controller; the others lose their source.
                    SourceKind::Pull => RecordedSource::Pull,
                    SourceKind::Build => {
                        RecordedSource::Build { context: String::new(), dockerfile: None, sha256: None }
                    }
                    SourceKind::Archive => RecordedSource::Archive { path: String::new(), sha256: None },
                });
                (name.to_string(), RecordedImage { spec: i.spec.clone(), hash: i.hash.clone(), source })
            })
            .collect(),
        vfolders: state
            .vfolders
            .iter()
            .filter(|(_, v)| &v.node == node)
            .map(|(name, v)| (name.to_string(), RecordedVfolder { permission: v.permission, quota: v.quota }))
            .collect(),
        sessions: state
            .sessions
            .iter()
            .filter(|(_, s)| &s.node == node)
            .filter_map(|(name, s)| {
                let spec = s.spec.clone()?;
                let depends_on = extras.depends_on.get(name.as_str()).cloned().unwrap_or_default();
                Some((name.to_string(), RecordedSession { spec, hash: s.hash.clone(), depends_on }))
            })
            .collect(),
    }
}

/// SHA-256 over the lab's source files' text in sorted path order, then the lock file's text.
pub fn config_hash(files: &[(String, &str)], lock: Option<&str>) -> String {
    let mut sorted: Vec<&(String, &str)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (_, text) in sorted {
        // Length-prefixed, so that moving text between files changes the hash.
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    match lock {
        Some(lock) => {
            hasher.update([1u8]);
            hasher.update(lock.as_bytes());
        }
        None => hasher.update([0u8]),
    }
    hex_digest(&hasher.finalize())
}

/// `2026-11-25T01:50:28Z`.
pub fn rfc3339(unix: u64) -> String {
    crate::utc::Utc::from_unix(unix).rfc3339()
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    crate::utc::Utc::now().rfc3339()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::state::spec::{EnvSpec, MountSpec, ResourceSpec};

    fn meta() -> Meta {
        Meta {
            applied_at: "2026-11-25T00:00:00Z".into(),
            applied_by: "me@host pid 1".into(),
            bai_version: "0.1.0".into(),
            config_hash: "ab".repeat(32),
            lock: None,
            plan_id: None,
            rollback_of: None,
        }
    }

    fn session(node: &str, image: &str, mounts: &[&str]) -> SessionSpec {
        SessionSpec {
            image: image.into(),
            image_ref: "bai-it/box:1".into(),
            image_digest: None,
            node: node.into(),
            command: vec!["sleep".into()],
            env: BTreeMap::from([("V".into(), EnvSpec::Value("1".into())), ("S".into(), EnvSpec::from_env("X"))]),
            mounts: mounts
                .iter()
                .map(|m| MountSpec { vfolder: m.to_string(), destination: format!("/home/work/{m}"), readonly: false })
                .collect(),
            resources: ResourceSpec { cpus: None, memory: None, gpus: 0, ..Default::default() },
            ports: BTreeMap::new(),
            restart: crate::model::Restart::No,
            ..Default::default()
        }
    }

    /// Two nodes: `a` with an image, a vfolder and two sessions (one depending on the other), `b` bare.
    fn state() -> (ClusterState, RecordExtras) {
        let mut s = ClusterState::empty(ClusterName("lab".into()));
        for n in ["a", "b"] {
            s.nodes.insert(
                NodeName(n.into()),
                NodeState {
                    agent: Some(AGENT_VERSION.into()),
                    labels: BTreeMap::from([("rack".into(), n.into())]),
                    inventory: None,
                },
            );
        }
        let spec = ImageSpec { reference: "bai-it/box:1".into(), source: SourceKind::Build, digest: None };
        s.images.insert((NodeName("a".into()), ImageName("box".into())), ImageState { spec, hash: "h".into() });
        s.vfolders.insert(
            VfolderName("data".into()),
            VfolderState { node: NodeName("a".into()), permission: Permission::Rw, quota: None, empty: None },
        );
        for (name, mounts) in [("job-a", vec!["data"]), ("job-b", vec![])] {
            let spec = session("a", "box", &mounts);
            s.sessions.insert(
                SessionName(name.into()),
                SessionState {
                    node: NodeName("a".into()),
                    hash: crate::state::spec::hash_of(&spec),
                    spec: Some(spec),
                    container: None,
                },
            );
        }
        let extras = RecordExtras {
            depends_on: BTreeMap::from([("job-a".into(), vec![]), ("job-b".into(), vec!["job-a".into()])]),
            sources: BTreeMap::from([(
                "box".into(),
                RecordedSource::Build { context: "img".into(), dockerfile: None, sha256: Some("cd".repeat(32)) },
            )]),
        };
        (s, extras)
    }

    #[test]
    fn records_give_back_the_state_they_were_made_from() {
        let (s, extras) = state();
        let records: Vec<GenerationRecord> = s.nodes.keys().map(|n| record_of(&s, n, &extras, 3, meta())).collect();
        // Through JSON, as the node stores them.
        let stored: Vec<GenerationRecord> = records
            .iter()
            .map(|r| serde_json::from_str(&serde_json::to_string(r).expect("encodes")).expect("decodes"))
            .collect();
        assert_eq!(stored, records);
        let refs: Vec<&GenerationRecord> = stored.iter().collect();
        let (back, back_extras) = state_of(&s.name, &refs);
        assert_eq!(back, s);
        assert_eq!(back_extras.depends_on, extras.depends_on);
        assert_eq!(back_extras.sources, extras.sources);
        assert!(records[1].images.is_empty() && records[1].sessions.is_empty() && records[1].enrolled);
    }

    #[test]
    fn an_empty_state_records_a_node_that_left() {
        let empty = ClusterState::empty(ClusterName("lab".into()));
        let r = record_of(&empty, &NodeName("a".into()), &RecordExtras::default(), 4, meta());
        assert!(!r.enrolled);
        let (back, _) = state_of(&empty.name, &[&r]);
        assert_eq!(back, empty);
    }

    #[test]
    fn graph_from_state_orders_like_the_labs_graph() {
        let (s, extras) = state();
        let g = graph_of(&s, &extras.depends_on);
        let levels = g.levels();
        let at = |id: ResourceId| levels.get(&id).copied();
        assert_eq!(at(ResourceId::node("a")), Some(0));
        assert_eq!(at(ResourceId::node("b")), Some(0));
        assert_eq!(at(ResourceId::image("a", "box")), Some(1));
        assert_eq!(at(ResourceId::vfolder("data")), Some(1));
        assert_eq!(at(ResourceId::session("job-a")), Some(2));
        assert_eq!(at(ResourceId::session("job-b")), Some(3));
    }

    #[test]
    fn rollback_targets() {
        let known: BTreeSet<u64> = [1, 2, 4].into();
        assert_eq!(target(&known, None), Ok(2));
        assert_eq!(target(&known, Some(1)), Ok(1));
        assert_eq!(target(&known, Some(4)), Ok(4));
        assert!(target(&known, Some(5)).is_err());
        assert!(target(&known, Some(0)).is_err());
        assert!(target(&[7].into(), None).is_err());
        assert!(target(&BTreeSet::new(), None).is_err());
    }

    #[test]
    fn a_nodes_state_at_a_generation() {
        assert_eq!(pick(&[1, 3], None, 2), Pick::Record(1));
        assert_eq!(pick(&[1, 3], None, 3), Pick::Record(3));
        assert_eq!(pick(&[3, 4], None, 2), Pick::Empty, "never touched before 3");
        assert_eq!(pick(&[3, 4], Some(1), 2), Pick::Pruned { oldest: Some(3) });
        assert_eq!(pick(&[3, 4], Some(1), 1), Pick::Pruned { oldest: Some(3) });
        assert_eq!(pick(&[], None, 2), Pick::Empty);
    }

    #[test]
    fn pruning_keeps_the_newest() {
        assert_eq!(to_prune(&[4, 1, 3, 2], 2), vec![1, 2]);
        assert_eq!(to_prune(&[1, 2], 10), Vec::<u64>::new());
        assert_eq!(to_prune(&[1, 2, 3], 0), vec![1, 2], "the newest is never pruned");
    }

    #[test]
    fn config_hash_is_order_free_and_sees_the_lock() {
        let a = config_hash(&[("b.kdl".into(), "x"), ("a.kdl".into(), "y")], None);
        assert_eq!(a, config_hash(&[("a.kdl".into(), "y"), ("b.kdl".into(), "x")], None));
        assert_ne!(a, config_hash(&[("a.kdl".into(), "y"), ("b.kdl".into(), "x")], Some("")));
        assert_ne!(a, config_hash(&[("a.kdl".into(), "yx"), ("b.kdl".into(), "")], None));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_018_467), "2025-11-24T21:07:47Z");
    }

    /// The lab as loaded, with image `box` built from `context` (and `dockerfile` when named).
    fn lab_building_box(context: &Path, dockerfile: Option<&str>) -> Cluster {
        let mut lab = empty_cluster();
        lab.images.push(Image {
            name: Spanned::new(ImageName("box".into()), Loc::nowhere()),
            loc: Loc::nowhere(),
            reference: Spanned::new("bai-it/box:1".into(), Loc::nowhere()),
            digest: None,
            min_gpus: None,
            source: ImageSource::Build {
                context: Spanned::new(context.to_path_buf(), Loc::nowhere()),
                dockerfile: dockerfile.map(|d| Spanned::new(d.to_string(), Loc::nowhere())),
            },
        });
        lab
    }

    #[test]
    fn recorded_images_are_made_from_the_labs_sources_never_the_records_paths() {
        let (s, mut extras) = state();
        // What a compromised node may say: a context anywhere on the controller.
        extras.sources.insert(
            "box".into(),
            RecordedSource::Build { context: "/home/op/.ssh".into(), dockerfile: None, sha256: None },
        );
        let lab = lab_building_box(Path::new("/labs/x/img"), None);
        let out = cluster_with_sources(&lab, &extras.sources, &s);
        assert_eq!(out.images.len(), 1);
        match &out.images[0].source {
            ImageSource::Build { context, .. } => assert_eq!(context.value, PathBuf::from("/labs/x/img")),
            other => panic!("{other:?}"),
        }
        // A lab that no longer builds it gives the executor nothing to build from.
        assert!(cluster_with_sources(&empty_cluster(), &extras.sources, &s).images.is_empty());
        let other_dockerfile = lab_building_box(Path::new("/labs/x/img"), Some("Dockerfile.gpu"));
        assert!(cluster_with_sources(&other_dockerfile, &extras.sources, &s).images.is_empty());
    }

    #[test]
    fn a_recorded_source_is_checked_against_the_labs_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
        let sha = context_sha(dir.path()).expect("packs");
        let lab = lab_building_box(dir.path(), None);
        let build = |sha256: Option<String>| RecordedSource::Build {
            context: "/anywhere/the/node/says".into(),
            dockerfile: Some("Dockerfile".into()),
            sha256,
        };
        assert_eq!(check_source(&lab, "box", &build(Some(sha.clone())), 3), Ok(()));
        assert_eq!(check_source(&lab, "box", &RecordedSource::Pull, 3), Ok(()));
        let no_hash = check_source(&lab, "box", &build(None), 3).expect_err("no hash, no restore");
        assert!(no_hash.contains("holds no sha256"), "{no_hash}");
        let changed = check_source(&lab, "box", &build(Some("ab".repeat(32))), 3).expect_err("another hash");
        assert!(changed.contains("changed since generation 3"), "{changed}");
        assert!(!changed.contains("/anywhere"), "the record's path is never shown or used: {changed}");
        let gone = check_source(&empty_cluster(), "box", &build(Some(sha.clone())), 3).expect_err("not in the lab");
        assert!(gone.contains("no longer makes image `box` that way"), "{gone}");
        let archive = RecordedSource::Archive { path: "x.tar".into(), sha256: Some(sha) };
        assert!(check_source(&lab, "box", &archive, 3).is_err(), "another kind of source");
    }

    fn empty_cluster() -> Cluster {
        let items = Vec::new();
        let mut problems = Vec::new();
        crate::config::lower::assemble(
            Spanned::new(ClusterName("lab".into()), Loc::nowhere()),
            Loc::nowhere(),
            items,
            &mut problems,
        )
    }
}
