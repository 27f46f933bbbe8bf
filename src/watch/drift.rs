//! Drift: where a node's sessions no longer match the file. A managed container missing, stopped or
//! running another spec can be healed by re-applying it; a container that holds a managed name without
//! bai's labels, or a managed session the file no longer has, is reported and left alone.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::protocol::container_name;
use crate::state::snapshot::{ContainerState, SessionSnapshot, Unowned, UnownedKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    Missing,
    Stopped,
    Changed,
    NameTaken,
    NotInFile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub kind: DriftKind,
    pub reason: String,
}

impl Drift {
    /// Whether `--heal` may re-apply it: only what bai owns and the file still wants.
    pub fn healable(&self) -> bool {
        matches!(self.kind, DriftKind::Missing | DriftKind::Stopped | DriftKind::Changed)
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Drift per session of one node: `desired` maps the sessions the file puts on the node to their spec
/// hash; `sessions` and `unowned` are what the node reported.
pub fn drift(
    cluster: &str,
    desired: &BTreeMap<String, String>,
    sessions: &[SessionSnapshot],
    unowned: &[Unowned],
) -> BTreeMap<String, Drift> {
    let observed: BTreeMap<&str, &SessionSnapshot> = sessions.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out = BTreeMap::new();
    for (name, hash) in desired {
        let container = container_name(cluster, name);
        let found = match observed.get(name.as_str()) {
            None if unowned.iter().any(|u| u.kind == UnownedKind::Container && u.name == container) => Some(Drift {
                kind: DriftKind::NameTaken,
                reason: format!("container `{container}` is not bai's: it lacks bai's labels; rename or remove it"),
            }),
            None => Some(Drift { kind: DriftKind::Missing, reason: format!("container `{container}` is missing") }),
            Some(s) if s.spec_hash != *hash => Some(Drift {
                kind: DriftKind::Changed,
                reason: format!("container runs spec {} but the file asks for {}", short(&s.spec_hash), short(hash)),
            }),
            Some(s) => match s.state {
                // Docker is already bringing it back under its restart policy.
                ContainerState::Running | ContainerState::Restarting => None,
                ContainerState::Exited | ContainerState::Dead => Some(Drift {
                    kind: DriftKind::Stopped,
                    reason: match s.exit_code {
                        Some(code) => format!("container exited with code {code}"),
                        None => "container stopped".to_string(),
                    },
                }),
                ContainerState::Created => {
                    Some(Drift { kind: DriftKind::Stopped, reason: "container created but never started".into() })
                }
                ContainerState::Paused => Some(Drift { kind: DriftKind::Stopped, reason: "container paused".into() }),
            },
        };
        if let Some(d) = found {
            out.insert(name.clone(), d);
        }
    }
    for s in sessions.iter().filter(|s| !desired.contains_key(&s.name)) {
        out.insert(
            s.name.clone(),
            Drift {
                kind: DriftKind::NotInFile,
                reason: "a session bai manages here that the file no longer has; `bai apply` removes it".into(),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, hash: &str, state: ContainerState, exit_code: Option<i64>) -> SessionSnapshot {
        SessionSnapshot { name: name.into(), spec_hash: hash.into(), state, exit_code, spec: None }
    }

    #[test]
    fn finds_every_kind_of_drift_and_nothing_else() {
        let desired: BTreeMap<String, String> = [
            ("fine", "aaaa"),
            ("gone", "bbbb"),
            ("dead", "cccc"),
            ("edited", "dddddddddddddddd"),
            ("squatted", "eeee"),
            ("looping", "ffff"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let sessions = [
            snap("fine", "aaaa", ContainerState::Running, None),
            snap("dead", "cccc", ContainerState::Exited, Some(137)),
            snap("edited", "0123456789abcdef", ContainerState::Running, None),
            snap("looping", "ffff", ContainerState::Restarting, None),
            snap("old", "9999", ContainerState::Running, None),
        ];
        let unowned = [Unowned { kind: UnownedKind::Container, name: "bai.lab.squatted".into(), reason: None }];
        let found = drift("lab", &desired, &sessions, &unowned);
        let kinds: Vec<(&str, DriftKind)> = found.iter().map(|(k, d)| (k.as_str(), d.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("dead", DriftKind::Stopped),
                ("edited", DriftKind::Changed),
                ("gone", DriftKind::Missing),
                ("old", DriftKind::NotInFile),
                ("squatted", DriftKind::NameTaken),
            ]
        );
        assert_eq!(found["dead"].reason, "container exited with code 137");
        assert_eq!(found["edited"].reason, "container runs spec 0123456789ab but the file asks for dddddddddddd");
        assert_eq!(found["gone"].reason, "container `bai.lab.gone` is missing");
        assert!(found["dead"].healable() && found["gone"].healable() && found["edited"].healable());
        assert!(!found["squatted"].healable() && !found["old"].healable());
    }
}
