//! The cost of `bai watch`'s probe at scale: one watcher keeping N long-lived SSH connections (and N
//! remote agents) to real OpenSSH servers on loopback and pinging every node each `interval`, measured
//! from outside the watcher process.
//!
//! ```text
//! cargo bench --bench probe -- [N...] [--sshd K] [--window SECONDS] [--interval DURATION] [--hold]
//! ```
//!
//! Defaults: N = 200 nodes, K = 8 servers, a 20 s window, `--interval 1s`. `--hold` keeps each watcher
//! running after its window, printing its pid, until a line (or end of file) arrives on stdin: for
//! profiling it by hand (`perf record -g -p PID`).
//!
//! # The nodes
//!
//! K `/usr/sbin/sshd` servers on 127.0.0.1 (`benches/common/sshfleet.rs`, shared with the `fanout`
//! bench; `MaxStartups 500:30:1000`, so that all connections may arrive at once). The lab is one cluster
//! `probe` with N nodes `node0…`, node i on server i mod K (`address="127.0.0.1"`, `ssh port=P`), the
//! cluster's `ssh user="bai-test" identity=… known-hosts=… connect-timeout="20s"`, and nothing else: no
//! sessions, so what the watcher does each round is the ping (plus, every 12th round, a `probe` of the
//! node's sessions, which finds none). Every node is its own SSH connection and its own agent process,
//! as N machines would be; the nodes of one server share its `$HOME`, so the agent is installed K times,
//! not N. It is installed before the measurement (`bai watch --once` on a K-node lab, one node per
//! server), as a watcher restarted on an enrolled fleet finds it.
//!
//! # What is measured
//!
//! The release build of `bai` (`cargo bench` builds it) runs as
//! `bai watch LAB --format json --interval I --timeout 2s --listen 127.0.0.1:PORT`, its stdout (one JSON
//! object per event) read on a thread of the bench:
//!
//! - connect: time from spawn until every node has sent `node_up`, at most 120 s (the watcher retries
//!   failed connections with backoff; every `connection_lost` on the way is counted and shown).
//! - after a 2 s settle, a window of W seconds bracketed by `GET /status` (a plain HTTP/1.1 request
//!   on a `TcpStream`) and the watcher's utime+stime (`/proc/PID/stat`, clock ticks / `_SC_CLK_TCK`);
//!   the status is fetched outside the CPU bracket, so the bench's own requests are not charged to the
//!   probe.
//! - controller CPU per ping: the watcher's CPU time over the window / the growth of Σ `pings_total`
//!   over all nodes. This is all of the `bai watch` process (every thread: SSH crypto, the agent RPC,
//!   the timers, the status updates, the event printer), not only the ping path.
//! - RTT: the nodes' cumulative histograms (`rtt.counts`, bounds `bai::watch::status::RTT_BUCKETS`)
//!   merged over nodes, the window's share being the difference of the two fetches; p99 as the upper
//!   bound of the bucket holding the 99th percentile, and interpolated linearly inside that bucket as
//!   Prometheus's `histogram_quantile` does. Also the window's mean (`sum_s`/`count`) and the median over
//!   nodes of `last_rtt_ms` at the end, as sanity figures. The RTT is measured by the watcher itself:
//!   from sending the ping to reading its answer, scheduling delays in the watcher included.
//! - ping failures: the growth of Σ `ping_failures_total` over the window (must be 0), and any
//!   `node_down` or `connection_lost` event in it.
//! - memory: `VmRSS` and `RssAnon` of the watcher (`/proc/PID/status`) at the end of the window (VmRSS
//!   at its start beside, since it keeps growing for about a minute after the connections are made: a
//!   longer window gives a figure nearer the steady state); per node = (RSS with N nodes − RSS of a
//!   1-node watcher) / (N − 1). The 1-node watcher runs first, with the same flags, until its node is
//!   up, then 3 s more and one `GET /status`, before its RSS is read.
//! - the Docker engine's CPU over the window (every `dockerd` thread, from `schedstat`), in all and per
//!   round (a round: every node pinged once, one `interval`): what the watcher costs the engine. A node
//!   with sessions has its container list asked every round; these nodes host none, so each is asked
//!   once a minute. `cargo bench --bench fanout` reports `bai watch --once` on nodes with a session each.
//! - the other side, for the record: CPU time of the sshd servers and everything under them (the
//!   per-connection sshd processes and the agents; from `schedstat`, since each of those processes runs
//!   for less than a clock tick in the window) and the whole machine's busy time (`/proc/stat`, other
//!   people's processes included). Neither is the controller's; the verdicts are on the controller alone.
//! - shutdown: SIGTERM, then the watcher must exit 0 within 20 s.
//!
//! # Targets (marked PASS or MISS; a MISS does not fail the bench)
//!
//! With at least 200 nodes (200 SSH connections): ≤ 50 µs of controller CPU per ping, ≤ 10 ms p99 RTT
//! on loopback, ≤ 150 KB (1 KB = 1000 bytes) of controller memory per node. The bench fails (exits
//! non-zero) when the watcher does not bring every node up, fails a ping in the window, or does not
//! stop cleanly.

#[path = "common/sshfleet.rs"]
mod sshfleet;

use std::collections::{BTreeSet, HashMap};
use std::env;
use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bai::watch::status::RTT_BUCKETS;
use serde_json::Value;
use sshfleet::{Sshd, USER, descendants, die_with_parent, free_port, machine, output};

/// The `bai` binary under test, built by cargo (release, for `cargo bench`).
const BAI: &str = env!("CARGO_BIN_EXE_bai");
const TAG: &str = "probe";
const CLUSTER: &str = "probe";
const DEFAULT_COUNT: usize = 200;
const DEFAULT_SSHD: usize = 8;
const DEFAULT_WINDOW_S: u64 = 20;
const DEFAULT_INTERVAL: &str = "1s";
/// `--timeout` of the watcher: a ping unanswered after this is a miss.
const PING_TIMEOUT: &str = "2s";
/// How long every node may take to come up.
const UP_DEADLINE: Duration = Duration::from_secs(120);
/// Between all up and the window: the last connections' handshakes are still being finished then.
const SETTLE: Duration = Duration::from_secs(2);
/// The 1-node baseline watcher runs this long after its node is up before its RSS is read.
const BASELINE_SETTLE: Duration = Duration::from_secs(3);
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// The targets hold from this many nodes on.
const TARGET_NODES: usize = 200;
/// Target: controller CPU per ping, in microseconds.
const MAX_CPU_US: f64 = 50.0;
/// Target: p99 ping round trip, in milliseconds.
const MAX_P99_MS: f64 = 10.0;
/// Target: controller memory per node, in KB (1000 bytes).
const MAX_KB_PER_NODE: f64 = 150.0;

const USAGE: &str = "usage: cargo bench --bench probe -- [N...] [--sshd K] [--window SECONDS] [--interval DURATION]   (default N: 200, K: 8, 20 s, 1s)";

fn main() -> ExitCode {
    match bench_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("probe: {message}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    counts: Vec<usize>,
    sshd: usize,
    window: Duration,
    interval: String,
    interval_s: f64,
    hold: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut counts = Vec::new();
    let mut sshd = DEFAULT_SSHD;
    let mut window = DEFAULT_WINDOW_S;
    let mut interval = DEFAULT_INTERVAL.to_owned();
    let mut hold = false;
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        // `--flag value` and `--flag=value` alike.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| inline.clone().or_else(|| args.next()).ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            // cargo passes `--bench` to every bench target run by `cargo bench`.
            "--bench" => {}
            "--sshd" => {
                let v = value("--sshd")?;
                sshd = positive(&v).ok_or_else(|| format!("--sshd: expected a positive integer, got {v:?}"))?;
            }
            "--window" => {
                let v = value("--window")?;
                window = positive(&v).ok_or_else(|| format!("--window: expected whole seconds, got {v:?}"))? as u64;
            }
            "--interval" => interval = value("--interval")?,
            "--hold" => hold = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => counts.push(positive(other).ok_or_else(|| format!("unknown argument {other:?}\n{USAGE}"))?),
        }
    }
    if counts.is_empty() {
        counts.push(DEFAULT_COUNT);
    }
    counts.sort_unstable();
    counts.dedup();
    let interval_s = bai::config::value::parse_duration(&interval)
        .map_err(|e| format!("--interval {interval:?}: {}", e.message))?
        .as_secs_f64();
    if interval_s <= 0.0 {
        return Err("--interval must be more than zero".into());
    }
    Ok(Options { counts, sshd, window: Duration::from_secs(window), interval, interval_s, hold })
}

fn positive(text: &str) -> Option<usize> {
    text.parse::<usize>().ok().filter(|&n| n >= 1)
}

/// One node count's figures.
struct Row {
    nodes: usize,
    up_s: f64,
    /// `connection_lost` events before every node was up.
    connect_failures: usize,
    first_connect_error: Option<String>,
    /// Controller CPU from spawn to all up, seconds.
    connect_cpu_s: f64,
    agents: usize,
    window_s: f64,
    pings: u64,
    ping_failures: u64,
    bad_events: Vec<String>,
    cpu_s: f64,
    rtt: Rtt,
    last_rtt_median_ms: f64,
    mem: Mem,
    /// VmRSS at the window's start: whether the watcher's memory was still growing.
    rss_start_kib: u64,
    node_side_cpu_s: f64,
    /// The Docker engine's CPU over the window (`dockerd`, every thread).
    engine_cpu_s: f64,
    machine_busy_s: f64,
    machine_cores: f64,
    stop_s: f64,
}

fn bench_main() -> Result<(), String> {
    let options = parse_args()?;
    let fleet = Sshd::try_start(options.sshd, TAG)?;
    install_agents(&fleet)?;

    eprintln!("probe: 1-node baseline watcher");
    let baseline = baseline_rss(&fleet, &options)?;
    eprintln!(
        "probe: 1-node watcher: VmRSS {:.1} MiB, RssAnon {:.1} MiB",
        baseline.rss_kib as f64 / 1024.0,
        baseline.anon_kib as f64 / 1024.0
    );

    let mut rows = Vec::new();
    for &n in &options.counts {
        rows.push(measure(&fleet, &options, n)?);
    }
    print_report(&options, &fleet, &baseline, &rows);
    Ok(())
}

/// Installs the agent in every server's `$HOME`, unmeasured: a K-node lab, one node per server, and one
/// `bai watch --once` over it.
fn install_agents(fleet: &Sshd) -> Result<(), String> {
    let ports: Vec<u16> = (0..fleet.len()).map(|k| fleet.port(k)).collect();
    let lab = write_lab(fleet, "install", &ports)?;
    let started = Instant::now();
    let mut cmd = Command::new(BAI);
    cmd.arg("watch").arg(&lab).arg("--once");
    output(cmd, "`bai watch --once` (agent install)")?;
    eprintln!("probe: agent installed on {} servers in {:.2} s", fleet.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// The lab `NAME.kdl` in the fleet's scratch directory: node i on `ports[i]`; returns its path.
fn write_lab(fleet: &Sshd, name: &str, ports: &[u16]) -> Result<PathBuf, String> {
    let mut text = format!(
        "cluster \"{CLUSTER}\" {{\n    ssh user=\"{USER}\" identity=\"{}\" known-hosts=\"{}\" connect-timeout=\"20s\"\n",
        fleet.client_key_path().display(),
        fleet.known_hosts_path().display()
    );
    for (i, port) in ports.iter().enumerate() {
        text.push_str(&format!("    node \"node{i}\" address=\"127.0.0.1\" {{\n        ssh port={port}\n    }}\n"));
    }
    text.push_str("}\n");
    let path = fleet.scratch().join(format!("{name}.kdl"));
    fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// N nodes spread round-robin over the fleet's servers.
fn spread(fleet: &Sshd, n: usize) -> Vec<u16> {
    (0..n).map(|i| fleet.port(i % fleet.len())).collect()
}

struct Baseline {
    rss_kib: u64,
    anon_kib: u64,
}

fn baseline_rss(fleet: &Sshd, options: &Options) -> Result<Baseline, String> {
    let lab = write_lab(fleet, "baseline-1", &spread(fleet, 1))?;
    let mut watcher = Watcher::start(&lab, options, fleet.scratch(), "baseline-1")?;
    watcher.wait_all_up(1, UP_DEADLINE)?;
    std::thread::sleep(BASELINE_SETTLE);
    // The same request the N-node watcher serves, so that both have set up their HTTP side.
    get_status(watcher.port)?;
    let mem = watcher.mem()?;
    watcher.stop()?;
    Ok(Baseline { rss_kib: mem.rss_kib, anon_kib: mem.anon_kib })
}

fn measure(fleet: &Sshd, options: &Options, n: usize) -> Result<Row, String> {
    let lab = write_lab(fleet, &format!("probe-{n}"), &spread(fleet, n))?;
    eprintln!("probe: {n} nodes: starting the watcher");
    let mut watcher = Watcher::start(&lab, options, fleet.scratch(), &format!("probe-{n}"))?;
    let up = watcher.wait_all_up(n, UP_DEADLINE)?;
    let connect_cpu_s = cpu_seconds(watcher.pid())?;
    eprintln!(
        "probe: {n} nodes: all {n} up after {:.2} s ({} connection failures on the way)",
        up.elapsed.as_secs_f64(),
        up.connect_failures
    );
    std::thread::sleep(SETTLE);

    // The status outside the CPU bracket: the bench's own requests are not the probe's cost.
    let before = get_status(watcher.port)?;
    let mem_before = watcher.mem()?;
    let window_started = Instant::now();
    let cpu0 = cpu_seconds(watcher.pid())?;
    let nodes0 = run_ns_under(&fleet.listener_pids());
    let engine0 = engine_ns();
    let machine0 = machine_ticks()?;
    std::thread::sleep(options.window);
    let machine1 = machine_ticks()?;
    let engine1 = engine_ns();
    let nodes1 = run_ns_under(&fleet.listener_pids());
    let cpu1 = cpu_seconds(watcher.pid())?;
    let window_s = window_started.elapsed().as_secs_f64();
    let after = get_status(watcher.port)?;
    let window_ended = Instant::now();
    let mem = watcher.mem()?;

    let agents = agents_under(&fleet.listener_pids());
    let (pings, ping_failures, rtt, last_rtt_median_ms) = compare(&before, &after, n)?;
    let bad_events: Vec<String> = watcher
        .drain_events()
        .into_iter()
        .filter(|(at, e)| {
            *at >= window_started
                && *at <= window_ended
                && matches!(e["event"].as_str(), Some("node_down" | "connection_lost"))
        })
        .map(|(_, e)| e.to_string())
        .collect();

    if options.hold {
        eprintln!(
            "probe: {n} nodes: holding the watcher (pid {}, http://127.0.0.1:{}/status) up; press Enter (or close stdin) to stop it",
            watcher.pid(),
            watcher.port
        );
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    eprintln!("probe: {n} nodes: stopping the watcher (SIGTERM)");
    let stop_s = watcher.stop()?.as_secs_f64();

    let clk = clock_ticks_per_second();
    let node_side: u64 = nodes1.iter().map(|(pid, t)| t - nodes0.get(pid).copied().unwrap_or(0).min(*t)).sum();
    let row = Row {
        nodes: n,
        up_s: up.elapsed.as_secs_f64(),
        connect_failures: up.connect_failures,
        first_connect_error: up.first_error,
        connect_cpu_s,
        agents,
        window_s,
        pings,
        ping_failures,
        bad_events,
        cpu_s: cpu1 - cpu0,
        rtt,
        last_rtt_median_ms,
        mem,
        rss_start_kib: mem_before.rss_kib,
        node_side_cpu_s: node_side as f64 / 1e9,
        engine_cpu_s: engine1.saturating_sub(engine0) as f64 / 1e9,
        machine_busy_s: (machine1.busy - machine0.busy) as f64 / clk,
        machine_cores: (machine1.total - machine0.total) as f64 / clk / window_s,
        stop_s,
    };
    if row.ping_failures > 0 || !row.bad_events.is_empty() {
        print_report(options, fleet, &Baseline { rss_kib: 0, anon_kib: 0 }, std::slice::from_ref(&row));
        return Err(format!(
            "{n} nodes: {} ping(s) failed in the window; events: {}",
            row.ping_failures,
            row.bad_events.join("\n")
        ));
    }
    Ok(row)
}

// ---------------------------------------------------------------------------------------------
// The watcher
// ---------------------------------------------------------------------------------------------

/// A running `bai watch`, killed when dropped (on an error or a panic) if it has not been stopped.
struct Watcher {
    child: Child,
    port: u16,
    started: Instant,
    events: mpsc::Receiver<(Instant, Value)>,
    /// Events read ahead by `wait_all_up` and not drained yet.
    seen: Vec<(Instant, Value)>,
    reader: Option<JoinHandle<()>>,
    stderr: PathBuf,
}

struct Up {
    elapsed: Duration,
    connect_failures: usize,
    first_error: Option<String>,
}

#[derive(Clone, Copy)]
struct Mem {
    rss_kib: u64,
    anon_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

impl Watcher {
    fn start(lab: &Path, options: &Options, scratch: &Path, name: &str) -> Result<Watcher, String> {
        let port = free_port()?;
        let stderr_path = scratch.join(format!("{name}.stderr"));
        let stderr =
            fs::File::create(&stderr_path).map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;
        let mut cmd = Command::new(BAI);
        cmd.arg("watch")
            .arg(lab)
            .args(["--format", "json", "--interval", &options.interval, "--timeout", PING_TIMEOUT, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        die_with_parent(&mut cmd);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {BAI} watch: {e}"))?;
        let stdout = child.stdout.take().ok_or("the watcher has no stdout")?;
        let (tx, events) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send((Instant::now(), value)).is_err() {
                    break;
                }
            }
        });
        Ok(Watcher { child, port, started, events, seen: Vec::new(), reader: Some(reader), stderr: stderr_path })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until `node0…node{n-1}` have all sent `node_up`.
    fn wait_all_up(&mut self, n: usize, limit: Duration) -> Result<Up, String> {
        let deadline = self.started + limit;
        let mut up = BTreeSet::new();
        let mut connect_failures = 0;
        let mut first_error = None;
        while up.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok((at, event)) => {
                    match event["event"].as_str() {
                        Some("node_up") => {
                            if let Some(node) = event["node"].as_str() {
                                up.insert(node.to_owned());
                            }
                        }
                        Some("connection_lost") => {
                            connect_failures += 1;
                            if first_error.is_none() {
                                first_error = event["error"].as_str().map(str::to_owned);
                            }
                        }
                        _ => {}
                    }
                    self.seen.push((at, event));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Err(format!("the watcher exited ({status}) early:\n{}", self.stderr_text()));
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "only {} of {n} nodes up after {} s ({connect_failures} connection failures; first: {})\nstderr:\n{}",
                            up.len(),
                            limit.as_secs(),
                            first_error.as_deref().unwrap_or("none"),
                            self.stderr_text()
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("the watcher closed its stdout:\n{}", self.stderr_text()));
                }
            }
        }
        Ok(Up { elapsed: self.started.elapsed(), connect_failures, first_error })
    }

    /// Every event received so far, with when it was read.
    fn drain_events(&mut self) -> Vec<(Instant, Value)> {
        let mut all = std::mem::take(&mut self.seen);
        all.extend(self.events.try_iter());
        all
    }

    fn mem(&self) -> Result<Mem, String> {
        let path = format!("/proc/{}/status", self.pid());
        let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let field = |name: &str| -> Result<u64, String> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {name} in {path}"))
        };
        Ok(Mem {
            rss_kib: field("VmRSS")?,
            anon_kib: field("RssAnon")?,
            hwm_kib: field("VmHWM")?,
            threads: field("Threads")?,
        })
    }

    /// SIGTERM; the watcher must exit 0 within [`STOP_DEADLINE`]. Returns how long it took.
    fn stop(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        // SAFETY: kill(2) of our own child, which has not been reaped (we hold its `Child`).
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait().map_err(|e| format!("waiting for the watcher: {e}"))? {
                break status;
            }
            if started.elapsed() > STOP_DEADLINE {
                return Err(format!(
                    "the watcher did not exit within {} s of SIGTERM:\n{}",
                    STOP_DEADLINE.as_secs(),
                    self.stderr_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = started.elapsed();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if !status.success() {
            return Err(format!("the watcher exited {status} after SIGTERM:\n{}", self.stderr_text()));
        }
        Ok(took)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the watcher and the machine
// ---------------------------------------------------------------------------------------------

/// `GET /status` over a plain TCP connection (`Connection: close`: the body ends with the stream). The
/// endpoint may still be starting: connection refusals are retried for a few seconds.
fn get_status(port: u16) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("cannot connect to the watcher's --listen port {port}: {e}")),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| format!("socket: {e}"))?;
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("cannot send GET /status: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("cannot read the /status response: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("the /status response has no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET /status answered {}", head.lines().next().unwrap_or("")));
    }
    serde_json::from_str(body).map_err(|e| format!("the /status body is no JSON ({e})"))
}

/// The window's pings, failed pings, merged RTT histogram and the median of `last_rtt_ms` at the end.
fn compare(before: &Value, after: &Value, n: usize) -> Result<(u64, u64, Rtt, f64), String> {
    let nodes = |status: &Value| -> Result<serde_json::Map<String, Value>, String> {
        status["clusters"][CLUSTER]["nodes"]
            .as_object()
            .cloned()
            .ok_or_else(|| format!("no cluster {CLUSTER} in /status"))
    };
    let (b, a) = (nodes(before)?, nodes(after)?);
    if a.len() != n {
        return Err(format!("/status lists {} nodes, not {n}", a.len()));
    }
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let mut pings = 0;
    let mut failures = 0;
    let mut counts = vec![0u64; RTT_BUCKETS.len()];
    let mut count = 0;
    let mut sum_s = 0.0;
    let mut last = Vec::new();
    for (name, end) in &a {
        let start = b.get(name).ok_or_else(|| format!("{name} missing from the first /status"))?;
        if end["state"] != "up" {
            return Err(format!("{name} is {} at the end of the window", end["state"]));
        }
        pings += u(&end["pings_total"]) - u(&start["pings_total"]);
        failures += u(&end["ping_failures_total"]) - u(&start["ping_failures_total"]);
        let (ce, cs) = (&end["rtt"]["counts"], &start["rtt"]["counts"]);
        for (i, slot) in counts.iter_mut().enumerate() {
            *slot += u(&ce[i]) - u(&cs[i]);
        }
        count += u(&end["rtt"]["count"]) - u(&start["rtt"]["count"]);
        sum_s += end["rtt"]["sum_s"].as_f64().unwrap_or(0.0) - start["rtt"]["sum_s"].as_f64().unwrap_or(0.0);
        if let Some(ms) = end["last_rtt_ms"].as_f64() {
            last.push(ms);
        }
    }
    last.sort_by(f64::total_cmp);
    let median = if last.is_empty() { f64::NAN } else { last[last.len() / 2] };
    Ok((pings, failures, Rtt::of(&counts, count, sum_s), median))
}

/// The window's round trips, from merged cumulative bucket counts.
#[derive(Clone, Copy)]
struct Rtt {
    count: u64,
    mean_ms: f64,
    /// Upper bound of the bucket holding the 99th percentile (`inf` past the last bound).
    p99_bucket_ms: f64,
    /// Linear interpolation inside that bucket, as `histogram_quantile(0.99, …)`.
    p99_ms: f64,
    /// Pings slower than the largest bound.
    over_last: u64,
}

impl Rtt {
    fn of(cumulative: &[u64], count: u64, sum_s: f64) -> Rtt {
        let mean_ms = if count == 0 { f64::NAN } else { sum_s / count as f64 * 1e3 };
        let over_last = count - cumulative.last().copied().unwrap_or(0);
        let (p99_bucket_ms, p99_ms) = quantile(0.99, cumulative, count);
        Rtt { count, mean_ms, p99_bucket_ms, p99_ms, over_last }
    }
}

/// (bucket upper bound, interpolated value) of quantile `q`, in ms. As Prometheus does: the first bucket
/// interpolates from 0, and a rank past the last finite bound answers that bound.
fn quantile(q: f64, cumulative: &[u64], count: u64) -> (f64, f64) {
    if count == 0 {
        return (f64::NAN, f64::NAN);
    }
    let rank = q * count as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (&upper, &cum) in RTT_BUCKETS.iter().zip(cumulative) {
        if cum as f64 >= rank {
            let inside = (cum - below) as f64;
            let fraction = if inside == 0.0 { 1.0 } else { (rank - below as f64) / inside };
            return (upper * 1e3, (lower + (upper - lower) * fraction) * 1e3);
        }
        below = cum;
        lower = upper;
    }
    (f64::INFINITY, lower * 1e3)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf(3) only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime of `pid` (all its threads), in clock ticks.
fn ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces: count fields after it (state is the first).
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn cpu_seconds(pid: u32) -> Result<f64, String> {
    ticks(pid as i32)
        .map(|t| t as f64 / clock_ticks_per_second())
        .ok_or_else(|| format!("cannot read /proc/{pid}/stat (has the watcher exited?)"))
}

/// Nanoseconds on a CPU of every thread of `pid` still alive (`/proc/PID/task/*/schedstat`). Finer than
/// the clock ticks of `/proc/PID/stat`, which a process that runs for less than a tick in the window (each
/// of hundreds of sshd and agent processes) reports as no time at all.
fn run_ns(pid: i32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0;
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else { continue };
        sum += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(sum)
}

/// CPU nanoseconds of the Docker engine (every `dockerd` process; the watched nodes share the one here).
fn engine_ns() -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else { return 0 };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "dockerd"))
        .filter_map(run_ns)
        .sum()
}

/// CPU nanoseconds of `roots` and every process below them, by pid.
fn run_ns_under(roots: &[i32]) -> HashMap<i32, u64> {
    roots.iter().copied().chain(descendants(roots)).filter_map(|pid| run_ns(pid).map(|t| (pid, t))).collect()
}

/// Agent processes (`bai`) below the sshd servers: one per live connection.
fn agents_under(roots: &[i32]) -> usize {
    descendants(roots)
        .into_iter()
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "bai"))
        .count()
}

struct MachineTicks {
    busy: u64,
    total: u64,
}

/// The whole machine's CPU time from the first line of /proc/stat: busy = all but idle and iowait.
fn machine_ticks() -> Result<MachineTicks, String> {
    let stat = fs::read_to_string("/proc/stat").map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).ok_or("no cpu line in /proc/stat")?;
    // user nice system idle iowait irq softirq steal (guest time is already inside user and nice).
    let values: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
    if values.len() < 8 {
        return Err(format!("unexpected /proc/stat line {line:?}"));
    }
    let total: u64 = values.iter().sum();
    Ok(MachineTicks { busy: total - values[3] - values[4], total })
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn verdict(text: String, ok: bool, applies: bool) -> String {
    match (applies, ok) {
        (false, _) => format!("{text} (n/a < {TARGET_NODES} nodes)"),
        (true, true) => format!("**{text}** PASS"),
        (true, false) => format!("**{text}** MISS"),
    }
}

fn print_report(options: &Options, fleet: &Sshd, baseline: &Baseline, rows: &[Row]) {
    let args: Vec<String> = env::args().skip(1).filter(|a| a != "--bench").collect();
    let args = if args.is_empty() { String::new() } else { format!(" -- {}", args.join(" ")) };
    println!("## bai watch probe benchmark\n");
    println!("- command: `cargo bench --bench probe{args}`");
    println!("- machine: {}", machine());
    println!(
        "- watcher: `{BAI} watch LAB --format json --interval {} --timeout {PING_TIMEOUT} --listen 127.0.0.1:PORT`",
        options.interval
    );
    println!(
        "- nodes: N nodes over {} `sshd` on 127.0.0.1 (one SSH connection and one agent per node), login `{USER}`",
        fleet.len()
    );
    println!(
        "- window: {} s after all up + {} s, between two `GET /status`; 1-node baseline: VmRSS {:.1} MiB, RssAnon {:.1} MiB",
        options.window.as_secs(),
        SETTLE.as_secs(),
        baseline.rss_kib as f64 / 1024.0,
        baseline.anon_kib as f64 / 1024.0
    );
    println!();
    println!(
        "| nodes | all up after s | connect failures | agents | pings (per s) | failed pings | controller CPU s | \
         µs / ping (≤ {MAX_CPU_US}) | node-side CPU s (µs / ping) | engine CPU ms (per round) | machine busy s (cores) |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let applies = r.nodes >= TARGET_NODES;
        let per_ping = |seconds: f64| seconds / r.pings as f64 * 1e6;
        let us = per_ping(r.cpu_s);
        println!(
            "| {} | {:.2} | {} | {} | {} ({:.1}/s; expected {:.1}) | {} | {:.2} | {} | {:.2} ({:.1}) | {:.1} ({:.2}) | {:.2} ({:.2} of {:.0}) |",
            r.nodes,
            r.up_s,
            r.connect_failures,
            r.agents,
            r.pings,
            r.pings as f64 / r.window_s,
            r.nodes as f64 / options.interval_s,
            r.ping_failures,
            r.cpu_s,
            verdict(format!("{us:.1}"), us <= MAX_CPU_US, applies),
            r.node_side_cpu_s,
            per_ping(r.node_side_cpu_s),
            r.engine_cpu_s * 1e3,
            r.engine_cpu_s * 1e3 / (r.window_s / options.interval_s),
            r.machine_busy_s,
            r.machine_busy_s / r.window_s,
            r.machine_cores,
        );
    }
    println!();
    println!(
        "| nodes | RTT samples | p99 bucket ms | p99 ms interpolated (≤ {MAX_P99_MS}) | mean ms | median last_rtt ms | \
         > {} s |",
        RTT_BUCKETS[RTT_BUCKETS.len() - 1]
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let applies = r.nodes >= TARGET_NODES;
        println!(
            "| {} | {} | ≤ {:.1} | {} | {:.3} | {:.3} | {} |",
            r.nodes,
            r.rtt.count,
            r.rtt.p99_bucket_ms,
            verdict(format!("{:.2}", r.rtt.p99_ms), r.rtt.p99_ms <= MAX_P99_MS, applies),
            r.rtt.mean_ms,
            r.last_rtt_median_ms,
            r.rtt.over_last,
        );
    }
    println!();
    println!(
        "| nodes | VmRSS MiB (at window start) | RssAnon MiB | VmHWM MiB | threads | KB / node (≤ {MAX_KB_PER_NODE}) | \
         RssAnon KB / node | connect CPU s | stop s |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        // KB of 1000 bytes; /proc's "kB" are KiB.
        let per = |now: u64, base: u64| (now as f64 - base as f64) * 1.024 / r.nodes.saturating_sub(1) as f64;
        let (kb, anon_kb) = if r.nodes > 1 {
            let kb = per(r.mem.rss_kib, baseline.rss_kib);
            (
                verdict(format!("{kb:.1}"), kb <= MAX_KB_PER_NODE, r.nodes >= TARGET_NODES),
                format!("{:.1}", per(r.mem.anon_kib, baseline.anon_kib)),
            )
        } else {
            ("–".to_owned(), "–".to_owned())
        };
        println!(
            "| {} | {:.1} ({:.1}) | {:.1} | {:.1} | {} | {kb} | {anon_kb} | {:.2} | {:.2} |",
            r.nodes,
            r.mem.rss_kib as f64 / 1024.0,
            r.rss_start_kib as f64 / 1024.0,
            r.mem.anon_kib as f64 / 1024.0,
            r.mem.hwm_kib as f64 / 1024.0,
            r.mem.threads,
            r.connect_cpu_s,
            r.stop_s,
        );
        if let Some(e) = &r.first_connect_error {
            println!("\n{} nodes: first connection failure: {e}", r.nodes);
        }
    }
}
