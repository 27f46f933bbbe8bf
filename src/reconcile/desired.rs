//! The desired state a run converges to: what the lab (or a generation record) wants, with every secret
//! value read once on the controller and digested under the key of its session's node, then the
//! digests that could not be known (a value not readable here, a node without a key yet) settled
//! against what the nodes report, so that they read as unchanged rather than as a replace.

use std::path::Path;

use crate::fleet::secrets::{SecretValues, Unresolved, keyed};
use crate::reconcile::Observation;
use crate::secret::settle_unknown;
use crate::state::ClusterState;

/// Whether a node without a secret key gets one made now (this needs the apply lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMaking {
    /// Apply, rollback, heal: the run holds the lease and will write containers holding the values.
    Make,
    /// Plan, status: read-only; a node without a key leaves its digests unknown.
    ReadOnly,
}

/// What a run converges to.
#[derive(Debug)]
pub struct Desired {
    pub state: ClusterState,
    /// The secret values read for `state`'s digests: the ones the containers get.
    pub secrets: SecretValues,
    /// What could not be read or keyed, for the caller to refuse or to warn about.
    pub unresolved: Unresolved,
}

/// `wanted` with its secrets read once, digested under the keys of the nodes of `observation` (files
/// resolved under `lab_root`), and its unknown digests settled against `observed`.
pub async fn desired(
    lab_root: &Path,
    wanted: ClusterState,
    observation: &mut Observation,
    observed: &ClusterState,
    keys: KeyMaking,
) -> Desired {
    let (mut state, secrets, unresolved) =
        keyed(lab_root, wanted, &mut observation.conns, keys == KeyMaking::Make).await;
    settle_unknown(&mut state, observed);
    Desired { state, secrets, unresolved }
}
