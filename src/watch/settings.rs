//! Probe timing, resolved: the command line over the node's (or the health check's) settings over the
//! cluster's over the defaults. Health checks fall back to the cluster's `probe`, not the node's.

use std::time::Duration;

use crate::model::{Cluster, Health, Node, ProbeSettings};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

/// `bai watch --interval … --timeout … --failure-threshold … --success-threshold …`: they apply to every
/// node and every health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
}

fn resolve(o: &Overrides, first: &ProbeSettings, then: &ProbeSettings) -> Timing {
    fn pick<T: Copy>(
        o: Option<T>,
        a: &Option<crate::source::Spanned<T>>,
        b: &Option<crate::source::Spanned<T>>,
    ) -> Option<T> {
        o.or(a.as_ref().map(|s| s.value)).or(b.as_ref().map(|s| s.value))
    }
    Timing {
        interval: pick(o.interval, &first.interval, &then.interval).unwrap_or(DEFAULT_INTERVAL),
        timeout: pick(o.timeout, &first.timeout, &then.timeout).unwrap_or(DEFAULT_TIMEOUT),
        failure_threshold: pick(o.failure_threshold, &first.failure_threshold, &then.failure_threshold)
            .unwrap_or(DEFAULT_FAILURE_THRESHOLD),
        success_threshold: pick(o.success_threshold, &first.success_threshold, &then.success_threshold)
            .unwrap_or(DEFAULT_SUCCESS_THRESHOLD),
    }
}

pub fn node_timing(cluster: &Cluster, node: &Node, o: &Overrides) -> Timing {
    resolve(o, &node.probe, &cluster.probe)
}

pub fn health_timing(cluster: &Cluster, health: &Health, o: &Overrides) -> Timing {
    resolve(o, &health.probe, &cluster.probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::load;

    #[test]
    fn flags_over_node_over_cluster_over_defaults() {
        let text = r#"cluster "lab" {
    probe interval="10s" failure-threshold=5
    node "a" local=#true { probe timeout="1s" }
    node "b" local=#true
    image "i" ref="x:1"
    session "s" image="i" node="a" { health "true" interval="30s" }
}"#;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lab.kdl");
        std::fs::write(&path, text).expect("write");
        let loaded = load(&path);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let c = &loaded.config.clusters[0];
        let none = Overrides::default();
        let a = node_timing(c, &c.nodes[0], &none);
        assert_eq!(
            (a.interval, a.timeout, a.failure_threshold, a.success_threshold),
            (Duration::from_secs(10), Duration::from_secs(1), 5, 1)
        );
        assert_eq!(node_timing(c, &c.nodes[1], &none).timeout, DEFAULT_TIMEOUT);
        let health = c.sessions[0].health.as_ref().expect("health");
        let h = health_timing(c, health, &none);
        assert_eq!((h.interval, h.timeout, h.failure_threshold), (Duration::from_secs(30), DEFAULT_TIMEOUT, 5));
        let flags = Overrides { interval: Some(Duration::from_millis(200)), ..Overrides::default() };
        assert_eq!(health_timing(c, health, &flags).interval, Duration::from_millis(200));
        assert_eq!(node_timing(c, &c.nodes[0], &flags).interval, Duration::from_millis(200));
    }
}
