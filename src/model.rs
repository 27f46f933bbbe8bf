//! The desired state of a lab as the user wrote it: clusters of nodes, images, vfolders and sessions.
//!
//! Every user-written value keeps its [`Loc`] so validation can point at it. Names are newtypes so that a
//! vfolder name is never passed where a node name is meant. Collections keep file order: validation reports
//! in reading order, and anything a person reads is sorted at render time.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::source::{Loc, Spanned};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }
    };
}

name_type!(
    /// The name of a cluster: the unit `--cluster` selects and ownership labels carry.
    ClusterName
);
name_type!(
    /// The name of a node (a machine running bai's agent).
    NodeName
);
name_type!(
    /// The name of an image declaration (not its registry reference).
    ImageName
);
name_type!(
    /// The name of a vfolder (a storage directory on one node).
    VfolderName
);
name_type!(
    /// The name of a compute session (one container).
    SessionName
);

/// A whole configuration: every cluster of one file and its includes.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: Spanned<ClusterName>,
    pub loc: Loc,
    /// The lab file's directory, absolute: the paths a spec records relative to the lab (a `from-file`
    /// secret's) are read from under it. Set by the loader; empty for a cluster made in memory.
    pub root: PathBuf,
    pub ssh: SshSettings,
    pub agent_binary: Option<Spanned<PathBuf>>,
    pub probe: ProbeSettings,
    pub timeouts: Timeouts,
    /// `generations keep=N`: how many generations each node keeps.
    pub generations: GenerationSettings,
    pub nodes: Vec<Node>,
    pub images: Vec<Image>,
    pub vfolders: Vec<Vfolder>,
    pub sessions: Vec<Session>,
}

/// SSH connection settings; unset fields fall back to the cluster's, then to OpenSSH's defaults.
#[derive(Debug, Clone, Default)]
pub struct SshSettings {
    pub user: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub identity: Option<Spanned<String>>,
    pub known_hosts: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<Duration>>,
    /// `jump="login.lab,bai@gw:2222"`: the jump hosts the node is reached through, first hop first; an
    /// empty list (`jump="none"`) means directly, whatever the cluster or ssh_config says.
    pub jump: Option<Spanned<Vec<crate::jump::JumpHost>>>,
}

/// Health-probe settings (the Kubernetes probe model); unset fields fall back to the cluster's.
#[derive(Debug, Clone, Default)]
pub struct ProbeSettings {
    pub interval: Option<Spanned<Duration>>,
    pub timeout: Option<Spanned<Duration>>,
    pub failure_threshold: Option<Spanned<u32>>,
    pub success_threshold: Option<Spanned<u32>>,
}

/// `timeouts observe= change= image=`: how long the controller waits for a node's agent to answer each
/// kind of call before it gives that node up; unset fields fall back to the cluster's, then to
/// [`crate::transport::client::Deadlines::default`].
#[derive(Debug, Clone, Default)]
pub struct Timeouts {
    pub observe: Option<Spanned<Duration>>,
    pub change: Option<Spanned<Duration>>,
    pub image: Option<Spanned<Duration>>,
}

/// How many generations (records of successful applies) each node keeps; the newest is never pruned.
#[derive(Debug, Clone, Default)]
pub struct GenerationSettings {
    pub keep: Option<Spanned<u32>>,
}

impl GenerationSettings {
    /// Kept when the lab says nothing.
    pub const DEFAULT_KEEP: u32 = 10;

    pub fn keep(&self) -> u32 {
        self.keep.as_ref().map_or(Self::DEFAULT_KEEP, |k| k.value)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: Spanned<NodeName>,
    pub loc: Loc,
    pub address: Option<Spanned<String>>,
    pub local: Option<Spanned<bool>>,
    pub ssh: SshSettings,
    /// Where `ssh` was written on this node, for the `local` conflict.
    pub ssh_loc: Option<Loc>,
    pub gpus: Option<Spanned<u32>>,
    pub labels: BTreeMap<String, Spanned<String>>,
    pub vfolder_root: Option<Spanned<String>>,
    pub probe: ProbeSettings,
    pub timeouts: Timeouts,
}

impl Node {
    pub fn is_local(&self) -> bool {
        self.local.as_ref().is_some_and(|l| l.value)
    }
}

#[derive(Debug, Clone)]
pub struct Image {
    pub name: Spanned<ImageName>,
    pub loc: Loc,
    pub reference: Spanned<String>,
    pub digest: Option<Spanned<String>>,
    pub min_gpus: Option<Spanned<u32>>,
    pub source: ImageSource,
}

/// How an image reaches a node.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// `docker pull` of the reference.
    Pull,
    /// `docker build` on the node from a context directory uploaded by the controller.
    Build { context: Spanned<PathBuf>, dockerfile: Option<Spanned<String>> },
    /// `docker load` of a `docker save` tarball uploaded by the controller.
    Archive { path: Spanned<PathBuf> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Rw,
    Ro,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Rw => "rw",
            Permission::Ro => "ro",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Vfolder {
    pub name: Spanned<VfolderName>,
    pub loc: Loc,
    pub node: Spanned<NodeName>,
    pub permission: Option<Spanned<Permission>>,
    pub quota: Option<Spanned<u64>>,
}

impl Vfolder {
    pub fn permission(&self) -> Permission {
        self.permission.as_ref().map_or(Permission::Rw, |p| p.value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    No,
    OnFailure,
    Always,
    UnlessStopped,
}

impl Restart {
    pub const ALL: [(&'static str, Restart); 4] = [
        ("no", Restart::No),
        ("on-failure", Restart::OnFailure),
        ("always", Restart::Always),
        ("unless-stopped", Restart::UnlessStopped),
    ];

    pub fn as_str(self) -> &'static str {
        Restart::ALL.iter().find(|(_, r)| *r == self).map_or("no", |(s, _)| s)
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub name: Spanned<SessionName>,
    pub loc: Loc,
    pub image: Spanned<ImageName>,
    pub node: Spanned<NodeName>,
    pub resources: Resources,
    pub env: Vec<EnvVar>,
    pub mounts: Vec<Mount>,
    pub command: Vec<Spanned<String>>,
    pub ports: Vec<Port>,
    pub health: Option<Health>,
    pub depends_on: Vec<Spanned<SessionName>>,
    pub restart: Option<Spanned<Restart>>,
    /// `shm-size "16GiB"`: the size of `/dev/shm`.
    pub shm_size: Option<Spanned<u64>>,
    /// `ulimit memlock=-1 stack=67108864`, in written order.
    pub ulimits: Vec<Ulimit>,
    /// `user uid=1000 gid=1000`: who the session's processes run as.
    pub user: Option<User>,
    /// `network "host"`: the container's network mode.
    pub network: Option<Spanned<Network>>,
}

impl Session {
    /// The GPU devices the session asks for: `gpus=N`, or as many as `gpu-devices` names.
    pub fn gpus(&self) -> u32 {
        match (&self.resources.gpus, &self.resources.gpu_devices, &self.resources.mig) {
            (Some(g), _, _) => g.value,
            (None, Some(pins), _) => pins.value.len() as u32,
            // `mig="1g.10gb"` alone: one instance.
            (None, None, Some(_)) => 1,
            (None, None, None) => 0,
        }
    }

    /// `/dev/shm` as the container gets it: as written, else [`Session::GPU_SHM_DEFAULT`] for a session with
    /// GPUs, else Docker's own default (64 MiB).
    pub fn shm_size(&self) -> Option<u64> {
        self.shm_size.as_ref().map(|s| s.value).or((self.gpus() > 0).then_some(Self::GPU_SHM_DEFAULT))
    }

    /// `/dev/shm` of a GPU session that does not say: 1 GiB, NVIDIA's recommendation for its containers
    /// (`--shm-size=1g`); Docker's 64 MiB makes PyTorch's data loaders fail with "bus error".
    pub const GPU_SHM_DEFAULT: u64 = 1 << 30;
}

#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub loc: Option<Loc>,
    pub cpus: Option<Spanned<f64>>,
    pub memory: Option<Spanned<u64>>,
    pub gpus: Option<Spanned<u32>>,
    /// `gpu-devices="0,3"`: the devices themselves, as indices or UUIDs, all under the value's span.
    pub gpu_devices: Option<Spanned<Vec<String>>>,
    /// `mig="1g.10gb"`: the GPUs are MIG instances of this profile.
    pub mig: Option<Spanned<String>>,
}

/// One `ulimit` of a session: Docker's limit `name` with its soft and hard values (`-1`: unlimited).
#[derive(Debug, Clone)]
pub struct Ulimit {
    pub name: Spanned<String>,
    pub soft: i64,
    pub hard: i64,
}

impl Ulimit {
    /// The limits Docker knows (`docker run --ulimit`), which are the kernel's `RLIMIT_*`.
    pub const NAMES: [&'static str; 15] = [
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
}

/// `user uid=1000 gid=1000`.
#[derive(Debug, Clone)]
pub struct User {
    pub loc: Loc,
    pub uid: Spanned<u32>,
    pub gid: Option<Spanned<u32>>,
}

/// A session's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Docker's default bridge: the container has an address of its own on the node.
    Bridge,
    /// The node's own interfaces (NCCL across nodes, InfiniBand); published ports mean nothing there.
    Host,
    /// Loopback only.
    None,
}

impl Network {
    pub const ALL: [(&'static str, Network); 3] =
        [("bridge", Network::Bridge), ("host", Network::Host), ("none", Network::None)];

    pub fn as_str(self) -> &'static str {
        Network::ALL.iter().find(|(_, n)| *n == self).map_or("bridge", |(s, _)| s)
    }
}

#[derive(Debug, Clone)]
pub struct EnvVar {
    pub name: Spanned<String>,
    pub value: EnvValue,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(String),
    /// Read from the controller's environment at apply time; never printed.
    FromEnv(String),
    /// Read from a file on the controller at apply time; never printed. The path as a spec records it, so
    /// that where bai runs and where the lab lies do not change it: relative to the lab file's directory
    /// (lexically normalized, `secrets/token`, `../shared/token`), or absolute, or `~/…` as written. Read
    /// it through [`Cluster::root`].
    FromFile(String),
}

#[derive(Debug, Clone)]
pub struct Mount {
    pub loc: Loc,
    pub vfolder: Spanned<VfolderName>,
    pub alias: Option<Spanned<String>>,
    pub readonly: Option<Spanned<bool>>,
}

impl Mount {
    pub fn is_readonly(&self) -> bool {
        self.readonly.as_ref().is_some_and(|r| r.value)
    }

    /// Where it lands in the container, or why it may not land there.
    pub fn destination(&self) -> crate::mount_destination::Destination {
        crate::mount_destination::destination(
            self.vfolder.value.as_str(),
            self.alias.as_ref().map(|a| a.value.as_str()),
        )
    }
}

#[derive(Debug, Clone)]
pub struct Port {
    pub name: Spanned<String>,
    pub port: Spanned<u16>,
    /// `publish=18888` or `publish="0.0.0.0:18888"`: reachable on the node at this address.
    pub publish: Option<Spanned<Publish>>,
}

/// Where a port is published on its node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The node's address it listens on: `127.0.0.1` unless the lab says otherwise.
    pub address: String,
    pub port: u16,
}

impl Publish {
    /// Loopback unless the lab says otherwise: a Jupyter published on every interface of a GPU node is
    /// open to its whole network, which a lab must choose, not get by default.
    pub const DEFAULT_ADDRESS: &'static str = "127.0.0.1";

    /// Whether two publications can hold the same host port at once: not when either is on every address.
    pub fn clashes_with(&self, other: &Publish) -> bool {
        let any = |a: &str| a == "0.0.0.0" || a == "::";
        self.port == other.port && (self.address == other.address || any(&self.address) || any(&other.address))
    }
}

#[derive(Debug, Clone)]
pub struct Health {
    pub loc: Loc,
    pub check: HealthCheck,
    pub probe: ProbeSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// An HTTP GET from the node to the session's port; 2xx and 3xx are healthy.
    Http { port: u16, path: String },
    /// A command run in the container; exit 0 is healthy.
    Exec(Vec<String>),
}
