//! `GET /metrics`: the watcher's [`FleetStatus`] snapshot in the Prometheus text exposition format 0.0.4,
//! so that an existing Prometheus can scrape the fleet the watcher probes.
//!
//! The exposition is written by hand rather than through the `prometheus-client` crate, because that crate
//! does not fit a snapshot exporter for Prometheus's own format:
//! - it only speaks OpenMetrics text (`# EOF` trailer, a `.` appended to every HELP, `le="1.0"` rather
//!   than the Go client's `le="1"`), not format 0.0.4 that `--listen` advertises;
//! - it writes label values and HELP text verbatim, unescaped (prometheus/client_rust#151, still open),
//!   and node, cluster and session names come straight from the lab file;
//! - its histogram encoder wants per-bucket counts and an `f64::MAX` sentinel for `+Inf`, while
//!   [`RttHistogram`] already keeps Prometheus's cumulative counts.
//!
//! The format itself is a few lines of text per sample; what needs care (escaping, float spelling,
//! deterministic order) is kept in the small helpers below and pinned by the tests.

use std::fmt::Display;

use super::status::{FleetStatus, Liveness, NodeStatus, RTT_BUCKETS, RttHistogram, Verdict};

/// Renders the whole exposition. Families come in a fixed order and samples within a family sorted by
/// cluster, node and session (the status maps are sorted), so two scrapes of the same state are
/// byte-identical. A family with no samples (no sessions with a health verdict, say) is left out entirely,
/// HELP and TYPE included, as the Go client leaves out empty families.
pub fn render_metrics(status: &FleetStatus) -> String {
    let mut out = String::new();
    let nodes = || {
        status
            .clusters
            .iter()
            .flat_map(|(cluster, c)| c.nodes.iter().map(move |(node, n)| (cluster.as_str(), node.as_str(), n)))
    };
    let sessions = || {
        nodes().flat_map(|(cluster, node, n)| {
            n.sessions
                .iter()
                .map(move |(session, s)| ([("cluster", cluster), ("node", node), ("session", session.as_str())], s))
        })
    };

    let mut f = Family::new("bai_watch_up", Kind::Gauge, "Whether the bai watcher is running (always 1 when scraped).");
    f.sample("", &[], 1);
    f.write_to(&mut out);

    let mut f = Family::new("bai_watch_info", Kind::Gauge, "The bai watcher's version, as a label; always 1.");
    f.sample("", &[("version", status.version.as_str())], 1);
    f.write_to(&mut out);

    let mut f = Family::new(
        "bai_config_error",
        Kind::Gauge,
        "1 while the last reload of the lab file was refused (the previous lab is still watched), else 0.",
    );
    f.sample("", &[], u8::from(status.config_error.is_some()));
    f.write_to(&mut out);

    // Unknown nodes are left out rather than reported as 0, so that `bai_node_up == 0` alerts only fire on
    // a real verdict; bai_node_state shows them.
    let mut f = Family::new(
        "bai_node_up",
        Kind::Gauge,
        "1 if the node answers its pings, 0 if it is down; unknown nodes are absent.",
    );
    for (cluster, node, n) in nodes() {
        let value = match n.state {
            Liveness::Up => 1,
            Liveness::Down => 0,
            Liveness::Unknown => continue,
        };
        f.sample("", &[("cluster", cluster), ("node", node)], value);
    }
    f.write_to(&mut out);

    let mut f =
        Family::new("bai_node_state", Kind::Gauge, "The node's verdict under the threshold model, one-hot over state.");
    for (cluster, node, n) in nodes() {
        // Sorted by the state label, as the Go client sorts samples within a family.
        for (label, state) in [("down", Liveness::Down), ("unknown", Liveness::Unknown), ("up", Liveness::Up)] {
            f.sample("", &[("cluster", cluster), ("node", node), ("state", label)], u8::from(n.state == state));
        }
    }
    f.write_to(&mut out);

    let mut f =
        Family::new("bai_ping_rtt_seconds", Kind::Histogram, "Round-trip time of answered pings to the node's agent.");
    for (cluster, node, n) in nodes() {
        histogram(&mut f, &[("cluster", cluster), ("node", node)], &n.rtt);
    }
    f.write_to(&mut out);

    let mut f = Family::new("bai_node_gpus", Kind::Gauge, "GPUs the node's agent reports (NVML), from the last ping.");
    for (cluster, node, n) in nodes() {
        if let Some(gpus) = n.gpus {
            f.sample("", &[("cluster", cluster), ("node", node)], gpus);
        }
    }
    f.write_to(&mut out);

    let mut f = Family::new(
        "bai_node_gpu_utilization_ratio",
        Kind::Gauge,
        "Mean utilisation of the node's GPUs (0 to 1), from the last ping, where NVML reports it.",
    );
    for (cluster, node, n) in nodes() {
        if let Some(percent) = n.gpu_utilization {
            f.sample("", &[("cluster", cluster), ("node", node)], go_float(percent / 100.0));
        }
    }
    f.write_to(&mut out);

    // Per GPU: its index and UUID, and the session holding it ("" when free), so that a dashboard can
    // show who uses what.
    type Figure = fn(&crate::watch::status::GpuStatus) -> Option<f64>;
    let gpu_families: [(&str, &str, Figure); 3] = [
        (
            "bai_gpu_utilization_ratio",
            "Utilisation of one GPU (0 to 1), from the last ping, where NVML reports it.",
            |g| g.utilization.map(|u| f64::from(u) / 100.0),
        ),
        ("bai_gpu_memory_used_bytes", "GPU memory in use, from the last ping.", |g| g.memory_used.map(|m| m as f64)),
        ("bai_gpu_memory_total_bytes", "GPU memory in all, from the last ping.", |g| Some(g.memory_total as f64)),
    ];
    for (name, help, get) in gpu_families {
        let mut f = Family::new(name, Kind::Gauge, help);
        for (cluster, node, n) in nodes() {
            for g in &n.gpu_devices {
                let Some(value) = get(g) else { continue };
                let index = g.index.to_string();
                let labels = [
                    ("cluster", cluster),
                    ("node", node),
                    ("gpu", index.as_str()),
                    ("uuid", g.uuid.as_str()),
                    ("session", g.session.as_deref().unwrap_or("")),
                ];
                f.sample("", &labels, go_float(value));
            }
        }
        f.write_to(&mut out);
    }

    let mut node_counter = |name, help, get: fn(&NodeStatus) -> u64| {
        let mut f = Family::new(name, Kind::Counter, help);
        for (cluster, node, n) in nodes() {
            f.sample("", &[("cluster", cluster), ("node", node)], get(n));
        }
        f.write_to(&mut out);
    };
    node_counter("bai_pings_total", "Pings sent to the node's agent.", |n| n.pings_total);
    node_counter("bai_ping_failures_total", "Pings that got no answer in time.", |n| n.ping_failures_total);
    node_counter("bai_probe_errors_total", "Failed connection attempts and failed session probes (not pings).", |n| {
        n.probe_errors_total
    });
    node_counter("bai_heals_total", "Sessions re-applied on the node because they had drifted.", |n| n.heals_total);

    let mut f = Family::new("bai_session_running", Kind::Gauge, "1 if the session's container is running, else 0.");
    for (labels, s) in sessions() {
        f.sample("", &labels, u8::from(s.container == "running"));
    }
    f.write_to(&mut out);

    // Only a verdict is exported: a session without a health check, or whose check has not settled, has no
    // sample rather than a 0 that would read as unhealthy.
    let mut f =
        Family::new("bai_session_healthy", Kind::Gauge, "1 if the session's health check passes, 0 if it fails.");
    for (labels, s) in sessions() {
        match s.health.as_ref().map(|h| h.verdict) {
            Some(Verdict::Healthy) => f.sample("", &labels, 1),
            Some(Verdict::Unhealthy) => f.sample("", &labels, 0),
            Some(Verdict::Unknown) | None => {}
        }
    }
    f.write_to(&mut out);

    let mut f = Family::new(
        "bai_session_drifted",
        Kind::Gauge,
        "1 if the session differs from what the lab file declares, else 0.",
    );
    for (labels, s) in sessions() {
        f.sample("", &labels, u8::from(s.drift.is_some()));
    }
    f.write_to(&mut out);

    let mut f = Family::new(
        "bai_session_heals_total",
        Kind::Counter,
        "Times the session was re-applied because it had drifted.",
    );
    for (labels, s) in sessions() {
        f.sample("", &labels, s.heals_total);
    }
    f.write_to(&mut out);

    let mut f =
        Family::new("bai_drifted_sessions", Kind::Gauge, "Sessions in the cluster that differ from the lab file.");
    for (cluster, c) in &status.clusters {
        let drifted = c.nodes.values().flat_map(|n| n.sessions.values()).filter(|s| s.drift.is_some()).count();
        f.sample("", &[("cluster", cluster.as_str())], drifted);
    }
    f.write_to(&mut out);

    out
}

/// Classic histogram samples from stored cumulative counts: `_bucket` per bound with `le` last, the
/// `+Inf` bucket equal to the count, then `_sum` and `_count`, in the Go client's order.
fn histogram(f: &mut Family, labels: &[(&str, &str)], h: &RttHistogram) {
    let bucket = |f: &mut Family, le: &str, count: u64| {
        let mut with_le = labels.to_vec();
        with_le.push(("le", le));
        f.sample("_bucket", &with_le, count);
    };
    // `counts` is a public Vec: a shorter one (a status built by hand) loses its missing buckets rather
    // than inventing counts for them.
    for (bound, count) in RTT_BUCKETS.iter().zip(&h.counts) {
        bucket(f, &go_float(*bound), *count);
    }
    bucket(f, "+Inf", h.count);
    f.sample("_sum", labels, go_float(h.sum_s));
    f.sample("_count", labels, h.count);
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its header and the samples gathered so far, written out only if it has any.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: String,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Family { name, kind, help, samples: String::new() }
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl Display) {
        self.samples.push_str(self.name);
        self.samples.push_str(suffix);
        if !labels.is_empty() {
            self.samples.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.samples.push(',');
                }
                self.samples.push_str(name);
                self.samples.push_str("=\"");
                escape_into(&mut self.samples, value, true);
                self.samples.push('"');
            }
            self.samples.push('}');
        }
        self.samples.push(' ');
        self.samples.push_str(&value.to_string());
        self.samples.push('\n');
    }

    fn write_to(self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        out.push_str("# HELP ");
        out.push_str(self.name);
        out.push(' ');
        escape_into(out, self.help, false);
        out.push_str("\n# TYPE ");
        out.push_str(self.name);
        out.push_str(match self.kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
            Kind::Histogram => " histogram\n",
        });
        out.push_str(&self.samples);
    }
}

/// The format's escapes: `\\` and `\n` everywhere, `\"` in label values only (HELP text keeps its quotes).
fn escape_into(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A float spelled as the Go client spells it (`strconv.FormatFloat(f, 'g', -1, 64)` behind expfmt's
/// `writeFloat`): shortest round-trip digits, plain decimal for exponents -4..=5, otherwise `d.ddde±XX`
/// with at least two exponent digits; `+Inf`, `-Inf`, `NaN`. Matching it keeps `le` labels identical to
/// what other exporters emit for the same bounds, which matters when histograms are aggregated by `le`.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` and `{}` both print the shortest digits that round-trip, as Go's `-1` precision does.
    let sci = format!("{v:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else { return v.to_string() };
    let Ok(exp) = exp.parse::<i32>() else { return v.to_string() };
    if (-4..6).contains(&exp) {
        v.to_string()
    } else {
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::status::{ClusterStatus, HealthStatus, SessionStatus};

    fn small_status() -> FleetStatus {
        let mut status = FleetStatus { version: "0.1.0".into(), started_unix: 1_700_000_000, ..FleetStatus::default() };
        let mut gpu1 = NodeStatus {
            state: Liveness::Up,
            address: "10.0.0.1:22".into(),
            pings_total: 3,
            heals_total: 1,
            ..NodeStatus::default()
        };
        gpu1.rtt.observe(0.0004);
        gpu1.rtt.observe(0.003);
        gpu1.rtt.observe(0.3);
        gpu1.sessions.insert(
            "jupyter".into(),
            SessionStatus {
                container: "running".into(),
                health: Some(HealthStatus { verdict: Verdict::Healthy, detail: Some("HTTP 200".into()) }),
                drift: Some("image differs".into()),
                heals_total: 1,
                ..SessionStatus::default()
            },
        );
        let gpu2 = NodeStatus {
            state: Liveness::Down,
            pings_total: 2,
            ping_failures_total: 2,
            probe_errors_total: 4,
            ..NodeStatus::default()
        };
        let mut lab = ClusterStatus::default();
        lab.nodes.insert("gpu1".into(), gpu1);
        lab.nodes.insert("gpu2".into(), gpu2);
        status.clusters.insert("lab".into(), lab);
        status
    }

    #[test]
    fn small_status_renders_exactly() {
        let expected = r#"# HELP bai_watch_up Whether the bai watcher is running (always 1 when scraped).
# TYPE bai_watch_up gauge
bai_watch_up 1
# HELP bai_watch_info The bai watcher's version, as a label; always 1.
# TYPE bai_watch_info gauge
bai_watch_info{version="0.1.0"} 1
# HELP bai_config_error 1 while the last reload of the lab file was refused (the previous lab is still watched), else 0.
# TYPE bai_config_error gauge
bai_config_error 0
# HELP bai_node_up 1 if the node answers its pings, 0 if it is down; unknown nodes are absent.
# TYPE bai_node_up gauge
bai_node_up{cluster="lab",node="gpu1"} 1
bai_node_up{cluster="lab",node="gpu2"} 0
# HELP bai_node_state The node's verdict under the threshold model, one-hot over state.
# TYPE bai_node_state gauge
bai_node_state{cluster="lab",node="gpu1",state="down"} 0
bai_node_state{cluster="lab",node="gpu1",state="unknown"} 0
bai_node_state{cluster="lab",node="gpu1",state="up"} 1
bai_node_state{cluster="lab",node="gpu2",state="down"} 1
bai_node_state{cluster="lab",node="gpu2",state="unknown"} 0
bai_node_state{cluster="lab",node="gpu2",state="up"} 0
# HELP bai_ping_rtt_seconds Round-trip time of answered pings to the node's agent.
# TYPE bai_ping_rtt_seconds histogram
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.0005"} 1
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.001"} 1
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.0025"} 1
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.005"} 2
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.01"} 2
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.025"} 2
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.05"} 2
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.1"} 2
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.25"} 2
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="0.5"} 3
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="1"} 3
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="2.5"} 3
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu1",le="+Inf"} 3
bai_ping_rtt_seconds_sum{cluster="lab",node="gpu1"} 0.3034
bai_ping_rtt_seconds_count{cluster="lab",node="gpu1"} 3
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.0005"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.001"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.0025"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.005"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.01"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.025"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.05"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.1"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.25"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="0.5"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="1"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="2.5"} 0
bai_ping_rtt_seconds_bucket{cluster="lab",node="gpu2",le="+Inf"} 0
bai_ping_rtt_seconds_sum{cluster="lab",node="gpu2"} 0
bai_ping_rtt_seconds_count{cluster="lab",node="gpu2"} 0
# HELP bai_pings_total Pings sent to the node's agent.
# TYPE bai_pings_total counter
bai_pings_total{cluster="lab",node="gpu1"} 3
bai_pings_total{cluster="lab",node="gpu2"} 2
# HELP bai_ping_failures_total Pings that got no answer in time.
# TYPE bai_ping_failures_total counter
bai_ping_failures_total{cluster="lab",node="gpu1"} 0
bai_ping_failures_total{cluster="lab",node="gpu2"} 2
# HELP bai_probe_errors_total Failed connection attempts and failed session probes (not pings).
# TYPE bai_probe_errors_total counter
bai_probe_errors_total{cluster="lab",node="gpu1"} 0
bai_probe_errors_total{cluster="lab",node="gpu2"} 4
# HELP bai_heals_total Sessions re-applied on the node because they had drifted.
# TYPE bai_heals_total counter
bai_heals_total{cluster="lab",node="gpu1"} 1
bai_heals_total{cluster="lab",node="gpu2"} 0
# HELP bai_session_running 1 if the session's container is running, else 0.
# TYPE bai_session_running gauge
bai_session_running{cluster="lab",node="gpu1",session="jupyter"} 1
# HELP bai_session_healthy 1 if the session's health check passes, 0 if it fails.
# TYPE bai_session_healthy gauge
bai_session_healthy{cluster="lab",node="gpu1",session="jupyter"} 1
# HELP bai_session_drifted 1 if the session differs from what the lab file declares, else 0.
# TYPE bai_session_drifted gauge
bai_session_drifted{cluster="lab",node="gpu1",session="jupyter"} 1
# HELP bai_session_heals_total Times the session was re-applied because it had drifted.
# TYPE bai_session_heals_total counter
bai_session_heals_total{cluster="lab",node="gpu1",session="jupyter"} 1
# HELP bai_drifted_sessions Sessions in the cluster that differ from the lab file.
# TYPE bai_drifted_sessions gauge
bai_drifted_sessions{cluster="lab"} 1
"#;
        let got = render_metrics(&small_status());
        // Line by line first, so a mismatch names the line rather than dumping two 80-line strings.
        for (i, (g, e)) in got.lines().zip(expected.lines()).enumerate() {
            assert_eq!(g, e, "line {}", i + 1);
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn awkward_label_values_are_escaped() {
        let mut status = small_status();
        let lab = status.clusters.remove("lab").unwrap_or_default();
        status.clusters.insert("a\\b \"c\"\nd".into(), lab);
        status.version = "1.0 \"dev\"".into();
        let text = render_metrics(&status);
        assert!(text.contains("bai_watch_info{version=\"1.0 \\\"dev\\\"\"} 1\n"), "{text}");
        assert!(text.contains("bai_drifted_sessions{cluster=\"a\\\\b \\\"c\\\"\\nd\"} 1\n"), "{text}");
        assert!(text.contains("bai_node_up{cluster=\"a\\\\b \\\"c\\\"\\nd\",node=\"gpu1\"} 1\n"), "{text}");
        // Every line is a comment or a whole sample: a raw newline would have split one.
        for line in text.lines() {
            assert!(line.starts_with("# ") || line.starts_with("bai_"), "broken line {line:?}");
        }
    }

    #[test]
    fn help_text_escapes_backslash_and_newline_but_not_quotes() {
        let mut out = String::new();
        escape_into(&mut out, "a \"q\" \\ b\nc", false);
        assert_eq!(out, "a \"q\" \\\\ b\\nc");
    }

    #[test]
    fn bucket_counts_are_cumulative_and_end_at_the_count() {
        let mut node = NodeStatus::default();
        for rtt in [0.0001, 0.0007, 0.0007, 0.02, 0.6, 3.0, 10.0] {
            node.rtt.observe(rtt);
        }
        let mut status = FleetStatus::default();
        status.clusters.entry("c".into()).or_default().nodes.insert("n".into(), node);
        let text = render_metrics(&status);
        let buckets: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("bai_ping_rtt_seconds_bucket{cluster=\"c\",node=\"n\",le=\""))
            .filter_map(|l| {
                let (le, value) = l.split_once("\"} ")?;
                Some((le.to_string(), value.parse().ok()?))
            })
            .collect();
        let expected = [
            ("0.0005", 1),
            ("0.001", 3),
            ("0.0025", 3),
            ("0.005", 3),
            ("0.01", 3),
            ("0.025", 4),
            ("0.05", 4),
            ("0.1", 4),
            ("0.25", 4),
            ("0.5", 4),
            ("1", 5),
            ("2.5", 5),
            ("+Inf", 7),
        ];
        let expected: Vec<(String, u64)> = expected.iter().map(|(le, n)| (le.to_string(), *n)).collect();
        assert_eq!(buckets, expected);
        assert!(text.contains("bai_ping_rtt_seconds_count{cluster=\"c\",node=\"n\"} 7\n"));
        let sum = text.lines().find_map(|l| l.strip_prefix("bai_ping_rtt_seconds_sum{cluster=\"c\",node=\"n\"} "));
        let sum: f64 = sum.and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        assert!((sum - 13.6215).abs() < 1e-9, "{text}");
    }

    #[test]
    fn unknown_nodes_are_absent_from_node_up_but_present_in_node_state() {
        let mut status = FleetStatus::default();
        status.clusters.entry("c".into()).or_default().nodes.insert("n".into(), NodeStatus::default());
        let text = render_metrics(&status);
        assert!(!text.contains("bai_node_up"), "{text}");
        assert!(text.contains("bai_node_state{cluster=\"c\",node=\"n\",state=\"unknown\"} 1\n"));
        assert!(text.contains("bai_node_state{cluster=\"c\",node=\"n\",state=\"up\"} 0\n"));
    }

    #[test]
    fn health_is_exported_only_for_a_settled_verdict() {
        let mut node = NodeStatus { state: Liveness::Up, ..NodeStatus::default() };
        let health = |verdict| Some(HealthStatus { verdict, detail: None });
        node.sessions.insert("none".into(), SessionStatus { container: "exited".into(), ..SessionStatus::default() });
        node.sessions
            .insert("pending".into(), SessionStatus { health: health(Verdict::Unknown), ..SessionStatus::default() });
        node.sessions
            .insert("sick".into(), SessionStatus { health: health(Verdict::Unhealthy), ..SessionStatus::default() });
        let mut status = FleetStatus { config_error: Some("bad".into()), ..FleetStatus::default() };
        status.clusters.entry("c".into()).or_default().nodes.insert("n".into(), node);
        let text = render_metrics(&status);
        let healthy: Vec<&str> = text.lines().filter(|l| l.starts_with("bai_session_healthy{")).collect();
        assert_eq!(healthy, ["bai_session_healthy{cluster=\"c\",node=\"n\",session=\"sick\"} 0"]);
        assert!(text.contains("bai_session_running{cluster=\"c\",node=\"n\",session=\"none\"} 0\n"));
        assert!(text.contains("\nbai_config_error 1\n"));
        assert!(text.contains("bai_drifted_sessions{cluster=\"c\"} 0\n"));
    }

    #[test]
    fn an_empty_fleet_leaves_out_empty_families() {
        let text = render_metrics(&FleetStatus::default());
        let types: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        assert_eq!(types, ["bai_watch_up gauge", "bai_watch_info gauge", "bai_config_error gauge"]);
    }

    #[test]
    fn floats_are_spelled_like_the_go_client() {
        let cases = [
            (0.0005, "0.0005"),
            (0.00001, "1e-05"),
            (1.0, "1"),
            (2.5, "2.5"),
            (0.0, "0"),
            (-0.0, "0"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (1.5e-300, "1.5e-300"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(v), want, "{v:?}");
        }
        for bound in RTT_BUCKETS {
            assert_eq!(go_float(bound).parse::<f64>().ok(), Some(bound));
        }
    }

    #[test]
    fn the_ping_gpu_summary_is_exported_where_known() {
        let mut status = FleetStatus::default();
        let nodes = &mut status.clusters.entry("lab".into()).or_default().nodes;
        nodes.insert(
            "gpu1".into(),
            NodeStatus { state: Liveness::Up, gpus: Some(8), gpu_utilization: Some(37.5), ..NodeStatus::default() },
        );
        nodes.insert("cpu1".into(), NodeStatus { state: Liveness::Up, gpus: Some(0), ..NodeStatus::default() });
        nodes.insert("gone".into(), NodeStatus::default());
        let text = render_metrics(&status);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("bai_node_gpu")).collect();
        assert_eq!(
            lines,
            [
                "bai_node_gpus{cluster=\"lab\",node=\"cpu1\"} 0",
                "bai_node_gpus{cluster=\"lab\",node=\"gpu1\"} 8",
                "bai_node_gpu_utilization_ratio{cluster=\"lab\",node=\"gpu1\"} 0.375",
            ]
        );
    }
}
