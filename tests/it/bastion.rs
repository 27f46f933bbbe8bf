//! Nodes behind a bastion, for real: the nodes' OpenSSH servers run in a network namespace of their own
//! ([`Enclave`]) and listen only on its 127.0.0.1, which this machine cannot reach; the bastion's listens on
//! the enclave's one address this machine reaches. So every test here that gets to a node proves the path
//! went through the jump host: `bai apply`, `watch --once`, `logs` and `port-forward` (an HTTP request to a
//! busybox httpd session), the bastion's unknown host key refused with its fingerprint and then accepted,
//! two hops, ProxyJump read from an ssh_config the test writes, one bastion login shared by every node
//! (and by fifty connecting at once), and a bastion that restarts reconnected.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bai::transport::ssh::{self, Hop, SshError, SshTarget};

use crate::support::enclave::Enclave;
use crate::support::images::{BOX_DOCKERFILE, write_context};
use crate::support::lab::{Lab, text};
use crate::support::running::Running;
use crate::support::sshd::{Sshd, free_port};
use crate::support::{stderr_of, stdout_of};

/// Where the bastion listens inside the enclave (on its outside-facing address).
const BASTION_PORT: u16 = 2200;

/// The servers (index 0 the bastion, then the nodes), dropped before the enclave they run in.
struct Behind {
    sshd: Sshd,
    enclave: Enclave,
}

type JumpLab = Lab<Behind>;

/// An enclave holding a bastion and `nodes` node servers. Node ports are free ports of this machine's own
/// namespace, so that nothing answers there from here: a direct connection is refused, not misdirected.
fn behind(prefix: &str, nodes: usize, route_to_docker: bool) -> JumpLab {
    let mut enclave = Enclave::new();
    if route_to_docker {
        enclave.route_to_docker();
    }
    let inside = enclave.inside();
    let mut listen = vec![(inside.as_str(), BASTION_PORT)];
    let ports: Vec<u16> = (0..nodes).map(|_| free_port().expect("a free port")).collect();
    listen.extend(ports.iter().map(|p| ("127.0.0.1", *p)));
    let sshd = Sshd::start_in(enclave.name(), &listen);
    let lab = Lab::with(prefix, Behind { sshd, enclave });
    write_context(&lab.file("img"), BOX_DOCKERFILE);
    lab
}

impl Behind {
    fn bastion(&self) -> String {
        format!("{}:{BASTION_PORT}", self.enclave.inside())
    }

    /// Node i's server (1-based in the harness: 0 is the bastion).
    fn node_port(&self, i: usize) -> u16 {
        self.sshd.port(i + 1)
    }

    /// How many SSH logins the bastion accepted so far.
    fn bastion_logins(&self) -> usize {
        self.sshd.log(0).matches("Accepted publickey for bai-test").count()
    }

    /// The library's target for node i through the bastion.
    fn target(&self, i: usize) -> SshTarget {
        let mut target = self.sshd.target(i + 1);
        target.jumps = vec![Hop { name: self.bastion(), target: self.sshd.target(0) }];
        target
    }
}

impl JumpLab {
    /// The cluster's opening: SSH settings with `jump` and the `box` image; close it with `}`.
    fn header(&self, jump: &str, known_hosts: &std::path::Path) -> String {
        format!(
            "cluster \"{}\" {{\n    ssh user=\"bai-test\" identity=\"{}\" known-hosts=\"{}\" connect-timeout=\"20s\"{jump}\n    image \"box\" ref=\"bai-it/box:1\" {{\n        build context=\"./img\"\n    }}\n",
            self.cluster,
            self.sshd.client_key_path().display(),
            known_hosts.display()
        )
    }

    fn node(&self, i: usize) -> String {
        format!("    node \"node{i}\" address=\"127.0.0.1\" {{\n        ssh port={}\n    }}\n", self.node_port(i))
    }
}

#[track_caller]
fn expect(out: &std::process::Output, code: i32, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}\n{}", text(out));
}

const SESSIONS: &str = r#"    session "webserver" image="box" node="node0" {
        command "/bin/busybox" "sh" "-c" "mkdir -p /www && echo through the bastion > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"
        port http=8080
    }
    session "talker" image="box" node="node1" {
        command "/bin/busybox" "sh" "-c" "echo first line; echo second line; exec /bin/busybox sleep 3600"
    }
"#;

#[test]
fn apply_watch_logs_and_port_forward_go_through_the_bastion() {
    let lab = behind("bastion", 2, true);
    // From here, the nodes cannot be reached but through the bastion: not on this machine's 127.0.0.1
    // (nothing listens on their ports here), not on the enclave's address (they listen on its loopback).
    let mut direct = lab.sshd.target(1);
    direct.connect_timeout = Duration::from_secs(3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let refused = runtime.block_on(ssh::connect(&direct)).err().expect("a direct connection to a node fails");
    assert!(matches!(refused, SshError::Connect { .. }), "{refused:?}");
    assert!(TcpStream::connect((lab.enclave.inside().as_str(), lab.node_port(0))).is_err());
    assert!(TcpStream::connect((lab.enclave.inside().as_str(), BASTION_PORT)).is_ok(), "the bastion is reachable");

    let jump = format!(" jump=\"{}\"", lab.bastion());
    lab.write_text(&format!(
        "{}{}{}{SESSIONS}}}\n",
        lab.header(&jump, lab.sshd.known_hosts_path()),
        lab.node(0),
        lab.node(1)
    ));
    let started = Instant::now();
    expect(&lab.run(&["apply", "--yes"]), 0, "apply through the bastion");
    let applied = started.elapsed();
    assert!(crate::support::images::docker(&["inspect", &lab.container_name("webserver")]).status.success());
    assert_eq!(lab.bastion_logins(), 1, "two nodes, one bastion login:\n{}", lab.sshd.log(0));

    let before = lab.bastion_logins();
    let watched = lab.run(&["watch", "--once"]);
    expect(&watched, 0, "watch --once through the bastion");
    let table = stdout_of(&watched);
    assert!(
        table.contains("node0") && table.contains("node1") && table.contains("session webserver: running"),
        "{table}"
    );
    assert_eq!(lab.bastion_logins(), before + 1, "one login for the watcher's two nodes");

    // `logs` and `port-forward` take the lab first.
    let lab_path = lab.path().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let out = lab.bai(&["logs", &lab_path, "talker"]);
        if stdout_of(&out).contains("second line") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    expect(&logs, 0, "logs through the bastion");
    assert_eq!(stdout_of(&logs), "first line\nsecond line\n", "{}", text(&logs));

    let mut forward = Running::start(&["port-forward", &lab_path, "webserver", ":http"]);
    let line = forward.wait_for("the forwarding line", Duration::from_secs(30), |l| l.starts_with("Forwarding from"));
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("a local port");
    let url = format!("http://127.0.0.1:{port}/index.html");
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = Command::new("curl").args(["-sS", "--max-time", "10", &url]).output().expect("curl runs");
        if page.status.success() || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        String::from_utf8_lossy(&page.stdout),
        "through the bastion\n",
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );
    drop(forward);

    let exec = lab.bai(&["exec", &lab_path, "webserver", "--", "/bin/busybox", "cat", "/www/index.html"]);
    expect(&exec, 0, "exec through the bastion");
    assert_eq!(stdout_of(&exec), "through the bastion\n");
    eprintln!("apply through the bastion took {applied:?}");

    // Dropped, the lab leaves no namespace, veth or forwarding rule behind.
    let (name, veth) = lab.enclave.names();
    drop(lab);
    assert_eq!(crate::support::enclave::remains(&name, &veth), Vec::<String>::new());
}

#[test]
fn the_bastions_unknown_host_key_is_refused_with_its_fingerprint_until_accepted() {
    let lab = behind("bastion-key", 1, false);
    // known_hosts trusts the node, not the bastion.
    let known_hosts = lab.file("known_hosts");
    lab.sshd.write_known_hosts(&known_hosts, &[1]);
    let jump = format!(" jump=\"{}\"", lab.bastion());
    lab.write_text(&format!("{}{}}}\n", lab.header(&jump, &known_hosts), lab.node(0)));

    let refused = lab.run(&["plan"]);
    expect(&refused, 1, "an unknown bastion key");
    let err = stderr_of(&refused);
    let fingerprint = lab.sshd.host_fingerprint(0);
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    for want in [
        "bai::ssh::jump",
        "node `node0` unreachable: jump host",
        &format!("jump host `{}`: unknown host key {fingerprint}", lab.bastion()),
        "--accept-new-host-keys",
    ] {
        assert!(err.contains(want), "no `{want}` in:\n{err}");
    }
    assert_eq!(lab.bastion_logins(), 0, "nothing logged in to a bastion whose key is unknown");

    expect(&lab.run(&["plan", "--accept-new-host-keys"]), 0, "the bastion's key accepted");
    let learnt = std::fs::read_to_string(&known_hosts).expect("known_hosts");
    assert!(learnt.contains(&format!("[{}]:{BASTION_PORT} ", lab.enclave.inside())), "{learnt}");
    expect(&lab.run(&["plan"]), 0, "known now");

    // A changed key is refused however it is asked.
    let other = Sshd::start(1);
    let bastion_name = format!("[{}]:{BASTION_PORT}", lab.enclave.inside());
    let changed: String = learnt
        .lines()
        .map(|l| {
            if l.starts_with(&bastion_name) {
                format!("{bastion_name} {}\n", other.host_pubkey(0))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&known_hosts, changed).expect("write");
    let out = lab.run(&["plan", "--accept-new-host-keys"]);
    expect(&out, 1, "a changed bastion key");
    assert!(stderr_of(&out).contains("the host key changed"), "{}", text(&out));
}

#[test]
fn two_hops_each_pass_on_to_the_next_only() {
    let mut enclave = Enclave::new();
    enclave.route_to_docker();
    let inside = enclave.inside();
    let (inner, node) = (free_port().expect("port"), free_port().expect("port"));
    let mut sshd =
        Sshd::start_in(enclave.name(), &[(&inside, BASTION_PORT), ("127.0.0.1", inner), ("127.0.0.1", node)]);
    // The outer bastion may open channels to the inner one only: the node is reached through both or not at all.
    sshd.reconfigure(0, &format!("PermitOpen 127.0.0.1:{inner}\n"), &[]);
    let lab = Lab::with("two-hops", Behind { sshd, enclave });
    write_context(&lab.file("img"), BOX_DOCKERFILE);
    let jump = format!(" jump=\"bai-test@{inside}:{BASTION_PORT},127.0.0.1:{inner}\"");
    let node_block = format!("    node \"node0\" address=\"127.0.0.1\" {{\n        ssh port={node}\n    }}\n");
    lab.write_text(&format!("{}{node_block}}}\n", lab.header(&jump, lab.sshd.known_hosts_path())));
    expect(&lab.run(&["plan"]), 0, "through two hops");
    let logins = |i: usize| lab.sshd.log(i).matches("Accepted publickey for bai-test").count();
    assert_eq!((logins(0), logins(1), logins(2)), (1, 1, 1), "each hop logged in to once, and the node");

    // Skipping the inner hop is refused by the outer one, and the message says which hop and where to.
    let jump = format!(" jump=\"{inside}:{BASTION_PORT}\"");
    lab.write_text(&format!("{}{node_block}}}\n", lab.header(&jump, lab.sshd.known_hosts_path())));
    let out = lab.run(&["plan"]);
    expect(&out, 1, "the outer bastion may not go to the node directly");
    let err = stderr_of(&out);
    assert!(
        err.contains("bai::ssh::jump") && err.contains(&format!("cannot open a connection to 127.0.0.1:{node}")),
        "{err}"
    );
}

#[test]
fn proxy_jump_and_the_rest_come_from_ssh_config() {
    let lab = behind("ssh-config", 2, false);
    let config = lab.file("ssh_config");
    // Per node blocks first (first match wins), then what every gpu node shares, then the login node.
    std::fs::write(
        &config,
        format!(
            "Host gpu-01\n    Port {p0}\nHost gpu-02\n    Port {p1}\n\nHost gpu-* !gpu-99\n    HostName 127.0.0.1\n    User bai-test\n    IdentityFile {key}\n    UserKnownHostsFile {kh}\n    ProxyJump login-node\n    ServerAliveInterval 5\n\nHost login-node\n    HostName {inside}\n    Port {BASTION_PORT}\n",
            p0 = lab.node_port(0),
            p1 = lab.node_port(1),
            key = lab.sshd.client_key_path().display(),
            kh = lab.sshd.known_hosts_path().display(),
            inside = lab.enclave.inside(),
        ),
    )
    .expect("write ssh_config");
    // The lab names the nodes and nothing of how to reach them.
    lab.write_text(&format!(
        "cluster \"{}\" {{\n    node \"gpu-01\"\n    node \"n2\" address=\"gpu-02\"\n}}\n",
        lab.cluster
    ));
    let config = config.display().to_string();
    let out = lab.run(&["plan", "--ssh-config", &config]);
    expect(&out, 0, "ProxyJump, HostName, User, Port, IdentityFile from --ssh-config");
    assert_eq!(lab.bastion_logins(), 1);
    let out =
        crate::support::bai().env("BAI_SSH_CONFIG", &config).arg("status").arg(lab.path()).output().expect("bai runs");
    expect(&out, 0, "the same from BAI_SSH_CONFIG");
    assert_eq!(lab.bastion_logins(), 2);
    // Without it, the nodes are names nothing resolves.
    expect(&lab.run(&["plan"]), 1, "no ssh_config, no way to the nodes");
    assert_eq!(lab.bastion_logins(), 2);
}

#[test]
fn fifty_connections_share_one_bastion_login_and_a_restarted_bastion_is_logged_in_to_again() {
    let mut lab = behind("shared", 1, false);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let target = lab.target(0);
    let started = Instant::now();
    let sessions = runtime.block_on(async {
        let all = (0..50).map(|_| {
            let target = target.clone();
            tokio::spawn(async move { ssh::connect(&target).await })
        });
        let mut sessions = Vec::new();
        for joined in futures_util::future::join_all(all).await {
            sessions.push(joined.expect("task").expect("connected through the bastion"));
        }
        sessions
    });
    let took = started.elapsed();
    assert_eq!(lab.bastion_logins(), 1, "fifty sessions, one bastion login");
    let echoed = runtime.block_on(sessions[49].run("echo behind", None)).expect("runs");
    assert_eq!(echoed.stdout_text(), "behind\n");
    drop(sessions);
    eprintln!("fifty connections through one bastion took {took:?}");

    // The bastion goes away and comes back: the dead connection is noticed, the next one logs in again.
    lab.sshd.restart(0);
    let session = runtime
        .block_on(async {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match ssh::connect(&target).await {
                    Ok(session) => break Ok(session),
                    Err(e) if Instant::now() > deadline => break Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
        .expect("reconnected through the restarted bastion");
    assert_eq!(runtime.block_on(session.run("echo again", None)).expect("runs").stdout_text(), "again\n");
    assert_eq!(lab.bastion_logins(), 2, "one new login after the restart");
}

#[test]
fn what_a_killed_run_left_is_cleared_by_the_next() {
    drop(Enclave::new());
    // A pid no process has: the run that made these names is gone.
    let dead = (1..4_000_000u32)
        .rev()
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .expect("a free pid");
    let (name, veth) = (format!("bai-jump-{dead}-7"), format!("bj{dead}x7"));
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program).args(args).output().expect("runs");
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run("ip", &["netns", "add", &name]);
    run("ip", &["link", "add", &veth, "type", "veth", "peer", "name", &format!("{veth}i")]);
    run("iptables", &["-I", "DOCKER-USER", "-i", &veth, "-j", "ACCEPT"]);
    assert_eq!(crate::support::enclave::remains(&name, &veth).len(), 3);
    crate::support::enclave::clean_leftovers();
    assert_eq!(crate::support::enclave::remains(&name, &veth), Vec::<String>::new());
}
