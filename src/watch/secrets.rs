//! The spec hashes a watched node's sessions should carry when some of them hold secrets: their digests
//! depend on the node's key, so they are computed by the node's task once per connection and file
//! version (not every round), with the values read from the controller's environment and files then.
//! A secret that cannot be read here, or a node that has no key yet, leaves its digest unknown, and
//! [`KeyedHashes::settle`] takes it as unchanged against what the node reports (see [`crate::secret`]).

use std::collections::BTreeMap;

use crate::fleet::NodeConn;
use crate::fleet::secrets::{node_key, read};
use crate::secret::{Digests, digest, fill, same_but_unknown};
use crate::state::snapshot::SessionSnapshot;
use crate::state::spec::{SessionSpec, hash_of};
use crate::watch::Watched;

/// Spec hashes of one node's sessions, secrets digested under the node's key where they could be.
#[derive(Debug, Clone, Default)]
pub struct KeyedHashes {
    pub hashes: BTreeMap<String, String>,
    /// The specs hashed, digests filled in where known, by session.
    pub specs: BTreeMap<String, SessionSpec>,
    /// Sessions with a digest left unknown, by name.
    unknown: BTreeMap<String, SessionSpec>,
}

impl KeyedHashes {
    /// Reads the secrets of the sessions `watched` puts on `node` and digests them under the node's key
    /// (read over `conn`, never made: watching changes no node).
    pub async fn fetch(watched: &Watched, node: &str, conn: &mut NodeConn) -> Self {
        let here = watched.on(node);
        let mut out = KeyedHashes { hashes: here.hashes.clone(), specs: BTreeMap::new(), unknown: BTreeMap::new() };
        let key = node_key(conn, watched.cluster.name.value.as_str(), false).await.ok().flatten();
        for (session, spec) in &here.secret {
            let mut digests = Digests::new();
            if let Some(key) = &key {
                for (name, source) in &spec.env {
                    if let Ok(Some(value)) = read(&watched.cluster.root, session, name, source) {
                        digests.insert((session.clone(), name.clone()), digest(key, value.expose().as_bytes()));
                    }
                }
            }
            let mut spec = spec.clone();
            fill(&mut spec, session, &digests);
            out.hashes.insert(session.clone(), hash_of(&spec));
            if crate::secret::has_unknown(&spec) {
                out.unknown.insert(session.clone(), spec.clone());
            }
            out.specs.insert(session.clone(), spec);
        }
        out
    }

    /// The unknown-digest rule against one probe's report: a session the same as its container's
    /// recorded spec apart from unknown digests is taken to carry the container's hash.
    pub fn settle(&mut self, observed: &[SessionSnapshot]) {
        for s in observed {
            let Some(seen) = s.spec.as_ref() else { continue };
            let want = self
                .unknown
                .get(&s.name)
                .map(|w| crate::state::spec::on_devices_of(w, seen).unwrap_or_else(|| w.clone()));
            if let Some(want) = want
                && same_but_unknown(&want, seen)
            {
                self.hashes.insert(s.name.clone(), s.spec_hash.clone());
            }
        }
    }
}
