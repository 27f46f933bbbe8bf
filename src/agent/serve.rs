//! The agent's RPC loop: one JSON request per line in, one response per line out, in order.
//!
//! Nothing but responses may reach stdout. Methods that change the node need the apply lease, taken by
//! `hello` with `lease: true`; `observe`, `inventory` and `ping` do not, so `bai status` and `bai watch`
//! never wait for an apply.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::agent::containers::Containers;
use crate::agent::docker::{self, Engine, Listing};
use crate::agent::engine_version::engine_version;
use crate::agent::home::{Home, is_safe_component};
use crate::agent::lease::{self, Lease};
use crate::agent::records::{self, ClusterRecord, ImageRecord};
use crate::agent::{generations, health, inventory, vfolder};
use crate::protocol::*;
use crate::state::snapshot::{AgentInfo, ContainerState, ImageSnapshot, NodeSnapshot};

struct Agent<E> {
    home: Home,
    /// Connected on first use: a node without Docker still answers `hello`, `ping` and vfolder calls.
    engine: Option<E>,
    connect: Connect<E>,
    hello: Option<Hello>,
    lease: Option<Lease>,
}

/// How the agent reaches its container engine.
pub type Connect<E> = Box<dyn FnMut() -> Result<E, docker::DockerError> + Send>;

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn bad(message: impl Into<String>) -> RpcError {
    RpcError::new(ErrorKind::BadRequest, message)
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorKind::Failed, format!("cannot encode the reply: {e}")))
}

/// Lines the controller may send ahead while a call runs; the controller sends one request at a time, so
/// this only bounds what a misbehaving one can make the agent hold.
const AHEAD: usize = 64;

/// Serves requests until the controller closes the connection.
///
/// While a call runs, the connection is still read: when it closes (the controller exited, was killed,
/// or gave the call up at its deadline), the call is abandoned and the agent ends, which frees the
/// apply lease at once rather than when a stuck image pull or a wedged Docker engine returns.
pub async fn serve<R, W>(reader: R, writer: W, home: Home) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    serve_with(reader, writer, home, Box::new(Engine::connect)).await
}

/// [`serve`] with the container engine `connect` gives (tests: [`crate::agent::containers::InMemory`]).
pub async fn serve_with<R, W, E>(reader: R, mut writer: W, home: Home, connect: Connect<E>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    E: Containers,
{
    let mut lines = BufReader::new(reader).lines();
    let mut ahead: VecDeque<String> = VecDeque::new();
    let mut agent = Agent { home, engine: None, connect, hello: None, lease: None };
    loop {
        let line = match ahead.pop_front() {
            Some(line) => line,
            None => match lines.next_line().await? {
                Some(line) => line,
                None => break,
            },
        };
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(Request { id, method: Method::Stream(call) }) => match agent.open_stream(&call).await {
                Ok(()) => {
                    write_response(&mut writer, Response { id, result: Some(serde_json::json!({})), error: None })
                        .await?;
                    // From here on the connection carries frames; what was read ahead belongs to them.
                    if !ahead.is_empty() {
                        return Ok(());
                    }
                    return agent.stream(&call, lines.into_inner(), writer).await;
                }
                Err(error) => Response { id, result: None, error: Some(error) },
            },
            Ok(request) => {
                let id = request.id;
                let call = agent.handle(request.method);
                tokio::pin!(call);
                let outcome = loop {
                    tokio::select! {
                        outcome = &mut call => break Some(outcome),
                        // `next_line` is cancel-safe: a line half read when the call ends is kept.
                        next = lines.next_line(), if ahead.len() < AHEAD => match next {
                            Ok(Some(line)) => ahead.push_back(line),
                            Ok(None) | Err(_) => break None,
                        },
                    }
                };
                let Some(outcome) = outcome else {
                    // The controller is gone: nobody waits for this answer. Dropping the call stops it
                    // (an image build or pull whose stream is dropped is cancelled by Docker).
                    return Ok(());
                };
                match outcome {
                    Ok(result) => Response { id, result: Some(result), error: None },
                    Err(error) => Response { id, result: None, error: Some(error) },
                }
            }
            Err(e) => {
                // Echo the id when the line had one, so the controller can match the refusal.
                let id = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
                    .unwrap_or(0);
                Response { id, result: None, error: Some(bad(format!("not a request this agent understands: {e}"))) }
            }
        };
        write_response(&mut writer, response).await?;
    }
    Ok(())
}

async fn write_response<W: AsyncWrite + Unpin>(writer: &mut W, response: Response) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    writer.write_all(&out).await?;
    writer.flush().await
}

/// What a call that changes the node is doing, for the lease file; `None` for calls that only read.
fn change_of(method: &Method) -> Option<String> {
    if method.kind() == CallKind::Read {
        return None;
    }
    let target = match method {
        Method::EnsureImage(r) => Some(&r.name),
        Method::RemoveImage(r) => Some(&r.name),
        Method::EnsureVfolder(r) => Some(&r.name),
        Method::RemoveVfolder(r) => Some(&r.name),
        Method::CreateSession(r) => Some(&r.name),
        Method::RemoveSession(r) => Some(&r.name),
        _ => None,
    };
    Some(match target {
        Some(name) => format!("`{}` `{name}`", method.name()),
        None => format!("`{}`", method.name()),
    })
}

impl<E: Containers> Agent<E> {
    fn engine(&mut self) -> Result<&E, RpcError> {
        if self.engine.is_none() {
            self.engine = Some((self.connect)().map_err(RpcError::from)?);
        }
        self.engine.as_ref().ok_or_else(|| {
            RpcError::new(ErrorKind::Failed, "Docker is not reachable").with_code("bai::docker::connect")
        })
    }

    /// The cluster of this connection, checked against the request's; mutations also need the lease.
    fn cluster(&self, asked: &str, mutating: bool) -> Result<String, RpcError> {
        let hello = self.hello.as_ref().ok_or_else(|| bad("say `hello` first"))?;
        if hello.cluster != asked {
            return Err(bad(format!("this connection is for cluster `{}`, not `{asked}`", hello.cluster)));
        }
        if mutating && self.lease.is_none() {
            return Err(RpcError::new(ErrorKind::NoLease, "changing a node needs the apply lease (hello with lease)"));
        }
        if !is_safe_component(asked) {
            return Err(bad(format!("`{asked}` is not a cluster name")));
        }
        Ok(asked.to_string())
    }

    async fn handle(&mut self, method: Method) -> Result<serde_json::Value, RpcError> {
        if let (Some(lease), Some(what)) = (self.lease.as_mut(), change_of(&method)) {
            lease.doing(&what, now_unix());
        }
        match method {
            Method::Hello(h) => self.hello(h),
            Method::Ping => {
                let (uptime_s, load1) = inventory::uptime_and_load();
                let gpus = inventory::gpu_use();
                let rates: Vec<f64> = gpus.iter().filter_map(|g| g.utilization).map(f64::from).collect();
                let gpu_utilization = (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64);
                to_value(&Pong { uptime_s, load1, gpus: gpus.len(), gpu_utilization, devices: gpus })
            }
            Method::Inventory => {
                let mut inventory = inventory::inventory(None);
                let (cache, known) = (self.home.engine_version(), self.home.gpu_claims());
                if let Ok(engine) = self.engine() {
                    inventory.docker_version = engine_version(engine, &cache, now_unix()).await;
                    engine.gpu_holders(&mut inventory.gpus, &known).await.map_err(RpcError::from)?;
                }
                to_value(&inventory)
            }
            Method::Observe(o) => self.observe(o).await,
            Method::PutBlob(b) => self.put_blob(b),
            Method::EnsureImage(req) => {
                let cluster = self.cluster(&req.cluster, true)?;
                let home = self.home.clone();
                let id =
                    self.engine()?.ensure_image(&req, &|sha: &str| home.blob(sha)).await.map_err(RpcError::from)?;
                let dir = self.home.cluster_state(&cluster);
                let mut record = records::load(&dir)?.unwrap_or_default();
                record.images.insert(
                    req.name.clone(),
                    ImageRecord {
                        reference: req.spec.reference.clone(),
                        source: req.spec.source,
                        digest: req.spec.digest.clone(),
                        spec_hash: req.spec_hash.clone(),
                        id: id.clone(),
                        content: match &req.source {
                            ImageRecipe::Pull => None,
                            ImageRecipe::Build { context_sha256, .. } => Some(context_sha256.clone()),
                            ImageRecipe::Archive { sha256 } => Some(sha256.clone()),
                        },
                    },
                );
                records::save(&dir, &record)?;
                let digests = self.engine()?.image_facts(&req.spec.reference).await.map_err(RpcError::from)?;
                let repo_digest = digests.and_then(|(_, d)| docker::repo_digest(&req.spec.reference, &d));
                to_value(&EnsureImageReply { id, repo_digest })
            }
            Method::RemoveImage(req) => {
                let cluster = self.cluster(&req.cluster, true)?;
                let dir = self.home.cluster_state(&cluster);
                let mut record = records::load(&dir)?.unwrap_or_default();
                // The image stays in Docker's cache: other clusters or users may run it. bai forgets it.
                let removed = record.images.remove(&req.name).is_some();
                records::save(&dir, &record)?;
                Ok(serde_json::json!({ "removed": removed }))
            }
            Method::EnsureVfolder(req) => {
                let cluster = self.cluster(&req.cluster, true)?;
                let root = self.home.expand(&req.vfolder_root);
                vfolder::ensure(&root, &cluster, &req.name, req.permission, req.quota)?;
                to_value(&Ack {})
            }
            Method::RemoveVfolder(req) => {
                let cluster = self.cluster(&req.cluster, true)?;
                let root = self.home.expand(&req.vfolder_root);
                to_value(&vfolder::remove(&root, &cluster, &req.name, req.allow_data_loss, now_unix())?)
            }
            Method::SetLabels(req) => {
                let cluster = self.cluster(&req.cluster, true)?;
                let dir = self.home.cluster_state(&cluster);
                let mut record = records::load(&dir)?.unwrap_or_default();
                record.labels = req.labels;
                records::save(&dir, &record)?;
                to_value(&Ack {})
            }
            Method::CreateSession(req) => {
                self.cluster(&req.cluster, true)?;
                let root = self.home.expand(&req.vfolder_root);
                // An engine refusing the container may echo its environment: no secret leaves in an error.
                self.engine()?.create_session(&req, &|name: &str| vfolder::path_of(&root, name)).await.map_err(
                    |e| {
                        let mut e = RpcError::from(e);
                        e.message = crate::secret::redact(&e.message, &req.secrets);
                        e
                    },
                )?;
                to_value(&Ack {})
            }
            Method::RemoveSession(req) => {
                let cluster = self.cluster(&req.cluster, true)?;
                let removed = self.engine()?.remove_session(&cluster, &req.name).await.map_err(RpcError::from)?;
                Ok(serde_json::json!({ "removed": removed }))
            }
            Method::SessionHealth(req) => {
                let cluster = self.cluster(&req.cluster, false)?;
                let state = self.engine()?.session_state(&cluster, &req.name).await.map_err(RpcError::from)?;
                to_value(&match state {
                    None => SessionHealthReply { state: "missing".into(), exit_code: None, ip: None },
                    Some((state, exit_code, ip)) => SessionHealthReply { state: state.as_str().into(), exit_code, ip },
                })
            }
            Method::Probe(p) => self.probe(p).await,
            // Served by the loop itself, which hands the connection over to it.
            Method::Stream(_) => Err(bad("a stream call cannot be nested")),
            Method::SecretKey(req) => {
                let cluster = self.cluster(&req.cluster, req.create)?;
                let key = crate::agent::secret_key::key(&self.home, &cluster, req.create)?;
                to_value(&SecretKeyReply { key })
            }
            Method::Leave(req) => {
                let cluster = self.cluster(&req.cluster, true)?;
                records::forget(&self.home.cluster_state(&cluster))?;
                to_value(&Ack {})
            }
            Method::RecordGeneration(req) => {
                let cluster = self.cluster(&req.cluster, true)?;
                let pruned = generations::record(&self.home.generations(&cluster), &req.record, req.keep)?;
                to_value(&RecordGenerationReply { pruned })
            }
            Method::ListGenerations(req) => {
                let cluster = self.cluster(&req.cluster, false)?;
                to_value(&generations::list(&self.home.generations(&cluster))?)
            }
            Method::GetGeneration(req) => {
                let cluster = self.cluster(&req.cluster, false)?;
                to_value(&generations::get(&self.home.generations(&cluster), req.number)?)
            }
        }
    }

    /// Checks that a stream call can start: the cluster of this connection, the session's container
    /// there and bai's (running, for `exec`), the request well formed.
    async fn open_stream(&mut self, call: &StreamCall) -> Result<(), RpcError> {
        let cluster = self.cluster(&call.cluster, false)?;
        match &call.stream {
            Stream::Exec(e) if e.argv.is_empty() => return Err(bad("an empty command cannot be run")),
            Stream::CopyOut { path } | Stream::CopyIn { path } if !path.starts_with('/') => {
                return Err(bad(format!("`{path}` is not an absolute path in the container")));
            }
            _ => {}
        }
        let state = self.engine()?.session_state(&cluster, &call.session).await.map_err(RpcError::from)?;
        let not_running = |what: String| {
            RpcError::new(ErrorKind::Refused, format!("session `{}` {what}", call.session))
                .with_code("bai::reach::not_running")
        };
        match state {
            None => Err(RpcError::new(
                ErrorKind::Refused,
                format!("session `{}` has no container on this node", call.session),
            )
            .with_code("bai::reach::no_container")),
            Some((state, exit_code, _))
                if matches!(call.stream, Stream::Exec(_)) && state != ContainerState::Running =>
            {
                Err(not_running(match exit_code {
                    Some(code) => format!("is not running ({}, exit code {code})", state.as_str()),
                    None => format!("is not running ({})", state.as_str()),
                }))
            }
            Some(_) => Ok(()),
        }
    }

    /// Runs an accepted stream call to its end over the connection; a failure on the way is told to the
    /// controller as an `Error` frame.
    async fn stream<R, W>(&mut self, call: &StreamCall, reader: R, mut writer: W) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let cluster = call.cluster.clone();
        let outcome = match self.engine() {
            Ok(engine) => engine.stream(&cluster, call, reader, &mut writer).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.message),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(message) => crate::frame::write(&mut writer, crate::frame::Kind::Error, message.as_bytes()).await,
        }
    }

    fn hello(&mut self, h: Hello) -> Result<serde_json::Value, RpcError> {
        if h.protocol != PROTOCOL_VERSION || h.version != BAI_VERSION {
            return Err(RpcError::new(
                ErrorKind::VersionMismatch,
                format!(
                    "the controller is bai {} (protocol {}) but this agent is bai {BAI_VERSION} (protocol {PROTOCOL_VERSION}); \
                     the controller installs its own build as the agent: run the same bai on both sides",
                    h.version, h.protocol
                ),
            ));
        }
        if !is_safe_component(&h.cluster) {
            return Err(bad(format!("`{}` is not a cluster name", h.cluster)));
        }
        if h.lease && self.lease.is_none() {
            self.lease = Some(lease::acquire(&self.home.leases(), &h.cluster, &h.node, &h.holder, now_unix())?);
        }
        let reply = HelloReply {
            protocol: PROTOCOL_VERSION,
            version: BAI_VERSION.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            lease: self.lease.is_some(),
            identity: crate::agent::identity::identity(&self.home),
        };
        self.hello = Some(h);
        to_value(&reply)
    }

    async fn observe(&mut self, o: Observe) -> Result<serde_json::Value, RpcError> {
        let cluster = self.cluster(&o.cluster, false)?;
        let root = self.home.expand(&o.vfolder_root);
        let record: Option<ClusterRecord> = records::load(&self.home.cluster_state(&cluster))?;
        // Vfolders whose marker bai cannot vouch for are conflicts, reported with the containers squatting
        // a managed name: never dropped, so that they show in `status` and `plan`.
        let (vfolders, conflicts) = vfolder::observe(&root, &cluster)?;
        let (version_cache, known) = (self.home.engine_version(), self.home.gpu_claims());
        let engine = self.engine()?;
        let Listing { sessions, mut unowned } = engine.containers(&cluster, &o.node).await.map_err(RpcError::from)?;
        unowned.extend(conflicts);
        let mut inventory = inventory::inventory(engine_version(engine, &version_cache, now_unix()).await);
        // Placement leaves alone what something else holds: an engine that cannot say is a failed observe.
        engine.gpu_holders(&mut inventory.gpus, &known).await.map_err(RpcError::from)?;
        let mut images = Vec::new();
        for (name, rec) in record.iter().flat_map(|r| &r.images) {
            // An image removed behind bai's back is not there any more, whatever the record says; nor is
            // one recorded under something that is not an image reference (it is never looked up).
            let facts = match engine.image_facts(&rec.reference).await {
                Err(docker::DockerError::InvalidReference { .. }) => None,
                other => other.map_err(RpcError::from)?,
            };
            if let Some((id, digests)) = facts {
                images.push(ImageSnapshot {
                    name: name.clone(),
                    reference: rec.reference.clone(),
                    source: rec.source,
                    digest: rec.digest.clone(),
                    spec_hash: rec.spec_hash.clone(),
                    repo_digest: docker::repo_digest(&rec.reference, &digests),
                    // A ref rebuilt or retagged since bai made it is no longer made from the recorded content.
                    content: rec.content.clone().filter(|_| id == rec.id),
                    id: Some(id),
                });
            }
        }
        let snapshot: ObserveReply = NodeSnapshot {
            name: o.node,
            agent: record.as_ref().map(|_| AgentInfo { version: BAI_VERSION.to_string() }),
            labels: record.map(|r| r.labels).unwrap_or_default(),
            inventory: Some(inventory),
            images,
            vfolders,
            sessions,
            unowned,
            generation: generations::current(&self.home.generations(&cluster))?,
        };
        to_value(&snapshot)
    }

    /// The watcher's round on this node: the cluster's containers and the requested checks, all at once
    /// so that a round costs the slowest of them, not their sum. A failing check is a result, not an
    /// error; only a Docker the node cannot list fails the probe.
    async fn probe(&mut self, p: Probe) -> Result<serde_json::Value, RpcError> {
        let cluster = self.cluster(&p.cluster, false)?;
        let engine = self.engine()?;
        let checks = join_all(p.checks.iter().map(|c| health::check(engine, &cluster, c)));
        let (listing, health) = tokio::join!(engine.containers(&cluster, &p.node), checks);
        let Listing { sessions, unowned } = listing.map_err(RpcError::from)?;
        let generation = generations::current(&self.home.generations(&cluster)).ok().flatten();
        to_value(&ProbeReply { sessions, unowned, health, generation })
    }

    fn put_blob(&mut self, b: PutBlob) -> Result<serde_json::Value, RpcError> {
        if self.lease.is_none() {
            return Err(RpcError::new(ErrorKind::NoLease, "uploading needs the apply lease"));
        }
        if b.sha256.len() != 64 || !b.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("a blob is named by its sha256 in hex"));
        }
        let dir = self.home.blobs();
        let done = self.home.blob(&b.sha256);
        if b.offset == 0 && done.is_file() {
            return to_value(&PutBlobReply { complete: true });
        }
        let fail = |what: &str, e: std::io::Error| RpcError::new(ErrorKind::Failed, format!("cannot {what} blob: {e}"));
        std::fs::create_dir_all(&dir).map_err(|e| fail("store", e))?;
        let partial = dir.join(format!("{}.partial", b.sha256));
        let data = base64::engine::general_purpose::STANDARD
            .decode(b.data.as_bytes())
            .map_err(|e| bad(format!("chunk is not base64: {e}")))?;
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&partial).map_err(|e| fail("store", e))?;
        let len = file.metadata().map_err(|e| fail("store", e))?.len();
        if b.offset == 0 && len > 0 {
            file.set_len(0).map_err(|e| fail("store", e))?;
        } else if len != b.offset {
            return Err(bad(format!("chunk at offset {} but {len} bytes are stored", b.offset)));
        }
        file.write_all(&data).map_err(|e| fail("store", e))?;
        drop(file);
        if !b.last {
            return to_value(&PutBlobReply { complete: false });
        }
        let bytes = std::fs::read(&partial).map_err(|e| fail("read", e))?;
        let actual = crate::state::spec::hex_digest(&Sha256::digest(&bytes));
        if actual != b.sha256 {
            let _ = std::fs::remove_file(&partial);
            return Err(RpcError::new(
                ErrorKind::Failed,
                format!("upload corrupted: expected sha256 {}, got {actual}", b.sha256),
            ));
        }
        std::fs::rename(&partial, &done).map_err(|e| fail("store", e))?;
        to_value(&PutBlobReply { complete: true })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;
    use crate::agent::containers::InMemory;
    use crate::frame::{self, Kind};

    fn line(id: u64, method: Method) -> Vec<u8> {
        let mut out = serde_json::to_vec(&Request { id, method }).unwrap();
        out.push(b'\n');
        out
    }

    fn exec_call(session: &str) -> Method {
        Method::Stream(Box::new(StreamCall {
            cluster: "c".into(),
            session: session.into(),
            stream: Stream::Exec(ExecStream { argv: vec!["true".into()], tty: false, stdin: false, size: None }),
        }))
    }

    #[tokio::test]
    async fn a_stream_call_hands_the_connection_over_to_frames_and_a_refused_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(&dir.path().join("bai"), dir.path());
        let engine = InMemory::default();
        engine.insert_running("c", "shell", "n");
        let (controller, agent) = tokio::io::duplex(1 << 16);
        let (agent_in, agent_out) = tokio::io::split(agent);
        let served = tokio::spawn(serve_with(agent_in, agent_out, home, Box::new(move || Ok(engine.clone()))));
        let (reader, mut writer) = tokio::io::split(controller);
        let mut reader = BufReader::new(reader);
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            version: BAI_VERSION.into(),
            cluster: "c".into(),
            node: "n".into(),
            lease: false,
            holder: "test".into(),
        };
        writer.write_all(&line(1, Method::Hello(hello))).await.unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).await.unwrap();
        assert!(answer.contains("\"result\""), "{answer}");

        // A session without a container: refused with its code, and the connection stays an RPC one.
        writer.write_all(&line(2, exec_call("absent"))).await.unwrap();
        answer.clear();
        reader.read_line(&mut answer).await.unwrap();
        let refused: Response = serde_json::from_str(&answer).unwrap();
        assert_eq!(refused.error.map(|e| e.error_code().to_string()).as_deref(), Some("bai::reach::no_container"));
        writer.write_all(&line(3, Method::Ping)).await.unwrap();
        answer.clear();
        reader.read_line(&mut answer).await.unwrap();
        assert!(answer.starts_with("{\"id\":3,\"result\""), "{answer}");

        // Accepted: `ok`, then frames only, to the end of the connection.
        writer.write_all(&line(4, exec_call("shell"))).await.unwrap();
        answer.clear();
        reader.read_line(&mut answer).await.unwrap();
        assert_eq!(answer, "{\"id\":4,\"result\":{}}\n");
        let exit = frame::read(&mut reader).await.unwrap().unwrap();
        assert_eq!((exit.kind, exit.exit_code()), (Kind::Exit, Some(0)));
        drop(writer);
        served.await.unwrap().unwrap();
    }
}
