//! What a resource looks like on a node, in canonical form, and the stable hash that decides replacement.
//!
//! A session's spec holds exactly what shapes its container: image, command, env, mounts, resources, ports
//! and restart policy. Health checks and `depends-on` are left out on purpose: changing them must not
//! restart a running session. The hash is SHA-256 over the spec's canonical JSON (fields in declared order,
//! maps sorted), so it is the same on every machine and for every bai version that keeps this format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Cluster, EnvValue, Image, ImageSource, Network, Publish, Restart, Session};
use crate::mount_destination::Destination;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    pub image: String,
    pub image_ref: String,
    pub image_digest: Option<String>,
    pub node: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, EnvSpec>,
    pub mounts: Vec<MountSpec>,
    pub resources: ResourceSpec,
    pub ports: BTreeMap<String, u16>,
    pub restart: Restart,
    // The settings below came later: each is left out of the canonical JSON while unset, so that a session
    // that does not use it keeps the hash it had (and its container) across the upgrade.
    /// `/dev/shm` in bytes; unset: Docker's 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, UlimitSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserSpec>,
    /// The network mode when it is not Docker's default bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Ports published on the node, by port name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub published: BTreeMap<String, Publish>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UlimitSpec {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
}

/// An environment variable's source. Secrets appear by reference only, never by value: with the keyed
/// digest of their value ([`crate::secret`]) once the controller resolved it under the node's key, so that
/// a changed value changes the spec hash (and replaces the container) without the value being in the spec.
///
/// `digest` is `None` where the value cannot be known (`bai diff` of two files, `plan --offline`, a
/// snapshot written by `bai status`): see [`crate::secret`] for how an unknown digest is compared.
///
/// On the wire and in the canonical JSON a variable is one small object: `{"value":"1"}`,
/// `{"from_env":"VAR"}` or `{"from_file":"/p"}`, a secret with `"digest":"<hex>"` beside its reference
/// once known. The shape without a digest is the one bai always wrote, so specs recorded by earlier
/// versions still read, and sessions without secrets keep their hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "EnvWire", from = "EnvWire")]
pub enum EnvSpec {
    Value(String),
    FromEnv { var: String, digest: Option<String> },
    FromFile { path: String, digest: Option<String> },
}

impl EnvSpec {
    /// A secret read from the controller's environment, its digest not yet known.
    pub fn from_env(var: impl Into<String>) -> Self {
        EnvSpec::FromEnv { var: var.into(), digest: None }
    }

    /// A secret read from a file on the controller, its digest not yet known.
    pub fn from_file(path: impl Into<String>) -> Self {
        EnvSpec::FromFile { path: path.into(), digest: None }
    }

    /// Whether the value is a secret (resolved on the controller, never shown).
    pub fn is_secret(&self) -> bool {
        !matches!(self, EnvSpec::Value(_))
    }

    /// The keyed digest of a secret's value, when known.
    pub fn digest(&self) -> Option<&str> {
        match self {
            EnvSpec::Value(_) => None,
            EnvSpec::FromEnv { digest, .. } | EnvSpec::FromFile { digest, .. } => digest.as_deref(),
        }
    }

    /// The same source with its digest set (a literal value is left as it is).
    pub fn with_digest(&self, new: Option<String>) -> Self {
        match self {
            EnvSpec::Value(v) => EnvSpec::Value(v.clone()),
            EnvSpec::FromEnv { var, .. } => EnvSpec::FromEnv { var: var.clone(), digest: new },
            EnvSpec::FromFile { path, .. } => EnvSpec::FromFile { path: path.clone(), digest: new },
        }
    }
}

/// [`EnvSpec`] as JSON: one object per kind, told apart by its reference key.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum EnvWire {
    Value(WireValue),
    FromEnv(WireFromEnv),
    FromFile(WireFromFile),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireValue {
    value: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFromEnv {
    from_env: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFromFile {
    from_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

impl From<EnvSpec> for EnvWire {
    fn from(e: EnvSpec) -> Self {
        match e {
            EnvSpec::Value(value) => EnvWire::Value(WireValue { value }),
            EnvSpec::FromEnv { var, digest } => EnvWire::FromEnv(WireFromEnv { from_env: var, digest }),
            EnvSpec::FromFile { path, digest } => EnvWire::FromFile(WireFromFile { from_file: path, digest }),
        }
    }
}

impl From<EnvWire> for EnvSpec {
    fn from(w: EnvWire) -> Self {
        match w {
            EnvWire::Value(v) => EnvSpec::Value(v.value),
            EnvWire::FromEnv(v) => EnvSpec::FromEnv { var: v.from_env, digest: v.digest },
            EnvWire::FromFile(v) => EnvSpec::FromFile { path: v.from_file, digest: v.digest },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    pub vfolder: String,
    pub destination: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub gpus: u32,
    /// The devices placed for the session ([`crate::gpu`]): UUIDs where the node's inventory is known,
    /// indices where only its declared `gpus` is. Empty without GPUs (and left out of the JSON then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// The MIG profile the devices are instances of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<String>,
}

/// How an image is obtained, as far as its identity on the node goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Pull,
    Build,
    Archive,
}

/// An image's identity on a node. The controller-side path of a build context is not part of it (two
/// checkouts of one lab must agree); its content hash joins the identity with the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    #[serde(rename = "ref")]
    pub reference: String,
    pub source: SourceKind,
    pub digest: Option<String>,
}

/// `want` placed on the devices the container of `seen` holds, when they are what `want` asks for (as
/// many, of its MIG profile): what a watcher, which does not place, expects a running GPU session to be.
/// `None` when `want` has no GPUs or `seen` holds other devices than it asks.
pub fn on_devices_of(want: &SessionSpec, seen: &SessionSpec) -> Option<SessionSpec> {
    let fits = want.resources.gpus > 0
        && seen.resources.devices.len() == want.resources.gpus as usize
        && seen.resources.mig == want.resources.mig;
    fits.then(|| {
        let mut placed = want.clone();
        placed.resources.devices = seen.resources.devices.clone();
        placed
    })
}

/// Lowercase hex SHA-256 of a value's canonical JSON.
pub fn hash_of<T: Serialize>(value: &T) -> String {
    let mut hasher = Sha256::new();
    // Serializing plain data into a hasher cannot fail: no maps with non-string keys, no I/O errors.
    let _ = serde_json::to_writer(HashWriter(&mut hasher), value);
    hex_digest(&hasher.finalize())
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lowercase hex of a digest.
pub fn hex_digest(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn image_spec(image: &Image) -> ImageSpec {
    ImageSpec {
        reference: image.reference.value.clone(),
        source: match image.source {
            ImageSource::Pull => SourceKind::Pull,
            ImageSource::Build { .. } => SourceKind::Build,
            ImageSource::Archive { .. } => SourceKind::Archive,
        },
        digest: image.digest.as_ref().map(|d| d.value.clone()),
    }
}

/// The canonical spec of a session of a valid cluster (`image` must resolve).
pub fn session_spec(session: &Session, image: Option<&Image>) -> SessionSpec {
    let mut mounts: Vec<MountSpec> = session
        .mounts
        .iter()
        .map(|m| {
            // A mount without a valid destination is an error of the lab, which no valid cluster has; the
            // spec of an invalid one (plans of labs with errors are never applied) records what was written.
            let destination = match m.destination() {
                Destination::Ok(path) => path,
                _ => m.alias.as_ref().map_or(m.vfolder.value.as_str(), |a| a.value.as_str()).to_string(),
            };
            MountSpec { vfolder: m.vfolder.value.to_string(), destination, readonly: m.is_readonly() }
        })
        .collect();
    mounts.sort();
    SessionSpec {
        image: session.image.value.to_string(),
        image_ref: image.map(|i| i.reference.value.clone()).unwrap_or_default(),
        image_digest: image.and_then(|i| i.digest.as_ref()).map(|d| d.value.clone()),
        node: session.node.value.to_string(),
        command: session.command.iter().map(|c| c.value.clone()).collect(),
        env: session
            .env
            .iter()
            .map(|e| {
                let value = match &e.value {
                    EnvValue::Literal(v) => EnvSpec::Value(v.clone()),
                    EnvValue::FromEnv(v) => EnvSpec::from_env(v.clone()),
                    EnvValue::FromFile(p) => EnvSpec::from_file(p.clone()),
                };
                (e.name.value.clone(), value)
            })
            .collect(),
        mounts,
        resources: ResourceSpec {
            cpus: session.resources.cpus.as_ref().map(|c| c.value),
            memory: session.resources.memory.as_ref().map(|m| m.value),
            gpus: session.gpus(),
            devices: Vec::new(),
            mig: session.resources.mig.as_ref().map(|m| m.value.clone()),
        },
        ports: session.ports.iter().map(|p| (p.name.value.clone(), p.port.value)).collect(),
        restart: session.restart.as_ref().map_or(Restart::No, |r| r.value),
        shm_size: session.shm_size(),
        ulimits: session
            .ulimits
            .iter()
            .map(|u| (u.name.value.clone(), UlimitSpec { soft: u.soft, hard: u.hard }))
            .collect(),
        user: session
            .user
            .as_ref()
            .map(|u| UserSpec { uid: u.uid.value, gid: u.gid.as_ref().map_or(u.uid.value, |g| g.value) }),
        network: session.network.as_ref().map(|n| n.value).filter(|n| *n != Network::Bridge),
        published: session
            .ports
            .iter()
            .filter_map(|p| Some((p.name.value.clone(), p.publish.as_ref()?.value.clone())))
            .collect(),
    }
}

/// Specs of every session of a cluster, for callers that only need hashes (`bai status`, the agent).
pub fn session_specs(cluster: &Cluster) -> Vec<(String, SessionSpec)> {
    let images: BTreeMap<&str, &Image> = cluster.images.iter().map(|i| (i.name.value.as_str(), i)).collect();
    cluster
        .sessions
        .iter()
        .map(|s| (s.name.value.to_string(), session_spec(s, images.get(s.image.value.as_str()).copied())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SessionSpec {
        SessionSpec {
            image: "pytorch".into(),
            image_ref: "cr.backend.ai/stable/python-pytorch:2.3".into(),
            image_digest: None,
            node: "gpu-01".into(),
            command: vec!["python".into(), "train.py".into()],
            env: BTreeMap::from([("A".into(), EnvSpec::Value("1".into()))]),
            mounts: vec![],
            resources: ResourceSpec { cpus: Some(8.0), memory: None, gpus: 2, devices: vec![], mig: None },
            ports: BTreeMap::new(),
            restart: Restart::No,
            shm_size: None,
            ulimits: BTreeMap::new(),
            user: None,
            network: None,
            published: BTreeMap::new(),
        }
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        // Pinned: a change here means every deployed container would be replaced on upgrade.
        let h = hash_of(&spec());
        assert_eq!(h.len(), 64);
        assert_eq!(h, hash_of(&spec()));
        let mut other = spec();
        other.resources.gpus = 1;
        assert_ne!(h, hash_of(&other));
    }

    #[test]
    fn secrets_keep_their_old_shape_until_a_digest_is_known() {
        let mut s = spec();
        s.env.insert("T".into(), EnvSpec::from_env("TOKEN"));
        s.env.insert("F".into(), EnvSpec::from_file("/run/f"));
        let json = serde_json::to_string(&s.env).unwrap_or_default();
        assert_eq!(json, r#"{"A":{"value":"1"},"F":{"from_file":"/run/f"},"T":{"from_env":"TOKEN"}}"#);
        let before = hash_of(&s);
        s.env.insert("T".into(), EnvSpec::FromEnv { var: "TOKEN".into(), digest: Some("ab".into()) });
        let json = serde_json::to_string(&s.env).unwrap_or_default();
        assert!(json.contains(r#""T":{"from_env":"TOKEN","digest":"ab"}"#), "{json}");
        assert_ne!(hash_of(&s), before);
        let back: SessionSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap_or_default()).expect("reads");
        assert_eq!(back, s);
        assert!(serde_json::from_str::<EnvSpec>(r#"{"value":"1","from_env":"X"}"#).is_err());
    }

    #[test]
    fn canonical_json_shape() {
        let json = serde_json::to_string(&spec()).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"image":"pytorch","image_ref":"cr.backend.ai/stable/python-pytorch:2.3","image_digest":null,"node":"gpu-01","command":["python","train.py"],"env":{"A":{"value":"1"}},"mounts":[],"resources":{"cpus":8.0,"memory":null,"gpus":2},"ports":{},"restart":"no"}"#
        );
    }
}
