//! The agent's RPC as a controller meets it: the real `bai agent` process, JSON lines on its stdio.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bai::protocol::{
    BAI_VERSION, HealthCheckSpec, HealthProbe, HealthResult, Hello, Method, PROTOCOL_VERSION, Probe, ProbeReply,
    Request, container_name,
};
use bai::state::snapshot::ContainerState;

use crate::docker::{Cleanup, unique};
use crate::support::images::{IMAGE, docker, docker_ok, test_image};
use crate::support::json;

struct Agent {
    child: std::process::Child,
    reader: BufReader<std::process::ChildStdout>,
    _home: tempfile::TempDir,
}

impl Agent {
    fn start() -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        // The binary nodes are sent; `bai agent` runs the same code (probe_fails_… below starts that one).
        let mut child = Command::new(env!("CARGO_BIN_EXE_bai-agent"))
            .arg("agent")
            .env("BAI_HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("agent starts");
        let reader = BufReader::new(child.stdout.take().expect("stdout"));
        Agent { child, reader, _home: home }
    }

    fn call(&mut self, line: &str) -> serde_json::Value {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("send");
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("reply");
        json(&reply)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hello(version: &str, lease: bool) -> String {
    format!(
        r#"{{"id":1,"method":"hello","params":{{"protocol":{},"version":"{version}","cluster":"lab","node":"n1","lease":{lease},"holder":"test"}}}}"#,
        bai::protocol::PROTOCOL_VERSION
    )
}

#[test]
fn the_agent_refuses_another_version_with_a_clear_message() {
    let mut agent = Agent::start();
    let reply = agent.call(&hello("0.0.1", false));
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["error"]["kind"], "version_mismatch");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("bai 0.0.1") && message.contains(bai::protocol::BAI_VERSION), "{message}");
}

#[test]
fn requests_need_a_hello_and_changes_need_the_lease() {
    let mut agent = Agent::start();
    let early =
        agent.call(r#"{"id":5,"method":"observe","params":{"cluster":"lab","node":"n1","vfolder_root":"/tmp/x"}}"#);
    assert_eq!(early["error"]["kind"], "bad_request", "{early}");
    let ok = agent.call(&hello(bai::protocol::BAI_VERSION, false));
    assert_eq!(ok["result"]["lease"], false, "{ok}");
    let ping = agent.call(r#"{"id":2,"method":"ping"}"#);
    assert!(ping["result"]["uptime_s"].as_u64().is_some(), "{ping}");
    let change = agent.call(r#"{"id":3,"method":"leave","params":{"cluster":"lab"}}"#);
    assert_eq!(change["error"]["kind"], "no_lease", "{change}");
    // Recording a generation changes the node; listing and reading them do not.
    let record = agent.call(
        r#"{"id":7,"method":"record_generation","params":{"cluster":"lab","keep":10,"record":{"number":1,"cluster":"lab","node":"n1","applied_at":"2026-11-25T00:00:00Z","applied_by":"me","bai_version":"0","config_hash":"00","enrolled":true}}}"#,
    );
    assert_eq!(record["error"]["kind"], "no_lease", "{record}");
    let listed = agent.call(r#"{"id":8,"method":"list_generations","params":{"cluster":"lab"}}"#);
    assert_eq!(listed["result"]["generations"], serde_json::json!([]), "{listed}");
    let missing = agent.call(r#"{"id":10,"method":"get_generation","params":{"cluster":"lab","number":1}}"#);
    assert_eq!(missing["error"]["kind"], "refused", "{missing}");
    let other = agent.call(r#"{"id":4,"method":"leave","params":{"cluster":"other"}}"#);
    assert_eq!(other["error"]["kind"], "bad_request", "{other}");
    let garbage = agent.call(r#"{"id":9,"method":"format_disk"}"#);
    assert_eq!(
        (garbage["id"].clone(), garbage["error"]["kind"].clone()),
        (serde_json::json!(9), serde_json::json!("bad_request"))
    );
    let inventory = agent.call(r#"{"id":6,"method":"inventory"}"#);
    // Without NVML the inventory has zero GPUs and says why; it is never an error.
    let gpus = inventory["result"]["gpus"].as_array().map(Vec::len);
    assert!(gpus.is_some(), "{inventory}");
    if gpus == Some(0) {
        assert!(inventory["result"]["gpu_error"].as_str().is_some_and(|r| !r.is_empty()), "{inventory}");
    }
}

// `probe`, through the real agent against the machine's real Docker engine.

/// One request line, typed so that a test cannot send what the protocol does not define.
fn line(id: u64, method: Method) -> String {
    serde_json::to_string(&Request { id, method }).expect("a request encodes")
}

/// An agent for `cluster`, holding its lease so that it may create sessions.
fn agent_for(cluster: &str) -> Agent {
    test_image();
    let mut agent = Agent::start();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        version: BAI_VERSION.into(),
        cluster: cluster.into(),
        node: "n1".into(),
        lease: true,
        holder: "test".into(),
    };
    let reply = agent.call(&line(1, Method::Hello(hello)));
    assert_eq!(reply["result"]["lease"], true, "{reply}");
    agent
}

fn create(agent: &mut Agent, cluster: &str, name: &str, command: &[&str]) {
    let req = crate::docker::request(cluster, name, crate::docker::spec(command, vec![]));
    let reply = agent.call(&line(2, Method::CreateSession(Box::new(req))));
    assert!(reply["error"].is_null(), "creating {name}: {reply}");
}

fn http(session: &str, port: u16, path: &str, timeout_ms: u64) -> HealthProbe {
    HealthProbe { session: session.into(), check: HealthCheckSpec::Http { port, path: path.into() }, timeout_ms }
}

fn exec(session: &str, argv: &[&str], timeout_ms: u64) -> HealthProbe {
    let argv = argv.iter().map(|s| s.to_string()).collect();
    HealthProbe { session: session.into(), check: HealthCheckSpec::Exec { argv }, timeout_ms }
}

fn probe(agent: &mut Agent, cluster: &str, checks: &[HealthProbe]) -> ProbeReply {
    let method = Method::Probe(Probe { cluster: cluster.into(), node: "n1".into(), checks: checks.to_vec() });
    let reply = agent.call(&line(3, method));
    assert_eq!(reply["id"], 3, "{reply}");
    serde_json::from_value(reply["result"].clone()).unwrap_or_else(|e| panic!("not a probe reply ({e}): {reply}"))
}

/// Probes until `done` holds for the reply (containers take a moment to start serving), at most 15 s;
/// returns the last reply either way, for the test to judge.
fn probe_until(
    agent: &mut Agent,
    cluster: &str,
    checks: &[HealthProbe],
    done: impl Fn(&ProbeReply) -> bool,
) -> ProbeReply {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = probe(agent, cluster, checks);
        if done(&reply) || Instant::now() > deadline {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn outcome(r: &HealthResult) -> (&str, bool, &str) {
    (r.session.as_str(), r.healthy, r.detail.as_str())
}

#[test]
fn probe_gets_http_checks_from_the_node() {
    let cluster = unique("probe");
    let _cleanup = Cleanup::new(&cluster);
    let mut agent = agent_for(&cluster);
    let serve = "mkdir -p /www && echo ok > /www/ready.html && exec /bin/busybox httpd -f -p 8080 -h /www";
    create(&mut agent, &cluster, "web", &["/bin/busybox", "sh", "-c", serve]);

    let ready = [http("web", 8080, "/ready.html", 2000)];
    let reply = probe_until(&mut agent, &cluster, &ready, |r| r.health[0].healthy);
    assert_eq!(reply.health.iter().map(outcome).collect::<Vec<_>>(), [("web", true, "HTTP 200")]);
    let web = reply.sessions.iter().find(|s| s.name == "web").expect("the session is listed");
    assert_eq!(web.state, ContainerState::Running);
    assert!(reply.unowned.is_empty(), "{:?}", reply.unowned);

    docker_ok(&["exec", &container_name(&cluster, "web"), "/bin/busybox", "rm", "/www/ready.html"]);
    let checks = [
        http("web", 8080, "/ready.html", 2000),
        http("web", 8081, "/", 2000),
        http("web", 8080, "/ready.html HTTP/1.1\r\nHost: elsewhere\r\n\r\nGET /", 2000),
        http("absent", 8080, "/", 2000),
    ];
    let reply = probe(&mut agent, &cluster, &checks);
    let got: Vec<_> = reply.health.iter().map(outcome).collect();
    assert_eq!(got[0], ("web", false, "HTTP 404"), "{got:?}");
    assert_eq!(got[1], ("web", false, "connection refused"), "{got:?}");
    assert!(!got[2].1 && got[2].2.starts_with("refusing health path"), "{got:?}");
    assert_eq!(got[3], ("absent", false, "container missing"), "{got:?}");
    assert_eq!(got.len(), 4, "one result per check, in request order: {got:?}");
}

#[test]
fn probe_runs_exec_checks_in_owned_containers_only() {
    let cluster = unique("probe");
    let _cleanup = Cleanup::new(&cluster);
    let mut agent = agent_for(&cluster);
    create(&mut agent, &cluster, "job", &["/bin/busybox", "sleep", "300"]);
    let ready = [exec("job", &["/bin/busybox", "test", "-f", "/home/work/ready"], 5000)];
    let reply = probe(&mut agent, &cluster, &ready);
    assert_eq!(reply.health.iter().map(outcome).collect::<Vec<_>>(), [("job", false, "exit 1")]);

    docker_ok(&["exec", &container_name(&cluster, "job"), "/bin/busybox", "touch", "/home/work/ready"]);
    let reply = probe(&mut agent, &cluster, &ready);
    assert_eq!(reply.health.iter().map(outcome).collect::<Vec<_>>(), [("job", true, "exit 0")]);

    // argv is run as is: no shell splits or expands it.
    let literal = [exec("job", &["/bin/busybox", "test", "-f", "/home/work/*"], 5000)];
    let reply = probe(&mut agent, &cluster, &literal);
    assert_eq!(reply.health.iter().map(outcome).collect::<Vec<_>>(), [("job", false, "exit 1")]);

    // A program that is not there fails at once, not at the timeout.
    let reply = probe(&mut agent, &cluster, &[exec("job", &["/no/such/program"], 5000)]);
    let (_, healthy, detail) = outcome(&reply.health[0]);
    assert!(!healthy && detail.contains("/no/such/program") && !detail.starts_with("timed out"), "{detail}");

    // A container holding a managed name without bai's labels is reported, and nothing runs in it.
    let foreign = container_name(&cluster, "foreign");
    docker_ok(&["run", "-d", "--name", &foreign, IMAGE]);
    let touch = ["/bin/busybox", "touch", "/touched"];
    let reply = probe(&mut agent, &cluster, &[exec("foreign", &touch, 5000), exec("job", &touch, 5000)]);
    assert!(!reply.health[0].healthy, "{:?}", reply.health);
    assert!(reply.health[0].detail.contains("does not carry bai's labels"), "{:?}", reply.health);
    assert_eq!(outcome(&reply.health[1]), ("job", true, "exit 0"), "the same command runs in an owned container");
    assert_eq!(reply.unowned.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), [foreign.as_str()]);
    assert!(
        docker(&["exec", &container_name(&cluster, "job"), "/bin/busybox", "test", "-f", "/touched"]).status.success()
    );
    assert!(!docker(&["exec", &foreign, "/bin/busybox", "test", "-f", "/touched"]).status.success());
}

#[test]
fn probe_reports_a_killed_container_as_not_running() {
    let cluster = unique("probe");
    let _cleanup = Cleanup::new(&cluster);
    let mut agent = agent_for(&cluster);
    create(&mut agent, &cluster, "victim", &["/bin/busybox", "sleep", "300"]);
    let check = [exec("victim", &["/bin/busybox", "true"], 5000)];
    let reply = probe(&mut agent, &cluster, &check);
    assert_eq!(reply.health.iter().map(outcome).collect::<Vec<_>>(), [("victim", true, "exit 0")]);

    docker_ok(&["kill", &container_name(&cluster, "victim")]);
    let reply = probe_until(&mut agent, &cluster, &check, |r| {
        r.sessions.iter().any(|s| s.name == "victim" && s.state == ContainerState::Exited)
    });
    let victim = reply.sessions.iter().find(|s| s.name == "victim").expect("the killed session is still listed");
    assert_eq!((victim.state, victim.exit_code), (ContainerState::Exited, Some(137)));
    assert_eq!(
        reply.health.iter().map(outcome).collect::<Vec<_>>(),
        [("victim", false, "container not running (exited, code 137)")]
    );
}

#[test]
fn probe_checks_are_concurrent_and_each_bounded_by_its_timeout() {
    let cluster = unique("probe");
    let _cleanup = Cleanup::new(&cluster);
    let mut agent = agent_for(&cluster);
    // Accepts every connection on 9000 and never answers: each is handed to a `sleep`.
    let mute = ["/bin/busybox", "nc", "-ll", "-p", "9000", "-e", "/bin/busybox", "sleep", "3600"];
    create(&mut agent, &cluster, "slow", &mute);
    let listening = [http("slow", 9000, "/", 300)];
    let reply = probe_until(&mut agent, &cluster, &listening, |r| r.health[0].detail != "connection refused");
    assert_eq!(reply.health.iter().map(outcome).collect::<Vec<_>>(), [("slow", false, "timed out after 300ms")]);

    let checks = [
        exec("slow", &["/bin/busybox", "sleep", "30"], 1500),
        http("slow", 9000, "/", 1000),
        exec("slow", &["/bin/busybox", "true"], 5000),
    ];
    let started = Instant::now();
    let reply = probe(&mut agent, &cluster, &checks);
    let took = started.elapsed();
    assert_eq!(
        reply.health.iter().map(outcome).collect::<Vec<_>>(),
        [("slow", false, "timed out after 1.5s"), ("slow", false, "timed out after 1s"), ("slow", true, "exit 0")]
    );
    // Run one after the other the timeouts alone would take 2.5 s.
    assert!(took < Duration::from_millis(2400), "the checks did not run concurrently: {took:?}");
}

#[test]
fn probe_fails_when_the_node_cannot_reach_docker() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bai"))
        .arg("agent")
        .env("BAI_HOME", home.path())
        .env("DOCKER_HOST", format!("unix://{}/no-docker.sock", home.path().display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("agent starts");
    let reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut agent = Agent { child, reader, _home: home };
    let ok = agent.call(&hello(BAI_VERSION, false));
    assert_eq!(ok["result"]["lease"], false, "{ok}");
    let method =
        Method::Probe(Probe { cluster: "lab".into(), node: "n1".into(), checks: vec![http("x", 80, "/", 500)] });
    let reply = agent.call(&line(4, method));
    assert_eq!(reply["error"]["kind"], "failed", "{reply}");
    assert!(reply["result"].is_null(), "{reply}");
}

// Image references reach the engine's API paths (`/images/{ref}/json`): a hostile one must not address
// another endpoint, and what it would have found must not be reported as an image.

#[test]
fn the_agent_refuses_image_references_that_would_address_another_endpoint() {
    let cluster = unique("t");
    let _cleanup = Cleanup::new(&cluster);
    let victim = bai::protocol::container_name(&cluster, "victim");
    docker_ok(&["run", "-d", "--name", &victim, IMAGE]);
    let victim_id = docker_ok(&["inspect", "-f", "{{.Id}}", &victim]);
    let mut agent = agent_for(&cluster);
    let vfolders = tempfile::tempdir().expect("tempdir");
    let hostile = [
        format!("../../containers/{victim}/json?x="),
        format!("../../containers/{victim}/json#"),
        format!("..%2F..%2Fcontainers%2F{victim}%2Fjson%3Fx%3D"),
        "Bai-It/Box:1".to_string(),
    ];
    for (i, reference) in hostile.iter().enumerate() {
        let spec = bai::state::spec::ImageSpec {
            reference: reference.clone(),
            source: bai::state::spec::SourceKind::Pull,
            digest: None,
        };
        let req = bai::protocol::EnsureImage {
            cluster: cluster.clone(),
            name: format!("img-{i}"),
            spec,
            spec_hash: "h".into(),
            source: bai::protocol::ImageRecipe::Pull,
            locked: None,
        };
        let reply = agent.call(&line(10 + i as u64, Method::EnsureImage(req)));
        assert_eq!(reply["error"]["kind"], "bad_request", "{reference}: {reply}");
        assert!(!reply.to_string().contains(&victim_id), "the container was reported as an image: {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("not an image reference"), "{message}");
    }
    let observe = bai::protocol::Observe {
        cluster: cluster.clone(),
        node: "n1".into(),
        vfolder_root: vfolders.path().display().to_string(),
    };
    let seen = agent.call(&line(20, Method::Observe(observe)));
    assert_eq!(seen["result"]["images"], serde_json::json!([]), "{seen}");
    // The container the references pointed at is untouched.
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.Running}}", &victim]), "true");
}

// Secrets: the engine may echo a container's environment in its errors, escaped (runc quotes a variable
// holding a NUL as Go does: `"TOKEN=…\"…\\…\n…\x00"`). No form of a secret leaves the agent.

#[test]
fn no_form_of_a_secret_leaves_the_agent_in_an_error() {
    let cluster = unique("t");
    let _cleanup = Cleanup::new(&cluster);
    let mut agent = agent_for(&cluster);
    let marker = format!("pl4nted-agent-{}-zq", std::process::id());
    let mut spec = crate::docker::spec(&["/bin/busybox", "sleep", "300"], vec![]);
    spec.env.insert("TOKEN".into(), bai::state::spec::EnvSpec::from_env("T"));
    let mut req = crate::docker::request(&cluster, "leaky", spec);
    req.secrets.insert("TOKEN".into(), format!("{marker}\"q'\\b\nline\0tail"));
    let reply = agent.call(&line(2, Method::CreateSession(Box::new(req))));
    assert!(!reply.to_string().contains(&marker), "a secret left the agent: {reply}");
    assert_eq!(reply["error"]["kind"], "bad_request", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("TOKEN") && message.contains("NUL"), "{message}");
    // Refused before the engine saw it: no container.
    let name = container_name(&cluster, "leaky");
    assert!(!docker(&["inspect", &name]).status.success(), "{name} was created");
}
