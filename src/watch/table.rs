//! The live table `bai watch` keeps on a terminal (and prints once for `--once`): a row per node with
//! its state, last round trip, load and GPUs, and under it a row per GPU (use, memory, the session
//! holding it) and per session with its container, health and drift. Plain text, sorted, the same status always giving the same table.

use crate::config::value::format_size_approx;
use crate::watch::status::{FleetStatus, GpuStatus, Liveness, NodeStatus, SessionStatus, Verdict};

fn node_state(n: &NodeStatus) -> &'static str {
    match n.state {
        Liveness::Up => "up",
        Liveness::Down => "down",
        Liveness::Unknown => "unknown",
    }
}

/// `    gpu 0 (NVIDIA H100 80GB HBM3): 45%, 12.0GiB of 79.6GiB, train-resnet50`.
fn gpu_line(g: &GpuStatus) -> String {
    let mut parts = Vec::new();
    if let Some(u) = g.utilization {
        parts.push(format!("{u}%"));
    }
    match g.memory_used {
        Some(used) => parts.push(format!("{} of {}", format_size_approx(used), format_size_approx(g.memory_total))),
        None => parts.push(format_size_approx(g.memory_total)),
    }
    parts.push(g.session.clone().unwrap_or_else(|| "free".into()));
    format!("    gpu {} ({}): {}", g.index, g.name, parts.join(", "))
}

fn session_line(name: &str, s: &SessionStatus) -> String {
    let mut line = format!("    session {name}: {}", s.container);
    if let Some(code) = s.exit_code {
        line.push_str(&format!(" (exit code {code})"));
    }
    if let Some(h) = &s.health {
        let word = match h.verdict {
            Verdict::Healthy => "healthy",
            Verdict::Unhealthy => "unhealthy",
            Verdict::Unknown => "health unknown",
        };
        line.push_str(&format!(", {word}"));
        if let Some(d) = &h.detail {
            line.push_str(&format!(" ({d})"));
        }
    }
    if let Some(d) = &s.drift {
        line.push_str(&format!(", drift: {d}"));
    }
    line
}

/// The table; clusters get a heading line only when there are several. Node rows are aligned in
/// columns; each node's sessions follow it as indented lines.
pub fn render_table(status: &FleetStatus) -> String {
    let many = status.clusters.len() > 1;
    let header = ["NODE", "STATE", "RTT", "LOAD", "GPUS", "ADDRESS / LAST ERROR"].map(String::from);
    let mut rows: Vec<([String; 6], Vec<String>, Option<String>)> = vec![(header, Vec::new(), None)];
    for (cluster, c) in &status.clusters {
        let mut heading = many.then(|| format!("cluster {cluster}"));
        for (name, n) in &c.nodes {
            let cells = [
                name.clone(),
                node_state(n).to_string(),
                n.last_rtt_ms
                    .filter(|_| n.state != Liveness::Down)
                    .map_or_else(|| "-".into(), |ms| format!("{ms:.2} ms")),
                n.load1.map_or_else(|| "-".into(), |l| format!("{l:.2}")),
                match (n.gpus, n.gpu_utilization) {
                    (Some(g), Some(u)) => format!("{g} ({u:.0}%)"),
                    (Some(g), None) => g.to_string(),
                    (None, _) => "-".into(),
                },
                n.last_error.clone().unwrap_or_else(|| n.address.clone()),
            ];
            let mut sessions: Vec<String> = n.gpu_devices.iter().map(gpu_line).collect();
            sessions.extend(n.sessions.iter().map(|(name, s)| session_line(name, s)));
            rows.push((cells, sessions, heading.take()));
        }
    }
    let mut widths = [0usize; 6];
    for (row, _, _) in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (row, sessions, heading) in &rows {
        if let Some(heading) = heading {
            out.push_str(heading);
            out.push('\n');
        }
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        for s in sessions {
            out.push_str(s);
            out.push('\n');
        }
    }
    if let Some(error) = &status.config_error {
        let first = error.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        out.push_str(&format!("the changed lab has errors (still watching the previous one): {}\n", first.trim()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::status::HealthStatus;

    #[test]
    fn a_row_per_node_and_per_session_aligned() {
        let mut status = FleetStatus::default();
        let mut up = NodeStatus {
            state: Liveness::Up,
            address: "127.0.0.1:2222".into(),
            last_rtt_ms: Some(0.4123),
            load1: Some(0.5),
            gpus: Some(0),
            ..NodeStatus::default()
        };
        up.sessions.insert(
            "web".into(),
            SessionStatus {
                container: "running".into(),
                health: Some(HealthStatus { verdict: Verdict::Unhealthy, detail: Some("HTTP 404".into()) }),
                ..SessionStatus::default()
            },
        );
        up.sessions.insert(
            "job".into(),
            SessionStatus {
                container: "exited".into(),
                exit_code: Some(137),
                drift: Some("container exited with code 137".into()),
                ..SessionStatus::default()
            },
        );
        let down = NodeStatus {
            state: Liveness::Down,
            last_rtt_ms: Some(1.0),
            last_error: Some("timeout 2s".into()),
            ..NodeStatus::default()
        };
        let c = status.clusters.entry("lab".into()).or_default();
        c.nodes.insert("gpu-01".into(), up);
        c.nodes.insert("gpu-02".into(), down);
        let table = render_table(&status);
        assert!(table.starts_with("NODE"), "{table}");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[1].starts_with("gpu-01") && lines[1].contains("0.41 ms") && lines[1].ends_with("127.0.0.1:2222"));
        assert_eq!(lines[2], "    session job: exited (exit code 137), drift: container exited with code 137");
        assert_eq!(lines[3], "    session web: running, unhealthy (HTTP 404)");
        assert!(lines[4].starts_with("gpu-02") && lines[4].contains("down") && lines[4].ends_with("timeout 2s"));
        let column = |line: &str, word: &str| line.find(word);
        assert_eq!(column(lines[0], "STATE"), column(lines[1], "up"), "columns line up");
        assert_eq!(render_table(&status), table, "deterministic");
    }

    #[test]
    fn each_gpu_shows_its_use_and_the_session_holding_it() {
        let mut status = FleetStatus::default();
        let node = NodeStatus {
            state: Liveness::Up,
            gpus: Some(2),
            gpu_devices: vec![
                GpuStatus {
                    index: 0,
                    uuid: "GPU-a".into(),
                    name: "NVIDIA H100".into(),
                    memory_total: 80 << 30,
                    memory_used: Some(12 << 30),
                    utilization: Some(45),
                    session: Some("train".into()),
                },
                GpuStatus {
                    index: 1,
                    uuid: "GPU-b".into(),
                    name: "NVIDIA H100".into(),
                    memory_total: 80 << 30,
                    ..GpuStatus::default()
                },
            ],
            ..NodeStatus::default()
        };
        status.clusters.entry("lab".into()).or_default().nodes.insert("gpu-01".into(), node);
        let table = render_table(&status);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[2], "    gpu 0 (NVIDIA H100): 45%, 12.0GiB of 80.0GiB, train", "{table}");
        assert_eq!(lines[3], "    gpu 1 (NVIDIA H100): 80.0GiB, free", "{table}");
    }
}
