//! The agent RPC: JSON lines on the agent's stdin and stdout, one request and one response per line,
//! ids echoed. Pure data shared by the controller and the agent, versioned by [`PROTOCOL_VERSION`].
//!
//! Every session begins with `hello`: the controller states its protocol and bai version, and the agent
//! refuses a mismatch (one artifact means one version: the controller installs its own binary as the
//! agent). With `lease: true` the agent also takes the cluster's apply lease on its node, held until
//! the connection ends; a later `hello` on the same connection may ask for it (the controller first
//! learns every node's identity without it). The reply tells the agent's identity (`agent::identity`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Permission;
use crate::state::snapshot::{Inventory, NodeSnapshot, SessionSnapshot, Unowned};
use crate::state::spec::{ImageSpec, SessionSpec};

/// Bumped whenever a message changes shape.
pub const PROTOCOL_VERSION: u32 = 1;

/// The line an agent started with `--expect-size` writes first, once it knows it is as large as the
/// binary the controller means (a truncated or rewritten copy says `stale` and ends); the JSON lines
/// follow.
pub const AGENT_READY: &str = "bai-agent-ready";

/// bai's own version; controller and agent must agree on it.
pub const BAI_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub method: Method,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Method {
    Hello(Hello),
    Ping,
    Inventory,
    Observe(Observe),
    PutBlob(PutBlob),
    EnsureImage(EnsureImage),
    RemoveImage(RemoveImage),
    EnsureVfolder(EnsureVfolder),
    RemoveVfolder(RemoveVfolder),
    SetLabels(SetLabels),
    CreateSession(Box<CreateSession>),
    RemoveSession(RemoveSession),
    SessionHealth(SessionHealth),
    /// After its `ok` answer the connection carries [`crate::frame`]s, no more JSON lines.
    Stream(Box<StreamCall>),
    /// The watcher's per-round look at a node's sessions: their containers, and the health checks due.
    Probe(Probe),
    /// Forget the cluster on this node (after everything of it was removed).
    Leave(Leave),
    /// Store a generation record and prune to the newest `keep` (lease needed).
    RecordGeneration(Box<RecordGeneration>),
    /// The node's generation summaries for a cluster (no lease: read-only).
    ListGenerations(ListGenerations),
    /// One generation record (no lease: read-only).
    GetGeneration(GetGeneration),
    /// The node's key for digesting the cluster's secret values (see [`crate::secret`]); no lease needed
    /// to read it, the lease needed to create it.
    SecretKey(SecretKey),
}

/// What a call does to the node, which sets how long the controller waits for it
/// (`transport::client::Deadlines`) and whether a call that timed out leaves the node unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Reads (a key read with `create` may also make the key, once).
    Read,
    /// Changes the node: sessions, vfolders, labels, records, uploads.
    Change,
    /// Makes an image: a pull, a build or a load.
    Image,
}

impl Method {
    pub fn kind(&self) -> CallKind {
        match self {
            Method::Hello(_)
            | Method::Ping
            | Method::Inventory
            | Method::Observe(_)
            | Method::SessionHealth(_)
            | Method::Stream(_)
            | Method::Probe(_)
            | Method::ListGenerations(_)
            | Method::GetGeneration(_)
            | Method::SecretKey(_) => CallKind::Read,
            Method::EnsureImage(_) => CallKind::Image,
            Method::PutBlob(_)
            | Method::RemoveImage(_)
            | Method::EnsureVfolder(_)
            | Method::RemoveVfolder(_)
            | Method::SetLabels(_)
            | Method::CreateSession(_)
            | Method::RemoveSession(_)
            | Method::Leave(_)
            | Method::RecordGeneration(_) => CallKind::Change,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Hello(_) => "hello",
            Method::Ping => "ping",
            Method::Inventory => "inventory",
            Method::Observe(_) => "observe",
            Method::PutBlob(_) => "put_blob",
            Method::EnsureImage(_) => "ensure_image",
            Method::RemoveImage(_) => "remove_image",
            Method::EnsureVfolder(_) => "ensure_vfolder",
            Method::RemoveVfolder(_) => "remove_vfolder",
            Method::SetLabels(_) => "set_labels",
            Method::CreateSession(_) => "create_session",
            Method::RemoveSession(_) => "remove_session",
            Method::SessionHealth(_) => "session_health",
            Method::Stream(_) => "stream",
            Method::Probe(_) => "probe",
            Method::Leave(_) => "leave",
            Method::RecordGeneration(_) => "record_generation",
            Method::ListGenerations(_) => "list_generations",
            Method::GetGeneration(_) => "get_generation",
            Method::SecretKey(_) => "secret_key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// A failure on the node, with a kind the controller can act on and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    pub kind: ErrorKind,
    pub message: String,
    /// The stable code of the agent's typed error (`bai::docker::image_missing`); absent, the kind's
    /// (see [`RpcError::error_code`]). The controller uses a code from a node only when it is well formed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was not understood (malformed JSON, unknown method).
    BadRequest,
    /// Controller and agent speak different protocols or are different bai versions.
    VersionMismatch,
    /// Another controller holds the cluster's apply lease on this node.
    LeaseHeld,
    /// A method that changes the node was called without the lease.
    NoLease,
    /// Refused to protect data or what bai does not own.
    Refused,
    /// Docker, the file system or NVML failed.
    Failed,
}

impl RpcError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RpcError { kind, message: message.into(), code: None }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// A typed error of the agent as the reply's error: its code travels with it.
    pub fn of(kind: ErrorKind, error: &dyn miette::Diagnostic) -> Self {
        RpcError::new(kind, error.to_string()).with_code(crate::failure::code_of(error))
    }

    /// The error's code: the one it carries, else its kind's.
    pub fn error_code(&self) -> &str {
        match &self.code {
            Some(code) => code,
            None => match self.kind {
                ErrorKind::BadRequest => "bai::agent::bad_request",
                ErrorKind::VersionMismatch => "bai::agent::version_mismatch",
                ErrorKind::LeaseHeld => "bai::agent::lease_held",
                ErrorKind::NoLease => "bai::agent::no_lease",
                ErrorKind::Refused => "bai::agent::refused",
                ErrorKind::Failed => "bai::agent::failed",
            },
        }
    }
}

impl miette::Diagnostic for RpcError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(self.error_code()))
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub version: String,
    pub cluster: String,
    pub node: String,
    /// Take the cluster's apply lease on this node for as long as this connection lasts.
    pub lease: bool,
    /// Who is asking, for the message a second controller gets (`user@host pid 123`).
    pub holder: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloReply {
    pub protocol: u32,
    pub version: String,
    /// `uname -m` of the node, e.g. `x86_64`.
    pub arch: String,
    pub lease: bool,
    /// Which agent this is: a hash of the machine's id and the agent home's path (`agent::identity`).
    /// Two nodes of a lab that answer the same one share one home: its lease, state and records.
    #[serde(default)]
    pub identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub uptime_s: u64,
    pub load1: Option<f64>,
    pub gpus: usize,
    /// Mean utilisation of the node's GPUs in percent, where NVML reports it: the ping is also a cheap
    /// GPU summary.
    #[serde(default)]
    pub gpu_utilization: Option<f64>,
    /// Each GPU's use, for the watcher's per-GPU figures; left out on a node without GPUs, so that its
    /// ping costs what it did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<GpuUse>,
}

/// One GPU's use, as a ping reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuUse {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total: u64,
    #[serde(default)]
    pub memory_used: Option<u64>,
    #[serde(default)]
    pub utilization: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observe {
    pub cluster: String,
    pub node: String,
    /// The node's vfolder root as configured (`~` is the agent user's home).
    pub vfolder_root: String,
}

/// The reply to `observe`: what bai owns on the node for the cluster.
pub type ObserveReply = NodeSnapshot;

/// The reply to `inventory`.
pub type InventoryReply = Inventory;

/// A chunk of a content-addressed upload (a build context or an image archive). Chunks arrive in order;
/// the last one makes the agent check the whole blob against `sha256` before it keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutBlob {
    pub sha256: String,
    pub offset: u64,
    /// Base64 (standard alphabet) of the chunk.
    pub data: String,
    pub last: bool,
}

/// How the node makes an image: pull it, build it from a context uploaded as a blob, or load an
/// uploaded archive (the lab says where each comes from: [`crate::model::ImageSource`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageRecipe {
    Pull,
    /// A tar of the build context, uploaded earlier as a blob.
    Build {
        context_sha256: String,
        dockerfile: String,
    },
    /// A `docker save` tarball, uploaded earlier as a blob.
    Archive {
        sha256: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsureImage {
    pub cluster: String,
    pub name: String,
    pub spec: ImageSpec,
    pub spec_hash: String,
    pub source: ImageRecipe,
    /// What `bai.lock` says of the image, enforced by the agent; absent without a lock entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<LockedFacts>,
}

/// The lock file's facts about one image, as the agent enforces them: a pull is made at `digest` and
/// verified after; a loaded archive must be `image_id`; a build whose ref already is `image_id` is not
/// built again (builds are not reproducible, so a new build's id is not checked).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

/// The reply to a call that answers nothing but its success (`set_labels`, `create_session`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {}

/// The reply to `put_blob`: whether the node now holds the whole blob (then no more chunks are sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutBlobReply {
    pub complete: bool,
}

/// The reply to `remove_vfolder`: what was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RemoveVfolderReply {
    Absent,
    Deleted,
    /// Moved aside, data kept, to `path` on the node.
    Tombstoned {
        path: String,
    },
}

/// The reply to `ensure_image`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsureImageReply {
    pub id: String,
    /// The repository digest (`sha256:…`) of the image, for pulled images.
    #[serde(default)]
    pub repo_digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveImage {
    pub cluster: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leave {
    pub cluster: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsureVfolder {
    pub cluster: String,
    pub name: String,
    pub vfolder_root: String,
    pub permission: Permission,
    pub quota: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveVfolder {
    pub cluster: String,
    pub name: String,
    pub vfolder_root: String,
    /// Without it a vfolder holding data is refused; with it, it is moved aside, never erased.
    pub allow_data_loss: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetLabels {
    pub cluster: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSession {
    pub cluster: String,
    pub node: String,
    pub name: String,
    pub spec: SessionSpec,
    pub spec_hash: String,
    pub vfolder_root: String,
    /// Values of `from-env`/`from-file` variables, resolved on the controller. Never logged.
    pub secrets: BTreeMap<String, String>,
}

/// Shows the secrets' names, never their values.
impl std::fmt::Debug for CreateSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets: BTreeMap<&str, &str> = self.secrets.keys().map(|k| (k.as_str(), "(sensitive)")).collect();
        f.debug_struct("CreateSession")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .field("name", &self.name)
            .field("spec", &self.spec)
            .field("spec_hash", &self.spec_hash)
            .field("vfolder_root", &self.vfolder_root)
            .field("secrets", &secrets)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveSession {
    pub cluster: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionHealth {
    pub cluster: String,
    pub name: String,
}

/// What `session_health` tells: the session's container state (`missing` when there is none), its exit
/// code once it ended, and its address on the node (127.0.0.1 on the host's network).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionHealthReply {
    pub state: String,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub ip: Option<String>,
}

/// `stream`: no lease needed (reading a session's output or running a command in it changes nothing bai
/// owns). The agent answers `ok` once the session's container is there (and running, for `exec`), then
/// the connection carries frames ([`crate::frame`]) both ways until it closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamCall {
    pub cluster: String,
    pub session: String,
    pub stream: Stream,
}

/// What a stream call streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stream {
    /// The container's output, as `docker logs` gives it: `Stdout`/`Stderr` frames, then `End`.
    Logs(LogsStream),
    /// A command in the running container: `Stdin`/`StdinEnd`/`Resize` in, `Stdout`/`Stderr` out, then `Exit`.
    Exec(ExecStream),
    /// A tar archive of `path` in the container, as `docker cp` reads it: `Data` frames, then `End`.
    CopyOut { path: String },
    /// A tar archive (`Data` frames, then `End`) extracted into the directory `path` in the container;
    /// answered with `End` once the engine took it.
    CopyIn { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsStream {
    /// Keep streaming new output, across restarts of the container by the engine, until it stops for good.
    pub follow: bool,
    /// Only the last N lines of what was written before.
    #[serde(default)]
    pub tail: Option<u64>,
    /// Only output written at or after this Unix time.
    #[serde(default)]
    pub since: Option<i64>,
    /// Each line led by the time the engine stamped it (RFC 3339, nanoseconds).
    pub timestamps: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStream {
    /// The program and its arguments, run without a shell.
    pub argv: Vec<String>,
    /// A pseudo-terminal: output comes as `Stdout` only, and `Resize` frames set its size.
    pub tty: bool,
    /// Whether `Stdin` frames feed the program's input; without, it reads end-of-file at once.
    pub stdin: bool,
    /// The terminal's first size, columns and rows.
    #[serde(default)]
    pub size: Option<(u16, u16)>,
}

/// `probe`: no lease needed. The agent lists the cluster's containers on the node (as `observe` does, but
/// nothing else) and runs the given health checks concurrently, each bounded by its own timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub cluster: String,
    pub node: String,
    pub checks: Vec<HealthProbe>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthProbe {
    pub session: String,
    pub check: HealthCheckSpec,
    pub timeout_ms: u64,
}

/// A session's `health` check as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HealthCheckSpec {
    /// HTTP GET from the node to the container's own address; 2xx and 3xx are healthy.
    Http { port: u16, path: String },
    /// A command run in the container (no shell); exit 0 is healthy.
    Exec { argv: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReply {
    /// The node's managed sessions of the cluster, as in `observe`.
    pub sessions: Vec<SessionSnapshot>,
    /// Containers holding one of the cluster's names without bai's labels.
    pub unowned: Vec<Unowned>,
    /// One per requested check, in request order.
    pub health: Vec<HealthResult>,
    /// The node's current generation for the cluster: a new one means another controller applied,
    /// destroyed or rolled back there (see `watch::truth`).
    #[serde(default)]
    pub generation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    pub session: String,
    pub healthy: bool,
    /// What was seen, for people: `HTTP 200`, `HTTP 404`, `exit 1`, `timed out after 2s`,
    /// `container not running`, `connection refused`.
    pub detail: String,
}

/// `record_generation`: the record's number must be above every number the node holds for the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordGeneration {
    pub cluster: String,
    pub record: crate::generation::GenerationRecord,
    /// How many records to keep, the new one included (at least 1).
    pub keep: u64,
}

/// The reply to `record_generation`: the numbers pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordGenerationReply {
    pub pruned: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListGenerations {
    pub cluster: String,
}

/// The reply to `list_generations`: kept records oldest first, and the lowest number ever pruned (so that
/// a rollback can tell "pruned" from "never recorded").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListGenerationsReply {
    pub generations: Vec<crate::generation::GenerationSummary>,
    pub lowest_pruned: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetGeneration {
    pub cluster: String,
    pub number: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretKey {
    pub cluster: String,
    /// Make the key when the node has none (needs the apply lease); otherwise the reply holds none.
    pub create: bool,
}

/// The reply to `secret_key`: the key in hex, `None` when the node has none and none was to be made.
/// Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretKeyReply {
    pub key: Option<String>,
}

impl std::fmt::Debug for SecretKeyReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeyReply").field("key", &self.key.as_ref().map(|_| "(sensitive)")).finish()
    }
}

/// The container name of a session: `bai.<cluster>.<session>`.
pub fn container_name(cluster: &str, session: &str) -> String {
    format!("bai.{cluster}.{session}")
}

/// Whether `name` can name a container's environment variable: one or more printable ASCII characters
/// other than `=` and space. `=` would end the name early (`X=Y` set to `v` is `X` set to `Y=v`); a NUL
/// ends it in every C program; spaces and control characters have no place in one. POSIX's portable
/// `[A-Za-z_][A-Za-z0-9_]*` is the safe choice, but images read others (`discovery.type`), so those pass.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
}

/// Labels bai puts on what it owns.
pub mod labels {
    pub const CLUSTER: &str = "ai.bai.cluster";
    pub const NODE: &str = "ai.bai.node";
    pub const SESSION: &str = "ai.bai.session";
    pub const SPEC_HASH: &str = "ai.bai.spec-hash";
    /// The canonical spec JSON, so that a later plan can show field-level reasons.
    pub const SPEC: &str = "ai.bai.spec";
    /// The GPU devices placed for the session, comma-separated, for people and tools reading `docker
    /// inspect` (bai itself reads them from the spec).
    pub const GPU_DEVICES: &str = "ai.bai.gpu-devices";
}

/// Whether a vfolder name is bai's own: every name starting with `.bai`, in any case (a vfolder root may
/// lie on a file system that ignores case). bai keeps its own directories under the vfolder root
/// (`.bai-tombstones/`, `.bai-markers/`), so a vfolder of that name would mount them into a session.
pub fn is_reserved_vfolder_name(name: &str) -> bool {
    name.get(..4).is_some_and(|start| start.eq_ignore_ascii_case(".bai"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_starting_with_dot_bai_are_reserved() {
        for reserved in [".bai", ".bai-tombstones", ".BAI-markers", ".Baikal"] {
            assert!(is_reserved_vfolder_name(reserved), "{reserved}");
        }
        for free in ["bai", "data.bai", ".ba", "", "é.bai", ".hidden"] {
            assert!(!is_reserved_vfolder_name(free), "{free}");
        }
    }

    #[test]
    fn requests_are_tagged_json_lines() {
        let req = Request { id: 7, method: Method::Ping };
        assert_eq!(serde_json::to_string(&req).unwrap_or_default(), r#"{"id":7,"method":"ping"}"#);
        let back: Request = serde_json::from_str(r#"{"id":7,"method":"ping"}"#).expect("parses");
        assert_eq!(back, req);
        let hello = Request {
            id: 1,
            method: Method::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                version: BAI_VERSION.into(),
                cluster: "lab".into(),
                node: "gpu-01".into(),
                lease: true,
                holder: "me@host pid 1".into(),
            }),
        };
        let text = serde_json::to_string(&hello).unwrap_or_default();
        assert!(text.starts_with(r#"{"id":1,"method":"hello","params":{"protocol":1"#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).ok(), Some(hello));
    }

    #[test]
    fn ensure_image_without_lock_facts_keeps_its_old_shape() {
        let old = r#"{"cluster":"lab","name":"box","spec":{"ref":"b:1","source":"build","digest":null},"spec_hash":"h","source":{"kind":"build","context_sha256":"c","dockerfile":"Dockerfile"}}"#;
        let req: EnsureImage = serde_json::from_str(old).expect("the shape before bai.lock parses");
        assert_eq!(req.locked, None);
        assert_eq!(serde_json::to_string(&req).ok().as_deref(), Some(old), "and is written the same way");
    }

    #[test]
    fn responses_carry_a_result_or_an_error() {
        let ok = Response { id: 1, result: Some(serde_json::json!({"x": 1})), error: None };
        assert_eq!(serde_json::to_string(&ok).unwrap_or_default(), r#"{"id":1,"result":{"x":1}}"#);
        let err = Response { id: 2, result: None, error: Some(RpcError::new(ErrorKind::LeaseHeld, "held")) };
        assert_eq!(
            serde_json::to_string(&err).unwrap_or_default(),
            r#"{"id":2,"error":{"kind":"lease_held","message":"held"}}"#
        );
    }
}
