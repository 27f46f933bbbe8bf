//! A record turned back into desired state for `bai rollback`: the cluster's state from its nodes' records,
//! the graph from the recorded dependencies, the lab's sources checked against the recorded hashes (never a
//! path a record names), and the secrets a record may use (only sources the lab names).

use super::*;

/// The lab's own source for a recorded image: the lab's image of that name when it is made the same way
/// (the same kind of source; for a build, the same Dockerfile). A record comes from a node, which may be
/// compromised: what it says of a source is only ever checked against the lab, and a path it names is
/// never opened on this controller.
pub fn lab_source<'a>(lab: &'a Cluster, image: &str, recorded: &RecordedSource) -> Option<&'a ImageSource> {
    let source = &lab.images.iter().find(|i| i.name.value.as_str() == image)?.source;
    let dockerfile = |d: Option<&str>| d.unwrap_or("Dockerfile").to_string();
    match (recorded, source) {
        (RecordedSource::Pull, ImageSource::Pull) | (RecordedSource::Archive { .. }, ImageSource::Archive { .. }) => {
            Some(source)
        }
        (RecordedSource::Build { dockerfile: then, .. }, ImageSource::Build { dockerfile: now, .. })
            if dockerfile(then.as_deref()) == dockerfile(now.as_ref().map(|d| d.value.as_str())) =>
        {
            Some(source)
        }
        _ => None,
    }
}

/// Whether a recorded image can be made again from this controller as generation `number` made it:
/// `Err(why)` when not. A pulled image needs nothing from the controller. A built or loaded one needs
/// the lab to make it the same way ([`lab_source`]) and the record's sha256 to equal what the lab's own
/// context or archive hashes to now; a record without a sha256 proves nothing and is refused.
pub fn check_source(lab: &Cluster, image: &str, recorded: &RecordedSource, number: u64) -> Result<(), String> {
    let (what, then) = match recorded {
        RecordedSource::Pull => return Ok(()),
        RecordedSource::Build { sha256, .. } => ("build context", sha256),
        RecordedSource::Archive { sha256, .. } => ("archive", sha256),
    };
    let Some(source) = lab_source(lab, image, recorded) else {
        return Err(format!(
            "generation {number} made it from a {what}, and the lab no longer makes image `{image}` that way \
             (bai takes a {what} from the lab only, never from a node's record); restore it in the lab, or roll \
             forward with `bai apply`"
        ));
    };
    let Some(then) = then else {
        return Err(format!(
            "generation {number}'s record holds no sha256 of its {what}, so nothing shows that the lab's is the \
             one it used; roll forward with `bai apply`"
        ));
    };
    let (path, now) = match source {
        ImageSource::Build { context, .. } => (&context.value, context_sha(&context.value)),
        ImageSource::Archive { path } => (&path.value, archive_sha(&path.value)),
        ImageSource::Pull => return Ok(()),
    };
    match now {
        None => Err(format!("its {what} `{}` is gone from this controller", path.display())),
        Some(now) if *then != now => Err(format!(
            "its {what} `{}` changed since generation {number} (sha256 {} then, {} now); restore the files, or \
             roll forward with `bai apply`",
            path.display(),
            then.get(..12).unwrap_or(then),
            now.get(..12).unwrap_or(&now)
        )),
        Some(_) => Ok(()),
    }
}

/// Secrets a rollback would read on the controller that the lab does not name now: one message each.
/// A record's `from-env` variable or `from-file` path comes from a node, and a compromised node could
/// name any file or variable on the controller to have its value sent back to it; so a secret is read
/// only from a source the lab itself declares (for any session of the cluster).
pub fn unnamed_secret_sources(restored: &ClusterState, lab: &ClusterState) -> Vec<String> {
    let key = |e: &EnvSpec| match e {
        EnvSpec::Value(_) => None,
        EnvSpec::FromEnv { var, .. } => Some((false, var.clone())),
        EnvSpec::FromFile { path, .. } => Some((true, path.clone())),
    };
    let named: BTreeSet<(bool, String)> = lab
        .sessions
        .values()
        .filter_map(|s| s.spec.as_ref())
        .flat_map(|spec| spec.env.values())
        .filter_map(key)
        .collect();
    let mut out = Vec::new();
    for (session, state) in &restored.sessions {
        let Some(spec) = &state.spec else { continue };
        for (name, env) in &spec.env {
            let Some(source) = key(env).filter(|k| !named.contains(k)) else { continue };
            let what = if source.0 { "the file" } else { "the variable" };
            out.push(format!(
                "session `{session}`: env `{name}` would be read from {what} `{}` on this controller, which the lab \
                 does not name now (bai reads a secret only from a source the lab declares, never from one a \
                 node's record names); declare it in the lab, or roll forward with `bai apply`",
                crate::untrusted::excerpt(&source.1, 200)
            ));
        }
    }
    out
}

/// The desired state the records describe (one record per node), and their extras.
pub fn state_of(cluster: &ClusterName, records: &[&GenerationRecord]) -> (ClusterState, RecordExtras) {
    let mut state = ClusterState::empty(cluster.clone());
    let mut extras = RecordExtras::default();
    for r in records {
        let node = NodeName(r.node.clone());
        if r.enrolled {
            state.nodes.insert(
                node.clone(),
                NodeState { agent: Some(AGENT_VERSION.to_string()), labels: r.labels.clone(), inventory: None },
            );
        }
        for (name, i) in &r.images {
            state.images.insert(
                (node.clone(), ImageName(name.clone())),
                ImageState { spec: i.spec.clone(), hash: i.hash.clone() },
            );
            extras.sources.insert(name.clone(), i.source.clone());
        }
        for (name, v) in &r.vfolders {
            state.vfolders.insert(
                VfolderName(name.clone()),
                VfolderState { node: node.clone(), permission: v.permission, quota: v.quota, empty: None },
            );
        }
        for (name, s) in &r.sessions {
            state.sessions.insert(
                SessionName(name.clone()),
                SessionState { node: node.clone(), hash: s.hash.clone(), spec: Some(s.spec.clone()), container: None },
            );
            extras.depends_on.insert(name.clone(), s.depends_on.clone());
        }
    }
    (state, extras)
}

/// The resource DAG of a state, as [`crate::graph::build_graph`] builds it from a lab: node agents, the
/// images and vfolders on them, the sessions using those, the sessions depending on them.
pub fn graph_of(state: &ClusterState, depends_on: &BTreeMap<String, Vec<String>>) -> ResourceGraph {
    let mut g = ResourceGraph::default();
    for node in state.nodes.keys() {
        g.add(ResourceId::node(node.as_str()));
    }
    for (node, image) in state.images.keys() {
        g.link(ResourceId::node(node.as_str()), ResourceId::image(node.as_str(), image.as_str()));
    }
    for (name, v) in &state.vfolders {
        g.link(ResourceId::node(v.node.as_str()), ResourceId::vfolder(name.as_str()));
    }
    for (name, s) in &state.sessions {
        let me = ResourceId::session(name.as_str());
        g.add(me.clone());
        let node = s.node.as_str();
        match s.spec.as_ref().map(|spec| ImageName(spec.image.clone())) {
            Some(image) if state.images.contains_key(&(s.node.clone(), image.clone())) => {
                g.link(ResourceId::image(node, image.as_str()), me.clone());
            }
            _ if state.nodes.contains_key(&s.node) => g.link(ResourceId::node(node), me.clone()),
            _ => {}
        }
        for m in s.spec.iter().flat_map(|spec| &spec.mounts) {
            if state.vfolders.contains_key(m.vfolder.as_str()) {
                g.link(ResourceId::vfolder(&m.vfolder), me.clone());
            }
        }
        for d in depends_on.get(name.as_str()).into_iter().flatten() {
            if d != name.as_str() && state.sessions.contains_key(d.as_str()) {
                g.link(ResourceId::session(d), me.clone());
            }
        }
    }
    g
}

/// `base` with its images replaced by the recorded ones, for the executor: it finds an image's source in
/// the cluster, and a rollback's images may have left the lab since. A pulled image needs nothing more;
/// a built or loaded one gets the lab's own source ([`lab_source`]), never a path from the record, and
/// is left out where the lab has none (the executor then refuses to make it; [`check_source`] says why
/// before anything runs).
pub fn cluster_with_sources(
    base: &Cluster,
    sources: &BTreeMap<String, RecordedSource>,
    state: &ClusterState,
) -> Cluster {
    let mut out = base.clone();
    let mut images: BTreeMap<&str, &ImageSpec> = BTreeMap::new();
    for ((_, name), i) in &state.images {
        images.insert(name.as_str(), &i.spec);
    }
    fn here<T>(v: T) -> Spanned<T> {
        Spanned::new(v, Loc::nowhere())
    }
    out.images = images
        .into_iter()
        .filter_map(|(name, spec)| {
            let source = match sources.get(name) {
                Some(recorded @ (RecordedSource::Build { .. } | RecordedSource::Archive { .. })) => {
                    lab_source(base, name, recorded)?.clone()
                }
                Some(RecordedSource::Pull) | None => ImageSource::Pull,
            };
            Some(Image {
                name: here(ImageName(name.to_string())),
                loc: Loc::nowhere(),
                reference: here(spec.reference.clone()),
                digest: spec.digest.clone().map(here),
                min_gpus: None,
                source,
            })
        })
        .collect();
    out
}
