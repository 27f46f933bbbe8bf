//! What GPU work needs in its container (`shm-size`, `ulimit`, `user`, `network`, published ports),
//! checked where a user meets it: in `docker inspect`, from inside the container, and from the node. A
//! real OpenSSH node (the agent runs as its SSH user, `bai-test`), the machine's Docker engine.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::support::images::{docker, docker_ok};
use crate::support::json;
use crate::support::lab::{SshLab, text};

fn id_of(flag: &str) -> u32 {
    let out = std::process::Command::new("id").args([flag, "bai-test"]).output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("the test user `bai-test` exists (scripts/test)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// `GET /` on 127.0.0.1:`port`, retried while the server starts; the whole response.
fn get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        });
        match answer {
            Ok(body) if body.contains("200") => return body,
            other => {
                assert!(Instant::now() < deadline, "no answer on 127.0.0.1:{port}: {other:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn exec(container: &str, script: &str) -> String {
    docker_ok(&["exec", container, "/bin/busybox", "sh", "-c", script]).trim().to_string()
}

#[test]
fn shm_ulimits_user_network_and_published_ports_reach_the_container() {
    let lab = SshLab::new("cs", 1);
    let (uid, gid) = (id_of("-u"), id_of("-g"));
    let port = free_port();
    let host_port = free_port();
    let sessions = format!(
        r#"    vfolder "out" node="node0"
    session "worker" image="box" node="node0" {{
        shm-size "256MiB"
        ulimit memlock="65536:8388608" stack=67108864 nofile="1024:4096"
        user uid={uid} gid={gid}
        mount "out" alias="out"
        port web=8080 publish={port}
        command "/bin/busybox" "sh" "-c" "echo hello > /home/work/index.html && touch /home/work/out/made-by-session && exec /bin/busybox httpd -f -p 8080 -h /home/work"
    }}
    session "hostnet" image="box" node="node0" {{
        network "host"
        health http={host_port} path="/index.html"
        command "/bin/busybox" "sh" "-c" "echo host > /home/work/index.html && exec /bin/busybox httpd -f -p 127.0.0.1:{host_port} -h /home/work"
    }}
}}
"#
    );
    lab.write_text(&(lab.header() + &lab.node(0) + &sessions));
    lab.expect(0, &["apply", "--yes"]);

    let worker = lab.container_name("worker");
    let inspect = json(&docker_ok(&["inspect", &worker]))[0].clone();
    let host = &inspect["HostConfig"];
    assert_eq!(host["ShmSize"], 256 << 20, "{host}");
    let ulimits = host["Ulimits"].as_array().cloned().unwrap_or_default();
    // NVIDIA's `memlock=-1` needs an engine that may raise its own hard limit, which this one (in a
    // container, 8 MiB) may not: a value under it shows the same path.
    assert!(ulimits.contains(&serde_json::json!({"Name": "memlock", "Soft": 65536, "Hard": 8388608})), "{ulimits:?}");
    assert!(ulimits.contains(&serde_json::json!({"Name": "stack", "Soft": 67108864, "Hard": 67108864})), "{ulimits:?}");
    assert!(ulimits.contains(&serde_json::json!({"Name": "nofile", "Soft": 1024, "Hard": 4096})), "{ulimits:?}");
    assert_eq!(inspect["Config"]["User"], format!("{uid}:{gid}"));
    assert_eq!(
        host["PortBindings"]["8080/tcp"][0],
        serde_json::json!({"HostIp": "127.0.0.1", "HostPort": port.to_string()}),
        "{host}"
    );
    // From inside: the user, the limits, /dev/shm's size (KiB).
    assert_eq!(exec(&worker, "id -u"), uid.to_string());
    assert_eq!(exec(&worker, "ulimit -l"), "64");
    assert_eq!(exec(&worker, "ulimit -s"), "65536");
    assert_eq!(exec(&worker, "ulimit -n"), "1024");
    let shm = exec(&worker, "df -k /dev/shm | tail -n 1");
    assert_eq!(shm.split_whitespace().nth(1), Some("262144"), "{shm}");
    // /home/work is the user's: the session wrote its page there, and the page answers on the node.
    assert!(get(port).contains("hello"));
    // What the session writes into its vfolder belongs to the session's user on the node.
    let mounts = inspect["Mounts"].as_array().cloned().unwrap_or_default();
    let out = mounts.iter().find(|m| m["Destination"] == "/home/work/out").expect("the vfolder is mounted");
    let made = std::path::Path::new(out["Source"].as_str().unwrap_or_default()).join("made-by-session");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !made.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let meta = std::fs::metadata(&made).expect("the session wrote into its vfolder");
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));

    // On the host's network the session listens on the node's own loopback, and its health check finds it
    // there.
    let hostnet = json(&docker_ok(&["inspect", &lab.container_name("hostnet")]))[0].clone();
    assert_eq!(hostnet["HostConfig"]["NetworkMode"], "host");
    assert!(get(host_port).contains("host"));
    let watched = lab.expect(0, &["watch", "--once"]);
    assert!(text(&watched).contains("healthy"), "{}", text(&watched));

    // Recorded in the spec: nothing to do the second time, and status shows where the port is.
    let again = lab.expect(0, &["plan"]);
    assert!(text(&again).contains("No changes."), "{}", text(&again));
    let status = lab.expect(0, &["status"]);
    assert!(text(&status).contains(&format!("web 8080 at 127.0.0.1:{port} on the node")), "{}", text(&status));

    // A changed setting is a replace with its reason.
    lab.write_text(&(lab.header() + &lab.node(0) + &sessions.replace("256MiB", "512MiB")));
    let plan = lab.expect(0, &["plan"]);
    assert!(
        text(&plan).contains("-/+ session:worker") && text(&plan).contains("`shm_size`: 256MiB → 512MiB"),
        "{}",
        text(&plan)
    );
    lab.expect(0, &["destroy", "--yes", "--allow-data-loss"]);
    assert!(!docker(&["inspect", &worker]).status.success(), "destroyed");
}
