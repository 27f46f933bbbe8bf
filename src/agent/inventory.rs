//! What a node has: GPUs through NVML, CPUs, memory. Without NVML (no driver, no GPU) the node has zero
//! GPUs and the reason says why; that is never an error.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;

use crate::state::snapshot::{GpuInfo, Inventory};

/// One NVML handle per agent process: initialising it costs tens of milliseconds.
fn nvml() -> Result<&'static Nvml, String> {
    static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))).as_ref().map_err(Clone::clone)
}

/// The GPUs NVML reports, or none and the reason.
pub fn gpus() -> (Vec<GpuInfo>, Option<String>) {
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
        out.push(GpuInfo {
            index,
            name: device.name().unwrap_or_else(|_| "unknown".into()),
            uuid: device.uuid().unwrap_or_default(),
            memory_total: device.memory_info().map(|m| m.total).unwrap_or(0),
            utilization: device.utilization_rates().ok().map(|u| u.gpu),
        });
    }
    (out, None)
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
