//! The watcher's picture of the fleet: per cluster, node and session, what the probe last saw. It is
//! what `GET /status` serves, what `/metrics` is rendered from and what the live table shows. Plain data,
//! sorted maps throughout so that every rendering is deterministic.

use std::collections::BTreeMap;

use serde::Serialize;

/// Upper bounds (seconds) of the ping round-trip histogram's buckets; `+Inf` is implied.
pub const RTT_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetStatus {
    /// bai's version, as `/ping` reports it.
    pub version: String,
    /// When the watcher started (seconds since the Unix epoch).
    pub started_unix: u64,
    /// Why the last reload of the lab file was refused; the previous lab keeps running meanwhile.
    pub config_error: Option<String>,
    pub clusters: BTreeMap<String, ClusterStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterStatus {
    pub nodes: BTreeMap<String, NodeStatus>,
}

/// A node's verdict under the threshold model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Not enough answers or misses yet to say.
    #[default]
    Unknown,
    Up,
    Down,
}

/// A session health check's verdict under the threshold model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeStatus {
    pub state: Liveness,
    /// `host:port` for SSH nodes, `local` for local ones.
    pub address: String,
    /// Round trip of the last answered ping, in milliseconds.
    pub last_rtt_ms: Option<f64>,
    /// Why the last ping or connection failed, while it is failing.
    pub last_error: Option<String>,
    /// From the last answered ping: the agent's host uptime, 1-minute load and GPU count.
    pub uptime_s: Option<u64>,
    pub load1: Option<f64>,
    pub gpus: Option<usize>,
    /// Mean GPU utilisation in percent, where NVML reports it.
    pub gpu_utilization: Option<f64>,
    /// Each GPU from the last answered ping, with the session holding it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpu_devices: Vec<GpuStatus>,
    pub pings_total: u64,
    pub ping_failures_total: u64,
    /// Failed connection attempts and failed session probes (not pings).
    pub probe_errors_total: u64,
    pub heals_total: u64,
    pub rtt: RttHistogram,
    pub sessions: BTreeMap<String, SessionStatus>,
}

/// Cumulative counts per bucket of [`RTT_BUCKETS`], plus sum and count, as Prometheus keeps them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RttHistogram {
    /// `counts[i]` = pings with RTT ≤ `RTT_BUCKETS[i]` (cumulative).
    pub counts: Vec<u64>,
    pub sum_s: f64,
    pub count: u64,
}

impl Default for RttHistogram {
    fn default() -> Self {
        RttHistogram { counts: vec![0; RTT_BUCKETS.len()], sum_s: 0.0, count: 0 }
    }
}

impl RttHistogram {
    pub fn observe(&mut self, seconds: f64) {
        for (count, bound) in self.counts.iter_mut().zip(RTT_BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        self.sum_s += seconds;
        self.count += 1;
    }
}

/// One GPU of a node as the watcher last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuStatus {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total: u64,
    pub memory_used: Option<u64>,
    /// Percent, where NVML reports it.
    pub utilization: Option<u32>,
    /// The session of this cluster whose container holds the GPU, from the last probe.
    pub session: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionStatus {
    /// `running`, `exited`, `restarting`, `created`, `paused`, `dead` or `missing`; `unknown` before the
    /// first probe or while its node is unreachable.
    pub container: String,
    pub exit_code: Option<i64>,
    /// `None` when the session declares no `health` check.
    pub health: Option<HealthStatus>,
    /// Why the session has drifted from the file, when it has.
    pub drift: Option<String>,
    /// The GPU devices its container holds (UUIDs, or indices), from its recorded spec.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// The ports its container publishes on the node, from its recorded spec.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
    pub heals_total: u64,
}

/// A session's port published on its node (`port jupyter=8888 publish=18888`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublishedPort {
    /// The port's name in the lab.
    pub name: String,
    /// The port inside the container.
    pub port: u16,
    /// The node's address it listens on; `0.0.0.0` or `::` for every address.
    pub host_address: String,
    pub host_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HealthStatus {
    pub verdict: Verdict,
    /// What the last check saw (`HTTP 200`, `exit 1`, `connection refused`).
    pub detail: Option<String>,
}

impl FleetStatus {
    /// Whether everything watched is up, healthy, running and as the file says.
    pub fn all_good(&self) -> bool {
        self.clusters.values().flat_map(|c| c.nodes.values()).all(|n| {
            n.state == Liveness::Up
                && n.sessions.values().all(|s| {
                    s.container == "running"
                        && s.drift.is_none()
                        && s.health.as_ref().is_none_or(|h| h.verdict == Verdict::Healthy)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_are_cumulative() {
        let mut h = RttHistogram::default();
        h.observe(0.0004);
        h.observe(0.003);
        h.observe(9.0);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[2], 1);
        assert_eq!(h.counts[3], 2);
        assert_eq!(h.counts[RTT_BUCKETS.len() - 1], 2);
        assert_eq!(h.count, 3);
        assert!((h.sum_s - 9.0034).abs() < 1e-9);
    }

    #[test]
    fn all_good_needs_every_node_up_and_every_session_running_and_healthy() {
        let mut fleet = FleetStatus::default();
        let mut node = NodeStatus { state: Liveness::Up, ..NodeStatus::default() };
        node.sessions.insert(
            "job".into(),
            SessionStatus {
                container: "running".into(),
                health: Some(HealthStatus { verdict: Verdict::Healthy, detail: None }),
                ..SessionStatus::default()
            },
        );
        fleet.clusters.entry("lab".into()).or_default().nodes.insert("n1".into(), node.clone());
        assert!(fleet.all_good());
        let mut sick = node.clone();
        if let Some(s) = sick.sessions.get_mut("job") {
            s.health = Some(HealthStatus { verdict: Verdict::Unhealthy, detail: Some("HTTP 404".into()) });
        }
        fleet.clusters.entry("lab".into()).or_default().nodes.insert("n2".into(), sick);
        assert!(!fleet.all_good());
        let mut down = node;
        down.state = Liveness::Down;
        fleet.clusters.entry("lab".into()).or_default().nodes.insert("n2".into(), down);
        assert!(!fleet.all_good());
    }
}
