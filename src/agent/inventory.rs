//! What a node has: GPUs through NVML (with their MIG instances, NUMA nodes and the processes using
//! them), CPUs, memory. Without NVML (no driver, no GPU) the node has zero GPUs and the reason says why;
//! that is never an error.
//!
//! `BAI_STAND_IN_GPUS`, for tests only: the path of a JSON list of GPUs (as `inventory` reports them)
//! that the agent reports instead of asking NVML, so that placement can be tested end to end on a machine
//! without GPUs (with a Docker engine whose NVIDIA device driver is a stand-in too). Unset, NVML is asked.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;

use crate::state::snapshot::{GpuHolder, GpuInfo, Inventory, MigInfo};

/// The environment variable naming a stand-in GPU list (tests only).
pub const STAND_IN_GPUS: &str = "BAI_STAND_IN_GPUS";

/// The most a stand-in list may be: it is read whole.
const STAND_IN_MAX: u64 = 1 << 20;

/// One NVML handle per agent process: initialising it costs tens of milliseconds.
fn nvml() -> Result<&'static Nvml, String> {
    static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))).as_ref().map_err(Clone::clone)
}

/// The GPUs NVML reports (or the stand-in list), or none and the reason. Holders found by NVML are the
/// processes on each device (`pid` only); [`crate::agent::docker::Engine::gpu_holders`] adds containers.
pub fn gpus() -> (Vec<GpuInfo>, Option<String>) {
    read_gpus(true)
}

/// Each GPU's use, for `ping`: what [`gpus`] reports without MIG instances, NUMA nodes and processes,
/// which a ping every few seconds need not pay for.
pub fn gpu_use() -> Vec<crate::protocol::GpuUse> {
    let (gpus, _) = read_gpus(false);
    gpus.into_iter()
        .map(|g| crate::protocol::GpuUse {
            index: g.index,
            uuid: g.uuid,
            name: g.name,
            memory_total: g.memory_total,
            memory_used: g.memory_used,
            utilization: g.utilization,
        })
        .collect()
}

/// The GPUs, with their MIG instances, NUMA nodes and processes where `detail` asks for them.
fn read_gpus(detail: bool) -> (Vec<GpuInfo>, Option<String>) {
    if let Some(path) = std::env::var_os(STAND_IN_GPUS) {
        return stand_in(std::path::Path::new(&path));
    }
    let nvml = match nvml() {
        Ok(n) => n,
        Err(reason) => return (Vec::new(), Some(reason)),
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => return (Vec::new(), Some(format!("NVML cannot count devices: {e}"))),
    };
    let mut out = Vec::new();
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else { continue };
        // Per-device queries may be unsupported (MIG, some SKUs): report what is there.
        let memory = device.memory_info().ok();
        let mut gpu = GpuInfo {
            index,
            name: device.name().unwrap_or_else(|_| "unknown".into()),
            uuid: device.uuid().unwrap_or_default(),
            memory_total: memory.as_ref().map_or(0, |m| m.total),
            utilization: device.utilization_rates().ok().map(|u| u.gpu),
            memory_used: memory.map(|m| m.used),
            ..GpuInfo::default()
        };
        if detail {
            gpu.numa_node = device.numa_node_id().ok();
            gpu.mig_mode = device.mig_mode().is_ok_and(|m| m.current == 1);
            if gpu.mig_mode {
                for slot in 0..device.mig_device_count().unwrap_or(0) {
                    // Unpopulated slots answer NotFound.
                    let Ok(instance) = device.mig_device_by_index(slot) else { continue };
                    let name = instance.name().unwrap_or_default();
                    gpu.mig.push(MigInfo {
                        uuid: instance.uuid().unwrap_or_default(),
                        profile: mig_profile(&name),
                        memory_total: instance.memory_info().map(|m| m.total).unwrap_or(0),
                        holders: processes(&instance),
                    });
                }
            } else {
                gpu.holders = processes(&device);
            }
        }
        out.push(gpu);
    }
    (out, None)
}

/// The profile in a MIG device's name ("NVIDIA A100-SXM4-40GB MIG 1g.5gb" → "1g.5gb").
fn mig_profile(name: &str) -> String {
    name.rsplit_once("MIG ").map_or(name, |(_, p)| p).trim().to_string()
}

/// The compute processes on a device, by pid (containers are matched to them later).
fn processes(device: &nvml_wrapper::Device<'_>) -> Vec<GpuHolder> {
    let mut pids: Vec<u32> = device.running_compute_processes().unwrap_or_default().iter().map(|p| p.pid).collect();
    // Graphics processes (a desktop on a workstation GPU) hold the device as much as compute ones do.
    pids.extend(device.running_graphics_processes().unwrap_or_default().iter().map(|p| p.pid));
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter().map(|pid| GpuHolder { pid: Some(pid), ..GpuHolder::default() }).collect()
}

/// The stand-in list, bounded, or none and why it could not be read.
fn stand_in(path: &std::path::Path) -> (Vec<GpuInfo>, Option<String>) {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(STAND_IN_MAX).read_to_string(&mut text));
    match read.map_err(|e| e.to_string()).and_then(|_| serde_json::from_str(&text).map_err(|e| e.to_string())) {
        Ok(gpus) => (gpus, None),
        Err(e) => (Vec::new(), Some(format!("the stand-in GPU list {} cannot be read: {e}", path.display()))),
    }
}

fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The node's inventory; `docker_version` comes from the engine when it answers.
pub fn inventory(docker_version: Option<String>) -> Inventory {
    let (gpus, gpu_error) = gpus();
    Inventory {
        gpus,
        gpu_error,
        cpus: std::thread::available_parallelism().ok().map(|n| n.get() as u32),
        memory: memory_total(),
        docker_version,
    }
}

/// Seconds since boot and the 1-minute load average, for `ping`.
pub fn uptime_and_load() -> (u64, Option<f64>) {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()))
        .map_or(0, |s| s as u64);
    let load = std::fs::read_to_string("/proc/loadavg").ok().and_then(|t| t.split_whitespace().next()?.parse().ok());
    (uptime, load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_there_are_zero_gpus_and_a_reason() {
        let (gpus, reason) = gpus();
        // On a machine with an NVIDIA driver this lists the GPUs; elsewhere it must explain, not fail.
        if gpus.is_empty() {
            assert!(reason.is_some_and(|r| !r.is_empty()));
        }
        let inv = inventory(None);
        assert!(inv.cpus.unwrap_or(0) >= 1);
        assert!(inv.memory.unwrap_or(0) > 0);
    }
}
