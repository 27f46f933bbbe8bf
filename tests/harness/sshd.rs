//! Real OpenSSH servers, shared by the integration tests (`tests/it/support/sshd.rs`) and the benches
//! that need real nodes (`benches/common/sshfleet.rs`), each of which includes this file with `#[path]`:
//! N `/usr/sbin/sshd -D -e -f CFG -E LOG` on 127.0.0.1, each on its own port with a throwaway ed25519
//! host key and its own `$HOME` (sshd's `SetEnv HOME=…`, owned by the login user `bai-test`), all
//! accepting one throwaway client key; a known_hosts file with every server's line. Tests never see each
//! other's agent installs or files, and nothing is left behind in `/home/bai-test`. [`Sshd::start_in`]
//! starts them inside a network namespace instead, each on the address and port given (through `nsenter
//! --net`, ready when its log says it listens): nodes only a jump host reaches.
//!
//! `MaxStartups 500:30:1000` lets hundreds of connections in at once (OpenSSH's default, 10:30:100,
//! starts refusing unauthenticated connections at 10). The servers and everything under them (per
//! connection sshd processes, the agents they run) are killed when the [`Sshd`] is dropped, on a panic
//! too, and die with the process if it is killed (`PR_SET_PDEATHSIG`).
//!
//! The user, sshd and `/run/sshd` come from `scripts/test`; the harness never creates the user and says
//! where to look when something is missing: a test that needs real parts fails, it is never skipped.
//!
//! `tests/harness/` holds no `main.rs`: it is not a test target of its own.

// Each includer uses its own part of this module; what one of them leaves unused is not dead.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bai::transport::ssh::SshTarget;

/// The login user on every node.
pub const USER: &str = "bai-test";
pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    dir: tempfile::TempDir,
    client_key: PathBuf,
    known_hosts: PathBuf,
    nodes: Vec<Node>,
}

struct Node {
    /// The address sshd listens on: 127.0.0.1, or one of a network namespace ([`Sshd::start_in`]).
    listen: String,
    /// The network namespace (a name under /run/netns) sshd runs in; `None`: the machine's own.
    netns: Option<String>,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Lines added to sshd_config, and `NAME=VALUE` words added to its `SetEnv` ([`Sshd::reconfigure`]).
    extra: String,
    env: Vec<String>,
    /// Whether the server dies with the thread that started it.
    bound: bool,
    /// The log's length when the server was last launched.
    log_from: u64,
}

impl Sshd {
    /// Starts `n` servers and waits until each accepts connections; panics, saying why, when it cannot.
    pub fn start(n: usize) -> Sshd {
        Sshd::launch_all(n, "test", false).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Starts `n` servers for a bench run from its main thread; `tag` names the bench in the scratch
    /// directory's name. The servers die with the bench even when it is killed outright.
    pub fn try_start(n: usize, tag: &str) -> Result<Sshd, String> {
        Sshd::launch_all(n, tag, true)
    }

    /// Servers inside the network namespace `netns` (a name under /run/netns), one per `(address, port)`
    /// given, all accepting the same client key as [`start`](Self::start)'s. Unreachable from this
    /// machine's own namespace unless the address is one it routes to: what tests of jump hosts need.
    pub fn start_in(netns: &str, listen: &[(&str, u16)]) -> Sshd {
        let places: Vec<(String, Option<String>, u16)> =
            listen.iter().map(|(address, port)| (address.to_string(), Some(netns.to_string()), *port)).collect();
        Sshd::launch(&places, "test", false).unwrap_or_else(|why| panic!("{why}"))
    }

    /// `bound`: each server gets SIGKILL when the thread that started it ends ([`die_with_parent`]); not
    /// for tests, whose helpers may restart a server from a thread that ends first.
    fn launch_all(n: usize, tag: &str, bound: bool) -> Result<Sshd, String> {
        let places: Vec<(String, Option<String>, u16)> = (0..n).map(|_| ("127.0.0.1".to_string(), None, 0)).collect();
        Sshd::launch(&places, tag, bound)
    }

    /// One server per `(address, network namespace, port)`; port 0: a free one of this machine's.
    fn launch(places: &[(String, Option<String>, u16)], tag: &str, bound: bool) -> Result<Sshd, String> {
        let (uid, gid) = test_user()?;
        if !Path::new(SSHD).exists() {
            return Err(format!("{SSHD} is missing: run scripts/test (as root) once, it installs openssh-server"));
        }
        // sshd's privilege-separation directory; nothing else creates it without systemd.
        fs::create_dir_all("/run/sshd")
            .map_err(|e| format!("cannot create /run/sshd: {e} (run scripts/test as root once)"))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bai-{tag}-sshd-"))
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        // sshd reads AuthorizedKeysFile as the logged-in user: everything on the way must be readable to it.
        set_mode(dir.path(), 0o755)?;
        let client_key = dir.path().join("client_key");
        keygen(&client_key)?;
        let authorized_keys = dir.path().join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized_keys)
            .map_err(|e| format!("cannot write authorized_keys: {e}"))?;
        set_mode(&authorized_keys, 0o644)?;

        let mut sshd = Sshd { known_hosts: dir.path().join("known_hosts"), dir, client_key, nodes: Vec::new() };
        for (i, (listen, netns, port)) in places.iter().enumerate() {
            let node_dir = sshd.dir.path().join(format!("node{i}"));
            fs::create_dir(&node_dir).map_err(|e| format!("cannot create {}: {e}", node_dir.display()))?;
            set_mode(&node_dir, 0o755)?;
            keygen(&node_dir.join("host_key"))?;
            let home = node_dir.join("home");
            fs::create_dir(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
            std::os::unix::fs::chown(&home, Some(uid), Some(gid))
                .map_err(|e| format!("cannot chown {} to {USER}: {e}", home.display()))?;
            set_mode(&home, 0o700)?;
            // Pushed before it starts, so that dropping the harness stops it whatever happens next.
            sshd.nodes.push(Node {
                listen: listen.clone(),
                netns: netns.clone(),
                port: *port,
                config: node_dir.join("sshd_config"),
                log: node_dir.join("sshd.log"),
                dir: node_dir,
                child: None,
                extra: String::new(),
                env: Vec::new(),
                bound,
                log_from: 0,
            });
            if let Some(node) = sshd.nodes.last_mut() {
                if node.port == 0 {
                    node.launch_on_free_port(&authorized_keys)?;
                } else {
                    node.write_config(&authorized_keys)?;
                    node.launch()?;
                    node.wait_ready().map_err(|why| format!("sshd did not start: {why}\n{}", node.log_text()))?;
                }
            }
        }
        let all: Vec<usize> = (0..places.len()).collect();
        sshd.write_known_hosts(&sshd.known_hosts, &all);
        Ok(sshd)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// The node's name in targets built here: `node0`, `node1`, …
    pub fn node_name(&self, i: usize) -> String {
        format!("node{i}")
    }

    /// The host's public key as OpenSSH writes it: `ssh-ed25519 AAAA…` (no comment).
    pub fn host_pubkey(&self, i: usize) -> String {
        let text = fs::read_to_string(self.host_pubkey_path(i)).expect("read host public key");
        text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }

    pub fn host_pubkey_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("host_key.pub")
    }

    pub fn known_hosts_line(&self, i: usize) -> String {
        format!("[{}]:{} {}", self.nodes[i].listen, self.port(i), self.host_pubkey(i))
    }

    /// The address node `i` listens on.
    pub fn address(&self, i: usize) -> &str {
        &self.nodes[i].listen
    }

    /// The host key's SHA-256 fingerprint as ssh prints it (`SHA256:…`).
    pub fn host_fingerprint(&self, i: usize) -> String {
        let out = Command::new("ssh-keygen").arg("-lf").arg(self.host_pubkey_path(i)).output().expect("ssh-keygen -lf");
        String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap_or_default().to_string()
    }

    /// Writes a known_hosts file trusting the nodes in `which`.
    pub fn write_known_hosts(&self, path: &Path, which: &[usize]) {
        let text: String = which.iter().map(|&i| self.known_hosts_line(i) + "\n").collect();
        fs::write(path, text).expect("write known_hosts");
    }

    /// A known_hosts file that trusts every node of this harness.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// The pids of the sshd listeners (what runs on "the nodes" hangs below them).
    pub fn listener_pids(&self) -> Vec<i32> {
        self.nodes.iter().filter_map(|n| n.child.as_ref()).map(|c| c.id() as i32).collect()
    }

    /// The private key every node accepts for `bai-test`.
    pub fn client_key_path(&self) -> &Path {
        &self.client_key
    }

    /// Lets one more public key (a `.pub` file's line) log in to every node.
    pub fn authorize_key(&self, public_key: &str) {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("open authorized_keys");
        writeln!(file, "{}", public_key.trim()).expect("append to authorized_keys");
    }

    /// A scratch directory for the test, removed with the harness.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The node's `$HOME` as its sessions see it.
    pub fn home(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("home")
    }

    /// How to reach node `i`: its port, the client key, and the harness's known_hosts that trusts every node.
    pub fn target(&self, i: usize) -> SshTarget {
        SshTarget {
            node: self.node_name(i),
            host: self.nodes[i].listen.clone(),
            port: self.port(i),
            user: USER.to_owned(),
            identity: Some(self.client_key.clone()),
            known_hosts: self.known_hosts.clone(),
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Some(SshTarget::KEEPALIVE_INTERVAL),
            keepalive_max: SshTarget::KEEPALIVE_MAX,
            jumps: Vec::new(),
            compression: false,
        }
    }

    /// Restarts node `i` on its port with `lines` added to its sshd_config (a `ForceCommand` that makes it
    /// a compromised node, say) and `env` (`NAME=VALUE`) added to what its sessions get.
    pub fn reconfigure(&mut self, i: usize, lines: &str, env: &[&str]) {
        let authorized_keys = self.dir.path().join("authorized_keys");
        let node = &mut self.nodes[i];
        node.extra = lines.to_string();
        node.env = env.iter().map(|e| e.to_string()).collect();
        node.write_config(&authorized_keys).unwrap_or_else(|why| panic!("{why}"));
        self.restart(i);
    }

    /// sshd's log for node `i`, for failure messages.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Stops node `i` gently (SIGTERM to the listener and its sessions).
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].terminate(libc::SIGTERM);
    }

    /// Kills node `i` outright (SIGKILL), open sessions and their commands included: a node that dies.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].terminate(libc::SIGKILL);
    }

    /// Starts node `i` again on the same port with the same host key.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.terminate(libc::SIGTERM);
        if let Err(why) = node.launch().and_then(|()| node.wait_ready()) {
            panic!("sshd for node{i} did not come back on port {}: {why}\n{}", node.port, node.log_text());
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.terminate(libc::SIGKILL);
        }
    }
}

impl Node {
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
                    self.terminate(libc::SIGKILL);
                }
            }
        }
        Err(format!("sshd did not start: {last}\n{}", self.log_text()))
    }

    fn write_config(&self, authorized_keys: &Path) -> Result<(), String> {
        // Absolute paths only: sshd re-executes itself per connection, from another directory.
        let dir = &self.dir;
        let config = format!(
            "Port {port}\n\
             ListenAddress {listen}\n\
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
             SetEnv HOME={home}{env}\n\
             {extra}",
            port = self.port,
            listen = self.listen,
            host_key = dir.join("host_key").display(),
            pid = dir.join("sshd.pid").display(),
            authorized_keys = authorized_keys.display(),
            home = dir.join("home").display(),
            env = self.env.iter().map(|e| format!(" {e}")).collect::<String>(),
            extra = self.extra,
        );
        fs::write(&self.config, config).map_err(|e| format!("cannot write sshd_config: {e}"))
    }

    fn launch(&mut self) -> Result<(), String> {
        // In a namespace: `nsenter --net` execs sshd there (no fork: the child is sshd itself). Not `ip netns
        // exec`, which also remounts /sys for the command.
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net=/run/netns/{netns}")).arg(SSHD);
                cmd
            }
            None => Command::new(SSHD),
        };
        // Where this run's lines start in the log (`-E` appends): readiness is read from there on.
        self.log_from = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .arg("-E")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.bound {
            die_with_parent(&mut cmd);
        }
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
            // A server in another namespace cannot be dialled from here: it says in its log that it listens.
            let listening = match &self.netns {
                None => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
                Some(_) => {
                    let log = fs::read(&self.log).unwrap_or_default();
                    let fresh =
                        String::from_utf8_lossy(log.get(self.log_from as usize..).unwrap_or_default()).into_owned();
                    fresh.contains(&format!("Server listening on {} port {}", self.listen, self.port))
                }
            };
            if listening {
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

    /// Signals the listener and every process under it (per-connection sshd processes and the commands
    /// they run start sessions of their own, so a process group would miss them), then reaps the listener.
    ///
    /// The tree is frozen first (SIGSTOP, again for each process found, until no new one appears): a
    /// listener still running while its children are signalled one by one can accept a connection in
    /// between — a watcher reconnecting the moment its agent died — and fork a child that nobody
    /// signals. That orphan serves the node on as if it had never stopped; on a loaded machine this
    /// happened, and a watch test waited in vain for the node to go down.
    fn terminate(&mut self, signal: i32) {
        let Some(mut child) = self.child.take() else { return };
        let root = child.id() as i32;
        let mut frozen: Vec<i32> = Vec::new();
        for pid in std::iter::once(root).chain(descendants(root)) {
            freeze(pid, &mut frozen);
        }
        loop {
            // Let the stops land (a process in the middle of `fork` finishes it first), then look again.
            std::thread::sleep(Duration::from_millis(5));
            let fresh: Vec<i32> = descendants(root).into_iter().filter(|p| !frozen.contains(p)).collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                freeze(pid, &mut frozen);
            }
        }
        for &pid in &frozen {
            // SAFETY: kill(2) with a pid we found under our own child; a stale pid only yields ESRCH.
            unsafe {
                libc::kill(pid, signal);
                libc::kill(pid, libc::SIGCONT);
            }
        }
        if signal == libc::SIGTERM {
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Stops `pid` (SIGSTOP) and remembers it.
fn freeze(pid: i32, frozen: &mut Vec<i32>) {
    // SAFETY: kill(2) with a pid we found under our own child; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    frozen.push(pid);
}

/// Every process below any of `roots`, read from /proc.
pub fn descendants_of(roots: &[i32]) -> Vec<i32> {
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

fn descendants(root: i32) -> Vec<i32> {
    descendants_of(&[root])
}

/// Makes the child get SIGKILL when the thread that spawns it dies: a test or bench killed outright (no
/// Drop runs then) leaves no server behind. Spawn from a thread that lives as long as the servers.
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

pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind a free port: {e}"))
}

fn keygen(path: &Path) -> Result<(), String> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bai-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh-keygen (openssh-client; run scripts/test): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ssh-keygen failed for {}: {}", path.display(), String::from_utf8_lossy(&out.stderr)))
    }
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
