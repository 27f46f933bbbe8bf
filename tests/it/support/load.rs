//! CPU load for tests that must hold on a busy machine: one busy-looping process per core, stopped when
//! dropped (also after a failed test).

use std::process::{Child, Command, Stdio};

pub struct Burners(Vec<Child>);

impl Burners {
    /// Saturates every core of the machine.
    pub fn saturate() -> Burners {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let spawn = || {
            Command::new("/bin/sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("a busy loop starts")
        };
        Burners((0..cores).map(|_| spawn()).collect())
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
