//! Secrets at the controller's edge: reading `from-env` and `from-file` values, and digesting them under
//! each node's key so that the pure core can compare desired with observed state ([`crate::secret`]).
//!
//! A run reads each value once ([`resolve`], [`SecretValues`]): the digests that go into the spec-hash
//! label and the values the executor sends for the container's environment (in
//! `CreateSession::secrets`) are the same read, so the two can never disagree. Errors name the session, the
//! variable and the environment variable or file; never a value. [`Value`] hides itself from `Debug`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::future::join_all;

use crate::fleet::NodeConn;
use crate::protocol::{Method, SecretKey, SecretKeyReply};
use crate::secret::{Digests, digest};
use crate::state::ClusterState;
use crate::state::spec::EnvSpec;

/// A secret's value. Its `Debug` shows `(sensitive)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Value(String);

impl Value {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::secret::SENSITIVE)
    }
}

/// Why a secret could not be read on the controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum SecretError {
    #[error("session `{session}`: env `{name}` reads `{var}` from the controller's environment, which is not set")]
    #[diagnostic(code(bai::secret::unset), help("set `{var}` in the environment that runs bai"))]
    Unset { session: String, name: String, var: String },
    #[error("session `{session}`: env `{name}` reads `{var}` from the controller's environment, which is not UTF-8")]
    #[diagnostic(code(bai::secret::not_unicode))]
    NotUnicode { session: String, name: String, var: String },
    #[error("session `{session}`: env `{name}` reads file `{path}`: {reason}")]
    #[diagnostic(code(bai::secret::file))]
    File { session: String, name: String, path: String, reason: String },
    /// Runc refuses a value holding a NUL and echoes the whole variable, escaped, in its error: such a
    /// value is refused here, before anything changes.
    #[error("session `{session}`: env `{name}` reads {source_desc}, whose value holds a NUL character")]
    #[diagnostic(
        code(bai::secret::nul),
        help("no environment value can hold a NUL (`\\0`): remove it from the secret")
    )]
    Nul { session: String, name: String, source_desc: String },
}

/// Where a `from-file` secret is read: its spec path (see [`crate::model::EnvValue::FromFile`]) under
/// `lab_root`, the lab file's directory; an absolute one as it is; `~/…` under the controller user's home.
pub fn secret_path(lab_root: &Path, spec_path: &str) -> PathBuf {
    match (spec_path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => lab_root.join(spec_path),
    }
}

/// Reads one secret; a `from-file` path is taken under `lab_root` ([`secret_path`]). A file's one trailing
/// newline is not part of the value (`echo token > file`). A value holding a NUL is refused
/// ([`SecretError::Nul`]): no environment can hold it.
pub fn read(lab_root: &Path, session: &str, name: &str, source: &EnvSpec) -> Result<Option<Value>, SecretError> {
    let value = read_raw(lab_root, session, name, source)?;
    if value.as_ref().is_some_and(|v| v.0.contains('\0')) {
        let source_desc = match source {
            EnvSpec::FromFile { path, .. } => format!("file `{}`", secret_path(lab_root, path).display()),
            EnvSpec::FromEnv { var, .. } => format!("`{var}` from the controller's environment"),
            EnvSpec::Value(_) => "a literal".to_string(),
        };
        return Err(SecretError::Nul { session: session.to_string(), name: name.to_string(), source_desc });
    }
    Ok(value)
}

fn read_raw(lab_root: &Path, session: &str, name: &str, source: &EnvSpec) -> Result<Option<Value>, SecretError> {
    let who = || (session.to_string(), name.to_string());
    match source {
        EnvSpec::Value(_) => Ok(None),
        EnvSpec::FromEnv { var, .. } => match std::env::var(var) {
            Ok(v) => Ok(Some(Value(v))),
            Err(std::env::VarError::NotPresent) => {
                let (session, name) = who();
                Err(SecretError::Unset { session, name, var: var.clone() })
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                let (session, name) = who();
                Err(SecretError::NotUnicode { session, name, var: var.clone() })
            }
        },
        EnvSpec::FromFile { path, .. } => {
            let path = secret_path(lab_root, path);
            match std::fs::read_to_string(&path) {
                Ok(v) => Ok(Some(Value(v.strip_suffix('\n').map(str::to_string).unwrap_or(v)))),
                Err(e) => {
                    let (session, name) = who();
                    // The I/O error's text names the failure (not found, permission denied), never content.
                    let path = path.display().to_string();
                    Err(SecretError::File { session, name, path, reason: e.to_string() })
                }
            }
        }
    }
}

/// Every secret value of a run, read once on the controller: by (session, variable), the value or why it
/// could not be read. `Debug` never shows a value ([`Value`] hides itself).
#[derive(Debug, Clone, Default)]
pub struct SecretValues(BTreeMap<(String, String), Result<Value, SecretError>>);

impl SecretValues {
    /// The values of one session's secrets by variable name, for its container's environment; the first
    /// that could not be read is the error.
    pub fn of_session(&self, session: &str) -> Result<BTreeMap<String, String>, SecretError> {
        let mut out = BTreeMap::new();
        for ((s, name), value) in self.0.range((session.to_string(), String::new())..) {
            if s != session {
                break;
            }
            out.insert(name.clone(), value.clone()?.0);
        }
        Ok(out)
    }

    /// The secrets that could not be read.
    pub fn errors(&self) -> Vec<SecretError> {
        self.0.values().filter_map(|v| v.as_ref().err().cloned()).collect()
    }

    fn values(&self) -> impl Iterator<Item = (&(String, String), &Value)> {
        self.0.iter().filter_map(|(k, v)| v.as_ref().ok().map(|v| (k, v)))
    }
}

/// Reads every secret of the sessions of `desired`. Callers decide what an unreadable one means: `apply`
/// stops, `status` and `watch` leave its digest unknown, a heal fails that session's creation.
pub fn resolve(lab_root: &Path, desired: &ClusterState) -> SecretValues {
    let mut values = BTreeMap::new();
    for (session, s) in &desired.sessions {
        for (name, source) in s.spec.iter().flat_map(|spec| &spec.env) {
            let key = (session.to_string(), name.clone());
            match read(lab_root, session.as_str(), name, source) {
                Ok(Some(v)) => {
                    values.insert(key, Ok(v));
                }
                Ok(None) => {}
                Err(e) => {
                    values.insert(key, Err(e));
                }
            }
        }
    }
    SecretValues(values)
}

/// The node's key for the cluster, decoded; `Ok(None)` when the node has none and `create` is off.
/// With `create` the connection must hold the apply lease.
pub async fn node_key(conn: &mut NodeConn, cluster: &str, create: bool) -> Result<Option<Vec<u8>>, String> {
    let node = conn.node.clone();
    let reply: SecretKeyReply = conn
        .client
        .call(Method::SecretKey(SecretKey { cluster: cluster.to_string(), create }))
        .await
        .map_err(|e| format!("node `{node}`: cannot get its secret key: {e}"))?;
    match reply.key {
        None => Ok(None),
        Some(hex) => decode_hex(&hex).map(Some).ok_or_else(|| format!("node `{node}`: its secret key is not hex")),
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

/// The digests of `values` for the sessions `desired` puts on `node`, under that node's `key`.
pub fn digests_on(desired: &ClusterState, node: &str, key: &[u8], values: &SecretValues) -> Digests {
    values
        .values()
        .filter(|((session, _), _)| desired.sessions.get(session.as_str()).is_some_and(|s| s.node.as_str() == node))
        .map(|(k, v)| (k.clone(), digest(key, v.0.as_bytes())))
        .collect()
}

fn has_secrets_on(desired: &ClusterState, node: &str) -> bool {
    desired
        .sessions
        .values()
        .any(|s| s.node.as_str() == node && s.spec.as_ref().is_some_and(|sp| sp.env.values().any(EnvSpec::is_secret)))
}

/// What [`keyed`] could not do: secrets not read and nodes whose key could not be had, each a message
/// that names no value.
#[derive(Debug, Default)]
pub struct Unresolved {
    pub secrets: Vec<SecretError>,
    pub nodes: Vec<String>,
}

impl Unresolved {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.nodes.is_empty()
    }

    pub fn messages(&self) -> Vec<String> {
        self.secrets.iter().map(ToString::to_string).chain(self.nodes.iter().cloned()).collect()
    }

    /// Each as a failure with its code, at `severity` (an apply refuses, a plan reads on as unchanged).
    pub fn failures(&self, severity: crate::diagnostic::Severity) -> Vec<crate::failure::Failure> {
        let secrets = self.secrets.iter().map(|e| crate::failure::Failure::of(e));
        let nodes = self.nodes.iter().map(|m| crate::failure::Failure::error("bai::secret::node_key", m.clone()));
        secrets.chain(nodes).map(|f| crate::failure::Failure { severity, ..f }).collect()
    }
}

/// `desired` with the digest of every secret it can resolve (files under `lab_root`), each under the key
/// of the node of its session, fetched over `conns` (made with `create`, which needs the apply lease).
/// Only nodes that host a session with a secret are asked. What cannot be resolved keeps an unknown
/// digest and is returned, with the values read (for the containers: see [`SecretValues`]).
pub async fn keyed(
    lab_root: &Path,
    desired: ClusterState,
    conns: &mut BTreeMap<String, NodeConn>,
    create: bool,
) -> (ClusterState, SecretValues, Unresolved) {
    let values = resolve(lab_root, &desired);
    let secrets = values.errors();
    let cluster = desired.name.to_string();
    let asks = conns.iter_mut().filter(|(node, _)| has_secrets_on(&desired, node)).map(|(node, conn)| {
        let cluster = cluster.clone();
        async move { (node.clone(), node_key(conn, &cluster, create).await) }
    });
    let mut digests = Digests::new();
    let mut nodes = Vec::new();
    for (node, key) in join_all(asks).await {
        match key {
            Ok(Some(key)) => digests.extend(digests_on(&desired, &node, &key, &values)),
            Ok(None) => {}
            Err(e) => nodes.push(e),
        }
    }
    (desired.with_digests(&digests), values, Unresolved { secrets, nodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_source_never_the_value_and_debug_hides_values() {
        let root = Path::new("/nowhere");
        let err = read(root, "job-a", "TOKEN", &EnvSpec::from_env("BAI_TEST_SURELY_UNSET_VAR")).expect_err("unset");
        assert_eq!(
            err.to_string(),
            "session `job-a`: env `TOKEN` reads `BAI_TEST_SURELY_UNSET_VAR` from the controller's environment, which is not set"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-value\n").expect("write");
        let v =
            read(root, "job-a", "T", &EnvSpec::from_file(file.display().to_string())).expect("read").expect("secret");
        assert_eq!(v.expose(), "s3cret-value");
        std::fs::write(&file, "s3cret\0value\n").expect("write");
        let err =
            read(root, "job-a", "T", &EnvSpec::from_file(file.display().to_string())).expect_err("a NUL is refused");
        assert!(matches!(err, SecretError::Nul { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("env `T` reads file") && message.contains("NUL"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        assert_eq!(format!("{v:?}"), "(sensitive)");
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0g"), None);
    }

    #[test]
    fn a_sessions_values_are_its_own_and_an_unreadable_one_is_its_error() {
        let v = |s: &str| Ok(Value(s.to_string()));
        let unset = SecretError::Unset { session: "b".into(), name: "Y".into(), var: "V".into() };
        let values = SecretValues(BTreeMap::from([
            (("a".to_string(), "X".to_string()), v("1")),
            (("a".to_string(), "Y".to_string()), v("2")),
            (("a-b".to_string(), "X".to_string()), v("3")),
            (("ab".to_string(), "X".to_string()), v("4")),
            (("b".to_string(), "X".to_string()), v("5")),
            (("b".to_string(), "Y".to_string()), Err(unset.clone())),
        ]));
        let a = values.of_session("a").expect("a's values");
        assert_eq!(a, BTreeMap::from([("X".to_string(), "1".to_string()), ("Y".to_string(), "2".to_string())]));
        assert_eq!(values.of_session("ab").expect("ab").len(), 1);
        assert!(values.of_session("none").expect("no secrets").is_empty());
        assert_eq!(values.of_session("b").expect_err("b has one unreadable"), unset);
        assert_eq!(values.errors(), vec![unset]);
        assert!(!format!("{values:?}").contains('1'), "Debug shows no value: {values:?}");
    }
}
