//! Each agent home is one agent: its lease, its state and its generation records. Two nodes of one lab
//! that reach the same home (one machine under two names, two addresses of one host with one user) would
//! share them, so bai refuses such a lab before changing anything, naming both nodes; nodes on one
//! machine with homes of their own keep working. Real OpenSSH servers on 127.0.0.1, all logging in as
//! the same user, each with its own `$HOME` (so its own agent home).

use crate::support::lab::{SshLab, assert_code};
use crate::support::{stderr_of, stdout_of};

#[test]
fn two_nodes_reaching_one_agent_home_are_refused_before_anything_changes() {
    let lab = SshLab::new("ident", 2);
    lab.write(&["1", "1"]);
    let distinct = std::fs::read_to_string(lab.path()).expect("read lab");
    // node1 now reaches node0's server: the same machine, user and home under a second name.
    let (p0, p1) = (lab.sshd.port(0), lab.sshd.port(1));
    lab.write_text(&distinct.replace(&format!("ssh port={p1}"), &format!("ssh port={p0}")));

    let refused = lab.run(&["apply", "--yes"]);
    assert_code(&refused, 1, "one agent home under two node names");
    let err = stderr_of(&refused);
    assert!(err.contains("nodes `node0` and `node1` reach the same agent"), "{err}");
    assert!(lab.container(0).is_none() && lab.container(1).is_none(), "nothing was created");
    let home = lab.sshd.home(0).join(".local/share/bai");
    assert!(!home.join("generations").join(&lab.cluster).exists(), "no generation was recorded");
    assert!(!home.join("vfolders/data-0").exists() && !home.join("vfolders/data-1").exists(), "{err}");
    // Reading commands say the same: what they would show mixes two nodes' state.
    let status = lab.run(&["status"]);
    assert_code(&status, 1, "status of such a lab");
    assert!(stderr_of(&status).contains("nodes `node0` and `node1` reach the same agent"), "{}", stderr_of(&status));
    // A healing watcher watches the first node to reach that agent and refuses the second, saying why
    // (watching alone only reads, and goes on).
    let watch = lab.run(&["watch", "--once", "--heal"]);
    assert_code(&watch, 1, "watch --once --heal of such a lab");
    let said = format!("{}{}", stdout_of(&watch), stderr_of(&watch));
    assert!(said.contains("reach the same agent"), "{said}");

    // Two servers on this one machine, the same user, each its own home: two agents, both applied.
    lab.write_text(&distinct);
    assert_code(&lab.run(&["apply", "--yes"]), 0, "nodes with homes of their own");
    assert!(lab.container(0).is_some() && lab.container(1).is_some());
    assert_code(&lab.run(&["destroy", "--yes"]), 0, "destroy");
}
