//! A Docker engine of the harness's own with Docker's NVIDIA device-driver path enabled, for tests of GPU
//! sessions on machines without GPUs; the integration tests include this file with `#[path]`
//! (`tests/it/support/mod.rs`), and a bench may too. `tests/harness/` holds no `main.rs`: it is not a test
//! target of its own.
//!
//! Docker 20.10 registers its `nvidia` device driver (moby's daemon/nvidia_linux.go) when dockerd, as it
//! starts, finds `nvidia-container-runtime-hook` on its PATH; nothing else is looked for
//! (`nvidia-container-cli` is the real hook's business, not Docker's). A device request with that driver
//! (`docker run --gpus`, bollard's `DeviceRequest { driver: "nvidia", device_ids, capabilities: [["gpu"]] }`)
//! then puts `NVIDIA_VISIBLE_DEVICES` into the container's environment — the ids asked for, joined with
//! commas, or `0,1,…` for a count — and adds an OCI prestart hook that runs that binary as
//! `nvidia-container-runtime-hook prestart`, with the container's OCI state (JSON: id, pid, bundle) on stdin
//! and dockerd's own environment. [`GpuEngine::start`] writes a stand-in hook that accepts every container
//! and notes each call ([`GpuEngine::hook_calls`]): what a test sees is exactly what Docker asks of the GPU
//! stack.
//!
//! The engine is a second `dockerd` that shares nothing with the machine's main engine (see
//! `GpuEngine::launch` for every flag and why): its own config file, data root, exec root (and so its own
//! containerd, started by dockerd), pidfile, socket, containerd namespaces and cgroup parent, all named
//! `bai-gpu-<pid>-<n>` after the process that started it, the files under one temporary directory. It runs
//! in a network namespace of its own, where `--bridge none` is safe: in the machine's own namespace, that
//! flag makes dockerd delete the host's `docker0` and breaks the main engine. Its containers get loopback
//! only, which is all the tests need (no registry is reachable anyway: images come from the main engine,
//! [`GpuEngine::load_from_main`]).
//!
//! Dropping a [`GpuEngine`] removes its containers, stops dockerd and deletes the network namespace, the
//! cgroups and the directory, on a panic too. A run killed outright leaves them behind; the next
//! [`GpuEngine::start`] of any process clears what belongs to processes that are gone. An engine kept in a
//! `static` is never dropped: the next run clears it the same way.
//!
//! It needs root (a network namespace, cgroups, dockerd) and Docker Engine 20.10's `dockerd`, `containerd`
//! and `runc`, the docker CLI, iproute2's `ip` and util-linux's `nsenter` and `unshare`; when something is
//! missing it says what, and the test fails: it is never skipped.

// Each includer uses its own part of this module; what one of them leaves unused is not dead.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Every name an engine owns (network namespace, containerd namespace, cgroup, directory) starts with this,
/// then `<pid>-<n>`: the process that started it and its count of engines.
pub const PREFIX: &str = "bai-gpu-";
/// The binary whose presence on dockerd's PATH enables Docker's `nvidia` device driver.
pub const HOOK: &str = "nvidia-container-runtime-hook";
/// Where `ip netns add` puts its namespaces.
const NETNS_DIR: &str = "/run/netns";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// dockerd answers in well under a second on an idle machine; a loaded one running tests in parallel is slower.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// dockerd takes about 2.5 s to stop once it has no containers (it waits for its containerd).
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// What must be on PATH, and where it comes from.
const NEEDED: [(&str, &str); 8] = [
    ("dockerd", "Docker Engine, Debian's docker.io"),
    ("containerd", "Debian's containerd, which docker.io depends on"),
    ("containerd-shim-runc-v2", "Debian's containerd"),
    ("runc", "Debian's runc"),
    ("docker", "the docker CLI, Debian's docker.io or docker-cli"),
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
];

/// A Docker engine of the harness's own, with Docker's NVIDIA device-driver path enabled by a stand-in hook.
pub struct GpuEngine {
    /// `bai-gpu-<pid>-<n>`: the network namespace, the containerd namespace and the cgroup parent.
    name: String,
    /// Config, data root, exec root, socket, pidfile, dockerd's log, the hook and its log; removed last.
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl GpuEngine {
    /// Starts it and waits until it answers; panics, saying what is missing, when it cannot (tests must fail
    /// loudly, never skip).
    pub fn start() -> GpuEngine {
        GpuEngine::try_start().unwrap_or_else(|why| panic!("{why}"))
    }

    /// Starts it, or says why not: for benches, which report instead of panicking.
    pub fn try_start() -> Result<GpuEngine, String> {
        preflight()?;
        // Once per process: engines of this process are alive by definition, and one sweep finds all the dead.
        static SWEPT: Once = Once::new();
        SWEPT.call_once(|| clean_leftovers(|pid| !process_alive(pid)));

        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{PREFIX}{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        // A run killed outright that had this process's pid left this very name behind: it is no engine of
        // ours (the count makes each name unique within a process), and `ip netns add` would refuse it.
        clean_named(&name);

        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory for the GPU engine: {e}"))?;
        // Unix socket paths are limited to 108 bytes; containerd's longest lies this far below the directory.
        let longest = dir.path().join("exec/containerd/containerd.sock.ttrpc");
        if longest.as_os_str().len() >= 108 {
            return Err(format!(
                "the GPU engine's sockets would be too long a path for a unix socket ({}): set TMPDIR to a \
                 shorter directory, e.g. /tmp",
                longest.display()
            ));
        }
        // Owned before anything is created, so that dropping it clears whatever a failing step left.
        let mut engine = GpuEngine { name, dir, child: None };
        engine.write_files()?;
        let out = Command::new("ip")
            .args(["netns", "add", &engine.name])
            .output()
            .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`ip netns add {}` failed: {} (the GPU engine needs root and a writable {NETNS_DIR})",
                engine.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        engine.launch()?;
        engine.wait_ready()?;
        Ok(engine)
    }

    /// `unix:///…/docker.sock`, for DOCKER_HOST.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// `bai-gpu-<pid>-<n>`: its network namespace, containerd namespace and cgroup parent are named so.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the docker CLI against this engine (`docker -H … <args>`); a missing CLI fails the test.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the docker CLI ({e}); the GPU engine's tests need it installed"))
    }

    /// Runs the docker CLI against this engine and returns its trimmed stdout; fails the test with its stderr
    /// and dockerd's log otherwise.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        if !out.status.success() {
            panic!(
                "docker -H {} {} failed: {}\n{}",
                self.docker_host(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Copies an image from the machine's main engine into this one (`docker save | docker -H … load`): no
    /// registry is reachable in tests.
    pub fn load_from_main(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the docker CLI ({e}); the GPU engine's tests need it installed"));
        let Some(tar) = save.stdout.take() else { panic!("docker save gave no stdout") };
        let loaded =
            self.docker_command().args(["load", "-q"]).stdin(tar).output().unwrap_or_else(|e| {
                panic!("cannot run the docker CLI ({e}); the GPU engine's tests need it installed")
            });
        let saved = save.wait_with_output().unwrap_or_else(|e| panic!("docker save {image}: {e}"));
        if !saved.status.success() {
            panic!(
                "`docker save {image}` on the main engine failed: {} (build or load the image there first)",
                String::from_utf8_lossy(&saved.stderr).trim()
            );
        }
        if !loaded.status.success() {
            panic!(
                "`docker -H {} load` of {image} failed: {}\n{}",
                self.docker_host(),
                String::from_utf8_lossy(&loaded.stderr).trim(),
                self.log_tail()
            );
        }
    }

    /// The stand-in hook's calls so far, one a container that asked for GPUs: `prestart {OCI state JSON}`.
    pub fn hook_calls(&self) -> Vec<String> {
        let text = fs::read_to_string(self.dir.path().join("hook.log")).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }

    /// dockerd's log, whole, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn docker_command(&self) -> Command {
        let mut cmd = Command::new("docker");
        // `-H` wins over DOCKER_HOST, but a DOCKER_CONTEXT next to it is an error: neither may come from the
        // environment the tests run in.
        cmd.env_remove("DOCKER_HOST").env_remove("DOCKER_CONTEXT").arg("-H").arg(self.docker_host());
        cmd
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("dockerd's log ({}), last lines:\n{tail}", self.dir.path().join("dockerd.log").display())
    }

    /// The config file, the directories and the stand-in hook.
    fn write_files(&self) -> Result<(), String> {
        let dir = self.dir.path();
        for sub in ["bin", "data", "exec"] {
            fs::create_dir(dir.join(sub)).map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        // Empty, but given: without `--config-file` dockerd reads /etc/docker/daemon.json, the main engine's
        // (its data root and storage driver would clash with the flags below, and dockerd refuses to start
        // when a setting comes both ways).
        let config = dir.join("daemon.json");
        fs::write(&config, "{}\n").map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let log = dir.join("hook.log");
        let hook_text = format!(
            "#!/bin/sh\n\
             # Stands in for NVIDIA's {HOOK} in bai's tests (tests/harness/dockerd.rs) and accepts every\n\
             # container. Docker runs it as `{HOOK} prestart` before a container that asked for\n\
             # GPUs starts, with the container's OCI state (JSON) on stdin; each call is noted, one a line.\n\
             state=$(cat)\n\
             printf '%s %s\\n' \"$*\" \"$state\" >> '{log}'\n\
             exit 0\n",
            log = log.display()
        );
        let hook = dir.join("bin").join(HOOK);
        fs::write(&hook, hook_text).map_err(|e| format!("cannot write {}: {e}", hook.display()))?;
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot chmod {}: {e}", hook.display()))
    }

    /// Runs `nsenter --net=/run/netns/NAME unshare --mount --propagation slave dockerd …`: dockerd joins the
    /// engine's network namespace and gets a mount namespace of its own (`nsenter` and `unshare` each exec
    /// the next, so the child is dockerd itself).
    ///
    /// Not `ip netns exec`: it also remounts /sys for the namespace, which takes /sys/fs/cgroup away, and
    /// dockerd refuses to start ("Devices cgroup isn't mounted"). The mount namespace, a slave of the
    /// machine's, keeps dockerd's own mounts (its data root bound onto itself, the containers' /dev/shm and
    /// network namespaces) from ever showing in the machine's: nothing is left mounted under the directory,
    /// whatever happens to dockerd, while the machine's files (the directory, images' build contexts) stay
    /// visible to it.
    fn launch(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let log = dir.join("dockerd.log");
        let stdout = fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let stderr = stdout.try_clone().map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        // The hook's directory first: dockerd looks the hook up on its PATH once, as it starts.
        let path = std::env::var("PATH")
            .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={NETNS_DIR}/{}", self.name))
            .args(["unshare", "--mount", "--propagation", "slave", "dockerd"])
            // Not /etc/docker/daemon.json, the main engine's (see write_files).
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            // Images, containers, volumes: the default, /var/lib/docker, is the main engine's.
            .arg("--data-root")
            .arg(dir.join("data"))
            // Runtime state and the containerd dockerd starts for itself (its socket, state and shims'
            // bundles): the default, /var/run/docker, is the main engine's.
            .arg("--exec-root")
            .arg(dir.join("exec"))
            // The default, /var/run/docker.pid, is the main engine's: dockerd refuses to start while the pid
            // in it lives. The leftover sweep finds a dead run's dockerd by it.
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            // The default, /var/run/docker.sock, is the main engine's socket, which dockerd would replace.
            .arg("-H")
            .arg(self.docker_host())
            // The namespace is the engine's own, so its rules could harm nothing, but there is nothing to
            // route: no iptables binary or kernel module is needed, and none is called.
            .arg("--iptables=false")
            // No default bridge: containers get loopback only (Docker marks their networking disabled).
            // Safe only here, in a network namespace of its own: see the module's doc.
            .args(["--bridge", "none"])
            // Plain directories, no mounts: works on any file system (the main engine's here is
            // fuse-overlayfs), at the cost of a copy of each image per container, small for busybox.
            .args(["--storage-driver", "vfs"])
            // dockerd starts a containerd of its own under the exec root unless a system one answers at
            // /run/containerd/containerd.sock; when one does, it would share it with the main engine, whose
            // containers dockerd would then see in the default namespaces ("moby", "plugins.moby").
            .args(["--containerd-namespace", &self.name])
            .args(["--containerd-plugins-namespace", &format!("{}-plugins", self.name)])
            // Containers' cgroups under a name of the engine's own, not the main engine's /docker: after a
            // run killed outright, the sweep finds and kills the containers that outlived their dockerd.
            .args(["--cgroup-parent", &format!("/{}", self.name)])
            .env("PATH", format!("{}:{path}", dir.join("bin").display()))
            // Under systemd, dockerd would tell the test's own unit it is ready.
            .env_remove("NOTIFY_SOCKET")
            // Would move the engine's temporary files out of its data root.
            .env_remove("DOCKER_TMPDIR")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // Not PR_SET_PDEATHSIG (as the sshd harness does for benches): an engine may outlive the thread that
        // started it (one shared by several tests), and it would die with that thread. A run killed outright
        // is cleared by the next start instead; Ctrl-C reaches dockerd too (same process group), and it
        // stops cleanly.
        let child = cmd.spawn().map_err(|e| format!("cannot run nsenter (util-linux): {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let socket = self.socket();
        loop {
            let Some(child) = self.child.as_mut() else { return Err("dockerd was not started".to_owned()) };
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the GPU engine's dockerd exited ({status}) before it answered\n{}",
                    self.log_tail()
                ));
            }
            if ping(&socket) {
                return Ok(());
            }
            if started.elapsed() > READY_WITHIN {
                return Err(format!(
                    "the GPU engine's dockerd did not answer on {} within {}s\n{}",
                    socket.display(),
                    READY_WITHIN.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GpuEngine {
    /// Removes its containers, stops dockerd, then deletes what is left: processes, cgroups, the network
    /// namespace; the directory goes with the TempDir. Never panics.
    fn drop(&mut self) {
        stop_engine(&self.name, Some(self.dir.path()), self.child.take());
    }
}

/// Root, and every binary the engine runs.
fn preflight() -> Result<(), String> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the GPU engine needs root: it adds a network namespace (`ip netns add`) and cgroups, and runs a \
                    dockerd of its own; run the tests as root"
            .to_owned());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let missing: Vec<String> = NEEDED
        .iter()
        .filter(|(bin, _)| !std::env::split_paths(&path).any(|d| is_executable(&d.join(bin))))
        .map(|(bin, from)| format!("`{bin}` ({from})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("the GPU engine needs {} on PATH; install them", missing.join(", ")))
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the engine's socket answers Docker's `/_ping` with 200.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    // HTTP/1.0: the server closes the connection after its answer, which ends the read.
    if stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.split_whitespace().nth(1) == Some("200")
}

/// Stops the engine `name` with its files in `dir`: that of a live [`GpuEngine`] (`child` is its dockerd)
/// or one a dead process left (its directory may be gone already). Never panics; what cannot be done is
/// left for the next sweep.
fn stop_engine(name: &str, dir: Option<&Path>, child: Option<Child>) {
    // Containers first: dockerd stops running ones on its way out, each with its stop timeout (10 s for the
    // test image's `sleep`, which ignores SIGTERM as pid 1).
    if let Some(socket) = dir.map(|d| d.join("docker.sock")).filter(|s| ping(s)) {
        remove_all_containers(&socket);
    }
    match child {
        Some(child) => stop_child(child),
        None => {
            if let Some(pid) = dir.and_then(dockerd_of) {
                stop_pid(pid);
            }
        }
    }
    // Whatever outlived dockerd: one killed outright leaves its shims and their containers running (its
    // containerd dies with it). They are in the engine's network namespace or its cgroups.
    kill_everything_in(name);
    remove_cgroups(name);
    if Path::new(NETNS_DIR).join(name).exists() {
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
    }
}

fn remove_all_containers(socket: &Path) {
    let host = format!("unix://{}", socket.display());
    let docker = |args: &[&str]| {
        let mut cmd = Command::new("docker");
        cmd.env_remove("DOCKER_HOST").env_remove("DOCKER_CONTEXT").arg("-H").arg(&host).args(args);
        output_within(cmd, Duration::from_secs(60))
    };
    let Some(listed) = docker(&["ps", "-aq"]) else { return };
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout).split_whitespace().map(str::to_owned).collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        let _ = docker(&args);
    }
}

/// Runs `cmd`, killing it after `limit`: a wedged engine must not hang a test's clean-up.
fn output_within(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// SIGTERM, then SIGKILL if it has not stopped within [`STOP_WITHIN`]; reaped.
fn stop_child(mut child: Child) {
    // SAFETY: kill(2) on our own child, not yet reaped, so its pid cannot have been reused.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_WITHIN;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The same for a dockerd that is not our child (a dead run's): its new parent reaps it.
fn stop_pid(pid: i32) {
    // SAFETY: kill(2) on a pid just checked to be this engine's dockerd ([`dockerd_of`]).
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_WITHIN;
    while process_alive(pid as u32) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if process_alive(pid as u32) {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// The pid in the engine's pidfile, if that process lives and is the dockerd of this directory (its command
/// line names the pidfile): a pid is reused once its process is gone.
fn dockerd_of(dir: &Path) -> Option<i32> {
    let pidfile = dir.join("docker.pid");
    let pid: i32 = fs::read_to_string(&pidfile).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let wanted = pidfile.as_os_str().as_encoded_bytes();
    let ours = cmdline.split(|&b| b == 0).any(|arg| arg == wanted);
    (ours && process_alive(pid as u32)).then_some(pid)
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat.rfind(')').and_then(|at| stat[at + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// SIGKILLs every process in the engine's network namespace (dockerd, containerd, shims, containers on the
/// host network) and in its cgroups (containers), until none is left or a few seconds have passed; then
/// removes the sockets of the shims it killed.
fn kill_everything_in(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sockets = Vec::new();
    loop {
        let mut pids = pids_in_netns(name);
        pids.extend(pids_in_cgroups(name));
        pids.retain(|&pid| pid != std::process::id() && process_alive(pid));
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            sockets.extend(shim_sockets(pid));
            // SAFETY: kill(2) on a process found in the engine's own namespace or cgroups.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for socket in sockets {
        let _ = fs::remove_file(socket);
    }
}

/// Where containerd 1.6's shims put their sockets, whichever containerd started them; a shim removes its
/// own when it exits, not when it is killed.
const SHIM_SOCKETS: &str = "/run/containerd/s/";

/// The sockets under [`SHIM_SOCKETS`] that `pid` holds open: a containerd shim's, none for anything else.
fn shim_sockets(pid: u32) -> Vec<PathBuf> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| Some(target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    // The process's own network namespace's table (the shim is in the engine's, not ours): `Num RefCount
    // Protocol Flags Type St Inode Path`.
    let table = fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (inode, path) = (fields.get(6)?, fields.get(7)?);
            (path.starts_with(SHIM_SOCKETS) && inodes.iter().any(|i| i == inode)).then(|| PathBuf::from(path))
        })
        .collect()
}

/// Processes whose network namespace is the engine's, found as `ip netns pids` finds them: the same inode.
fn pids_in_netns(name: &str) -> Vec<u32> {
    let Ok(ns) = fs::metadata(Path::new(NETNS_DIR).join(name)) else { return Vec::new() };
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.dev() == ns.dev() && m.ino() == ns.ino())
        })
        .collect()
}

/// The engine's cgroup parent in every hierarchy: `/sys/fs/cgroup/<controller>/NAME` (v1) and
/// `/sys/fs/cgroup/NAME` (v2).
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    let mut dirs = vec![root.join(name)];
    if let Ok(entries) = fs::read_dir(root) {
        dirs.extend(entries.flatten().map(|e| e.path().join(name)));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Every directory under `dir`, deepest first, `dir` last.
fn dirs_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.extend(dirs_below(&entry.path()));
            }
        }
    }
    found.push(dir.to_path_buf());
    found
}

fn pids_in_cgroups(name: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for dir in cgroup_dirs(name).iter().flat_map(|d| dirs_below(d)) {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the engine's cgroups, children first; an emptied cgroup can stay busy for a moment.
fn remove_cgroups(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        for dir in cgroup_dirs(name).iter().flat_map(|d| dirs_below(d)) {
            let _ = fs::remove_dir(dir);
        }
        if cgroup_dirs(name).is_empty() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The engines whose names are found in the network namespaces, the temporary directory and the cgroups,
/// each with its directories.
fn leftovers() -> BTreeMap<String, Vec<PathBuf>> {
    let mut found: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let names_in = |dir: &Path| -> Vec<(String, PathBuf)> {
        let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
        entries.flatten().filter_map(|e| Some((engine_name(e.file_name().to_str()?)?, e.path()))).collect()
    };
    for (name, _) in names_in(Path::new(NETNS_DIR)) {
        found.entry(name).or_default();
    }
    for (name, path) in names_in(&std::env::temp_dir()) {
        found.entry(name).or_default().push(path);
    }
    let hierarchies = fs::read_dir(CGROUP_ROOT).into_iter().flatten().flatten().map(|e| e.path());
    for hierarchy in std::iter::once(PathBuf::from(CGROUP_ROOT)).chain(hierarchies) {
        for (name, _) in names_in(&hierarchy) {
            found.entry(name).or_default();
        }
    }
    found
}

/// `bai-gpu-<pid>-<n>` out of that name or of its directory's, `bai-gpu-<pid>-<n>-<random>`; None for
/// anything else.
fn engine_name(file_name: &str) -> Option<String> {
    let rest = file_name.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next().filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    let n = parts.next().filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?;
    match parts.next() {
        None => Some(format!("{PREFIX}{pid}-{n}")),
        // tempfile's random suffix: letters and digits.
        Some(random) if !random.is_empty() && random.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Some(format!("{PREFIX}{pid}-{n}"))
        }
        Some(_) => None,
    }
}

fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Stops and deletes every leftover engine whose owner pid `gone` says is gone.
fn clean_leftovers(gone: impl Fn(u32) -> bool) {
    for (name, dirs) in leftovers() {
        if owner_pid(&name).is_some_and(&gone) {
            clean(&name, &dirs);
        }
    }
}

/// Stops and deletes a leftover engine named `name`, whoever started it.
fn clean_named(name: &str) {
    if let Some(dirs) = leftovers().get(name) {
        clean(name, dirs);
    }
}

fn clean(name: &str, dirs: &[PathBuf]) {
    if dirs.is_empty() {
        stop_engine(name, None, None);
    }
    for dir in dirs {
        stop_engine(name, Some(dir), None);
        let _ = fs::remove_dir_all(dir);
    }
}

/// What is left of the engine `name` (by [`GpuEngine::name`]): its network namespace, its processes, its
/// cgroups, its directory. Empty once it is dropped, for tests of the harness itself.
pub fn remains_of(name: &str) -> Vec<String> {
    let mut remains = Vec::new();
    if Path::new(NETNS_DIR).join(name).exists() {
        remains.push(format!("network namespace {NETNS_DIR}/{name}"));
    }
    for pid in pids_in_netns(name).into_iter().chain(pids_in_cgroups(name)) {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        remains.push(format!("process {pid}: {}", String::from_utf8_lossy(&cmdline).replace('\0', " ")));
    }
    // A dead dockerd's process still names the directory on its command line, whatever its namespace.
    let pids = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids {
        let cmdline =
            String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ");
        if cmdline.contains(&format!("{name}-")) {
            remains.push(format!("process {pid}: {cmdline}"));
        }
    }
    remains.extend(cgroup_dirs(name).iter().map(|d| format!("cgroup {}", d.display())));
    if let Some(dirs) = leftovers().get(name) {
        remains.extend(dirs.iter().map(|d| format!("directory {}", d.display())));
    }
    remains.sort();
    remains.dedup();
    remains
}
