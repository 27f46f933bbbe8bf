//! `/metrics` text checked by Prometheus's own parser and linter: `promtool check metrics` (Debian's
//! `prometheus` package) must accept the exposition of a realistic fleet without a single warning, and a
//! small reader here parses it back to check that values and awkward label values survive the trip.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use bai::watch::metrics::render_metrics;
use bai::watch::status::{
    ClusterStatus, FleetStatus, GpuStatus, HealthStatus, Liveness, NodeStatus, SessionStatus, Verdict,
};

/// A node name that needs every escape the format has, plus non-ASCII that needs none.
const AWKWARD: &str = "rack \"7\" \\ gpu\nnode-ü";

fn session(container: &str, health: Option<Verdict>, drift: Option<&str>, heals: u64) -> SessionStatus {
    SessionStatus {
        container: container.into(),
        exit_code: (container == "exited").then_some(137),
        health: health.map(|verdict| HealthStatus { verdict, detail: Some("HTTP 200".into()) }),
        drift: drift.map(Into::into),
        heals_total: heals,
        devices: Vec::new(),
        ports: Vec::new(),
    }
}

fn fleet() -> FleetStatus {
    let mut status = FleetStatus {
        version: "0.1.0".into(),
        started_unix: 1_700_000_000,
        config_error: Some("lab.kdl:3: unknown node \"x\"".into()),
        ..FleetStatus::default()
    };

    let mut gpu1 = NodeStatus {
        state: Liveness::Up,
        address: "10.0.0.1:22".into(),
        last_rtt_ms: Some(0.8),
        pings_total: 120,
        ping_failures_total: 1,
        heals_total: 2,
        gpus: Some(4),
        gpu_utilization: Some(12.5),
        gpu_devices: vec![
            GpuStatus {
                index: 0,
                uuid: "GPU-0".into(),
                name: "NVIDIA H100 80GB HBM3".into(),
                memory_total: 85_520_809_984,
                memory_used: Some(1 << 30),
                utilization: Some(50),
                session: Some("train \"big\"".into()),
            },
            GpuStatus { index: 1, uuid: "GPU-1".into(), memory_total: 85_520_809_984, ..GpuStatus::default() },
        ],
        ..NodeStatus::default()
    };
    for i in 0..119u32 {
        gpu1.rtt.observe(0.0003 + f64::from(i % 7) * 0.0004);
    }
    gpu1.sessions.insert("jupyter".into(), session("running", Some(Verdict::Healthy), None, 0));
    gpu1.sessions.insert("trainer".into(), session("exited", Some(Verdict::Unhealthy), Some("container exited"), 2));
    gpu1.sessions.insert("warming".into(), session("running", Some(Verdict::Unknown), None, 0));

    let mut awkward = NodeStatus { state: Liveness::Up, pings_total: 5, ..NodeStatus::default() };
    for rtt in [0.004, 0.02, 0.3, 1.7, 4.0] {
        awkward.rtt.observe(rtt);
    }
    awkward.sessions.insert("db".into(), session("running", None, Some("image differs"), 1));

    let down = NodeStatus {
        state: Liveness::Down,
        last_error: Some("connection refused".into()),
        pings_total: 40,
        ping_failures_total: 40,
        probe_errors_total: 12,
        ..NodeStatus::default()
    };
    let mut lab = ClusterStatus::default();
    lab.nodes.insert("gpu1".into(), gpu1);
    lab.nodes.insert(AWKWARD.into(), awkward);
    lab.nodes.insert("gpu3".into(), down);

    let mut unknown = NodeStatus::default();
    unknown.sessions.insert("web".into(), session("unknown", Some(Verdict::Unknown), None, 0));
    let mut dc2 = ClusterStatus::default();
    dc2.nodes.insert("edge".into(), unknown);
    status.clusters.insert("lab".into(), lab);
    status.clusters.insert("dc-2".into(), dc2);
    status
}

/// Asserts that `promtool check metrics` accepts `text` and prints nothing: no parse error, no lint warning.
/// Shared with the watch tests, which check a live `/metrics` scrape the same way.
pub fn promtool_check(text: &str) {
    let (ok, printed) = run_promtool(text);
    assert!(ok, "promtool rejected the exposition:\n{printed}\n--- exposition ---\n{text}");
    assert_eq!(printed.trim(), "", "promtool printed warnings:\n{printed}\n--- exposition ---\n{text}");
}

/// Runs `promtool check metrics` on `text`: whether it succeeded, and everything it printed.
fn run_promtool(text: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run `promtool` ({e}): this test needs Prometheus's own parser; install Debian's \
             `prometheus` package (`apt-get install -y prometheus`), which ships /usr/bin/promtool"
        ),
    };
    let mut stdin = child.stdin.take().expect("promtool's stdin is piped");
    let input = text.to_owned();
    // Written from another thread so that a promtool answering before it has read everything cannot
    // deadlock against a full pipe.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("promtool ran");
    writer.join().expect("writer thread").expect("promtool read the exposition");
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

#[test]
fn promtool_accepts_the_exposition_without_lint_warnings() {
    promtool_check(&render_metrics(&fleet()));
}

#[test]
fn promtool_is_a_real_check() {
    // Guards the test above against a promtool that accepts anything: a counter without `_total` is a
    // lint warning and an unescaped quote a parse error.
    let (ok, printed) = run_promtool("# HELP x_count A count.\n# TYPE x_count counter\nx_count 1\n");
    assert!(!ok && printed.contains("_total"), "promtool did not flag a badly named counter:\n{printed}");
    let (ok, _) = run_promtool("# HELP x A gauge.\n# TYPE x gauge\nx{node=\"a\"b\"} 1\n");
    assert!(!ok, "promtool accepted an unescaped quote in a label value");
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A small reader for what `render_metrics` writes: `# HELP`/`# TYPE` lines and samples with quoted,
/// escaped label values. Also checks that each sample belongs to the family declared before it.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "{name} declared twice");
            family = name.to_string();
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (name, labels, value) = match line.split_once('{') {
            Some((name, rest)) => {
                let (labels, value) = read_labels(rest);
                (name, labels, value)
            }
            None => {
                let (name, value) = line.split_once(' ').expect("name value");
                (name, BTreeMap::new(), value)
            }
        };
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|b| *b == family);
        assert!(name == family || base.is_some(), "sample {name} outside its family {family}");
        let value = match value.trim() {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("bad value {v:?} in {line:?}: {e}")),
        };
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    (samples, types)
}

/// Label pairs up to the closing `}`, unescaped; returns them and the rest of the line (the value).
fn read_labels(mut rest: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (name, after) = rest.split_once("=\"").expect("label=\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("escaped char").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("invalid escape \\{c}"),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_string(), value);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(samples, name, labels).as_slice() {
        [one] => one.value,
        found => panic!("expected one {name} {labels:?}, found {found:?}"),
    }
}

#[test]
fn values_read_back_from_the_text() {
    let status = fleet();
    let text = render_metrics(&status);
    let (samples, types) = parse(&text);

    assert_eq!(types["bai_ping_rtt_seconds"], "histogram");
    assert_eq!(types["bai_heals_total"], "counter");
    assert_eq!(types["bai_node_up"], "gauge");
    assert_eq!(value(&samples, "bai_watch_up", &[]), 1.0);
    assert_eq!(value(&samples, "bai_watch_info", &[("version", "0.1.0")]), 1.0);
    assert_eq!(value(&samples, "bai_config_error", &[]), 1.0);

    // The awkward name comes back exactly, escapes undone.
    let lab_awkward = [("cluster", "lab"), ("node", AWKWARD)];
    assert_eq!(value(&samples, "bai_node_up", &lab_awkward), 1.0);
    assert_eq!(value(&samples, "bai_pings_total", &lab_awkward), 5.0);
    assert_eq!(value(&samples, "bai_session_drifted", &[("node", AWKWARD), ("session", "db")]), 1.0);
    assert!(find(&samples, "bai_session_healthy", &[("node", AWKWARD)]).is_empty(), "db has no health check");

    // Up, down and unknown: bai_node_up has a verdict only; bai_node_state is one-hot for every node.
    assert_eq!(value(&samples, "bai_node_up", &[("node", "gpu3")]), 0.0);
    assert!(find(&samples, "bai_node_up", &[("node", "edge")]).is_empty());
    for (cluster, c) in &status.clusters {
        for node in c.nodes.keys() {
            let states = find(&samples, "bai_node_state", &[("cluster", cluster), ("node", node)]);
            assert_eq!(states.len(), 3, "{node}");
            assert_eq!(states.iter().map(|s| s.value).sum::<f64>(), 1.0, "{node}");
        }
    }
    assert_eq!(value(&samples, "bai_node_state", &[("node", "edge"), ("state", "unknown")]), 1.0);

    // Sessions: a verdict only where there is one; drift counted per cluster.
    assert_eq!(value(&samples, "bai_session_healthy", &[("session", "jupyter")]), 1.0);
    assert_eq!(value(&samples, "bai_session_healthy", &[("session", "trainer")]), 0.0);
    assert!(find(&samples, "bai_session_healthy", &[("session", "warming")]).is_empty());
    assert_eq!(value(&samples, "bai_session_running", &[("session", "trainer")]), 0.0);
    assert_eq!(value(&samples, "bai_session_heals_total", &[("session", "trainer")]), 2.0);
    assert_eq!(value(&samples, "bai_drifted_sessions", &[("cluster", "lab")]), 2.0);
    assert_eq!(value(&samples, "bai_drifted_sessions", &[("cluster", "dc-2")]), 0.0);
    assert_eq!(value(&samples, "bai_ping_failures_total", &[("node", "gpu3")]), 40.0);
    assert_eq!(value(&samples, "bai_probe_errors_total", &[("node", "gpu3")]), 12.0);

    // The histogram matches what was observed, bucket by bucket, and is cumulative.
    let gpu1 = &status.clusters["lab"].nodes["gpu1"].rtt;
    let buckets = find(&samples, "bai_ping_rtt_seconds_bucket", &[("cluster", "lab"), ("node", "gpu1")]);
    assert_eq!(buckets.len(), gpu1.counts.len() + 1);
    for (sample, want) in buckets.iter().zip(gpu1.counts.iter().chain([&gpu1.count])) {
        assert_eq!(sample.value, *want as f64, "le={}", sample.labels["le"]);
    }
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value), "buckets are not cumulative");
    assert_eq!(buckets.last().map(|s| s.labels["le"].as_str()), Some("+Inf"));
    assert_eq!(value(&samples, "bai_ping_rtt_seconds_count", &[("node", "gpu1")]), 119.0);
    let sum = value(&samples, "bai_ping_rtt_seconds_sum", &[("node", "gpu1")]);
    assert!((sum - gpu1.sum_s).abs() < 1e-12, "sum {sum} != {}", gpu1.sum_s);
    let awkward = find(&samples, "bai_ping_rtt_seconds_bucket", &[("node", AWKWARD), ("le", "2.5")]);
    assert_eq!(awkward.iter().map(|s| s.value).collect::<Vec<_>>(), [4.0]);
}
