//! The CPU time of the nodes' sshd and everything it starts, counted by a cgroup of the bench's own.
//!
//! A listener's `/proc/PID/stat` (its own ticks and its reaped children's) misses most of what a
//! connection runs: OpenSSH's per-connection processes do not reap their commands into it. Measured with
//! one sshd here: 50 `zstd -d` of the agent over five connections showed as 170 ms there and as 1,056 ms
//! in a cgroup holding the listener. A cgroup counts every process that was ever in it, gone ones
//! included, and a process forked from one in it starts in it.
//!
//! Where no cgroup can be made (no root, a read-only `/sys/fs/cgroup`), the count falls back to the
//! listeners' ticks, and [`NodeCpu::how`] says so in the report.

use std::fs;
use std::path::{Path, PathBuf};

/// How the CPU of everything below some processes is counted.
pub enum NodeCpu {
    /// A cgroup of the bench's own: cgroup v2's `cpu.stat` (`usage_usec`) or v1's `cpuacct.usage` (ns).
    Group { dir: PathBuf, v2: bool },
    /// The processes' own ticks and their reaped children's, from `/proc/PID/stat`.
    Ticks(Vec<i32>),
}

impl NodeCpu {
    /// Counts `pids` and what they start from now on, under a cgroup named for this bench process and
    /// `name`; the listeners' ticks where no cgroup can be made (with the reason on stderr).
    pub fn of(name: &str, pids: &[i32]) -> NodeCpu {
        match group(name, pids) {
            Ok(counted) => counted,
            Err(e) => {
                eprintln!(
                    "bench: no cgroup to count the nodes' CPU ({e}); counting sshd's ticks, which miss most of what it runs"
                );
                NodeCpu::Ticks(pids.to_vec())
            }
        }
    }

    /// CPU time in ms so far.
    pub fn ms(&self) -> f64 {
        match self {
            NodeCpu::Group { dir, v2: true } => fs::read_to_string(dir.join("cpu.stat"))
                .ok()
                .and_then(|stat| {
                    stat.lines()
                        .find_map(|line| line.strip_prefix("usage_usec ").and_then(|v| v.trim().parse::<f64>().ok()))
                })
                .map_or(0.0, |us| us / 1e3),
            NodeCpu::Group { dir, v2: false } => fs::read_to_string(dir.join("cpuacct.usage"))
                .ok()
                .and_then(|ns| ns.trim().parse::<f64>().ok())
                .map_or(0.0, |ns| ns / 1e6),
            NodeCpu::Ticks(pids) => {
                // SAFETY: sysconf reads a constant.
                let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
                pids.iter().map(|&pid| proc_ticks(pid, true)).sum::<u64>() as f64 * 1e3 / tick
            }
        }
    }

    /// How it counts, for the report.
    pub fn how(&self) -> &'static str {
        match self {
            NodeCpu::Group { v2: true, .. } => "a cgroup (v2 `cpu.stat`) holding every node's sshd",
            NodeCpu::Group { v2: false, .. } => "a cgroup (v1 `cpuacct.usage`) holding every node's sshd",
            NodeCpu::Ticks(_) => {
                "the sshd listeners' own and reaped children's ticks (no cgroup could be made): this misses most \
                 of what a connection runs, the agent included"
            }
        }
    }
}

impl Drop for NodeCpu {
    fn drop(&mut self) {
        let NodeCpu::Group { dir, .. } = self else { return };
        // Whatever still runs in it goes back to the parent, so that the directory can go.
        if let (Ok(procs), Some(parent)) = (fs::read_to_string(dir.join("cgroup.procs")), dir.parent()) {
            for pid in procs.split_whitespace() {
                let _ = fs::write(parent.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&*dir);
    }
}

fn group(name: &str, pids: &[i32]) -> Result<NodeCpu, String> {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let root = if v2 { Path::new("/sys/fs/cgroup") } else { Path::new("/sys/fs/cgroup/cpuacct") };
    let dir = root.join(format!("bai-bench-{}-{name}", std::process::id()));
    fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Made first, so that a failure below removes the directory again.
    let counted = NodeCpu::Group { dir: dir.clone(), v2 };
    for pid in pids {
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move process {pid} into {}: {e}", dir.display()))?;
    }
    Ok(counted)
}

/// utime + stime (and, with `children`, cutime + cstime) of a process, in clock ticks; 0 when it is gone.
pub fn proc_ticks(pid: i32, children: bool) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The command name may hold spaces and parentheses: the fields start after the last `)`.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    match fields.as_slice() {
        [utime, stime, cutime, cstime] => utime + stime + if children { cutime + cstime } else { 0 },
        _ => 0,
    }
}
