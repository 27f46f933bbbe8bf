//! A private network for tests of jump hosts: a network namespace joined to this machine's by one veth
//! pair with the /30 `10.231.X.0` (X unique per enclave), `10.231.X.1` outside and `10.231.X.2` inside.
//! What listens inside on the enclave's own 127.0.0.1 cannot be reached from here at all; what listens on
//! `10.231.X.2` can (a bastion). [`Enclave::route_to_docker`] gives the enclave a default route through
//! the veth and lets that traffic through the Docker engine's forwarding rules (its FORWARD policy is
//! DROP): the two `DOCKER-USER` rules it inserts, `-i VETH -j ACCEPT` and `-o VETH -j ACCEPT`, are what
//! lets a node's sshd inside reach a container's bridge address for `bai port-forward`. docker0 and the
//! main engine are never touched otherwise.
//!
//! Names: the namespace `bai-jump-<pid>-<n>`, the veth `bj<pid>x<n>` (its inside end `…i`), after the
//! process that made them. Dropping an [`Enclave`] kills what still runs inside, deletes the rules, the
//! namespace and the veth, on a panic too; a run killed outright leaves them, and the first enclave of the
//! next process clears what belongs to processes that are gone, as tests/harness/dockerd.rs does.
//!
//! Needs root and iproute2's `ip`, util-linux's `nsenter` and iptables: a missing one fails the test
//! loudly, saying what to install; it is never skipped.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

const NETNS_DIR: &str = "/run/netns";
const PREFIX: &str = "bai-jump-";
const VETH_PREFIX: &str = "bj";

pub struct Enclave {
    name: String,
    veth: String,
    subnet: u8,
    /// `iptables` argument lists inserted, each deleted again with `-D` on drop.
    rules: Vec<Vec<String>>,
}

impl Enclave {
    /// A namespace with its veth up and addressed; panics, saying what is missing, when it cannot be made.
    pub fn new() -> Enclave {
        preflight();
        static SWEPT: Once = Once::new();
        SWEPT.call_once(clean_leftovers);
        // One at a time: the subnet is chosen by looking at what is in use.
        static MAKING: Mutex<()> = Mutex::new(());
        let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = free_subnet();
        let enclave = Enclave {
            name: format!("{PREFIX}{pid}-{n}"),
            veth: format!("{VETH_PREFIX}{pid}x{n}"),
            subnet,
            rules: Vec::new(),
        };
        // A dead run of this very pid may have left these names: they are not ours.
        let _ = Command::new("ip").args(["netns", "delete", &enclave.name]).output();
        let _ = Command::new("ip").args(["link", "delete", &enclave.veth]).output();
        let inside = format!("{}i", enclave.veth);
        ip(&["netns", "add", &enclave.name]);
        ip(&["link", "add", &enclave.veth, "type", "veth", "peer", "name", &inside]);
        ip(&["link", "set", &inside, "netns", &enclave.name]);
        ip(&["addr", "add", &format!("{}/30", enclave.outside()), "dev", &enclave.veth]);
        ip(&["link", "set", &enclave.veth, "up"]);
        ip(&["-n", &enclave.name, "addr", "add", &format!("{}/30", enclave.inside()), "dev", &inside]);
        ip(&["-n", &enclave.name, "link", "set", &inside, "up"]);
        ip(&["-n", &enclave.name, "link", "set", "lo", "up"]);
        enclave
    }

    /// The namespace's name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What would be left of this enclave once dropped: for tests of the clean-up.
    pub fn names(&self) -> (String, String) {
        (self.name.clone(), self.veth.clone())
    }

    /// This machine's end of the veth.
    pub fn outside(&self) -> String {
        format!("10.231.{}.1", self.subnet)
    }

    /// The enclave's end: the one address of it this machine reaches.
    pub fn inside(&self) -> String {
        format!("10.231.{}.2", self.subnet)
    }

    /// A default route out through the veth, and the Docker engine's FORWARD chain opened for the veth:
    /// sshd inside can then reach containers on docker0 (their replies come back the same way).
    pub fn route_to_docker(&mut self) {
        ip(&["-n", &self.name, "route", "add", "default", "via", &self.outside()]);
        for direction in ["-i", "-o"] {
            let rule: Vec<String> =
                ["DOCKER-USER", direction, &self.veth, "-j", "ACCEPT"].iter().map(|s| s.to_string()).collect();
            let mut insert = vec!["-I".to_string()];
            insert.extend(rule.iter().cloned());
            iptables(&insert);
            self.rules.push(rule);
        }
    }
}

impl Drop for Enclave {
    fn drop(&mut self) {
        for rule in &self.rules {
            let mut delete = vec!["-D".to_string()];
            delete.extend(rule.iter().cloned());
            let _ = Command::new("iptables").args(&delete).output();
        }
        kill_everything_in(&self.name);
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
        // The inside end went with the namespace, and the pair with it; this is for a half-made enclave.
        let _ = Command::new("ip").args(["link", "delete", &self.veth]).output();
    }
}

fn preflight() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the jump-host tests need root: they add a network namespace, a veth pair and iptables rules"
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let missing: Vec<&str> =
        [("ip", "`ip` (iproute2)"), ("nsenter", "`nsenter` (util-linux)"), ("iptables", "`iptables`")]
            .into_iter()
            .filter(|(bin, _)| !std::env::split_paths(&path).any(|d| d.join(bin).is_file()))
            .map(|(_, what)| what)
            .collect();
    assert!(
        missing.is_empty(),
        "the jump-host tests need {} on PATH: install them (scripts/test does)",
        missing.join(", ")
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run `ip` (iproute2): {e}"));
    assert!(out.status.success(), "`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

fn iptables(args: &[String]) {
    let out = Command::new("iptables").args(args).output().unwrap_or_else(|e| panic!("cannot run `iptables`: {e}"));
    assert!(
        out.status.success(),
        "`iptables {}` failed: {} (the Docker engine makes the DOCKER-USER chain; is it running?)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A third octet no address of this machine uses under 10.231/16.
fn free_subnet() -> u8 {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().expect("`ip -4 addr` runs");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = (std::process::id() % 200) as u16;
    (0..256u16)
        .map(|i| ((start + i) % 256) as u8)
        .find(|x| !used.contains(&format!("10.231.{x}.")))
        .expect("a free 10.231.X.0/30 subnet")
}

/// SIGKILLs every process whose network namespace is `name`'s (sshd's left behind, agents they ran).
fn kill_everything_in(name: &str) {
    let Ok(ns) = fs::metadata(Path::new(NETNS_DIR).join(name)) else { return };
    for _ in 0..50 {
        let pids: Vec<i32> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid as u32 != std::process::id())
            .filter(|pid| {
                fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.dev() == ns.dev() && m.ino() == ns.ino())
            })
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) on a process found in the enclave's own network namespace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in `bai-jump-<pid>-<n>` or `bj<pid>x<n>[i]`.
fn owner(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix(PREFIX) {
        return rest.split('-').next()?.parse().ok();
    }
    name.strip_prefix(VETH_PREFIX)?.split('x').next()?.parse().ok()
}

/// Deletes the namespaces, veths and DOCKER-USER rules of enclaves whose process is gone. The first
/// [`Enclave::new`] of a process runs it.
pub fn clean_leftovers() {
    let gone = |name: &str| owner(name).is_some_and(|pid| !process_alive(pid));
    for entry in fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) && gone(&name) {
            kill_everything_in(&name);
            let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        }
    }
    let links = Command::new("ip").args(["-o", "link", "show"]).output().map(|o| o.stdout).unwrap_or_default();
    for line in String::from_utf8_lossy(&links).lines() {
        // `7: bj123x0@if6: <…>`
        let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else { continue };
        if name.starts_with(VETH_PREFIX) && gone(name) {
            let _ = Command::new("ip").args(["link", "delete", name]).output();
        }
    }
    let rules = Command::new("iptables").args(["-S", "DOCKER-USER"]).output().map(|o| o.stdout).unwrap_or_default();
    for line in String::from_utf8_lossy(&rules).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ours = words.iter().any(|w| w.starts_with(VETH_PREFIX) && gone(w));
        if ours && words.first() == Some(&"-A") {
            let _ = Command::new("iptables").arg("-D").args(&words[1..]).output();
        }
    }
}

/// What is left of the enclave named `name` with veth `veth`: its namespace, its veth, its DOCKER-USER
/// rules. Empty once it is dropped.
pub fn remains(name: &str, veth: &str) -> Vec<String> {
    let mut left = Vec::new();
    if Path::new(NETNS_DIR).join(name).exists() {
        left.push(format!("network namespace {name}"));
    }
    let links = Command::new("ip").args(["-o", "link", "show"]).output().map(|o| o.stdout).unwrap_or_default();
    if String::from_utf8_lossy(&links).contains(&format!(" {veth}")) {
        left.push(format!("veth {veth}"));
    }
    let rules = Command::new("iptables").args(["-S", "DOCKER-USER"]).output().map(|o| o.stdout).unwrap_or_default();
    left.extend(String::from_utf8_lossy(&rules).lines().filter(|l| l.contains(veth)).map(|l| format!("rule {l}")));
    left
}
