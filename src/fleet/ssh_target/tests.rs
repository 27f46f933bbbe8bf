//! The three layers of a node's SSH settings (lab, ssh_config, defaults) and the hops they make.

use super::*;
use crate::transport::ssh_config::parse;

fn cluster(text: &str) -> Cluster {
    let (_dir, _path, loaded) = crate::fleet::scripted::lab(text);
    loaded.config.clusters.into_iter().next().expect("one cluster")
}

fn config(text: &str) -> SshConfig {
    parse("ssh_config", text, &mut |_| Ok(vec![])).expect("parses")
}

fn local() -> Local {
    Local { home: Some(PathBuf::from("/home/me")), user: Some("me".into()) }
}

fn target(lab: &Cluster, node: &str, config: &SshConfig) -> Result<SshTarget, SshError> {
    let node = lab.nodes.iter().find(|n| n.name.value.as_str() == node).expect("node");
    resolve(lab, node, config, false, &local())
}

const SSH_CONFIG: &str = "\
Host gpu-*
    HostName %h.lab.internal
    User cfg-user
    Port 2222
    IdentityFile ~/.ssh/id_%n
    UserKnownHostsFile %d/.ssh/lab_hosts
    ProxyJump login
    ConnectTimeout 4
    ServerAliveInterval 0
    Compression yes
Host login
    HostName 10.0.0.2
    User jumper
    IdentityFile ~/.ssh/id_login
    StrictHostKeyChecking accept-new
    ProxyJump gw
Host gw
    HostName gw.example
    Port 2200
    ServerAliveInterval 30
    ServerAliveCountMax 2
Host proxied
    ProxyCommand ssh -W %h:%p somewhere
";

#[test]
fn defaults_apply_when_neither_lab_nor_ssh_config_says() {
    let lab = cluster("cluster \"c\" {\n    node \"n\" address=\"10.9.9.9\"\n}\n");
    let t = target(&lab, "n", &SshConfig::default()).expect("target");
    assert_eq!((t.host.as_str(), t.port, t.user.as_str()), ("10.9.9.9", 22, "me"));
    assert_eq!((t.identity, t.known_hosts), (None, PathBuf::from("/home/me/.ssh/known_hosts")));
    assert_eq!(t.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(
        (t.keepalive_interval, t.keepalive_max),
        (Some(SshTarget::KEEPALIVE_INTERVAL), SshTarget::KEEPALIVE_MAX)
    );
    assert!(t.jumps.is_empty() && !t.accept_new_host_keys);
    assert!(!t.compression, "the agent crosses as it is unless ssh_config asks otherwise");
}

#[test]
fn ssh_config_fills_what_the_lab_leaves_out_under_the_node_address() {
    let lab = cluster("cluster \"c\" {\n    node \"n\" address=\"gpu-01\"\n    node \"gpu-02\"\n}\n");
    let c = config(SSH_CONFIG);
    let t = target(&lab, "n", &c).expect("target");
    assert_eq!((t.host.as_str(), t.port, t.user.as_str()), ("gpu-01.lab.internal", 2222, "cfg-user"));
    assert_eq!(t.identity, Some(PathBuf::from("/home/me/.ssh/id_gpu-01")), "`%n` is the name looked up");
    assert_eq!(t.known_hosts, PathBuf::from("/home/me/.ssh/lab_hosts"));
    assert!(t.compression, "`Compression yes`: the agent crosses compressed");
    assert!(t.jumps.iter().all(|hop| !hop.target.compression), "nothing is installed on a jump host");
    assert_eq!(t.connect_timeout, Duration::from_secs(4));
    assert_eq!(t.keepalive_interval, None, "ServerAliveInterval 0 turns keepalives off");
    // A node without an address is looked up under its name.
    assert_eq!(target(&lab, "gpu-02", &c).expect("target").host, "gpu-02.lab.internal");
}

#[test]
fn the_lab_wins_over_ssh_config() {
    let lab = cluster(
        "cluster \"c\" {\n    ssh user=\"lab\" identity=\"~/.ssh/lab_key\" connect-timeout=\"7s\" jump=\"none\"\n    node \"n\" address=\"gpu-01\" {\n        ssh port=22 known-hosts=\"/lab/known_hosts\"\n    }\n}\n",
    );
    let t = target(&lab, "n", &config(SSH_CONFIG)).expect("target");
    assert_eq!((t.port, t.user.as_str()), (22, "lab"));
    assert_eq!(t.identity, Some(PathBuf::from("/home/me/.ssh/lab_key")));
    assert_eq!(t.known_hosts, PathBuf::from("/lab/known_hosts"));
    assert_eq!(t.connect_timeout, Duration::from_secs(7));
    assert!(t.jumps.is_empty(), "`jump=\"none\"` in the lab wins over ProxyJump");
    assert_eq!(t.host, "gpu-01.lab.internal", "HostName still maps the address the lab gives");
}

#[test]
fn proxy_jump_chains_through_the_first_hops_own_proxy_jump() {
    let lab = cluster("cluster \"c\" {\n    node \"n\" address=\"gpu-01\"\n}\n");
    let t = target(&lab, "n", &config(SSH_CONFIG)).expect("target");
    let hops: Vec<(String, String, u16, String)> =
        t.jumps.iter().map(|h| (h.name.clone(), h.target.host.clone(), h.target.port, h.target.user.clone())).collect();
    assert_eq!(
        hops,
        [
            ("gw".into(), "gw.example".into(), 2200, "cfg-user".into()),
            ("login".into(), "10.0.0.2".into(), 22, "jumper".into())
        ],
        "gw (login's own ProxyJump) first; a hop without a User takes the node's"
    );
    let (gw, login) = (&t.jumps[0].target, &t.jumps[1].target);
    assert_eq!(gw.identity, t.identity, "no IdentityFile for gw: the node's");
    assert_eq!(gw.known_hosts, t.known_hosts, "no UserKnownHostsFile for gw: the node's");
    assert_eq!((gw.keepalive_interval, gw.keepalive_max), (Some(Duration::from_secs(30)), 2));
    assert_eq!(login.identity, Some(PathBuf::from("/home/me/.ssh/id_login")));
    assert!(login.accept_new_host_keys && !gw.accept_new_host_keys && !t.accept_new_host_keys);
    assert!(gw.jumps.is_empty() && login.jumps.is_empty());
    assert_eq!(gw.node, "n", "a hop's messages name the node");
}

#[test]
fn lab_jumps_are_hosts_of_their_own() {
    let lab = cluster(
        "cluster \"c\" {\n    ssh user=\"bai\" identity=\"/k\" jump=\"gw\"\n    node \"a\" address=\"10.0.0.11\"\n    node \"b\" address=\"10.0.0.12\" {\n        ssh jump=\"root@10.0.0.1:2022,login\"\n    }\n}\n",
    );
    let c = config(SSH_CONFIG);
    let a = target(&lab, "a", &c).expect("target");
    assert_eq!(a.jumps.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["gw"]);
    assert_eq!(
        (a.jumps[0].target.user.as_str(), a.jumps[0].target.identity.clone()),
        ("bai", Some(PathBuf::from("/k")))
    );
    let b = target(&lab, "b", &c).expect("target");
    let names: Vec<&str> = b.jumps.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["root@10.0.0.1:2022", "login"], "the node's jump wins; only the first hop's ProxyJump counts");
    assert_eq!((b.jumps[0].target.user.as_str(), b.jumps[0].target.port), ("root", 2022));
}

#[test]
fn proxy_command_and_loops_are_refused() {
    let lab = cluster(
        "cluster \"c\" {\n    node \"n\" address=\"proxied\"\n    node \"m\" address=\"x\" {\n        ssh jump=\"proxied\"\n    }\n    node \"l\" address=\"y\" {\n        ssh jump=\"a\"\n    }\n}\n",
    );
    let c = config(&format!("{SSH_CONFIG}Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n"));
    let err = target(&lab, "n", &c).expect_err("ProxyCommand");
    assert!(
        matches!(&err, SshError::ProxyCommand { host, origin, .. } if host == "proxied" && origin == "ssh_config line 23"),
        "{err:?}"
    );
    assert!(matches!(target(&lab, "m", &c), Err(SshError::ProxyCommand { .. })), "a hop's ProxyCommand too");
    let err = target(&lab, "l", &c).expect_err("a loop");
    assert_eq!(err.to_string(), "node `l`: its jump hosts loop: `a` is reached through itself");
}

#[test]
fn accept_new_comes_from_the_flag_or_accept_new_never_from_no() {
    let lab = cluster("cluster \"c\" {\n    node \"n\" address=\"a\"\n    node \"m\" address=\"b\"\n}\n");
    let c = config("Host a\n  StrictHostKeyChecking no\nHost b\n  StrictHostKeyChecking accept-new\n");
    let node = |name: &str| lab.nodes.iter().find(|n| n.name.value.as_str() == name).expect("node");
    assert!(!resolve(&lab, node("n"), &c, false, &local()).expect("target").accept_new_host_keys);
    assert!(resolve(&lab, node("n"), &c, true, &local()).expect("target").accept_new_host_keys);
    assert!(resolve(&lab, node("m"), &c, false, &local()).expect("target").accept_new_host_keys);
}
