//! GPU placement end to end, without GPUs: `bai apply` of a lab with several GPU sessions on one node,
//! against the harness's own Docker engine (Docker's NVIDIA device-driver path with a stand-in hook, so
//! that Docker puts the requested ids into each container's `NVIDIA_VISIBLE_DEVICES` exactly as on a GPU
//! node) and a stand-in inventory of 8 GPUs on two NUMA nodes (`BAI_STAND_IN_GPUS`, tests only). Checked
//! inside each container: disjoint device sets, stable across a second apply, a session added and a
//! replace; a device a foreign container holds is never handed out.

use std::collections::BTreeSet;
use std::process::Output;

use crate::support::images::{BOX_DOCKERFILE, write_context};
use crate::support::lab::{LocalLab, text};
use crate::support::{GpuEngine, bai, json, stdout_of};

fn uuid(i: u32) -> String {
    format!("GPU-00000000-0000-4000-8000-00000000000{i}")
}

struct GpuLab {
    lab: LocalLab,
    engine: GpuEngine,
}

impl GpuLab {
    fn new() -> Self {
        let lab = LocalLab::new("gp");
        let engine = GpuEngine::start();
        write_context(&lab.file("img"), BOX_DOCKERFILE);
        let gpus: Vec<serde_json::Value> = (0..8)
            .map(|i| {
                serde_json::json!({"index": i, "name": "Stand-in H100", "uuid": uuid(i), "memory_total": 85899345920u64,
                    "utilization": 0, "numa_node": i / 4})
            })
            .collect();
        std::fs::write(lab.file("gpus.json"), serde_json::to_string(&gpus).expect("json")).expect("write the GPUs");
        GpuLab { lab, engine }
    }

    /// The lab with `sessions` (whole lines) on the GPU node.
    fn write(&self, sessions: &str) {
        self.lab.write_text(&format!(
            "cluster \"{}\" {{\n    node \"gpu\" local=#true {{\n        gpus 8\n        vfolder-root \"{}\"\n    }}\n    image \"box\" ref=\"bai-it/box:1\" {{\n        build context=\"./img\"\n    }}\n{sessions}}}\n",
            self.lab.cluster,
            self.lab.file("vfolders").display()
        ));
    }

    /// `bai ARGS… LAB` against the GPU engine and the stand-in inventory.
    fn run(&self, args: &[&str]) -> Output {
        bai()
            .env("BAI_HOME", self.lab.file("agent-home"))
            .env("DOCKER_HOST", self.engine.docker_host())
            .env("BAI_STAND_IN_GPUS", self.lab.file("gpus.json"))
            .args(args)
            .arg(self.lab.path())
            .output()
            .expect("bai runs")
    }

    #[track_caller]
    fn expect(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "bai {args:?}\n{}", text(&out));
        text(&out)
    }

    /// What `session`'s container sees: `NVIDIA_VISIBLE_DEVICES` as Docker set it, and its id.
    fn visible(&self, session: &str) -> (Vec<String>, String) {
        let container = self.lab.container_name(session);
        // The session's own process: Docker's NVIDIA driver puts the variable into the container's process
        // (its OCI spec), not into its configuration, which `docker exec` would inherit.
        let script = "/bin/busybox tr '\\0' '\\n' < /proc/1/environ";
        let env = self.engine.docker_ok(&["exec", &container, "/bin/busybox", "sh", "-c", script]);
        let var = |name: &str| {
            env.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).map(str::to_string).unwrap_or_default()
        };
        let devices: Vec<String> = var("NVIDIA_VISIBLE_DEVICES").split(',').map(str::to_string).collect();
        let cuda: Vec<String> = (0..devices.len()).map(|i| i.to_string()).collect();
        assert_eq!(var("CUDA_VISIBLE_DEVICES"), cuda.join(","), "{session}: {env}");
        assert_eq!(var("CUDA_DEVICE_ORDER"), "PCI_BUS_ID", "{session}: {env}");
        let inspect = json(&self.engine.docker_ok(&["inspect", &container]))[0].clone();
        assert_eq!(inspect["Config"]["Labels"]["ai.bai.gpu-devices"], devices.join(","), "{session}");
        let request = &inspect["HostConfig"]["DeviceRequests"][0];
        assert_eq!(request["Driver"], "nvidia");
        assert_eq!(request["Count"], 0, "by id, never a count: {request}");
        (devices, inspect["Id"].as_str().unwrap_or_default().to_string())
    }
}

const SESSIONS: &str = r#"    session "train-a" image="box" node="gpu" {
        resources gpus=4
        command "/bin/busybox" "sh" "-c" "trap 'exit 0' TERM; while true; do /bin/busybox sleep 1; done"
    }
    session "train-b" image="box" node="gpu" {
        resources gpus=2
        command "/bin/busybox" "sh" "-c" "trap 'exit 0' TERM; while true; do /bin/busybox sleep 1; done"
    }
    session "pinned" image="box" node="gpu" {
        resources gpu-devices="7"
        command "/bin/busybox" "sh" "-c" "trap 'exit 0' TERM; while true; do /bin/busybox sleep 1; done"
    }
"#;

const ALPHA: &str = r#"    session "alpha" image="box" node="gpu" {
        resources gpus=1
        command "/bin/busybox" "sh" "-c" "trap 'exit 0' TERM; while true; do /bin/busybox sleep 1; done"
    }
"#;

fn uuids(indices: &[u32]) -> Vec<String> {
    indices.iter().map(|&i| uuid(i)).collect()
}

#[test]
fn gpu_sessions_get_disjoint_devices_that_stay_theirs() {
    let lab = GpuLab::new();
    // A pinned UUID the node's inventory lacks: an error at the pin, before anything changes.
    lab.write(&SESSIONS.replace("gpu-devices=\"7\"", "gpu-devices=\"GPU-nope\""));
    let absent = lab.expect(1, &["apply", "--yes"]);
    assert!(absent.contains("bai::gpu::unplaceable") && absent.contains("GPU-nope"), "{absent}");
    let absent = lab.expect(1, &["plan"]);
    assert!(absent.contains("bai::gpu::pinned_absent") && absent.contains("GPU-nope"), "{absent}");
    lab.write(SESSIONS);
    let plan = lab.run(&["plan", "--format", "json"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let doc = json(&stdout_of(&plan));
    let placed = doc["gpus"].as_array().cloned().unwrap_or_default();
    let a = placed.iter().find(|g| g["session"] == "train-a").expect("train-a is placed in the plan");
    assert_eq!(
        a["devices"][0],
        serde_json::json!({"id": uuid(0), "index": 0, "name": "Stand-in H100", "memory": 85899345920u64})
    );

    lab.expect(0, &["apply", "--yes"]);
    // Pins first; then in name order, the lowest free devices on one NUMA node (0-3 and 4-7).
    let (a, a_id) = lab.visible("train-a");
    let (b, b_id) = lab.visible("train-b");
    let (p, _) = lab.visible("pinned");
    assert_eq!(a, uuids(&[0, 1, 2, 3]));
    assert_eq!(b, uuids(&[4, 5]));
    assert_eq!(p, uuids(&[7]));
    let all: BTreeSet<&String> = a.iter().chain(&b).chain(&p).collect();
    assert_eq!(all.len(), 7, "no device twice");

    // Nothing to do the second time.
    assert!(lab.expect(0, &["apply", "--yes"]).contains("No changes."));

    // A session named before the others is added: it gets the free device, nobody moves.
    lab.write(&(ALPHA.to_string() + SESSIONS));
    let out = lab.expect(0, &["apply", "--yes"]);
    assert!(out.contains("+ session:alpha") && !out.contains("-/+"), "{out}");
    assert_eq!(lab.visible("alpha").0, uuids(&[6]));
    assert_eq!(lab.visible("train-a"), (a.clone(), a_id));
    assert_eq!(lab.visible("train-b"), (b.clone(), b_id.clone()));

    // A replace (the command changed) keeps the session's devices.
    lab.write(&(ALPHA.to_string() + &SESSIONS.replacen("sleep 1;", "sleep 2;", 2)));
    let out = lab.expect(0, &["apply", "--yes"]);
    assert!(out.contains("-/+ session:train-b"), "{out}");
    let (b_again, b_new_id) = lab.visible("train-b");
    assert_eq!(b_again, b);
    assert_ne!(b_new_id, b_id, "train-b was replaced");

    // `status` says who holds each GPU.
    let status = lab.expect(0, &["status"]);
    assert!(status.contains(&format!("gpu 4 ({}, 80.0GiB): session train-b", uuid(4))), "{status}");

    // train-b goes; a container that is not bai's takes GPU 4. Asking for two is refused before anything
    // changes, naming the device and its holder; asking for one gets GPU 5, GPU 4 named as in use.
    let foreign = format!("{}-squatter", lab.lab.cluster);
    let device = format!("\"device={}\"", uuid(4));
    lab.engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "--gpus",
        &device,
        "bai-it/box:1",
        "/bin/busybox",
        "sleep",
        "3600",
    ]);
    let without_b = |gpus: u32| {
        let c = format!(
            "    session \"train-c\" image=\"box\" node=\"gpu\" {{\n        resources gpus={gpus}\n        command \"/bin/busybox\" \"sh\" \"-c\" \"trap 'exit 0' TERM; while true; do /bin/busybox sleep 1; done\"\n    }}\n"
        );
        let sessions = SESSIONS.split("    session \"train-b\"").next().unwrap_or_default().to_string()
            + SESSIONS
                .split("    session \"pinned\"")
                .nth(1)
                .map(|rest| format!("    session \"pinned\"{rest}"))
                .unwrap_or_default()
                .as_str();
        ALPHA.to_string() + &sessions + &c
    };
    lab.write(&without_b(2));
    let refused = lab.expect(1, &["apply", "--yes"]);
    assert!(refused.contains("bai::gpu::unplaceable") && refused.contains("`train-c`"), "{refused}");
    assert!(refused.contains(&format!("held by container `{foreign}`, not bai's")), "{refused}");
    assert!(lab.visible("train-b").0 == b, "nothing changed");
    // The squatter was inspected once; its request is kept by container id, and the next observe reads it
    // from there instead of asking the engine again (a planted claim shows it is the kept one that is read).
    let kept_at = lab.lab.file("agent-home/gpu-claims.json");
    let kept: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(&kept_at).expect("the claims are kept")).expect("json");
    let id = lab.engine.docker_ok(&["inspect", "-f", "{{.Id}}", &foreign]).trim().to_string();
    assert_eq!(kept, std::collections::BTreeMap::from([(id.clone(), vec![uuid(4)])]));
    let planted = std::collections::BTreeMap::from([(id.clone(), vec![uuid(6)])]);
    std::fs::write(&kept_at, serde_json::to_string(&planted).expect("json")).expect("plant");
    let status = lab.expect(0, &["status"]);
    let gpu6 = status.lines().find(|l| l.trim_start().starts_with("gpu 6 (")).unwrap_or_default();
    assert!(gpu6.contains(&format!("held by container `{foreign}`")), "{status}");
    let truth = std::collections::BTreeMap::from([(id, vec![uuid(4)])]);
    std::fs::write(&kept_at, serde_json::to_string(&truth).expect("json")).expect("restore");
    lab.write(&without_b(1));
    let out = lab.expect(0, &["apply", "--yes"]);
    assert!(out.contains("bai::gpu::in_use") && out.contains("GPU 4"), "{out}");
    assert_eq!(lab.visible("train-c").0, uuids(&[5]));

    lab.engine.docker_ok(&["rm", "-f", &foreign]);
    lab.expect(0, &["destroy", "--yes"]);
    let left = lab.engine.docker_ok(&["ps", "-aq", "--filter", &format!("label=ai.bai.cluster={}", lab.lab.cluster)]);
    assert!(left.trim().is_empty(), "destroy left {left}");
}
