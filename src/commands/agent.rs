//! `bai agent` (hidden): the node agent, serving the RPC on stdin/stdout until the controller hangs up.

use bai::agent::home::Home;
use bai::agent::serve::serve;
use bai::agent::stdio;
use bai::protocol::AGENT_READY;
use std::io::Write as _;

use crate::cli::AgentArgs;
use crate::commands::Outcome;

pub fn run(args: &AgentArgs) -> Outcome {
    if let Some(expected) = args.expect_size {
        // The content address is only ever written by a rename after a verified upload, so the size is
        // enough to tell a copy truncated or rewritten since; hashing 20 MB on every connection is not.
        let own = std::fs::metadata("/proc/self/exe").or_else(|_| std::env::current_exe().and_then(std::fs::metadata));
        let ready = own.is_ok_and(|m| m.len() == expected);
        if let Err(e) = writeln!(std::io::stdout(), "{}", if ready { AGENT_READY } else { "stale" }) {
            eprintln!("bai agent: cannot write: {e}");
            return Outcome::Failed;
        }
        let _ = std::io::stdout().flush();
        if !ready {
            return Outcome::Ok;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bai agent: cannot start: {e}");
            return Outcome::Failed;
        }
    };
    let served = runtime.block_on(async {
        let (input, output, _restore) = stdio::standard();
        serve(input, output, Home::from_env()).await
    });
    // A call abandoned when the controller hung up may have left blocking work behind (a file read on
    // the blocking pool): the agent ends now rather than waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match served {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            eprintln!("bai agent: {e}");
            Outcome::Failed
        }
    }
}
