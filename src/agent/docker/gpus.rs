//! Which containers hold which GPUs on the node, bai's or not: what the controller needs to leave devices
//! in use alone and to tell a device a session of its own holds from one something else holds.
//!
//! A bai session's devices are read from its spec label (no inspect); any other running container is
//! inspected for Docker device requests (`--gpus`) and `NVIDIA_VISIBLE_DEVICES` (the NVIDIA runtime's
//! way), once: neither can change while the container lives, so what an inspect found is kept in the
//! agent home by container id, for the containers still running, and the next observe asks the engine
//! only about containers it has not seen. Processes NVML reports are matched to their container through
//! `/proc/<pid>/cgroup`.

use super::*;

use std::collections::BTreeMap;

use crate::state::snapshot::{GpuHolder, GpuInfo};

/// What one running container claims: its name, bai labels and device ids as written (`GPU-…`, `MIG-…`,
/// an index, or `all`).
struct Claim {
    id: String,
    holder: GpuHolder,
    devices: Vec<String>,
}

impl Engine {
    /// Adds the containers using each GPU (and MIG instance) of `gpus` to its holders, and names the
    /// container of every process NVML reported. Nothing is asked of the engine when there are no GPUs.
    /// `known` is where the claims of containers not made by bai are kept between observes.
    pub async fn gpu_holders(&self, gpus: &mut [GpuInfo], known: &Path) -> Result<(), DockerError> {
        if gpus.is_empty() {
            return Ok(());
        }
        let mut kept = read_known(known);
        let mut seen = BTreeMap::new();
        let mut inspected = false;
        let listed: Vec<models::ContainerSummary> =
            self.docker.get("/containers/json").await.map_err(api("listing running containers"))?;
        let mut claims = Vec::new();
        for c in listed {
            let Some(id) = c.id else { continue };
            let labels = c.labels.unwrap_or_default();
            let holder = GpuHolder {
                pid: None,
                container: c.names.iter().flatten().next().map(|n| n.trim_start_matches('/').to_string()),
                cluster: labels.get(labels::CLUSTER).cloned(),
                session: labels.get(labels::SESSION).cloned(),
            };
            let devices = match labels.get(labels::SPEC).and_then(|s| serde_json::from_str::<SessionSpec>(s).ok()) {
                Some(spec) => spec.resources.devices,
                None => {
                    let devices = match kept.remove(&id) {
                        Some(devices) => devices,
                        None => match self.docker.get(&format!("/containers/{}/json", segment(&id))).await {
                            Ok(inspect) => {
                                inspected = true;
                                claimed(&inspect)
                            }
                            // Gone between the listing and now.
                            Err(e) if e.is_not_found() => continue,
                            Err(e) => return Err(api("inspecting a running container for its GPUs")(e)),
                        },
                    };
                    seen.insert(id.clone(), devices.clone());
                    devices
                }
            };
            claims.push(Claim { id, holder, devices });
        }
        // Kept for the containers running now, and written only when that changed; a home that cannot
        // be written costs the next observe the inspects again, nothing else.
        if inspected || !kept.is_empty() {
            let _ = write_known(known, &seen);
        }
        for gpu in gpus.iter_mut() {
            name_processes(&mut gpu.holders, &claims);
            for instance in &mut gpu.mig {
                name_processes(&mut instance.holders, &claims);
                for claim in claims.iter().filter(|c| c.devices.iter().any(|d| d == &instance.uuid)) {
                    add(&mut instance.holders, &claim.holder);
                }
            }
            for claim in &claims {
                if claim.devices.iter().any(|d| d == "all" || crate::gpu::names(d, &gpu.uuid, gpu.index)) {
                    add(&mut gpu.holders, &claim.holder);
                }
            }
            gpu.holders.sort();
            gpu.holders.dedup();
        }
        Ok(())
    }
}

/// The most of the kept claims that is read.
const KNOWN_MAX: u64 = 1 << 20;

/// The claims kept at `path`, by container id; none when there is no such file or it is not one.
fn read_known(path: &Path) -> BTreeMap<String, Vec<String>> {
    crate::agent::home::read_json(path, KNOWN_MAX).unwrap_or_default()
}

fn write_known(path: &Path, known: &BTreeMap<String, Vec<String>>) -> std::io::Result<()> {
    crate::agent::home::replace_file(path, &serde_json::to_vec(known).map_err(std::io::Error::other)?)
}

/// The devices a container not made by bai was given: its NVIDIA device requests (ids; a count is GPUs
/// 0..N-1, -1 all of them) and `NVIDIA_VISIBLE_DEVICES` (`all`, `none`, or a list).
fn claimed(inspect: &ContainerInspect) -> Vec<String> {
    let mut out = Vec::new();
    let requests = inspect.host_config.as_ref().and_then(|h| h.device_requests.clone()).unwrap_or_default();
    for r in requests {
        let nvidia = r.driver.as_deref() == Some("nvidia")
            || r.capabilities.iter().flatten().any(|set| set.iter().any(|c| c == "gpu"));
        if !nvidia {
            continue;
        }
        out.extend(r.device_ids.unwrap_or_default());
        match r.count {
            Some(-1) => out.push("all".into()),
            Some(n) if n > 0 => out.extend((0..n.min(1024)).map(|i| i.to_string())),
            _ => {}
        }
    }
    let env = inspect.config.as_ref().and_then(|c| c.env.clone()).unwrap_or_default();
    if let Some(visible) = env.iter().find_map(|e| e.strip_prefix("NVIDIA_VISIBLE_DEVICES=")) {
        out.extend(
            visible
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && *d != "none" && *d != "void")
                .map(str::to_string),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// Fills in the container of each process holder whose cgroup names one of `claims`.
fn name_processes(holders: &mut [GpuHolder], claims: &[Claim]) {
    for h in holders.iter_mut().filter(|h| h.container.is_none()) {
        let Some(pid) = h.pid else { continue };
        let Some(container) = container_of(pid) else { continue };
        if let Some(claim) = claims.iter().find(|c| c.id == container) {
            *h = GpuHolder { pid: Some(pid), ..claim.holder.clone() };
        }
    }
}

fn add(holders: &mut Vec<GpuHolder>, holder: &GpuHolder) {
    // A process already matched to this container says the same, and more.
    if !holders.iter().any(|h| h.container == holder.container && h.container.is_some()) {
        holders.push(holder.clone());
    }
}

/// The Docker container id in a process's cgroup path (`…/docker-<id>.scope`, `…/docker/<id>`), if any.
fn container_of(pid: u32) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{pid}/cgroup")).ok()?.take(64 * 1024).read_to_string(&mut text).ok()?;
    container_in_cgroup(&text)
}

fn container_in_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        path.split('/').rev().find_map(|part| {
            let id = part.strip_prefix("docker-").and_then(|p| p.strip_suffix(".scope")).unwrap_or(part);
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_id_is_found_in_both_cgroup_layouts() {
        let id = "a".repeat(64);
        assert_eq!(container_in_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")), Some(id.clone()));
        assert_eq!(container_in_cgroup(&format!("12:memory:/docker/{id}\n1:name=systemd:/docker/{id}")), Some(id));
        assert_eq!(container_in_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n"), None);
    }

    #[test]
    fn requests_and_the_runtime_variable_are_claims() {
        // As `docker inspect` shows a container run with `--gpus 2`, `--gpus device=GPU-x` and another
        // driver's request, and the runtime's variable.
        let inspect: ContainerInspect = serde_json::from_str(
            r#"{"HostConfig":{"DeviceRequests":[
                  {"Driver":"nvidia","Count":2,"DeviceIDs":null,"Capabilities":null,"Options":{}},
                  {"Driver":"","Count":0,"DeviceIDs":["GPU-x"],"Capabilities":[["gpu"]],"Options":null},
                  {"Driver":"other","Count":-1}]},
                "Config":{"Env":["NVIDIA_VISIBLE_DEVICES=3,MIG-y","A=1"]}}"#,
        )
        .unwrap();
        assert_eq!(claimed(&inspect), ["0", "1", "3", "GPU-x", "MIG-y"]);
    }
}
