//! The agent's Docker half: images and session containers on the node, through the local engine's API
//! (bollard). Everything bai creates carries its ownership labels ([`crate::protocol::labels`]), and
//! nothing without them for the cluster at hand is ever stopped, replaced or removed: a container that
//! merely holds a managed name (`bai.<cluster>.<session>`) is reported by [`Engine::unowned`] and refused
//! by the methods that would change it.
//!
//! Secrets travel in [`CreateSession::secrets`] and end up in the container's environment; they never
//! appear in an error message or in `Debug` output of anything here.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::StartExecOptions;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, DeviceRequest, ExecConfig, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ImportImageOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StopContainerOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncReadExt;

use crate::model::Restart;
use crate::protocol::{CreateSession, EnsureImage, ErrorKind, ImageRecipe, RpcError, container_name, labels};
use crate::state::snapshot::{ContainerState, SessionSnapshot, Unowned, UnownedKind};
use crate::state::spec::{EnvSpec, ImageSpec};

/// The directory a session starts in; `.local/bin` under it leads the container's `PATH`.
pub const WORK_DIR: &str = "/home/work";

/// What Docker itself uses when an image declares no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Lines of build output kept to explain a failed build.
const BUILD_LOG_TAIL: usize = 20;

/// Blobs are streamed to the engine in chunks of this size, so a multi-gigabyte image archive never
/// sits in the agent's memory.
const CHUNK: usize = 1 << 20;

/// Seconds a session gets to exit after SIGTERM before `remove_session` kills it.
const STOP_GRACE_S: i32 = 10;

/// A failure talking to Docker, naming what was being done and on what (image reference or container
/// name). Carries no environment values.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DockerError {
    #[error("cannot reach the Docker engine: {source}")]
    #[diagnostic(code(bai::docker::connect))]
    Connect { source: BollardError },
    #[error("Docker failed {action}: {source}")]
    #[diagnostic(code(bai::docker::api))]
    Api { action: String, source: BollardError },
    #[error(
        "container {container} holds a name bai manages but does not carry bai's labels for cluster \
         {cluster}; bai leaves it alone (remove or rename it to let bai manage {container})"
    )]
    #[diagnostic(code(bai::docker::not_owned))]
    NotOwned { container: String, cluster: String },
    #[error("image {reference} is not on the node (ensure the image before creating sessions from it)")]
    #[diagnostic(code(bai::docker::image_missing))]
    ImageMissing { reference: String },
    #[error("pulling image {reference} failed: {message}")]
    #[diagnostic(code(bai::docker::pull))]
    Pull { reference: String, message: String },
    #[error("building image {reference} failed: {message}{}", log_tail(.log))]
    #[diagnostic(code(bai::docker::build))]
    Build { reference: String, message: String, log: Vec<String> },
    #[error("loading the image archive for {reference} failed: {message}")]
    #[diagnostic(code(bai::docker::load))]
    Load { reference: String, message: String },
    #[error("the image archive loaded, but it holds no image tagged {reference}")]
    #[diagnostic(code(bai::docker::not_in_archive))]
    NotInArchive { reference: String },
    #[error("cannot read blob {sha256} for image {reference} at {}: {source}", .path.display())]
    #[diagnostic(code(bai::docker::blob))]
    Blob { reference: String, sha256: String, path: PathBuf, source: std::io::Error },
    #[error("image `{image}` ({reference}) is not what bai.lock says: {message}")]
    #[diagnostic(code(bai::docker::locked))]
    Locked { image: String, reference: String, message: String },
    #[error("container {container}: {reason}")]
    #[diagnostic(code(bai::docker::invalid))]
    Invalid { container: String, reason: String },
    #[error("Docker refused the new container for {container}: {source}; the running one is kept as it was")]
    #[diagnostic(code(bai::docker::replacement_refused))]
    ReplacementRefused { container: String, source: BollardError },
    #[error(
        "the old container {container} was removed, but {doing} the new one failed: {source}; \
         the session is not running until `bai apply` creates it again"
    )]
    #[diagnostic(code(bai::docker::replacement_not_started))]
    ReplacementNotStarted { container: String, doing: &'static str, source: BollardError },
    /// Shown escaped: it came from a request and may hold anything.
    #[error("`{}` is not an image reference: {reason}", .reference.escape_debug())]
    #[diagnostic(code(bai::docker::invalid_reference))]
    InvalidReference { reference: String, reason: String },
}

fn log_tail(log: &[String]) -> String {
    if log.is_empty() { String::new() } else { format!("\nlast lines of the build log:\n  {}", log.join("\n  ")) }
}

impl From<DockerError> for RpcError {
    fn from(e: DockerError) -> Self {
        let kind = match e {
            DockerError::NotOwned { .. } => ErrorKind::Refused,
            DockerError::Invalid { .. } | DockerError::InvalidReference { .. } => ErrorKind::BadRequest,
            _ => ErrorKind::Failed,
        };
        RpcError::of(kind, &e)
    }
}

fn api(action: impl Into<String>) -> impl FnOnce(BollardError) -> DockerError {
    let action = action.into();
    move |source| DockerError::Api { action, source }
}

/// `reference` as one segment of an API path (`/images/{segment}/json`), once it is known to be an image
/// reference: bollard splices names into paths as they are, and `../../containers/x/json?x=` would
/// address another endpoint.
fn image_segment(reference: &str) -> Result<String, DockerError> {
    crate::reference::check(reference)
        .map_err(|reason| DockerError::InvalidReference { reference: reference.to_string(), reason })?;
    Ok(crate::reference::path_segment(reference))
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, .. })
}

/// The local Docker engine.
pub struct Engine {
    docker: Docker,
    /// bollard speaks API 1.53 unless told otherwise, and older engines (Debian's 20.10 speaks 1.41)
    /// reject that outright; the first call agrees on a version, once.
    negotiated: tokio::sync::OnceCell<()>,
}

impl Engine {
    /// Connects to the engine `DOCKER_HOST` names, or the local socket. Nothing is sent yet: a missing
    /// socket fails here, an engine that does not answer fails at the first call.
    pub fn connect() -> Result<Engine, DockerError> {
        let docker = Docker::connect_with_defaults().map_err(|source| DockerError::Connect { source })?;
        Ok(Engine { docker, negotiated: tokio::sync::OnceCell::new() })
    }

    /// The client, once the API version is agreed. `negotiate_version` updates the version shared by all
    /// clones of the client, so negotiating on a clone is enough.
    async fn api(&self) -> Result<&Docker, DockerError> {
        self.negotiated
            .get_or_try_init(|| async { self.docker.clone().negotiate_version().await.map(drop) })
            .await
            .map_err(|source| DockerError::Connect { source })?;
        Ok(&self.docker)
    }

    /// The engine's version string, e.g. `20.10.24+dfsg1`.
    pub async fn version(&self) -> Result<String, DockerError> {
        let v = self.api().await?.version().await.map_err(api("reporting its version"))?;
        Ok(v.version.unwrap_or_default())
    }

    /// Managed containers of `cluster`, running or not. A container with the cluster label but no
    /// session label is not a session and is left out.
    pub async fn sessions(&self, cluster: &str, node: &str) -> Result<Vec<SessionSnapshot>, DockerError> {
        let docker = self.api().await?;
        // A node reports its own sessions only: nodes may share an engine (tests, nested labs), and a
        // session placed for another node is that node's to report.
        let filters = HashMap::from([(
            "label",
            vec![format!("{}={cluster}", labels::CLUSTER), format!("{}={node}", labels::NODE)],
        )]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let listed = docker
            .list_containers(Some(options))
            .await
            .map_err(api(format!("listing the containers of cluster {cluster}")))?;
        let mut sessions = Vec::new();
        for c in listed {
            let labels = c.labels.unwrap_or_default();
            let Some(name) = labels.get(labels::SESSION) else { continue };
            // A replacement not yet renamed (or left by an agent that died half way) is not the session.
            let replacement = replacement_name(&container_name(cluster, name));
            if c.names.iter().flatten().any(|n| n.trim_start_matches('/') == replacement) {
                continue;
            }
            let state = c.state.map_or(ContainerState::Created, |s| container_state(s.as_ref()));
            // The listing has no exit code (only a "Exited (3) 2 minutes ago" status line): ask for it.
            let exit_code = match (state, &c.id) {
                (ContainerState::Exited | ContainerState::Dead, Some(id)) => match docker
                    .inspect_container(id, None)
                    .await
                {
                    Ok(inspect) => inspect.state.and_then(|s| s.exit_code),
                    // Removed between the listing and now: it is gone, not an error.
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => return Err(api(format!("inspecting container {}", container_name(cluster, name)))(e)),
                },
                _ => None,
            };
            sessions.push(SessionSnapshot {
                name: name.clone(),
                spec_hash: labels.get(labels::SPEC_HASH).cloned().unwrap_or_default(),
                state,
                exit_code,
                spec: labels.get(labels::SPEC).and_then(|s| serde_json::from_str(s).ok()),
            });
        }
        sessions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(sessions)
    }

    /// Containers holding a name `bai.<cluster>.<x>` without bai's labels for this cluster and session
    /// (no labels, or another cluster's): conflicts to report, never to touch. Names are the full
    /// container names, as `docker ps` shows them.
    pub async fn unowned(&self, cluster: &str) -> Result<Vec<Unowned>, DockerError> {
        let docker = self.api().await?;
        let options = ListContainersOptionsBuilder::default().all(true).build();
        let listed = docker.list_containers(Some(options)).await.map_err(api("listing containers"))?;
        let prefix = container_name(cluster, "");
        let mut unowned: Vec<Unowned> = listed
            .into_iter()
            .filter_map(|c| {
                let name = c
                    .names?
                    .into_iter()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .find(|n| n.strip_prefix(&prefix).is_some_and(|session| !session.is_empty()))?;
                let session = &name[prefix.len()..];
                let session = session.strip_suffix(REPLACEMENT_SUFFIX).unwrap_or(session);
                (!owned(c.labels.as_ref(), cluster, session)).then_some(Unowned {
                    kind: UnownedKind::Container,
                    name,
                    reason: None,
                })
            })
            .collect();
        unowned.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(unowned)
    }

    /// Whether an image is present under `reference` (a tag, or a `repo@digest`).
    pub async fn image_exists(&self, reference: &str) -> Result<bool, DockerError> {
        let segment = image_segment(reference)?;
        match self.api().await?.inspect_image(&segment).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(api(format!("inspecting image {reference}"))(e)),
        }
    }

    /// The id and repository digests (`repo@sha256:…`) of the image `reference` names, or `None` when
    /// there is no such image. A string that is not an image reference is refused
    /// ([`DockerError::InvalidReference`]), never looked up.
    pub async fn image_facts(&self, reference: &str) -> Result<Option<(String, Vec<String>)>, DockerError> {
        let segment = image_segment(reference)?;
        match self.api().await?.inspect_image(&segment).await {
            Ok(image) => Ok(Some((image.id.unwrap_or_default(), image.repo_digests.unwrap_or_default()))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting image {reference}"))(e)),
        }
    }

    /// Makes the image present under `spec.reference` and returns its id. A pull is skipped when the
    /// reference (at the pinned digest, if any) is already there; a build or an archive load always runs,
    /// because the reference may name older content and Docker's cache makes the repeat cheap.
    pub async fn ensure_image(
        &self,
        req: &EnsureImage,
        blob_path: &dyn Fn(&str) -> PathBuf,
    ) -> Result<String, DockerError> {
        let spec = &req.spec;
        // Refused before anything is pulled, built, loaded or recorded.
        let segment = image_segment(&spec.reference)?;
        let locked = req.locked.clone().unwrap_or_default();
        match &req.source {
            ImageRecipe::Pull => {
                // The lock's digest pins the pull as the config's own `digest` would; the config's wins
                // (the controller refuses a lock that disagrees with it before getting here).
                let mut pinned = spec.clone();
                pinned.digest = spec.digest.clone().or_else(|| locked.digest.clone());
                self.pull(&pinned).await?;
                if let Some(digest) = &pinned.digest {
                    let digests = self.image_facts(&spec.reference).await?.map(|f| f.1).unwrap_or_default();
                    if !digests.iter().any(|d| d.ends_with(&format!("@{digest}"))) {
                        return Err(DockerError::Locked {
                            image: req.name.clone(),
                            reference: spec.reference.clone(),
                            message: format!("bai.lock pins digest {digest}, but the node's copy has {digests:?}"),
                        });
                    }
                }
            }
            ImageRecipe::Build { context_sha256, dockerfile } => {
                // A node whose ref already is the locked image has exactly it: building again could only
                // give another id (builds are not reproducible).
                let current = self.image_facts(&spec.reference).await?.map(|f| f.0);
                if locked.image_id.is_none() || current != locked.image_id {
                    self.build(spec, context_sha256, dockerfile, &blob_path(context_sha256)).await?
                }
            }
            ImageRecipe::Archive { sha256 } => {
                self.load(spec, sha256, &blob_path(sha256)).await?;
                if let Some(want) = &locked.image_id {
                    let got = self.image_facts(&spec.reference).await?.map(|f| f.0);
                    if got.as_deref() != Some(want.as_str()) {
                        return Err(DockerError::Locked {
                            image: req.name.clone(),
                            reference: spec.reference.clone(),
                            message: format!(
                                "the archive loaded as {}, but bai.lock records {want}",
                                got.as_deref().unwrap_or("nothing")
                            ),
                        });
                    }
                }
            }
        }
        let docker = self.api().await?;
        match docker.inspect_image(&segment).await {
            Ok(image) => Ok(image.id.unwrap_or_default()),
            Err(e) if is_not_found(&e) => match req.source {
                // `docker load` tags from the archive's own manifest, which may not name this reference.
                ImageRecipe::Archive { .. } => Err(DockerError::NotInArchive { reference: spec.reference.clone() }),
                _ => Err(DockerError::ImageMissing { reference: spec.reference.clone() }),
            },
            Err(e) => Err(api(format!("inspecting image {}", spec.reference))(e)),
        }
    }

    async fn pull(&self, spec: &ImageSpec) -> Result<(), DockerError> {
        let docker = self.api().await?;
        let reference = &spec.reference;
        let (repo, tag) = split_reference(reference);
        // The digest may come from the lock rather than the reference: `repo@digest` is checked whole.
        let pinned = spec.digest.as_ref().map(|digest| format!("{repo}@{digest}"));
        if let Some(pinned) = &pinned {
            image_segment(pinned)?;
        }
        match docker.inspect_image(&image_segment(reference)?).await {
            Ok(image) => {
                let pinned = spec.digest.as_ref().is_none_or(|digest| {
                    image.repo_digests.unwrap_or_default().iter().any(|d| d.ends_with(&format!("@{digest}")))
                });
                if pinned {
                    return Ok(());
                }
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(format!("inspecting image {reference}"))(e)),
        }
        // With a pinned digest, pull exactly that content, then give it the reference's tag, so that a
        // moved tag in the registry cannot change what runs.
        let wanted = spec.digest.as_deref().unwrap_or(tag);
        let options = CreateImageOptionsBuilder::default().from_image(repo).tag(wanted).build();
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| DockerError::Pull { reference: reference.clone(), message: message_of(&e) })?;
        }
        if let Some(pinned) = &pinned {
            let options = TagImageOptionsBuilder::default().repo(repo).tag(tag).build();
            docker
                .tag_image(&image_segment(pinned)?, Some(options))
                .await
                .map_err(api(format!("tagging {pinned} as {reference}")))?;
        }
        Ok(())
    }

    async fn build(&self, spec: &ImageSpec, sha256: &str, dockerfile: &str, blob: &Path) -> Result<(), DockerError> {
        let docker = self.api().await?;
        let reference = &spec.reference;
        let context = self.open_blob(spec, sha256, blob).await?;
        // `forcerm`: a failed step must not leave its intermediate container (and the image under it)
        // behind on the node.
        let options =
            BuildImageOptionsBuilder::default().dockerfile(dockerfile).t(reference).rm(true).forcerm(true).build();
        let body = bollard::body_try_stream(read_chunks(context));
        let mut output = docker.build_image(options, None, Some(body));
        let mut log: VecDeque<String> = VecDeque::with_capacity(BUILD_LOG_TAIL);
        while let Some(item) = output.next().await {
            match item {
                Ok(info) => {
                    for line in info.stream.iter().flat_map(|s| s.lines()).filter(|l| !l.trim().is_empty()) {
                        if log.len() == BUILD_LOG_TAIL {
                            log.pop_front();
                        }
                        log.push_back(line.to_string());
                    }
                }
                Err(e) => {
                    return Err(DockerError::Build {
                        reference: reference.clone(),
                        message: message_of(&e),
                        log: log.into(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn load(&self, spec: &ImageSpec, sha256: &str, blob: &Path) -> Result<(), DockerError> {
        let docker = self.api().await?;
        let archive = self.open_blob(spec, sha256, blob).await?;
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut output = docker.import_image_stream(options, read_chunks(archive), None);
        while let Some(item) = output.next().await {
            item.map_err(|e| DockerError::Load { reference: spec.reference.clone(), message: message_of(&e) })?;
        }
        Ok(())
    }

    async fn open_blob(&self, spec: &ImageSpec, sha256: &str, path: &Path) -> Result<tokio::fs::File, DockerError> {
        tokio::fs::File::open(path).await.map_err(|source| DockerError::Blob {
            reference: spec.reference.clone(),
            sha256: sha256.to_string(),
            path: path.to_path_buf(),
            source,
        })
    }

    /// Creates and starts the session's container, replacing an owned container of the same name and
    /// refusing ([`DockerError::NotOwned`]) one that is not bai's. The image must be on the node.
    pub async fn create_session(
        &self,
        req: &CreateSession,
        vfolder_path: &dyn Fn(&str) -> PathBuf,
    ) -> Result<(), DockerError> {
        let docker = self.api().await?;
        let container = checked_name(&req.cluster, &req.name)?;
        let spec = &req.spec;

        // Everything that can be refused is checked before the old container goes away.
        let existing = self.inspect_container(&container).await?;
        if let Some(existing) = &existing
            && !owned(existing.config.as_ref().and_then(|c| c.labels.as_ref()), &req.cluster, &req.name)
        {
            return Err(DockerError::NotOwned { container, cluster: req.cluster.clone() });
        }
        let image = match docker.inspect_image(&image_segment(&spec.image_ref)?).await {
            Ok(image) => image,
            Err(e) if is_not_found(&e) => return Err(DockerError::ImageMissing { reference: spec.image_ref.clone() }),
            Err(e) => return Err(api(format!("inspecting image {}", spec.image_ref))(e)),
        };
        let image_path = image
            .config
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .find_map(|e| e.strip_prefix("PATH=").map(str::to_string));
        let env = session_env(req, image_path.as_deref())
            .map_err(|reason| DockerError::Invalid { container: container.clone(), reason })?;
        let binds = spec
            .mounts
            .iter()
            .map(|m| {
                let host = vfolder_path(&m.vfolder);
                let host = host.to_str().filter(|h| !h.contains(':')).ok_or_else(|| DockerError::Invalid {
                    container: container.clone(),
                    reason: format!("vfolder {} has a host path Docker cannot bind: {}", m.vfolder, host.display()),
                })?;
                if m.destination.contains(':') {
                    return Err(DockerError::Invalid {
                        container: container.clone(),
                        reason: format!("mount destination {} contains ':'", m.destination),
                    });
                }
                Ok(format!("{host}:{}{}", m.destination, if m.readonly { ":ro" } else { "" }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let memory = match spec.resources.memory {
            Some(bytes) => Some(i64::try_from(bytes).map_err(|_| DockerError::Invalid {
                container: container.clone(),
                reason: format!("memory limit {bytes} is larger than Docker accepts"),
            })?),
            None => None,
        };
        let gpus = spec.resources.gpus;
        let host_config = HostConfig {
            binds: Some(binds),
            nano_cpus: spec.resources.cpus.map(|c| (c * 1e9).round() as i64),
            memory,
            device_requests: (gpus > 0).then(|| {
                vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    count: Some(i64::from(gpus)),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]
            }),
            restart_policy: Some(RestartPolicy { name: Some(restart_policy(spec.restart)), maximum_retry_count: None }),
            ..Default::default()
        };
        // Serializing the spec cannot fail (plain data, string map keys); were it ever empty, `sessions`
        // would read the label as "no spec" rather than fail.
        let labels = HashMap::from([
            (labels::CLUSTER.to_string(), req.cluster.clone()),
            (labels::NODE.to_string(), req.node.clone()),
            (labels::SESSION.to_string(), req.name.clone()),
            (labels::SPEC_HASH.to_string(), req.spec_hash.clone()),
            (labels::SPEC.to_string(), serde_json::to_string(spec).unwrap_or_default()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image_ref.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(env),
            working_dir: Some(WORK_DIR.into()),
            labels: Some(labels),
            // Exposed, never published: health checks reach the container's own address from the node.
            exposed_ports: (!spec.ports.is_empty()).then(|| spec.ports.values().map(|p| format!("{p}/tcp")).collect()),
            host_config: Some(host_config),
            ..Default::default()
        };

        // A replacement left behind by an agent that died half way through a replace is bai's to clear.
        let next = replacement_name(&container);
        self.remove_leftover_replacement(&next, &req.cluster, &req.name).await?;
        let Some(old_id) = existing.and_then(|e| e.id) else {
            return self.create_and_start(docker, &container, body).await;
        };

        // Replace. The new container is created, not started, under a name no session can hold, before the
        // old one goes: whatever the engine refuses in it (the image, a mount, the command) leaves the
        // running session as it was. Only starting it can still fail after the old one is gone.
        let options = CreateContainerOptionsBuilder::default().name(&next).build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|source| DockerError::ReplacementRefused { container: container.clone(), source })?;
        let discard_new = || async {
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&created.id, Some(force)).await;
        };
        if let Err(e) = self.remove_container_by_id(&old_id, &container).await {
            discard_new().await;
            return Err(e);
        }
        let rename = RenameContainerOptionsBuilder::default().name(&container).build();
        let started = match docker.rename_container(&created.id, rename).await {
            Ok(()) => docker.start_container(&created.id, None).await.map_err(|e| ("starting", e)),
            Err(e) => Err(("renaming", e)),
        };
        if let Err((doing, source)) = started {
            // A created-but-never-started container would look like a session with the right spec; take it
            // away so that the next plan creates it again.
            discard_new().await;
            return Err(DockerError::ReplacementNotStarted { container, doing, source });
        }
        Ok(())
    }

    /// Creates and starts a container where none holds the name.
    async fn create_and_start(
        &self,
        docker: &Docker,
        container: &str,
        body: ContainerCreateBody,
    ) -> Result<(), DockerError> {
        let options = CreateContainerOptionsBuilder::default().name(container).build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(api(format!("creating container {container}")))?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            // A created-but-never-started container would look like a session with the right spec; take it
            // away so that the next plan creates it again. Best effort: the start error is what matters.
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&created.id, Some(force)).await;
            return Err(api(format!("starting container {container}"))(e));
        }
        Ok(())
    }

    /// Removes the replacement container `next` of session `session` if one was left behind; refuses one
    /// that holds the name without being bai's.
    async fn remove_leftover_replacement(&self, next: &str, cluster: &str, session: &str) -> Result<(), DockerError> {
        let Some(leftover) = self.inspect_container(next).await? else { return Ok(()) };
        if !owned(leftover.config.as_ref().and_then(|c| c.labels.as_ref()), cluster, session) {
            return Err(DockerError::NotOwned { container: next.to_string(), cluster: cluster.to_string() });
        }
        match leftover.id {
            Some(id) => self.remove_container_by_id(&id, next).await.map(drop),
            None => Ok(()),
        }
    }

    /// Stops (SIGTERM, then SIGKILL after a grace period) and removes the session's container. `Ok(false)`
    /// when there is none; [`DockerError::NotOwned`] when the name is held by a container that is not bai's
    /// for this cluster.
    pub async fn remove_session(&self, cluster: &str, name: &str) -> Result<bool, DockerError> {
        let container = checked_name(cluster, name)?;
        self.remove_leftover_replacement(&replacement_name(&container), cluster, name).await?;
        let Some(existing) = self.inspect_container(&container).await? else { return Ok(false) };
        if !owned(existing.config.as_ref().and_then(|c| c.labels.as_ref()), cluster, name) {
            return Err(DockerError::NotOwned { container, cluster: cluster.to_string() });
        }
        // By id from here on: should the name change hands meanwhile, the newcomer is not touched.
        let Some(id) = existing.id else { return Ok(false) };
        self.remove_container_by_id(&id, &container).await
    }

    /// Stops and removes a container bai checked it owns, by id; `Ok(false)` when it went meanwhile.
    async fn remove_container_by_id(&self, id: &str, container: &str) -> Result<bool, DockerError> {
        let docker = self.api().await?;
        let stop = StopContainerOptionsBuilder::default().t(STOP_GRACE_S).build();
        match docker.stop_container(id, Some(stop)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(api(format!("stopping container {container}"))(e)),
        }
        // Forced, because a container with a restart policy may already be starting again.
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(id, Some(remove)).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(api(format!("removing container {container}"))(e)),
        }
    }

    /// The state of one managed container: its state, its exit code once it has stopped, and its IP on
    /// the default bridge (or its first network) while it has one. `None` when there is no container.
    pub async fn session_state(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<(ContainerState, Option<i64>, Option<String>)>, DockerError> {
        let container = checked_name(cluster, name)?;
        let Some(inspect) = self.inspect_container(&container).await? else { return Ok(None) };
        if !owned(inspect.config.as_ref().and_then(|c| c.labels.as_ref()), cluster, name) {
            return Err(DockerError::NotOwned { container, cluster: cluster.to_string() });
        }
        let (state, code) = inspect.state.map_or((ContainerState::Created, None), |s| {
            (s.status.map_or(ContainerState::Created, |st| container_state(st.as_ref())), s.exit_code)
        });
        let exit_code = matches!(state, ContainerState::Exited | ContainerState::Dead).then_some(code).flatten();
        let networks = inspect.network_settings.and_then(|n| n.networks).unwrap_or_default();
        let ip_of = |net: &bollard::models::EndpointSettings| net.ip_address.clone().filter(|ip| !ip.is_empty());
        let mut others: Vec<_> = networks.iter().filter(|(k, _)| k.as_str() != "bridge").collect();
        others.sort_by(|a, b| a.0.cmp(b.0));
        let ip = networks.get("bridge").and_then(ip_of).or_else(|| others.into_iter().find_map(|(_, n)| ip_of(n)));
        Ok(Some((state, exit_code, ip)))
    }

    /// Runs `argv` in the session's running container (no shell, no TTY, output discarded) and returns
    /// its exit code. Refuses ([`DockerError::NotOwned`]) a container that is not bai's for this cluster,
    /// and a missing one ([`DockerError::Invalid`]); Docker itself refuses a stopped one.
    ///
    /// It waits for the command however long it runs: callers bound it with a timeout. Docker has no way
    /// to stop an exec'd process, so a command that outlives its caller keeps running in the container.
    pub async fn exec(&self, cluster: &str, name: &str, argv: &[String]) -> Result<i64, DockerError> {
        let docker = self.api().await?;
        let container = checked_name(cluster, name)?;
        let invalid = |reason: &str| DockerError::Invalid { container: container.clone(), reason: reason.into() };
        if argv.is_empty() {
            return Err(invalid("an empty command cannot be run"));
        }
        let Some(existing) = self.inspect_container(&container).await? else {
            return Err(invalid("there is no such container"));
        };
        if !owned(existing.config.as_ref().and_then(|c| c.labels.as_ref()), cluster, name) {
            return Err(DockerError::NotOwned { container, cluster: cluster.to_string() });
        }
        // By id from here on: should the name change hands meanwhile, the newcomer is not touched.
        let Some(id) = existing.id else { return Err(invalid("Docker reported no id for it")) };
        let config = ExecConfig {
            cmd: Some(argv.to_vec()),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            ..Default::default()
        };
        let action = || format!("running {:?} in container {container}", argv.join(" "));
        let created = docker.create_exec(&id, config).await.map_err(api(action()))?;
        let start = StartExecOptions { detach: true, tty: false, output_capacity: None };
        docker.start_exec(&created.id, Some(start)).await.map_err(api(action()))?;
        // Detached, so the end is learnt by asking; start quick (most checks are instant), then back off.
        let mut pause = Duration::from_millis(20);
        loop {
            let inspect = docker.inspect_exec(&created.id).await.map_err(api(action()))?;
            if inspect.running != Some(true) {
                // Not running and no code: the engine has not started it yet, or it never will; the
                // caller's timeout settles the second case.
                if let Some(code) = inspect.exit_code {
                    return Ok(code);
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    async fn inspect_container(&self, container: &str) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match self.api().await?.inspect_container(container, None).await {
            Ok(inspect) => Ok(Some(inspect)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting container {container}"))(e)),
        }
    }
}

/// Whether a container's labels make it bai's session `session` of `cluster`.
fn owned(labels: Option<&HashMap<String, String>>, cluster: &str, session: &str) -> bool {
    labels.is_some_and(|l| {
        l.get(labels::CLUSTER).is_some_and(|c| c == cluster) && l.get(labels::SESSION).is_some_and(|s| s == session)
    })
}

/// The container name of a session, after checking that both parts are plain names: they are spliced
/// into API paths, where a `/` or `?` would address something else entirely. The cluster may not hold a
/// `.`: session names may, so cluster `a` with session `x.train` and cluster `a.x` with session `train`
/// would both be `bai.a.x.train` (the controller refuses such a lab before it gets here).
fn checked_name(cluster: &str, session: &str) -> Result<String, DockerError> {
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let container = container_name(cluster, session);
    if !(plain(cluster) && plain(session)) {
        Err(DockerError::Invalid { container, reason: "cluster and session names may hold only [A-Za-z0-9._-]".into() })
    } else if cluster.contains('.') {
        Err(DockerError::Invalid {
            container,
            reason: format!(
                "cluster name `{cluster}` holds a `.`, which makes container names ambiguous \
                 (`bai.<cluster>.<session>`, and session names may hold a `.`)"
            ),
        })
    } else {
        Ok(container)
    }
}

/// Marks the name a replacement container is created under before the old one goes: session names never
/// hold a `_`, so no session's container can have it.
const REPLACEMENT_SUFFIX: &str = "_next";

fn replacement_name(container: &str) -> String {
    format!("{container}{REPLACEMENT_SUFFIX}")
}

/// Docker's state words, mapped onto what the snapshot knows. `removing` is on its way to gone;
/// `stopping` still runs.
fn container_state(status: &str) -> ContainerState {
    match status {
        "running" | "stopping" => ContainerState::Running,
        "restarting" => ContainerState::Restarting,
        "paused" => ContainerState::Paused,
        "exited" => ContainerState::Exited,
        "dead" | "removing" => ContainerState::Dead,
        _ => ContainerState::Created,
    }
}

fn restart_policy(restart: Restart) -> RestartPolicyNameEnum {
    match restart {
        Restart::No => RestartPolicyNameEnum::NO,
        Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        Restart::Always => RestartPolicyNameEnum::ALWAYS,
        Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
    }
}

/// The container's environment: literal values, secret values by variable name, and `PATH` with
/// `/home/work/.local/bin` first and then the image's own `PATH`. Errors name variables, never values.
fn session_env(req: &CreateSession, image_path: Option<&str>) -> Result<Vec<String>, String> {
    let mut env = Vec::with_capacity(req.spec.env.len() + 1);
    for (name, value) in &req.spec.env {
        if name == "PATH" {
            return Err(format!(
                "sets PATH, which bai composes itself ({WORK_DIR}/.local/bin, then the image's PATH); \
                 put programs in {WORK_DIR}/.local/bin instead"
            ));
        }
        // Shown escaped: a name that is not one may hold anything.
        if !crate::protocol::is_env_name(name) {
            return Err(format!("`{}` is not an environment variable name", name.escape_debug()));
        }
        let value = match value {
            EnvSpec::Value(v) => v,
            EnvSpec::FromEnv { .. } | EnvSpec::FromFile { .. } => req
                .secrets
                .get(name)
                .ok_or_else(|| format!("the value of secret variable {name} was not sent with the request"))?,
        };
        // The engine would refuse it and echo the variable, value and all, in its error.
        if value.contains('\0') {
            return Err(format!("the value of {name} holds a NUL character, which no environment value can"));
        }
        env.push(format!("{name}={value}"));
    }
    env.push(format!("PATH={WORK_DIR}/.local/bin:{}", image_path.unwrap_or(DEFAULT_PATH)));
    Ok(env)
}

/// Splits an image reference into the repository and the tag (or `sha256:` digest) the engine's pull
/// endpoint wants, the way the Docker CLI does: no tag means `latest`, never "every tag".
fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (&reference[..name_start + i], &reference[name_start + i + 1..]),
        None => (reference, "latest"),
    }
}

/// The digest part (`sha256:…`) of the repository digest matching `reference`'s repository, else of the
/// first one.
pub fn repo_digest(reference: &str, repo_digests: &[String]) -> Option<String> {
    let (repo, _) = split_reference(reference);
    let digest_of = |d: &String| d.split_once('@').map(|(_, digest)| digest.to_string());
    repo_digests
        .iter()
        .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
        .or(repo_digests.first())
        .and_then(digest_of)
}

/// The engine's own words for a failure, without bollard's wrapping.
fn message_of(e: &BollardError) -> String {
    match e {
        BollardError::DockerStreamError { error } => error.trim().to_string(),
        BollardError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// A file as a stream of chunks. Generic over the chunk type so that bollard's `Bytes` is inferred at
/// the call site without a direct dependency on the `bytes` crate.
fn read_chunks<B: From<Vec<u8>>>(file: tokio::fs::File) -> impl Stream<Item = Result<B, std::io::Error>> {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(B::from(buf)), Some(file)))
            }
            // Yield the error, then end the stream.
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::spec::{ResourceSpec, SessionSpec};

    #[test]
    fn references_split_like_the_docker_cli() {
        assert_eq!(split_reference("ubuntu"), ("ubuntu", "latest"));
        assert_eq!(split_reference("ubuntu:24.04"), ("ubuntu", "24.04"));
        assert_eq!(split_reference("localhost:5000/team/img"), ("localhost:5000/team/img", "latest"));
        assert_eq!(split_reference("localhost:5000/team/img:2"), ("localhost:5000/team/img", "2"));
        assert_eq!(split_reference("cr.io/a/b@sha256:abc"), ("cr.io/a/b", "sha256:abc"));
    }

    fn request(env: BTreeMap<String, EnvSpec>, secrets: BTreeMap<String, String>) -> CreateSession {
        CreateSession {
            cluster: "lab".into(),
            node: "n1".into(),
            name: "train".into(),
            spec: SessionSpec {
                image: "img".into(),
                image_ref: "img:1".into(),
                image_digest: None,
                node: "n1".into(),
                command: vec![],
                env,
                mounts: vec![],
                resources: ResourceSpec { cpus: None, memory: None, gpus: 0 },
                ports: BTreeMap::new(),
                restart: Restart::No,
            },
            spec_hash: "h".into(),
            vfolder_root: "/v".into(),
            secrets,
        }
    }

    #[test]
    fn env_holds_values_secrets_and_a_path_led_by_local_bin() {
        let env =
            BTreeMap::from([("A".into(), EnvSpec::Value("1".into())), ("TOKEN".into(), EnvSpec::from_env("HF_TOKEN"))]);
        let req = request(env, BTreeMap::from([("TOKEN".into(), "s3cret".into())]));
        assert_eq!(
            session_env(&req, Some("/opt/conda/bin:/bin")).as_deref(),
            Ok(
                &["A=1".to_string(), "TOKEN=s3cret".into(), "PATH=/home/work/.local/bin:/opt/conda/bin:/bin".into()][..]
            )
        );
        assert_eq!(
            session_env(&request(BTreeMap::new(), BTreeMap::new()), None).as_deref(),
            Ok(&[format!("PATH=/home/work/.local/bin:{DEFAULT_PATH}")][..])
        );
    }

    #[test]
    fn env_errors_name_variables_never_values() {
        let env = BTreeMap::from([("TOKEN".into(), EnvSpec::from_file("/secret"))]);
        let err = session_env(&request(env, BTreeMap::new()), None).unwrap_err();
        assert!(err.contains("TOKEN"), "{err}");
        let env = BTreeMap::from([("PATH".into(), EnvSpec::Value("/evil".into()))]);
        let err = session_env(&request(env, BTreeMap::new()), None).unwrap_err();
        assert!(err.contains("PATH") && !err.contains("/evil"), "{err}");
        let env = BTreeMap::from([("TOKEN".into(), EnvSpec::from_env("T"))]);
        let err = session_env(&request(env, BTreeMap::from([("TOKEN".into(), "s3c\0ret".into())])), None).unwrap_err();
        assert!(err.contains("TOKEN") && err.contains("NUL") && !err.contains("s3c"), "{err}");
        let env = BTreeMap::from([("X=Y".into(), EnvSpec::Value("v".into()))]);
        let err = session_env(&request(env, BTreeMap::new()), None).unwrap_err();
        assert!(err.contains("`X=Y` is not an environment variable name"), "{err}");
    }

    #[test]
    fn names_are_checked_before_reaching_api_paths() {
        assert_eq!(checked_name("lab", "train").ok().as_deref(), Some("bai.lab.train"));
        assert!(checked_name("lab", "../x").is_err());
        assert!(checked_name("lab", "a?b").is_err());
        assert!(checked_name("", "x").is_err());
        assert_eq!(checked_name("a", "x.train").ok().as_deref(), Some("bai.a.x.train"));
        assert!(checked_name("a.x", "train").is_err(), "the same container name from a dotted cluster");
    }

    #[test]
    fn ownership_needs_both_labels() {
        let l =
            |c: &str, s: &str| HashMap::from([(labels::CLUSTER.into(), c.into()), (labels::SESSION.into(), s.into())]);
        assert!(owned(Some(&l("lab", "x")), "lab", "x"));
        assert!(!owned(Some(&l("other", "x")), "lab", "x"));
        assert!(!owned(Some(&l("lab", "y")), "lab", "x"));
        assert!(!owned(None, "lab", "x"));
        let refused: RpcError = DockerError::NotOwned { container: "bai.lab.x".into(), cluster: "lab".into() }.into();
        assert_eq!(refused.kind, ErrorKind::Refused);
    }
}
