//! The agent's Docker half: images and session containers on the node, through the local engine's API
//! (`client`, a small HTTP/1.1 client of its own). Everything bai creates carries its ownership labels ([`crate::protocol::labels`]), and
//! nothing without them for the cluster at hand is ever stopped, replaced or removed: a container that
//! merely holds a managed name (`bai.<cluster>.<session>`) is reported by [`Engine::unowned`] and refused
//! by the methods that would change it.
//!
//! Secrets travel in [`CreateSession::secrets`] and end up in the container's environment; they never
//! appear in an error message or in `Debug` output of anything here.
//!
//! Here: the engine connection and what its parts share. Beside it: `error` (every failure, with its
//! code), `images` (finding and making images), `sessions` (the session containers), `streams` (a session's
//! log, commands and archives, relayed as frames).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use client::{Body, Client, query};
use models::{ContainerInspect, Created};

use crate::model::{Network, Restart};
use crate::protocol::{CreateSession, EnsureImage, ErrorKind, ImageRecipe, RpcError, container_name, labels};
use crate::state::snapshot::{ContainerState, SessionSnapshot, Unowned, UnownedKind};
use crate::state::spec::{EnvSpec, ImageSpec, SessionSpec};

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

mod client;
mod error;
mod gpus;
mod images;
mod models;
mod sessions;
mod streams;

pub use client::{DEFAULT_HOST, EngineError};
pub use error::*;
pub use images::*;
pub use sessions::Listing;

/// A failed engine call as the agent reports it: an engine it cannot reach is said so, whatever the call.
fn api(action: impl Into<String>) -> impl FnOnce(EngineError) -> DockerError {
    let action = action.into();
    move |source| match source {
        EngineError::Connect { .. } | EngineError::Host(_) => DockerError::Connect { source },
        source => DockerError::Api { action, source },
    }
}

/// `reference` as one segment of an API path (`/images/{segment}/json`), once it is known to be an image
/// reference, percent-encoded: spliced into a path as it is, `../../containers/x/json?x=` would address
/// another endpoint.
fn image_segment(reference: &str) -> Result<String, DockerError> {
    crate::reference::check(reference)
        .map_err(|reason| DockerError::InvalidReference { reference: reference.to_string(), reason })?;
    Ok(crate::reference::path_segment(reference))
}

/// An engine-made id or a checked name as one segment of an API path.
fn segment(name: &str) -> String {
    crate::reference::path_segment(name)
}

/// The local Docker engine.
pub struct Engine {
    docker: Client,
}
impl Engine {
    /// Connects to the engine `DOCKER_HOST` names, or the local socket. Nothing is sent yet: a missing
    /// socket fails at the first call, as does an engine that does not answer. No API version is agreed
    /// first: every request goes without a version prefix, so each engine answers in its own current API,
    /// and asking `/version` to negotiate cost the engine more CPU than the rest of an observe (see
    /// CRATES.md).
    pub fn connect() -> Result<Engine, DockerError> {
        let docker = Client::from_env().map_err(|source| DockerError::Connect { source })?;
        Ok(Engine { docker })
    }

    /// The engine's version string, e.g. `20.10.24+dfsg1`.
    pub async fn version(&self) -> Result<String, DockerError> {
        let v: models::Version = self.docker.get("/version").await.map_err(api("reporting its version"))?;
        Ok(v.version.unwrap_or_default())
    }

    /// A container by name or id; `None` when there is none.
    async fn inspect_container(&self, container: &str) -> Result<Option<ContainerInspect>, DockerError> {
        match self.docker.get(&format!("/containers/{}/json", segment(container))).await {
            Ok(inspect) => Ok(Some(inspect)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(api(format!("inspecting container {container}"))(e)),
        }
    }

    /// An image by reference (already a path segment); `None` when there is none.
    async fn inspect_image(&self, segment: &str) -> Result<Option<models::ImageInspect>, EngineError> {
        match self.docker.get(&format!("/images/{segment}/json")).await {
            Ok(image) => Ok(Some(image)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A request the engine answers with nothing bai reads.
    async fn post(&self, path: &str, body: Body) -> Result<(), EngineError> {
        self.docker.call("POST", path, body).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::sessions::*;
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
                resources: ResourceSpec { cpus: None, memory: None, gpus: 0, ..Default::default() },
                ports: BTreeMap::new(),
                restart: Restart::No,
                ..Default::default()
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
    fn exit_codes_are_read_from_the_listed_status_line() {
        assert_eq!(exit_code_of("Exited (3) 2 minutes ago"), Some(3));
        assert_eq!(exit_code_of("Exited (137) Less than a second ago"), Some(137));
        assert_eq!(exit_code_of("Exited (-1) 1 second ago"), Some(-1));
        assert_eq!(exit_code_of("Up 2 minutes"), None);
        assert_eq!(exit_code_of("Exited (x) 2 minutes ago"), None);
        assert_eq!(exit_code_of("Exited (3"), None);
        assert_eq!(exit_code_of("Dead"), None);
    }

    #[test]
    fn an_engine_out_of_reach_is_said_so_whatever_the_call() {
        let unreachable = api("listing")(EngineError::Host("ssh://node".into()));
        assert!(matches!(unreachable, DockerError::Connect { .. }), "{unreachable:?}");
        let refused = api("listing")(EngineError::Status { status: 500, message: "no".into() });
        assert_eq!(refused.to_string(), "Docker failed listing: the engine answered 500: no");
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
