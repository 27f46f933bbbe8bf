//! What the watcher tells people: transitions, drift, heals and reloads. Each event renders as one line
//! of text (`node gpu-01 down after 3 missed pings (last: timeout 2s)`) or one JSON object.

use serde::Serialize;

use crate::watch::drift::DriftKind;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    NodeUp {
        cluster: String,
        node: String,
        rtt_ms: f64,
        load1: Option<f64>,
        gpus: usize,
    },
    NodeDown {
        cluster: String,
        node: String,
        misses: u32,
        last: String,
    },
    /// The agent connection broke or could not be made; another attempt follows after `retry_in_ms`.
    ConnectionLost {
        cluster: String,
        node: String,
        error: String,
        retry_in_ms: u64,
    },
    Connected {
        cluster: String,
        node: String,
    },
    /// The session's container changed state (or was first seen not running).
    Container {
        cluster: String,
        node: String,
        session: String,
        state: String,
        exit_code: Option<i64>,
    },
    Healthy {
        cluster: String,
        node: String,
        session: String,
        detail: String,
    },
    Unhealthy {
        cluster: String,
        node: String,
        session: String,
        failures: u32,
        last: String,
    },
    Drift {
        cluster: String,
        node: String,
        session: String,
        kind: DriftKind,
        reason: String,
    },
    DriftResolved {
        cluster: String,
        node: String,
        session: String,
    },
    /// `outcome`: `healed`, `failed`, `held_back` (the heal limit) or `refused` (not bai's to heal).
    Heal {
        cluster: String,
        node: String,
        session: String,
        outcome: String,
        detail: String,
    },
    ProbeFailed {
        cluster: String,
        node: String,
        error: String,
    },
    /// A heal of the node has been running a while, and drift found since waits for it (said once per
    /// heal): a heal holds the node's lease, and its calls end at their deadlines.
    HealRunning {
        cluster: String,
        node: String,
        running_s: u64,
        waiting: Vec<String>,
    },
    /// Another controller recorded a generation on the node that is not the watched file (an apply of
    /// another version, a destroy, a rollback): the node is held to it, not healed back to the file.
    Superseded {
        cluster: String,
        node: String,
        generation: u64,
        destroyed: bool,
        applied_by: String,
        applied_at: String,
    },
    Reloaded {
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
    ConfigRejected {
        diagnostics: String,
    },
}

fn ms(v: f64) -> String {
    if v < 10.0 { format!("{v:.2} ms") } else { format!("{v:.0} ms") }
}

impl Event {
    /// One line for people (the rejected-config event carries the diagnostics after it).
    pub fn line(&self) -> String {
        match self {
            Event::NodeUp { node, rtt_ms, load1, gpus, .. } => {
                let load = load1.map_or_else(String::new, |l| format!(", load {l:.2}"));
                let plural = if *gpus == 1 { "" } else { "s" };
                format!("node {node} up (rtt {}{load}, {gpus} GPU{plural})", ms(*rtt_ms))
            }
            Event::NodeDown { node, misses, last, .. } => {
                let plural = if *misses == 1 { "" } else { "s" };
                format!("node {node} down after {misses} missed ping{plural} (last: {last})")
            }
            Event::ConnectionLost { node, error, retry_in_ms, .. } => {
                format!("node {node} connection lost: {error}; retrying in {:.1}s", *retry_in_ms as f64 / 1000.0)
            }
            Event::Connected { node, .. } => format!("node {node} connected"),
            Event::Container { node, session, state, exit_code, .. } => match exit_code {
                Some(code) => format!("session {session} on {node}: container {state} (exit code {code})"),
                None => format!("session {session} on {node}: container {state}"),
            },
            Event::Healthy { node, session, detail, .. } => format!("session {session} on {node} healthy ({detail})"),
            Event::Unhealthy { node, session, failures, last, .. } => {
                let plural = if *failures == 1 { "" } else { "s" };
                format!("session {session} on {node} unhealthy after {failures} failed check{plural} (last: {last})")
            }
            Event::Drift { node, session, reason, .. } => format!("drift: session {session} on {node}: {reason}"),
            Event::DriftResolved { node, session, .. } => {
                format!("session {session} on {node} matches the file again")
            }
            Event::Heal { node, session, outcome, detail, .. } => {
                let what = match outcome.as_str() {
                    "healed" => "healed",
                    "held_back" => "heal held back",
                    "refused" => "heal refused",
                    _ => "heal failed",
                };
                if session.is_empty() {
                    format!("{what}: node {node}: {detail}")
                } else {
                    format!("{what}: session {session} on {node}: {detail}")
                }
            }
            Event::ProbeFailed { node, error, .. } => format!("node {node}: probing sessions failed: {error}"),
            Event::HealRunning { node, running_s, waiting, .. } => format!(
                "node {node}: a heal is still running after {running_s}s; {} wait for it (its calls end at their deadlines)",
                waiting.join(", ")
            ),
            Event::Superseded { node, generation, destroyed: true, applied_by, applied_at, .. } => format!(
                "node {node}: the cluster was destroyed there (generation {generation}, by {applied_by} at \
                 {applied_at}); the watcher holds the node to that until the next `bai apply`"
            ),
            Event::Superseded { node, generation, applied_by, applied_at, .. } => format!(
                "node {node}: generation {generation} (by {applied_by} at {applied_at}) is not the watched file; \
                 the watcher holds the node to it and heals nothing back until the file changes"
            ),
            Event::Reloaded { added, removed, changed } => {
                let mut parts = Vec::new();
                for (word, list) in [("added", added), ("removed", removed), ("changed", changed)] {
                    if !list.is_empty() {
                        parts.push(format!("{word} {}", list.join(", ")));
                    }
                }
                if parts.is_empty() {
                    "reloaded the lab: no node added or removed".to_string()
                } else {
                    format!("reloaded the lab: {}", parts.join("; "))
                }
            }
            Event::ConfigRejected { diagnostics } => {
                format!("the changed lab has errors; still watching the previous one\n{}", diagnostics.trim_end())
            }
        }
    }

    /// One JSON object, stamped with the time in milliseconds since the Unix epoch.
    pub fn json(&self, unix_ms: u128) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("ts_unix_ms".into(), serde_json::Value::from(unix_ms as u64));
        }
        value.to_string()
    }

    /// Whether the event says something went wrong (for `--once` and for colour).
    pub fn is_bad(&self) -> bool {
        matches!(
            self,
            Event::NodeDown { .. }
                | Event::ConnectionLost { .. }
                | Event::Unhealthy { .. }
                | Event::Drift { .. }
                | Event::ProbeFailed { .. }
                | Event::ConfigRejected { .. }
        ) || matches!(self, Event::Heal { outcome, .. } if outcome != "healed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_the_issue_writes_them() {
        let down =
            Event::NodeDown { cluster: "lab".into(), node: "gpu-01".into(), misses: 3, last: "timeout 2s".into() };
        assert_eq!(down.line(), "node gpu-01 down after 3 missed pings (last: timeout 2s)");
        let up =
            Event::NodeUp { cluster: "lab".into(), node: "gpu-01".into(), rtt_ms: 0.412, load1: Some(0.5), gpus: 1 };
        assert_eq!(up.line(), "node gpu-01 up (rtt 0.41 ms, load 0.50, 1 GPU)");
        let sick = Event::Unhealthy {
            cluster: "lab".into(),
            node: "n".into(),
            session: "web".into(),
            failures: 1,
            last: "HTTP 404".into(),
        };
        assert_eq!(sick.line(), "session web on n unhealthy after 1 failed check (last: HTTP 404)");
        let json = down.json(1234);
        let back: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(back["event"], "node_down");
        assert_eq!(back["ts_unix_ms"], 1234);
        assert_eq!(back["last"], "timeout 2s");
        assert!(down.is_bad() && !up.is_bad());
    }
}
