//! Reaching what runs, timed: how soon `bai logs` shows a session's first line and `bai exec` its shell's
//! prompt on a warm node, and how fast `bai port-forward` carries a download next to OpenSSH's own
//! forward (`ssh -L`) over the same node.
//!
//! ```text
//! cargo bench --bench reach -- [--runs N] [--mib M]
//! ```
//!
//! # The node
//!
//! One real OpenSSH server on 127.0.0.1 (the harness of the integration tests, tests/harness/sshd.rs, as
//! the `fanout` bench uses it), the machine's Docker engine, and a lab of two sessions from a busybox
//! image built from a local context: `talker` (prints one line, then sleeps) and `webserver` (busybox `httpd`
//! serving a file of M MiB of random bytes, default 256). Setup, not measured: `bai apply` (which installs
//! the agent on the node: "warm" from then on) and one unmeasured run of each measurement.
//!
//! # What is measured (the release build of `bai`, as child processes, median of the runs)
//!
//! - first log line: from spawning `bai logs LAB talker --tail 1` to the first byte on its stdout. What it
//!   takes: one SSH connection, the agent's hash check and start, `hello`, the stream call, Docker's log.
//! - exec prompt: from spawning `bai exec -i LAB webserver -- busybox sh -i` to the shell's prompt (`# `,
//!   which busybox writes on stdout); one SSH connection, the agent, Docker's exec create and start.
//! - port-forward throughput: an HTTP/1.0 GET of the file through `bai port-forward LAB webserver L:8080`, read
//!   to its end (length checked), against the same GET through `ssh -N -L L2:IP:8080` to the container's
//!   address over the same node, OpenSSH's default cipher and, for a like-for-like cipher, AES-256-GCM
//!   (what bai's client prefers). Rounds alternate between the forwards. Target: bai ≥ 0.8× OpenSSH.

#[path = "common/sshfleet.rs"]
mod sshfleet;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use sshfleet::{Sshd, output};

const BAI: &str = env!("CARGO_BIN_EXE_bai");
const USAGE: &str = "usage: cargo bench --bench reach -- [--runs N] [--mib M]   (default N: 15, M: 256)";
/// Targets of issue 14.
const MAX_FIRST_MS: f64 = 300.0;
const MIN_FORWARD_RATIO: f64 = 0.8;

fn main() -> ExitCode {
    match bench_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("reach: {message}");
            ExitCode::FAILURE
        }
    }
}

fn bench_main() -> Result<(), String> {
    let (runs, mib) = parse_args()?;
    let fleet = Sshd::try_start(1, "reach")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let lab = write_lab(&fleet, dir.path(), mib)?;
    let _clean = Cleanup(cluster_name(dir.path()));
    eprintln!("reach: setup apply");
    let mut apply = Command::new(BAI);
    apply.args(["apply", "--yes", "--accept-new-host-keys"]).arg(&lab);
    output(apply, "setup `bai apply`")?;
    let ip = container_ip(&format!("bai.{}.webserver", cluster_name(dir.path())))?;
    wait_http(&ip, 8080, mib)?;

    let mut first_line = Vec::new();
    let mut prompt = Vec::new();
    time_first_line(&lab)?;
    time_prompt(&lab)?;
    for _ in 0..runs {
        first_line.push(time_first_line(&lab)?);
        prompt.push(time_prompt(&lab)?);
    }

    // The forwards: bai's, and OpenSSH's with its default cipher and with AES-256-GCM.
    let bai_port = sshfleet::free_port()?;
    let ssh_port = sshfleet::free_port()?;
    let gcm_port = sshfleet::free_port()?;
    let _bai = Guard(spawn_forward_bai(&lab, bai_port)?);
    let _ssh = Guard(spawn_forward_ssh(&fleet, ssh_port, &ip, None)?);
    let _gcm = Guard(spawn_forward_ssh(&fleet, gcm_port, &ip, Some("aes256-gcm@openssh.com"))?);
    for port in [bai_port, ssh_port, gcm_port] {
        download(port, mib)?;
    }
    let (mut bai, mut ssh, mut gcm) = (Vec::new(), Vec::new(), Vec::new());
    let rounds = runs.clamp(3, 7);
    for round in 1..=rounds {
        bai.push(download(bai_port, mib)?);
        ssh.push(download(ssh_port, mib)?);
        gcm.push(download(gcm_port, mib)?);
        eprintln!(
            "reach: download round {round}/{rounds}: bai {:.0}, ssh {:.0}, ssh aes-gcm {:.0} MiB/s",
            last(&bai),
            last(&ssh),
            last(&gcm)
        );
    }

    let (first, first90) = (median(&first_line) * 1e3, pct(&first_line, 0.9) * 1e3);
    let (exec, exec90) = (median(&prompt) * 1e3, pct(&prompt, 0.9) * 1e3);
    let (b, s, g) = (median(&bai), median(&ssh), median(&gcm));
    println!("reach: {}", sshfleet::machine());
    println!("one warm node on loopback, {runs} runs (median, p90); downloads of {mib} MiB, {rounds} rounds (median)");
    println!(
        "  first log line (bai logs --tail 1)      {first:7.1} ms  p90 {first90:7.1} ms  target < {MAX_FIRST_MS} ms"
    );
    println!(
        "  exec prompt (bai exec -i … sh -i)        {exec:7.1} ms  p90 {exec90:7.1} ms  target < {MAX_FIRST_MS} ms"
    );
    println!("  port-forward: bai                         {b:7.0} MiB/s");
    println!("  port-forward: ssh -L (OpenSSH default)    {s:7.0} MiB/s  bai/ssh {:.2}", b / s);
    println!(
        "  port-forward: ssh -L -c aes256-gcm        {g:7.0} MiB/s  bai/ssh {:.2}  target ≥ {MIN_FORWARD_RATIO}",
        b / g
    );
    let pass = first < MAX_FIRST_MS && exec < MAX_FIRST_MS && b / s.max(g) >= MIN_FORWARD_RATIO;
    println!("  {}", if pass { "PASS" } else { "FAIL" });
    Ok(())
}

fn parse_args() -> Result<(usize, u64), String> {
    let (mut runs, mut mib) = (15, 256);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).ok_or(USAGE)?,
            "--mib" => mib = args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).ok_or(USAGE)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok((runs, mib))
}

fn cluster_name(dir: &Path) -> String {
    format!(
        "reach-{}",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .trim_start_matches('.')
            .replace(|c: char| !c.is_ascii_alphanumeric(), "")
    )
}

fn write_lab(fleet: &Sshd, dir: &Path, mib: u64) -> Result<PathBuf, String> {
    let img = dir.join("img");
    std::fs::create_dir_all(&img).map_err(|e| e.to_string())?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("busybox-static is missing (scripts/test installs it)")?;
    std::fs::copy(busybox, img.join("busybox")).map_err(|e| e.to_string())?;
    std::fs::write(img.join("Dockerfile"), "FROM scratch\nCOPY busybox /bin/busybox\nENV PATH=/bin\n")
        .map_err(|e| e.to_string())?;
    let lab = dir.join("lab.kdl");
    let text = format!(
        r#"cluster "{cluster}" {{
    ssh user="bai-test" identity="{key}" known-hosts="{known}" connect-timeout="10s"
    image "box" ref="bai-bench/box:1" {{
        build context="./img"
    }}
    node "node0" address="127.0.0.1" {{
        ssh port={port}
    }}
    session "talker" image="box" node="node0" {{
        command "/bin/busybox" "sh" "-c" "echo ready; exec /bin/busybox sleep 86400"
    }}
    session "webserver" image="box" node="node0" {{
        command "/bin/busybox" "sh" "-c" "mkdir -p /www && /bin/busybox dd if=/dev/urandom of=/www/big bs=1048576 count={mib} 2>/dev/null && exec /bin/busybox httpd -f -p 8080 -h /www"
        port http=8080
    }}
}}
"#,
        cluster = cluster_name(dir),
        key = fleet.client_key_path().display(),
        known = fleet.known_hosts_path().display(),
        port = fleet.port(0),
    );
    std::fs::write(&lab, text).map_err(|e| e.to_string())?;
    Ok(lab)
}

/// Removes the bench's containers however it ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=ai.bai.cluster={}", self.0);
        if let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

/// A child killed when the bench is done with it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn container_ip(name: &str) -> Result<String, String> {
    let mut cmd = Command::new("docker");
    cmd.args(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name]);
    let out = output(cmd, "docker inspect")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until the web session serves the whole file (it writes it before it listens).
fn wait_http(ip: &str, port: u16, mib: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if get(ip, port, mib).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("the web session never served {mib} MiB on {ip}:{port}"))
}

/// One GET of the file, read to its end; its length checked.
fn get(host: &str, port: u16, mib: u64) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /big HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) => return Err(e.to_string()),
        }
    }
    let took = start.elapsed();
    let body = mib << 20;
    if total < body || total > body + 4096 {
        return Err(format!("read {total} bytes, expected {body} and headers"));
    }
    Ok(took)
}

fn download(port: u16, mib: u64) -> Result<f64, String> {
    let took = get("127.0.0.1", port, mib)?;
    Ok(mib as f64 / took.as_secs_f64())
}

fn time_first_line(lab: &Path) -> Result<f64, String> {
    let start = Instant::now();
    let mut child = Command::new(BAI)
        .args(["logs"])
        .arg(lab)
        .args(["talker", "--tail", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut byte = [0u8; 1];
    let n = stdout.read(&mut byte).map_err(|e| e.to_string())?;
    let took = start.elapsed().as_secs_f64();
    let status = child.wait().map_err(|e| e.to_string())?;
    if n == 0 || !status.success() {
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        return Err(format!("bai logs printed nothing ({status}): {err}"));
    }
    Ok(took)
}

fn time_prompt(lab: &Path) -> Result<f64, String> {
    let start = Instant::now();
    let mut child = Command::new(BAI)
        .args(["exec", "-i"])
        .arg(lab)
        .args(["webserver", "--", "/bin/busybox", "sh", "-i"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    // busybox's shell writes its prompt on stdout.
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    let took = loop {
        match stdout.read(&mut byte) {
            Ok(1) => {
                seen.push(byte[0]);
                if seen.ends_with(b"# ") {
                    break start.elapsed().as_secs_f64();
                }
            }
            _ => return Err(format!("no prompt: {}", String::from_utf8_lossy(&seen))),
        }
    };
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let _ = stdin.write_all(b"exit 0\n");
    drop(stdin);
    let _ = child.wait();
    Ok(took)
}

fn spawn_forward_bai(lab: &Path, port: u16) -> Result<Child, String> {
    let mut child = Command::new(BAI)
        .arg("port-forward")
        .arg(lab)
        .args(["webserver", &format!("{port}:http")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with("Forwarding from") {
        let _ = child.kill();
        return Err(format!("bai port-forward did not start: {line:?}"));
    }
    Ok(child)
}

fn spawn_forward_ssh(fleet: &Sshd, port: u16, ip: &str, cipher: Option<&str>) -> Result<Child, String> {
    let mut cmd = Command::new("ssh");
    cmd.args(["-N", "-L", &format!("127.0.0.1:{port}:{ip}:8080")])
        .args(["-i", &fleet.client_key_path().display().to_string()])
        .args(["-o", &format!("UserKnownHostsFile={}", fleet.known_hosts_path().display())])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"])
        .args(["-p", &fleet.port(0).to_string(), "bai-test@127.0.0.1"])
        .stdin(Stdio::null());
    if let Some(cipher) = cipher {
        cmd.args(["-c", cipher]);
    }
    let child = cmd.spawn().map_err(|e| format!("cannot run ssh: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("ssh -L never listened".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

fn last(v: &[f64]) -> f64 {
    v.last().copied().unwrap_or(0.0)
}

fn median(v: &[f64]) -> f64 {
    pct(v, 0.5)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0)
}
