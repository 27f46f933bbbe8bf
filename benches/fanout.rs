//! Fan-out benchmark for `bai apply` over SSH: what a no-op apply costs on 10 and on 50 real OpenSSH
//! nodes on loopback, next to the unavoidable floor of one SSH connection per node, and how long one
//! agent RPC takes on a connection that is already up.
//!
//! ```text
//! cargo bench --bench fanout -- [10] [50] [--runs N] [--hold]
//! ```
//!
//! Without a node count both 10 and 50 run (any positive count may be given); `--runs` defaults to 5
//! and the median of the runs is reported. `--hold` keeps the nodes up after the report, printing the
//! labs' paths, until a line (or end of file) arrives on stdin: for profiling `bai` by hand.
//!
//! # The nodes
//!
//! One `/usr/sbin/sshd -D -e -f CFG -E LOG` process per node, each on its own 127.0.0.1 port with a
//! throwaway ed25519 host key (`ssh-keygen`), all accepting one throwaway client key for the non-root
//! user `bai-test` (uid 1001 here, in group `docker`; `scripts/test` creates it). Every node has its own
//! `$HOME` (`SetEnv HOME=…`, owned by `bai-test`), so each node gets its own agent install, lease files
//! and vfolders, as separate machines would. `MaxStartups 500:30:1000` lets all connections in at once.
//! A known_hosts file holds every node's `[127.0.0.1]:PORT ssh-ed25519 …` line. The sshd processes and
//! everything under them are killed when the bench ends, on an error or a panic too (a `Drop` guard),
//! and die with the bench if it is killed (`PR_SET_PDEATHSIG`). Each node count gets fresh nodes, so
//! that no node carries another lab's cluster (its vfolders, its records) into the measurement. The
//! servers are `benches/common/sshfleet.rs`'s, shared with the `probe` bench.
//!
//! The lab is one cluster with N nodes `node0…` (`address="127.0.0.1"`, `ssh port=P`), the cluster's
//! `ssh user="bai-test" identity=… known-hosts=… connect-timeout="10s"`, and one vfolder per node: no
//! sessions, so no container is needed, but observing a node does real work (the vfolder root, the
//! Docker engine's container list and version, the inventory).
//!
//! # What is measured
//!
//! All with the release build of `bai` (`cargo bench` builds it), as separate child processes, wall
//! time from spawn to reap, median of the runs:
//!
//! - setup (not measured): `bai apply --yes LAB --parallel N` once, which installs the agent on every
//!   node (content-addressed under the node's home) and creates the vfolders; it must exit 0.
//! - `ssh true`, the floor: N OpenSSH clients started at once, `ssh -i KEY -o UserKnownHostsFile=FILE
//!   -o StrictHostKeyChecking=yes -o BatchMode=yes -o KexAlgorithms=curve25519-sha256 -p PORT
//!   bai-test@127.0.0.1 true`, until the last one is reaped. One connection per node (key exchange,
//!   public-key authentication, one exec) is what any tool that reaches N machines over SSH pays.
//!   curve25519 is forced because OpenSSH 9.2's default (sntrup761x25519) costs ~50 ms of client CPU
//!   per connection, a cost bai's client (russh, which has no sntrup761) does not pay either.
//! - `bai no-op`: `bai apply --yes LAB --parallel N` on the lab just applied; it must exit 0 and print
//!   `No changes.`. This is one connection per node plus what bai adds: the agent probe (an exec that
//!   checks the installed agent's hash), starting the agent, the `hello` that takes the apply lease,
//!   `observe`, and the controller's own parse, plan and output.
//!
//! One unmeasured round of both comes first (page cache, sshd's first fork); then the rounds alternate
//! `ssh true` and `bai no-op`, so that a drift of the machine weighs on both alike. The report gives the
//! cost per node (median time / N) and, with two or more counts, the marginal cost of one more node
//! (the difference of the medians of the smallest and largest count over the difference in nodes).
//!
//! Each round also counts the CPU it cost, per node (issue 15: what a no-op costs the nodes): the
//! controller's (this bench's reaped children: the `ssh` clients, or `bai`, from `getrusage`), the nodes'
//! sshd with everything they ran (the agent included: the listeners' own and reaped children's ticks in
//! `/proc/PID/stat`, read after a pause that lets sshd reap), and the Docker engine's (`dockerd`'s own
//! ticks; one engine serves every node here, as one would on each real node).
//!
//! The warm-RPC latency: one agent, after `hello` (without the lease), answers 200 `ping` requests sent
//! one at a time (write the line, flush, read the reply line); median and 99th percentile of the round
//! trip, over three transports:
//!
//! - `local pipe`: `bai agent` as a child process of the bench (its stdin and stdout), as bai runs the
//!   agent of a `local=#true` node; the cost of the RPC itself, without a network.
//! - `OpenSSH exec`: `ssh … bai-test@127.0.0.1 <node's agent path> agent`, the agent installed by the
//!   setup apply at `~/.local/share/bai/agent/<sha256 of bai>/bai` under node0's home (the OpenSSH
//!   client sets TCP_NODELAY on interactive sessions).
//! - `bai (russh) exec`: the same agent over bai's own SSH client, through the library
//!   (`transport::ssh::connect`, `exec_stream`, `AgentClient`), as `bai apply` talks to every node.
//!
//! # Targets (marked PASS or MISS; a MISS does not fail the bench)
//!
//! - a no-op apply on N nodes within 1.5× the time of `ssh true` on the same N nodes (measured in the
//!   same run, so the ratio holds across machines better than the seconds do);
//! - one RPC on a warm connection under 5 ms (median).
//!
//! Every child must succeed: when one exits non-zero (or a no-op apply plans changes), its stderr is
//! printed and the bench exits non-zero without reporting a number for that run.

#[path = "common/sshfleet.rs"]
mod sshfleet;

use std::env;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bai::protocol::Method;
use bai::transport::client::AgentClient;
use bai::transport::ssh::{SshTarget, connect, shell_word};
use sha2::{Digest as _, Sha256};
use sshfleet::{SSHD, Sshd, USER, machine, output};

/// The `bai` binary under test, built by cargo (release, for `cargo bench`).
const BAI: &str = env!("CARGO_BIN_EXE_bai");
/// Node counts run when none is given.
const DEFAULT_COUNTS: [usize; 2] = [10, 50];
/// Pings timed per transport.
const PINGS: usize = 200;
/// Target: bai no-op time / `ssh true` time.
const MAX_NOOP_RATIO: f64 = 1.5;
/// Target: median warm round trip, in milliseconds.
const MAX_RPC_MS: f64 = 5.0;

const USAGE: &str = "usage: cargo bench --bench fanout -- [N...] [--runs R] [--hold]   (default N: 10 50, R: 5)";

fn main() -> ExitCode {
    match bench_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fanout: {message}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    counts: Vec<usize>,
    runs: usize,
    hold: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut counts = Vec::new();
    let mut runs = 5;
    let mut hold = false;
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let runs_value = if arg == "--runs" {
            Some(args.next().ok_or("--runs needs a value")?)
        } else {
            arg.strip_prefix("--runs=").map(str::to_owned)
        };
        if let Some(value) = runs_value {
            runs = positive(&value).ok_or_else(|| format!("--runs: expected a positive integer, got {value:?}"))?;
            continue;
        }
        match arg.as_str() {
            // cargo passes `--bench` to every bench target run by `cargo bench`.
            "--bench" => {}
            "--hold" => hold = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => counts.push(positive(other).ok_or_else(|| format!("unknown argument {other:?}\n{USAGE}"))?),
        }
    }
    if counts.is_empty() {
        counts = DEFAULT_COUNTS.to_vec();
    }
    counts.sort_unstable();
    counts.dedup();
    Ok(Options { counts, runs, hold })
}

fn positive(text: &str) -> Option<usize> {
    text.parse::<usize>().ok().filter(|&n| n >= 1)
}

/// One node count's figures, in seconds.
struct Row {
    nodes: usize,
    ssh: Stat,
    bai: Stat,
    /// CPU per node of one round, in ms (median of the runs).
    ssh_cpu: Cpu,
    bai_cpu: Cpu,
}

/// One transport's warm round trips, in milliseconds.
struct Rpc {
    transport: &'static str,
    how: String,
    median_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn bench_main() -> Result<(), String> {
    let options = parse_args()?;
    let version = bai_version()?;
    let agent_hash = sha256_file(Path::new(BAI))?;
    let mut rows = Vec::new();
    let mut rpcs = Vec::new();
    // With `--hold`, every fleet and its lab stay up until the end.
    let mut held = Vec::new();
    for &n in &options.counts {
        // Fresh nodes for every count: nothing of another lab (no other cluster's state) on them.
        let fleet = Sshd::try_start(n, "fanout")?;
        let lab = write_lab(&fleet, n)?;
        eprintln!("fanout: {n} nodes: setup apply");
        let setup = run_checked(bai_apply(&lab, n), "setup `bai apply`")?;
        eprintln!("fanout: {n} nodes: setup apply took {:.2} s", setup.as_secs_f64());
        // One unmeasured round of each, then the measured rounds, alternating.
        ssh_true(&fleet, n)?;
        bai_noop(&lab, n)?;
        let (mut ssh, mut noop) = (Vec::new(), Vec::new());
        let (mut ssh_cpu, mut bai_cpu) = (Vec::new(), Vec::new());
        for run in 1..=options.runs {
            // Each snapshot after a pause outside the timed part: sshd reaps its per-connection children
            // (whose CPU it then counts) a moment after the client is done.
            let settle = || std::thread::sleep(Duration::from_millis(300));
            settle();
            let before = Cpu::now(&fleet);
            ssh.push(ssh_true(&fleet, n)?.as_secs_f64());
            settle();
            let between = Cpu::now(&fleet);
            noop.push(bai_noop(&lab, n)?.as_secs_f64());
            settle();
            let after = Cpu::now(&fleet);
            ssh_cpu.push(between.since(&before).per_node(n));
            bai_cpu.push(after.since(&between).per_node(n));
            eprintln!(
                "fanout: {n} nodes, run {run}/{}: ssh true {:.3} s, bai no-op {:.3} s",
                options.runs,
                ssh[run - 1],
                noop[run - 1]
            );
        }
        rows.push(Row {
            nodes: n,
            ssh: Stat::of(&ssh),
            bai: Stat::of(&noop),
            ssh_cpu: Cpu::median(&ssh_cpu),
            bai_cpu: Cpu::median(&bai_cpu),
        });

        if rpcs.is_empty() {
            eprintln!("fanout: warm RPC latency");
            let agent = fleet.home(0).join(".local/share/bai/agent").join(&agent_hash).join("bai");
            if !agent.is_file() {
                return Err(format!("the setup apply left no agent at {}", agent.display()));
            }
            rpcs =
                vec![rpc_local(&fleet, &version)?, rpc_openssh(&fleet, &agent, &version)?, rpc_russh(&fleet, &agent)?];
        }
        if options.hold {
            held.push((fleet, lab));
        }
    }

    print_report(&options, &rows, &rpcs, &agent_hash);
    if options.hold {
        eprintln!("\nfanout: holding the nodes up; apply a lab with `{BAI} apply --yes LAB --parallel N`:");
        for (fleet, lab) in &held {
            eprintln!(
                "  {} (client key {}, known_hosts {})",
                lab.display(),
                fleet.client_key_path().display(),
                fleet.known_hosts_path().display()
            );
        }
        eprintln!("fanout: press Enter (or close stdin) to stop them");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

fn bai_apply(lab: &Path, n: usize) -> Command {
    let mut cmd = Command::new(BAI);
    cmd.args(["apply", "--yes"]).arg(lab).args(["--parallel", &n.to_string()]);
    cmd
}

/// A no-op `bai apply`: must exit 0 and plan nothing.
fn bai_noop(lab: &Path, n: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let out = output(bai_apply(lab, n), "no-op `bai apply`")?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("No changes.") {
        return Err(format!(
            "the no-op `bai apply` on {n} nodes planned changes:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(elapsed)
}

/// The OpenSSH client's arguments up to (excluding) the remote command, for node `i`.
fn ssh_args(fleet: &Sshd, i: usize) -> Vec<String> {
    vec![
        "-i".into(),
        fleet.client_key_path().display().to_string(),
        "-o".into(),
        format!("UserKnownHostsFile={}", fleet.known_hosts_path().display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "KexAlgorithms=curve25519-sha256".into(),
        "-p".into(),
        fleet.port(i).to_string(),
        format!("{USER}@127.0.0.1"),
    ]
}

/// `ssh … true` on the first `n` nodes at once, until the last client is reaped.
fn ssh_true(fleet: &Sshd, n: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        let child = Command::new("ssh")
            .args(ssh_args(fleet, i))
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run ssh (openssh-client): {e}"))?;
        children.push(child);
    }
    let mut failed = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().map_err(|e| format!("waiting for ssh: {e}"))?;
        if !out.status.success() {
            failed.push(format!("node{i} ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    let elapsed = started.elapsed();
    if failed.is_empty() { Ok(elapsed) } else { Err(format!("`ssh true` failed:\n{}", failed.join("\n"))) }
}

/// The `hello` every agent connection begins with (no lease: `ping` needs none).
fn hello_line(version: &str) -> String {
    format!(
        "{{\"id\":1,\"method\":\"hello\",\"params\":{{\"protocol\":1,\"version\":\"{version}\",\
         \"cluster\":\"bench\",\"node\":\"node0\",\"lease\":false,\"holder\":\"bench\"}}}}"
    )
}

/// `hello`, then [`PINGS`] pings one at a time over an agent child's stdio; the round trips in ms.
fn ping_child(mut child: Child, version: &str, what: &str) -> Result<Vec<f64>, String> {
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(format!("{what}: the agent has no stdio"));
    };
    let mut stdout = BufReader::new(stdout);
    let mut exchange = |id: u64, line: &str| -> Result<f64, String> {
        let started = Instant::now();
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{what}: cannot write request {id}: {e}"))?;
        let mut reply = String::new();
        let read = stdout.read_line(&mut reply).map_err(|e| format!("{what}: cannot read reply {id}: {e}"))?;
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        if read == 0 {
            return Err(format!("{what}: the agent closed the connection at request {id}"));
        }
        let value: serde_json::Value =
            serde_json::from_str(&reply).map_err(|e| format!("{what}: reply {id} is no JSON ({e}): {reply}"))?;
        if value["id"] != id || value.get("error").is_some() || value.get("result").is_none() {
            return Err(format!("{what}: unexpected reply to request {id}: {}", reply.trim()));
        }
        Ok(elapsed)
    };
    let outcome = (|| {
        exchange(1, &hello_line(version))?;
        (0..PINGS as u64).map(|k| exchange(k + 2, &format!("{{\"id\":{},\"method\":\"ping\"}}", k + 2))).collect()
    })();
    drop(stdin);
    let status = child.wait().map_err(|e| format!("{what}: waiting for the agent: {e}"))?;
    let mut rest = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    }
    match outcome {
        Ok(samples) if status.success() => Ok(samples),
        Ok(_) => Err(format!("{what}: the agent exited {status}:\n{rest}")),
        Err(e) => Err(format!("{e}\nagent exit: {status}, stderr:\n{rest}")),
    }
}

fn rpc_local(fleet: &Sshd, version: &str) -> Result<Rpc, String> {
    let home = fleet.scratch().join("local-agent-home");
    fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let child = Command::new(BAI)
        .arg("agent")
        .env("HOME", &home)
        .env_remove("BAI_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {BAI} agent: {e}"))?;
    let samples = ping_child(child, version, "local agent")?;
    Ok(Rpc::of("local pipe", format!("`{BAI} agent` as a child process"), &samples))
}

fn rpc_openssh(fleet: &Sshd, agent: &Path, version: &str) -> Result<Rpc, String> {
    let remote = format!("{} agent", shell_word(&agent.display().to_string()));
    let child = Command::new("ssh")
        .args(ssh_args(fleet, 0))
        .arg(&remote)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ssh (openssh-client): {e}"))?;
    let samples = ping_child(child, version, "agent over OpenSSH")?;
    Ok(Rpc::of("OpenSSH exec", "`ssh … -p PORT bai-test@127.0.0.1 AGENT agent`".to_owned(), &samples))
}

/// The agent over bai's own SSH client: connect, exec, `hello`, pings, as `bai apply` does per node.
fn rpc_russh(fleet: &Sshd, agent: &Path) -> Result<Rpc, String> {
    let target = SshTarget {
        node: "node0".to_owned(),
        host: "127.0.0.1".to_owned(),
        port: fleet.port(0),
        user: USER.to_owned(),
        identity: Some(fleet.client_key_path().to_path_buf()),
        known_hosts: fleet.known_hosts_path().to_path_buf(),
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(10),
        keepalive_interval: Some(SshTarget::KEEPALIVE_INTERVAL),
        keepalive_max: SshTarget::KEEPALIVE_MAX,
        jumps: Vec::new(),
    };
    // The runtime `bai apply` runs on: two worker threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let samples = runtime.block_on(async {
        let session = connect(&target).await.map_err(|e| format!("bai's SSH client: {e}"))?;
        let command = format!("{} agent", shell_word(&agent.display().to_string()));
        let stream = session.exec_stream(&command).await.map_err(|e| format!("bai's SSH client: {e}"))?;
        let mut client = AgentClient::new(stream);
        client.hello("bench", "node0", false, "bench").await.map_err(|e| format!("hello over russh: {e}"))?;
        let mut samples = Vec::with_capacity(PINGS);
        for _ in 0..PINGS {
            let started = Instant::now();
            client.call::<serde_json::Value>(Method::Ping).await.map_err(|e| format!("ping over russh: {e}"))?;
            samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
        drop(client);
        session.close().await;
        Ok::<_, String>(samples)
    })?;
    Ok(Rpc::of("bai (russh) exec", "`bai::transport::ssh::connect` + `exec_stream` + `AgentClient`".into(), &samples))
}

impl Rpc {
    fn of(transport: &'static str, how: String, samples: &[f64]) -> Rpc {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        // Nearest-rank percentiles.
        let rank = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Rpc { transport, how, median_ms: rank(0.5), p99_ms: rank(0.99), max_ms: sorted[sorted.len() - 1] }
    }
}

// ---------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------

fn run_checked(cmd: Command, what: &str) -> Result<Duration, String> {
    let started = Instant::now();
    output(cmd, what)?;
    Ok(started.elapsed())
}

fn bai_version() -> Result<String, String> {
    let mut cmd = Command::new(BAI);
    cmd.arg("--version");
    let out = output(cmd, "`bai --version`")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().last().map(str::to_owned).ok_or_else(|| format!("`bai --version` printed {text:?}"))
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// The lab for the first `n` nodes of the fleet: cluster `fanout-<n>`, one vfolder per node; returns its path.
fn write_lab(fleet: &Sshd, n: usize) -> Result<PathBuf, String> {
    let mut text = format!(
        "cluster \"fanout-{n}\" {{\n    ssh user=\"{USER}\" identity=\"{}\" known-hosts=\"{}\" connect-timeout=\"10s\"\n",
        fleet.client_key_path().display(),
        fleet.known_hosts_path().display()
    );
    for i in 0..n {
        text.push_str(&format!(
            "    node \"node{i}\" address=\"127.0.0.1\" {{\n        ssh port={}\n    }}\n    vfolder \"data-{i}\" node=\"node{i}\"\n",
            fleet.port(i)
        ));
    }
    text.push_str("}\n");
    let path = fleet.scratch().join(format!("fanout-{n}.kdl"));
    fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(samples: &[f64]) -> Stat {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
        Stat { median, min: sorted[0], max: sorted[sorted.len() - 1] }
    }
}

/// CPU time in ms spent by the parts of a round: this bench's children (the `ssh` clients, or `bai`, the
/// controller), the nodes' sshd (the listeners and, once reaped, every per-connection sshd and what it ran:
/// the agent), and the machine's Docker engine (`dockerd` itself; it serves every node here).
#[derive(Clone, Copy, Default)]
struct Cpu {
    controller: f64,
    sshd: f64,
    dockerd: f64,
}

impl Cpu {
    fn now(fleet: &Sshd) -> Cpu {
        // SAFETY: getrusage writes one rusage through the pointer given; sysconf reads a constant.
        let (children, tick) = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
            (usage, libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64)
        };
        let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
        let ticks_ms = |pids: &[i32], with_children: bool| -> f64 {
            pids.iter().map(|&pid| proc_ticks(pid, with_children)).sum::<u64>() as f64 * 1e3 / tick
        };
        Cpu {
            controller: ms(children.ru_utime) + ms(children.ru_stime),
            sshd: ticks_ms(&fleet.listener_pids(), true),
            dockerd: ticks_ms(&pids_named("dockerd"), false),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            controller: self.controller - before.controller,
            sshd: self.sshd - before.sshd,
            dockerd: self.dockerd - before.dockerd,
        }
    }

    fn per_node(&self, n: usize) -> Cpu {
        let n = n as f64;
        Cpu { controller: self.controller / n, sshd: self.sshd / n, dockerd: self.dockerd / n }
    }

    fn total(&self) -> f64 {
        self.controller + self.sshd + self.dockerd
    }

    fn median(samples: &[Cpu]) -> Cpu {
        let of = |f: fn(&Cpu) -> f64| Stat::of(&samples.iter().map(f).collect::<Vec<_>>()).median;
        Cpu { controller: of(|c| c.controller), sshd: of(|c| c.sshd), dockerd: of(|c| c.dockerd) }
    }
}

/// utime + stime (and, with `children`, cutime + cstime) of a process, in clock ticks; 0 when it is gone.
fn proc_ticks(pid: i32, children: bool) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The command name may hold spaces and parentheses: the fields start after the last `)`.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    match fields.as_slice() {
        [utime, stime, cutime, cstime] => utime + stime + if children { cutime + cstime } else { 0 },
        _ => 0,
    }
}

/// The pids of processes whose command name is `name`.
fn pids_named(name: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

fn verdict(value: f64, ok: bool) -> String {
    format!("**{value:.2}** {}", if ok { "PASS" } else { "MISS" })
}

fn print_report(options: &Options, rows: &[Row], rpcs: &[Rpc], agent_hash: &str) {
    let args: Vec<String> = env::args().skip(1).filter(|a| a != "--bench").collect();
    println!("## bai fan-out benchmark\n");
    let args = if args.is_empty() { String::new() } else { format!(" -- {}", args.join(" ")) };
    println!("- command: `cargo bench --bench fanout{args}`");
    println!("- machine: {}", machine());
    let size_mb = fs::metadata(BAI).map_or(0.0, |m| m.len() as f64 / 1e6);
    println!("- bai: `{BAI}` ({size_mb:.1} MB: every node's agent is this file)");
    println!("- runs: {} per measurement after one unmeasured round, median reported (min–max beside)", options.runs);
    println!("- nodes: one `{SSHD}` per node on 127.0.0.1, login `{USER}`, fresh nodes for each N");
    println!(
        "- ssh true: `ssh -i KEY -o UserKnownHostsFile=FILE -o StrictHostKeyChecking=yes -o BatchMode=yes \
         -o KexAlgorithms=curve25519-sha256 -p PORT {USER}@127.0.0.1 true` on the N nodes at once"
    );
    println!("- bai no-op: `{BAI} apply --yes LAB --parallel N` (prints `No changes.`)");
    println!("- agent on the nodes: `NODE_HOME/.local/share/bai/agent/{agent_hash}/bai`");
    println!();
    println!(
        "| nodes | ssh `true` s (min–max) | bai no-op s (min–max) | bai / ssh (≤ {MAX_NOOP_RATIO}) | \
         bai per node ms | ssh per node ms |"
    );
    println!("|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let ratio = row.bai.median / row.ssh.median;
        println!(
            "| {} | {:.3} ({:.3}–{:.3}) | {:.3} ({:.3}–{:.3}) | {} | {:.1} | {:.1} |",
            row.nodes,
            row.ssh.median,
            row.ssh.min,
            row.ssh.max,
            row.bai.median,
            row.bai.min,
            row.bai.max,
            verdict(ratio, ratio <= MAX_NOOP_RATIO),
            row.bai.median / row.nodes as f64 * 1e3,
            row.ssh.median / row.nodes as f64 * 1e3,
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && last.nodes > first.nodes
    {
        let extra = (last.nodes - first.nodes) as f64;
        println!(
            "\nMarginal cost of one more node ({} → {} nodes): bai {:.1} ms, ssh `true` {:.1} ms.",
            first.nodes,
            last.nodes,
            (last.bai.median - first.bai.median) / extra * 1e3,
            (last.ssh.median - first.ssh.median) / extra * 1e3,
        );
    }
    println!();
    println!(
        "CPU per node of one round, ms (median of the runs): the controller (the `ssh` clients, or `bai`), \
         the nodes' sshd with what they ran (the agent), the Docker engine (`dockerd`):\n"
    );
    println!("| nodes | what | controller | sshd + agent | dockerd | total | total / ssh `true` |");
    println!("|--:|---|--:|--:|--:|--:|--:|");
    for row in rows {
        for (what, cpu) in [("ssh `true`", row.ssh_cpu), ("bai no-op", row.bai_cpu)] {
            println!(
                "| {} | {what} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
                row.nodes,
                cpu.controller,
                cpu.sshd,
                cpu.dockerd,
                cpu.total(),
                cpu.total() / row.ssh_cpu.total().max(f64::MIN_POSITIVE),
            );
        }
    }
    println!();
    println!("| warm RPC (`ping`, {PINGS} in a row) | median ms | p99 ms | max ms | median < {MAX_RPC_MS} ms |");
    println!("|---|--:|--:|--:|--:|");
    for rpc in rpcs {
        println!(
            "| {} ({}) | {:.3} | {:.3} | {:.3} | {} |",
            rpc.transport,
            rpc.how,
            rpc.median_ms,
            rpc.p99_ms,
            rpc.max_ms,
            if rpc.median_ms < MAX_RPC_MS { "PASS" } else { "MISS" },
        );
    }
}
