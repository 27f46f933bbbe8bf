//! Placing a cluster's GPU sessions on their nodes' devices, for a plan: the devices of each node from
//! what its agent reported (or, not knowing that, from its declared `gpus`), the sessions' requests from
//! the lab, what each session holds now from its container's recorded spec, and [`allocate`] deciding.
//! The devices placed become part of each desired session's spec (and so of its hash: a session whose
//! devices change is replaced, with `resources.devices` as the reason).
//!
//! What the node reports decides only what is left alone: a device something else holds is never
//! handed out, and the plan says which and why.

use crate::failure::Failure;
use crate::gpu::allocate::{Device, Known, Request, Want, allocate};
use crate::model::{Cluster, NodeName, SessionName};
use crate::state::ClusterState;
use crate::state::snapshot::{GpuHolder, Inventory};
use crate::state::spec::hash_of;
use crate::untrusted::escape;

/// What placing a cluster's sessions decided beyond their specs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// Sessions that could not be placed: nothing may be applied while one is there.
    pub refused: Vec<Unplaced>,
    /// Devices left out because something bai does not own uses them.
    pub busy: Vec<BusyDevice>,
    /// Nodes whose devices were taken from the declared `gpus` although the node was reached (its agent
    /// reported no GPU inventory), with why.
    pub guessed: Vec<(NodeName, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unplaced {
    pub node: NodeName,
    pub session: SessionName,
    pub reason: String,
    /// Devices of the kind asked for that something else holds: (device, why).
    pub busy: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BusyDevice {
    pub node: NodeName,
    pub index: u32,
    pub id: String,
    pub reason: String,
}

/// Places every GPU session of `cluster` into `desired` (its specs' `resources.devices`, and hashes),
/// against what `observed` holds. Sessions without GPUs are left as they are.
pub fn place(cluster: &Cluster, desired: &mut ClusterState, observed: &ClusterState) -> Placement {
    let mut placement = Placement::default();
    let cluster_name = cluster.name.value.as_str();
    // The GPU sessions by node, found in one pass: a large lab has thousands of nodes.
    let mut by_node: std::collections::HashMap<&str, Vec<&crate::model::Session>> = std::collections::HashMap::new();
    for s in cluster.sessions.iter().filter(|s| s.gpus() > 0 || s.resources.gpu_devices.is_some()) {
        by_node.entry(s.node.value.as_str()).or_default().push(s);
    }
    for node in &cluster.nodes {
        let Some(sessions) = by_node.get(node.name.value.as_str()) else { continue };
        let requests: Vec<Request> = sessions
            .iter()
            .map(|s| {
                let name = &s.name.value;
                let want = match (&s.resources.gpu_devices, &s.resources.mig) {
                    (Some(pins), _) => Want::Pinned(pins.value.clone()),
                    (None, Some(profile)) => Want::Mig { profile: profile.value.clone(), count: s.gpus() },
                    (None, None) => Want::Count(s.gpus()),
                };
                let current = observed
                    .sessions
                    .get(name)
                    .filter(|o| o.node == node.name.value)
                    .and_then(|o| o.spec.as_ref())
                    .map(|spec| spec.resources.devices.clone())
                    .unwrap_or_default();
                Request { session: name.to_string(), want, current }
            })
            .collect();
        if requests.is_empty() {
            continue;
        }
        let inventory = observed.inventories.get(&node.name.value);
        let (devices, known) = match inventory {
            Some(inv) if inv.gpu_error.is_none() => (inventory_devices(inv, cluster_name), Known::Inventory),
            _ => {
                if let Some(why) = inventory.and_then(|i| i.gpu_error.clone()) {
                    placement.guessed.push((node.name.value.clone(), why));
                }
                // Without a declared count every session's GPUs are numbered apart, as if the node had
                // as many as its sessions ask.
                let asked: u32 = requests.iter().map(|r| want_count(&r.want)).sum();
                let count = node.gpus.as_ref().map_or(asked, |g| g.value);
                (declared_devices(count), Known::Declared)
            }
        };
        for d in devices.iter().filter(|d| d.busy.is_some()) {
            placement.busy.push(BusyDevice {
                node: node.name.value.clone(),
                index: d.index,
                id: d.id.clone(),
                reason: d.busy.clone().unwrap_or_default(),
            });
        }
        let allocation = allocate(&devices, &requests, known);
        for (session, granted) in allocation.granted {
            let Some(state) = desired.sessions.get_mut(session.as_str()) else { continue };
            let Some(spec) = state.spec.as_mut() else { continue };
            spec.resources.devices = granted;
            state.hash = hash_of(spec);
        }
        for (session, refusal) in allocation.refused {
            // Offline, MIG instances wait for the inventory: the plan shows the profile, not a refusal. A node
            // that answered without one will not have it later.
            let offline = known == Known::Declared && inventory.is_none();
            if offline && matches!(want_of(&requests, &session), Some(Want::Mig { .. })) {
                continue;
            }
            placement.refused.push(Unplaced {
                node: node.name.value.clone(),
                session: SessionName(session),
                reason: refusal.reason,
                busy: refusal.busy,
            });
        }
    }
    placement
}

fn want_of<'a>(requests: &'a [Request], session: &str) -> Option<&'a Want> {
    requests.iter().find(|r| r.session == session).map(|r| &r.want)
}

fn want_count(want: &Want) -> u32 {
    match want {
        Want::Count(n) | Want::Mig { count: n, .. } => *n,
        Want::Pinned(pins) => pins.len() as u32,
    }
}

/// Devices "0".."count-1", as the declared `gpus` knows them.
fn declared_devices(count: u32) -> Vec<Device> {
    (0..count)
        .map(|index| Device { id: index.to_string(), index, mig_profile: None, group: None, busy: None })
        .collect()
}

/// The devices an inventory lists: whole GPUs not in MIG mode, and the MIG instances of those that are.
/// A device without a UUID cannot be asked for by id and is left out.
fn inventory_devices(inventory: &Inventory, cluster: &str) -> Vec<Device> {
    let mut out = Vec::new();
    for gpu in &inventory.gpus {
        if gpu.mig_mode {
            for m in gpu.mig.iter().filter(|m| !m.uuid.is_empty()) {
                out.push(Device {
                    id: m.uuid.clone(),
                    index: gpu.index,
                    mig_profile: Some(m.profile.clone()),
                    group: gpu.numa_node,
                    busy: busy(&m.holders, cluster),
                });
            }
        } else if !gpu.uuid.is_empty() {
            out.push(Device {
                id: gpu.uuid.clone(),
                index: gpu.index,
                mig_profile: None,
                group: gpu.numa_node,
                busy: busy(&gpu.holders, cluster),
            });
        }
    }
    out
}

/// Why a device is not free: the first holder that is not a session of this cluster. A cluster's own
/// sessions hold their devices by right (placement knows them from their specs).
fn busy(holders: &[GpuHolder], cluster: &str) -> Option<String> {
    holders.iter().find(|h| !h.is_session_of(cluster)).map(GpuHolder::describe)
}

/// The devices placed for each session, by node, as plans and status show them: (index, id, name,
/// memory) where the inventory knows them.
pub fn described(devices: &[String], inventory: Option<&Inventory>) -> Vec<DeviceView> {
    devices
        .iter()
        .map(|id| {
            let gpu = inventory.and_then(|inv| {
                inv.gpus.iter().find_map(|g| {
                    if crate::gpu::names(id, &g.uuid, g.index) {
                        return Some((g.index, g.name.clone(), g.memory_total, None));
                    }
                    g.mig
                        .iter()
                        .find(|m| m.uuid == *id)
                        .map(|m| (g.index, g.name.clone(), m.memory_total, Some(m.profile.clone())))
                })
            });
            match gpu {
                Some((index, name, memory, mig)) => {
                    DeviceView { id: id.clone(), index: Some(index), name: Some(name), memory: Some(memory), mig }
                }
                None => DeviceView { id: id.clone(), index: id.parse().ok(), name: None, memory: None, mig: None },
            }
        })
        .collect()
}

/// One placed device as a person reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceView {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<String>,
}

/// The devices of every placed session of `desired`, in session order: for renderings.
pub fn placed(desired: &ClusterState, observed: &ClusterState) -> Vec<crate::plan::PlacedGpus> {
    desired
        .sessions
        .iter()
        .filter_map(|(name, s)| {
            let spec = s.spec.as_ref().filter(|spec| !spec.resources.devices.is_empty())?;
            let inventory = observed.inventories.get(&s.node);
            Some(crate::plan::PlacedGpus {
                cluster: desired.name.clone(),
                node: s.node.to_string(),
                session: name.to_string(),
                devices: described(&spec.resources.devices, inventory),
            })
        })
        .collect()
}

impl DeviceView {
    /// `GPU 0 (GPU-8f2c…, NVIDIA H100 80GB HBM3, 80 GiB)`, or what of it is known.
    pub fn describe(&self) -> String {
        let what = match (&self.mig, self.index) {
            (Some(profile), Some(i)) => format!("MIG {profile} on GPU {i}"),
            (_, Some(i)) => format!("GPU {i}"),
            (_, None) => "device".to_string(),
        };
        let mut details = Vec::new();
        if self.index.is_none_or(|i| i.to_string() != self.id) {
            details.push(escape(&self.id).into_owned());
        }
        if let Some(name) = &self.name {
            details.push(escape(name).into_owned());
        }
        if let Some(memory) = self.memory {
            details.push(crate::config::value::format_size_approx(memory));
        }
        if details.is_empty() { what } else { format!("{what} ({})", details.join(", ")) }
    }
}

impl Placement {
    /// What a run reports: each session that cannot be placed as an error (nothing may be applied while
    /// one is there), each device left out and each node placed without its inventory as a warning.
    pub fn failures(&self) -> Vec<Failure> {
        let mut out = Vec::new();
        for u in &self.refused {
            let held: Vec<String> = u.busy.iter().map(|(id, why)| format!("{}: {why}", escape(id))).collect();
            let help = if held.is_empty() {
                "give the session fewer GPUs, free some on the node, or place it on another node".to_string()
            } else {
                format!("left out because something else uses them: {}", held.join("; "))
            };
            out.push(
                Failure::error(
                    "bai::gpu::unplaceable",
                    format!("session `{}` on node `{}` cannot be given its GPUs: {}", u.session, u.node, u.reason),
                )
                .help(help),
            );
        }
        for b in &self.busy {
            out.push(
                Failure::warning(
                    "bai::gpu::in_use",
                    format!("node `{}`: GPU {} ({}) is not handed out: {}", b.node, b.index, escape(&b.id), b.reason),
                )
                .help("bai never gives a session a device something else uses; stop that user to free it"),
            );
        }
        for (node, why) in &self.guessed {
            out.push(
                Failure::warning(
                    "bai::gpu::no_inventory",
                    format!(
                        "node `{node}` reports no GPU inventory ({}): its sessions' GPUs are placed by index \
                         against its declared `gpus`",
                        escape(why)
                    ),
                )
                .help("install the NVIDIA driver (NVML) on the node so that GPUs are placed by UUID"),
            );
        }
        out
    }

    /// Whether some session could not be placed.
    pub fn is_refused(&self) -> bool {
        !self.refused.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::scripted::lab;
    use crate::state::snapshot::{AgentInfo, ContainerState, GpuInfo, MigInfo, NodeSnapshot, SessionSnapshot};

    const LAB: &str = r#"
cluster "lab" {
    node "gpu-01" address="10.0.0.11" {
        gpus 8
    }
    image "pytorch" ref="lab/pytorch:1"
    session "train-b" image="pytorch" node="gpu-01" {
        resources gpus=4
    }
    session "train-a" image="pytorch" node="gpu-01" {
        resources gpus=2
    }
    session "tools" image="pytorch" node="gpu-01"
}
"#;

    fn uuid(i: u32) -> String {
        format!("GPU-{i:08x}")
    }

    fn gpus(n: u32) -> Vec<GpuInfo> {
        (0..n)
            .map(|index| GpuInfo {
                index,
                name: "NVIDIA H100 80GB HBM3".into(),
                uuid: uuid(index),
                memory_total: 80 << 30,
                numa_node: Some(index / 4),
                ..GpuInfo::default()
            })
            .collect()
    }

    fn node(gpus: Vec<GpuInfo>, gpu_error: Option<&str>, sessions: Vec<SessionSnapshot>) -> ClusterState {
        let snapshot = NodeSnapshot {
            name: "gpu-01".into(),
            agent: Some(AgentInfo { version: crate::state::AGENT_VERSION.into() }),
            labels: Default::default(),
            inventory: Some(Inventory {
                gpus,
                gpu_error: gpu_error.map(str::to_string),
                cpus: Some(64),
                memory: None,
                docker_version: None,
            }),
            images: vec![],
            vfolders: vec![],
            sessions,
            unowned: vec![],
            generation: None,
        };
        ClusterState::observed(&"lab".into(), vec![snapshot])
    }

    /// A running container of `session` recorded with `devices`.
    fn running(cluster: &Cluster, session: &str, devices: &[String]) -> SessionSnapshot {
        let desired = ClusterState::desired(cluster);
        let mut spec = desired.sessions[session].spec.clone().expect("spec");
        spec.resources.devices = devices.to_vec();
        SessionSnapshot {
            name: session.into(),
            spec_hash: hash_of(&spec),
            state: ContainerState::Running,
            exit_code: None,
            spec: Some(spec),
        }
    }

    fn devices(state: &ClusterState, session: &str) -> Vec<String> {
        state.sessions[session].spec.as_ref().map(|s| s.resources.devices.clone()).unwrap_or_default()
    }

    #[test]
    fn offline_sessions_get_indices_in_name_order_and_their_hash_says_so() {
        let (_dir, _, loaded) = lab(LAB);
        let cluster = &loaded.config.clusters[0];
        let (desired, placement) = ClusterState::desired_on(cluster, &ClusterState::empty("lab".into()));
        assert_eq!(placement, Placement::default());
        assert_eq!(devices(&desired, "train-a"), ["0", "1"]);
        assert_eq!(devices(&desired, "train-b"), ["2", "3", "4", "5"]);
        assert!(devices(&desired, "tools").is_empty());
        let spec = desired.sessions["train-a"].spec.as_ref().expect("spec");
        assert_eq!(desired.sessions["train-a"].hash, hash_of(spec));
    }

    #[test]
    fn live_sessions_get_uuids_and_a_running_session_keeps_its_devices() {
        let (_dir, _, loaded) = lab(LAB);
        let cluster = &loaded.config.clusters[0];
        // train-b runs on GPUs 4-7 (another NUMA node); train-a is new and takes the lowest free.
        let held: Vec<String> = (4..8).map(uuid).collect();
        let observed = node(gpus(8), None, vec![running(cluster, "train-b", &held)]);
        let (desired, placement) = ClusterState::desired_on(cluster, &observed);
        assert!(placement.failures().is_empty(), "{:?}", placement.failures());
        assert_eq!(devices(&desired, "train-b"), held);
        assert_eq!(devices(&desired, "train-a"), [uuid(0), uuid(1)]);
        // Unchanged, the running session plans nothing.
        assert_eq!(desired.sessions["train-b"].hash, observed.sessions["train-b"].hash);
    }

    #[test]
    fn a_device_something_else_uses_is_left_out_and_the_plan_says_why() {
        let (_dir, _, loaded) = lab(LAB);
        let cluster = &loaded.config.clusters[0];
        let mut inventory = gpus(8);
        inventory[0].holders = vec![GpuHolder { pid: Some(4242), ..GpuHolder::default() }];
        inventory[1].holders = vec![GpuHolder {
            container: Some("other.x".into()),
            cluster: Some("other".into()),
            session: Some("x".into()),
            pid: None,
        }];
        // A session of this cluster holding GPU 2 is this cluster's own business, not a reason.
        inventory[2].holders = vec![GpuHolder {
            container: Some("bai.lab.gone".into()),
            cluster: Some("lab".into()),
            session: Some("gone".into()),
            pid: None,
        }];
        let (desired, placement) = ClusterState::desired_on(cluster, &node(inventory, None, vec![]));
        assert_eq!(devices(&desired, "train-a"), [uuid(2), uuid(3)]);
        assert_eq!(devices(&desired, "train-b"), [uuid(4), uuid(5), uuid(6), uuid(7)]);
        let failures = placement.failures();
        let codes: Vec<&str> = failures.iter().map(|f| f.code.as_str()).collect();
        assert_eq!(codes, ["bai::gpu::in_use", "bai::gpu::in_use"]);
        assert!(
            failures[0].message.contains("GPU 0") && failures[0].message.contains("process 4242"),
            "{}",
            failures[0].message
        );
        assert!(failures[1].message.contains("session `x` of cluster `other`"), "{}", failures[1].message);
    }

    #[test]
    fn too_few_free_devices_refuse_the_session() {
        let (_dir, _, loaded) = lab(LAB);
        let cluster = &loaded.config.clusters[0];
        let mut inventory = gpus(6);
        inventory[5].holders = vec![GpuHolder { pid: Some(7), ..GpuHolder::default() }];
        let (_, placement) = ClusterState::desired_on(cluster, &node(inventory, None, vec![]));
        assert!(placement.is_refused());
        let errors: Vec<_> = placement.failures().into_iter().filter(Failure::is_error).collect();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, "bai::gpu::unplaceable");
        assert!(errors[0].message.contains("`train-b`"), "{}", errors[0].message);
        assert!(errors[0].help.as_deref().is_some_and(|h| h.contains("process 7")), "{:?}", errors[0].help);
    }

    #[test]
    fn without_nvml_the_declared_count_places_them_and_a_warning_says_so() {
        let (_dir, _, loaded) = lab(LAB);
        let cluster = &loaded.config.clusters[0];
        let (desired, placement) =
            ClusterState::desired_on(cluster, &node(vec![], Some("NVML unavailable: no driver"), vec![]));
        assert_eq!(devices(&desired, "train-a"), ["0", "1"]);
        let codes: Vec<String> = placement.failures().into_iter().map(|f| f.code).collect();
        assert_eq!(codes, ["bai::gpu::no_inventory"]);
    }

    #[test]
    fn mig_instances_are_placed_by_profile_and_wait_for_the_inventory_offline() {
        let text = r#"
cluster "lab" {
    node "gpu-01" address="10.0.0.11" {
        gpus 2
    }
    image "pytorch" ref="lab/pytorch:1"
    session "small" image="pytorch" node="gpu-01" {
        resources mig="1g.10gb" gpus=2
    }
    session "whole" image="pytorch" node="gpu-01" {
        resources gpus=1
    }
}
"#;
        let (_dir, _, loaded) = lab(text);
        let cluster = &loaded.config.clusters[0];
        let (offline, placement) = ClusterState::desired_on(cluster, &ClusterState::empty("lab".into()));
        assert!(devices(&offline, "small").is_empty());
        assert!(!placement.is_refused());
        let mut inventory = gpus(2);
        inventory[0].mig_mode = true;
        inventory[0].mig = (0..3)
            .map(|i| MigInfo {
                uuid: format!("MIG-{i}"),
                profile: "1g.10gb".into(),
                memory_total: 10 << 30,
                holders: vec![],
            })
            .collect();
        let (live, placement) = ClusterState::desired_on(cluster, &node(inventory, None, vec![]));
        assert!(placement.failures().is_empty(), "{:?}", placement.failures());
        assert_eq!(devices(&live, "small"), ["MIG-0", "MIG-1"]);
        // GPU 0 is in MIG mode: the whole-GPU session gets GPU 1.
        assert_eq!(devices(&live, "whole"), [uuid(1)]);
        let views = described(
            &devices(&live, "small"),
            Some(&Inventory { gpus: gpus(1), gpu_error: None, cpus: None, memory: None, docker_version: None }),
        );
        assert_eq!(views[0].index, None);
    }
}
