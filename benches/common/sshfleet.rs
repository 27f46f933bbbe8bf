//! The SSH fleet shared by the benches that need real nodes (`fanout`, `probe`): K OpenSSH servers
//! (`/usr/sbin/sshd -D -e -f CFG -E LOG`) on 127.0.0.1, each on its own port with a throwaway ed25519
//! host key and its own `$HOME` (`SetEnv HOME=…`, owned by the login user `bai-test`, which
//! `scripts/test` creates), all accepting one throwaway client key; a known_hosts file with every
//! server's `[127.0.0.1]:PORT ssh-ed25519 …` line; and the small process helpers the benches share.
//!
//! `MaxStartups 500:30:1000` lets hundreds of connections in at once (OpenSSH's default, 10:30:100,
//! starts refusing unauthenticated connections at 10). The servers and everything under them (per
//! connection sshd processes, the agents they run) are killed when the [`Fleet`] is dropped, on an error
//! or a panic too, and die with the bench if it is killed (`PR_SET_PDEATHSIG`).
//!
//! Included by each bench with `#[path = "common/sshfleet.rs"] mod sshfleet;`: a directory under
//! `benches/` is not a bench target of its own.

// Each bench uses its own part of this module; what one of them leaves unused is not dead.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
/// The login user on every node.
pub const USER: &str = "bai-test";

/// K sshd servers and the keys to reach them.
pub struct Fleet {
    dir: tempfile::TempDir,
    client_key: PathBuf,
    known_hosts: PathBuf,
    nodes: Vec<SshNode>,
}

struct SshNode {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Fleet {
    /// Starts `k` servers; `tag` names the bench in messages and in the scratch directory's name.
    pub fn start(k: usize, tag: &str) -> Result<Fleet, String> {
        eprintln!("{tag}: starting {k} sshd");
        let (uid, gid) = test_user()?;
        if !Path::new(SSHD).exists() {
            return Err(format!("{SSHD} is missing: run scripts/test (as root) once, it installs openssh-server"));
        }
        // sshd's privilege-separation directory; nothing else creates it without systemd.
        fs::create_dir_all("/run/sshd").map_err(|e| format!("cannot create /run/sshd: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bai-{tag}-"))
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        // sshd reads AuthorizedKeysFile as the logged-in user: everything on the way must be readable to it.
        set_mode(dir.path(), 0o755)?;
        let client_key = dir.path().join("client_key");
        keygen(&client_key, tag)?;
        let authorized_keys = dir.path().join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized_keys)
            .map_err(|e| format!("cannot write authorized_keys: {e}"))?;
        set_mode(&authorized_keys, 0o644)?;
        let known_hosts = dir.path().join("known_hosts");
        let mut fleet = Fleet { dir, client_key, known_hosts, nodes: Vec::with_capacity(k) };
        let mut known = String::new();
        for i in 0..k {
            let node_dir = fleet.dir.path().join(format!("node{i}"));
            fs::create_dir(&node_dir).map_err(|e| format!("cannot create {}: {e}", node_dir.display()))?;
            set_mode(&node_dir, 0o755)?;
            keygen(&node_dir.join("host_key"), tag)?;
            let home = node_dir.join("home");
            fs::create_dir(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
            std::os::unix::fs::chown(&home, Some(uid), Some(gid))
                .map_err(|e| format!("cannot chown {} to {USER}: {e}", home.display()))?;
            set_mode(&home, 0o700)?;
            // Pushed before it starts, so that the guard kills it whatever happens next.
            fleet.nodes.push(SshNode { port: 0, dir: node_dir, child: None });
            let node = fleet.nodes.last_mut().ok_or("no node")?;
            node.launch_on_free_port(&authorized_keys)?;
            let host_key = fs::read_to_string(node.dir.join("host_key.pub"))
                .map_err(|e| format!("cannot read node{i}'s host key: {e}"))?;
            let host_key = host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            known.push_str(&format!("[127.0.0.1]:{} {host_key}\n", node.port));
        }
        fs::write(&fleet.known_hosts, known).map_err(|e| format!("cannot write known_hosts: {e}"))?;
        Ok(fleet)
    }

    /// How many servers there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Server `i`'s `$HOME` for its logins.
    pub fn home(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("home")
    }

    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// A directory removed with the fleet, for the bench's own files (labs, other homes).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The pids of the sshd listeners (what runs on "the nodes" hangs below them).
    pub fn listener_pids(&self) -> Vec<i32> {
        self.nodes.iter().filter_map(|n| n.child.as_ref()).map(|c| c.id() as i32).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Per-connection sshd processes and the commands they run (agents) start sessions of their own, so
        // a process group would miss them: kill every process below the listeners, then the listeners.
        for pid in descendants(&self.listener_pids()) {
            // SAFETY: kill(2) of a pid found under our own children; a stale pid only yields ESRCH.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl SshNode {
    fn launch_on_free_port(&mut self, authorized_keys: &Path) -> Result<(), String> {
        // A port picked by binding port 0 can be taken by someone else before sshd binds it: retry then.
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port()?;
            self.write_config(authorized_keys)?;
            self.launch()?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(why) => {
                    last = why;
                    if let Some(mut child) = self.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            }
        }
        let log = fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default();
        Err(format!("sshd did not start: {last}\n{log}"))
    }

    fn write_config(&self, authorized_keys: &Path) -> Result<(), String> {
        // Absolute paths only: sshd re-executes itself per connection, from another directory.
        let dir = &self.dir;
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             UsePAM no\n\
             StrictModes no\n\
             UseDNS no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             MaxStartups 500:30:1000\n\
             MaxSessions 100\n\
             AllowUsers {USER}\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             LogLevel VERBOSE\n\
             SetEnv HOME={home}\n",
            port = self.port,
            host_key = dir.join("host_key").display(),
            pid = dir.join("sshd.pid").display(),
            authorized_keys = authorized_keys.display(),
            home = dir.join("home").display(),
        );
        fs::write(dir.join("sshd_config"), config).map_err(|e| format!("cannot write sshd_config: {e}"))
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.join("sshd_config"))
            .arg("-E")
            .arg(self.dir.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("cannot run {SSHD}: {e} (run scripts/test as root once)"))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let Some(child) = self.child.as_mut() else { return Err("not started".to_owned()) };
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("sshd exited ({status})"));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // The port answered: make sure it is our sshd, not a process that took the port first.
                return match child.try_wait() {
                    Ok(None) => Ok(()),
                    _ => Err("sshd exited".to_owned()),
                };
            }
            if Instant::now() > deadline {
                return Err("port never accepted connections".to_owned());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Makes the child get SIGKILL when the thread that spawns it dies: a bench killed outright (no Drop
/// guard runs then) leaves no server or watcher behind. Spawn from the main thread, which lives as long
/// as the bench.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(2) is async-signal-safe; it only asks the kernel for a signal on the parent's death.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Every process below any of `roots`, read from /proc.
pub fn descendants(roots: &[i32]) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
            // The command name in parentheses may hold spaces: the parent pid is the second field after it.
            let Some(after) = stat.rfind(')').map(|at| &stat[at + 1..]) else { continue };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = roots.to_vec();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found.split_off(roots.len())
}

pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind a free port: {e}"))
}

fn keygen(path: &Path, tag: &str) -> Result<(), String> {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", &format!("bai-{tag}"), "-f"]).arg(path);
    output(cmd, "ssh-keygen (openssh-client)").map(drop)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

/// The uid and gid of `bai-test`.
pub fn test_user() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(USER).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(format!("the test user `{USER}` does not exist: run scripts/test as root once, it creates it")),
    }
}

/// Runs a command to the end; a non-zero exit is an error carrying its stderr.
pub fn output(mut cmd: Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} exited {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One line describing the machine, for a report.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or_else(|| "?".to_owned(), |kib| format!("{:.1}", kib / 1024.0 / 1024.0));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores (nproc), {model}, {mem_gib} GiB, Linux {}", kernel.trim())
}
