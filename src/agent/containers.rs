//! What the agent asks of a container engine: the seam between the agent's protocol and Docker. The
//! agent runs against the machine's Docker engine ([`crate::agent::docker::Engine`]); unit tests run the
//! real agent (`serve`, its records, vfolders and lease) against [`InMemory`], an engine that keeps
//! images and containers in memory, so that the engine's runs are tested end to end in one process.

use std::path::PathBuf;

use crate::agent::docker::{DockerError, Engine, Listing};
use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(test)]
use crate::protocol::Stream;
use crate::protocol::{CreateSession, EnsureImage, StreamCall};
#[cfg(test)]
use crate::state::snapshot::SessionSnapshot;
use crate::state::snapshot::{ContainerState, GpuInfo};

/// A session's container state, exit code and address, as a health check needs them.
pub type SessionState = Option<(ContainerState, Option<i64>, Option<String>)>;

/// The container engine's part in the agent's calls; see [`Engine`] for what each does on Docker.
#[allow(async_fn_in_trait)] // The agent is generic over its engine; nothing holds one as `dyn`.
pub trait Containers {
    async fn version(&self) -> Result<String, DockerError>;
    async fn containers(&self, cluster: &str, node: &str) -> Result<Listing, DockerError>;
    async fn image_facts(&self, reference: &str) -> Result<Option<(String, Vec<String>)>, DockerError>;
    async fn ensure_image(
        &self,
        req: &EnsureImage,
        blob_path: &(dyn Fn(&str) -> PathBuf + Sync),
    ) -> Result<String, DockerError>;
    async fn create_session(
        &self,
        req: &CreateSession,
        vfolder_path: &(dyn Fn(&str) -> PathBuf + Sync),
    ) -> Result<(), DockerError>;
    async fn remove_session(&self, cluster: &str, name: &str) -> Result<bool, DockerError>;
    async fn session_state(&self, cluster: &str, name: &str) -> Result<SessionState, DockerError>;
    async fn exec(&self, cluster: &str, name: &str, argv: &[String]) -> Result<i64, DockerError>;
    async fn gpu_holders(&self, gpus: &mut [GpuInfo], known: &std::path::Path) -> Result<(), DockerError>;
    /// Runs an accepted stream call to its end, reading the controller's frames from `reader` and writing
    /// the node's to `writer` ([`crate::protocol::Stream`]).
    async fn stream<R, W>(
        &self,
        cluster: &str,
        call: &StreamCall,
        reader: R,
        writer: &mut W,
    ) -> Result<(), DockerError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin;
}

impl Containers for Engine {
    async fn version(&self) -> Result<String, DockerError> {
        Engine::version(self).await
    }

    async fn containers(&self, cluster: &str, node: &str) -> Result<Listing, DockerError> {
        Engine::containers(self, cluster, node).await
    }

    async fn image_facts(&self, reference: &str) -> Result<Option<(String, Vec<String>)>, DockerError> {
        Engine::image_facts(self, reference).await
    }

    async fn ensure_image(
        &self,
        req: &EnsureImage,
        blob_path: &(dyn Fn(&str) -> PathBuf + Sync),
    ) -> Result<String, DockerError> {
        Engine::ensure_image(self, req, blob_path).await
    }

    async fn create_session(
        &self,
        req: &CreateSession,
        vfolder_path: &(dyn Fn(&str) -> PathBuf + Sync),
    ) -> Result<(), DockerError> {
        Engine::create_session(self, req, vfolder_path).await
    }

    async fn remove_session(&self, cluster: &str, name: &str) -> Result<bool, DockerError> {
        Engine::remove_session(self, cluster, name).await
    }

    async fn session_state(&self, cluster: &str, name: &str) -> Result<SessionState, DockerError> {
        Engine::session_state(self, cluster, name).await
    }

    async fn exec(&self, cluster: &str, name: &str, argv: &[String]) -> Result<i64, DockerError> {
        Engine::exec(self, cluster, name, argv).await
    }

    async fn gpu_holders(&self, gpus: &mut [GpuInfo], known: &std::path::Path) -> Result<(), DockerError> {
        Engine::gpu_holders(self, gpus, known).await
    }

    async fn stream<R, W>(&self, cluster: &str, call: &StreamCall, reader: R, writer: &mut W) -> Result<(), DockerError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        Engine::stream(self, cluster, call, reader, writer).await
    }
}

/// An engine in memory, for unit tests: images are present once ensured (as if pulled: with a repository
/// digest), a session's container runs once created (its spec and hash as asked), a check exits 0. Clones share one state, as nodes on
/// one Docker engine do.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct InMemory {
    state: std::sync::Arc<std::sync::Mutex<Memory>>,
}

#[cfg(test)]
#[derive(Default)]
struct Memory {
    /// Reference → image id and repository digest.
    images: std::collections::BTreeMap<String, (String, String)>,
    /// (cluster, session) → (node, the session as observed).
    containers: std::collections::BTreeMap<(String, String), (String, SessionSnapshot)>,
}

#[cfg(test)]
impl InMemory {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A running session of `cluster` on `node`, as if created.
    pub fn insert_running(&self, cluster: &str, name: &str, node: &str) {
        let session = SessionSnapshot {
            name: name.into(),
            spec_hash: "0".repeat(64),
            state: ContainerState::Running,
            exit_code: None,
            spec: None,
        };
        self.memory().containers.insert((cluster.into(), name.into()), (node.into(), session));
    }

    /// The sessions running, as `cluster/session on node`, sorted.
    pub fn running(&self) -> Vec<String> {
        self.memory().containers.iter().map(|((c, s), (node, _))| format!("{c}/{s} on {node}")).collect()
    }
}

#[cfg(test)]
impl Containers for InMemory {
    async fn version(&self) -> Result<String, DockerError> {
        Ok("in-memory".into())
    }

    async fn containers(&self, cluster: &str, node: &str) -> Result<Listing, DockerError> {
        let memory = self.memory();
        let mine = memory.containers.iter().filter(|((c, _), (n, _))| c == cluster && n == node);
        Ok(Listing { sessions: mine.map(|(_, (_, s))| s.clone()).collect(), unowned: Vec::new() })
    }

    async fn image_facts(&self, reference: &str) -> Result<Option<(String, Vec<String>)>, DockerError> {
        Ok(self.memory().images.get(reference).map(|(id, digest)| (id.clone(), vec![digest.clone()])))
    }

    async fn ensure_image(
        &self,
        req: &EnsureImage,
        _: &(dyn Fn(&str) -> PathBuf + Sync),
    ) -> Result<String, DockerError> {
        let reference = &req.spec.reference;
        let id = format!("sha256:{}", req.spec_hash);
        // `repo@sha256:…`, as a registry would name what it served.
        let repository =
            reference.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(&**reference, |(r, _)| r);
        let digest = format!("{repository}@sha256:{}", req.spec_hash);
        self.memory().images.insert(reference.clone(), (id.clone(), digest));
        Ok(id)
    }

    async fn create_session(
        &self,
        req: &CreateSession,
        _: &(dyn Fn(&str) -> PathBuf + Sync),
    ) -> Result<(), DockerError> {
        let mut memory = self.memory();
        if !memory.images.contains_key(&req.spec.image_ref) {
            return Err(DockerError::ImageMissing { reference: req.spec.image_ref.clone() });
        }
        let session = SessionSnapshot {
            name: req.name.clone(),
            spec_hash: req.spec_hash.clone(),
            state: ContainerState::Running,
            exit_code: None,
            spec: Some(req.spec.clone()),
        };
        memory.containers.insert((req.cluster.clone(), req.name.clone()), (req.node.clone(), session));
        Ok(())
    }

    async fn remove_session(&self, cluster: &str, name: &str) -> Result<bool, DockerError> {
        Ok(self.memory().containers.remove(&(cluster.to_string(), name.to_string())).is_some())
    }

    async fn session_state(&self, cluster: &str, name: &str) -> Result<SessionState, DockerError> {
        let memory = self.memory();
        let found = memory.containers.get(&(cluster.to_string(), name.to_string()));
        Ok(found.map(|(_, s)| (s.state, s.exit_code, None)))
    }

    async fn exec(&self, _: &str, _: &str, _: &[String]) -> Result<i64, DockerError> {
        Ok(0)
    }

    /// The in-memory engine runs on machines without GPUs: nothing holds any.
    async fn gpu_holders(&self, _: &mut [GpuInfo], _: &std::path::Path) -> Result<(), DockerError> {
        Ok(())
    }

    /// A session in memory printed nothing and runs commands that exit 0 at once; an archive into it is
    /// read to its end and dropped, one out of it is empty.
    async fn stream<R, W>(&self, _: &str, call: &StreamCall, mut reader: R, writer: &mut W) -> Result<(), DockerError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        use crate::frame::{self, Kind};
        let broke = |e: std::io::Error| DockerError::Invalid { container: call.session.clone(), reason: e.to_string() };
        match &call.stream {
            Stream::Exec(_) => frame::write(writer, Kind::Exit, &frame::exit_payload(0)).await.map_err(broke),
            Stream::CopyIn { .. } => {
                while let Ok(Some(f)) = frame::read(&mut reader).await {
                    if f.kind == Kind::End {
                        break;
                    }
                }
                frame::write(writer, Kind::End, b"").await.map_err(broke)
            }
            Stream::Logs(_) | Stream::CopyOut { .. } => frame::write(writer, Kind::End, b"").await.map_err(broke),
        }
    }
}
