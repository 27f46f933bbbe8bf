//! The lock file, `bai.lock` beside the lab: what every image resolved to and which agent bai installs,
//! so that a second lab built from the same committed files gets the same things.
//!
//! Pure data and decisions: the types, [`parse`](parse::parse) and [`format`](format::format), and the
//! comparisons the commands need ("what the lab would get now" against "what the lock says"). Reading
//! files, hashing contexts and asking nodes happen in the command layer.
//!
//! What is enforced and what is only recorded:
//! - pulled images: the repository digest. A node pulls `repo@digest` and tags the ref; the agent checks
//!   the image's `RepoDigests` after.
//! - built images: the sha256 of the packed context (and the Dockerfile's name). Docker's builder is not
//!   bit-reproducible (the same context built twice after a cache prune gives other layer digests and
//!   another image id), so the image id is recorded, not enforced: a node whose ref already is that
//!   image skips the build.
//! - archives: the tarball's sha256 (checked before upload) and the id of the loaded image (loading is
//!   deterministic: the id is the digest of the image's config), checked by the agent after loading.
//! - the agent: the sha256 of the bai binary the controller installs on the nodes.
//!
//! Entries resolved on no node yet (never applied) carry no `image-id` or pulled `digest` until a node
//! holds the image.

pub mod format;
pub mod parse;

use std::collections::BTreeMap;

use crate::state::snapshot::ImageSnapshot;

/// The lock file's name, in the directory of the lab file.
pub const FILE_NAME: &str = "bai.lock";

/// The format version written on the `version` line.
pub const VERSION: i128 = 1;

/// A whole lock file: the agent and each cluster's images by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    /// sha256 (hex) of the agent binary.
    pub agent: Option<String>,
    pub clusters: BTreeMap<String, ClusterLock>,
}

/// The images of one cluster, by image name.
pub type ClusterLock = BTreeMap<String, LockedImage>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedImage {
    pub reference: String,
    pub source: LockedSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockedSource {
    /// `digest`: the repository digest (`sha256:…`) the ref resolved to; `None` until a node pulled it.
    Pull {
        digest: Option<String>,
    },
    Build {
        context_sha256: String,
        dockerfile: String,
        image_id: Option<String>,
    },
    Archive {
        sha256: String,
        image_id: Option<String>,
    },
}

impl LockedSource {
    pub fn kind(&self) -> &'static str {
        match self {
            LockedSource::Pull { .. } => "pull",
            LockedSource::Build { .. } => "build",
            LockedSource::Archive { .. } => "archive",
        }
    }

    /// The sha256 the node's copy must have been made from: the context's or the archive's.
    pub fn content(&self) -> Option<&str> {
        match self {
            LockedSource::Pull { .. } => None,
            LockedSource::Build { context_sha256, .. } => Some(context_sha256),
            LockedSource::Archive { sha256, .. } => Some(sha256),
        }
    }

    /// The image id recorded by the locking lab.
    pub fn image_id(&self) -> Option<&str> {
        match self {
            LockedSource::Pull { .. } => None,
            LockedSource::Build { image_id, .. } | LockedSource::Archive { image_id, .. } => image_id.as_deref(),
        }
    }
}

/// Something the lab would get now that differs from what the lock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Agent { locked: String, wanted: String },
    Image { cluster: String, image: String, field: &'static str, locked: String, wanted: String },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Agent { locked, wanted } => write!(
                f,
                "the agent is sha256 `{locked}` in {FILE_NAME}, but this bai is `{wanted}`; run `bai apply --update-lock` \
                 (or `bai lock`) to move the lab to this bai"
            ),
            Mismatch::Image { cluster, image, field, locked, wanted } => write!(
                f,
                "cluster `{cluster}`: image `{image}`: {field} is `{locked}` in {FILE_NAME}, but `{wanted}` now"
            ),
        }
    }
}

/// Differences between the lock and what the lab would get (`wanted`, from local facts: recorded fields
/// such as image ids are `None` there and never compared): another agent, or the content of a context or
/// archive changed under an unchanged ref. Entries only one side has, and entries whose ref, source,
/// Dockerfile or pinned digest the lab file changed, are not mismatches: [`merge`] moves them.
pub fn compare(lock: &Lock, wanted: &Lock) -> Vec<Mismatch> {
    let mut out = Vec::new();
    if let (Some(locked), Some(w)) = (&lock.agent, &wanted.agent)
        && locked != w
    {
        out.push(Mismatch::Agent { locked: locked.clone(), wanted: w.clone() });
    }
    for (cluster, images) in &wanted.clusters {
        let Some(locked_images) = lock.clusters.get(cluster) else { continue };
        for (name, want) in images {
            let Some(have) = locked_images.get(name) else { continue };
            // What the lab file itself says (ref, source, Dockerfile, a pinned digest) is the user's
            // explicit edit: the entry follows it, as Cargo follows an edited manifest. What the file does
            // not say (the content behind a context or archive path) is held to the lock.
            let differences = image_differences(have, want);
            if differences.iter().any(|(field, _, _)| matches!(*field, "ref" | "source")) {
                continue;
            }
            for (field, locked, wanted) in differences {
                if matches!(field, "context-sha256" | "sha256") {
                    out.push(Mismatch::Image { cluster: cluster.clone(), image: name.clone(), field, locked, wanted });
                }
            }
        }
    }
    out
}

/// Field by field: (field, locked, wanted).
fn image_differences(have: &LockedImage, want: &LockedImage) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    if have.reference != want.reference {
        out.push(("ref", have.reference.clone(), want.reference.clone()));
    }
    match (&have.source, &want.source) {
        (LockedSource::Pull { digest: Some(a) }, LockedSource::Pull { digest: Some(b) }) if a != b => {
            out.push(("digest", a.clone(), b.clone()));
        }
        (LockedSource::Pull { .. }, LockedSource::Pull { .. }) => {}
        (
            LockedSource::Build { context_sha256: a, dockerfile: da, .. },
            LockedSource::Build { context_sha256: b, dockerfile: db, .. },
        ) => {
            if a != b {
                out.push(("context-sha256", a.clone(), b.clone()));
            }
            if da != db {
                out.push(("dockerfile", da.clone(), db.clone()));
            }
        }
        (LockedSource::Archive { sha256: a, .. }, LockedSource::Archive { sha256: b, .. }) => {
            if a != b {
                out.push(("sha256", a.clone(), b.clone()));
            }
        }
        (a, b) => out.push(("source", a.kind().to_string(), b.kind().to_string())),
    }
    out
}

/// The lock after a run, and what changed in it, one line each for people.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub lock: Lock,
    pub added: Vec<String>,
    pub moved: Vec<String>,
    pub removed: Vec<String>,
}

/// Moves `old` to `wanted`: entries that did not change keep what was recorded for them (image ids,
/// pulled digests); changed ones start over from `wanted`. Clusters of `old` that `wanted` lacks are kept
/// unless `prune` (a run over the whole file, not `--cluster`).
pub fn merge(old: Option<&Lock>, wanted: &Lock, prune: bool) -> Update {
    let empty = Lock::default();
    let old = old.unwrap_or(&empty);
    let mut update =
        Update { lock: Lock { agent: wanted.agent.clone(), clusters: BTreeMap::new() }, ..Update::default() };
    match (&old.agent, &wanted.agent) {
        (None, Some(w)) => update.added.push(format!("agent sha256 `{w}`")),
        (Some(o), Some(w)) if o != w => update.moved.push(format!("agent sha256 `{o}` → `{w}`")),
        (Some(_), None) => update.lock.agent = old.agent.clone(),
        _ => {}
    }
    for (cluster, old_images) in &old.clusters {
        if !wanted.clusters.contains_key(cluster) {
            if prune {
                update.removed.extend(old_images.keys().map(|i| format!("cluster `{cluster}`: image `{i}`")));
            } else {
                update.lock.clusters.insert(cluster.clone(), old_images.clone());
            }
        }
    }
    for (cluster, images) in &wanted.clusters {
        let old_images = old.clusters.get(cluster);
        let mut merged = ClusterLock::new();
        for (name, want) in images {
            let entry = match old_images.and_then(|o| o.get(name)) {
                None => {
                    update.added.push(format!("cluster `{cluster}`: image `{name}` ({})", want.source.kind()));
                    want.clone()
                }
                Some(have) => {
                    let differences = image_differences(have, want);
                    if differences.is_empty() {
                        keep_recorded(have, want)
                    } else {
                        for (field, a, b) in differences {
                            update.moved.push(format!("cluster `{cluster}`: image `{name}`: {field} `{a}` → `{b}`"));
                        }
                        want.clone()
                    }
                }
            };
            merged.insert(name.clone(), entry);
        }
        for name in old_images.into_iter().flat_map(|o| o.keys()).filter(|n| !images.contains_key(*n)) {
            update.removed.push(format!("cluster `{cluster}`: image `{name}`"));
        }
        update.lock.clusters.insert(cluster.clone(), merged);
    }
    update
}

/// `want` with the facts recorded in `have` that `want` does not know.
fn keep_recorded(have: &LockedImage, want: &LockedImage) -> LockedImage {
    let source = match (&have.source, &want.source) {
        (LockedSource::Pull { digest: old }, LockedSource::Pull { digest: new }) => {
            LockedSource::Pull { digest: new.clone().or_else(|| old.clone()) }
        }
        (LockedSource::Build { image_id: old, .. }, LockedSource::Build { context_sha256, dockerfile, image_id }) => {
            LockedSource::Build {
                context_sha256: context_sha256.clone(),
                dockerfile: dockerfile.clone(),
                image_id: image_id.clone().or_else(|| old.clone()),
            }
        }
        (LockedSource::Archive { image_id: old, .. }, LockedSource::Archive { sha256, image_id }) => {
            LockedSource::Archive { sha256: sha256.clone(), image_id: image_id.clone().or_else(|| old.clone()) }
        }
        (_, other) => other.clone(),
    };
    LockedImage { reference: want.reference.clone(), source }
}

/// Whether a node's image is what the lock entry describes (as far as the node can tell): made from the
/// locked context or archive, and for pulls at the locked digest.
pub fn node_matches(entry: &LockedImage, image: &ImageSnapshot) -> bool {
    if image.reference != entry.reference {
        return false;
    }
    match &entry.source {
        LockedSource::Pull { digest } => digest.is_none() || image.repo_digest == *digest,
        other => image.content.as_deref() == other.content(),
    }
}

/// Fills in what nodes report for the entries of `cluster` that lack it: image ids of built and loaded
/// images, repository digests of pulled ones. `nodes` are (node name, its images), looked at in name
/// order so that the first node holding a matching image decides. Returns the entries still unresolved.
pub fn record(lock: &mut Lock, cluster: &str, nodes: &[(String, Vec<ImageSnapshot>)]) -> Vec<String> {
    let mut sorted: Vec<&(String, Vec<ImageSnapshot>)> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut unresolved = Vec::new();
    let Some(images) = lock.clusters.get_mut(cluster) else { return unresolved };
    for (name, entry) in images.iter_mut() {
        let found = sorted
            .iter()
            .flat_map(|(_, images)| images.iter())
            .find(|i| i.name == *name && node_matches(entry, i) && (i.id.is_some() || i.repo_digest.is_some()));
        match (&mut entry.source, found) {
            (LockedSource::Pull { digest }, Some(i)) if digest.is_none() => digest.clone_from(&i.repo_digest),
            (LockedSource::Build { image_id, .. } | LockedSource::Archive { image_id, .. }, Some(i))
                if image_id.is_none() =>
            {
                image_id.clone_from(&i.id);
            }
            _ => {}
        }
        let resolved = match &entry.source {
            LockedSource::Pull { digest } => digest.is_some(),
            other => other.image_id().is_some(),
        };
        if !resolved {
            unresolved.push(name.clone());
        }
    }
    unresolved
}

/// The images on nodes that differ from their lock entry: (node, image, why). A plan replaces them.
pub fn stale(entries: &ClusterLock, nodes: &[(String, Vec<ImageSnapshot>)]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (node, images) in nodes {
        for image in images {
            let Some(entry) = entries.get(&image.name) else { continue };
            if image.reference != entry.reference || node_matches(entry, image) {
                continue;
            }
            let why = match &entry.source {
                LockedSource::Pull { digest } => format!(
                    "{FILE_NAME} pins digest `{}`; the node holds `{}`",
                    digest.as_deref().unwrap_or("-"),
                    image.repo_digest.as_deref().unwrap_or("none")
                ),
                other => format!(
                    "{FILE_NAME} pins {} sha256 `{}`; the node's image was made from `{}`",
                    if matches!(other, LockedSource::Build { .. }) { "context" } else { "archive" },
                    other.content().unwrap_or("-"),
                    image.content.as_deref().unwrap_or("unknown")
                ),
            };
            out.push((node.clone(), image.name.clone(), why));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::spec::SourceKind;

    /// A well-formed hash or digest made of one repeated hex digit, so that tests read which is which.
    pub(super) fn h(digit: char) -> String {
        std::iter::repeat_n(digit, 64).collect()
    }

    pub(super) fn d(digit: char) -> String {
        format!("sha256:{}", h(digit))
    }

    pub(super) fn sample() -> Lock {
        let mut images = ClusterLock::new();
        images.insert(
            "pytorch".into(),
            LockedImage {
                reference: "cr.backend.ai/stable/python-pytorch:2.3".into(),
                source: LockedSource::Pull { digest: Some(d('a')) },
            },
        );
        images.insert(
            "tools".into(),
            LockedImage {
                reference: "lab/tools:1".into(),
                source: LockedSource::Build {
                    context_sha256: h('c'),
                    dockerfile: "Dockerfile".into(),
                    image_id: Some(d('b')),
                },
            },
        );
        images.insert(
            "offline".into(),
            LockedImage {
                reference: "lab/offline:1".into(),
                source: LockedSource::Archive { sha256: h('e'), image_id: None },
            },
        );
        Lock { agent: Some(h('9')), clusters: BTreeMap::from([("lab".to_string(), images)]) }
    }

    /// What local facts give: no recorded fields.
    fn wanted() -> Lock {
        let mut w = sample();
        for image in w.clusters.values_mut().flat_map(|c| c.values_mut()) {
            match &mut image.source {
                LockedSource::Pull { digest } => *digest = None,
                LockedSource::Build { image_id, .. } | LockedSource::Archive { image_id, .. } => *image_id = None,
            }
        }
        w
    }

    fn snapshot(name: &str, reference: &str, content: Option<&str>, id: &str) -> ImageSnapshot {
        ImageSnapshot {
            name: name.into(),
            reference: reference.into(),
            source: SourceKind::Build,
            digest: None,
            spec_hash: "h".into(),
            id: Some(id.into()),
            repo_digest: None,
            content: content.map(Into::into),
        }
    }

    #[test]
    fn unchanged_facts_match_and_keep_what_was_recorded() {
        assert!(compare(&sample(), &wanted()).is_empty());
        let update = merge(Some(&sample()), &wanted(), true);
        assert_eq!(update.lock, sample());
        assert!(update.added.is_empty() && update.moved.is_empty() && update.removed.is_empty(), "{update:?}");
    }

    #[test]
    fn a_changed_context_archive_or_agent_is_a_mismatch_naming_the_image() {
        let mut w = wanted();
        let images = w.clusters.get_mut("lab").expect("cluster");
        if let Some(LockedSource::Build { context_sha256, .. }) = images.get_mut("tools").map(|i| &mut i.source) {
            *context_sha256 = h('d');
        }
        if let Some(LockedSource::Archive { sha256, .. }) = images.get_mut("offline").map(|i| &mut i.source) {
            *sha256 = h('f');
        }
        w.agent = Some(h('0'));
        let found = compare(&sample(), &w);
        assert_eq!(found.len(), 3, "{found:?}");
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert!(text[0].contains("bai apply --update-lock"), "{}", text[0]);
        assert_eq!(
            text[1],
            format!("cluster `lab`: image `offline`: sha256 is `{}` in bai.lock, but `{}` now", h('e'), h('f'))
        );
        assert_eq!(
            text[2],
            format!("cluster `lab`: image `tools`: context-sha256 is `{}` in bai.lock, but `{}` now", h('c'), h('d'))
        );
        let update = merge(Some(&sample()), &w, true);
        assert_eq!(update.moved.len(), 3, "{update:?}");
        let tools = &update.lock.clusters["lab"]["tools"];
        assert_eq!(tools.source.image_id(), None, "a moved build starts over");
    }

    #[test]
    fn new_images_are_added_and_gone_ones_removed() {
        let mut w = wanted();
        let images = w.clusters.get_mut("lab").expect("cluster");
        images.remove("pytorch");
        images.insert(
            "more".into(),
            LockedImage { reference: "lab/more:1".into(), source: LockedSource::Pull { digest: None } },
        );
        assert!(compare(&sample(), &w).is_empty());
        let update = merge(Some(&sample()), &w, true);
        assert_eq!(update.added, vec!["cluster `lab`: image `more` (pull)".to_string()]);
        assert_eq!(update.removed, vec!["cluster `lab`: image `pytorch`".to_string()]);
        let only_other = Lock { agent: w.agent.clone(), clusters: BTreeMap::from([("x".into(), ClusterLock::new())]) };
        assert!(merge(Some(&sample()), &only_other, false).lock.clusters.contains_key("lab"), "kept under --cluster");
    }

    #[test]
    fn edits_of_the_lab_file_itself_move_entries_without_a_mismatch() {
        let mut w = wanted();
        let images = w.clusters.get_mut("lab").expect("cluster");
        if let Some(LockedSource::Pull { digest }) = images.get_mut("pytorch").map(|i| &mut i.source) {
            *digest = Some(d('c'));
        }
        if let Some(tools) = images.get_mut("tools") {
            tools.reference = "lab/tools:2".into();
            if let LockedSource::Build { context_sha256, .. } = &mut tools.source {
                *context_sha256 = h('d');
            }
        }
        assert_eq!(compare(&sample(), &w), vec![]);
        let update = merge(Some(&sample()), &w, true);
        assert_eq!(update.moved.len(), 3, "{update:?}");
        assert_eq!(update.lock.clusters["lab"]["tools"].source.image_id(), None);
    }

    #[test]
    fn nodes_fill_in_ids_from_matching_images_only() {
        let mut lock = merge(None, &wanted(), true).lock;
        let nodes = vec![
            ("n2".to_string(), vec![snapshot("tools", "lab/tools:1", Some(&h('c')), "sha256:from-n2")]),
            (
                "n1".to_string(),
                vec![
                    snapshot("tools", "lab/tools:1", Some("old"), "sha256:stale"),
                    snapshot("offline", "lab/offline:1", Some(&h('e')), "sha256:loaded"),
                ],
            ),
        ];
        let unresolved = record(&mut lock, "lab", &nodes);
        assert_eq!(unresolved, vec!["pytorch".to_string()]);
        assert_eq!(lock.clusters["lab"]["tools"].source.image_id(), Some("sha256:from-n2"));
        assert_eq!(lock.clusters["lab"]["offline"].source.image_id(), Some("sha256:loaded"));
        let stale = stale(&lock.clusters["lab"], &nodes);
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!((stale[0].0.as_str(), stale[0].1.as_str()), ("n1", "tools"));
    }
}
