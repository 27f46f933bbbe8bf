//! The engine's API documents the agent reads and writes: only the fields bai uses, named as the engine
//! names them. Whatever else the engine sends is skipped unread, and every field may be missing or `null`
//! (engines of other versions leave some out).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// `GET /version`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Version {
    #[serde(rename = "Version")]
    pub version: Option<String>,
}

/// One container of `GET /containers/json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: Option<String>,
    #[serde(rename = "Names")]
    pub names: Option<Vec<String>>,
    #[serde(rename = "Labels")]
    pub labels: Option<HashMap<String, String>>,
    #[serde(rename = "State")]
    pub state: Option<String>,
    #[serde(rename = "Status")]
    pub status: Option<String>,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerInspect {
    #[serde(rename = "Id")]
    pub id: Option<String>,
    #[serde(rename = "Config")]
    pub config: Option<ContainerConfig>,
    #[serde(rename = "State")]
    pub state: Option<ContainerStatus>,
    #[serde(rename = "HostConfig")]
    pub host_config: Option<InspectHostConfig>,
    #[serde(rename = "NetworkSettings")]
    pub network_settings: Option<NetworkSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    #[serde(rename = "Labels")]
    pub labels: Option<HashMap<String, String>>,
    #[serde(rename = "Env")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Tty")]
    pub tty: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerStatus {
    #[serde(rename = "Status")]
    pub status: Option<String>,
    #[serde(rename = "Running")]
    pub running: Option<bool>,
    #[serde(rename = "Restarting")]
    pub restarting: Option<bool>,
    #[serde(rename = "ExitCode")]
    pub exit_code: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InspectHostConfig {
    #[serde(rename = "NetworkMode")]
    pub network_mode: Option<String>,
    #[serde(rename = "DeviceRequests")]
    pub device_requests: Option<Vec<DeviceRequest>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkSettings {
    #[serde(rename = "Networks")]
    pub networks: Option<HashMap<String, Endpoint>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    #[serde(rename = "IPAddress")]
    pub ip_address: Option<String>,
}

/// A request for devices (`--gpus`), as a container is created with it and inspected.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceRequest {
    #[serde(rename = "Driver", skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(rename = "Count", skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(rename = "DeviceIDs", skip_serializing_if = "Option::is_none")]
    pub device_ids: Option<Vec<String>>,
    #[serde(rename = "Capabilities", skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<Vec<String>>>,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImageInspect {
    #[serde(rename = "Id")]
    pub id: Option<String>,
    #[serde(rename = "RepoDigests")]
    pub repo_digests: Option<Vec<String>>,
    #[serde(rename = "Config")]
    pub config: Option<ImageConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    #[serde(rename = "Env")]
    pub env: Option<Vec<String>>,
}

/// What `POST /containers/create` and `POST /containers/{id}/exec` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Created {
    #[serde(rename = "Id")]
    pub id: String,
}

/// `GET /exec/{id}/json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExecInspect {
    #[serde(rename = "Running")]
    pub running: Option<bool>,
    #[serde(rename = "ExitCode")]
    pub exit_code: Option<i64>,
}

/// `POST /containers/{id}/exec`.
#[derive(Debug, Serialize)]
pub struct ExecConfig {
    #[serde(rename = "Cmd")]
    pub cmd: Vec<String>,
    #[serde(rename = "AttachStdin")]
    pub attach_stdin: bool,
    #[serde(rename = "AttachStdout")]
    pub attach_stdout: bool,
    #[serde(rename = "AttachStderr")]
    pub attach_stderr: bool,
    #[serde(rename = "Tty")]
    pub tty: bool,
}

/// `POST /exec/{id}/start`.
#[derive(Debug, Serialize)]
pub struct ExecStart {
    #[serde(rename = "Detach")]
    pub detach: bool,
    #[serde(rename = "Tty")]
    pub tty: bool,
}

/// The `X-Docker-Container-Path-Stat` of an archive reply (base64 of this JSON).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PathStat {
    pub mode: u32,
}

/// One message of a progress stream (a pull, a build, a load).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub stream: Option<String>,
    error: Option<String>,
    #[serde(rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorDetail {
    message: Option<String>,
}

impl Progress {
    /// The error this message reports, if it is one.
    pub fn error(&self) -> Option<String> {
        self.error.clone().or_else(|| self.error_detail.as_ref().and_then(|d| d.message.clone()))
    }
}

/// `POST /containers/create`: what bai sets of a session's container.
#[derive(Debug, Default, Serialize)]
pub struct ContainerCreate {
    #[serde(rename = "Image")]
    pub image: String,
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env")]
    pub env: Vec<String>,
    #[serde(rename = "User", skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "WorkingDir")]
    pub working_dir: String,
    #[serde(rename = "Labels")]
    pub labels: HashMap<String, String>,
    /// Port (`80/tcp`) to an empty object, as the engine wants it.
    #[serde(rename = "ExposedPorts", skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(rename = "HostConfig")]
    pub host_config: HostConfig,
}

/// `{}`.
#[derive(Debug, Default, Serialize)]
pub struct Empty {}

#[derive(Debug, Default, Serialize)]
pub struct HostConfig {
    #[serde(rename = "Binds")]
    pub binds: Vec<String>,
    #[serde(rename = "NanoCpus", skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    #[serde(rename = "Memory", skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    #[serde(rename = "DeviceRequests", skip_serializing_if = "Option::is_none")]
    pub device_requests: Option<Vec<DeviceRequest>>,
    #[serde(rename = "RestartPolicy")]
    pub restart_policy: RestartPolicy,
    #[serde(rename = "ShmSize", skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    #[serde(rename = "Ulimits", skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<Vec<Ulimit>>,
    #[serde(rename = "NetworkMode", skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(rename = "PortBindings", skip_serializing_if = "Option::is_none")]
    pub port_bindings: Option<BTreeMap<String, Vec<PortBinding>>>,
    #[serde(rename = "Devices", skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceMapping>>,
    #[serde(rename = "CapAdd", skip_serializing_if = "Option::is_none")]
    pub cap_add: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize)]
pub struct RestartPolicy {
    /// `no`, `on-failure`, `always` or `unless-stopped`.
    #[serde(rename = "Name")]
    pub name: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Ulimit {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Soft")]
    pub soft: i64,
    #[serde(rename = "Hard")]
    pub hard: i64,
}

#[derive(Debug, Serialize)]
pub struct PortBinding {
    #[serde(rename = "HostIp")]
    pub host_ip: String,
    #[serde(rename = "HostPort")]
    pub host_port: String,
}

#[derive(Debug, Serialize)]
pub struct DeviceMapping {
    #[serde(rename = "PathOnHost")]
    pub path_on_host: String,
    #[serde(rename = "PathInContainer")]
    pub path_in_container: String,
    #[serde(rename = "CgroupPermissions")]
    pub cgroup_permissions: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_read_as_the_engine_writes_them_nulls_and_gaps_included() {
        let inspect: ContainerInspect = serde_json::from_str(
            r#"{"Id":"abc","Config":{"Labels":null,"Env":["A=1"],"Tty":false},
                "State":{"Status":"exited","Running":false,"ExitCode":3},
                "HostConfig":{"NetworkMode":"default","DeviceRequests":null},
                "NetworkSettings":{"Networks":{"bridge":{"IPAddress":"172.17.0.2"}}},"Extra":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(inspect.id.as_deref(), Some("abc"));
        assert_eq!(inspect.config.as_ref().and_then(|c| c.labels.as_ref()), None);
        assert_eq!(inspect.state.as_ref().and_then(|s| s.exit_code), Some(3));
        let ip = inspect.network_settings.and_then(|n| n.networks).and_then(|n| n.get("bridge")?.ip_address.clone());
        assert_eq!(ip.as_deref(), Some("172.17.0.2"));
        let listed: Vec<ContainerSummary> = serde_json::from_str(r#"[{"Id":"x","Names":["/a"],"Labels":{}}]"#).unwrap();
        assert_eq!((listed[0].state.as_deref(), listed[0].names.as_deref()), (None, Some(&["/a".to_string()][..])));
    }

    #[test]
    fn a_created_container_is_written_as_the_engine_reads_it() {
        let body = ContainerCreate {
            image: "img:1".into(),
            env: vec!["PATH=/bin".into()],
            working_dir: "/home/work".into(),
            exposed_ports: Some(BTreeMap::from([("80/tcp".into(), Empty {})])),
            host_config: HostConfig {
                restart_policy: RestartPolicy { name: "unless-stopped" },
                device_requests: Some(vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    device_ids: Some(vec!["GPU-1".into()]),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["ExposedPorts"], serde_json::json!({"80/tcp": {}}));
        assert_eq!(json["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
        assert_eq!(
            json["HostConfig"]["DeviceRequests"],
            serde_json::json!([{"Driver": "nvidia", "DeviceIDs": ["GPU-1"], "Capabilities": [["gpu"]]}])
        );
        assert!(json.get("Cmd").is_none() && json["HostConfig"].get("Memory").is_none());
    }
}
