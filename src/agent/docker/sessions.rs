//! Session containers: listing the cluster's own and the ones squatting its names, creating one (a
//! replacement is made before the old one goes), removing one, its state, and running a check in it.
//! Nothing without bai's labels for the cluster is ever touched.

use super::*;

impl Engine {
    /// The containers holding a name `bai.<cluster>.…`, in one filtered list call, answered from what the
    /// list carries (labels, state, status line): the node's sessions of the cluster (running or not), and
    /// the containers squatting a managed name without bai's labels for this cluster and session (no
    /// labels, or another cluster's): conflicts to report, never to touch, named as `docker ps` names them.
    /// A container of the cluster labelled for another node is neither: nodes may share an engine (tests,
    /// nested labs), and a session placed for another node is that node's to report. A container renamed
    /// away from its managed name is no longer bai's to see.
    pub async fn containers(&self, cluster: &str, node: &str) -> Result<Listing, DockerError> {
        let prefix = container_name(cluster, "");
        // The engine matches `name` filters as regular expressions against `/name`.
        let filters = serde_json::json!({ "name": [format!("^/{}", prefix.replace('.', "\\."))] }).to_string();
        let path = format!("/containers/json{}", query(&[("all", "1"), ("filters", &filters)]));
        let listed: Vec<models::ContainerSummary> =
            self.docker.get(&path).await.map_err(api(format!("listing the containers of cluster {cluster}")))?;
        let mut listing = Listing::default();
        for c in listed {
            // The engine's filter is a pattern; the prefix is checked here as the text it is.
            let Some(name) = c
                .names
                .iter()
                .flatten()
                .map(|n| n.trim_start_matches('/'))
                .find(|n| n.strip_prefix(&prefix).is_some_and(|session| !session.is_empty()))
            else {
                continue;
            };
            let held = &name[prefix.len()..];
            let labels = c.labels.unwrap_or_default();
            let session = match labels.get(labels::SESSION).filter(|_| owned(Some(&labels), cluster, held)) {
                Some(session) => session,
                // A replacement not yet renamed (or left by an agent that died half way) is not the session.
                None if held.strip_suffix(REPLACEMENT_SUFFIX).is_some_and(|s| owned(Some(&labels), cluster, s)) => {
                    continue;
                }
                None => {
                    listing.unowned.push(Unowned {
                        kind: UnownedKind::Container,
                        name: name.to_string(),
                        reason: None,
                    });
                    continue;
                }
            };
            // Another node's session is that node's to report.
            if labels.get(labels::NODE).is_none_or(|n| n != node) {
                continue;
            }
            let state = c.state.as_deref().map_or(ContainerState::Created, container_state);
            let exit_code = match state {
                ContainerState::Exited | ContainerState::Dead => match c.status.as_deref().and_then(exit_code_of) {
                    Some(code) => Some(code),
                    // The status line is the engine's prose; where it tells no code, ask.
                    None => match &c.id {
                        Some(id) => match self.inspect_container(id).await? {
                            Some(inspect) => inspect.state.and_then(|s| s.exit_code),
                            // Removed between the listing and now: it is gone, not an error.
                            None => continue,
                        },
                        None => None,
                    },
                },
                _ => None,
            };
            listing.sessions.push(SessionSnapshot {
                name: session.clone(),
                spec_hash: labels.get(labels::SPEC_HASH).cloned().unwrap_or_default(),
                state,
                exit_code,
                spec: labels.get(labels::SPEC).and_then(|s| serde_json::from_str(s).ok()),
            });
        }
        listing.sessions.sort_by(|a, b| a.name.cmp(&b.name));
        listing.unowned.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }
}

/// What [`Engine::containers`] found.
#[derive(Debug, Default)]
pub struct Listing {
    pub sessions: Vec<SessionSnapshot>,
    pub unowned: Vec<Unowned>,
}

/// The exit code in the status line the engine lists an exited container with, `Exited (3) 2 minutes
/// ago`.
pub(super) fn exit_code_of(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest[..rest.find(')')?].parse().ok()
}

impl Engine {
    /// Creates and starts the session's container, replacing an owned container of the same name and
    /// refusing ([`DockerError::NotOwned`]) one that is not bai's. The image must be on the node.
    pub async fn create_session(
        &self,
        req: &CreateSession,
        vfolder_path: &dyn Fn(&str) -> PathBuf,
    ) -> Result<(), DockerError> {
        let container = checked_name(&req.cluster, &req.name)?;
        let spec = &req.spec;

        // Everything that can be refused is checked before the old container goes away.
        let existing = self.inspect_container(&container).await?;
        if let Some(existing) = &existing
            && !owned(existing.config.as_ref().and_then(|c| c.labels.as_ref()), &req.cluster, &req.name)
        {
            return Err(DockerError::NotOwned { container, cluster: req.cluster.clone() });
        }
        let image = match self.inspect_image(&image_segment(&spec.image_ref)?).await {
            Ok(Some(image)) => image,
            Ok(None) => return Err(DockerError::ImageMissing { reference: spec.image_ref.clone() }),
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
        let devices =
            gpu_devices(spec).map_err(|reason| DockerError::Invalid { container: container.clone(), reason })?;
        let host_network = spec.network == Some(Network::Host);
        // InfiniBand for NCCL across nodes: a host-network session gets the node's HCAs where it has them,
        // and may pin memory for RDMA (IPC_LOCK), as NVIDIA's multi-node containers are run.
        let infiniband = host_network && Path::new("/dev/infiniband").is_dir();
        let host_config = models::HostConfig {
            binds,
            nano_cpus: spec.resources.cpus.map(|c| (c * 1e9).round() as i64),
            memory,
            device_requests: devices,
            restart_policy: models::RestartPolicy { name: restart_policy(spec.restart) },
            shm_size: spec.shm_size.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
            ulimits: (!spec.ulimits.is_empty()).then(|| {
                spec.ulimits
                    .iter()
                    .map(|(name, u)| models::Ulimit { name: name.clone(), soft: u.soft, hard: u.hard })
                    .collect()
            }),
            network_mode: spec.network.map(|n| n.as_str().to_string()),
            port_bindings: (!spec.published.is_empty() && !host_network).then(|| {
                spec.published
                    .iter()
                    .filter_map(|(name, p)| {
                        let port = spec.ports.get(name)?;
                        let binding = models::PortBinding { host_ip: p.address.clone(), host_port: p.port.to_string() };
                        Some((format!("{port}/tcp"), vec![binding]))
                    })
                    .collect()
            }),
            devices: infiniband.then(|| {
                vec![models::DeviceMapping {
                    path_on_host: "/dev/infiniband".into(),
                    path_in_container: "/dev/infiniband".into(),
                    cgroup_permissions: "rwm".into(),
                }]
            }),
            cap_add: infiniband.then(|| vec!["IPC_LOCK".into()]),
        };
        // Serializing the spec cannot fail (plain data, string map keys); were it ever empty, `sessions`
        // would read the label as "no spec" rather than fail.
        let mut labels = HashMap::from([
            (labels::CLUSTER.to_string(), req.cluster.clone()),
            (labels::NODE.to_string(), req.node.clone()),
            (labels::SESSION.to_string(), req.name.clone()),
            (labels::SPEC_HASH.to_string(), req.spec_hash.clone()),
            (labels::SPEC.to_string(), serde_json::to_string(spec).unwrap_or_default()),
        ]);
        if !spec.resources.devices.is_empty() {
            labels.insert(labels::GPU_DEVICES.to_string(), spec.resources.devices.join(","));
        }
        let body = models::ContainerCreate {
            image: spec.image_ref.clone(),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env,
            user: spec.user.map(|u| format!("{}:{}", u.uid, u.gid)),
            working_dir: WORK_DIR.into(),
            labels,
            // Exposed; published on the node only where the lab says `publish` (health checks reach the
            // container's own address from the node either way).
            exposed_ports: (!spec.ports.is_empty())
                .then(|| spec.ports.values().map(|p| (format!("{p}/tcp"), models::Empty {})).collect()),
            host_config,
        };
        // Plain data with string keys: serializing it cannot fail.
        let body = serde_json::to_vec(&body).unwrap_or_default();

        // A replacement left behind by an agent that died half way through a replace is bai's to clear.
        let next = replacement_name(&container);
        self.remove_leftover_replacement(&next, &req.cluster, &req.name).await?;
        let work_owner = spec.user.map(|u| (u.uid, u.gid));
        let Some(old_id) = existing.and_then(|e| e.id) else {
            return self.create_and_start(&container, body, work_owner).await;
        };

        // Replace. The new container is created, not started, under a name no session can hold, before the
        // old one goes: whatever the engine refuses in it (the image, a mount, the command) leaves the
        // running session as it was. Only starting it can still fail after the old one is gone.
        let created = self
            .create_container(&next, body)
            .await
            .map_err(|source| DockerError::ReplacementRefused { container: container.clone(), source })?;
        let discard_new = || self.force_remove(&created.id);
        if let Some(owner) = work_owner
            && let Err(source) = self.give_work_dir(&created.id, owner).await
        {
            discard_new().await;
            return Err(DockerError::ReplacementRefused { container, source });
        }
        if let Err(e) = self.remove_container_by_id(&old_id, &container).await {
            discard_new().await;
            return Err(e);
        }
        let id = segment(&created.id);
        let rename = format!("/containers/{id}/rename{}", query(&[("name", &container)]));
        let started = match self.post(&rename, Body::Empty).await {
            Ok(()) => self.post(&format!("/containers/{id}/start"), Body::Empty).await.map_err(|e| ("starting", e)),
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
    pub(super) async fn create_and_start(
        &self,
        container: &str,
        body: Vec<u8>,
        work_owner: Option<(u32, u32)>,
    ) -> Result<(), DockerError> {
        let created =
            self.create_container(container, body).await.map_err(api(format!("creating container {container}")))?;
        let prepared = match work_owner {
            Some(owner) => self.give_work_dir(&created.id, owner).await,
            None => Ok(()),
        };
        if let Err(e) = match prepared {
            Ok(()) => self.post(&format!("/containers/{}/start", segment(&created.id)), Body::Empty).await,
            Err(e) => Err(e),
        } {
            // A created-but-never-started container would look like a session with the right spec; take it
            // away so that the next plan creates it again. Best effort: the start error is what matters.
            self.force_remove(&created.id).await;
            return Err(api(format!("starting container {container}"))(e));
        }
        Ok(())
    }

    /// Creates a container named `name` from a JSON body.
    async fn create_container(&self, name: &str, body: Vec<u8>) -> Result<Created, EngineError> {
        let path = format!("/containers/create{}", query(&[("name", name)]));
        self.docker.json("POST", &path, Body::Json(body)).await
    }

    /// Removes a container bai made a moment ago, running or not; best effort.
    async fn force_remove(&self, id: &str) {
        let path = format!("/containers/{}{}", segment(id), query(&[("force", "1")]));
        let _ = self.docker.call("DELETE", &path, Body::Empty).await;
    }

    /// Removes the replacement container `next` of session `session` if one was left behind; refuses one
    /// that holds the name without being bai's.
    pub(super) async fn remove_leftover_replacement(
        &self,
        next: &str,
        cluster: &str,
        session: &str,
    ) -> Result<(), DockerError> {
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
    pub(super) async fn remove_container_by_id(&self, id: &str, container: &str) -> Result<bool, DockerError> {
        let (segment, grace) = (segment(id), STOP_GRACE_S.to_string());
        match self.post(&format!("/containers/{segment}/stop{}", query(&[("t", &grace)])), Body::Empty).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(api(format!("stopping container {container}"))(e)),
        }
        // Forced, because a container with a restart policy may already be starting again.
        let remove = format!("/containers/{segment}{}", query(&[("force", "1")]));
        match self.docker.call("DELETE", &remove, Body::Empty).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(api(format!("removing container {container}"))(e)),
        }
    }

    /// The state of one managed container: its state, its exit code once it has stopped, and its IP on
    /// the default bridge (or its first network) while it has one, or loopback on the host's network.
    /// `None` when there is no container.
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
            (s.status.as_deref().map_or(ContainerState::Created, container_state), s.exit_code)
        });
        let exit_code = matches!(state, ContainerState::Exited | ContainerState::Dead).then_some(code).flatten();
        // On the host's network the session listens on the node's own interfaces.
        if inspect.host_config.as_ref().and_then(|h| h.network_mode.as_deref()) == Some("host") {
            return Ok(Some((state, exit_code, Some("127.0.0.1".to_string()))));
        }
        let networks = inspect.network_settings.and_then(|n| n.networks).unwrap_or_default();
        let ip_of = |net: &models::Endpoint| net.ip_address.clone().filter(|ip| !ip.is_empty());
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
        let config = models::ExecConfig {
            cmd: argv.to_vec(),
            attach_stdin: false,
            attach_stdout: false,
            attach_stderr: false,
            tty: false,
        };
        let action = || format!("running {:?} in container {container}", argv.join(" "));
        let created = self.create_exec(&id, &config).await.map_err(api(action()))?;
        let start = serde_json::to_vec(&models::ExecStart { detach: true, tty: false }).unwrap_or_default();
        let exec = segment(&created.id);
        self.post(&format!("/exec/{exec}/start"), Body::Json(start)).await.map_err(api(action()))?;
        // Detached, so the end is learnt by asking; start quick (most checks are instant), then back off.
        let mut pause = Duration::from_millis(20);
        loop {
            let inspect: models::ExecInspect =
                self.docker.get(&format!("/exec/{exec}/json")).await.map_err(api(action()))?;
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
}

/// The device request of a session with GPUs: exactly its placed devices, by id, never a count (Docker
/// turns a count into GPUs 0..N-1 for every container that asks). A spec with GPUs and no devices was
/// never placed, which the controller does not send: refused rather than guessed.
pub(super) fn gpu_devices(spec: &SessionSpec) -> Result<Option<Vec<models::DeviceRequest>>, String> {
    if spec.resources.gpus == 0 {
        return Ok(None);
    }
    if spec.resources.devices.len() != spec.resources.gpus as usize {
        return Err(format!(
            "asks for {} GPUs but {} devices were placed for it; plan again",
            spec.resources.gpus,
            spec.resources.devices.len()
        ));
    }
    Ok(Some(vec![models::DeviceRequest {
        driver: Some("nvidia".into()),
        device_ids: Some(spec.resources.devices.clone()),
        capabilities: Some(vec![vec!["gpu".into()]]),
        ..Default::default()
    }]))
}

/// Makes `/home/work` belong to the session's user before it starts, so that a session run as a user keeps
/// a home it can write: the engine made the working directory as root. A directory entry extracted over
/// the existing one takes its owner and mode from the archive.
impl Engine {
    /// An exec of `config` in container `id`, created, not started.
    pub(super) async fn create_exec(&self, id: &str, config: &models::ExecConfig) -> Result<Created, EngineError> {
        let body = serde_json::to_vec(config).unwrap_or_default();
        self.docker.json("POST", &format!("/containers/{}/exec", segment(id)), Body::Json(body)).await
    }

    async fn give_work_dir(&self, id: &str, (uid, gid): (u32, u32)) -> Result<(), EngineError> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_uid(u64::from(uid));
        header.set_gid(u64::from(gid));
        header.set_size(0);
        let mut archive = tar::Builder::new(Vec::new());
        // Writing a header into a Vec cannot fail; were it to, the upload below would fail and say so.
        let _ = archive.append_data(&mut header, WORK_DIR.trim_start_matches('/'), std::io::empty());
        let bytes = archive.into_inner().unwrap_or_default();
        let path = format!("/containers/{}/archive{}", segment(id), query(&[("path", "/")]));
        self.docker.call("PUT", &path, Body::Tar(bytes)).await.map(drop)
    }
}

/// Whether a container's labels make it bai's session `session` of `cluster`.
pub(super) fn owned(labels: Option<&HashMap<String, String>>, cluster: &str, session: &str) -> bool {
    labels.is_some_and(|l| {
        l.get(labels::CLUSTER).is_some_and(|c| c == cluster) && l.get(labels::SESSION).is_some_and(|s| s == session)
    })
}

/// The container name of a session, after checking that both parts are plain names: they are spliced
/// into API paths, where a `/` or `?` would address something else entirely. The cluster may not hold a
/// `.`: session names may, so cluster `a` with session `x.train` and cluster `a.x` with session `train`
/// would both be `bai.a.x.train` (the controller refuses such a lab before it gets here).
pub(super) fn checked_name(cluster: &str, session: &str) -> Result<String, DockerError> {
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

/// Marks the name a replacement container is created under before the old one goes. Session names never
/// end in `-` (they may hold `_`: a suffix `_next` made session `x`'s replacement the container of a
/// session `x_next`), so no session's container can have it.
pub(super) const REPLACEMENT_SUFFIX: &str = "-next-";

pub(super) fn replacement_name(container: &str) -> String {
    format!("{container}{REPLACEMENT_SUFFIX}")
}

/// Docker's state words, mapped onto what the snapshot knows. `removing` is on its way to gone;
/// `stopping` still runs.
pub(super) fn container_state(status: &str) -> ContainerState {
    match status {
        "running" | "stopping" => ContainerState::Running,
        "restarting" => ContainerState::Restarting,
        "paused" => ContainerState::Paused,
        "exited" => ContainerState::Exited,
        "dead" | "removing" => ContainerState::Dead,
        _ => ContainerState::Created,
    }
}

/// The engine's name of a restart policy.
pub(super) fn restart_policy(restart: Restart) -> &'static str {
    match restart {
        Restart::No => "no",
        Restart::OnFailure => "on-failure",
        Restart::Always => "always",
        Restart::UnlessStopped => "unless-stopped",
    }
}

/// The container's environment: literal values, secret values by variable name, and `PATH` with
/// `/home/work/.local/bin` first and then the image's own `PATH`. Errors name variables, never values.
pub(super) fn session_env(req: &CreateSession, image_path: Option<&str>) -> Result<Vec<String>, String> {
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
    // The container sees its own devices only, numbered from 0 in PCI bus order by NVIDIA's runtime; CUDA
    // numbers them fastest first unless told otherwise, so without this `cuda:0` and `nvidia-smi`'s GPU 0
    // could be different devices. What the lab sets itself wins.
    let devices = req.spec.resources.devices.len();
    if devices > 0 {
        for (name, value) in [
            ("CUDA_DEVICE_ORDER", "PCI_BUS_ID".to_string()),
            ("CUDA_VISIBLE_DEVICES", (0..devices).map(|i| i.to_string()).collect::<Vec<_>>().join(",")),
        ] {
            if !req.spec.env.contains_key(name) {
                env.push(format!("{name}={value}"));
            }
        }
    }
    Ok(env)
}
